"""The peers benchmark's rows, targets, table and notes.

Targets (from the issue that asked for the suite): Quayside's replay, on the same quotes with
the same crossover, at least ``TARGET_HFTBACKTEST`` x hftbacktest's and ``TARGET_NAUTILUS`` x
NautilusTrader's events per CPU-second. Quayside's figure is ``run_replay`` end to end (what a
user calls: set-up, the loop, the Python drain of its feed, the results); hftbacktest's is the
faster of its two market depths. A comparison whose trade counts disagree (beyond
``AGREE_FRACTION``) is INCONCLUSIVE: the two would not be running the same strategy.
"""

from __future__ import annotations

import numpy as np

from benchmarks._common import render_table
from benchmarks._engine_report import format_targets
from benchmarks._peers_hft import LATENCY_NS
from quayside.core import wire

__all__ = [
    "TARGET_HFTBACKTEST",
    "TARGET_NAUTILUS",
    "AGREE_FRACTION",
    "RATE_UNIT",
    "rows",
    "evaluate",
    "annotate",
    "notes",
    "format_table",
    "format_targets",
]

TARGET_HFTBACKTEST = 3.0
TARGET_NAUTILUS = 100.0
AGREE_FRACTION = 0.01  # trade counts may differ by this share of Quayside's (and at least 2)
RATE_UNIT = "ev/CPU-s"

LABELS = {
    "quayside": "Quayside run_replay(): crossover, risk, venue, feed",
    "hftbacktest_hashmap": "hftbacktest {v}, HashMapMarketDepthBacktest",
    "hftbacktest_roivec": "hftbacktest {v}, ROIVectorMarketDepthBacktest",
    "nautilus": "NautilusTrader {v}, BacktestEngine + Strategy",
}
SHORT = {
    "hftbacktest_hashmap": "hftbacktest HashMap",
    "hftbacktest_roivec": "hftbacktest ROIVector",
    "nautilus": "NautilusTrader",
}
KEYS = {"quayside": "quayside_replay"}


def _median(values: list[float]) -> float:
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def _rate(runs: list[dict], field: str = "cpu_s") -> float:
    return runs[0]["events"] / _median([r[field] for r in runs])


def _quayside_at(results: dict, n: int) -> dict | None:
    """Quayside's run on the first ``n`` events (for the trade counts)."""
    q = results.get("quayside")
    if not q:
        return None
    if q["runs"][0]["events"] == n:
        return q["runs"][0]
    at = q.get("at_nautilus_events")
    return at if at and at["events"] == n else None


def agreement(results: dict, system: str) -> dict | None:
    """The system's first run's orders and fills beside Quayside's on the same events."""
    peer = results[system]["runs"][0]
    q = _quayside_at(results, peer["events"])
    if q is None:
        return None
    tolerance = max(2, round(AGREE_FRACTION * q["fills"]))
    return {
        "events": peer["events"],
        "quayside_orders": q["orders"],
        "quayside_fills": q["fills"],
        "quayside_final_position": q["final_position"],
        "orders": peer["orders"],
        "fills": peer["fills"],
        "final_position": peer["final_position"],
        "tolerance": tolerance,
        "agree": abs(peer["fills"] - q["fills"]) <= tolerance and abs(peer["orders"] - q["orders"]) <= tolerance,
    }


