"""The suite's one table: every module's measurements side by side, read from the common result
shape (``benchmarks/_common.py``), as plain text for a terminal or Markdown for the docs."""

from __future__ import annotations

__all__ = ["figure", "kind", "table_rows", "format_text", "format_markdown", "targets_text", "targets_markdown"]

_RATES = (("records_per_s", "rec/s"), ("events_per_s", "ev/s"))
HEAD = ["module", "benchmark", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "figure", "others", "vs", "target", "verdict"]
_RIGHT = {2, 3, 4, 5, 6, 7}


def kind(row: dict) -> str:
    """``floor``, ``baseline``, ``peer`` or ``quayside`` (the default)."""
    return row.get("kind") or "quayside"


def figure(row: dict) -> tuple[float, str, str] | None:
    """The row's one non-latency figure: (value, unit, which way is better), or None."""
    for field, unit in _RATES:
        if row.get(field) is not None:
            return float(row[field]), unit, "higher"
    if row.get("rate_per_s") is not None:
        return float(row["rate_per_s"]), row.get("rate_unit") or "/s", "higher"
    if row.get("seconds_median") is not None:
        return float(row["seconds_median"]), "s", "lower"
    if row.get("value") is not None:
        return float(row["value"]), row.get("unit") or "", row.get("better") or "lower"
    return None


def format_figure(value: float, unit: str) -> str:
    if unit.endswith("/s") or "/CPU-s" in unit:  # rates, also per CPU-second
        if value >= 1e6:
            return f"{value / 1e6:.2f}M {unit}"
        if value >= 1e3:
            return f"{value / 1e3:.1f}k {unit}"
        return f"{value:.1f} {unit}"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:g} {unit}".strip()


def _us(ns) -> str:
    return "" if ns is None else f"{ns / 1000:.3f}"


def table_rows(doc: dict) -> list[list[str]]:
    """One list of cells per measurement, and one row per module that gave none (skipped,
    crashed): the module's name only on its first row."""
    out = []
    for m in doc["modules"]:
        name = m["name"]
        result = doc["results"].get(name) or {}
        rows = result.get("measurements") or []
        if m["status"] not in ("OK", "ERRORS") or not rows:
            reason = m["reason"] if len(m["reason"]) <= 70 else m["reason"][:67] + "..."
            out.append(
                [name, "", "", "", "", "", "", "", "", "", f"{m['status']}: {reason}" if reason else m["status"]]
            )
            continue
        for i, r in enumerate(rows):
            lat = r.get("latency") or {}
            fig = figure(r)
            out.append(
                [
                    name if i == 0 else "",
                    str(r.get("name", r.get("key", "?"))),
                    _us(lat.get("p50_ns")),
                    _us(lat.get("p99_ns")),
                    _us(lat.get("p99_9_ns")),
                    _us(lat.get("max_ns")),
                    format_figure(*fig[:2]) if fig else "",
                    "" if r.get("preempted") is None else f"{r['preempted']:.0%}",
                    str(r.get("compare", "")),
                    str(r.get("target", "")),
                    str(r.get("verdict", "")),
                ]
            )
    return out


def format_text(doc: dict) -> str:
    body = table_rows(doc)
    widths = [max([len(h), *(len(b[i]) for b in body)]) for i, h in enumerate(HEAD)]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(HEAD), "  ".join("-" * w for w in widths), *(line(b) for b in body)])


def _md(cell: str) -> str:
    return cell.replace("|", "\\|").strip()


def format_markdown(doc: dict) -> str:
    """The same table in Markdown; a stage's row (indented in the text table: Markdown drops
    leading spaces) is marked with an arrow instead."""
    align = ["---:" if i in _RIGHT else "---" for i in range(len(HEAD))]
    lines = ["| " + " | ".join(HEAD) + " |", "| " + " | ".join(align) + " |"]
    for b in table_rows(doc):
        cells = [_md(c) for c in b]
        if b[1].startswith(" "):
            cells[1] = "↳ " + cells[1]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _targets(doc: dict):
    for m in doc["modules"]:
        for t in (doc["results"].get(m["name"]) or {}).get("targets") or []:
            yield m["name"], t


def targets_text(doc: dict) -> str:
    lines = ["targets:"]
    for name, t in _targets(doc):
        lines.append(f"  {t.get('verdict', ''):<12} {name}: {t.get('description', t.get('id', ''))}")
        if t.get("evidence"):
            lines.append(f"{'':15}{t['evidence']}")
    return "\n".join(lines) if len(lines) > 1 else "targets: none evaluated"


def targets_markdown(doc: dict) -> str:
    lines = ["| module | target | verdict |", "| --- | --- | --- |"]
    lines += [f"| {name} | {_md(t.get('description', ''))} | {t.get('verdict', '')} |" for name, t in _targets(doc)]
    return "\n".join(lines)
