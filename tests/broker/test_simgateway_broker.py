"""The simulated gateway's broker, called directly: matching with the backtest venue's rules,
commissions, IB-style position accounting, ids, and what it tells the server."""

from __future__ import annotations

import math
import re

import pytest

from quayside.core.broker.sim.broker import SimBroker
from quayside.core.broker.sim.config import CommissionRate, InitialPosition, SimGatewayConfig
from quayside.core.broker.sim.contracts import ContractBook, RequestContract
from quayside.core.broker.sim.market import Book
from quayside.core.broker.sim.requests import ExecutionFilter, OrderRequest
from quayside.core.instruments import default_registry

EURUSD, USDJPY, AAPL, ES = 1, 2, 3, 4


class Events:
    """The broker's listener: every event, in order."""

    def __init__(self):
        self.log: list[tuple] = []

    def order_accepted(self, o):
        self.log.append(("accepted", o.order_id, o.status))

    def order_status(self, o):
        self.log.append(("status", o.order_id, o.status, o.filled))

    def order_error(self, client_id, order_id, code, text, status):
        self.log.append(("error", order_id, code, status.status if status else None))

    def execution(self, e, o):
        self.log.append(("exec", o.order_id, e.side, e.shares, e.price))

    def position_changed(self, iid):
        self.log.append(("position", iid))

    def what_if(self, o, state):
        self.log.append(("what_if", o.order_id, state["commission"]))

    def of(self, kind):
        return [e for e in self.log if e[0] == kind]


def make(**config) -> tuple[SimBroker, dict[int, Book], Events]:
    book = ContractBook(default_registry())
    books = {i.id: Book() for i in book}
    books[EURUSD].bid, books[EURUSD].ask, books[EURUSD].bid_size, books[EURUSD].ask_size = 1.085, 1.08505, 1e6, 2e6
    books[USDJPY].bid, books[USDJPY].ask = 150.0, 150.005
    books[AAPL].bid, books[AAPL].ask, books[AAPL].bid_size, books[AAPL].ask_size = 150.0, 150.02, 300.0, 200.0
    books[ES].bid, books[ES].ask = 5900.0, 5900.25
    events = Events()
    broker = SimBroker(SimGatewayConfig(**config), book, books, lambda: 1_791_207_000_000_000_000, events, run_id=0xABC)
    return broker, books, events


_next_id = iter(range(1, 10_000))


def order(broker, iid, action, qty, price=None, order_type=None, tif="DAY", order_id=None, client_id=1, **kw):
    info = broker.contracts.by_id(iid)
    req = OrderRequest(
        order_id=order_id or next(_next_id),
        contract=RequestContract(con_id=info.con_id),
        action=action,
        quantity=qty,
        order_type=order_type or ("MKT" if price is None else "LMT"),
        lmt_price=price,
        aux_price=None,
        tif=tif,
        oca_group="",
        account=kw.pop("account", ""),
        order_ref="t",
        transmit=True,
        parent_id=0,
        outside_rth=False,
        good_till_date="",
        what_if=kw.pop("what_if", False),
    )
    broker.place(client_id, req, info, kw.pop("reject", None))
    return broker.orders.get((client_id, req.order_id)), req.order_id


def test_a_marketable_limit_fills_at_the_touch_with_ib_style_costs():
    broker, _, events = make()
    o, _ = order(broker, AAPL, "BUY", 100, 150.10)
    assert o.status == "Filled" and o.avg_fill_price == 150.02
    (e,) = broker.executions
    assert (e.side, e.shares, e.price, e.liquidity, e.commission) == ("BOT", 100, 150.02, 2, 1.0)  # $0.005/sh, min $1
    assert re.fullmatch(r"00000abc\.00000001\.01\.01", e.exec_id)
    pos = broker.positions[AAPL]
    assert pos.quantity == 100 and pos.avg_cost() == pytest.approx(150.03)  # commission in the average cost
    assert broker.account.cash == pytest.approx(1_000_000 - 15_002 - 1.0)
    kinds = [x[0] for x in events.log]
    assert kinds == ["accepted", "exec", "status", "position"] and events.of("status")[-1][2] == "Filled"


