"""The P&L ledger against cases computed by hand: average cost, fees through zero, late
commissions, corrections, multipliers, FX conversion and staleness, marks, the daily reset."""

from __future__ import annotations

import datetime as dt

import pytest

from quayside.core.instruments import Instrument, InstrumentRegistry, default_registry
from quayside.support.pnl.accounting import Ledger
from quayside.support.pnl.clock import DailySchedule

S = 1_000_000_000
T0 = int(dt.datetime(2024, 8, 9, 14, 0, tzinfo=dt.UTC).timestamp()) * S  # 10:00 in New York (EDT)
EURUSD, USDJPY, AAPL, ES, TOYOTA, NESTLE = 1, 2, 3, 4, 5, 6


def registry() -> InstrumentRegistry:
    extra = [
        Instrument(id=5, symbol="7203", exchange="TSEJ", currency="JPY", tick_size=1.0),
        Instrument(id=6, symbol="NESN", exchange="EBS", currency="CHF"),  # no USDCHF: no FX route
    ]
    return InstrumentRegistry([*default_registry(), *extra], account_currency="USD")


@pytest.fixture
def led() -> Ledger:
    return Ledger(registry(), fx_max_age_s=60.0, reset_at="17:00", timezone="America/New_York")


def pos(led: Ledger, iid: int, sid: int = 1):
    return led.positions[(sid, iid)]


def test_open_add_partial_close(led):
    led.apply_fill(1, AAPL, 1, 10, 100.0, 0.0, T0)
    led.apply_fill(1, AAPL, 2, 10, 110.0, 0.0, T0 + 1)
    p = pos(led, AAPL)
    assert (p.quantity, p.avg_price, p.realized) == (20.0, 105.0, 0.0)
    made = led.apply_fill(1, AAPL, 3, -5, 120.0, 0.0, T0 + 2)
    assert made == pytest.approx(75.0)  # 5 x (120 - 105)
    assert (p.quantity, p.avg_price) == (15.0, 105.0)  # a reduction leaves the average alone
    led.apply_fill(1, AAPL, 4, -15, 100.0, 0.0, T0 + 3)
    assert p.quantity == 0.0 and p.realized == pytest.approx(0.0)  # 75 - 15 x 5
    assert p.avg_price != p.avg_price  # flat: no average (NaN)


def test_short_side_mirrors_long(led):
    led.apply_fill(1, AAPL, 1, -10, 100.0, 0.0, T0)
    led.apply_fill(1, AAPL, 2, -10, 90.0, 0.0, T0 + 1)
    led.apply_fill(1, AAPL, 3, 5, 80.0, 0.0, T0 + 2)
    p = pos(led, AAPL)
    assert (p.quantity, p.avg_price) == (-15.0, 95.0)
    assert p.realized == pytest.approx(75.0)  # covered 5 at 80, sold at 95 on average


def test_flip_through_zero_splits_the_fee_and_restarts_the_average(led):
    led.apply_fill(1, AAPL, 1, 10, 100.0, 2.0, T0)  # opening fee 2 joins the pool
    led.apply_fill(1, AAPL, 2, -15, 110.0, 3.0, T0 + 1)  # closes 10 (fee 2), opens 5 short (fee 1)
    p = pos(led, AAPL)
    assert (p.quantity, p.avg_price) == (-5.0, 110.0)
    assert p.realized == pytest.approx(100.0)
    assert p.fees_realized == pytest.approx(2.0 + 2.0)  # the whole pool of the closed long + the closing part
    assert p.fee_pool == pytest.approx(1.0)  # the opening part's share: 5/15 of 3
    led.set_quote(AAPL, 104.0, 105.0, T0 + 2)
    a = led.amounts(p).values
    assert a["realized"] == pytest.approx(96.0)
    assert a["unrealized"] == pytest.approx((105.0 - 110.0) * -5.0 - 1.0)  # short marked at the ask, less its fee
    led.apply_fill(1, AAPL, 3, 5, 100.0, 0.5, T0 + 3)  # flat again
    a = led.amounts(p).values
    assert p.quantity == 0.0 and p.fee_pool == 0.0
    assert a["realized"] == pytest.approx(150.0 - 5.5)
    assert a["fees"] == pytest.approx(5.5)
    assert a["unrealized"] == 0.0


