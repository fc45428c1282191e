"""The risk monitor's arithmetic, fed records directly: the engine's limit table, utilisation of
every limit, exposure, equity with its high-water mark, drawdown and daily loss, rules that
respond once per breach, and the watchdogs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from quayside.core.instruments import default_registry
from quayside.core.risk.config import RiskConfig, apply_risk
from quayside.core.wire import LimitId, LogCode, OrderStatus, OrderType, Side
from quayside.support.pnl import records as R
from quayside.support.risk.limits import N_LIMITS, EngineRiskLimits, LimitTable, load_engine_limits
from quayside.support.risk.monitor import RiskMonitor
from quayside.support.risk.rules import Rule

S = 1_000_000_000
MS = 1_000_000
T0 = 1_723_212_000 * S
EURUSD, USDJPY, AAPL, ES = 1, 2, 3, 4

ENGINE_TOML = """
heartbeat_ms = 500
[strategy]
name = "crossover"
instruments = ["AAPL", "ESZ6"]
[risk]
max_messages_per_window = 10
message_window_ms = 500
fill_latch_count = 4
[risk.defaults]
max_order_qty = 50
max_long_position = 100
[risk.instruments.ESZ6]
max_order_qty = 5
max_short_position = 3
stale_quote_ms = 2000
"""


def monitor(rules=(), limits: EngineRiskLimits | None = None, **kw) -> RiskMonitor:
    reg = default_registry()
    return RiskMonitor(reg, LimitTable(limits or EngineRiskLimits(), reg), list(rules), **kw)


def util(m: RiskMonitor, limit: str, symbol: str) -> dict:
    return next(r for r in m.utilisation() if r["limit"] == limit and r["instrument"] == symbol)


def test_limit_table_is_the_engines(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text(ENGINE_TOML)
    ours = LimitTable(load_engine_limits(path), default_registry())
    import tomllib

    core = RiskConfig.model_validate(tomllib.loads(ENGINE_TOML)["risk"])
    size = len(ours.table)
    a = SimpleNamespace(
        limits=np.full((size, N_LIMITS), np.nan),
        static=np.zeros(size, dtype=[("allowed", "u1")]),
        engine=np.zeros(1, dtype=[("collar_ref_last", "i8"), ("trading_state", "i8")]),
    )
    apply_risk(a, core, default_registry(), ["AAPL", "ESZ6"])
    np.testing.assert_array_equal(ours.table, a.limits)
    assert ours.value(ES, LimitId.MAX_ORDER_QTY) == 5 and ours.value(AAPL, LimitId.MAX_ORDER_QTY) == 50
    assert ours.value(ES, LimitId.STALE_QUOTE_NS) == 2000 * MS
    # the schemas are the same: fields, defaults
    assert EngineRiskLimits.model_fields.keys() == RiskConfig.model_fields.keys()
    assert EngineRiskLimits().model_dump() == RiskConfig().model_dump()


def test_engine_config_errors_name_the_file(tmp_path):
    path = tmp_path / "engine.toml"
    path.write_text("[risk]\nmax_mesages_per_window = 3\n")
    with pytest.raises(ValueError, match=r"engine.toml \[risk\].*max_mesages_per_window"):
        load_engine_limits(path)


def test_limit_changes_on_the_feed_are_followed():
    m = monitor()
    assert m.limits.value(AAPL, LimitId.MAX_ORDER_QTY) == 100
    m.handle(R.log(LogCode.LIMIT_CHANGED, T0, iid=AAPL, i0=LimitId.MAX_ORDER_QTY, i1=7, a0=math.nan, a1=20.0))
    m.handle(R.log(LogCode.LIMIT_CHANGED, T0, iid=0, i0=LimitId.MAX_MESSAGES_PER_WINDOW, a0=45, a1=3.0))
    assert m.limits.value(AAPL, LimitId.MAX_ORDER_QTY) == 20 and m.limits.value(ES, LimitId.MAX_ORDER_QTY) == 100
    m.handle(R.order(AAPL, Side.BUY, 10, 100.0, T0 + 1, order_id=1))
    assert util(m, "MAX_ORDER_QTY", "AAPL")["utilisation"] == 0.5
    assert util(m, "MAX_MESSAGES_PER_WINDOW", "all")["utilisation"] == pytest.approx(1 / 3)


def test_utilisation_of_every_engine_limit():
    m = monitor()
    m.handle(R.quotes([AAPL, ES, USDJPY], [99.5, 5000.0, 150.0], [100.5, 5000.5, 150.0], [T0] * 3))
    m.handle(R.order(AAPL, Side.BUY, 40, 102.0, T0 + MS, order_id=1))  # 2% from the mid of 100
    m.handle(R.order(ES, Side.SELL, 2, math.nan, T0 + 2 * MS, order_id=2, order_type=OrderType.MARKET))
    assert util(m, "MAX_ORDER_QTY", "AAPL")["utilisation"] == pytest.approx(40 / 100)
    assert util(m, "MAX_ORDER_NOTIONAL", "AAPL")["used"] == pytest.approx(40 * 102.0)
    assert util(m, "MAX_ORDER_NOTIONAL", "ESZ6")["used"] == pytest.approx(2 * 5000.0 * 50)  # a market sell: bid
    assert util(m, "PRICE_COLLAR_PCT", "AAPL")["utilisation"] == pytest.approx(2.0 / 5.0)
    assert util(m, "PRICE_COLLAR_TICKS", "AAPL")["used"] == pytest.approx(200.0)  # 2.00 / 0.01
    assert util(m, "PRICE_COLLAR_TICKS", "AAPL")["utilisation"] == 0.0  # inf: no limit
    # positions count working orders, as the engine's check does
    assert util(m, "MAX_LONG_POSITION", "AAPL")["used"] == 40.0
    m.handle(R.fill(AAPL, 30, 102.0, T0 + 3 * MS, fill_id=1, order_id=1, commission=1.0))
    assert util(m, "MAX_LONG_POSITION", "AAPL")["used"] == 40.0  # 30 held + 10 working
    m.handle(R.order_status(AAPL, OrderStatus.CANCELLED, T0 + 4 * MS, order_id=1))
    assert util(m, "MAX_LONG_POSITION", "AAPL")["utilisation"] == pytest.approx(30 / 500)
    assert util(m, "MAX_SHORT_POSITION", "ESZ6")["used"] == 2.0  # the working market sell
    # message rate: 2 orders + 1 cancel in the 1 s window, of 45
    m.handle(R.cancel(ES, T0 + 5 * MS, order_id=2))
    assert util(m, "MAX_MESSAGES_PER_WINDOW", "all")["used"] == 3
    m.handle(R.heartbeat(T0 + 2 * S))  # the window has passed
    assert util(m, "MAX_MESSAGES_PER_WINDOW", "all")["used"] == 0
    # fill latch: fills in the window, and the engine's own verdict
    assert util(m, "FILL_LATCH_COUNT", "all")["used"] == 0
    m.handle(R.log(LogCode.FILL_LATCH_ENGAGED, T0 + 2 * S, i0=100))
    assert util(m, "FILL_LATCH_COUNT", "all")["utilisation"] == 1.0
    m.handle(R.log(LogCode.CONTROL_APPLIED, T0 + 2 * S, i0=2, i1=99))  # RESUME
    assert util(m, "FILL_LATCH_COUNT", "all")["utilisation"] == 0.0
    # stale quotes: quote age (feed time) against the 5 s limit
    assert util(m, "STALE_QUOTE_NS", "AAPL")["utilisation"] == pytest.approx(2 / 5)
    assert util(m, "STALE_QUOTE_NS", "EURUSD")["used"] is None  # never quoted
    windows = {r["limit"]: r for r in m.utilisation() if r["instrument"] == "all"}
    assert windows["MESSAGE_WINDOW_NS"]["value"] == 1000 * MS and windows["MESSAGE_WINDOW_NS"]["utilisation"] is None
    every = {r["limit"] for r in m.utilisation()}
    assert every == set(LimitId._fields)


def test_collar_against_the_last_trade_and_the_market_as_of_the_order():
    m = monitor(limits=EngineRiskLimits(collar_reference="last"))
    batch = np.concatenate(
        [
            R.quote(AAPL, 99.0, 101.0, T0),
            R.trade(AAPL, 98.0, 1.0, T0 + 1),
            R.order(AAPL, Side.BUY, 1, 100.94, T0 + 2, order_id=1),  # 3% above the last trade
            R.quote(AAPL, 199.0, 201.0, T0 + 3),  # after the order, in the same batch: not seen by it
            R.order(ES, Side.BUY, 1, math.nan, T0 + 4, order_id=2, order_type=OrderType.MARKET),  # no ES quote
        ]
    )
    m.handle(batch)
    assert util(m, "PRICE_COLLAR_PCT", "AAPL")["used"] == pytest.approx(3.0)
    assert util(m, "MAX_ORDER_NOTIONAL", "AAPL")["used"] == pytest.approx(100.94)
    assert util(m, "MAX_ORDER_NOTIONAL", "ESZ6")["used"] is None  # nothing to value it at
    assert m.last_trade[AAPL] == 98.0


def test_monitor_state_does_not_depend_on_batching():
    feed = R.synthetic_feed(6000, fill_every=100, t0=T0)  # 1 µs apart: 6 ms
    reports = []
    for size in (6000, 1, 977):
        m = monitor([Rule(name="dd", metric="drawdown", threshold=0.5, rearm_below=0.1)], sample_ms=1)
        for lo in range(0, len(feed), size):
            m.handle(feed[lo : lo + size])
        r = m.report()
        r["actions"] = [(a.id, a.value) for a in m.actions]
        reports.append(repr(r))
    assert reports[0] == reports[1] == reports[2]
    assert m.samples == 5 and m.actions  # something to compare: samples, and a breach


def test_exposure_gross_and_net_in_the_account_currency():
    m = monitor()
    m.handle(R.quotes([ES, USDJPY, AAPL], [4999.0, 149.99, 10.0], [5001.0, 150.01, 10.0], [T0] * 3))
    m.handle(R.fill(ES, 2, 5000.0, T0, fill_id=1, commission=0.0))
    m.handle(R.fill(USDJPY, -1000, 150.0, T0, fill_id=2, commission=0.0))  # short 1000 USD, priced in JPY
    per, total = m.exposures()
    assert per[ES]["net"] == pytest.approx(2 * 5000.0 * 50)
    assert per[USDJPY]["net"] == pytest.approx(-1000 * 150.0 / 150.0)
    assert total["net"] == pytest.approx(500_000 - 1000) and total["gross"] == pytest.approx(501_000)
    m.handle(R.fill(AAPL, 5, 10.0, T0, fill_id=3, commission=0.0))
    m.handle(R.quote(AAPL, math.nan, math.nan, T0 + 1))
    assert m.exposures()[1]["gross"] is None  # one instrument without a price: the total is unknown


def test_equity_high_water_mark_drawdown_and_daily_loss():
    m = monitor(sample_ms=100)
    m.handle(R.quote(AAPL, 100.0, 100.0, T0))
    m.handle(R.fill(AAPL, 10, 100.0, T0, fill_id=1, commission=1.0))
    m.handle(R.quote(AAPL, 110.0, 110.0, T0 + 150 * MS))  # sampled at T0 + 200 ms: +100 - 1
    m.handle(R.quote(AAPL, 104.0, 104.0, T0 + 250 * MS))
    m.handle(R.heartbeat(T0 + 300 * MS))  # the sample at 300 ms sees 104
    assert m.hwm == pytest.approx(99.0)
    assert m.equity == pytest.approx(39.0) and m.drawdown == pytest.approx(60.0)
    m.handle(R.quote(AAPL, 95.0, 95.0, T0 + 350 * MS))
    m.handle(R.heartbeat(T0 + 400 * MS))
    assert m.daily == pytest.approx(-51.0)  # the day began before the first record
    assert m.report()["equity"]["daily_loss"] == pytest.approx(51.0)


def test_rule_responds_once_per_breach_and_rearms():
    rule = Rule(name="dd", metric="drawdown", threshold=50.0, rearm_below=20.0, response="halt")
    m = monitor([rule], sample_ms=100)
    m.go_live()
    m.handle(R.fill(AAPL, 10, 100.0, T0, fill_id=1, commission=0.0))
    marks = [100, 110, 104, 103, 102, 108, 109, 100, 101]  # drawdown from 100: 0 0 60 70 80 20 10 100 90
    for k, px in enumerate(marks):
        m.handle(R.quote(AAPL, px, px, T0 + (100 * k + 50) * MS))
    m.handle(R.heartbeat(T0 + 2 * S))
    halts = [a for a in m.actions if a.rule == "dd"]
    assert len(halts) == 2  # 60 opens a breach; 20 is not below 20, 10 re-arms it; 100 opens the next
    assert [a.value for a in halts] == pytest.approx([60.0, 100.0])
    assert all(a.command == "HALT" and a.state == "pending" and a.instrument_id == 0 for a in halts)
    assert len({a.id for a in halts}) == 2 and len(m.outbox) == 2


def test_responses_found_before_going_live_are_not_pending():
    m = monitor([Rule(name="dd", metric="drawdown", threshold=5.0, response="halt")])
    m.handle(R.fill(AAPL, 10, 100.0, T0, fill_id=1, commission=0.0))
    m.handle(R.quote(AAPL, 90.0, 90.0, T0 + 1))
    m.handle(R.heartbeat(T0 + S))
    assert [a.state for a in m.actions] == ["replayed"]


def test_heartbeat_and_quote_watchdogs_use_the_wall_clock():
    now = [T0]
    rules = [
        Rule(name="hb", metric="heartbeat_age", threshold=2.0, response="halt"),
        Rule(name="quotes", metric="quote_age", threshold=5.0, instruments=["AAPL", "ESZ6"]),
    ]
    m = monitor(rules, wall_clock=lambda: now[0])
    m.go_live()
    m.handle(R.heartbeat(T0))
    m.handle(R.quote(AAPL, 1.0, 1.1, T0))
    now[0] = T0 + S
    assert m.check_watchdogs() == []
    now[0] = T0 + 3 * S
    fired = m.check_watchdogs()
    assert [(a.rule, a.key, a.command) for a in fired] == [("hb", "engine", "HALT")]
    assert m.check_watchdogs() == []  # once per outage
    m.handle(R.heartbeat(T0 + 3 * S))  # back
    now[0] = T0 + 3 * S + S // 2
    assert m.check_watchdogs() == []  # and the heartbeat rule re-arms
    now[0] = T0 + 6 * S
    fired = m.check_watchdogs()  # AAPL quoted at T0: 6 s; ESZ6 never, watched since going live
    assert sorted((a.rule, a.key) for a in fired) == [("hb", "engine"), ("quotes", "AAPL"), ("quotes", "ESZ6")]


def test_malformed_records_are_counted_not_fatal():
    m = monitor()
    m.handle(R.order(999, Side.BUY, 1, 1.0, T0, order_id=1))
    m.handle(R.order(AAPL, Side.BUY, math.nan, 1.0, T0, order_id=2))
    m.handle(R.fill(AAPL, 1, math.inf, T0, fill_id=3))
    assert m.skipped == {"unknown_instrument": 1, "bad_order": 1, "bad_fill": 1}
    m.handle(R.fill(AAPL, 1, 1.0, T0, fill_id=4, commission=0.0))
    assert m.ledger.net_quantity(AAPL) == 1.0
