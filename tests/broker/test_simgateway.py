"""The simulated gateway end to end: the real ib_insync client, real sockets on 127.0.0.1 (an
OS-assigned port), the gateway serving from a thread. Order tests run the market clock paused
and move it by hand, so what fills where is deterministic; streaming tests run it accelerated.
Every test fails if ib_insync could not decode a message."""

from __future__ import annotations

import math

import pytest
from conftest import SHARED_DATA, require
from ib_insync import (
    IB,
    ExecutionFilter,
    Forex,
    Future,
    LimitOrder,
    MarketOrder,
    Stock,
    TickByTickAllLast,
    TickByTickBidAsk,
)

from quayside.core.broker.sim.background import BackgroundGateway
from quayside.core.broker.sim.config import DataConfig, InitialPosition
from quayside.core.broker.sim.contracts import SIM_CON_ID_BASE
from quayside.core.broker.sim.market import ArraySource
from quayside.core.broker.sim.testing import Harness, no_decode_errors, wait_until
from quayside.core.instruments import Instrument, InstrumentRegistry, default_registry
from quayside.core.market.synthetic import generate

CONNECT_TIMEOUT = 20.0
AAPL = Stock("AAPL", "SMART", "USD")
EURUSD = Forex("EURUSD")
ESZ6 = Future("ES", "202612", "CME")


@pytest.fixture(autouse=True)
def decode_errors():
    with no_decode_errors() as watch:
        yield watch


@pytest.fixture
def harness():
    h = Harness(connect_timeout=CONNECT_TIMEOUT)
    yield h
    h.close()


@pytest.fixture
def make_gateway(harness):
    return harness.gateway


@pytest.fixture
def connect(harness):
    return harness.connect


def paused() -> DataConfig:
    return DataConfig(start_paused=True)


def book(gw: BackgroundGateway, symbol: str):
    def read(g):
        b = g.market.books[g.contracts.registry.by_symbol(symbol).id]
        return b.bid, b.ask

    return gw.call(read)


def errors_of(ib: IB) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, text, contract: seen.append((req_id, code))
    return seen


# --------------------------------------------------------------------------- session


def test_connect_sync_and_disconnect(make_gateway, connect):
    gw = make_gateway()
    ib = IB()
    seen = errors_of(ib)
    connect(gw, client_id=7, ib=ib)
    assert ib.isConnected() and ib.client.serverVersion() == 176
    assert ib.managedAccounts() == ["DU0000001"]
    assert {code for _, code in seen} == {2104, 2106, 2158}  # the farm notices IB Gateway greets with
    assert gw.call(lambda g: sorted(g.sessions)) == [7]
    assert ib.reqCurrentTime().year >= 2024
    ib.disconnect()
    wait_until(ib, lambda: not gw.call(lambda g: g.sessions), what="the gateway to see the disconnect")


def test_positions_and_account_values_sync_on_connect(make_gateway, connect):
    gw = make_gateway(
        data=paused(),
        initial_cash=250_000.0,
        positions=[
            InitialPosition(symbol="AAPL", quantity=100, avg_price=140.0),
            InitialPosition(symbol="ESZ6", quantity=-2, avg_price=5800.0),
        ],
    )
    ib = connect(gw)
    positions = {p.contract.localSymbol: p for p in ib.positions()}
    assert positions["AAPL"].position == 100 and positions["AAPL"].avgCost == 140.0
    assert positions["ESZ6"].position == -2 and positions["ESZ6"].avgCost == 5800.0 * 50
    assert positions["ESZ6"].contract.conId == SIM_CON_ID_BASE + 4 and positions["ESZ6"].account == "DU0000001"
    values = {(v.tag, v.currency): v.value for v in ib.accountValues()}
    assert values[("TotalCashValue", "USD")] == "250000.00" and values[("AccountCode", "")] == "DU0000001"
    net = float(values[("NetLiquidation", "USD")])
    bid, ask = book(gw, "AAPL")
    es_bid, es_ask = book(gw, "ESZ6")
    expected = 250_000 + 100 * (bid + ask) / 2 - 2 * 50 * (es_bid + es_ask) / 2
    assert net == pytest.approx(expected, abs=0.01)
    portfolio = {p.contract.localSymbol: p for p in ib.portfolio()}
    assert portfolio["AAPL"].marketPrice == pytest.approx((bid + ask) / 2)
    summary = {v.tag: v.value for v in ib.accountSummary()}
    assert summary["NetLiquidation"] == values[("NetLiquidation", "USD")] and summary["AccountType"] == "INDIVIDUAL"


