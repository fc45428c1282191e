"""A passive market maker: one bid and one ask around the mid, skewed by inventory.

Reservation price = mid − ``skew_ticks`` × tick × position / ``max_inventory``: a long book
leans its quotes down to sell, a short one up. Quotes sit ``half_spread_ticks`` either side of
it, rounded away onto the tick grid and never crossing the touch (passive: they join the best
price at most). At ``±max_inventory`` the side that would add to the position is pulled. A
quote that is ``requote_ticks`` or more away from where it should be is cancelled; the new one
goes out once the cancel is confirmed, never more often than every ``min_requote_ms``.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quayside.core.engine.state import IntentAction, SlotStatus
from quayside.core.jit import kernel
from quayside.core.wire import OrderType, Side, TimeInForce

NAME = "market_maker"
STATE_WIDTH = 2  # last time a new buy / sell quote went out
P_HALF_SPREAD, P_SKEW, P_REQUOTE, P_MIN_REQUOTE_NS, P_QTY = range(5)  # then qty[id], max_inventory[id]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    half_spread_ticks: float = Field(default=1.0, ge=0.5, description="quote distance from reservation price")
    skew_ticks: float = Field(default=2.0, ge=0, description="reservation shift at max inventory, in ticks")
    quote_qty: float | dict[str, float] = Field(default=1.0, description="size of each quote, or per symbol")
    max_inventory: float | dict[str, float] = Field(default=5.0, description="|position| that pulls a side")
    requote_ticks: float = Field(default=1.0, ge=1, description="distance that makes a quote stale")
    min_requote_ms: float = Field(default=50.0, ge=0, description="minimum time between new quotes per side")


def _per_symbol(value, symbol, name):
    v = value.get(symbol) if isinstance(value, dict) else value
    if v is None or v <= 0:
        raise ValueError(f"market_maker: {name} for {symbol} must be given and positive")
    return v


def params_array(params: Params, registry, instruments: list[str]) -> np.ndarray:
    size = max((i.id for i in registry), default=0) + 1
    out = np.zeros(P_QTY + 2 * size)
    out[P_HALF_SPREAD] = params.half_spread_ticks
    out[P_SKEW] = params.skew_ticks
    out[P_REQUOTE] = params.requote_ticks
    out[P_MIN_REQUOTE_NS] = params.min_requote_ms * 1e6
    for symbol in instruments:
        iid = registry.by_symbol(symbol).id
        out[P_QTY + iid] = _per_symbol(params.quote_qty, symbol, "quote_qty")
        out[P_QTY + size + iid] = _per_symbol(params.max_inventory, symbol, "max_inventory")
    return out


@kernel
def _quote_side(params, sstate, st, orders, iid, side, price, want, tick, now, intents, n):
    oid = st.buy_order_id if side == Side.BUY else st.sell_order_id
    col = 0 if side == Side.BUY else 1
    if oid != 0:
        slot = orders[oid % orders.shape[0]]
        if slot.order_id != oid or slot.status >= SlotStatus.PENDING_CANCEL:
            return n  # a cancel is in flight: wait for it
        if want and abs(slot.price - price) < (params[P_REQUOTE] - 1e-6) * tick:
            return n  # still where it should be
        it = intents[n]
        it.action = IntentAction.CANCEL
        it.instrument_id = iid
        it.order_id = oid
        return n + 1
    if not want or now - sstate[iid, col] < params[P_MIN_REQUOTE_NS]:
        return n
    it = intents[n]
    it.action = IntentAction.NEW
    it.instrument_id = iid
    it.side = side
    it.order_type = OrderType.LIMIT
    it.tif = TimeInForce.DAY
    it.price = price
    it.quantity = params[P_QTY + iid]
    sstate[iid, col] = now
    return n + 1


@kernel
def on_quote_nb(params, sstate, inst, static, orders, iid, now, intents):
    st = inst[iid]
    mid = 0.5 * (st.bid + st.ask)
    if not (mid > 0.0):
        return 0
    tick = static[iid].tick_size
    size = inst.shape[0]
    max_inv = params[P_QTY + size + iid]
    reservation = mid - params[P_SKEW] * tick * st.position / max_inv
    bid = math.floor((reservation - params[P_HALF_SPREAD] * tick) / tick + 1e-9) * tick
    ask = math.ceil((reservation + params[P_HALF_SPREAD] * tick) / tick - 1e-9) * tick
    bid = min(bid, st.bid)
    ask = max(ask, st.ask)
    n = _quote_side(params, sstate, st, orders, iid, Side.BUY, bid, st.position < max_inv, tick, now, intents, 0)
    n = _quote_side(params, sstate, st, orders, iid, Side.SELL, ask, st.position > -max_inv, tick, now, intents, n)
    return n


@kernel
def on_fill_nb(params, sstate, inst, static, orders, iid, quantity, price, now, intents):
    return 0