def test_commission_arriving_later_is_unknown_until_then(led):
    led.set_quote(AAPL, 101.0, 101.5, T0)
    led.apply_fill(1, AAPL, 7, 10, 100.0, None, T0)
    p = pos(led, AAPL)
    a = led.amounts(p)
    assert a.unknown_commissions == 1 and "commission" in a.reasons
    assert a.values["fees"] is None and a.values["unrealized"] is None and a.values["total"] is None
    assert a.values["realized"] == 0.0  # nothing closed: the realized side is complete
    totals = led.totals()
    assert totals.values["total"] is None and totals.unknown_commissions == 1  # never counted as 0
    led.apply_fill(1, AAPL, 8, -4, 110.0, 1.0, T0 + 1)  # closes 4 of the 10 whose fee is unknown
    assert led.amounts(p).values["realized"] is None  # 40% of the unknown fee belongs to it
    assert led.attach_commission(7, 2.0)
    # as if known at the fill: pool 2, the close of 4/10 released 0.8
    assert p.fees_realized == pytest.approx(0.8 + 1.0)
    assert p.fee_pool == pytest.approx(1.2)
    a = led.amounts(p)
    assert not a.reasons and a.unknown_commissions == 0
    assert a.values["realized"] == pytest.approx(40.0 - 1.8)
    assert a.values["unrealized"] == pytest.approx((101.0 - 100.0) * 6.0 - 1.2)


def test_commission_report_replaces_an_earlier_one_and_orphans_are_kept(led):
    led.apply_fill(1, AAPL, 1, 10, 100.0, 1.0, T0)
    led.attach_commission(1, 1.5)  # a corrected report replaces, does not add
    assert pos(led, AAPL).fee_pool == pytest.approx(1.5)
    assert not led.attach_commission(99, 0.7)  # a report before its fill: kept, counted
    assert led.anomalies["orphan_commission"] == 1
    led.apply_fill(1, AAPL, 99, -10, 101.0, None, T0 + 1)
    assert pos(led, AAPL).fees_realized == pytest.approx(1.5 + 0.7)


def test_duplicate_fill_changes_nothing(led):
    led.apply_fill(1, AAPL, 1, 10, 100.0, 1.0, T0)
    led.apply_fill(1, AAPL, 1, 10, 100.0, 1.0, T0)
    assert pos(led, AAPL).quantity == 10.0 and led.anomalies["duplicate_fill"] == 1


def test_correction_restates_the_execution_and_everything_after_it(led):
    led.apply_fill(1, AAPL, 1, 10, 100.0, 1.0, T0)
    led.apply_fill(1, AAPL, 2, -10, 110.0, 1.0, T0 + 1)
    p = pos(led, AAPL)
    assert p.realized == pytest.approx(100.0) and p.quantity == 0.0
    # the first execution was really 8 at 101: the sell then closed 8 and opened 2 short
    change = led.apply_correction(1, -2.0, 101.0)
    assert change == pytest.approx(72.0 - 100.0)
    assert (p.quantity, p.avg_price) == (-2.0, 110.0)
    assert p.realized == pytest.approx(8 * 9.0)
    assert led.amounts(p).values["realized"] is None  # the corrected execution's commission is pending
    led.attach_commission(1, 0.8)
    assert p.fees_realized == pytest.approx(0.8 + 1.0 * 8 / 10)
    assert p.fee_pool == pytest.approx(1.0 * 2 / 10)


def test_price_only_correction_and_bust(led):
    led.apply_fill(1, AAPL, 1, 10, 100.0, 1.0, T0)
    led.apply_fill(1, AAPL, 2, -10, 110.0, 1.0, T0 + 1)
    led.apply_correction(2, 0.0, 111.0)  # same quantity, corrected price
    p = pos(led, AAPL)
    assert p.realized == pytest.approx(110.0)
    led.apply_correction(2, 10.0, 111.0)  # busted: the sell never happened
    assert (p.quantity, p.avg_price, p.realized) == (10.0, 100.0, 0.0)
    assert p.by_id[2].commission == 0.0  # a bust costs nothing, and is not left unknown
    assert p.fees_realized == 0.0 and p.fee_pool == pytest.approx(1.0)


