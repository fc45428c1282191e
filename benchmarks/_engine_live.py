"""The live engine as a real process (``quayside engine run``) on rings in the run's private
shared-memory folder: tick-to-order round trips driven from another pinned process, and
start-up time with the kernel cache warm and cold."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import CPU_A, CPU_B, Child, ChildError, OnCpu, Workspace
from benchmarks._engine_driver import (
    S_DT_DECIDE,
    S_DT_QUEUE,
    S_ORDER_ID,
    S_SIDE,
    S_T_SEEN,
    S_T_WRITE,
    S_TS_EVENT,
    S_TS_RECV,
    price_bits,
    quote_words,
    status_word0,
    tick_to_order_nb,
)
from quayside.core import wire
from quayside.core.feed.segment import RingType, attach_segment, private_segment

__all__ = [
    "EngineProcess",
    "compile_driver",
    "tick_to_order",
    "summarise_round_trips",
    "startup_once",
    "python_floor",
    "startup_breakdown",
    "kill_all",
]

QUAYSIDE = str(Path(sys.executable).with_name("quayside"))
EURUSD = 1  # in the built-in registry
# two price levels 1 pip apart (mid 1.10010 / 1.10000, spread 1 pip): every quote flips the
# crossover's signal with fast_span=1, slow_span=2, threshold 0
LEVELS = price_bits(1.10005, 1.10015, 1.09995, 1.10005)
ROUND_TRIP_TIMEOUT_NS = 2_000_000_000


def engine_config(rings: dict[str, str], wait_strategy: str) -> str:
    """The engine's TOML: the crossover set to trade on every quote, risk on with limits that
    let every order through (duplicate guard off, message rate effectively unlimited; each
    check still runs)."""
    return f"""\
heartbeat_ms = 1000.0
wait_strategy = "{wait_strategy}"

[rings]
inbound = "{rings["inbound"]}"
outbound = "{rings["outbound"]}"
control = "{rings["control"]}"
feed = "{rings["feed"]}"
inbound_capacity = 1024
outbound_capacity = 1024
control_capacity = 64
feed_capacity = 65536

[strategy]
name = "crossover"
instruments = ["EURUSD"]

[strategy.params]
fast_span = 1
slow_span = 2
threshold_bps = 0.0
order_qty = 1.0

[risk]
duplicate_window_ms = 0.0
max_messages_per_window = 512
message_window_ms = 0.001

[risk.defaults]
max_order_qty = 10.0
max_order_notional = 100.0
max_long_position = 10.0
max_short_position = 10.0
"""


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EngineProcess:
    """``quayside engine run --config FILE --cpu N`` with its rings in the workspace's folder.
    Killed with the benchmark (PR_SET_PDEATHSIG), and by :meth:`stop` / the workspace."""

    def __init__(self, ws: Workspace, name: str, wait_strategy: str, *, cpu: int = CPU_B, env: dict | None = None):
        self.name = name
        self.rings = {r: ws.ring(f"{name}-{r}") for r in ("inbound", "outbound", "control", "feed")}
        self.config_path = ws.tmp / f"{name}.toml"
        self.config_path.write_text(engine_config(self.rings, wait_strategy))
        self.log_path = ws.tmp / f"{name}.log"
        cmd = [QUAYSIDE, "engine", "run", "--config", str(self.config_path), "--cpu", str(cpu)]
        with open(self.log_path, "wb") as log:
            self.t_popen = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                preexec_fn=_die_with_parent,
            )
        _PROCESSES.append(self)
        self.t_ready: float | None = None
        self.schedstat_at_ready: tuple[int, int] | None = None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_started(self, timeout: float) -> float:
        """Seconds from ``Popen`` to the ENGINE_STARTED record on the feed ring."""
        from quayside.core.feed.ring import FeedReader

        feed = Path(self.rings["feed"])
        deadline = self.t_popen + timeout
        reader = None
        try:
            while True:
                if reader is None and feed.exists():
                    with contextlib.suppress(Exception):  # the file may appear before its header is linked in
                        reader = FeedReader(feed, start="oldest")
                if reader is not None:
                    got = reader.read()
                    if len(got):
                        logs = got[got["kind"] == wire.RecordKind.LOG].view(wire.log_dtype)
                        if (logs["code"] == wire.LogCode.ENGINE_STARTED).any():
                            self.t_ready = time.perf_counter()
                            self.schedstat_at_ready = self.schedstat()
                            return self.t_ready - self.t_popen
                if self.proc.poll() is not None:
                    raise ChildError(f"engine {self.name} exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
                if time.perf_counter() > deadline:
                    raise ChildError(f"engine {self.name} not started within {timeout:.0f} s:\n{self.output()[-3000:]}")
                time.sleep(0.0005)
        finally:
            if reader is not None:
                reader.close()

    def reported_ready_s(self) -> float | None:
        """The engine's own 'ready in X s' (configuration to warmed kernels and mapped rings)."""
        for line in self.output().splitlines():
            if "ready in " in line:
                with contextlib.suppress(ValueError, IndexError):
                    return float(line.split("ready in ", 1)[1].split()[0])
        return None

    def schedstat(self) -> tuple[int, int] | None:
        """(ns on a CPU, ns runnable but waiting) of the engine process."""
        try:
            ran, waited, _ = Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()
            return int(ran), int(waited)
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(ValueError):
            _PROCESSES.remove(self)
        return self.proc.returncode