def test_a_passive_limit_rests_until_the_market_trades_through_it():
    broker, books, _ = make()
    o, _ = order(broker, ES, "BUY", 2, 5899.75)
    assert o.status == "Submitted" and not broker.executions
    broker.on_trade(ES, 5899.75)  # at the price, not through it
    assert o.status == "Submitted"
    books[ES].bid, books[ES].ask = 5899.5, 5899.75  # the ask reaches the limit: still not through
    broker.on_quote(ES, books[ES])
    assert o.status == "Submitted"
    broker.on_trade(ES, 5899.5)
    assert o.status == "Filled" and broker.executions[-1].price == 5899.75 and broker.executions[-1].liquidity == 1
    pos = broker.positions[ES]
    assert pos.avg_cost() == pytest.approx(5899.75 * 50 + 0.85)  # per contract, multiplier and commission in


def test_quote_cross_fills_only_when_enabled():
    for enabled in (True, False):
        broker, books, _ = make(fill_on_quote_cross=enabled)
        o, _ = order(broker, EURUSD, "SELL", 100_000, 1.0851)
        books[EURUSD].bid, books[EURUSD].ask = 1.08515, 1.0852
        broker.on_quote(EURUSD, books[EURUSD])
        assert (o.status == "Filled") is enabled


def test_closing_fills_realize_pnl_net_of_commission():
    broker, books, _ = make(commission={"default": CommissionRate(per_unit=0.01)})
    order(broker, AAPL, "SELL", 100, 150.0)  # short 100 at the bid 150.00, commission 1.00
    books[AAPL].bid, books[AAPL].ask = 149.0, 149.02
    order(broker, AAPL, "BUY", 150, 149.02)  # cover 100, go long 50, commission 1.50
    first, second = broker.executions
    assert first.realized_pnl > 1e300  # opening fill: no realized P&L (IB's "unset")
    # short proceeds 15000 - 1.00 commission; cover 100 at 149.02 with 1.00 of the 1.50 commission
    assert second.realized_pnl == pytest.approx(15_000 - 1.0 - 14_902 - 1.0)
    pos = broker.positions[AAPL]
    assert pos.quantity == 50 and pos.avg_cost() == pytest.approx(149.02 + 0.01)
    summary = broker.account.summary()
    assert summary["RealizedPnL"] == pytest.approx(96.0)
    assert summary["NetLiquidation"] == pytest.approx(1_000_000 - 2.5 + (15_000 - 150 * 149.02) + 50 * 149.01)


def test_ioc_market_and_size_limited_orders():
    broker, _, _ = make(limit_to_displayed_size=True)
    o, _ = order(broker, EURUSD, "BUY", 100_000, 1.085, tif="IOC")  # not marketable: cancelled at once
    assert o.status == "Cancelled" and not broker.executions
    o, _ = order(broker, AAPL, "BUY", 500)  # market order for more than the 200 shown at the ask
    assert o.status == "Cancelled" and o.filled == 200 and broker.executions[-1].price == 150.02
    o, _ = order(broker, AAPL, "SELL", 500, 149.0)  # limit: 300 at the bid, the rest rests
    assert o.status == "Submitted" and o.filled == 300 and o.remaining == 200


def test_rejections_say_why():
    broker, books, events = make()
    books[AAPL].bid = books[AAPL].ask = math.nan
    for args, code in [
        ((AAPL, "BUY", 10), 201),  # market order, no market
        ((EURUSD, "BUY", 0, 1.085), 201),  # quantity
        ((EURUSD, "BUY", 1000, 1.08501), 110),  # off the tick grid
        ((EURUSD, "BUY", 1000, 1.085, "STP"), 201),  # order type
    ]:
        o, oid = order(broker, *args)
        assert o.status == "Cancelled" and o.completed_status.startswith("Rejected")
        assert events.log[-1][:3] == ("error", oid, code)
    assert events.log[-1][3] is None
    assert events.of("error")[2][3] == "Cancelled"  # 110 comes with the status: ib_insync reads it as a warning
    o, oid = order(broker, EURUSD, "BUY", 1000, 1.085, account="U999")
    assert events.log[-1][:3] == ("error", oid, 201)
    o, oid = order(broker, EURUSD, "BUY", 1000, 1.085, reject=(201, "Order rejected - reason:test"))
    assert events.log[-1][:3] == ("error", oid, 201) and broker.counters.rejects == 6


