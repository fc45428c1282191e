"""This run against a saved earlier one: which figures regressed, judged so that a shared,
noisy machine does not cry wolf.

Each measurement is matched by module and key, and judged on its central figure (the p50 of a
latency, the median rate or time), never on a tail. It *regressed* when it got worse by more
than the allowed change, which is the larger of the tolerance and the run-to-run spread the row
itself recorded (its trials' p50s, its runs' times), and when the module's floors (the C ring,
the plain numba loop, measured in the same run) do not explain it: a figure 30 % slower beside a
floor 30 % slower is the machine, not the code. A worse figure from a run whose processes lost
more than ``PREEMPTED`` of their CPU time to others is *noisy*, not a regression. Floors,
baselines, peers and stage breakdowns are reported but never fail the comparison.
"""

from __future__ import annotations

import math

from benchmarks._common import PREEMPTED
from benchmarks._suite_table import figure, kind

__all__ = ["as_suite", "compare", "format_comparison", "LATENCY_SLACK_NS"]

#: A p50 must move by more than this too: a few ns is the clock's granularity, not a regression.
LATENCY_SLACK_NS = 20


def as_suite(doc: dict) -> dict:
    """A suite document, also from one module's result file."""
    if "modules" in doc and "results" in doc:
        return doc
    if "benchmark" not in doc:
        raise ValueError("not a benchmark result: no 'benchmark' or 'modules' field")
    name = doc["benchmark"]
    status = "SKIPPED" if "skipped" in doc else "OK"
    return {
        "benchmark": "suite",
        "quick": doc.get("quick"),
        "started": doc.get("started"),
        "machine": doc.get("machine", {}),
        "modules": [{"name": name, "status": status, "reason": doc.get("skipped", "")}],
        "results": {name: doc},
    }


def _metric(row: dict) -> tuple[str, float, str] | None:
    lat = row.get("latency") or {}
    if lat.get("p50_ns") is not None:
        return "p50 ns", float(lat["p50_ns"]), "lower"
    fig = figure(row)
    return fig and (fig[1], fig[0], fig[2])


def _spread(row: dict) -> float:
    """The row's own run-to-run spread (max / min - 1 of its trials or runs), 0 if unknown."""
    detail = row.get("detail") if isinstance(row.get("detail"), dict) else {}
    for values in ((row.get("latency") or {}).get("trial_p50_ns"), detail.get("seconds"), detail.get("runs_s")):
        if isinstance(values, list) and len(values) >= 2 and all(isinstance(v, int | float) for v in values):
            lo, hi = min(values), max(values)
            if lo > 0:
                return hi / lo - 1
    return 0.0


def _worse(old: float, new: float, better: str) -> float | None:
    """How many times worse (> 1) or better (< 1) the new figure is."""
    if old <= 0 or new <= 0:
        return None
    return new / old if better == "lower" else old / new


def _rows(doc: dict, name: str) -> dict[str, dict]:
    result = doc["results"].get(name) or {}
    return {str(r.get("key") or r.get("name")): r for r in result.get("measurements") or []}


def _floor_factors(old: dict[str, dict], new: dict[str, dict]) -> dict[str, float]:
    """Per unit, how much worse the module's floors got (geometric mean), where it had floors."""
    by_unit: dict[str, list[float]] = {}
    for key, r in new.items():
        if kind(r) != "floor" or key not in old:
            continue
        a, b = _metric(old[key]), _metric(r)
        if a and b and a[0] == b[0]:
            f = _worse(a[1], b[1], b[2])
            if f:
                by_unit.setdefault(b[0], []).append(f)
    return {u: math.exp(sum(map(math.log, fs)) / len(fs)) for u, fs in by_unit.items()}


