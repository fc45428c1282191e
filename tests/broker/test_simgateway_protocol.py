"""The simulated gateway's wire format against ib_insync itself, with no socket: every message
it sends goes through ib_insync's own Decoder (at server version 176) and must arrive whole;
every request ib_insync's own Client writes must decode to what was asked for."""

from __future__ import annotations

import math

import pytest
from ib_insync import Forex, Future, LimitOrder, MarketOrder, Order, Stock, TagValue
from ib_insync.client import Client
from ib_insync.decoder import Decoder

from quayside.core.broker.sim import messages as m
from quayside.core.broker.sim.broker import SimExecution, SimOrder
from quayside.core.broker.sim.contracts import SIM_CON_ID_BASE, ContractBook, RequestContract
from quayside.core.broker.sim.protocol import (
    SERVER_VERSION,
    UNSET_DOUBLE,
    FrameDecoder,
    ProtocolError,
    encode,
    fmt,
    parse_version_range,
)
from quayside.core.broker.sim.requests import (
    parse_exec_filter,
    parse_mkt_data,
    parse_place_order,
    parse_tick_by_tick,
)
from quayside.core.broker.sim.testing import IbEventLoop, no_decode_errors
from quayside.core.instruments import Instrument, InstrumentRegistry, default_registry


@pytest.fixture(autouse=True)
def decode_errors():
    with no_decode_errors() as watch:
        yield watch


class Recorder:
    """Stands in for ib_insync's Wrapper: records every call the Decoder makes."""

    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


def decode(*messages) -> list[tuple[str, tuple]]:
    """Frame, split and hand ``messages`` to ib_insync's Decoder; the wrapper calls made."""
    wrapper = Recorder()
    decoder = Decoder(wrapper, SERVER_VERSION)
    frames = FrameDecoder().feed(b"".join(encode(msg) for msg in messages))
    assert len(frames) == len(messages)
    for fields in frames:
        decoder.interpret(fields)
    return wrapper.calls


@pytest.fixture(scope="module")
def book() -> ContractBook:
    return ContractBook(default_registry())


def _order(info, **kw) -> SimOrder:
    base = dict(
        order_id=7,
        client_id=3,
        perm_id=1_000_000_005,
        info=info,
        action="BUY",
        quantity=100.0,
        order_type="LMT",
        lmt_price=1.08505,
        tif="DAY",
        account="DU0000001",
        order_ref="s1",
        status="Submitted",
    )
    return SimOrder(**{**base, **kw})


# --------------------------------------------------------------------------- framing and fields


def test_fields_are_written_as_ib_reads_them():
    assert fmt(None) == "" and fmt(True) == "1" and fmt(False) == "0"
    assert fmt(5) == "5" and fmt(100.0) == "100" and fmt(1.08505) == "1.08505"
    assert float(fmt(UNSET_DOUBLE)) == UNSET_DOUBLE
    assert float(fmt(0.1 + 0.2)) == 0.1 + 0.2  # the shortest text that reads back exactly


def test_frames_split_however_the_bytes_arrive():
    data = encode([1, "a", 2.5]) + encode([9, 1, 42])
    decoder = FrameDecoder()
    out = []
    for k in range(len(data)):
        out += decoder.feed(data[k : k + 1])
    assert out == [["1", "a", "2.5"], ["9", "1", "42"]]
    assert decoder.pending == 0


def test_oversized_frames_and_bad_version_ranges_are_protocol_errors():
    with pytest.raises(ProtocolError, match="larger than the limit"):
        FrameDecoder(max_frame=10).feed(b"\x00\x00\x01\x00")
    assert parse_version_range("v157..176") == (157, 176, "")
    assert parse_version_range("v100..176 +PACEAPI") == (100, 176, "+PACEAPI")
    with pytest.raises(ProtocolError, match="version range"):
        parse_version_range("hello")


# --------------------------------------------------------------------------- what the gateway sends


