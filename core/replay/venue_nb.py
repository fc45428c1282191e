"""Kernels of the simulated venue (see ``venue.py`` for the model and the state arrays).

Pending work — an order or a cancel on its way to the venue, an answer on its way to the
engine — waits in a binary min-heap keyed by (time, insertion sequence), so equal times keep
their order and a backtest is deterministic. Records live in a pool of 64-byte slots.
"""

from __future__ import annotations

import math

from quayside.core.jit import kernel
from quayside.core.replay.venue import (
    B_ASK,
    B_ASK_SIZE,
    B_BID,
    B_BID_SIZE,
    B_LAST,
    C_DROPPED,
    C_FILLS,
    C_FREE_TOP,
    C_HEAP_SEQ,
    C_HEAP_SIZE,
    C_NEXT_FILL_ID,
    C_REJECTS,
    C_RESTING,
    K_DELIVER,
    V_COMMISSION_BPS,
    V_COMMISSION_MIN,
    V_COMMISSION_UNIT,
    V_QUOTE_CROSS,
    V_RESPONSE_LATENCY,
    V_SIZE_LIMITED,
)
from quayside.core.risk.nb import fx_rate_nb
from quayside.core.wire import FORMAT_VERSION, Flag, OrderStatus, OrderType, RecordKind, Side, TimeInForce

INT64_MAX = 9_223_372_036_854_775_807
# Prices closer than this (relative) are the same price: a strategy's ``k * tick`` is often an
# ulp off the data's decimal price (``9999 * 0.01 == 99.99000000000001``), and that noise must
# not turn a trade *at* a resting order's price into one *through* it, nor a limit at the touch
# into a non-marketable one. Far below any real tick.
PRICE_EPS = 1e-9


@kernel(inline="always")
def above_nb(x, y):
    """``x`` is strictly above ``y`` by more than floating-point noise."""
    return x - y > PRICE_EPS * abs(y)


# --------------------------------------------------------------------------- heap and pool


@kernel(inline="always")
def heap_push_nb(v, time, kind, ref):
    c = v.counters
    i = c[C_HEAP_SIZE]
    if i >= v.heap_time.shape[0]:
        c[C_DROPPED] += 1
        return False
    seq = c[C_HEAP_SEQ]
    c[C_HEAP_SEQ] += 1
    c[C_HEAP_SIZE] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        pt, ps = v.heap_time[parent], v.heap_seq[parent]
        if pt < time or (pt == time and ps < seq):
            break
        v.heap_time[i], v.heap_seq[i] = pt, ps
        v.heap_kind[i], v.heap_ref[i] = v.heap_kind[parent], v.heap_ref[parent]
        i = parent
    v.heap_time[i], v.heap_seq[i], v.heap_kind[i], v.heap_ref[i] = time, seq, kind, ref
    return True


@kernel(inline="always")
def heap_min_time_nb(v):
    return v.heap_time[0] if v.counters[C_HEAP_SIZE] > 0 else INT64_MAX


@kernel(inline="always")
def heap_pop_nb(v):
    """Remove the earliest entry; returns its (kind, ref)."""
    c = v.counters
    kind, ref = v.heap_kind[0], v.heap_ref[0]
    n = c[C_HEAP_SIZE] - 1
    c[C_HEAP_SIZE] = n
    t, s, k, r = v.heap_time[n], v.heap_seq[n], v.heap_kind[n], v.heap_ref[n]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        right = child + 1
        if right < n and (
            v.heap_time[right] < v.heap_time[child]
            or (v.heap_time[right] == v.heap_time[child] and v.heap_seq[right] < v.heap_seq[child])
        ):
            child = right
        if v.heap_time[child] > t or (v.heap_time[child] == t and v.heap_seq[child] > s):
            break
        v.heap_time[i], v.heap_seq[i] = v.heap_time[child], v.heap_seq[child]
        v.heap_kind[i], v.heap_ref[i] = v.heap_kind[child], v.heap_ref[child]
        i = child
    v.heap_time[i], v.heap_seq[i], v.heap_kind[i], v.heap_ref[i] = t, s, k, r
    return kind, ref


@kernel(inline="always")
def pool_alloc_nb(v):
    """A free pool slot, or -1 (counted as dropped) if the pool is exhausted."""
    top = v.counters[C_FREE_TOP]
    if top == 0:
        v.counters[C_DROPPED] += 1
        return -1
    v.counters[C_FREE_TOP] = top - 1
    ref = v.free[top - 1]
    for w in range(8):
        v.pool.words[ref, w] = 0
    return ref


