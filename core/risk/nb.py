"""Pre-trade risk kernels: every new order passes ``check_new_order_nb`` inside the engine.

Each control has its own limit (``LimitId``) and its own reason code (``DenyReason``). The
kernel returns ``(reason, limit_value)``: reason 0 means the order may go; otherwise the engine
publishes a denial record with the reason and the limit that was breached. Cancels are never
checked (they always pass) but count towards the message rate.

Limits live in ``a.limits[instrument_id, LimitId]``; NaN in an instrument row means "use row
0", and +inf means "no limit". Message rate and fill latch are global (row 0 only).
"""

from __future__ import annotations

import math

from quayside.core.engine.state import (
    R_INSTRUMENT,
    R_PRICE,
    R_QTY,
    R_SIDE,
    R_TS,
    RECENT_CAPACITY,
    WINDOW_CAPACITY,
)
from quayside.core.jit import kernel
from quayside.core.wire import DenyReason, LimitId, OrderType, Side, TradingState

__all__ = [
    "limit_nb",
    "fx_rate_nb",
    "reference_price_nb",
    "check_new_order_nb",
    "record_message_nb",
    "record_message_parts_nb",
    "record_order_nb",
    "record_fill_nb",
    "effective_state_nb",
]


@kernel(inline="always")
def limit_nb(a, iid, limit_id):
    v = a.limits[iid, limit_id]
    if math.isnan(v):
        v = a.limits[0, limit_id]
    return v


@kernel
def fx_rate_nb(static, inst, iid):
    """Account-currency value of one unit of the instrument's currency; NaN if unknown."""
    fx = static[iid].fx_instrument
    if fx == 0:
        return 1.0
    if fx < 0:
        return static[iid].fx_fallback
    mid = 0.5 * (inst[fx].bid + inst[fx].ask)
    if not (0.0 < mid < math.inf):  # no quote, or not a price (an infinite mid would give rate 0)
        return static[iid].fx_fallback
    if static[iid].fx_invert:
        return 1.0 / mid
    return mid


@kernel
def reference_price_nb(a, iid):
    """The collar reference: mid, or last trade if so configured (mid when no trade yet)."""
    st = a.inst[iid]
    if a.engine[0].collar_ref_last and not math.isnan(st.last_price):
        return st.last_price
    return 0.5 * (st.bid + st.ask)


@kernel(inline="always")
def effective_state_nb(a, iid):
    g = a.engine[0].trading_state
    s = a.inst[iid].trading_state
    return g if g > s else s  # HALTED > REDUCING > ACTIVE


@kernel
def _rate_exceeded(times, head, count, max_n, window, now):
    if max_n <= 0:
        return True
    if count < max_n:
        return False
    oldest = times[(head - max_n) % WINDOW_CAPACITY]
    return now - oldest < window


