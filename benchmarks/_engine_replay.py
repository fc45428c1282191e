"""Replay throughput: the real backtest loop (``prepare_engine`` + ``run_replay_nb``, driven the
way ``core/replay/runner.py`` drives it) with the crossover, risk on, the simulated venue filling
its orders and every record written to the feed ring; beside the floor, a plain ``@kernel`` loop
over the same records that computes only the crossover's two EMAs and its signal.

Three clocks are read on the same work:

* ``kernel``: the time inside ``run_replay_nb`` calls only (the loop that writes the feed);
* ``loop``: the runner's whole ``while`` loop, with the Python drain of the feed ring between
  kernel calls exactly as ``runner.py`` does it (copy each half-ring out, keep the orders, fills,
  denials, statuses and logs);
* ``run_replay``: ``run_replay(...).wall_seconds`` itself (``write_feed=False``, no folder), the
  number the user sees.
"""

from __future__ import annotations

import time

import numpy as np

from quayside.core.engine.config import StrategyConfig
from quayside.core.engine.setup import prepare_engine
from quayside.core.engine.state import Rings, inbound_views
from quayside.core.feed.segment import W_PRODUCER_POSITION, RingType, private_segment
from quayside.core.jit import kernel
from quayside.core.replay.collect import Collector
from quayside.core.replay.runner import _KEEP, ReplayConfig, drain_budget, run_replay
from quayside.core.replay.venue import C_EQUITY_N, C_FILLS, VenueConfig, allocate_venue
from quayside.core.risk.config import InstrumentLimits, RiskConfig
from quayside.core.wire import RECORD_SIZE, RecordKind

__all__ = ["replay_config", "floor_nb", "ReplayState", "run_floor", "run_kernel_loop", "run_runner", "drain_cost"]

#: The crossover's parameters in the replay benchmark, and the order size (EUR).
PARAMS = {"fast_span": 20, "slow_span": 100, "threshold_bps": 0.2}
ORDER_QTY = 100_000.0
#: Equity is sampled once a minute of event time. The derived data spans months of event time
#: (the real file's quotes are 2.3 s apart on average), so the default of once a second would
#: write 2.3 equity samples per event, a cost of the derivation rather than of the events.
EQUITY_INTERVAL_MS = 60_000.0


def replay_config(symbol: str, equity_interval_ms: float = EQUITY_INTERVAL_MS) -> ReplayConfig:
    """The crossover on ``symbol`` with risk limits sized so its orders go through: a flip from
    short to long is 2 x ``ORDER_QTY``, and the position never exceeds ``ORDER_QTY``."""
    strategy = StrategyConfig(
        name="crossover", instruments=[symbol], params={**PARAMS, "order_qty": ORDER_QTY, "order_type": "ioc_limit"}
    )
    limits = InstrumentLimits(
        max_order_qty=2 * ORDER_QTY,
        max_order_notional=2 * ORDER_QTY * 2.0,  # prices here are about 1.12: 2x qty fits
        max_long_position=3 * ORDER_QTY,
        max_short_position=3 * ORDER_QTY,
        price_collar_pct=1.0,
    )
    venue = VenueConfig(equity_interval_ms=equity_interval_ms)
    return ReplayConfig(strategy=strategy, risk=RiskConfig(defaults=limits), venue=venue, write_feed=False)


# --------------------------------------------------------------------------- the floor


@kernel
def floor_nb(words, fast_alpha, slow_alpha, threshold, warmup):
    """Only the crossover's arithmetic over the quotes of ``words`` ((n, 8) int64 records: bid
    and ask are words 4 and 5): mid, two EMAs, the gap and the signal with hysteresis. Returns
    the number of signal changes (so that nothing can be optimised away). No state arrays, no
    risk, no venue, no feed."""
    prices = words.view(np.float64)
    fast = 0.0
    slow = 0.0
    signal = 0.0
    seen = 0
    flips = 0
    for i in range(words.shape[0]):
        mid = 0.5 * (prices[i, 4] + prices[i, 5])
        if seen == 0:
            fast = mid
            slow = mid
        else:
            fast += fast_alpha * (mid - fast)
            slow += slow_alpha * (mid - slow)
        seen += 1
        if seen < warmup:
            continue
        gap = (fast - slow) / slow
        new = signal
        if gap > threshold:
            new = 1.0
        elif gap < -threshold:
            new = -1.0
        if new != signal:
            flips += 1
            signal = new
    return flips


def run_floor(words: np.ndarray) -> tuple[float, int]:
    """(seconds, signal flips) of one pass of the floor over ``words``."""
    fast = 2.0 / (PARAMS["fast_span"] + 1)
    slow = 2.0 / (PARAMS["slow_span"] + 1)
    t0 = time.perf_counter()
    flips = floor_nb(words, fast, slow, PARAMS["threshold_bps"] * 1e-4, PARAMS["slow_span"])
    return time.perf_counter() - t0, int(flips)