_PROCESSES: list[EngineProcess] = []


def kill_all() -> None:
    """Kill every engine process this run started and has not stopped (on failure or Ctrl-C)."""
    for p in list(_PROCESSES):
        if p.proc.poll() is None:
            p.proc.kill()
        with contextlib.suppress(Exception):
            p.proc.wait(10)
        _PROCESSES.remove(p)


# --------------------------------------------------------------------------- tick to order


def _driver_args(inbound, outbound, samples: np.ndarray, warmup: int, timeout_ns: int):
    quote = quote_words(EURUSD)
    status = np.zeros((1, 8), dtype=np.int64)
    order = np.zeros((4, 8), dtype=np.int64)
    return (
        inbound.words,
        inbound.slot_words,
        outbound.words,
        outbound.slot_words,
        quote,
        status,
        order,
        LEVELS,
        status_word0(),
        samples,
        warmup,
        timeout_ns,
    )


def compile_driver() -> float:
    """Compile (or load) the driver loop before forking: the engine side is absent, so the
    priming quote times out at once."""
    t0 = time.perf_counter()
    inbound, outbound = private_segment(RingType.COMMAND, 64), private_segment(RingType.COMMAND, 64)
    tick_to_order_nb(*_driver_args(inbound, outbound, np.zeros((1, 8), np.int64), 0, 1000))
    return time.perf_counter() - t0


def _driver_main(conn, pinned, inbound_path, outbound_path, trials, iterations, warmup):
    inbound = attach_segment(inbound_path, RingType.COMMAND, writable=True)
    outbound = attach_segment(outbound_path, RingType.COMMAND, writable=True)
    results = []
    clock = OnCpu()
    for _ in range(trials):
        samples = np.zeros((iterations, 8), dtype=np.int64)
        done = tick_to_order_nb(*_driver_args(inbound, outbound, samples, warmup, ROUND_TRIP_TIMEOUT_NS))
        results.append({"done": int(done), "samples": samples})
        if done != warmup + iterations:
            break
    conn.send({"pinned": pinned, "trials": results, "cpu": clock.result()})


def tick_to_order(ws: Workspace, wait_strategy: str, trials: int, iterations: int, warmup: int) -> dict:
    """Start an engine (``wait_strategy``, pinned to CPU_B), drive ``trials`` x ``iterations``
    timed round trips from a process pinned to CPU_A, stop the engine."""
    engine = EngineProcess(ws, f"t2o-{wait_strategy}", wait_strategy)
    try:
        startup_s = engine.wait_started(timeout=600)
        startup_cpu = engine.schedstat_at_ready
        before = engine.schedstat()
        t0 = time.perf_counter()
        child = Child(
            ws,
            "driver",
            CPU_A,
            _driver_main,
            engine.rings["inbound"],
            engine.rings["outbound"],
            trials,
            iterations,
            warmup,
        )
        res = child.recv(timeout=120 + trials * (iterations + warmup) * 1e-4)
        wall = time.perf_counter() - t0
        after = engine.schedstat()
        child.stop()
        banner = [line for line in engine.output().splitlines() if "wait strategy" in line or "cpu:" in line]
        reported = engine.reported_ready_s()
    finally:
        code = engine.stop()
        ws.reap()
    engine_cpu = None
    if before and after:
        ran, waited = (after[0] - before[0]) / 1e9, (after[1] - before[1]) / 1e9
        engine_cpu = {"wall_s": round(wall, 3), "ran_s": round(ran, 3), "waited_runnable_s": round(waited, 4)}
    expected = warmup + iterations
    incomplete = [t["done"] for t in res["trials"] if t["done"] != expected]
    samples = np.concatenate(
        [t["samples"] for t in res["trials"] if t["done"] == expected] or [np.zeros((0, 8), np.int64)]
    )
    return {
        "wait_strategy": wait_strategy,
        "pinned": bool(res["pinned"]),
        "startup_s": startup_s,
        "startup_waited_runnable_s": None if startup_cpu is None else startup_cpu[1] / 1e9,
        "engine_reported_ready_s": reported,
        "samples": samples,
        "incomplete_trials": incomplete,
        "driver_cpu": res["cpu"],
        "engine_cpu": engine_cpu,
        "engine_exit_code": code,
        "banner": banner,
    }


