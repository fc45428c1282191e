"""Pre-trade risk, one control at a time, through the real engine kernels.

Each test builds engine state with ``prepare_engine`` (replay clock), feeds quotes, trades,
fills, order status and control records through ``process_record_nb``, sends orders with
``send_order_nb`` and reads what reached the outbound ring and the feed ring. For every control
it shows both sides of its limit: just inside is sent, just outside is denied with exactly that
control's ``DenyReason`` and the breached limit in the denial record on the feed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _builders import (
    AAPL,
    ESZ6,
    EURUSD,
    MS,
    T0,
    TOYOTA,
    USDJPY,
    Bench,
    aapl,
    assert_denied,
    assert_sent,
    loose,
    of_kind,
)

from quayside.core.engine.state import ORDER_CAPACITY, SlotStatus
from quayside.core.feed.segment import W_BACKPRESSURE
from quayside.core.wire import (
    ControlCommand,
    DenyReason,
    Flag,
    LimitId,
    LogCode,
    LogLevel,
    OrderStatus,
    OrderType,
    RecordKind,
    Side,
    TradingState,
)

BUY, SELL = Side.BUY, Side.SELL
T = T0


def logs(b: Bench, code: int) -> np.ndarray:
    feed = of_kind(b.drain_feed(), RecordKind.LOG)
    return feed[feed["code"] == code]


# --------------------------------------------------------------------------- size and value


def test_max_order_qty_with_a_per_instrument_override():
    b = Bench(loose(defaults={"max_order_qty": 10.0}, instruments={"AAPL": {"max_order_qty": 3.0}}))
    aapl(b)
    b.quote(EURUSD, 1.1, 1.1001, T)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 3, T))
    d = assert_denied(b, b.order(AAPL, SELL, 100.0, 4, T), DenyReason.MAX_ORDER_QTY, 3.0)
    assert (d["instrument_id"], d["side"], d["price"], d["quantity"], d["order_id"]) == (AAPL, SELL, 100.0, 4.0, 2)
    assert d["order_type"] == OrderType.LIMIT and d["ts_event"] == T
    assert_sent(b, b.order(EURUSD, SELL, 1.1, 10, T))  # no override: the default row
    assert_denied(b, b.order(EURUSD, SELL, 1.1, 11, T), DenyReason.MAX_ORDER_QTY, 10.0)


@pytest.mark.parametrize(
    ("iid", "bid", "ask", "price", "limit", "inside", "outside"),
    [
        (AAPL, 99.5, 100.5, 100.0, 1_000.0, 10, 11),  # 10 × 100 × 1
        (ESZ6, 4999.75, 5000.25, 5000.0, 500_000.0, 2, 3),  # futures: 2 × 5000 × multiplier 50
    ],
    ids=["stock", "future-multiplier"],
)
def test_max_order_notional(iid, bid, ask, price, limit, inside, outside):
    b = Bench(loose(defaults={"max_order_notional": limit}))
    b.quote(iid, bid, ask, T)
    assert_sent(b, b.order(iid, BUY, price, inside, T))
    assert_denied(b, b.order(iid, BUY, price, outside, T), DenyReason.MAX_ORDER_NOTIONAL, limit)


def test_market_order_notional_is_valued_at_the_touch():
    b = Bench(loose(defaults={"max_order_notional": 1_000.0}))
    aapl(b)
    assert_sent(b, b.order(AAPL, SELL, math.nan, 10, T, order_type=OrderType.MARKET))  # 10 × bid 99.5
    d = b.order(AAPL, BUY, math.nan, 10, T, order_type=OrderType.MARKET)  # 10 × ask 100.5
    assert_denied(b, d, DenyReason.MAX_ORDER_NOTIONAL, 1_000.0)


def test_notional_in_jpy_is_converted_through_the_usdjpy_mid_inverted():
    b = Bench(loose(defaults={"max_order_notional": 2_000.0}), fx_fallback={"JPY": 1.0})
    b.quote(USDJPY, 127.5, 128.5, T)  # mid 128: 1 JPY = 1/128 USD (the quote wins over the fallback)
    b.quote(TOYOTA, 2559.0, 2561.0, T)  # 2560 JPY = 20 USD a share
    assert_sent(b, b.order(TOYOTA, BUY, 2560.0, 100, T))  # 2,000 USD
    assert_denied(b, b.order(TOYOTA, BUY, 2560.0, 101, T), DenyReason.MAX_ORDER_NOTIONAL, 2_000.0)
    b.quote(USDJPY, 255.5, 256.5, T)  # the yen halves: the live mid is used, not a copy
    assert_sent(b, b.order(TOYOTA, BUY, 2560.0, 200, T))
    assert_denied(b, b.order(TOYOTA, BUY, 2560.0, 201, T), DenyReason.MAX_ORDER_NOTIONAL, 2_000.0)


def test_notional_uses_the_fallback_rate_without_an_fx_quote():
    b = Bench(loose(defaults={"max_order_notional": 2_000.0}), fx_fallback={"JPY": 1 / 128})
    b.quote(TOYOTA, 2559.0, 2561.0, T)
    assert_sent(b, b.order(TOYOTA, BUY, 2560.0, 100, T))
    assert_denied(b, b.order(TOYOTA, BUY, 2560.0, 101, T), DenyReason.MAX_ORDER_NOTIONAL, 2_000.0)


def test_unknown_fx_rate_without_quote_or_fallback():
    b = Bench(loose(defaults={"max_order_notional": 2_000.0}))
    b.quote(TOYOTA, 2559.0, 2561.0, T)
    assert_denied(b, b.order(TOYOTA, BUY, 2560.0, 1, T), DenyReason.UNKNOWN_FX_RATE, 0.0)
    b.quote(USDJPY, math.nan, math.nan, T)  # a quote without prices is no rate either
    assert_denied(b, b.order(TOYOTA, BUY, 2560.0, 1, T), DenyReason.UNKNOWN_FX_RATE, 0.0)
    b.quote(USDJPY, 127.5, 128.5, T)
    assert_sent(b, b.order(TOYOTA, BUY, 2560.0, 1, T))


# --------------------------------------------------------------------------- price collar


@pytest.mark.parametrize("side", [BUY, SELL])
def test_price_collar_in_percent_of_mid(side):
    b = Bench(loose(defaults={"price_collar_pct": 2.0}))
    aapl(b)
    for price in (102.0, 98.0):
        assert_sent(b, b.order(AAPL, side, price, 1, T))
    for price in (102.01, 97.99):
        assert_denied(b, b.order(AAPL, side, price, 1, T), DenyReason.PRICE_COLLAR, 2.0)


def test_price_collar_in_ticks():
    b = Bench(loose(instruments={"ESZ6": {"price_collar_ticks": 4.0}}))  # tick 0.25
    b.quote(ESZ6, 4999.75, 5000.25, T)
    for price in (5001.0, 4999.0):
        assert_sent(b, b.order(ESZ6, BUY, price, 1, T))
    for price in (5001.25, 4998.75):
        assert_denied(b, b.order(ESZ6, BUY, price, 1, T), DenyReason.PRICE_COLLAR, 4.0)


@pytest.mark.parametrize(
    ("reference", "inside", "outside"),
    [("mid", 101.9, 104.0), ("last", 104.0, 101.9)],  # mid 100, last trade 105, collar 2 %
)
def test_price_collar_reference_mid_or_last(reference, inside, outside):
    b = Bench(loose(defaults={"price_collar_pct": 2.0}, collar_reference=reference))
    aapl(b)
    assert_sent(b, b.order(AAPL, BUY, 101.9, 1, T))  # no trade yet: "last" falls back to mid
    b.trade(AAPL, 105.0, T)
    assert_sent(b, b.order(AAPL, BUY, inside, 2, T))
    assert_denied(b, b.order(AAPL, BUY, outside, 3, T), DenyReason.PRICE_COLLAR, 2.0)


# --------------------------------------------------------------------------- position


def test_max_long_position_counts_working_orders():
    b = Bench(loose(defaults={"max_long_position": 10.0}))
    aapl(b)
    first = assert_sent(b, b.order(AAPL, BUY, 100.0, 4, T))["order_id"]
    second = assert_sent(b, b.order(AAPL, BUY, 100.0, 4, T))["order_id"]
    assert_denied(b, b.order(AAPL, BUY, 100.0, 3, T), DenyReason.MAX_LONG_POSITION, 10.0)  # 0 + 8 + 3
    assert_sent(b, b.order(AAPL, BUY, 100.0, 2, T))  # 0 + 8 + 2 = 10
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T), DenyReason.MAX_LONG_POSITION, 10.0)
    assert_sent(b, b.order(AAPL, SELL, 100.0, 5, T))  # sells do not count towards the long side
    b.fill(first, AAPL, 4.0, 100.0, T)  # working -> position: still 10 in all
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T), DenyReason.MAX_LONG_POSITION, 10.0)
    b.status(second, AAPL, OrderStatus.CANCELLED, T)  # 4 + 2 working + 4 = 10
    assert_sent(b, b.order(AAPL, BUY, 100.0, 4, T))
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T), DenyReason.MAX_LONG_POSITION, 10.0)


def test_max_short_position_counts_position_and_working_orders():
    b = Bench(loose(instruments={"AAPL": {"max_short_position": 10.0}}))
    aapl(b)
    sold = assert_sent(b, b.order(AAPL, SELL, 100.0, 3, T))["order_id"]
    b.fill(sold, AAPL, -3.0, 100.0, T)  # position -3
    assert_sent(b, b.order(AAPL, SELL, 100.0, 2, T))
    assert_sent(b, b.order(AAPL, SELL, 100.0, 2, T))  # -3 - 4 working
    assert_denied(b, b.order(AAPL, SELL, 100.0, 4, T), DenyReason.MAX_SHORT_POSITION, 10.0)
    assert_sent(b, b.order(AAPL, SELL, 100.0, 3, T))  # -3 - 4 - 3 = -10
    assert_denied(b, b.order(AAPL, SELL, 100.0, 1, T), DenyReason.MAX_SHORT_POSITION, 10.0)


# --------------------------------------------------------------------------- message rate, duplicates


def test_message_rate_throttle_counts_cancels_and_slides():
    b = Bench(loose(max_messages_per_window=5, message_window_ms=1_000.0))
    aapl(b)
    ids = [assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T + i * MS))["order_id"] for i in range(4)]
    assert b.cancel(ids[0], T + 4 * MS)  # message 5 in the window
    assert len(of_kind(b.drain_out(), RecordKind.CANCEL)) == 1
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T + 5 * MS), DenyReason.MESSAGE_RATE, 5.0)
    assert b.cancel(ids[1], T + 5 * MS)  # a cancel is never throttled, but it counts
    assert of_kind(b.drain_out(), RecordKind.CANCEL)["order_id"].tolist() == [ids[1]]
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T + 1_000 * MS - 1), DenyReason.MESSAGE_RATE, 5.0)
    # at T + 1 s the first message leaves the window, but the extra cancel keeps it at 5
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T + 1_000 * MS), DenyReason.MESSAGE_RATE, 5.0)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T + 1_001 * MS))
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T + 1_001 * MS), DenyReason.MESSAGE_RATE, 5.0)


def test_duplicate_order_guard_window():
    b = Bench(loose(duplicate_window_ms=20.0))
    aapl(b)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 5, T))
    limit = 20.0 * MS
    # 1 µs inside, not 1 ns: the guard keeps its timestamps as float64, which resolve 256 ns today
    assert_denied(b, b.order(AAPL, BUY, 100.0, 5, T + 20 * MS - 1_000), DenyReason.DUPLICATE_ORDER, limit)
    for side, price, qty in [(BUY, 100.01, 5), (SELL, 100.0, 5), (BUY, 100.0, 6)]:  # not the same order
        assert_sent(b, b.order(AAPL, side, price, qty, T + MS))
    assert_sent(b, b.order(AAPL, BUY, 100.0, 5, T + 20 * MS))  # the window has passed
    b.quote(AAPL, 99.5, 100.5, T + 20 * MS)
    market = b.order(AAPL, BUY, math.nan, 5, T + 20 * MS, order_type=OrderType.MARKET)
    assert_sent(b, market)
    again = b.order(AAPL, BUY, math.nan, 5, T + 21 * MS, order_type=OrderType.MARKET)
    assert_denied(b, again, DenyReason.DUPLICATE_ORDER, limit)  # NaN prices compare equal here


# --------------------------------------------------------------------------- instruments, market data


@pytest.mark.parametrize("iid", [EURUSD, 0, 6, 99, -1, 100_000_000], ids=lambda i: f"iid={i}")
def test_instrument_allow_list(iid):
    b = Bench(loose(allow=["AAPL"]))
    aapl(b)
    b.quote(EURUSD, 1.1, 1.1001, T)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T))
    assert_denied(b, b.order(iid, BUY, 1.1, 1, T), DenyReason.INSTRUMENT_NOT_ALLOWED, 0.0)


def test_stale_quote_age():
    b = Bench(loose(defaults={"stale_quote_ms": 100.0}))
    limit = 100.0 * MS
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T), DenyReason.STALE_MARKET_DATA, limit)  # never quoted
    aapl(b, T)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T + 100 * MS))
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T + 100 * MS + 1), DenyReason.STALE_MARKET_DATA, limit)
    aapl(b, T + 150 * MS)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T + 150 * MS + 1))


def test_stale_flag_from_the_gateway():
    b = Bench(loose(defaults={"stale_quote_ms": 100.0}))
    b.quote(AAPL, 99.5, 100.5, T, flags=Flag.STALE)
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T), DenyReason.STALE_MARKET_DATA, 100.0 * MS)
    aapl(b, T + 1)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T + 1))


# --------------------------------------------------------------------------- trading state


def test_reducing_allows_only_orders_that_reduce():
    b = Bench(loose())
    aapl(b)
    b.fill(assert_sent(b, b.order(AAPL, BUY, 100.0, 5, T))["order_id"], AAPL, 5.0, 100.0, T)  # long 5
    b.control(ControlCommand.REDUCE_ONLY, T)
    assert_denied(b, b.order(AAPL, BUY, 100.0, 1, T), DenyReason.REDUCE_ONLY, 0.0)
    assert_sent(b, b.order(AAPL, SELL, 100.0, 3, T))
    assert_denied(b, b.order(AAPL, SELL, 100.0, 3, T), DenyReason.REDUCE_ONLY, 0.0)  # 5 - 3 - 3: flips
    assert_sent(b, b.order(AAPL, SELL, 100.0, 2, T))  # 5 - 3 - 2 = 0
    assert_denied(b, b.order(AAPL, SELL, 100.0, 1, T), DenyReason.REDUCE_ONLY, 0.0)
    b.quote(EURUSD, 1.1, 1.1001, T)  # flat instruments: nothing reduces
    assert_denied(b, b.order(EURUSD, BUY, 1.1, 1, T), DenyReason.REDUCE_ONLY, 0.0)
    assert_denied(b, b.order(EURUSD, SELL, 1.1, 1, T), DenyReason.REDUCE_ONLY, 0.0)
    b.control(ControlCommand.RESUME, T)
    assert_sent(b, b.order(EURUSD, BUY, 1.1, 1, T))


def test_reducing_a_short_position_scoped_to_one_instrument():
    b = Bench(loose())
    aapl(b)
    b.quote(EURUSD, 1.1, 1.1001, T)
    b.fill(assert_sent(b, b.order(AAPL, SELL, 100.0, 4, T))["order_id"], AAPL, -4.0, 100.0, T)  # short 4
    b.control(ControlCommand.REDUCE_ONLY, T, iid=AAPL)
    assert_denied(b, b.order(AAPL, SELL, 100.0, 1, T), DenyReason.REDUCE_ONLY, 0.0)
    assert_denied(b, b.order(AAPL, BUY, 100.0, 5, T), DenyReason.REDUCE_ONLY, 0.0)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 4, T))
    assert_sent(b, b.order(EURUSD, SELL, 1.1, 1, T))  # other instruments stay ACTIVE


@pytest.mark.parametrize("how", ["config", "control"])
def test_halted_denies_every_new_order_and_passes_cancels(how):
    b = Bench(loose(initial_state="HALTED") if how == "config" else loose())
    aapl(b)
    if how == "control":
        working = assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T))["order_id"]
        b.control(ControlCommand.HALT, T)
        assert of_kind(b.drain_out(), RecordKind.CANCEL)["order_id"].tolist() == [working]
    for iid, side, order_type, price, qty in [
        (AAPL, BUY, OrderType.LIMIT, 100.0, 1),
        (AAPL, SELL, OrderType.MARKET, math.nan, 1),
        (AAPL, BUY, OrderType.LIMIT, 1e9, 1e9),  # breaks other limits too: HALTED is reported
        (99, BUY, OrderType.LIMIT, 1.0, 1),
    ]:
        result = b.order(iid, side, price, qty, T, order_type=order_type)
        assert_denied(b, result, DenyReason.TRADING_HALTED, 0.0)


def test_halt_cancels_every_working_order():
    b = Bench(loose())
    aapl(b)
    b.quote(EURUSD, 1.1, 1.1001, T)
    ids = [assert_sent(b, b.order(iid, side, p, 1, T))["order_id"] for iid, side, p in [
        (AAPL, BUY, 100.0), (AAPL, SELL, 100.5), (EURUSD, BUY, 1.1)]]  # fmt: skip
    done = assert_sent(b, b.order(EURUSD, SELL, 1.1, 1, T))["order_id"]
    b.fill(done, EURUSD, -1.0, 1.1, T)  # filled: nothing to cancel
    b.drain_feed()
    b.control(ControlCommand.HALT, T + 1, command_id=77)
    cancels = of_kind(b.drain_out(), RecordKind.CANCEL)
    assert sorted(cancels["order_id"].tolist()) == ids
    assert set(cancels["reason"].tolist()) == {ControlCommand.HALT}
    assert set(cancels["ts_event"].tolist()) == {T + 1}
    feed = of_kind(b.drain_feed(), RecordKind.LOG)
    changed = feed[feed["code"] == LogCode.STATE_CHANGED]
    assert (changed["i0"].tolist(), changed["i1"].tolist()) == ([TradingState.ACTIVE], [TradingState.HALTED])
    applied = feed[feed["code"] == LogCode.CONTROL_APPLIED]
    assert (applied["i0"].tolist(), applied["i1"].tolist()) == ([ControlCommand.HALT], [77])
    assert_denied(b, b.order(EURUSD, BUY, 1.1, 1, T + 1), DenyReason.TRADING_HALTED, 0.0)
    b.control(ControlCommand.HALT, T + 2)  # cancels already sent are not sent again
    assert len(b.drain_out()) == 0
    b.control(ControlCommand.RESUME, T + 3)
    assert_sent(b, b.order(EURUSD, BUY, 1.1, 1, T + 3))


def test_halt_scoped_to_one_instrument():
    b = Bench(loose())
    aapl(b)
    b.quote(EURUSD, 1.1, 1.1001, T)
    on_aapl = assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T))["order_id"]
    on_eur = assert_sent(b, b.order(EURUSD, BUY, 1.1, 1, T))["order_id"]
    b.control(ControlCommand.HALT, T, iid=AAPL)
    assert of_kind(b.drain_out(), RecordKind.CANCEL)["order_id"].tolist() == [on_aapl]
    assert_denied(b, b.order(AAPL, BUY, 100.0, 2, T), DenyReason.TRADING_HALTED, 0.0)
    assert_sent(b, b.order(EURUSD, BUY, 1.1, 2, T))
    assert b.a.orders[on_eur]["status"] == SlotStatus.PENDING_NEW
    b.control(ControlCommand.RESUME, T, iid=AAPL)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 2, T))


def test_control_for_another_strategy_is_ignored():
    b = Bench(loose())
    aapl(b)
    b.control(ControlCommand.HALT, T, strategy_id=2)
    assert len(logs(b, LogCode.STATE_CHANGED)) == 0
    assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T))


# --------------------------------------------------------------------------- limit changes


def test_set_limit_takes_effect_for_the_very_next_order():
    b = Bench(loose(defaults={"max_order_qty": 100.0}))
    aapl(b)
    b.quote(EURUSD, 1.1, 1.1001, T)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 6, T))
    b.control(ControlCommand.SET_LIMIT, T, iid=AAPL, limit_id=LimitId.MAX_ORDER_QTY, value=5.0, command_id=9)
    changed = logs(b, LogCode.LIMIT_CHANGED)
    assert len(changed) == 1 and changed[0]["level"] == LogLevel.WARNING
    assert (changed[0]["i0"], changed[0]["i1"], changed[0]["a1"]) == (LimitId.MAX_ORDER_QTY, 9, 5.0)
    assert math.isnan(changed[0]["a0"])  # the AAPL row inherited the default until now
    assert_denied(b, b.order(AAPL, BUY, 100.0, 6, T), DenyReason.MAX_ORDER_QTY, 5.0)
    assert_sent(b, b.order(AAPL, BUY, 100.0, 5, T))
    assert_sent(b, b.order(EURUSD, BUY, 1.1, 6, T))  # only AAPL's row changed
    b.control(ControlCommand.SET_LIMIT, T, limit_id=LimitId.MESSAGE_WINDOW_NS, value=1e9)
    b.control(ControlCommand.SET_LIMIT, T, limit_id=LimitId.MAX_MESSAGES_PER_WINDOW, value=3.0)
    assert_denied(b, b.order(EURUSD, BUY, 1.1, 7, T), DenyReason.MESSAGE_RATE, 3.0)  # 3 sent this second


@pytest.mark.parametrize(
    "control",
    [
        dict(command=ControlCommand.SET_LIMIT, limit_id=0, value=1.0),
        dict(command=ControlCommand.SET_LIMIT, limit_id=max(LimitId) + 1, value=1.0),
        dict(command=ControlCommand.SET_LIMIT, limit_id=255, value=1.0),
        dict(command=ControlCommand.SET_LIMIT, limit_id=LimitId.MAX_ORDER_QTY, value=math.nan),
        dict(command=0),
        dict(command=max(ControlCommand) + 1),
        dict(command=ControlCommand.HALT, iid=6),
        dict(command=ControlCommand.SET_LIMIT, iid=1000, limit_id=LimitId.MAX_ORDER_QTY, value=1.0),
    ],
    ids=["limit-0", "limit-past-end", "limit-255", "nan-value", "command-0", "command-unknown", "iid-6", "iid-1000"],
)
def test_invalid_control_is_rejected_and_changes_nothing(control):
    b = Bench(loose())
    aapl(b)
    before = [x.copy() for x in (b.a.limits, b.a.engine["trading_state"], b.a.inst["trading_state"])]
    b.control(now=T, **control)
    rejected = logs(b, LogCode.CONTROL_REJECTED)
    assert len(rejected) == 1 and rejected[0]["level"] == LogLevel.ERROR
    after = (b.a.limits, b.a.engine["trading_state"], b.a.inst["trading_state"])
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(before, after, strict=True))
    assert_sent(b, b.order(AAPL, BUY, 100.0, 1, T))


# --------------------------------------------------------------------------- fill latch


def test_fill_count_latch_engages_and_only_resume_clears_it():
    b = Bench(loose(fill_latch_count=3, fill_latch_window_ms=1_000.0))
    aapl(b)
    oid = assert_sent(b, b.order(AAPL, BUY, 100.0, 10, T))["order_id"]
    for k, t in enumerate([T, T + 500 * MS, T + 1_000 * MS]):  # the first leaves the window at T + 1 s
        b.fill(oid, AAPL, 1.0, 100.0, t, fill_id=k)
        aapl(b, t)
    assert len(logs(b, LogCode.FILL_LATCH_ENGAGED)) == 0
    now = T + 1_000 * MS
    assert_sent(b, b.order(AAPL, BUY, 100.0, 1, now))
    now = T + 1_200 * MS
    b.fill(oid, AAPL, 1.0, 100.0, now, fill_id=4)  # three within 1 s: 500, 1000, 1200 ms
    latch = logs(b, LogCode.FILL_LATCH_ENGAGED)
    assert len(latch) == 1 and latch[0]["level"] == LogLevel.CRITICAL and latch[0]["i0"] == 4
    aapl(b, now)
    assert_denied(b, b.order(AAPL, SELL, 100.0, 1, now), DenyReason.FILL_LATCH, 3.0)
    for command, iid in [(ControlCommand.REDUCE_ONLY, 0), (ControlCommand.RESUME, AAPL)]:
        b.control(command, now, iid=iid)  # neither clears the latch
        assert_denied(b, b.order(AAPL, SELL, 100.0, 1, now), DenyReason.FILL_LATCH, 3.0)
    now += 10_000 * MS  # nor does time
    aapl(b, now)
    assert_denied(b, b.order(AAPL, SELL, 100.0, 1, now), DenyReason.FILL_LATCH, 3.0)
    b.control(ControlCommand.RESUME, now)
    assert_sent(b, b.order(AAPL, SELL, 100.0, 1, now))


# --------------------------------------------------------------------------- engine capacity


def test_too_many_orders_when_the_order_slot_is_busy():
    b = Bench(loose())
    now = T
    for k in range(ORDER_CAPACITY):  # ids 1..1024 fill every slot, all still working
        now += 10_000  # 100 messages per ms at most
        aapl(b, now)
        assert b.order(AAPL, BUY, 100.0, 1, now) == k + 1
        b.drain_out()
        b.drain_feed()
    d = assert_denied(b, b.order(AAPL, BUY, 100.0, 1, now), DenyReason.TOO_MANY_ORDERS, float(ORDER_CAPACITY))
    assert d["order_id"] == ORDER_CAPACITY + 1  # would have reused slot 1
    b.status(1, AAPL, OrderStatus.CANCELLED, now)
    assert assert_sent(b, b.order(AAPL, BUY, 100.0, 1, now))["order_id"] == ORDER_CAPACITY + 1


def test_outbound_full_is_denied_counted_and_loses_nothing():
    b = Bench(loose(), out_capacity=4)
    aapl(b)
    ids = [b.order(AAPL, BUY, 100.0, 1 + k, T) for k in range(4)]
    assert ids == [1, 2, 3, 4]
    d = b.order(AAPL, BUY, 100.0, 9, T)
    assert d == -DenyReason.OUTBOUND_FULL
    denials = b.denials()
    assert denials["reason"].tolist() == [DenyReason.OUTBOUND_FULL] and denials["order_id"].tolist() == [5]
    assert b.a.engine[0]["backpressure"] == 1 and b.out.words[W_BACKPRESSURE] == 1
    assert b.a.inst[AAPL]["working_buy"] == 10.0  # the refused order is not working
    assert not b.cancel(2, T)  # a cancel that finds the ring full is kept and retried
    assert b.a.orders[2]["status"] == SlotStatus.CANCEL_WANTED and b.a.engine[0]["pending_cancels"] == 1
    out = of_kind(b.drain_out(), RecordKind.ORDER)  # the gateway catches up
    assert out["order_id"].tolist() == ids and out["quantity"].tolist() == [1.0, 2.0, 3.0, 4.0]
    aapl(b, T + 1)  # the next record handled retries the cancel
    assert of_kind(b.drain_out(), RecordKind.CANCEL)["order_id"].tolist() == [2]
    assert b.a.engine[0]["pending_cancels"] == 0
    assert assert_sent(b, b.order(AAPL, BUY, 100.0, 9, T + 1))["order_id"] == 5