@kernel(inline="always")
def pool_free_nb(v, ref):
    top = v.counters[C_FREE_TOP]
    v.free[top] = ref
    v.counters[C_FREE_TOP] = top + 1


# --------------------------------------------------------------------------- answers


@kernel
def _header(v, ref, kind, flags, strategy_id, iid, t):
    w = v.pool.words
    w[ref, 0] = kind | (FORMAT_VERSION << 8) | (flags << 16) | (strategy_id << 24) | (iid << 32)
    w[ref, 2] = t


@kernel
def send_status_nb(v, order_id, iid, strategy_id, status, filled, notional, t):
    ref = pool_alloc_nb(v)
    if ref < 0:
        return
    _header(v, ref, RecordKind.ORDER_STATUS, Flag.REPLAY, strategy_id, iid, t)
    s = v.pool.status[ref]
    arrive = t + int(v.params[V_RESPONSE_LATENCY])
    s.ts_recv = arrive
    s.order_id = order_id
    s.status = status
    s.broker_order_id = order_id
    s.perm_id = order_id
    s.filled_qty = filled
    s.avg_fill_price = notional / filled if filled > 0.0 else math.nan
    heap_push_nb(v, arrive, K_DELIVER, ref)


@kernel(inline="always")
def _status(v, o, status, t):
    send_status_nb(v, o.order_id, o.instrument_id, o.strategy_id, status, o.filled, o.notional, t)


@kernel
def fill_nb(v, static, inst, o, qty, price, t):
    """Execute ``qty`` (positive) of order ``o`` at ``price`` at venue time ``t``. Takes the two
    engine arrays the FX conversion reads, not the whole engine state: a call site with the whole
    state costs the replay loop time on every event, even where it is never taken."""
    ref = pool_alloc_nb(v)
    if ref < 0:
        return
    iid = o.instrument_id
    signed = qty if o.side == Side.BUY else -qty
    fx = fx_rate_nb(static, inst, iid)
    if math.isnan(fx):
        fx = 1.0
    notional = qty * price * v.multiplier[iid] * fx
    commission = max(
        notional * v.params[V_COMMISSION_BPS] * 1e-4 + qty * v.params[V_COMMISSION_UNIT], v.params[V_COMMISSION_MIN]
    )
    v.cash[iid] -= signed * price * v.multiplier[iid] * fx + commission
    v.position[iid] += signed
    v.traded_notional[iid] += notional
    v.commissions[iid] += commission
    o.filled += qty
    o.notional += qty * price
    _header(v, ref, RecordKind.FILL, Flag.REPLAY | Flag.COMMISSION_KNOWN, o.strategy_id, iid, t)
    f = v.pool.fill[ref]
    arrive = t + int(v.params[V_RESPONSE_LATENCY])
    f.ts_recv = arrive
    f.order_id = o.order_id
    f.fill_id = v.counters[C_NEXT_FILL_ID]
    v.counters[C_NEXT_FILL_ID] += 1
    v.counters[C_FILLS] += 1
    f.price = price
    f.quantity = signed
    f.commission = commission
    heap_push_nb(v, arrive, K_DELIVER, ref)


@kernel
def _finish(v, o, status, t):
    if o.resting_index >= 0:  # swap-remove from the resting list
        last = v.counters[C_RESTING] - 1
        moved = v.resting[last]
        v.resting[o.resting_index] = moved
        v.orders[moved].resting_index = o.resting_index
        v.counters[C_RESTING] = last
        o.resting_index = -1
    o.active = 0
    _status(v, o, status, t)


# --------------------------------------------------------------------------- events