def test_market_data_messages_decode(book):
    calls = decode(
        m.tick_price(4, 1, 1.0851, 1_000_000.0),
        m.tick_size(4, 0, 250_000.0),
        m.tick_req_params(4, 0.00005, "IDEALPRO"),
        m.market_data_type(4, 1),
        m.tick_snapshot_end(4),
        m.tick_by_tick_bid_ask(5, 1_700_000_000, 1.1, 1.2, 3.0, 4.0),
        m.tick_by_tick_last(6, 2, 1_700_000_000, 5900.25, 2.0, "CME"),
        m.tick_by_tick_mid(7, 1_700_000_000, 1.15),
    )
    names = [c[0] for c in calls]
    assert names == [
        "priceSizeTick",
        "tickSize",
        "tickReqParams",
        "marketDataType",
        "tickSnapshotEnd",
        "tickByTickBidAsk",
        "tickByTickAllLast",
        "tickByTickMidPoint",
    ]
    assert calls[0][1] == (4, 1, 1.0851, 1_000_000.0)
    assert calls[2][1] == (4, 0.00005, "IDEALPRO", 3)
    assert calls[5][1][:6] == (5, 1_700_000_000, 1.1, 1.2, 3.0, 4.0)
    assert calls[6][1][:5] == (6, 2, 1_700_000_000, 5900.25, 2.0)


def test_order_messages_decode(book):
    info = book.by_id(1)
    o = _order(info, filled=40.0, notional=40 * 1.085, last_fill_price=1.085)
    done = _order(
        info, status="Filled", filled=100.0, completed_time="20261005 13:30:00 UTC", completed_status="Filled"
    )
    calls = dict(
        (name, args)
        for name, args in decode(
            m.open_order(o, info), m.order_status(o), m.completed_order(done, info), m.completed_orders_end()
        )
    )
    order_id, contract, order, state = calls["openOrder"]
    assert order_id == 7 and contract.conId == SIM_CON_ID_BASE + 1 and contract.localSymbol == "EUR.USD"
    assert (order.action, order.totalQuantity, order.orderType, order.lmtPrice) == ("BUY", 100.0, "LMT", 1.08505)
    assert (order.clientId, order.permId, order.orderRef, order.account) == (3, 1_000_000_005, "s1", "DU0000001")
    assert order.auxPrice == UNSET_DOUBLE and order.minQty == 2**31 - 1 and state.status == "Submitted"
    assert calls["orderStatus"] == (7, "Submitted", 40.0, 60.0, 1.085, 1_000_000_005, 0, 1.085, 3, "", 0.0)
    contract, order, state = calls["completedOrder"]
    assert order.permId == 1_000_000_005 and order.filledQuantity == 100.0
    assert (state.status, state.completedStatus, state.completedTime) == ("Filled", "Filled", "20261005 13:30:00 UTC")
    assert "completedOrdersEnd" in calls


def test_what_if_answer_decodes(book):
    info = book.by_id(3)
    state = {"initMarginChange": "100.00", "commission": 1.25, "commissionCurrency": "USD"}
    ((name, (_, _, order, st)),) = decode(m.open_order(_order(info), info, what_if_state=state))
    assert name == "openOrder" and order.whatIf and st.initMarginChange == "100.00" and st.commission == 1.25


def test_execution_and_commission_messages_decode(book):
    info = book.by_id(4)
    e = SimExecution(
        exec_id="0000abcd.00000001.01.01",
        order_id=7,
        client_id=3,
        perm_id=1_000_000_005,
        instrument_id=4,
        account="DU0000001",
        exchange="CME",
        side="BOT",
        shares=2.0,
        price=5900.25,
        cum_qty=2.0,
        avg_price=5900.25,
        ts_event=1_791_207_000_000_000_000,
        order_ref="s1",
        liquidity=2,
        commission=1.7,
    )
    calls = decode(m.exec_details(-1, e, info), m.commission_report(e, "USD"), m.exec_details_end(9))
    (_, (req_id, contract, ex)), (_, (report,)), (_, (end_id,)) = calls
    assert req_id == -1 and end_id == 9
    assert (contract.symbol, contract.localSymbol, contract.multiplier, contract.secType) == ("ES", "ESZ6", "50", "FUT")
    assert (ex.execId, ex.side, ex.shares, ex.price, ex.permId, ex.orderId, ex.clientId) == (
        e.exec_id,
        "BOT",
        2.0,
        5900.25,
        1_000_000_005,
        7,
        3,
    )
    assert ex.time.timestamp() == 1_791_207_000 and ex.lastLiquidity == 2 and ex.orderRef == "s1"
    assert (report.execId, report.commission, report.currency) == (e.exec_id, 1.7, "USD")
    assert report.realizedPNL == UNSET_DOUBLE  # the Wrapper, not the Decoder, turns this into 0