def rows(results: dict, description: str) -> list[dict]:
    out = []
    for system, res in results.items():
        runs = res["runs"]
        first = runs[0]
        detail = {
            "events": first["events"],
            "runs": len(runs),
            "cpu_seconds": [r["cpu_s"] for r in runs],
            "wall_seconds": [r["wall_s"] for r in runs],
            "events_per_wall_second_median": _rate(runs, "wall_s"),
            "orders": first["orders"],
            "fills": first["fills"],
            "final_position": first["final_position"],
            "identical_counts_every_run": all(
                (r["orders"], r["fills"]) == (first["orders"], first["fills"]) for r in runs
            ),
            "prepare": res["info"],
            "data": description,
        }
        for extra in ("rows", "quotes_seen", "fees", "denials"):
            if extra in first:
                detail[extra] = first[extra]
        row = {
            "name": LABELS[system].format(v=res["info"].get("version")),
            "key": KEYS.get(system, system),
            "group": system.split("_")[0],
            "rate_per_s": _rate(runs),
            "rate_unit": RATE_UNIT,
            "detail": detail,
        }
        if system != "quayside":
            row["kind"] = "peer"
            row["detail"]["trades_vs_quayside"] = agreement(results, system)
        out.append(row)
        if system == "quayside":
            out.append(
                {
                    "name": "  Quayside replay loop alone (run_replay_nb, kernel CPU time)",
                    "key": "quayside_kernel",
                    "group": "quayside",
                    "parent": "quayside_replay",
                    "rate_per_s": _rate(runs, "kernel_cpu_s"),
                    "rate_unit": RATE_UNIT,
                    "detail": {
                        "events": first["events"],
                        "cpu_seconds": [r["kernel_cpu_s"] for r in runs],
                        "wall_seconds": [r["kernel_s"] for r in runs],
                        "clock": "time.thread_time() inside the run_replay_nb calls (run_kernel_loop)",
                    },
                }
            )
    return out


def _not_run(tid: str, desc: str, verdict: str, why: str) -> dict:
    return {"id": tid, "description": desc, "verdict": verdict, "evidence": why}


def _fmt(rate: float) -> str:
    return f"{rate / 1e6:.2f} M" if rate >= 1e6 else f"{rate / 1e3:.1f} k"


def _target(results: dict, tid: str, peer: str, systems: list[str], threshold: float, requested, peers) -> dict:
    name = {"hftbacktest": "hftbacktest", "nautilus": "NautilusTrader"}[peer]
    desc = f"Quayside replay >= {threshold:g}x {name} in events per CPU-second (same quotes, same crossover)"
    if peer not in requested:
        return _not_run(tid, desc, "NOT RUN", f"{name} was not requested (--only)")
    if not peers[peer]["installed"]:
        return _not_run(
            tid, desc, "SKIPPED", f"{peers[peer]['distribution']} is not installed (`make bench-peers` installs it)"
        )
    measured = [s for s in systems if s in results]
    if not measured or "quayside" not in results:
        failed = ", ".join(s for s in ("quayside", *systems) if s not in results)
        return _not_run(tid, desc, "NOT RUN", f"{failed} failed (see errors)")
    q_runs = results["quayside"]["runs"]
    q_rate, q_kernel = _rate(q_runs), _rate(q_runs, "kernel_cpu_s")
    rates = {s: _rate(results[s]["runs"]) for s in measured}
    best = max(rates, key=rates.get)
    ratio = q_rate / rates[best]
    checks = {s: agreement(results, s) for s in measured}
    agree = all(c is not None and c["agree"] for c in checks.values())
    verdict = "PASS" if ratio >= threshold else "FAIL"
    if not agree:
        verdict = "INCONCLUSIVE"
    n_peer = results[best]["runs"][0]["events"]
    parts = [
        f"run_replay {_fmt(q_rate)} {RATE_UNIT} on {q_runs[0]['events']:,} events vs "
        + ", ".join(
            f"{SHORT[s]} {_fmt(rates[s])} on {results[s]['runs'][0]['events']:,} (x{q_rate / rates[s]:.2f})"
            for s in measured
        ),
        f"Quayside's replay loop alone {_fmt(q_kernel)} {RATE_UNIT} (x{q_kernel / rates[best]:.2f})",
    ]
    at = results["quayside"].get("at_nautilus_events")
    if peer == "nautilus" and at and at["events"] == n_peer:
        same = n_peer / at["cpu_s"]
        parts.append(
            f"run_replay on the same {n_peer:,} events (one run): {_fmt(same)} {RATE_UNIT}, "
            f"x{same / rates[best]:.1f} (its fixed cost per call weighs more on a shorter stream)"
        )
    for s, c in checks.items():
        if c is None:
            parts.append(f"{s}: no Quayside run on {results[s]['runs'][0]['events']:,} events to compare trades with")
        else:
            parts.append(
                f"{s}: {c['orders']:,} orders / {c['fills']:,} fills vs Quayside's {c['quayside_orders']:,} / "
                f"{c['quayside_fills']:,} ({'agree' if c['agree'] else 'DISAGREE'}, tolerance {c['tolerance']})"
            )
    return {
        "id": tid,
        "description": desc,
        "threshold": threshold,
        "measured": {
            "quayside_run_replay_events_per_cpu_s": q_rate,
            "quayside_kernel_events_per_cpu_s": q_kernel,
            **{f"{s}_events_per_cpu_s": r for s, r in rates.items()},
            "compared_with": best,
        },
        "ratio": ratio,
        "ratio_kernel": q_kernel / rates[best],
        "trades": checks,
        "verdict": verdict,
        "evidence": "; ".join(parts),
    }