def test_orphan_correction_is_applied_as_a_fill(led):
    led.apply_correction(5, 3.0, 100.0, strategy_id=1, instrument_id=AAPL, ts_ns=T0)
    assert pos(led, AAPL).quantity == 3.0 and led.anomalies["orphan_correction"] == 1


def test_futures_multiplier(led):
    led.apply_fill(1, ES, 1, 2, 5000.0, 2.5, T0)
    led.apply_fill(1, ES, 2, -1, 5010.0, 2.5, T0 + 1)
    p = pos(led, ES)
    assert p.realized == pytest.approx(1 * 10.0 * 50.0)
    led.set_quote(ES, 5005.0, 5005.25, T0 + 2)
    a = led.amounts(p).values
    assert a["unrealized"] == pytest.approx(5.0 * 50.0 - 1.25)  # long marked at the bid, half the first fee open
    assert a["realized"] == pytest.approx(500.0 - 2.5 - 1.25)


def test_jpy_instrument_converted_at_the_usdjpy_mid(led):
    led.set_quote(USDJPY, 149.99, 150.01, T0)
    led.apply_fill(1, TOYOTA, 1, 100, 2000.0, 1.0, T0 + 1)
    led.apply_fill(1, TOYOTA, 2, -100, 2010.0, 1.0, T0 + 2)
    p = pos(led, TOYOTA)
    assert p.realized == pytest.approx(1000.0)  # yen
    a = led.amounts(p)
    assert a.values["realized"] == pytest.approx(1000.0 / 150.0 - 2.0)  # commissions are in USD already
    assert not a.fx_stale
    fx = led.fx_report()["JPY"]
    assert fx["rate"] == pytest.approx(1 / 150.0) and fx["via"] == "USDJPY"


def test_usdjpy_position_is_in_yen_and_converted_by_its_own_rate(led):
    led.apply_fill(1, USDJPY, 1, 1000, 150.0, 0.0, T0)
    led.set_quote(USDJPY, 151.0, 151.02, T0 + 1)
    a = led.amounts(pos(led, USDJPY)).values
    assert a["unrealized"] == pytest.approx(1000 * 1.0 / 151.01)


def test_stale_fx_rate_is_used_but_flagged(led):
    led.set_quote(USDJPY, 149.99, 150.01, T0)
    led.apply_fill(1, TOYOTA, 1, 100, 2000.0, 0.0, T0)
    led.apply_fill(1, TOYOTA, 2, -100, 2010.0, 0.0, T0)
    led.advance(T0 + 61 * S)  # feed time moves on (other quotes, heartbeats): the rate is 61 s old
    a = led.amounts(pos(led, TOYOTA))
    assert a.fx_stale and a.values["realized"] == pytest.approx(1000 / 150.0)
    assert led.report()["totals"]["fx_stale"] is True
    assert led.fx_report()["JPY"]["stale"] is True


def test_missing_fx_rate_makes_the_amounts_unknown_never_one(led):
    led.apply_fill(1, TOYOTA, 1, 100, 2000.0, 0.0, T0)
    led.apply_fill(1, TOYOTA, 2, -100, 2010.0, 0.0, T0)  # +1000 JPY, no USDJPY quote yet
    a = led.amounts(pos(led, TOYOTA))
    assert a.values["realized"] is None and "fx" in a.reasons
    led.apply_fill(1, NESTLE, 3, 10, 100.0, 0.0, T0)  # CHF: no FX instrument in the registry at all
    led.apply_fill(1, NESTLE, 4, -10, 101.0, 0.0, T0)
    assert led.amounts(pos(led, NESTLE)).values["realized"] is None
    assert led.fx_report()["CHF"] == {"rate": None, "known": False, "stale": False, "age_s": None, "via": None}
    led.apply_fill(1, AAPL, 5, 1, 100.0, 0.0, T0)  # a USD position beside them
    assert led.totals().values["realized"] is None  # the total is unknown, not the sum of the known parts
    led.set_quote(USDJPY, 0.0, -1.0, T0)  # IB's "no price" is not a rate either
    assert led.fx("JPY")[0] is None