def test_account_messages_decode(book):
    info = book.by_id(3)
    item = dict(position=100.0, market_price=150.5, market_value=15050.0, average_cost=150.01)
    item |= dict(unrealized_pnl=49.0, realized_pnl=0.0)
    calls = decode(
        m.managed_accounts(["DU0000001"]),
        m.next_valid_id(12),
        m.current_time(1_700_000_000),
        m.account_value("NetLiquidation", "1000000.00", "USD", "DU0000001"),
        m.portfolio_value(info, item, "DU0000001"),
        m.account_update_time("13:30"),
        m.account_download_end("DU0000001"),
        m.position("DU0000001", info, 100.0, 150.01),
        m.position_end(),
        m.account_summary(3, "DU0000001", "NetLiquidation", "1.00", "USD"),
        m.account_summary_end(3),
        m.account_update_multi(4, "DU0000001", "NetLiquidation", "1.00", "USD"),
        m.account_update_multi_end(4),
        m.error(-1, 2104, "Market data farm connection is OK:usfarm"),
        m.open_order_end(),
    )
    got = dict(calls)
    assert got["managedAccounts"] == ("DU0000001",) and got["nextValidId"] == (12,)
    assert got["currentTime"] == (1_700_000_000,)
    contract, *numbers, account = got["updatePortfolio"]
    assert contract.primaryExchange == "NASDAQ" and numbers == [100.0, 150.5, 15050.0, 150.01, 49.0, 0.0]
    account, contract, qty, cost = got["position"]
    assert (account, contract.symbol, contract.exchange, qty, cost) == ("DU0000001", "AAPL", "NASDAQ", 100.0, 150.01)
    assert got["accountUpdateMulti"] == (4, "DU0000001", "", "NetLiquidation", "1.00", "USD")
    assert got["error"] == (-1, 2104, "Market data farm connection is OK:usfarm", "")
    assert {"positionEnd", "openOrderEnd", "accountDownloadEnd", "accountSummaryEnd"} <= set(got)


def test_contract_details_decode_for_every_kind_of_instrument(book):
    calls = decode(
        *(m.contract_details(1, info, 1_791_207_000_000_000_000) for info in book), m.contract_details_end(1)
    )
    details = [args[1] for name, args in calls if name == "contractDetails"]
    by_symbol = {cd.contract.localSymbol: cd for cd in details}
    fx, fut, stk = by_symbol["EUR.USD"], by_symbol["ESZ6"], by_symbol["AAPL"]
    assert (fx.contract.symbol, fx.contract.currency, fx.minTick) == ("EUR", "USD", 0.00005)
    assert (fut.contract.symbol, fut.contract.lastTradeDateOrContractMonth, fut.contract.multiplier) == (
        "ES",
        "20261218",
        "50",
    )
    assert fut.contractMonth == "202612" and fut.minTick == 0.25
    assert stk.contract.primaryExchange == "NASDAQ" and stk.stockType == "COMMON" and stk.minSize == 1.0
    sessions = stk.tradingSessions()
    assert len(sessions) == 7 and (sessions[0].end - sessions[0].start).total_seconds() == 86400


# --------------------------------------------------------------------------- what ib_insync sends


@pytest.fixture
def client_messages():
    """An ib_insync Client that believes it is connected at version 176; its frames, decoded."""
    with IbEventLoop():
        yield _fake_client()


def _fake_client():
    client = Client(Recorder())
    client.connState = Client.CONNECTED
    client._serverVersion = SERVER_VERSION
    client.MaxRequests = 0
    sent: list[bytes] = []
    client.conn.sendMsg = sent.append

    def last() -> list[str]:
        return FrameDecoder().feed(sent[-1])[-1]

    return client, last