# --------------------------------------------------------------------------- the replay loop


class ReplayState:
    """Fresh state for one replay, allocated exactly as ``run_replay`` allocates it."""

    def __init__(self, records: np.ndarray, config: ReplayConfig, registry):
        self.prepared = prepare_engine(
            registry, config.strategy, config.risk, fx_fallback=config.fx_fallback, replay=True
        )
        a = self.prepared.arrays
        self.out = private_segment(RingType.COMMAND, 1 << 12)
        self.feed = private_segment(RingType.FEED, config.feed_capacity)
        self.rings = Rings(self.out.words, self.out.slot_words, self.feed.words, self.feed.slot_words)
        self.venue = allocate_venue(config.venue, a.static["multiplier"].copy())
        words = np.ascontiguousarray(records).view(np.int64).reshape(-1, RECORD_SIZE // 8)
        self.ev = inbound_views(words)
        self.n = len(words)
        self.cursors = np.zeros(2, dtype=np.int64)
        self.budget = drain_budget(config.feed_capacity)


def drain_cost(capacity: int, repeats: int = 5) -> dict:
    """ns per feed record of runner.py's drain (its :class:`Collector`, which copies only the
    kept records) over half a ring of quotes with every tenth record an order, across the
    ring's end (best of ``repeats``)."""
    feed = private_segment(RingType.FEED, capacity)
    feed.slot_words[:, 0] = RecordKind.QUOTE
    feed.slot_words[::10, 0] = RecordKind.ORDER
    lo, hi = 3 * capacity // 4, 3 * capacity // 4 + capacity // 2
    best = float("inf")
    collector = Collector(feed.slot_words, _KEEP)
    collector.take(lo, lo + 1)  # compile (or load) the kernel outside the timing
    for _ in range(repeats):
        collector = Collector(feed.slot_words, _KEEP)
        t0 = time.perf_counter()
        collector.take(lo, hi)
        best = min(best, time.perf_counter() - t0)
    kept = len(collector.records())
    feed.close()
    return {"runner_drain_ns_per_record": best / (hi - lo) * 1e9, "records": hi - lo, "kept": kept}


def run_kernel_loop(records, config, registry, replay_module=None) -> dict:
    """One replay over ``records``, driven like ``run_replay`` drives it; the time inside the
    kernel calls (wall clock and this thread's CPU time) and the whole loop's time (kernel +
    Python drain). ``replay_module`` swaps in another replay kernel module (a profiling variant)."""
    s = ReplayState(records, config, registry)
    a, r, v = s.prepared.arrays, s.rings, s.venue
    run = (replay_module or s.prepared.kernels.replay).run_replay_nb
    kernel_s = 0.0
    kernel_cpu_s = 0.0
    drained = 0
    collector = Collector(s.feed.slot_words, _KEEP)
    calls = 0
    done = False
    t_loop = time.perf_counter()
    while not done:
        t0, c0 = time.perf_counter(), time.thread_time()
        done = run(a, r, s.ev, s.cursors, s.n, v, s.budget)
        kernel_s += time.perf_counter() - t0
        kernel_cpu_s += time.thread_time() - c0
        calls += 1
        head = int(s.feed.words[W_PRODUCER_POSITION])
        collector.take(drained, head)
        drained = head
        v.counters[C_EQUITY_N] = 0
    loop_s = time.perf_counter() - t_loop
    eng = a.engine[0]
    return {
        "events": s.n,
        "kernel_s": kernel_s,
        "kernel_cpu_s": kernel_cpu_s,  # this thread's CPU time in the kernel: what the neighbours did not take
        "loop_s": loop_s,
        "kernel_calls": calls,
        "feed_records": drained,
        "kept_records": len(collector.records()),
        "orders": int(eng["orders_out"]),
        "denials": int(eng["denials"]),
        "fills": int(v.counters[C_FILLS]),
        "events_in": int(eng["events_in"]),
    }


def run_runner(records, config, registry) -> dict:
    """``run_replay`` itself: its ``wall_seconds`` and its summary's counts."""
    result = run_replay(records, config, registry)
    s = result.summary
    return {
        "events": result.events,
        "wall_s": result.wall_seconds,
        "feed_records": result.feed_records,
        "orders": s["orders"],
        "fills": s["fills"],
        "denials": s["denials"],
        "denials_by_reason": s["denials_by_reason"],
        "venue_rejects": s["venue_rejects"],
        "final_position": s["final_position"],
        "pnl": s["pnl"],
    }
