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

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

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

# How many records ahead the loop asks the cache for the market records it will read and the
# feed slots it will write: both stream through memory far larger than the caches.
PREFETCH_AHEAD = 16


def _prefetch(write: int):
    @intrinsic
    def prefetch(typingctx, arrty, rowty):
        """A hint (``prefetcht0`` / ``prefetchw``) that row ``row`` of a 2-d array will soon be
        read / written. No effect on results; a row past the end prefetches row 0."""

        def codegen(context, builder, sig, args):
            ary = context.make_array(arrty)(context, builder, args[0])
            row = context.cast(builder, args[1], sig.args[1], types.intp)
            row = builder.select(
                builder.icmp_signed("<", row, cgutils.unpack_tuple(builder, ary.shape)[0]),
                row,
                ir.Constant(row.type, 0),
            )
            ptr = cgutils.get_item_pointer(
                context, builder, arrty, ary, [row, ir.Constant(row.type, 0)], wraparound=False
            )
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [ptr, ir.Constant(i32, write), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(arrty, rowty), codegen

    return prefetch


prefetch_read_nb = _prefetch(0)
prefetch_write_nb = _prefetch(1)


@kernel(inline="always")
def _to_venue(a, r, v):
    """Move the engine's orders and cancels from the outbound ring into the venue's queue. Only
    the engine writes that ring, so this follows the engine's steps only."""
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
    feed_mask = r.feed_slots.shape[0] - 1
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
            prefetch_read_nb(ev.words, iv + PREFETCH_AHEAD)
            market_event_nb(v, a.static, a.inst, ev, iv, t_v)
            iv += 1
            t = t_v
        elif t_h <= t_e:
            kind, ref = heap_pop_nb(v)
            t = t_h
            if kind == K_DELIVER:
                process_record_nb(a, r, v.pool, ref, t)
                pool_free_nb(v, ref)
                _to_venue(a, r, v)
            elif kind == K_ORDER_ARRIVES:
                order_arrives_nb(v, a.static, a.inst, ref, t)
            else:
                cancel_arrives_nb(v, ref, t)
        else:
            t = t_e
            c[C_LAST_SEEN] = t
            prefetch_write_nb(r.feed_slots, (r.feed_words[W_PRODUCER_POSITION] + PREFETCH_AHEAD) & feed_mask)
            process_record_nb(a, r, ev, ie, t)
            ie += 1
            _to_venue(a, r, v)
        if t >= c[C_NEXT_EQUITY_T]:
            _sample_equity(v, a.static, a.inst, t)
        if r.feed_words[W_PRODUCER_POSITION] - feed_start >= feed_budget or c[C_EQUITY_N] >= v.equity_t.shape[0]:
            cursors[0], cursors[1] = iv, ie
            return False