def _judge(old_row: dict, new_row: dict, tolerance: float, floors: dict[str, float]) -> dict | None:
    a, b = _metric(old_row), _metric(new_row)
    if not a or not b or a[0] != b[0]:
        return None
    unit, better = b[0], b[2]
    factor = _worse(a[1], b[1], better)
    out = {"metric": unit, "better": better, "old": a[1], "new": b[1]}
    if factor is None:
        return out | {"status": "n/a", "why": "a figure of zero"}
    allowed = max(tolerance, _spread(old_row), _spread(new_row))
    floor = floors.get(unit)
    out |= {"worse_by": round(factor, 4), "allowed": round(allowed, 4), "floor_worse_by": floor and round(floor, 4)}
    if factor < 1 / (1 + allowed):
        return out | {"status": "improved", "why": ""}
    if factor <= 1 + allowed:
        return out | {"status": "same", "why": ""}
    if kind(new_row) != "quayside" or new_row.get("parent"):
        what = "a stage breakdown" if new_row.get("parent") else f"a {kind(new_row)}"
        return out | {"status": "worse", "why": f"{what}: reported, not judged"}
    if unit == "p50 ns" and abs(b[1] - a[1]) <= LATENCY_SLACK_NS:
        return out | {"status": "same", "why": f"within {LATENCY_SLACK_NS} ns"}
    if floor and factor / floor <= 1 + allowed:
        return out | {"status": "machine", "why": f"the floors got x{floor:.2f} worse in the same run"}
    preempted = max(new_row.get("preempted") or 0.0, old_row.get("preempted") or 0.0)
    if preempted > PREEMPTED:
        return out | {"status": "noisy", "why": f"other processes took {preempted:.0%} of its CPU time"}
    return out | {"status": "REGRESSED", "why": f"worse by x{factor:.2f}, allowed x{1 + allowed:.2f}"}


def _facts(doc: dict) -> dict:
    m = doc.get("machine") or {}
    return {
        "started": doc.get("started"),
        "quick": doc.get("quick"),
        "git_commit": m.get("git_commit"),
        "git_dirty": m.get("git_dirty"),
        "cpu_model": m.get("cpu_model"),
    }


def compare(old: dict, new: dict, tolerance: float) -> dict:
    """Every measurement present in both, judged; ``regressions`` counts the REGRESSED ones."""
    old, new = as_suite(old), as_suite(new)
    a, b = _facts(old), _facts(new)
    warnings = []
    if a["quick"] != b["quick"]:
        warnings.append(
            f"comparing a {'quick' if b['quick'] else 'full'} run with a {'quick' if a['quick'] else 'full'} one"
        )
    if a["cpu_model"] and b["cpu_model"] and a["cpu_model"] != b["cpu_model"]:
        warnings.append(f"different CPUs: {a['cpu_model']} then, {b['cpu_model']} now")
    rows = []
    for m in new["modules"]:
        name = m["name"]
        if name not in old["results"]:
            continue
        old_rows, new_rows = _rows(old, name), _rows(new, name)
        if old_rows and not new_rows:
            warnings.append(f"{name}: measured in the earlier run, not in this one ({m['status']})")
            continue
        floors = _floor_factors(old_rows, new_rows)
        for key, r in new_rows.items():
            if key not in old_rows:
                continue
            judged = _judge(old_rows[key], r, tolerance, floors)
            if judged:
                rows.append({"module": name, "key": key, "name": str(r.get("name", key)).strip(), **judged})
        gone = sorted(set(old_rows) - set(new_rows))
        if gone and new_rows:
            warnings.append(f"{name}: no longer measured: {', '.join(gone)}")
    return {
        "tolerance": tolerance,
        "old": a,
        "new": b,
        "warnings": warnings,
        "rows": rows,
        "regressions": sum(r["status"] == "REGRESSED" for r in rows),
    }


def _fmt(value: float, unit: str) -> str:
    if unit == "p50 ns":
        return f"{value / 1000:.3f} µs"
    if unit.endswith("/s"):
        return f"{value / 1e6:.2f}M {unit}"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:g} {unit}"


def format_comparison(c: dict) -> str:
    head = ["module", "benchmark", "was", "now", "change", "allowed", "status"]
    body = []
    for r in c["rows"]:
        change = f"{r['new'] / r['old'] - 1:+.0%}" if r["old"] else ""
        allowed = f"±{r['allowed']:.0%}" if r.get("allowed") is not None else ""
        status = r["status"] + (f" ({r['why']})" if r["why"] else "")
        body.append(
            [r["module"], r["name"], _fmt(r["old"], r["metric"]), _fmt(r["new"], r["metric"]), change, allowed, status]
        )
    widths = [max([len(h), *(len(x[i]) for x in body)]) for i, h in enumerate(head)]
    lines = [
        f"compared with the run of {c['old']['started']} (commit {str(c['old']['git_commit'])[:10]}"
        f"{', dirty' if c['old']['git_dirty'] else ''}), tolerance {c['tolerance']:.0%}:",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(x.ljust(w) for x, w in zip(cells, widths, strict=True)).rstrip() for cells in body]
    lines += [f"warning: {w}" for w in c["warnings"]]
    n = c["regressions"]
    lines.append(f"{n} regression{'s' if n != 1 else ''}" if n else "no regressions")
    return "\n".join(lines)