def test_qualify_contracts_for_a_stock_a_forex_pair_and_a_future(make_gateway, connect, decode_errors):
    gw = make_gateway(data=paused())
    ib = connect(gw)
    stock, fx, fut, by_local = (
        Stock("AAPL", "SMART", "USD"),
        Forex("EURUSD"),
        Future("ES", "202612", "CME"),
        Future(localSymbol="ESZ6", exchange="CME"),
    )
    assert ib.qualifyContracts(stock, fx, fut, by_local) == [stock, fx, fut, by_local]
    assert stock.conId == SIM_CON_ID_BASE + 3 and stock.primaryExchange == "NASDAQ" and stock.exchange == "SMART"
    assert fx.conId == SIM_CON_ID_BASE + 1 and fx.localSymbol == "EUR.USD"
    assert (fut.conId, fut.lastTradeDateOrContractMonth, fut.multiplier, fut.localSymbol) == (
        SIM_CON_ID_BASE + 4,
        "20261218",
        "50",
        "ESZ6",
    )
    assert by_local.conId == fut.conId
    (details,) = ib.reqContractDetails(Forex("USDJPY"))
    assert details.minTick == 0.005 and details.contract.currency == "JPY"
    assert ib.qualifyContracts(Stock("MSFT", "SMART", "USD")) == []  # error 200, as IB answers
    assert any("Error 200" in msg for msg in decode_errors.messages("ib_insync.wrapper"))


def test_ambiguous_futures_are_reported_like_ib_does(make_gateway, connect, decode_errors):
    registry = InstrumentRegistry(
        [
            *default_registry(),
            Instrument(id=5, symbol="ESH7", sec_type="FUT", exchange="CME", multiplier=50, tick_size=0.25),
        ]
    )
    records = generate(seed=3, duration_s=30)
    gw = make_gateway(gateway_options={"source": ArraySource(records), "registry": registry})
    ib = connect(gw)
    assert ib.qualifyContracts(Future("ES", exchange="CME")) == []
    assert any("Ambiguous contract" in msg for msg in decode_errors.messages("ib_insync.ib"))
    assert len(ib.reqContractDetails(Future("ES", exchange="CME"))) == 2


# --------------------------------------------------------------------------- market data


def test_market_data_streams_bid_and_ask(make_gateway, connect):
    gw = make_gateway(data=DataConfig(speed=20.0))
    ib = connect(gw)
    ib.qualifyContracts(EURUSD)
    ticker = ib.reqMktData(EURUSD)
    quotes: set[tuple[float, float]] = set()

    def collect(t):
        if not (math.isnan(t.bid) or math.isnan(t.ask)):
            assert t.bid < t.ask
            quotes.add((t.bid, t.ask))

    ticker.updateEvent += collect
    wait_until(ib, lambda: len(quotes) >= 5, timeout=30, what="five different EURUSD quotes")
    assert ticker.minTick == 0.00005 and ticker.bidSize > 0 and ticker.askSize > 0
    ib.cancelMktData(EURUSD)
    (snapshot,) = ib.reqTickers(AAPL)
    assert snapshot.bid < snapshot.ask and not math.isnan(snapshot.last)


def test_tick_by_tick_bid_ask_and_all_last(make_gateway, connect):
    gw = make_gateway(data=DataConfig(speed=20.0))
    ib = connect(gw)
    ib.qualifyContracts(ESZ6)
    ticker = ib.reqTickByTickData(ESZ6, "BidAsk")
    seen = []
    ticker.updateEvent += lambda t: seen.extend(x for x in t.tickByTicks if isinstance(x, TickByTickBidAsk))
    wait_until(ib, lambda: len(seen) >= 10, timeout=30, what="ten tick-by-tick quotes")
    assert all(t.bidPrice < t.askPrice and t.bidSize > 0 for t in seen)
    ib.cancelTickByTickData(ESZ6, "BidAsk")
    trades = ib.reqTickByTickData(ESZ6, "AllLast")
    last = []
    trades.updateEvent += lambda t: last.extend(x for x in t.tickByTicks if isinstance(x, TickByTickAllLast))
    wait_until(ib, lambda: len(last) >= 3, timeout=30, what="three tick-by-tick trades")
    assert all(t.price > 0 and t.size > 0 and t.exchange == "CME" for t in last)


