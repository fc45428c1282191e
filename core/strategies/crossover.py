"""A taker: moving-average crossover on the mid price.

Two exponential moving averages of the mid (spans counted in quotes). When the fast one is
above the slow one by more than ``threshold_bps`` the target position is ``+order_qty``; below
by more than that, ``-order_qty``; in between the previous signal holds (hysteresis). When the
position differs from the target and nothing is working, it sends one order for the difference:
an immediate-or-cancel limit at the touch (or a market order), so it takes liquidity.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from quayside.core.engine.state import IntentAction
from quayside.core.jit import kernel
from quayside.core.wire import OrderType, Side, TimeInForce

NAME = "crossover"
STATE_WIDTH = 4  # fast EMA, slow EMA, quotes seen, signal
P_FAST, P_SLOW, P_THRESHOLD, P_MARKET, P_WARMUP, P_QTY = range(6)  # P_QTY + instrument id: per-instrument qty


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fast_span: int = Field(default=20, ge=1, description="fast EMA span, in quotes")
    slow_span: int = Field(default=100, ge=2, description="slow EMA span, in quotes")
    threshold_bps: float = Field(default=0.2, ge=0, description="fast-slow gap that flips the signal, in bp")
    order_qty: float | dict[str, float] = Field(default=1.0, description="target |position|, or per symbol")
    order_type: str = Field(default="ioc_limit", pattern="^(ioc_limit|market)$")
    warmup: int | None = Field(default=None, ge=0, description="quotes before trading (default slow_span)")

    @model_validator(mode="after")
    def _spans(self):
        if self.fast_span >= self.slow_span:
            raise ValueError(f"fast_span ({self.fast_span}) must be shorter than slow_span ({self.slow_span})")
        qtys = self.order_qty.values() if isinstance(self.order_qty, dict) else [self.order_qty]
        if any(q <= 0 for q in qtys):
            raise ValueError("order_qty must be positive")
        return self


def params_array(params: Params, registry, instruments: list[str]) -> np.ndarray:
    size = max((i.id for i in registry), default=0) + 1
    out = np.zeros(P_QTY + size)
    out[P_FAST] = 2.0 / (params.fast_span + 1)
    out[P_SLOW] = 2.0 / (params.slow_span + 1)
    out[P_THRESHOLD] = params.threshold_bps * 1e-4
    out[P_MARKET] = float(params.order_type == "market")
    out[P_WARMUP] = params.slow_span if params.warmup is None else params.warmup
    for symbol in instruments:
        qty = params.order_qty.get(symbol) if isinstance(params.order_qty, dict) else params.order_qty
        if qty is None:
            raise ValueError(f"crossover: order_qty has no entry for {symbol}")
        out[P_QTY + registry.by_symbol(symbol).id] = qty
    return out


@kernel
def ema_update_nb(s, mid, fast_alpha, slow_alpha):
    """Advance the two EMAs in ``s`` by one mid; returns the quotes seen so far."""
    if s[2] == 0.0:
        s[0] = mid
        s[1] = mid
    else:
        s[0] += fast_alpha * (mid - s[0])
        s[1] += slow_alpha * (mid - s[1])
    s[2] += 1.0
    return s[2]


@kernel
def on_quote_nb(params, sstate, inst, static, orders, iid, now, intents):
    st = inst[iid]
    mid = 0.5 * (st.bid + st.ask)
    if not (mid > 0.0):
        return 0
    s = sstate[iid]
    if ema_update_nb(s, mid, params[P_FAST], params[P_SLOW]) < params[P_WARMUP]:
        return 0
    gap = (s[0] - s[1]) / s[1]
    if gap > params[P_THRESHOLD]:
        s[3] = 1.0
    elif gap < -params[P_THRESHOLD]:
        s[3] = -1.0
    if s[3] == 0.0 or st.working_buy > 0.0 or st.working_sell > 0.0:
        return 0
    delta = s[3] * params[P_QTY + iid] - st.position
    if abs(delta) < 0.5 * static[iid].lot_size:
        return 0
    it = intents[0]
    it.action = IntentAction.NEW
    it.instrument_id = iid
    it.side = Side.BUY if delta > 0.0 else Side.SELL
    it.quantity = abs(delta)
    it.tif = TimeInForce.IOC
    if params[P_MARKET] != 0.0:
        it.order_type = OrderType.MARKET
        it.price = np.nan
    else:
        it.order_type = OrderType.LIMIT
        it.price = st.ask if delta > 0.0 else st.bid
    return 1


@kernel
def on_fill_nb(params, sstate, inst, static, orders, iid, quantity, price, now, intents):
    return 0