def evaluate(results: dict, requested: list[str], peers: dict) -> list[dict]:
    return [
        _target(
            results,
            "replay_vs_hftbacktest",
            "hftbacktest",
            ["hftbacktest_hashmap", "hftbacktest_roivec"],
            TARGET_HFTBACKTEST,
            requested,
            peers,
        ),
        _target(results, "replay_vs_nautilus", "nautilus", ["nautilus"], TARGET_NAUTILUS, requested, peers),
    ]


def annotate(rows: list[dict], targets: list[dict]) -> None:
    """Each peer row's ``compare`` (Quayside's rate over its own), and the target and verdict on
    the row each target was judged against."""
    k = {r["key"]: r for r in rows}
    q = k.get("quayside_replay", {}).get("rate_per_s")
    if q and "quayside_kernel" in k:
        k["quayside_kernel"]["compare"] = f"x{k['quayside_kernel']['rate_per_s'] / q:.2f} run_replay"
    for r in rows:
        if r.get("kind") == "peer" and q:
            r["compare"] = f"Quayside x{q / r['rate_per_s']:.2f}"
    for t in targets:
        judged = k.get((t.get("measured") or {}).get("compared_with", ""))
        if judged:
            judged["target"] = f"Quayside >= {t['threshold']:g}x"
            judged["verdict"] = t["verdict"]


