"""The simulated venue of a backtest: configuration, and its state as arrays for the kernels.

The venue sees the market at exchange time (``ts_event``), the engine at receive time
(``ts_recv``). An order reaches the venue ``order_latency_us`` after the engine sent it, and
every answer (acknowledgement, fill, cancel) reaches the engine ``response_latency_us`` after
the venue produced it. Fill model:

* a marketable order (a market order, or a limit at or through the opposite touch) fills at the
  touch on arrival, in full, or up to the displayed size with ``limit_to_displayed_size``;
* a non-marketable IOC order is cancelled on arrival; a DAY/GTC limit rests;
* a resting order fills at its own price when the market trades through it (a trade strictly
  beyond its price), or, with ``fill_on_quote_cross``, when the opposite quote moves strictly
  beyond it. Prices within a relative 1e-9 of each other count as equal (``venue_nb.PRICE_EPS``):
  binary noise such as ``9999 * 0.01 == 99.99000000000001`` does not put one price beyond another;
* commissions: ``commission_bps`` of notional plus ``commission_per_unit``, at least
  ``commission_min`` per fill, in the account currency.

The venue also keeps the backtest's books: cash and position per instrument (so the equity
curve does not depend on the engine's own accounting) and samples equity every
``equity_interval_ms`` of simulated time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quayside.core import wire
from quayside.core.engine.state import Inbound, inbound_views

__all__ = ["VenueConfig", "Venue", "allocate_venue", "venue_order_dtype"]

# params
V_ORDER_LATENCY, V_RESPONSE_LATENCY, V_COMMISSION_BPS, V_COMMISSION_UNIT, V_COMMISSION_MIN = range(5)
V_QUOTE_CROSS, V_SIZE_LIMITED, V_EQUITY_INTERVAL = range(5, 8)
# counters
C_RESTING, C_NEXT_FILL_ID, C_HEAP_SIZE, C_HEAP_SEQ, C_FREE_TOP, C_FILLS, C_DROPPED, C_EQUITY_N = range(8)
C_NEXT_EQUITY_T, C_REJECTS, C_LAST_SEEN = 8, 9, 10
# heap entry kinds
K_DELIVER, K_ORDER_ARRIVES, K_CANCEL_ARRIVES = 1, 2, 3
# book columns
B_BID, B_ASK, B_BID_SIZE, B_ASK_SIZE, B_LAST = range(5)

venue_order_dtype = np.dtype(
    [
        ("order_id", "i8"),
        ("instrument_id", "i8"),
        ("strategy_id", "i8"),
        ("side", "i8"),
        ("order_type", "i8"),
        ("tif", "i8"),
        ("price", "f8"),
        ("quantity", "f8"),
        ("filled", "f8"),
        ("notional", "f8"),
        ("active", "i8"),
        ("resting_index", "i8"),
    ],
    align=True,
)


class VenueConfig(BaseModel):
    """The simulated venue; every default is here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_latency_us: float = Field(default=250.0, ge=0, description="engine send -> venue")
    response_latency_us: float = Field(default=250.0, ge=0, description="venue -> engine receipt")
    commission_bps: float = Field(default=0.2, ge=0)
    commission_per_unit: float = Field(default=0.0, ge=0)
    commission_min: float = Field(default=0.0, ge=0)
    fill_on_quote_cross: bool = True
    limit_to_displayed_size: bool = False
    equity_interval_ms: float = Field(default=1_000.0, gt=0, description="equity curve sampling period")


class Venue(NamedTuple):
    params: np.ndarray
    counters: np.ndarray
    book: np.ndarray
    multiplier: np.ndarray
    cash: np.ndarray
    position: np.ndarray
    traded_notional: np.ndarray
    commissions: np.ndarray
    orders: np.ndarray
    resting: np.ndarray
    heap_time: np.ndarray
    heap_seq: np.ndarray
    heap_kind: np.ndarray
    heap_ref: np.ndarray
    free: np.ndarray
    pool: Inbound
    pool_order: np.ndarray
    pool_cancel: np.ndarray
    equity_t: np.ndarray
    equity_v: np.ndarray


def allocate_venue(
    config: VenueConfig,
    multipliers: np.ndarray,
    *,
    order_capacity: int = 1024,
    pool: int = 1 << 16,
    equity: int = 1 << 16,
) -> Venue:
    params = np.zeros(8)
    params[V_ORDER_LATENCY] = config.order_latency_us * 1e3
    params[V_RESPONSE_LATENCY] = config.response_latency_us * 1e3
    params[V_COMMISSION_BPS] = config.commission_bps
    params[V_COMMISSION_UNIT] = config.commission_per_unit
    params[V_COMMISSION_MIN] = config.commission_min
    params[V_QUOTE_CROSS] = float(config.fill_on_quote_cross)
    params[V_SIZE_LIMITED] = float(config.limit_to_displayed_size)
    params[V_EQUITY_INTERVAL] = config.equity_interval_ms * 1e6
    n = len(multipliers)
    book = np.full((n, 5), np.nan)
    words = np.zeros((pool, wire.RECORD_SIZE // 8), dtype=np.int64)
    views = inbound_views(words)
    counters = np.zeros(16, dtype=np.int64)
    counters[C_FREE_TOP] = pool
    counters[C_NEXT_FILL_ID] = 1
    return Venue(
        params=params,
        counters=counters,
        book=book,
        multiplier=np.ascontiguousarray(multipliers, dtype=np.float64),
        cash=np.zeros(n),
        position=np.zeros(n),
        traded_notional=np.zeros(n),
        commissions=np.zeros(n),
        orders=np.zeros(order_capacity, dtype=venue_order_dtype),
        resting=np.zeros(order_capacity, dtype=np.int64),
        heap_time=np.zeros(pool, dtype=np.int64),
        heap_seq=np.zeros(pool, dtype=np.int64),
        heap_kind=np.zeros(pool, dtype=np.int64),
        heap_ref=np.zeros(pool, dtype=np.int64),
        free=np.arange(pool, dtype=np.int64)[::-1].copy(),
        pool=views,
        pool_order=words.reshape(-1).view(wire.record_dtype).view(wire.order_dtype),
        pool_cancel=words.reshape(-1).view(wire.record_dtype).view(wire.cancel_dtype),
        equity_t=np.zeros(equity, dtype=np.int64),
        equity_v=np.zeros(equity, dtype=np.float64),
    )