# --------------------------------------------------------------------------- orders


def test_marketable_limit_fills_with_execution_commission_and_position(make_gateway, connect):
    gw = make_gateway(data=paused())
    ib = connect(gw)
    ib.qualifyContracts(AAPL)
    bid, ask = book(gw, "AAPL")
    trade = ib.placeOrder(AAPL, LimitOrder("BUY", 100, round(ask + 0.05, 2), orderRef="s1"))
    wait_until(ib, lambda: trade.isDone() and trade.fills and trade.fills[0].commissionReport.execId)
    assert trade.orderStatus.status == "Filled" and trade.orderStatus.avgFillPrice == ask
    (fill,) = ib.fills()
    assert (fill.execution.side, fill.execution.shares, fill.execution.price) == ("BOT", 100.0, ask)
    assert fill.execution.orderRef == "s1" and fill.contract.conId == AAPL.conId
    assert fill.commissionReport.commission == 1.0 and fill.commissionReport.currency == "USD"
    wait_until(ib, lambda: ib.positions(), what="the position update")
    (pos,) = ib.positions()
    assert pos.position == 100 and pos.avgCost == pytest.approx(ask + 0.01)
    wait_until(ib, lambda: any(p.contract.conId == AAPL.conId for p in ib.portfolio()))
    # and out again: the closing fill reports its realized P&L
    close = ib.placeOrder(AAPL, LimitOrder("SELL", 100, round(bid - 0.05, 2)))
    wait_until(ib, lambda: close.isDone() and close.fills and close.fills[0].commissionReport.execId)
    assert close.fills[0].commissionReport.realizedPNL == pytest.approx(100 * (bid - ask) - 2.0)
    wait_until(ib, lambda: not ib.positions(), what="the position to close")


def test_passive_limit_works_until_the_data_trades_through_it(make_gateway, connect):
    gw = make_gateway(data=paused())
    ib = connect(gw)
    ib.qualifyContracts(ESZ6)
    bid, _ = book(gw, "ESZ6")
    price = bid - 2 * 0.25
    trade = ib.placeOrder(ESZ6, LimitOrder("BUY", 1, price))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    assert trade in ib.openTrades()
    for _ in range(240):
        gw.command("step 5")
        ib.sleep(0.01)
        if trade.isDone():
            break
    wait_until(ib, lambda: trade.isDone() and trade.fills, what="the passive order to fill")
    (fill,) = trade.fills
    assert fill.execution.price == price and fill.execution.lastLiquidity == 1  # added liquidity
    assert gw.call(lambda g: g.broker.executions[-1].exec_id) == fill.execution.execId


def test_market_order_fills_at_the_touch(make_gateway, connect):
    gw = make_gateway(data=paused())
    ib = connect(gw)
    ib.qualifyContracts(EURUSD)
    bid, _ = book(gw, "EURUSD")
    trade = ib.placeOrder(EURUSD, MarketOrder("SELL", 20_000))
    wait_until(ib, lambda: trade.isDone() and trade.fills)
    assert trade.fills[0].execution.price == bid and trade.orderStatus.filled == 20_000
    wait_until(ib, lambda: ib.positions() and ib.positions()[0].position == -20_000)


def test_cancel_a_working_order(make_gateway, connect):
    gw = make_gateway(data=paused())
    ib = connect(gw)
    seen = errors_of(ib)
    ib.qualifyContracts(EURUSD)
    bid, _ = book(gw, "EURUSD")
    trade = ib.placeOrder(EURUSD, LimitOrder("BUY", 10_000, round(bid - 0.001, 5)))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted")
    ib.cancelOrder(trade.order)
    wait_until(ib, lambda: trade.orderStatus.status == "Cancelled")
    wait_until(ib, lambda: (trade.order.orderId, 202) in seen, what="error 202")
    assert not ib.openTrades() and not ib.fills()
    assert ib.reqOpenOrders() == []