def test_place_order_decodes(client_messages):
    client, last = client_messages
    client.placeOrder(12, Forex("EURUSD"), LimitOrder("SELL", 25_000, 1.0851, orderRef="s2", tif="GTC"))
    r = parse_place_order(last())
    assert (r.order_id, r.action, r.quantity, r.order_type, r.lmt_price, r.tif) == (
        12,
        "SELL",
        25_000,
        "LMT",
        1.0851,
        "GTC",
    )
    assert (r.contract.symbol, r.contract.currency, r.contract.sec_type) == ("EUR", "USD", "CASH")
    assert r.order_ref == "s2" and r.transmit and not r.what_if and r.aux_price is None
    client.placeOrder(13, Stock("AAPL", "SMART", "USD"), MarketOrder("BUY", 10))
    r = parse_place_order(last())
    assert (r.order_type, r.lmt_price, r.tif) == ("MKT", None, "DAY")


def test_place_order_finds_what_if_behind_every_optional_block(client_messages):
    client, last = client_messages
    order = Order(
        action="BUY",
        totalQuantity=1,
        orderType="LMT",
        lmtPrice=5900.25,
        whatIf=True,
        algoStrategy="Adaptive",
        algoParams=[TagValue("adaptivePriority", "Normal"), TagValue("x", "y")],
        hedgeType="D",
        hedgeParam="0.5",
        scalePriceIncrement=0.25,
        deltaNeutralOrderType="LMT",
    )
    client.placeOrder(14, Future("ES", "202612", "CME"), order)
    r = parse_place_order(last())
    assert r.what_if and r.lmt_price == 5900.25 and r.contract.last_trade_date == "202612"


def test_market_data_tick_by_tick_and_execution_requests_decode(client_messages):
    client, last = client_messages
    client.reqMktData(21, Stock("AAPL", "SMART", "USD"), "233", True, False, [])
    r = parse_mkt_data(last())
    assert (r.req_id, r.contract.symbol, r.generic_ticks, r.snapshot) == (21, "AAPL", "233", True)
    client.reqTickByTickData(22, Future(localSymbol="ESZ6", exchange="CME"), "BidAsk", 0, True)
    r = parse_tick_by_tick(last())
    assert (r.req_id, r.contract.local_symbol, r.tick_type, r.ignore_size) == (22, "ESZ6", "BidAsk", True)
    from ib_insync import ExecutionFilter

    client.reqExecutions(23, ExecutionFilter(clientId=3, symbol="AAPL", side="BUY", time="20261005 13:00:00"))
    f = parse_exec_filter(last())
    assert (f.req_id, f.client_id, f.symbol, f.side, f.time) == (23, 3, "AAPL", "BUY", "20261005 13:00:00")


# --------------------------------------------------------------------------- contract matching


def test_contracts_resolve_as_ib_insync_builds_them(book):
    def one(**kw):
        info, why = book.resolve_one(RequestContract(**kw))
        assert info is not None, why
        return info.instrument.symbol

    assert one(symbol="EUR", sec_type="CASH", exchange="IDEALPRO", currency="USD") == "EURUSD"
    assert one(symbol="USD", sec_type="CASH", currency="JPY") == "USDJPY"
    assert one(symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD") == "AAPL"
    assert one(symbol="AAPL", sec_type="STK", exchange="NASDAQ") == "AAPL"
    assert one(symbol="ES", sec_type="FUT", last_trade_date="202612", exchange="CME") == "ESZ6"
    assert one(local_symbol="ESZ6", sec_type="FUT") == "ESZ6"
    assert one(con_id=SIM_CON_ID_BASE + 3) == "AAPL"
    assert book.resolve(RequestContract(symbol="ES", sec_type="FUT", last_trade_date="202703")) == []
    assert book.resolve(RequestContract(symbol="MSFT", sec_type="STK")) == []


def test_registry_con_ids_are_kept_and_ambiguity_is_reported():
    registry = InstrumentRegistry(
        [
            Instrument(id=1, symbol="ESZ6", sec_type="FUT", exchange="CME", multiplier=50, last_trade_date="20261218"),
            Instrument(id=2, symbol="ESH7", sec_type="FUT", exchange="CME", multiplier=50, last_trade_date="20270319"),
            Instrument(id=3, symbol="MSFT", sec_type="STK", con_id=272093),
        ]
    )
    book = ContractBook(registry)
    assert book.by_id(3).con_id == 272093 and book.by_con_id(272093).instrument.symbol == "MSFT"
    info, why = book.resolve_one(RequestContract(symbol="ES", sec_type="FUT"))
    assert info is None and "ambiguous" in why and "ESZ6" in why and "ESH7" in why
    assert math.isclose(book.by_id(2).instrument.multiplier, 50.0)
