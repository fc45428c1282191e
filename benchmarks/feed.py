"""Feed-ring benchmarks against a C floor and Python baselines, measured side by side.

    python -m benchmarks.feed [--quick] [--out PATH] [--only GROUP,...]

Groups (all by default): ``pingpong`` (C ring, bare cache line, feed ring from numba; trials
interleaved), ``throughput`` (C SPSC ring; numba producer to 1 and 3 numba readers and to the
numpy ``FeedReader``, flat out and paced at the targets), ``udp`` (the relay on loopback),
``asyncio`` and ``socket`` (the baselines a Python shop would use). Processes are pinned to
CPUs 0 and 1. Prints one table and writes a JSON file with the machine, every measurement and
every target verdict (default ``benchmarks/results/feed.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks import _report
from benchmarks._common import (
    CPU_A,
    CPU_B,
    ChildError,
    Workspace,
    apply_nice,
    best_attempt,
    cpu_busy,
    finish,
    format_table,
    latency_stats,
    machine_info,
    module_parser,
    run_main,
)

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("pingpong", "throughput", "udp", "asyncio", "socket")
UDP_SIZES = (1472, 8972, 65507)

# name: (full, quick)
PLAN = {
    "pp_trials": (4, 2),
    "pp_iterations": (50_000, 10_000),  # per trial: 200k round trips in a full run
    "pp_warmup": (10_000, 2_000),
    "tp_records": (50_000_000, 10_000_000),
    "tp_capacity": (1 << 20, 1 << 20),
    "tp_batch": (256, 256),
    "paced_seconds": (2.0, 0.5),
    "py_records": (20_000_000, 4_000_000),
    "udp_records": (1 << 21, 1 << 19),
    "udp_seconds": (2.0, 0.5),
    "async_iterations": (200_000, 20_000),
    "async_records": (300_000, 50_000),
    "sock_iterations": (50_000, 10_000),
    "sock_records": (300_000, 50_000),
}


def plan(quick: bool) -> dict:
    return {k: v[1] if quick else v[0] for k, v in PLAN.items()}


class Run:
    """Collects measurements (``rows``) and failures while the groups run."""

    def __init__(self, ws: Workspace, cfg: dict, retries: int):
        self.ws, self.cfg, self.retries = ws, cfg, retries
        self.rows: list[dict] = []
        self.errors: list[dict] = []
        self.unpinned: list[str] = []
        self.background: dict[str, dict] = {}

    def add(self, name: str, group: str, *, pinned: bool = True, **fields) -> dict:
        row = {"name": name, "group": group, "pinned": pinned, **fields}
        if not pinned:
            self.unpinned.append(name)
        self.rows.append(row)
        return row

    def group(self, name: str, fn) -> None:
        self.background[name] = busy = cpu_busy()  # nothing of ours runs now: this is everyone else
        load = ", ".join(f"{k} {v:.0%}" for k, v in busy.items())
        print(f"[{time.strftime('%H:%M:%S')}] {name} (other load: {load}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            fn(self)
        except ChildError as exc:
            self.ws.reap()
            print(f"  {name} failed: {exc}", file=sys.stderr, flush=True)
            self.errors.append({"group": name, "error": str(exc)})
        except Exception:
            self.ws.reap()
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            self.errors.append({"group": name, "error": traceback.format_exc()})
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- groups


def run_pingpong(run: Run) -> None:
    from benchmarks._cring import CFloor, summarise_pingpong
    from benchmarks._feedbench import feed_pingpong

    cfg = run.cfg
    c = CFloor(run.ws)
    n, warm = cfg["pp_iterations"], cfg["pp_warmup"]
    trials: dict[str, list[np.ndarray]] = {"c": [], "line": [], "feed": []}
    pinned = {"c": True, "line": True, "feed": True}
    waited = []  # per feed trial: seconds the initiator / echo process sat runnable but not running
    for _ in range(cfg["pp_trials"]):  # interleaved, so drift on a shared machine hits all alike
        s, info = c.pingpong(n, warm)
        trials["c"].append(s)
        pinned["c"] &= bool(info["pinned_a"] and info["pinned_b"])
        s, info = c.pingpong(n, warm, mode="lineping")
        trials["line"].append(s)
        pinned["line"] &= bool(info["pinned_a"] and info["pinned_b"])
        s, info = feed_pingpong(run.ws, n, warm)
        trials["feed"].append(s)
        pinned["feed"] &= info["pinned"]
        waited.append(info["waited_runnable_s"])
    common = {"trials": cfg["pp_trials"], "per_trial": n, "warmup_per_trial": warm, "cpus": [CPU_A, CPU_B]}
    run.add(
        "C SPSC ring ping-pong (floor)",
        "pingpong",
        key="c_rtt",
        kind="floor",
        pinned=pinned["c"],
        latency=summarise_pingpong(trials["c"]),
        detail=common | {"compiler": c.compiler, "ring": "head/tail positions + 64-byte slots, C11 acquire/release"},
    )
    run.add(
        "C bare cache-line ping-pong",
        "pingpong",
        key="line_rtt",
        kind="floor",
        pinned=pinned["line"],
        latency=summarise_pingpong(trials["line"]),
        detail=common | {"ring": "none: one 8-byte store each way, the hardware's limit"},
    )
    run.add(
        "feed ring ping-pong (numba)",
        "pingpong",
        key="feed_rtt",
        pinned=pinned["feed"],
        latency=summarise_pingpong(trials["feed"]),
        detail=common
        | {
            "ring": "two FeedWriter segments; feed_publish_nb / feed_read_nb inside njit loops",
            "waited_runnable_s_per_trial": waited,
        },
    )


def run_throughput(run: Run) -> None:
    from benchmarks._cring import CFloor
    from benchmarks._feedbench import feed_preemption, feed_summary, feed_throughput

    cfg, ws = run.cfg, run.ws
    n, cap, batch = cfg["tp_records"], cfg["tp_capacity"], cfg["tp_batch"]
    info = CFloor(ws).throughput(n, batch, cap)
    span = info["t_consumer_done"] - info["t_producer_start"]
    run.add(
        "C SPSC ring stream (back-pressured)",
        "throughput",
        key="c_stream",
        kind="floor",
        pinned=bool(info["pinned_p"] and info["pinned_c"]),
        records_per_s=n / span * 1e9,
        lost=0,
        detail=info,
    )
    cases = []
    for readers, target in ((1, _report.TARGET_ONE_READER), (3, _report.TARGET_THREE_READERS)):
        paced = target * _report.HEADROOM
        who = f"{readers} numba reader" + (f"s sharing cpu{CPU_B}" if readers > 1 else "")
        cases.append((f"feed_{readers}_flat", f"{who}, flat out", readers, 0.0, n, False, target))
        total = int(paced * cfg["paced_seconds"])
        cases.append((f"feed_{readers}_paced", f"{who}, @{paced / 1e6:.0f}M/s", readers, paced, total, False, target))
    paced = _report.TARGET_ONE_READER * _report.HEADROOM
    cases.append(("feed_py_flat", "1 FeedReader (numpy), flat out", 1, 0.0, cfg["py_records"], True, None))
    total = int(paced * cfg["paced_seconds"])
    cases.append(("feed_py_paced", f"1 FeedReader (numpy), @{paced / 1e6:.0f}M/s", 1, paced, total, True, None))
    for key, label, readers, rate, total, python, target in cases:

        def once(readers=readers, rate=rate, total=total, python=python, key=key):
            return feed_throughput(
                ws, key, total=total, capacity=cap, readers=readers, batch=batch, rate=rate, python_reader=python
            )

        def ok(r, target=target, rate=rate):
            s = feed_summary(r)
            return target is None or (s["min_reader_records_per_s"] >= target and (not rate or s["lost"] == 0))

        r = best_attempt(once, ok, feed_preemption, run.retries, feed_summary)
        s = feed_summary(r)
        run.add(
            f"feed -> {label} (producer {r['producer_records_per_s'] / 1e6:.0f}M/s)",
            "throughput",
            key=key,
            pinned=r["pinned"],
            records_per_s=s["min_reader_records_per_s"],
            lost=s["lost"],
            preempted=r["preempted"],
            detail=r,
        )


def run_udp(run: Run) -> None:
    from benchmarks._udp import fill_ring, udp_preemption, udp_relay, udp_summary

    cfg = run.cfg
    try:
        from quayside.core.feed.udp import Relay, UdpReceiver  # noqa: F401
    except ImportError as exc:
        raise ChildError(f"quayside.core.feed.udp has no Relay/UdpReceiver yet ({exc})") from None
    ring = fill_ring(run.ws, cfg["udp_records"])
    offered = _report.TARGET_UDP * _report.HEADROOM
    for size in UDP_SIZES:
        for rate in (0.0, offered):
            total = int(offered * cfg["udp_seconds"]) if rate else cfg["udp_records"]

            def once(size=size, rate=rate, total=total):
                return udp_relay(run.ws, total, size, rate=rate, ring=ring)

            def ok(r, rate=rate):
                return not rate or (r["lost"] == 0 and r["delivered_records_per_s"] >= _report.TARGET_UDP)

            r = best_attempt(once, ok, udp_preemption, run.retries, udp_summary)
            label = f"@{offered / 1e6:.1f}M/s" if rate else "flat out"
            run.add(
                f"UDP relay {size} B, {label} ({r['records_per_datagram']}/dgram, "
                f"relay {r['relay_records_per_s'] / 1e6:.1f}M/s)",
                "udp",
                key=f"udp_{size}_{'paced' if rate else 'flat'}",
                pinned=r["pinned"],
                records_per_s=r["delivered_records_per_s"],
                lost=r["lost"],
                preempted=r["preempted"],
                detail=r,
            )


def run_asyncio(run: Run) -> None:
    from benchmarks._baselines import asyncio_queue

    cfg = run.cfg
    r = asyncio_queue(run.ws, cfg["async_iterations"], cfg["pp_warmup"], cfg["async_records"])
    detail = {"iterations": cfg["async_iterations"], "clock": "time.perf_counter_ns", "cpu": CPU_A}
    run.add(
        "asyncio.Queue ping-pong (1 process)",
        "asyncio",
        key="asyncio_rtt",
        kind="baseline",
        pinned=r["pinned"],
        latency=latency_stats(r["samples"]),
        detail=detail,
    )
    run.add(
        "asyncio.Queue stream (maxsize 1024)",
        "asyncio",
        key="asyncio_stream",
        kind="baseline",
        pinned=r["pinned"],
        records_per_s=r["records_per_s"],
        detail={"records": cfg["async_records"]},
    )


def run_socket(run: Run) -> None:
    from benchmarks._baselines import tcp_socket

    cfg = run.cfg
    r = tcp_socket(run.ws, cfg["sock_iterations"], min(cfg["pp_warmup"], 5_000), cfg["sock_records"])
    detail = {"iterations": cfg["sock_iterations"], "transport": "TCP 127.0.0.1, TCP_NODELAY", "cpus": [CPU_A, CPU_B]}
    run.add(
        "TCP loopback ping-pong (2 processes)",
        "socket",
        key="tcp_rtt",
        kind="baseline",
        pinned=r["pinned"],
        latency=latency_stats(r["samples"]),
        detail=detail,
    )
    run.add(
        "TCP loopback stream (1 sendall/record)",
        "socket",
        key="tcp_stream",
        kind="baseline",
        pinned=r["pinned"],
        records_per_s=r["records_per_s"],
        detail={"records": r["records"]},
    )


RUNNERS = {
    "pingpong": run_pingpong,
    "throughput": run_throughput,
    "udp": run_udp,
    "asyncio": run_asyncio,
    "socket": run_socket,
}


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = module_parser(
        "feed",
        __doc__,
        "fewer iterations and records (well under a minute)",
        choices=GROUPS,
        retries="a throughput or UDP run",
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
        if {"pingpong", "throughput", "udp"} & set(args.groups):
            from benchmarks._feedbench import compile_kernels

            seconds = compile_kernels(ws)
            print(f"numba kernels ready in {seconds:.1f} s", file=sys.stderr, flush=True)
        for g in args.groups:
            run.group(g, RUNNERS[g])
    machine["loadavg_at_end"] = list(os.getloadavg())
    targets = _report.evaluate(run.rows, args.groups)
    _report.annotate(run.rows, targets)
    print()
    print(format_table(run.rows))
    print()
    print(_report.format_targets(targets))
    notes = _report.notes(machine, run.unpinned, run.rows, run.background)
    for note in notes:
        print(f"note: {note}")
    return finish(
        args,
        "feed",
        started,
        args.groups,
        machine,
        cfg,
        measurements=run.rows,
        targets=targets,
        background_busy_before_group=run.background,
        errors=run.errors,
        notes=notes,
    )


if __name__ == "__main__":
    sys.exit(main())