def test_orders_and_fills_survive_a_reconnect(make_gateway, connect):
    gw = make_gateway(data=paused())
    ib = connect(gw, client_id=3)
    ib.qualifyContracts(EURUSD, AAPL)
    bid, _ = book(gw, "EURUSD")
    working = ib.placeOrder(EURUSD, LimitOrder("BUY", 10_000, round(bid - 0.001, 5)))
    done = ib.placeOrder(AAPL, MarketOrder("BUY", 10))
    wait_until(ib, lambda: working.orderStatus.status == "Submitted" and done.isDone() and done.fills)
    exec_id = done.fills[0].execution.execId
    ib.disconnect()
    connect(gw, client_id=3, ib=ib)
    (open_trade,) = ib.openTrades()
    assert open_trade.order.orderId == working.order.orderId and open_trade.order.permId == working.order.permId
    assert [f.execution.execId for f in ib.fills()] == [exec_id]
    assert ib.fills()[0].commissionReport.commission == 1.0
    completed = [t for t in ib.trades() if t.orderStatus.status == "Filled"]
    assert [t.order.permId for t in completed] == [done.order.permId]
    assert ib.client.getReqId() > working.order.orderId  # nextValidId is past the ids used
    ib.cancelOrder(open_trade.order)
    wait_until(ib, lambda: open_trade.orderStatus.status == "Cancelled")
    fills = ib.reqExecutions(ExecutionFilter(side="BUY", symbol="AAPL"))
    assert [f.execution.execId for f in fills] == [exec_id]


def test_what_if_order(make_gateway, connect):
    gw = make_gateway(data=paused())
    ib = connect(gw)
    ib.qualifyContracts(ESZ6)
    bid, _ = book(gw, "ESZ6")
    state = ib.whatIfOrder(ESZ6, LimitOrder("BUY", 2, bid))
    assert state.commission == pytest.approx(1.7) and float(state.initMarginChange) > 0
    assert not ib.openTrades() and gw.call(lambda g: g.broker.orders) == {}


def test_unsupported_requests_answer_at_once(make_gateway, connect):
    gw = make_gateway(data=paused())
    ib = connect(gw)
    ib.qualifyContracts(AAPL)
    bars = ib.reqHistoricalData(AAPL, "", "1 D", "1 min", "TRADES", True, timeout=10)
    assert list(bars) == []


def test_replays_a_real_quote_file(make_gateway, connect):
    path = SHARED_DATA / "eurusd-quotes-2020-01-01.csv"
    require(path.exists(), f"{path} is not there")
    gw = make_gateway(data=DataConfig(path=str(path), start_paused=True))
    ib = connect(gw)
    fx = Forex("EURUSD")
    assert ib.qualifyContracts(fx) == [fx]
    assert ib.reqCurrentTime().year == 2020  # the gateway's clock is the data's
    ticker = ib.reqMktData(fx)
    gw.command("step 60")
    wait_until(ib, lambda: not math.isnan(ticker.ask), what="a quote from the file")
    _, ask = book(gw, "EURUSD")
    trade = ib.placeOrder(fx, LimitOrder("BUY", 100_000, round(ask + 0.0001, 5)))
    wait_until(ib, lambda: trade.isDone() and trade.fills)
    assert trade.fills[0].execution.price == ask
    assert trade.fills[0].execution.time.year == 2020


def test_the_master_client_hears_of_every_order(make_gateway, connect):
    gw = make_gateway(data=paused(), master_client_id=0)
    master = connect(gw, client_id=0)
    trader = connect(gw, client_id=3)
    trader.qualifyContracts(AAPL)
    trade = trader.placeOrder(AAPL, MarketOrder("BUY", 10))
    wait_until(trader, lambda: trade.isDone() and trade.fills)
    exec_id = trade.fills[0].execution.execId
    wait_until(master, lambda: [f.execution.execId for f in master.fills()] == [exec_id], what="the master's copy")
    assert [t.order.clientId for t in master.trades()] == [3]
    assert [f.execution.execId for f in master.reqExecutions()] == [exec_id]
    working = trader.placeOrder(AAPL, LimitOrder("BUY", 10, 1.0))
    wait_until(trader, lambda: working.orderStatus.status == "Submitted")
    assert [t.order.permId for t in master.reqAllOpenOrders()] == [working.order.permId]
    assert master.reqOpenOrders() == []  # its own: none
    assert trader.reqExecutions() and not connect(gw, client_id=4).reqExecutions()  # a client sees its own