@kernel
def check_new_order_nb(a, iid, side, order_type, price, qty, now):
    """``(reason, limit)`` for a new order; reason 0 if every control passes."""
    eng = a.engine[0]
    known = 0 < iid < a.static.shape[0]
    # trading state first: a halted engine says so whatever else is wrong (an id out of range
    # has no row to read: only the global state applies)
    state = effective_state_nb(a, iid) if known else eng.trading_state
    if state == TradingState.HALTED:
        return DenyReason.TRADING_HALTED, 0.0
    if eng.latched:
        return DenyReason.FILL_LATCH, limit_nb(a, 0, LimitId.FILL_LATCH_COUNT)
    if not known or not a.static[iid].known:
        return DenyReason.INSTRUMENT_NOT_ALLOWED, 0.0
    if not a.static[iid].allowed:
        return DenyReason.INSTRUMENT_NOT_ALLOWED, 0.0
    is_limit = order_type == OrderType.LIMIT
    if not (qty > 0.0) or (side != Side.BUY and side != Side.SELL):
        return DenyReason.INVALID_ORDER, 0.0
    if is_limit and not (0.0 < price < math.inf):
        return DenyReason.INVALID_ORDER, 0.0
    if order_type != OrderType.LIMIT and order_type != OrderType.MARKET:
        return DenyReason.INVALID_ORDER, 0.0
    lot = a.static[iid].lot_size
    lots = qty / lot
    # a whole number of lots and at least one: a tiny positive quantity is zero lots (and the
    # upper bound keeps round()'s conversion to int64 defined)
    if not (1.0 - 1e-9 <= lots < 9.0e18) or abs(lots - round(lots)) > 1e-9:
        return DenyReason.INVALID_ORDER, lot
    st = a.inst[iid]
    if a.inst[iid].blocked:
        return DenyReason.RECONCILIATION_BREAK, 0.0
    stale_ns = limit_nb(a, iid, LimitId.STALE_QUOTE_NS)
    if st.stale or st.ts_quote == 0 or now - st.ts_quote > stale_ns:
        return DenyReason.STALE_MARKET_DATA, stale_ns
    if state == TradingState.REDUCING:
        if side == Side.BUY:
            if not (st.position < 0.0 and st.position + st.working_buy + qty <= 1e-12):
                return DenyReason.REDUCE_ONLY, 0.0
        elif not (st.position > 0.0 and st.position - st.working_sell - qty >= -1e-12):
            return DenyReason.REDUCE_ONLY, 0.0
    max_qty = limit_nb(a, iid, LimitId.MAX_ORDER_QTY)
    if qty > max_qty:
        return DenyReason.MAX_ORDER_QTY, max_qty
    ref = reference_price_nb(a, iid)
    if not (0.0 < ref < math.inf):  # an infinite reference would put every price inside the collar
        return DenyReason.STALE_MARKET_DATA, stale_ns
    if is_limit:
        pct = limit_nb(a, iid, LimitId.PRICE_COLLAR_PCT)
        if abs(price - ref) > pct * 0.01 * ref:
            return DenyReason.PRICE_COLLAR, pct
        ticks = limit_nb(a, iid, LimitId.PRICE_COLLAR_TICKS)
        if abs(price - ref) > ticks * a.static[iid].tick_size * (1.0 + 1e-9):
            return DenyReason.PRICE_COLLAR, ticks
        notional_price = price
    else:
        notional_price = st.ask if side == Side.BUY else st.bid
        if not (0.0 < notional_price < math.inf):  # no touch (IB sends -1): nothing to value it at
            return DenyReason.STALE_MARKET_DATA, stale_ns
    fx = fx_rate_nb(a.static, a.inst, iid)
    if math.isnan(fx):
        return DenyReason.UNKNOWN_FX_RATE, 0.0
    max_notional = limit_nb(a, iid, LimitId.MAX_ORDER_NOTIONAL)
    if qty * notional_price * a.static[iid].multiplier * fx > max_notional:
        return DenyReason.MAX_ORDER_NOTIONAL, max_notional
    if side == Side.BUY:
        max_long = limit_nb(a, iid, LimitId.MAX_LONG_POSITION)
        if st.position + st.working_buy + qty > max_long + 1e-9:
            return DenyReason.MAX_LONG_POSITION, max_long
    else:
        max_short = limit_nb(a, iid, LimitId.MAX_SHORT_POSITION)
        if st.position - st.working_sell - qty < -max_short - 1e-9:
            return DenyReason.MAX_SHORT_POSITION, max_short
    window = limit_nb(a, 0, LimitId.DUPLICATE_WINDOW_NS)
    for k in range(RECENT_CAPACITY):
        r = a.recent[k]
        px = a.recent_px[k]
        if (
            r[R_INSTRUMENT] == iid
            and r[R_SIDE] == side
            and now - r[R_TS] < window
            and px[R_QTY] == qty
            and (px[R_PRICE] == price or (math.isnan(price) and math.isnan(px[R_PRICE])))
        ):
            return DenyReason.DUPLICATE_ORDER, window
    max_msgs = limit_nb(a, 0, LimitId.MAX_MESSAGES_PER_WINDOW)
    n = int(min(max_msgs, WINDOW_CAPACITY))
    if _rate_exceeded(a.msg_times, eng.msg_head, eng.msg_count, n, limit_nb(a, 0, LimitId.MESSAGE_WINDOW_NS), now):
        return DenyReason.MESSAGE_RATE, max_msgs
    return 0, 0.0


@kernel
def record_message_nb(a, now):
    """Count an order or cancel sent, for the message-rate throttle."""
    record_message_parts_nb(a.engine, a.msg_times, now)


@kernel(inline="always")
def record_message_parts_nb(engine, msg_times, now):
    """``record_message_nb`` on the two arrays it uses (for callers that do not hold the whole state)."""
    eng = engine[0]
    msg_times[eng.msg_head % WINDOW_CAPACITY] = now
    eng.msg_head += 1
    eng.msg_count += 1


@kernel
def record_order_nb(a, iid, side, price, qty, now):
    """Remember a new order for the duplicate guard and the message rate."""
    eng = a.engine[0]
    k = eng.recent_head % RECENT_CAPACITY
    a.recent[k, R_INSTRUMENT] = iid
    a.recent[k, R_SIDE] = side
    a.recent[k, R_TS] = now  # int64: exact to the nanosecond
    a.recent_px[k, R_PRICE] = price
    a.recent_px[k, R_QTY] = qty
    eng.recent_head += 1
    record_message_nb(a, now)


@kernel
def record_fill_nb(a, now):
    """Count a fill; returns True if this fill engaged the fill-count latch."""
    eng = a.engine[0]
    a.fill_times[eng.fill_head % WINDOW_CAPACITY] = now
    eng.fill_head += 1
    eng.fill_count += 1
    if eng.latched:
        return False
    n = int(min(limit_nb(a, 0, LimitId.FILL_LATCH_COUNT), WINDOW_CAPACITY))
    if _rate_exceeded(
        a.fill_times, eng.fill_head, eng.fill_count, n, limit_nb(a, 0, LimitId.FILL_LATCH_WINDOW_NS), now
    ):
        eng.latched = 1
        return True
    return False
