"""The live engine process: pin, prepare, warm up, then run the jitted loop until told to stop.

Start-up, in order: validate the configuration; pin to the configured CPU; ask for a real-time
scheduling policy and locked memory where configured (and say plainly when the system refuses);
bind and compile (or load from cache) every kernel and warm them on throw-away state; attach the
rings; print a banner with the pinning result and the wait strategy; then loop. The loop lives in
``run_live_nb`` and comes back to Python every ``budget`` (100 ms) only so that signals (SIGTERM,
SIGINT) are seen; everything else — control commands included — is handled inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from quayside.core import wire
from quayside.core.engine.config import EngineConfig
from quayside.core.engine.setup import prepare_engine, warm_up
from quayside.core.engine.state import Rings, inbound_views
from quayside.core.feed.idle import wait_strategy_id
from quayside.core.feed.ring import FeedWriter
from quayside.core.feed.segment import RingType, create_segment
from quayside.core.instruments import InstrumentRegistry, default_registry

__all__ = ["HostFacts", "host_facts", "Engine"]

_BUDGET_NS = 100_000_000
_MCL_CURRENT, _MCL_FUTURE = 1, 2


@dataclass
class HostFacts:
    """What the engine learned about its CPU placement and privileges at start-up."""

    cpu: int | None
    pinned: bool
    isolated: bool
    realtime: str
    memory_locked: str
    wait_strategy: str
    wait_reason: str


def _isolated_cpus() -> set[int]:
    try:
        text = Path("/sys/devices/system/cpu/isolated").read_text().strip()
    except OSError:
        return set()
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def host_facts(config: EngineConfig) -> HostFacts:
    """Pin, ask for real-time scheduling and locked memory, choose the wait strategy."""
    cpu = config.cpu
    pinned = False
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
            pinned = True
        except OSError as exc:
            logger.warning("could not pin to cpu {}: {} (running unpinned)", cpu, exc.strerror)
    isolated = cpu is not None and cpu in _isolated_cpus()
    realtime = "not requested"
    if config.realtime_priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(config.realtime_priority))
            realtime = f"SCHED_FIFO priority {config.realtime_priority}"
        except OSError as exc:
            realtime = f"refused ({exc.strerror}; needs CAP_SYS_NICE or a LimitRTPRIO in the systemd unit)"
    memory = "not requested"
    if config.lock_memory:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) == 0:
            memory = "locked (mlockall)"
        else:
            memory = f"not locked ({os.strerror(ctypes.get_errno())}; raise LimitMEMLOCK)"
    if config.wait_strategy == "auto":
        if pinned and isolated:
            wait, reason = "busy-spin", f"cpu {cpu} is isolated"
        else:
            wait = "spin-yield"
            reason = "no isolated core to burn" if not isolated else "not pinned"
    else:
        wait, reason = config.wait_strategy, "configured"
    return HostFacts(cpu if pinned else None, pinned, isolated, realtime, memory, wait, reason)


class Engine:
    """One live engine: its state, its rings and its loop."""

    def __init__(self, config: EngineConfig, registry: InstrumentRegistry | None = None):
        started = time.perf_counter()
        self.config = config
        self.registry = registry or (
            InstrumentRegistry.load(config.registry) if config.registry else default_registry()
        )
        self.facts = host_facts(config)
        self.prepared = prepare_engine(
            self.registry,
            config.strategy,
            config.risk,
            fx_fallback=config.fx_fallback,
            replay=False,
            first_order_id=config.first_order_id,
        )
        warm_up(self.prepared)
        a = self.prepared.arrays
        eng = a.engine[0]
        eng["cpu"] = -1 if self.facts.cpu is None else self.facts.cpu
        eng["wait_strategy"] = wait_strategy_id(self.facts.wait_strategy)
        eng["heartbeat_interval_ns"] = int(config.heartbeat_ms * 1e6)
        rings = config.rings
        self.inbound = create_segment(rings.inbound, RingType.COMMAND, rings.inbound_capacity, exist_ok=True)
        self.control = create_segment(rings.control, RingType.COMMAND, rings.control_capacity, exist_ok=True)
        self.outbound = create_segment(rings.outbound, RingType.COMMAND, rings.outbound_capacity, exist_ok=True)
        self.feed = FeedWriter(rings.feed, rings.feed_capacity, replace=True)
        for seg in (self.inbound, self.control, self.outbound, self.feed.segment):
            seg.prefault()  # page faults now, not in the loop
        self.rings = Rings(
            self.outbound.words, self.outbound.slot_words, self.feed.segment.words, self.feed.segment.slot_words
        )
        self.inb = inbound_views(self.inbound.slot_words)
        self.ctl = inbound_views(self.control.slot_words)
        self.startup_seconds = time.perf_counter() - started
        self._stop = False

    def banner(self) -> list[str]:
        f = self.facts
        return [
            f"quayside engine: strategy {self.prepared.strategy.NAME} on {', '.join(self.prepared.instruments)}",
            f"  cpu: {'pinned to ' + str(f.cpu) if f.pinned else 'not pinned'}"
            + (" (isolated)" if f.isolated else " (shared with other processes)" if f.pinned else ""),
            f"  wait strategy: {f.wait_strategy} ({f.wait_reason})",
            f"  real-time scheduling: {f.realtime}; memory: {f.memory_locked}",
            f"  rings: inbound {self.inbound.path}, outbound {self.outbound.path}, control {self.control.path}, "
            f"feed {self.feed.segment.path}",
            f"  ready in {self.startup_seconds:.2f} s (kernels compiled or loaded and warmed)",
        ]

    def stop(self, *_args) -> None:
        self._stop = True

    def run(self, duration: float | None = None, *, handle_signals: bool = True) -> int:
        """Run the loop until stopped (signal, :meth:`stop`, or ``duration`` seconds)."""
        if handle_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        kernels = self.prepared.kernels.engine
        a, r = self.prepared.arrays, self.rings
        now = time.time_ns()
        kernels.log_nb(
            a,
            r,
            wire.LogCode.ENGINE_STARTED,
            wire.LogLevel.INFO,
            0,
            now,
            a.engine[0]["cpu"],
            a.engine[0]["wait_strategy"],
            0.0,
            0.0,
        )
        kernels.heartbeat_nb(a, r, now)
        deadline = None if duration is None else time.monotonic() + duration
        handled = 0
        while not self._stop and (deadline is None or time.monotonic() < deadline):
            handled += kernels.run_live_nb(
                a, r, self.inbound.words, self.inb, self.control.words, self.ctl, 256, _BUDGET_NS
            )
        now = time.time_ns()
        kernels.heartbeat_nb(a, r, now)
        kernels.log_nb(
            a, r, wire.LogCode.ENGINE_STOPPED, wire.LogLevel.INFO, 0, now, a.engine[0]["loop_iterations"], 0, 0.0, 0.0
        )
        return handled

    def close(self) -> None:
        self.feed.close(unlink=False)
        for seg in (self.inbound, self.control, self.outbound):
            with contextlib.suppress(Exception):
                seg.close()
