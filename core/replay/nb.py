"""The backtest loop: the live engine's kernels, driven by an event clock and a simulated venue.

Three streams are merged in time order: the venue seeing each market record at exchange time
(``ts_event``), the engine seeing it at receive time (``ts_recv``), and the venue's pending work
(orders and cancels travelling to it, answers travelling back). The engine handles every record
with exactly the ``process_record_nb`` it uses live; its orders leave through the same outbound
ring, which this loop drains into the venue.

Like ``core/engine/nb.py`` this module is a template: the ``engine-binding`` import is
rewritten to the engine kernels of the chosen strategy (see ``binding.py``).
"""

from __future__ import annotations

from quayside.core.engine.nb import process_record_nb  # engine-binding
from quayside.core.feed.nb import cmd_peek_nb, cmd_release_nb
from quayside.core.feed.segment import W_PRODUCER_POSITION
from quayside.core.jit import kernel
from quayside.core.replay.venue import (
    C_EQUITY_N,
    C_LAST_SEEN,
    C_NEXT_EQUITY_T,
    K_CANCEL_ARRIVES,
    K_DELIVER,
    K_ORDER_ARRIVES,
    V_EQUITY_INTERVAL,
    V_ORDER_LATENCY,
)
from quayside.core.replay.venue_nb import (
    INT64_MAX,
    cancel_arrives_nb,
    equity_nb,
    heap_min_time_nb,
    heap_pop_nb,
    heap_push_nb,
    market_event_nb,
    order_arrives_nb,
    pool_alloc_nb,
    pool_free_nb,
)
from quayside.core.wire import RecordKind

__all__ = ["run_replay_nb"]


@kernel(inline="always")
def _to_venue(a, r, v):
    """Move the engine's orders and cancels from the outbound ring into the venue's queue."""
    pos, n = cmd_peek_nb(r.out_words)
    mask = r.out_slots.shape[0] - 1
    latency = int(v.params[V_ORDER_LATENCY])
    for k in range(n):
        slot = (pos + k) & mask
        ref = pool_alloc_nb(v)
        if ref < 0:
            continue
        for w in range(8):
            v.pool.words[ref, w] = r.out_slots[slot, w]
        kind = r.out_slots[slot, 0] & 0xFF
        arrive = r.out_slots[slot, 2] + latency  # ts_event: when the engine sent it
        if kind == RecordKind.ORDER:
            heap_push_nb(v, arrive, K_ORDER_ARRIVES, ref)
        elif kind == RecordKind.CANCEL:
            heap_push_nb(v, arrive, K_CANCEL_ARRIVES, ref)
        else:
            pool_free_nb(v, ref)
    if n > 0:
        cmd_release_nb(r.out_words, pos + n)


@kernel
def _sample_equity(v, static, inst, t):
    """Record equity at every sampling boundary up to ``t`` (only the arrays it needs are
    passed: a call with the whole engine state costs about 90 ns per event, even untaken)."""
    c = v.counters
    interval = int(v.params[V_EQUITY_INTERVAL])
    if c[C_NEXT_EQUITY_T] == 0:
        c[C_NEXT_EQUITY_T] = t - t % interval + interval
        return
    while t >= c[C_NEXT_EQUITY_T] and c[C_EQUITY_N] < v.equity_t.shape[0]:
        n = c[C_EQUITY_N]
        v.equity_t[n] = c[C_NEXT_EQUITY_T]
        v.equity_v[n] = equity_nb(v, static, inst)
        c[C_EQUITY_N] = n + 1
        c[C_NEXT_EQUITY_T] += interval


@kernel
def run_replay_nb(a, r, ev, cursors, end, v, feed_budget):
    """Advance the backtest over market records ``ev[cursors[0]:end]`` (venue) and
    ``ev[cursors[1]:end]`` (engine) until all is done or the feed holds ``feed_budget`` new
    records (or the equity buffer is full): then return, so that Python can drain them.
    Returns True when everything, including the venue's pending work, is done."""
    feed_start = r.feed_words[W_PRODUCER_POSITION]
    c = v.counters
    iv, ie = cursors[0], cursors[1]
    while True:
        t_v = ev.words[iv, 2] if iv < end else INT64_MAX
        t_e = INT64_MAX
        if ie < end:
            t_e = max(ev.words[ie, 3], c[C_LAST_SEEN])
        t_h = heap_min_time_nb(v)
        if t_v == INT64_MAX and t_e == INT64_MAX and t_h == INT64_MAX:
            cursors[0], cursors[1] = iv, ie
            return True
        if t_v <= t_h and t_v <= t_e:
            market_event_nb(v, a, ev, iv, t_v)
            iv += 1
            t = t_v
        elif t_h <= t_e:
            kind, ref = heap_pop_nb(v)
            t = t_h
            if kind == K_DELIVER:
                process_record_nb(a, r, v.pool, ref, t)
                pool_free_nb(v, ref)
            elif kind == K_ORDER_ARRIVES:
                order_arrives_nb(v, a, ref, t)
            else:
                cancel_arrives_nb(v, ref, t)
        else:
            t = t_e
            c[C_LAST_SEEN] = t
            process_record_nb(a, r, ev, ie, t)
            ie += 1
        _to_venue(a, r, v)
        if t >= c[C_NEXT_EQUITY_T]:
            _sample_equity(v, a.static, a.inst, t)
        if r.feed_words[W_PRODUCER_POSITION] - feed_start >= feed_budget or c[C_EQUITY_N] >= v.equity_t.shape[0]:
            cursors[0], cursors[1] = iv, ie
            return False
