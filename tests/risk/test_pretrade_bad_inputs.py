"""Pre-trade risk against bad inputs, through the real engine kernels: orders that are not
orders, market data that is not a price, and execution reports for more than was ordered.

Each case here was an order the engine let through before (found by the property test in
``test_risk_properties.py`` or while writing it); each now has the denial it should have had.
"""

from __future__ import annotations

import math

import pytest
from _builders import AAPL, MS, T0, TOYOTA, USDJPY, Bench, aapl, assert_denied, assert_sent, loose

from quayside.core.wire import DenyReason, OrderType, Side

BUY, SELL = Side.BUY, Side.SELL
T = T0


def test_an_over_fill_does_not_free_room_held_by_other_orders():
    b = Bench(loose(defaults={"max_long_position": 15.0}))
    aapl(b)
    first = assert_sent(b, b.order(AAPL, BUY, 100.0, 5, T))["order_id"]
    assert_sent(b, b.order(AAPL, BUY, 100.0, 5, T))
    b.fill(first, AAPL, 8.0, 100.0, T)  # 8 reported on an order of 5 (a duplicated execution report)
    assert b.a.inst[AAPL]["working_buy"] == 5.0  # the second order still works 5
    assert_denied(b, b.order(AAPL, BUY, 100.0, 5, T), DenyReason.MAX_LONG_POSITION, 15.0)  # 8 + 5 + 5
    assert_sent(b, b.order(AAPL, BUY, 100.0, 2, T))


@pytest.mark.parametrize(
    ("side", "order_type", "price", "qty", "limit"),
    [
        (BUY, OrderType.LIMIT, 100.0, 0.0, 0.0),
        (BUY, OrderType.LIMIT, 100.0, -1.0, 0.0),
        (BUY, OrderType.LIMIT, 100.0, math.nan, 0.0),
        (BUY, OrderType.LIMIT, 100.0, math.inf, 1.0),
        (BUY, OrderType.LIMIT, 100.0, 0.5, 1.0),  # off-lot
        (BUY, OrderType.LIMIT, 100.0, 1e-10, 1.0),  # rounds to zero lots
        (BUY, OrderType.LIMIT, 100.0, 1e-300, 1.0),
        (0, OrderType.LIMIT, 100.0, 1.0, 0.0),
        (BUY, 9, 100.0, 1.0, 0.0),
        (SELL, OrderType.LIMIT, 0.0, 1.0, 0.0),
        (SELL, OrderType.LIMIT, -100.0, 1.0, 0.0),
        (SELL, OrderType.LIMIT, math.nan, 1.0, 0.0),
        (SELL, OrderType.LIMIT, math.inf, 1.0, 0.0),
    ],
)
def test_invalid_orders(side, order_type, price, qty, limit):
    no_limits = {"max_order_qty": math.inf, "price_collar_pct": math.inf, "max_order_notional": math.inf}
    b = Bench(loose(defaults=no_limits | {"max_long_position": math.inf, "max_short_position": math.inf}))
    aapl(b)
    result = b.order(AAPL, side, price, qty, T, order_type=order_type)
    assert_denied(b, result, DenyReason.INVALID_ORDER, limit)


@pytest.mark.parametrize(
    ("bid", "ask", "side", "order_type"),
    [
        (1.7e308, 1.7e308, BUY, OrderType.LIMIT),  # the mid overflows to inf
        (math.inf, 100.5, BUY, OrderType.LIMIT),
        (99.5, math.nan, SELL, OrderType.LIMIT),
        (-1.0, 100.5, SELL, OrderType.MARKET),  # IB's -1: no bid, nothing to sell into
        (99.5, -1.0, BUY, OrderType.MARKET),
        (200.0, 0.0, BUY, OrderType.MARKET),
    ],
)
def test_a_quote_that_is_not_a_price_is_no_reference(bid, ask, side, order_type):
    b = Bench(loose(defaults={"max_order_notional": 1_000.0, "stale_quote_ms": 100.0}))
    b.quote(AAPL, bid, ask, T)
    price = 100.0 if order_type == OrderType.LIMIT else math.nan
    result = b.order(AAPL, side, price, 5, T, order_type=order_type)
    assert_denied(b, result, DenyReason.STALE_MARKET_DATA, 100.0 * MS)


def test_an_infinite_last_trade_is_no_collar_reference():
    b = Bench(loose(defaults={"stale_quote_ms": 100.0}, collar_reference="last"))
    aapl(b)
    b.trade(AAPL, math.inf, T)
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T), DenyReason.STALE_MARKET_DATA, 100.0 * MS)


def test_an_fx_quote_that_is_not_a_price_is_no_rate():
    b = Bench(loose(defaults={"max_order_notional": 2_000.0}))
    b.quote(TOYOTA, 2559.0, 2561.0, T)
    b.quote(USDJPY, math.inf, math.inf, T)  # 1 / inf would make every JPY notional zero
    assert_denied(b, b.order(TOYOTA, BUY, 2560.0, 10_000, T), DenyReason.UNKNOWN_FX_RATE, 0.0)
