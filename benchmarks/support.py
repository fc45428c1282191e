"""Support services against the feed ring: can each keep up with 2 million records a second?

    python -m benchmarks.support [--quick] [--out PATH] [--only SERVICE,...]

The feed is the engine's own record mix (``quayside replay`` of the built-in synthetic market,
repeated and set to live feed time: :mod:`benchmarks._support_feed`), written into a real feed
ring by a producer process pinned to CPU 0; each service's real feed loop (``poll_once``:
batch read, then ``handle``) consumes it in a process pinned to CPU 1
(:mod:`benchmarks._support_run`). The baseline, measured in the same run, is the ring itself:
the same producer to a bare ``FeedReader`` that only copies batches out.

Target, per service (pnl, risk, recorder, metrics): at least 2 M records/s, both halves:

* **flat out** — the producer publishes as fast as it can into a ring that holds the whole
  feed; the service's rate (records handled over wall time from the producer's first record)
  is at least 2 M/s, and is shown as a ratio to the ring's rate;
* **paced** — the producer offers 2.2 M/s into a ring of the engine's default size
  (``feed_capacity``, 2^20 records); the service handles every record (the producer never
  lapped it: nothing lost) at 2 M/s or more.

A target missed while other processes held more than 10 % of a run's CPU time is
INCONCLUSIVE, not FAIL. Prints a table and writes ``benchmarks/results/support.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import _report
from benchmarks._common import (
    PREEMPTED,
    Workspace,
    apply_nice,
    best_attempt,
    finish,
    format_table,
    machine_info,
    module_parser,
    run_main,
)
from benchmarks._support_feed import bench_feed, mix, record_replay
from benchmarks._support_run import SERVICES, run_preemption, run_summary, service_run
from benchmarks.feed import Run

ROOT = Path(__file__).resolve().parents[1]
TARGET = 2e6
HEADROOM = 1.1  # the paced producer offers 10 % more than the target

# name: (full, quick)
PLAN = {
    "flat_records": (4_000_000, 1_000_000),
    "paced_seconds": (3.0, 1.0),
    "paced_capacity": (1 << 20, 1 << 20),  # the engine's default feed ring
    "replay_seconds": (600.0, 600.0),
}


def plan(quick: bool) -> dict:
    return {k: v[1] if quick else v[0] for k, v in PLAN.items()}


def _capacity_for(n: int) -> int:
    return 1 << max(10, (n - 1).bit_length())


def run_consumer(run: Run, name: str, feed: np.ndarray) -> None:
    """The flat-out run of ``name`` (a service or ``ring``), then, for a service, the paced one."""
    cfg = run.cfg
    flat = feed[: cfg["flat_records"]]
    ring_rate = next((r["records_per_s"] for r in run.rows if r.get("key") == "ring_flat"), None)

    def once_flat():
        return service_run(run.ws, name, flat, capacity=_capacity_for(len(flat)))

    def ok_flat(r):
        return name == "ring" or (r["records_per_s"] >= TARGET and r["lost"] == 0)

    r = best_attempt(once_flat, ok_flat, run_preemption, run.retries, run_summary)
    label = "FeedReader only (the ring)" if name == "ring" else f"{name} service"
    run.add(
        f"{label}, flat out (producer {r['producer_records_per_s'] / 1e6:.1f}M/s)",
        name,
        key=f"{name}_flat",
        **({"kind": "baseline"} if name == "ring" else {"target": f">= {TARGET / 1e6:g}M/s"}),
        pinned=r["pinned"],
        records_per_s=r["records_per_s"],
        lost=r["lost"],
        preempted=r["preempted"],
        ratio_to_ring=r["records_per_s"] / ring_rate if ring_rate and name != "ring" else None,
        detail=r,
    )
    if name == "ring":
        return
    offered = TARGET * HEADROOM
    paced = feed[: int(offered * cfg["paced_seconds"])]

    def once_paced():
        return service_run(run.ws, name, paced, capacity=cfg["paced_capacity"], rate=offered)

    def ok_paced(r):
        return r["records_per_s"] >= TARGET and r["lost"] == 0

    r = best_attempt(once_paced, ok_paced, run_preemption, run.retries, run_summary)
    run.add(
        f"{name} service, @{offered / 1e6:.1f}M/s, ring 2^{cfg['paced_capacity'].bit_length() - 1}",
        name,
        key=f"{name}_paced",
        target=TARGET,
        pinned=r["pinned"],
        records_per_s=r["records_per_s"],
        lost=r["lost"],
        preempted=r["preempted"],
        detail=r,
    )


def _verdict(ok: bool, failed: list[dict]) -> str:
    if ok:
        return "PASS"
    return "INCONCLUSIVE" if any(r.get("preempted", 0) > PREEMPTED for r in failed) else "FAIL"


def evaluate(rows: list[dict], services: list[str]) -> list[dict]:
    k = {r["key"]: r for r in rows if "key" in r}
    ring = k.get("ring_flat")
    out = []
    for name in services:
        tid = f"{name}_keeps_up"
        desc = f"{name} service keeps up with >= {TARGET / 1e6:.0f} M feed records/s (batch decoding)"
        flat, paced = k.get(f"{name}_flat"), k.get(f"{name}_paced")
        if not (flat and paced):
            out.append({"id": tid, "description": desc, "verdict": "NOT RUN", "evidence": "its runs failed (errors)"})
            continue
        ok_flat = flat["records_per_s"] >= TARGET and flat["lost"] == 0
        ok_paced = paced["records_per_s"] >= TARGET and paced["lost"] == 0
        failed = [r for r, ok in ((flat, ok_flat), (paced, ok_paced)) if not ok]
        ring_note = ""
        if ring:
            ring_note = f" = x{flat['records_per_s'] / ring['records_per_s']:.2f} the ring's {ring['records_per_s'] / 1e6:.1f} M/s"
        disturbed = [f"{r['preempted']:.0%}" for r in failed if r.get("preempted", 0) > PREEMPTED]
        out.append(
            {
                "id": tid,
                "description": desc,
                "threshold": TARGET,
                "measured": {
                    "flat_out_records_per_s": flat["records_per_s"],
                    "flat_out_lost": flat["lost"],
                    "ring_records_per_s": ring["records_per_s"] if ring else None,
                    "ratio_to_ring": flat["records_per_s"] / ring["records_per_s"] if ring else None,
                    "paced_offered_records_per_s": paced["detail"]["offered_rate"],
                    "paced_records_per_s": paced["records_per_s"],
                    "paced_lost": paced["lost"],
                },
                "ratio": min(flat["records_per_s"], paced["records_per_s"]) / TARGET,
                "verdict": _verdict(ok_flat and ok_paced, failed),
                "evidence": (
                    f"flat out {flat['records_per_s'] / 1e6:.2f} M/s{ring_note}; paced at "
                    f"{paced['detail']['offered_rate'] / 1e6:.1f} M/s (the producer managed "
                    f"{paced['detail']['producer_records_per_s'] / 1e6:.2f}): {paced['records_per_s'] / 1e6:.2f} M/s, "
                    f"{paced['lost']} lost{' (lapped)' if paced['lost'] else ''}"
                    + (
                        f"; other processes took {' / '.join(disturbed)} of the CPU time in those runs"
                        if disturbed
                        else ""
                    )
                ),
            }
        )
    return out


def annotate(rows: list[dict], targets: list[dict]) -> None:
    verdict = {t["id"]: t["verdict"] for t in targets}
    for r in rows:
        key = r.get("key", "")
        if key == "ring_flat":
            r["compare"] = "baseline"
        elif key.endswith("_flat"):
            ratio = f"x{r['ratio_to_ring']:.2f} ring, " if r.get("ratio_to_ring") else ""
            r["compare"] = f"{ratio}x{r['records_per_s'] / TARGET:.2f} target"
        elif key.endswith("_paced"):
            r["compare"] = f"x{r['records_per_s'] / TARGET:.2f} target"
            r["verdict"] = verdict.get(f"{key[: -len('_paced')]}_keeps_up", "")


def format_targets(targets: list[dict]) -> str:
    return _report.format_targets(targets)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = module_parser(
        "support",
        __doc__,
        "fewer records and a shorter paced run (about a minute)",
        choices=SERVICES,
        kind="service",
        retries="a run",
        nice=True,
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    cfg = plan(args.quick)
    started = time.time()
    nice = apply_nice(args.nice)
    machine = machine_info(ROOT)
    machine["nice"] = nice
    with Workspace() as ws:
        run = Run(ws, cfg, args.retries)
        t0 = time.perf_counter()
        from quayside.core.replay.recording import read_recording

        pattern = read_recording(record_replay(ws.tmp / "replay", cfg["replay_seconds"]))
        n = max(cfg["flat_records"], int(TARGET * HEADROOM * cfg["paced_seconds"]))
        feed = bench_feed(pattern, n, rate=TARGET)
        kinds = mix(feed)
        print(
            f"feed: {n:,} records from a {len(pattern):,}-record replay in {time.perf_counter() - t0:.1f} s; "
            + ", ".join(f"{k} {v:.2%}" for k, v in kinds.items()),
            file=sys.stderr,
            flush=True,
        )
        for name in ["ring", *args.services]:
            run.group(name, lambda r, name=name: run_consumer(r, name, feed))
    machine["loadavg_at_end"] = list(os.getloadavg())
    targets = evaluate(run.rows, args.services)
    annotate(run.rows, targets)
    print()
    print(format_table(run.rows))
    print()
    print(format_targets(targets))
    notes = _report.notes(machine, run.unpinned, run.rows, run.background)
    for note in notes:
        print(f"note: {note}")
    return finish(
        args,
        "support",
        started,
        ["ring", *args.services],
        machine,
        cfg | {"target_records_per_s": TARGET, "paced_offered_records_per_s": TARGET * HEADROOM},
        feed={"records": n, "replay_records": len(pattern), "mix": kinds, "feed_time_ns_per_record": 1e9 / TARGET},
        measurements=run.rows,
        targets=targets,
        background_busy_before_group=run.background,
        errors=run.errors,
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit(main())