def summarise_round_trips(samples: np.ndarray, warmup: int, latency_stats) -> dict:
    """Round-trip percentiles, the engine's own per-stage numbers, and the checks that every
    round trip produced the expected order."""
    rtt = samples[:, S_T_SEEN] - samples[:, S_T_WRITE]
    queue = samples[:, S_DT_QUEUE]
    decide = samples[:, S_DT_DECIDE]
    in_engine = samples[:, S_TS_EVENT] - samples[:, S_TS_RECV]
    to_driver = samples[:, S_T_SEEN] - samples[:, S_TS_EVENT]
    ids = samples[:, S_ORDER_ID]
    sides = samples[:, S_SIDE]
    expected_side = np.where((np.arange(len(samples)) + warmup) % 2 == 0, 1, 255)  # even: high level, BUY
    checks = {
        "round_trips": len(samples),
        "orders": int((ids > 0).sum()),
        "not_an_order": int((ids <= 0).sum()),
        "order_ids_consecutive": bool(len(ids) < 2 or np.all(np.diff(ids[ids > 0]) >= 1)),
        "wrong_side": int((sides != expected_side).sum()),
        "ts_recv_not_the_quote": int((samples[:, S_TS_RECV] != samples[:, S_T_WRITE]).sum()),
    }
    checks["every_round_trip_an_order"] = (
        checks["orders"] == checks["round_trips"] and checks["wrong_side"] == 0 and checks["ts_recv_not_the_quote"] == 0
    )
    return {
        "round_trip": latency_stats(rtt),
        "engine_dt_queue": latency_stats(queue),
        "engine_dt_decide": latency_stats(decide),
        "engine_ts_event_minus_ts_recv": latency_stats(in_engine),
        "order_written_to_seen_by_driver": latency_stats(to_driver),
        "checks": checks,
    }


# --------------------------------------------------------------------------- start-up


def startup_once(ws: Workspace, name: str, env: dict | None = None, timeout: float = 900.0) -> dict:
    """One engine start: Popen to ENGINE_STARTED on the feed, and the engine's own figure."""
    engine = EngineProcess(ws, name, "spin-yield", env=env)
    try:
        seconds = engine.wait_started(timeout)
        reported = engine.reported_ready_s()
        cpu = engine.schedstat_at_ready
    finally:
        engine.stop()
    return {
        "seconds": seconds,
        "engine_reported_ready_s": reported,
        "ran_s": None if cpu is None else cpu[0] / 1e9,
        "waited_runnable_s": None if cpu is None else cpu[1] / 1e9,
    }


_BREAKDOWN = r"""
import json, sys, time
t = [time.perf_counter()]
import numba  # noqa: F401
t.append(time.perf_counter())
from quayside.cli import build_parser
build_parser()
t.append(time.perf_counter())
from quayside.core.engine.config import EngineConfig, load_toml_config
from quayside.core.engine.process import host_facts
from quayside.core.engine.setup import prepare_engine, warm_up
from quayside.core.feed.ring import FeedWriter
from quayside.core.feed.segment import RingType, create_segment
from quayside.core.instruments import default_registry
t.append(time.perf_counter())
cfg = load_toml_config(sys.argv[1], EngineConfig)
host_facts(cfg)
t.append(time.perf_counter())
p = prepare_engine(default_registry(), cfg.strategy, cfg.risk, fx_fallback=cfg.fx_fallback)
t.append(time.perf_counter())
warm_up(p)
t.append(time.perf_counter())
r = cfg.rings
segs = [create_segment(path, RingType.COMMAND, cap, exist_ok=True) for path, cap in
        ((r.inbound, r.inbound_capacity), (r.control, r.control_capacity), (r.outbound, r.outbound_capacity))]
segs.append(FeedWriter(r.feed, r.feed_capacity, replace=True).segment)
for seg in segs:
    seg.prefault()
t.append(time.perf_counter())
names = ["import_numba", "cli_imports", "engine_imports", "config_pin_mlockall", "bind_and_prepare",
         "warm_up_load_kernels", "rings"]
print(json.dumps({n: round(b - a, 4) for n, a, b in zip(names, t, t[1:])}))
"""


def startup_breakdown(ws: Workspace) -> dict:
    """The engine's start-up, step by step, in a fresh Python (the steps ``Engine.__init__``
    takes, timed one by one; the rings go to a private folder)."""
    rings = {r: ws.ring(f"breakdown-{r}") for r in ("inbound", "outbound", "control", "feed")}
    path = ws.tmp / "breakdown.toml"
    path.write_text(engine_config(rings, "spin-yield"))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _BREAKDOWN, str(path)], capture_output=True, text=True, timeout=900)
    total = time.perf_counter() - t0
    if out.returncode != 0:
        raise ChildError(f"start-up breakdown failed:\n{out.stderr[-3000:]}")
    steps = json.loads(out.stdout.strip().splitlines()[-1])
    steps["interpreter_and_rest"] = round(total - sum(steps.values()), 4)
    return {"seconds": steps, "total_s": round(total, 4)}


def python_floor(code: str, runs: int) -> list[float]:
    """Seconds to spawn ``python -c code`` and see it exit, ``runs`` times."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], capture_output=True)
        out.append(time.perf_counter() - t0)
    return out
