"""Engine benchmarks against their floors and the usual Python baseline, measured side by side.

    python -m benchmarks.engine [--quick] [--out PATH] [--only GROUP,...] [--profile]

Groups (all but ``profile`` by default):

``replay``
    the backtest loop (``prepare_engine`` + ``run_replay_nb`` as ``runner.py`` drives them, and
    ``run_replay`` itself) with the crossover, risk on, simulated fills and the feed written, on
    5 million quotes derived from the real EURUSD quotes in ``../shared/data``; beside a plain
    ``@kernel`` loop doing only the crossover's arithmetic (the floor);
``profile``
    where the replay loop's time goes: the loop with one piece taken out at a time, compared on
    CPU time (compiles six kernel variants on first use: minutes; then cached);
``tick_to_order``
    a real ``quayside engine run`` process pinned to CPU 1 and a driver pinned to CPU 0: quote
    into the inbound ring -> order out of the outbound ring, for the spin-yield and busy-spin
    wait strategies, beside the C ring ping-pong of the feed benchmark;
``startup``
    ``Popen`` to ENGINE_STARTED on the feed with the kernel cache warm and cold, beside the time
    to start a Python that imports numba and the CLI alone, and one start timed step by step;
``asyncio``
    the same strategy and risk checks written as an asyncio pipeline, on the same quotes.

Prints one table and writes a JSON file with the machine, every measurement and every target
verdict (default ``benchmarks/results/engine.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks import _engine_report as report
from benchmarks._common import (
    CPU_A,
    CPU_B,
    PREEMPTED,
    ChildError,
    OnCpu,
    Workspace,
    cpu_busy,
    finish,
    latency_stats,
    machine_info,
    module_parser,
    run_main,
)

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("replay", "profile", "tick_to_order", "startup", "asyncio")
DEFAULT_GROUPS = ("replay", "tick_to_order", "startup", "asyncio")

# name: (full, quick)
PLAN = {
    "replay_events": (5_000_000, 5_000_000),
    "replay_runs": (5, 2),
    "equity_runs": (3, 1),
    "profile_runs": (5, 3),
    "t2o_trials": (2, 1),
    "t2o_iterations": (50_000, 10_000),  # timed round trips per trial
    "t2o_warmup": (5_000, 2_000),
    "c_iterations": (50_000, 10_000),
    "c_warmup": (10_000, 2_000),
    "startup_runs": (3, 1),  # plus the two tick-to-order engines' starts
    "startup_cold": (True, False),
    "floor_runs": (3, 1),
    "asyncio_quotes": (200_000, 50_000),
    "asyncio_round_trips": (20_000, 5_000),
}


def plan(quick: bool) -> dict:
    return {k: v[1] if quick else v[0] for k, v in PLAN.items()}


class Run:
    """Collects measurements (``rows``), failures and notes while the groups run."""

    def __init__(self, ws: Workspace, cfg: dict):
        self.ws, self.cfg = ws, cfg
        self.rows: list[dict] = []
        self.errors: list[dict] = []
        self.notes: list[str] = []
        self.background: dict[str, dict] = {}
        self._data = None

    def data(self):
        """The derived quotes (made once per run)."""
        if self._data is None:
            from benchmarks._engine_data import derived_quotes

            t0 = time.perf_counter()
            self._data = derived_quotes(self.cfg["replay_events"])
            print(f"  data: {self._data.description} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        return self._data

    def add(self, name: str, group: str, key: str, **fields) -> dict:
        row = {"name": name, "group": group, "key": key, **fields}
        self.rows.append(row)
        return row

    def group(self, name: str, fn) -> None:
        from benchmarks._engine_live import kill_all

        self.background[name] = busy = cpu_busy()  # nothing of ours runs now: this is everyone else
        load = ", ".join(f"{k} {v:.0%}" for k, v in busy.items())
        print(f"[{time.strftime('%H:%M:%S')}] {name} (other load: {load}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            fn(self)
        except ChildError as exc:
            print(f"  {name} failed: {exc}", file=sys.stderr, flush=True)
            self.errors.append({"group": name, "error": str(exc)})
        except Exception:
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            self.errors.append({"group": name, "error": traceback.format_exc()})
        finally:
            kill_all()
            self.ws.reap()
        print(f"  {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def _preempted(cpu: dict) -> float | None:
    """Share of the time a process wanted the CPU that it sat runnable while others ran."""
    waited = cpu.get("waited_runnable_s")
    ran = cpu.get("ran_s")
    if waited is None or not ran:
        return None
    return round(waited / (ran + waited), 3)


# --------------------------------------------------------------------------- replay


def run_replay_group(run: Run) -> None:
    from benchmarks._engine_replay import (
        EQUITY_INTERVAL_MS,
        ORDER_QTY,
        PARAMS,
        drain_cost,
        replay_config,
        run_floor,
        run_kernel_loop,
        run_runner,
    )

    cfg, data = run.cfg, run.data()
    config = replay_config(data.symbols[0])
    default_equity = replay_config(data.symbols[0], equity_interval_ms=1_000.0)
    records, registry = data.records, data.registry
    words = records.view(np.int64).reshape(-1, 8)
    n = len(records)
    t0 = time.perf_counter()
    run_floor(words[:1000])
    run_kernel_loop(records[:20_000], config, registry)
    run_runner(records[:20_000], config, registry)
    print(f"  kernels ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    floor_s, flips, loops, runners, equity = [], [], [], [], []
    clock = OnCpu()
    for i in range(cfg["replay_runs"]):  # interleaved, so drift on a shared machine hits all alike
        s, f = run_floor(words)
        floor_s.append(s)
        flips.append(f)
        loops.append(run_kernel_loop(records, config, registry))
        runners.append(run_runner(records, config, registry))
        if i < cfg["equity_runs"]:
            equity.append(run_kernel_loop(records, default_equity, registry))
    cpu = clock.result()
    preempted = _preempted(cpu)
    drain = drain_cost(config.feed_capacity)
    kernel_s = [x["kernel_s"] for x in loops]
    first = loops[0]
    counts = {k: first[k] for k in ("orders", "fills", "denials", "feed_records", "events_in")}
    deterministic = all({k: x[k] for k in counts} == counts for x in loops)
    common = {
        "events": n,
        "runs": cfg["replay_runs"],
        "data": data.description,
        "data_source": data.source,
        "strategy": {"name": "crossover", **PARAMS, "order_qty": ORDER_QTY, "order_type": "ioc_limit"},
        "risk": config.risk.model_dump(),
        "venue": config.venue.model_dump(),
        "feed_capacity": config.feed_capacity,
        "process": "the benchmark's own process, not pinned",
        "cpu": cpu,
    }
    run.add(
        "floor: @kernel loop, EMAs + signal only",
        "replay",
        "replay_floor",
        kind="floor",
        events_per_s=n / float(np.median(floor_s)),
        preempted=preempted,
        detail={
            **common,
            "seconds": floor_s,
            "signal_changes": flips[0],
            "what": "reads bid/ask from the same 64-byte records",
        },
    )
    run.add(
        "replay loop (run_replay_nb: crossover, risk, venue, feed)",
        "replay",
        "replay_kernel",
        events_per_s=n / float(np.median(kernel_s)),
        preempted=preempted,
        detail={
            **common,
            "clock": "time inside the run_replay_nb calls, driven as runner.py drives them",
            "seconds": kernel_s,
            "cpu_seconds": [x["kernel_cpu_s"] for x in loops],
            "events_per_cpu_second_median": n / float(np.median([x["kernel_cpu_s"] for x in loops])),
            "loop_seconds_with_runner_drain": [x["loop_s"] for x in loops],
            "drain_and_python_ns_per_event_median": float(
                np.median([(x["loop_s"] - x["kernel_s"]) / n * 1e9 for x in loops])
            ),
            "kernel_calls": first["kernel_calls"],
            **counts,
            "identical_counts_every_run": deterministic,
            "ns_per_event_median": float(np.median(kernel_s)) / n * 1e9,
        },
    )
    r0 = runners[0]
    wall = [x["wall_s"] for x in runners]
    run.add(
        "run_replay() wall_seconds (loop + runner.py drain)",
        "replay",
        "replay_run_replay",
        events_per_s=n / float(np.median(wall)),
        preempted=preempted,
        detail={
            **common,
            "clock": "run_replay(...).wall_seconds (write_feed=False, no out_dir)",
            "seconds": wall,
            **{k: r0[k] for k in ("orders", "fills", "denials", "denials_by_reason", "venue_rejects", "feed_records")},
            "runner_drain": drain,
        },
    )
    eq = [x["kernel_s"] for x in equity]
    run.add(
        "  replay loop, equity sampled every 1 s (venue default)",
        "replay",
        "replay_equity_1s",
        events_per_s=n / float(np.median(eq)),
        preempted=preempted,
        detail={"seconds": eq, "kernel_calls": equity[0]["kernel_calls"], "equity_interval_ms": 1_000.0},
    )
    span_days = (int(records["ts_event"][-1]) - int(records["ts_event"][0])) / 86_400e9
    run.notes.append(
        f"replay data: {data.description}. Equity is sampled every {EQUITY_INTERVAL_MS / 1000:g} s of event time in "
        f"the timed runs: the data spans {span_days:.1f} days of event time, and the venue's default of 1 s would "
        f"write {span_days * 86_400 / n:.2f} equity samples per event (shown as its own row)"
    )
    if not deterministic:
        run.notes.append("replay: order/fill/feed counts differed between runs (they should be identical)")


def run_profile_group(run: Run) -> None:
    from benchmarks._engine_replay import replay_config, run_kernel_loop
    from benchmarks._engine_variants import VARIANTS, load_variant
    from quayside.core.engine.binding import bind

    data = run.data()
    config = replay_config(data.symbols[0])
    records, registry = data.records, data.registry
    strategy = bind(config.strategy.name).strategy
    modules = {"full": None}
    t0 = time.perf_counter()
    for v in VARIANTS:
        modules[v.name] = load_variant(v, strategy)
        run_kernel_loop(records[:20_000], config, registry, modules[v.name])
    print(f"  variants ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    seconds: dict[str, list[float]] = {k: [] for k in modules}
    cpu_seconds: dict[str, list[float]] = {k: [] for k in modules}
    counts = {}
    clock = OnCpu()
    for _ in range(run.cfg["profile_runs"]):
        for name, module in modules.items():
            r = run_kernel_loop(records, config, registry, module)
            seconds[name].append(r["kernel_s"])
            cpu_seconds[name].append(r["kernel_cpu_s"])
            counts[name] = {k: r[k] for k in ("orders", "fills", "feed_records")}
    preempted = _preempted(clock.result())
    n = len(records)
    # compared on CPU time (this thread's, in the kernel): on a shared machine the wall clock also
    # counts the neighbours, and a few ns per event drown in that
    full_cpu = float(np.median(cpu_seconds["full"]))
    removes = {v.name: v.removes for v in VARIANTS}
    for name, s in seconds.items():
        cpu = float(np.median(cpu_seconds[name]))
        label = "profile: the full loop" if name == "full" else f"profile: without {removes[name]}"
        run.add(
            label,
            "profile",
            f"profile_{name}",
            events_per_s=n / float(np.median(s)),
            preempted=preempted,
            compare="CPU time" if name == "full" else f"{(full_cpu - cpu) / n * 1e9:+.1f} ns/ev CPU",
            detail={
                "seconds": s,
                "cpu_seconds": cpu_seconds[name],
                "ns_per_event_wall_median": float(np.median(s)) / n * 1e9,
                "ns_per_event_cpu_median": cpu / n * 1e9,
                "saves_ns_per_event_cpu_median": (full_cpu - cpu) / n * 1e9,
                "counts": counts[name],
            },
        )


# --------------------------------------------------------------------------- tick to order


def _c_floor(run: Run):
    """The C ring ping-pong of the feed benchmark, run now; None (and a note) if it cannot be."""
    from benchmarks._cring import CFloor

    try:
        return CFloor(run.ws)
    except ChildError as exc:
        run.notes.append(f"C ring floor not measured in this run: {exc}")
        return None


def _c_from_feed_json() -> dict | None:
    path = ROOT / "benchmarks" / "results" / "feed.json"
    try:
        rows = json.loads(path.read_text())["measurements"]
    except (OSError, ValueError, KeyError):
        return None
    for r in rows:
        if r.get("key") == "c_rtt":
            return {**r["latency"], "source": f"{path} ({json.loads(path.read_text()).get('started')})"}
    return None


def run_tick_to_order(run: Run) -> None:
    from benchmarks._cring import summarise_pingpong
    from benchmarks._engine_live import compile_driver, summarise_round_trips, tick_to_order

    cfg, ws = run.cfg, run.ws
    print(f"  driver kernel ready in {compile_driver():.1f} s", file=sys.stderr, flush=True)
    c = _c_floor(run)
    c_trials, c_pinned = [], True
    results = {}
    for wait in ("spin-yield", "busy-spin"):  # C trials interleaved with the engine runs
        if c is not None:
            s, info = c.pingpong(cfg["c_iterations"], cfg["c_warmup"])
            c_trials.append(s)
            c_pinned &= bool(info["pinned_a"] and info["pinned_b"])
        results[wait] = tick_to_order(ws, wait, cfg["t2o_trials"], cfg["t2o_iterations"], cfg["t2o_warmup"])
    if c_trials:
        run.add(
            "C SPSC ring ping-pong (floor, this run)",
            "tick_to_order",
            "c_rtt",
            kind="floor",
            latency=summarise_pingpong(c_trials),
            compare="floor",
            detail={
                "source": "benchmarks/c/spsc_ring.c via benchmarks._cring, run now",
                "pinned": c_pinned,
                "cpus": [CPU_A, CPU_B],
            },
        )
    else:
        stored = _c_from_feed_json()
        if stored:
            run.add(
                "C SPSC ring ping-pong (floor, from feed.json)",
                "tick_to_order",
                "c_rtt",
                kind="floor",
                latency=stored,
                compare="floor",
                detail={"source": stored["source"]},
            )
            run.notes.append(f"C ring floor read from {stored['source']}, not measured in this run")
    for wait, r in results.items():
        s = summarise_round_trips(r["samples"], cfg["t2o_warmup"], latency_stats) if len(r["samples"]) else None
        driver, engine = _preempted(r["driver_cpu"]), None
        if r["engine_cpu"]:
            engine = _preempted(r["engine_cpu"])
        preempted = max(x for x in (driver, engine, 0.0) if x is not None)
        if r["incomplete_trials"] or s is None:
            raise ChildError(
                f"tick-to-order ({wait}): a round trip timed out: trials ended at {r['incomplete_trials']}"
            )
        detail = {
            "wait_strategy": wait,
            "trials": cfg["t2o_trials"],
            "round_trips_per_trial": cfg["t2o_iterations"],
            "warmup_per_trial": cfg["t2o_warmup"],
            "engine": f"quayside engine run --cpu {CPU_B} ({wait})",
            "driver": f"jitted loop pinned to cpu {CPU_A}: cmd_offer_nb quote -> cmd_peek_nb/cmd_poll_nb order -> "
            "ORDER_STATUS CANCELLED back",
            "clock": "now_ns (CLOCK_REALTIME, vDSO) in both processes",
            "checks": s["checks"],
            "engine_startup_s": r["startup_s"],
            "engine_startup_waited_runnable_s": r["startup_waited_runnable_s"],
            "engine_reported_ready_s": r["engine_reported_ready_s"],
            "driver_cpu": r["driver_cpu"],
            "engine_cpu": r["engine_cpu"],
            "preempted_driver": driver,
            "preempted_engine": engine,
            "pinned": r["pinned"],
            "engine_banner": r["banner"],
        }
        run.add(
            f"tick-to-order, engine {wait}",
            "tick_to_order",
            f"t2o_{wait}",
            latency=s["round_trip"],
            preempted=preempted,
            detail=detail,
        )
        for key, label in (
            ("engine_dt_queue", "quote written -> engine saw it (dt_queue_ns)"),
            ("engine_dt_decide", "engine saw it -> decided (dt_decide_ns)"),
            ("engine_ts_event_minus_ts_recv", "quote written -> order written (ts_event - ts_recv)"),
            ("order_written_to_seen_by_driver", "order written -> driver saw it"),
        ):
            run.add(
                f"  {label}",
                "tick_to_order",
                f"t2o_{wait}_{key}",
                latency=s[key],
                parent=f"t2o_{wait}",
                detail={
                    "from": "the order records" if key.startswith("engine_") else "the driver's clock and ts_event"
                },
            )


# --------------------------------------------------------------------------- start-up


def run_startup(run: Run) -> None:
    from benchmarks._engine_live import python_floor, startup_breakdown, startup_once

    cfg, ws = run.cfg, run.ws
    floor = python_floor("import numba", cfg["floor_runs"])
    run.add(
        "python -c 'import numba' (floor)",
        "startup",
        "startup_floor",
        kind="floor",
        seconds_median=float(np.median(floor)),
        seconds_max=max(floor),
        compare="floor",
        detail={"runs_s": floor, "what": "spawn a Python that imports numba and exits: any numba engine pays this"},
    )
    cli = python_floor(
        "import sys; sys.argv = ['quayside', '--help']; from quayside.cli import main; main()", cfg["floor_runs"]
    )
    run.add(
        "quayside --help (the CLI's own imports)",
        "startup",
        "startup_cli",
        seconds_median=float(np.median(cli)),
        seconds_max=max(cli),
        detail={"runs_s": cli, "what": "spawn the quayside CLI, parse, print help, exit: no engine, no numba"},
    )
    if not any(r["key"].startswith("t2o_") for r in run.rows):
        startup_once(ws, "startup-prime")  # the cache is warm after this, whatever it was before
    runs = [startup_once(ws, f"startup-warm-{i}") for i in range(cfg["startup_runs"])]
    # the tick-to-order engines started the same way, with the same warm cache: more samples
    t2o = [r["detail"] for r in run.rows if r["key"] in ("t2o_spin-yield", "t2o_busy-spin")]
    for d in t2o:
        runs.append(
            {
                "seconds": d["engine_startup_s"],
                "engine_reported_ready_s": d["engine_reported_ready_s"],
                "waited_runnable_s": d["engine_startup_waited_runnable_s"],
                "ran_s": None,
            }
        )
    warm = [r["seconds"] for r in runs]
    waited = [r["waited_runnable_s"] or 0.0 for r in runs]
    breakdown = startup_breakdown(ws)
    run.add(
        "engine start, kernel cache warm",
        "startup",
        "startup_warm",
        seconds_median=float(np.median(warm)),
        seconds_max=max(warm),
        preempted=round(float(np.median([w / s for w, s in zip(waited, warm, strict=True)])), 3),
        detail={
            "runs_s": warm,
            "runs_from_tick_to_order_engines": len(t2o),
            "engine_reported_ready_s": [r["engine_reported_ready_s"] for r in runs],
            "engine_waited_runnable_s": waited,
            "seconds_minus_waited_median": float(np.median([s - w for s, w in zip(warm, waited, strict=True)])),
            "breakdown": breakdown,
            "clock": "subprocess.Popen(['quayside','engine','run',...]) to the ENGINE_STARTED log record on the feed ring",
        },
    )
    if cfg["startup_cold"]:
        env = {
            "NUMBA_CACHE_DIR": str(ws.tmp / "cold-numba-cache"),
            "QUAYSIDE_CACHE_DIR": str(ws.tmp / "cold-quayside-cache"),
        }
        cold = startup_once(ws, "startup-cold", env=env)
        run.add(
            "engine start, caches empty (everything compiled)",
            "startup",
            "startup_cold",
            seconds_median=cold["seconds"],
            seconds_max=cold["seconds"],
            detail={
                "runs_s": [cold["seconds"]],
                "engine_reported_ready_s": cold["engine_reported_ready_s"],
                "compile_s_estimate": cold["seconds"] - float(np.median(warm)),
                "env": "NUMBA_CACHE_DIR and QUAYSIDE_CACHE_DIR pointed at empty folders (the in-tree __pycache__ "
                "is then not used either)",
            },
        )


# --------------------------------------------------------------------------- asyncio


def run_asyncio(run: Run) -> None:
    from benchmarks._engine_asyncio import asyncio_baseline
    from benchmarks._engine_replay import ORDER_QTY, PARAMS, replay_config

    cfg, data = run.cfg, run.data()
    config = replay_config(data.symbols[0])
    lim = config.risk.defaults
    risk = {
        "max_order_qty": lim.max_order_qty,
        "max_order_notional": lim.max_order_notional,
        "max_long": lim.max_long_position,
        "max_short": lim.max_short_position,
        "max_messages": config.risk.max_messages_per_window,
        "window_ns": int(config.risk.message_window_ms * 1e6),
    }
    records = data.records[: cfg["asyncio_quotes"]]
    r = asyncio_baseline(
        run.ws, records, data.symbols[0], {**PARAMS, "order_qty": ORDER_QTY}, risk, cfg["asyncio_round_trips"]
    )
    stream, rtt = r["stream"], r["round_trip"]
    run.add(
        f"asyncio pipeline, stream of {len(records):,} derived quotes",
        "asyncio",
        "asyncio_stream",
        kind="baseline",
        events_per_s=len(records) / stream["seconds"],
        detail={
            "quotes": len(records),
            "seconds": stream["seconds"],
            "orders": stream["orders"],
            "fills": stream["fills"],
            "denials": stream["denials"],
            "pipeline": "producer -> Queue(1024) -> strategy -> Queue -> risk -> Queue -> order sink (fills at once)",
            "pinned_cpu": CPU_A if r["pinned"] else None,
        },
    )
    lat = rtt["latencies"]
    run.add(
        "asyncio pipeline tick-to-order (in-process)",
        "asyncio",
        "asyncio_rtt",
        kind="baseline",
        latency=latency_stats(lat),
        detail={
            "round_trips": len(lat),
            "every_round_trip_an_order": len(lat) == cfg["asyncio_round_trips"],
            "clock": "time.perf_counter_ns: quote put on the first queue -> order taken by the sink",
            "pinned_cpu": CPU_A if r["pinned"] else None,
        },
    )


RUNNERS = {
    "replay": run_replay_group,
    "profile": run_profile_group,
    "tick_to_order": run_tick_to_order,
    "startup": run_startup,
    "asyncio": run_asyncio,
}


# --------------------------------------------------------------------------- comparisons


def annotate(rows: list[dict], targets: list[dict]) -> None:
    """Fill each row's ``compare`` (ratio to its floor or baseline), ``target`` and ``verdict``."""
    k = {r["key"]: r for r in rows}
    verdict = {t["id"]: t["verdict"] for t in targets}
    floor = k.get("replay_floor", {}).get("events_per_s")
    c_p50 = k.get("c_rtt", {}).get("latency", {}).get("p50_ns")
    warm = k.get("startup_warm", {}).get("seconds_median")
    numba = k.get("startup_floor", {}).get("seconds_median")
    for r in rows:
        key = r["key"]
        if key == "replay_floor":
            r["compare"] = "floor"
        elif key in ("replay_kernel", "replay_run_replay"):
            r["compare"] = f"x{r['events_per_s'] / floor:.3f} floor" if floor else ""
            r["target"] = f">= {report.TARGET_REPLAY / 1e6:.0f}M/s"
            r["verdict"] = verdict["replay_throughput" if key == "replay_kernel" else "replay_throughput_run_replay"]
        elif key == "replay_equity_1s" and floor:
            r["compare"] = f"x{r['events_per_s'] / floor:.3f} floor"
        elif key in ("t2o_spin-yield", "t2o_busy-spin"):
            if c_p50:
                r["compare"] = f"x{r['latency']['p50_ns'] / c_p50:.2f} C ring"
            r["target"] = f"p50 <= {report.TARGET_T2O_P50_NS / 1000:g} µs"
            r["verdict"] = verdict.get(f"tick_to_order_{key[4:]}", "")
        elif r.get("parent") in k:
            r["compare"] = f"{r['latency']['p50_ns'] / k[r['parent']]['latency']['p50_ns']:.0%} of p50"
        elif key == "startup_warm":
            r["compare"] = f"x{warm / numba:.1f} import numba" if numba else ""
            r["target"] = f"<= {report.TARGET_STARTUP_S:g} s"
            r["verdict"] = verdict["startup_warm"]
        elif key == "startup_cold" and warm:
            r["compare"] = f"x{r['seconds_median'] / warm:.1f} warm"
        elif key == "asyncio_stream":
            base = k.get("replay_kernel", {}).get("events_per_s")
            r["compare"] = f"x{r['events_per_s'] / base:.4f} replay" if base else ""
        elif key == "asyncio_rtt":
            base = k.get("t2o_spin-yield", {}).get("latency", {}).get("p50_ns")
            r["compare"] = f"x{r['latency']['p50_ns'] / base:.1f} engine" if base else ""