@kernel
def order_arrives_nb(v, static, inst, ref, t):
    """An order record from the engine reaches the venue at ``t``."""
    rec = v.pool_order[ref]
    k = rec.order_id % v.orders.shape[0]
    o = v.orders[k]
    if o.active:  # slot still busy (the engine's table is the same size, so this is a bug upstream)
        v.counters[C_REJECTS] += 1
        send_status_nb(v, rec.order_id, rec.instrument_id, rec.strategy_id, OrderStatus.REJECTED, 0.0, 0.0, t)
        pool_free_nb(v, ref)
        return
    o.order_id = rec.order_id
    o.instrument_id = rec.instrument_id
    o.strategy_id = rec.strategy_id
    o.side = rec.side
    o.order_type = rec.order_type
    o.tif = rec.tif
    o.price = rec.price
    o.quantity = rec.quantity
    o.filled = 0.0
    o.notional = 0.0
    o.active = 1
    o.resting_index = -1
    pool_free_nb(v, ref)
    iid = o.instrument_id
    if iid <= 0 or iid >= v.book.shape[0]:
        o.active = 0
        v.counters[C_REJECTS] += 1
        _status(v, o, OrderStatus.REJECTED, t)
        return
    b = v.book[iid]
    touch = b[B_ASK] if o.side == Side.BUY else b[B_BID]
    size = b[B_ASK_SIZE] if o.side == Side.BUY else b[B_BID_SIZE]
    if math.isnan(touch):
        o.active = 0
        v.counters[C_REJECTS] += 1
        _status(v, o, OrderStatus.REJECTED, t)
        return
    marketable = o.order_type == OrderType.MARKET or (
        (o.side == Side.BUY and not above_nb(touch, o.price)) or (o.side == Side.SELL and not above_nb(o.price, touch))
    )
    if marketable:
        qty = o.quantity
        if v.params[V_SIZE_LIMITED] != 0.0 and size > 0.0:
            qty = min(qty, size)
        fill_nb(v, static, inst, o, qty, touch, t)
        if o.filled >= o.quantity - 1e-12:
            _finish(v, o, OrderStatus.FILLED, t)
            return
    if o.tif == TimeInForce.IOC or o.order_type == OrderType.MARKET:
        _finish(v, o, OrderStatus.CANCELLED, t)
        return
    o.resting_index = v.counters[C_RESTING]
    v.resting[o.resting_index] = k
    v.counters[C_RESTING] += 1
    _status(v, o, OrderStatus.SUBMITTED, t)


@kernel
def cancel_arrives_nb(v, ref, t):
    rec = v.pool_cancel[ref]
    o = v.orders[rec.order_id % v.orders.shape[0]]
    pool_free_nb(v, ref)
    if o.active and o.order_id == rec.order_id:
        _finish(v, o, OrderStatus.CANCELLED, t)


@kernel(inline="always")
def market_event_nb(v, static, inst, ev, row, t):
    """The venue sees market record ``row`` of ``ev`` at exchange time ``t``: update its book,
    then fill resting orders the market moved through."""
    kind = ev.words[row, 0] & 0xFF
    iid = (ev.words[row, 0] >> 32) & 0xFFFFFFFF
    if iid <= 0 or iid >= v.book.shape[0]:
        return
    b = v.book[iid]
    trade_px = math.nan
    if kind == RecordKind.QUOTE:
        q = ev.quote[row]
        b[B_BID], b[B_ASK], b[B_BID_SIZE], b[B_ASK_SIZE] = q.bid_price, q.ask_price, q.bid_size, q.ask_size
        if v.params[V_QUOTE_CROSS] == 0.0:
            return
    elif kind == RecordKind.TRADE:
        trade_px = ev.trade[row].price
        b[B_LAST] = trade_px
    else:
        return
    k = 0
    while k < v.counters[C_RESTING]:
        o = v.orders[v.resting[k]]
        if o.instrument_id == iid:
            if kind == RecordKind.TRADE:
                through = above_nb(o.price, trade_px) if o.side == Side.BUY else above_nb(trade_px, o.price)
            else:
                through = above_nb(o.price, b[B_ASK]) if o.side == Side.BUY else above_nb(b[B_BID], o.price)
            if through:
                fill_nb(v, static, inst, o, o.quantity - o.filled, o.price, t)
                _finish(v, o, OrderStatus.FILLED, t)
                continue  # the list shrank: slot k now holds another order
        k += 1


@kernel
def equity_nb(v, static, inst):
    """Cash plus positions marked at mid, in the account currency."""
    total = 0.0
    for iid in range(1, v.book.shape[0]):
        total += v.cash[iid]
        pos = v.position[iid]
        if pos != 0.0:
            mid = 0.5 * (v.book[iid, B_BID] + v.book[iid, B_ASK])
            fx = fx_rate_nb(static, inst, iid)
            total += pos * mid * v.multiplier[iid] * (1.0 if math.isnan(fx) else fx)
    return total
