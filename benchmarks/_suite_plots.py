"""The suite's PNG plots, drawn from the result files alone (so an old run can be redrawn):

* ``<module>-latency.png``: each latency's histogram on log-log axes, one panel per stage family
  (a round trip with the stages it breaks down into; otherwise a benchmark group), p50 marked;
* ``<module>-throughput.png``: every rate (and time) as a bar on a log scale, Quayside's own
  beside the floors, baselines and peers measured in the same run, one panel per unit.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks._suite_table import figure, format_figure, kind

__all__ = ["write_plots"]

COLOURS = {"quayside": "#1f77b4", "floor": "#7f7f7f", "baseline": "#d62728", "peer": "#ff7f0e"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _families(rows: list[dict]) -> dict[str, list[dict]]:
    """Panels: a round trip with the stages it breaks down into, else a benchmark group; each
    floor is drawn in every panel of its group, as the reference it is."""
    parents = {r.get("parent") for r in rows if r.get("parent")}
    out: dict[str, list[dict]] = {}
    floors = [r for r in rows if kind(r) == "floor" and not r.get("parent")]
    for r in rows:
        if r in floors:
            continue
        key = r.get("parent") or (r.get("key") if r.get("key") in parents else None) or r.get("group") or "latency"
        out.setdefault(str(key), []).append(r)
    for f in floors:
        homes = [members for members in out.values() if members[0].get("group") == f.get("group")]
        for members in homes or [out.setdefault(str(f.get("group") or "latency"), [])]:
            members.append(f)
    return out


def _latency_plot(plt, module: str, rows: list[dict], path: Path, machine_note: str) -> bool:
    rows = [r for r in rows if ((r.get("latency") or {}).get("histogram") or {}).get("counts")]
    if not rows:
        return False
    families = _families(rows)
    fig, axes = plt.subplots(len(families), 1, figsize=(10, 2.8 * len(families) + 1.0), squeeze=False)
    for ax, (family, members) in zip(axes[:, 0], families.items(), strict=True):
        floors = 0
        for i, r in enumerate(members):
            lat = r["latency"]
            h = lat["histogram"]
            edges_us = [e / 1000 for e in h["edges_ns"]]
            style, colour = "-", f"C{i % 10}"
            if kind(r) == "floor":  # grey, told apart by their dashes
                style, colour, floors = (":", "-.", (0, (5, 1)))[floors % 3], COLOURS["floor"], floors + 1
            label = f"{str(r['name']).strip()}: p50 {lat['p50_ns'] / 1000:.2f}, p99 {lat['p99_ns'] / 1000:.2f} µs"
            ax.stairs(h["counts"], edges_us, color=colour, linestyle=style, label=label, linewidth=1.2)
            ax.axvline(lat["p50_ns"] / 1000, color=colour, linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("samples per bin")
        ax.set_title(family.replace("_", " "), fontsize=10, loc="left")
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1, 0].set_xlabel("latency, µs (log scale; dashed: p50)")
    fig.suptitle(f"{module}: latency histograms\n{machine_note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _bars_plot(plt, module: str, rows: list[dict], path: Path, machine_note: str) -> bool:
    by_unit: dict[str, list[tuple[dict, float]]] = {}
    for r in rows:
        fig = figure(r)
        if fig and fig[0] > 0:
            by_unit.setdefault(fig[1], []).append((r, fig[0]))
    if not by_unit:
        return False
    heights = [max(1.6, 0.32 * len(v) + 0.9) for v in by_unit.values()]
    fig, axes = plt.subplots(len(by_unit), 1, figsize=(10, sum(heights) + 1.0), squeeze=False, height_ratios=heights)
    for ax, (unit, items) in zip(axes[:, 0], by_unit.items(), strict=True):
        names = [str(r["name"]).strip()[:60] for r, _ in items]
        values = [v for _, v in items]
        colours = [COLOURS.get(kind(r), COLOURS["quayside"]) for r, _ in items]
        ax.barh(range(len(items)), values, color=colours)
        ax.set_yticks(range(len(items)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        better = figure(items[0][0])[2]
        ax.set_xlabel(f"{unit} (log scale; {better} is better)", fontsize=8)
        for y, v in enumerate(values):
            ax.text(v, y, " " + format_figure(v, unit), va="center", fontsize=7)
        ax.set_xlim(min(values) / 2, max(values) * 8)
        ax.grid(True, axis="x", alpha=0.3)
    present = [k for k in COLOURS if any(kind(r) == k for items in by_unit.values() for r, _ in items)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[k]) for k in present]
    axes[0, 0].legend(handles, present, fontsize=7, loc="lower right")
    fig.suptitle(f"{module}: figures beside the floors and baselines of the same run\n{machine_note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def machine_note(doc: dict) -> str:
    m = doc.get("machine") or {}
    cpus = doc.get("cpus") or {}
    where = cpus.get("why") or ("isolated CPUs" if m.get("cores_isolated") else "no isolated CPUs")
    return (
        f"{m.get('cpu_model') or 'unknown CPU'}, {m.get('cpu_count') or '?'} CPUs, commit {str(m.get('git_commit'))[:10]}"
        f"{' (dirty)' if m.get('git_dirty') else ''}\n{where}"
    )


def write_plots(doc: dict, out_dir: Path) -> list[Path]:
    """Draw every module's plots into ``out_dir``; returns the files written."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    note = machine_note(doc)
    written = []
    for m in doc["modules"]:
        rows = (doc["results"].get(m["name"]) or {}).get("measurements") or []
        for suffix, draw in (("latency", _latency_plot), ("throughput", _bars_plot)):
            path = out_dir / f"{m['name']}-{suffix}.png"
            if draw(plt, m["name"], rows, path, note):
                written.append(path)
    return written