def test_marks_longs_at_bid_shorts_at_ask_and_unknown_without_one(led):
    led.apply_fill(1, AAPL, 1, 10, 100.0, 0.0, T0)
    led.apply_fill(2, AAPL, 2, -10, 100.0, 0.0, T0)
    long_, short = pos(led, AAPL, 1), pos(led, AAPL, 2)
    assert led.amounts(long_).values["unrealized"] is None  # no quote yet
    led.set_quote(AAPL, 99.0, 101.0, T0 + 1)
    assert led.amounts(long_).values["unrealized"] == pytest.approx(-10.0)
    assert led.amounts(short).values["unrealized"] == pytest.approx(-10.0)
    led.set_quote(AAPL, float("nan"), 101.0, T0 + 2)  # bid gone: the long is unknown, the short is not
    assert led.amounts(long_).values["unrealized"] is None and "mark" in led.amounts(long_).reasons
    assert led.amounts(short).values["unrealized"] == pytest.approx(-10.0)
    report = led.report()
    assert report["strategies"]["2"]["unrealized"] == pytest.approx(-10.0)
    assert report["instruments"]["AAPL"]["unrealized"] is None
    assert report["instruments"]["AAPL"]["quantity"] == 0.0


def test_daily_reset_at_the_configured_local_time(led):
    led.set_quote(AAPL, 100.0, 100.0, T0)
    led.apply_fill(1, AAPL, 1, 10, 90.0, 1.0, T0)
    led.apply_fill(1, AAPL, 2, -5, 100.0, 1.0, T0 + S)  # +50 realized today
    p = pos(led, AAPL)
    assert led.amounts(p).values["realized_today"] == pytest.approx(50.0 - 1.5)
    reset = int(dt.datetime(2024, 8, 9, 21, 0, tzinfo=dt.UTC).timestamp()) * S  # 17:00 EDT
    assert led.next_reset_ns == reset
    assert not led.advance(reset - 1)
    assert led.advance(reset)  # the reset
    a = led.amounts(p).values
    assert a["realized_today"] == 0.0 and a["daily"] == 0.0
    assert a["realized"] == pytest.approx(48.5)  # the total is untouched
    led.set_quote(AAPL, 102.0, 102.0, reset + S)
    led.apply_fill(1, AAPL, 3, -5, 104.0, 1.0, reset + 2 * S)
    a = led.amounts(p).values
    assert a["realized_today"] == pytest.approx(5 * 14.0 - 1.0 - 0.5)  # its fee + the pool's last half
    # equity then: 48.5 realized + (50 unrealized - 0.5 open fee); now 120 - 3 fees: today's only fee is 1
    assert a["daily"] == pytest.approx(5 * (104.0 - 100.0) - 1.0)
    assert led.next_reset_ns == reset + 86_400 * S
    assert led.report()["day_started"].startswith("2024-08-09T21:00")


def test_correction_of_yesterday_is_booked_today(led):
    led.apply_fill(1, AAPL, 1, 10, 100.0, 0.0, T0)
    led.apply_fill(1, AAPL, 2, -10, 110.0, 0.0, T0)
    led.advance(led.next_reset_ns)
    led.apply_correction(2, 0.0, 109.0, ts_ns=led.clock_ns)
    led.attach_commission(2, 0.0)
    a = led.amounts(pos(led, AAPL)).values
    assert a["realized"] == pytest.approx(90.0) and a["realized_today"] == pytest.approx(-10.0)


def test_schedule_follows_daylight_saving():
    ny = DailySchedule("17:00", "America/New_York")
    winter = int(dt.datetime(2024, 1, 10, 12, 0, tzinfo=dt.UTC).timestamp()) * S
    assert ny.next_after(winter) == int(dt.datetime(2024, 1, 10, 22, 0, tzinfo=dt.UTC).timestamp()) * S
    assert ny.last_at_or_before(winter) == int(dt.datetime(2024, 1, 9, 22, 0, tzinfo=dt.UTC).timestamp()) * S
    utc = DailySchedule("00:00", "UTC")
    assert utc.next_after(T0) == int(dt.datetime(2024, 8, 10, tzinfo=dt.UTC).timestamp()) * S