def notes(machine: dict, run: Run) -> list[str]:
    out = list(run.notes)
    busy = {g: max((v for v in b.values() if v is not None), default=0.0) for g, b in run.background.items()}
    busy = {g: v for g, v in busy.items() if v > 0.1}
    if busy:
        out.append(
            "other processes kept the CPUs busy before these groups (busiest CPU, measured while this run "
            "was idle): " + ", ".join(f"{g} {v:.0%}" for g, v in busy.items())
        )
    starved = [f"{r['name'].strip()}: {r['preempted']:.0%}" for r in run.rows if (r.get("preempted") or 0) > PREEMPTED]
    if starved:
        out.append(
            f"other processes took more than {PREEMPTED:.0%} of the CPU time these runs wanted (a missed target there is "
            "INCONCLUSIVE): " + "; ".join(starved)
        )
    if not machine.get("cores_isolated"):
        out.append(
            f"no isolated cores: the engine (cpu {CPU_B}) and the driver (cpu {CPU_A}) share their CPUs with everything else on "
            "this machine, so tails (p99.9, max) include preemptions; busy-spin on a shared core is shown for "
            "comparison, spin-yield is what the engine chooses here"
        )
    start = machine.get("loadavg_at_start", [0])[0]
    cpus = machine.get("cpu_count") or 1
    if start > 0.5 * cpus:
        out.append(f"the machine was busy before the run started: 1-minute load average {start:.2f} on {cpus} CPUs")
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = module_parser(
        "engine",
        __doc__,
        "fewer runs and round trips, no cold start (well under a minute)",
        choices=GROUPS,
        default=DEFAULT_GROUPS,
        only_help=f"run only these groups: {', '.join(GROUPS)} (default: all but profile)",
    )
    p.add_argument("--profile", action="store_true", help="also run the profile group (replay loop variants)")
    args = p.parse_args(argv)
    if args.profile and "profile" not in args.groups:
        args.groups.insert(args.groups.index("replay") + 1 if "replay" in args.groups else 0, "profile")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, parse_args(argv))


def _main(args: argparse.Namespace) -> int:
    from benchmarks._engine_live import kill_all

    cfg = plan(args.quick)
    started = time.time()
    machine = machine_info(ROOT)
    with Workspace() as ws:
        run = Run(ws, cfg)
        try:
            for g in args.groups:
                run.group(g, RUNNERS[g])
        finally:
            kill_all()
    machine["loadavg_at_end"] = list(os.getloadavg())
    targets = report.evaluate(run.rows, args.groups)
    annotate(run.rows, targets)
    print()
    print(report.format_table(run.rows))
    print()
    print(report.format_targets(targets))
    all_notes = notes(machine, run)
    for note in all_notes:
        print(f"note: {note}")
    return finish(
        args,
        "engine",
        started,
        args.groups,
        machine,
        cfg,
        data=run._data.source | {"description": run._data.description} if run._data else None,
        measurements=run.rows,
        targets=targets,
        background_busy_before_group=run.background,
        errors=run.errors,
        notes=all_notes,
    )


if __name__ == "__main__":
    sys.exit(main())