def notes(machine: dict, results: dict, background: dict, data) -> list[str]:
    out = [f"data: {data.description}"]
    ts = data.records.view(wire.quote_dtype)["ts_recv"].astype(np.int64)
    gap = int(np.diff(ts).min()) if len(ts) > 1 else 0
    out.append(
        f"{RATE_UNIT}: quotes backtested / time.process_time() of the process doing the backtest (all its "
        "threads), median of the runs; each system's conversion of the quotes to its own format, its engine "
        "set-up and its compiles are excluded (hftbacktest's strategy kernel is compiled before the first run)"
    )
    sizes = {s: r["runs"][0]["events"] for s, r in results.items()}
    if "nautilus" in sizes and len(set(sizes.values())) > 1:
        out.append(
            f"NautilusTrader backtests the first {sizes['nautilus']:,} of the same quotes (the others "
            f"{max(sizes.values()):,}): it needs about {1e6 / _rate(results['nautilus']['runs']):.0f} us of CPU per "
            "quote; the figure is per event, so a shorter stream favours neither side"
        )
    out.append(
        "fill models: Quayside sends an IOC limit at the touch, which reaches its simulated venue 250 us later and "
        "fills in full at the touch; hftbacktest the same order with the same latencies (no_partial_fill_exchange, "
        "constant order latency); NautilusTrader a market IOC order, filled at once at the touch of the quote "
        "being processed (no latency model); all charge 0.2 bp; the quotes carry no sizes, so no fill is partial. "
        + (
            f"The quotes are at least {gap / 1e6:.0f} ms apart, longer than Quayside's and hftbacktest's round trip, "
            "so every system fills against the same quote"
            if gap > 2 * LATENCY_NS
            else f"Some quotes are only {gap / 1e3:.0f} us apart, less than the 500 us round trip: there Quayside and "
            "hftbacktest fill against a later quote than NautilusTrader"
        )
    )
    fixed = _fixed_cost(results)
    if fixed:
        out.append(
            f"Quayside's run_replay costs about {fixed[0] * 1e3:.0f} ms of CPU per call whatever the stream's length "
            f"(engine set-up, a fresh feed ring to fill) plus {fixed[1] * 1e9:.0f} ns per event (from its runs on "
            f"{fixed[2]:,} and {fixed[3]:,} events): its rate per CPU-second grows with the stream's length"
        )
    hft = results.get("hftbacktest_hashmap") or results.get("hftbacktest_roivec")
    if hft:
        out.append(
            f"hftbacktest reads each quote as {hft['info']['rows_per_quote']:.2f} L2 depth rows on average (new level "
            "set, old level removed, per side): its local book ignores top-of-book events"
        )
    wall = [
        sum(r["wall_s"] for r in res["runs"]) / max(sum(r["cpu_s"] for r in res["runs"]), 1e-9)
        for res in results.values()
    ]
    if wall and max(wall) > 1.5:
        out.append(
            f"the machine was busy: wall-clock time was up to {max(wall):.1f}x the CPU time of the same runs "
            "(other processes ran on the same CPUs), which is why the figure is per CPU-second"
        )
    busy = max((v for v in background.values() if v is not None), default=0.0)
    if busy > 0.1:
        out.append(f"other processes kept the busiest CPU {busy:.0%} busy just before the runs")
    if not machine.get("cores_isolated"):
        out.append("no isolated cores: the backtests ran unpinned beside everything else on this machine")
    return out


def _fixed_cost(results: dict) -> tuple[float, float, int, int] | None:
    """(seconds per call, seconds per event, n small, n big) of Quayside's run_replay, from its
    runs on the long stream (median) and on NautilusTrader's shorter one (one run)."""
    q = results.get("quayside")
    at = q and q.get("at_nautilus_events")
    if not at:
        return None
    n1, c1 = at["events"], at["cpu_s"]
    n2, c2 = q["runs"][0]["events"], _median([r["cpu_s"] for r in q["runs"]])
    if n2 <= n1:
        return None
    per_event = (c2 - c1) / (n2 - n1)
    fixed = c1 - per_event * n1
    return (fixed, per_event, n1, n2) if fixed > 0 and per_event > 0 else None


def format_table(rows: list[dict]) -> str:
    """One line per system: events, median CPU seconds, events per CPU-second and per wall
    second, trade counts, Quayside's rate over it, the target and the verdict."""
    head = ["benchmark", "events", "CPU s", RATE_UNIT, "ev/s wall", "orders", "fills", "vs", "target", "verdict"]
    body = []
    for r in rows:
        d = r["detail"]
        wall = d.get("events_per_wall_second_median")
        body.append(
            [
                r["name"],
                f"{d['events']:,}",
                f"{_median(d['cpu_seconds']):.3f}",
                f"{r['rate_per_s'] / 1e6:.3f}M",
                "" if wall is None else f"{wall / 1e6:.3f}M",
                "" if d.get("orders") is None else f"{d['orders']:,}",
                "" if d.get("fills") is None else f"{d['fills']:,}",
                r.get("compare", ""),
                r.get("target", ""),
                r.get("verdict", ""),
            ]
        )
    return render_table(head, body, right={1, 2, 3, 4, 5, 6})