def test_cancel_modify_and_duplicate_ids():
    broker, _, events = make()
    o, oid = order(broker, EURUSD, "BUY", 100_000, 1.0845)
    order(broker, EURUSD, "BUY", 100_000, 1.0846, order_id=oid)  # a modification, still passive
    assert o.lmt_price == 1.0846 and o.status == "Submitted"
    order(broker, EURUSD, "BUY", 100_000, 1.0851, order_id=oid)  # modified through the ask: fills
    assert o.status == "Filled" and broker.executions[-1].price == 1.08505
    order(broker, EURUSD, "BUY", 100_000, 1.0851, order_id=oid)
    assert events.log[-1][:3] == ("error", oid, 103)
    broker.cancel(1, oid)
    assert events.log[-1][:3] == ("error", oid, 161)
    broker.cancel(1, 9999)
    assert events.log[-1][:3] == ("error", 9999, 10147)
    o, oid = order(broker, EURUSD, "SELL", 50_000, 1.0860)
    broker.cancel(1, oid)
    assert o.status == "Cancelled" and events.log[-2][:3] == ("status", oid, "Cancelled")
    assert events.log[-1][:3] == ("error", oid, 202)
    assert broker.next_valid_id(1) == oid + 1 and broker.next_valid_id(2) == 1


def test_commissions_convert_to_the_account_currency():
    broker, _, _ = make()
    assert broker.account.fx_rate("JPY") == pytest.approx(1 / 150.0025)
    order(broker, USDJPY, "BUY", 1_000_000, 150.01)  # 0.2 bps of 1,000,000 USD
    assert broker.executions[-1].commission == pytest.approx(20.0 * 150.005 / 150.0025)
    order(broker, EURUSD, "BUY", 1_000, 1.0851)  # tiny: the $2 minimum
    assert broker.executions[-1].commission == 2.0


def test_what_if_orders_are_answered_not_placed():
    broker, _, events = make()
    _, oid = order(broker, ES, "BUY", 2, 5900.25, what_if=True)
    assert events.log == [("what_if", oid, pytest.approx(1.7))] and not broker.orders


def test_initial_positions_and_execution_filters():
    broker, _, _ = make(positions=[InitialPosition(symbol="AAPL", quantity=100, avg_price=140.0)])
    assert broker.positions[AAPL].avg_cost() == 140.0
    order(broker, AAPL, "SELL", 40, 149.0)
    order(broker, ES, "BUY", 1, 5901.0, client_id=2)
    everything = broker.find_executions(ExecutionFilter(0, 0, "", "", "", "", "", ""))
    assert [e.instrument_id for e in everything] == [AAPL, ES]
    only = broker.find_executions(ExecutionFilter(0, 0, "", "", "", "", "", "BUY"))
    assert [e.instrument_id for e in only] == [ES]
    assert [e.instrument_id for e in broker.find_executions(ExecutionFilter(0, 2, "", "", "", "", "", ""))] == [ES]
    assert broker.find_executions(ExecutionFilter(0, 0, "", "", "ES", "FUT", "", ""))[0].client_id == 2
    assert broker.find_executions(ExecutionFilter(0, 0, "", "20261005 13:30:01", "", "", "", "")) == []
    assert len(broker.find_executions(ExecutionFilter(0, 0, "", "20261005-13:29:59", "", "", "", ""))) == 2
    assert broker.positions[AAPL].realized == pytest.approx(40 * (150.0 - 140.0) - 1.0)
    perm_ids = [e.perm_id for e in broker.executions]
    assert perm_ids == sorted(perm_ids) and len(set(perm_ids)) == 2
