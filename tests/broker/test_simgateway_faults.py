"""Fault injection end to end: each fault as the real ib_insync client experiences it, switched
on through the gateway's Python API or its admin port."""

from __future__ import annotations

import json
import math
import socket
import time

import pytest
from ib_insync import IB, Forex, LimitOrder, MarketOrder, Stock

from quayside.core.broker.sim.config import DataConfig
from quayside.core.broker.sim.testing import Harness, no_decode_errors, wait_disconnected, wait_until

AAPL = Stock("AAPL", "SMART", "USD")
EURUSD = Forex("EURUSD")


@pytest.fixture(autouse=True)
def decode_errors():
    with no_decode_errors() as watch:
        yield watch


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def errors_of(ib: IB) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, text, contract: seen.append((req_id, code))
    return seen


def ask_of(gw, symbol: str) -> float:
    return gw.call(lambda g: g.market.books[g.contracts.registry.by_symbol(symbol).id].ask)


def buy_now(ib: IB, gw, contract, qty: float, symbol: str):
    """A marketable limit order, waited for until filled with its commission."""
    tick = 0.01 if symbol == "AAPL" else 0.00005
    trade = ib.placeOrder(contract, LimitOrder("BUY", qty, round(ask_of(gw, symbol) + 5 * tick, 5)))
    wait_until(ib, lambda: trade.isDone() and trade.fills and trade.fills[-1].commissionReport.execId)
    return trade


def test_drop_then_reconnect_resyncs_the_same_executions(harness):
    gw = harness.gateway(data=DataConfig(start_paused=True))
    ib = harness.connect(gw, client_id=2)
    ib.qualifyContracts(AAPL, EURUSD)
    buy_now(ib, gw, AAPL, 10, "AAPL")
    buy_now(ib, gw, EURUSD, 20_000, "EURUSD")
    before = {f.execution.execId: (f.execution.price, f.commissionReport.commission) for f in ib.fills()}
    disconnected = []
    ib.disconnectedEvent += lambda: disconnected.append(True)
    assert gw.command("drop").startswith("ok dropped 1 connections")
    wait_disconnected(ib)
    assert disconnected
    harness.connect(gw, client_id=2, ib=ib)
    after = {f.execution.execId: (f.execution.price, f.commissionReport.commission) for f in ib.fills()}
    assert after == before and len(ib.fills()) == 2
    again = ib.reqExecutions()
    assert sorted(f.execution.execId for f in again) == sorted(before)
    assert len(ib.fills()) == 2 and gw.call(lambda g: len(g.broker.executions)) == 2
    assert {p.contract.localSymbol: p.position for p in ib.positions()} == {"AAPL": 10, "EUR.USD": 20_000}


def test_drop_with_a_restart_window_refuses_connections(harness):
    gw = harness.gateway()
    ib = harness.connect(gw)
    assert "API port closed for 2 s" in gw.command("drop 2")
    wait_disconnected(ib)
    with pytest.raises(ConnectionRefusedError):
        ib.connect("127.0.0.1", gw.port, clientId=1, timeout=5)
    deadline = time.monotonic() + 20
    while True:
        try:
            harness.connect(gw, ib=ib, timeout=5)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "the API port did not open again"
            time.sleep(0.2)
    assert ib.isConnected() and ib.managedAccounts() == ["DU0000001"]


def test_connectivity_errors_reach_the_client_and_halt_data(harness):
    gw = harness.gateway(data=DataConfig(speed=20.0))
    ib = harness.connect(gw)
    seen = errors_of(ib)
    ib.qualifyContracts(EURUSD)
    ticker = ib.reqMktData(EURUSD)
    updates = []
    ticker.updateEvent += lambda t: updates.append(t.time)
    wait_until(ib, lambda: len(updates) >= 3, timeout=30, what="EURUSD ticks")
    gw.command("error 1100")
    wait_until(ib, lambda: (-1, 1100) in seen, what="error 1100")
    ib.sleep(0.3)
    count = len(updates)
    ib.sleep(1.0)
    assert len(updates) == count, "market data kept coming after 1100"
    gw.command("error 1102")
    wait_until(ib, lambda: (-1, 1102) in seen, what="error 1102")
    wait_until(ib, lambda: len(updates) > count + 2, timeout=30, what="ticks after 1102")
    gw.command("error 2104")
    gw.command("error 2103 -1 Market data farm connection is broken:cashfarm")
    wait_until(ib, lambda: (-1, 2104) in seen and (-1, 2103) in seen)
    gw.command("error 1101")  # "data lost": the subscriptions are gone
    wait_until(ib, lambda: (-1, 1101) in seen)
    ib.sleep(0.3)
    count = len(updates)
    ib.sleep(1.0)
    assert len(updates) == count
    ib.cancelMktData(EURUSD)
    ticker = ib.reqMktData(EURUSD)  # a client resubscribes after 1101
    ticker.updateEvent += lambda t: updates.append(t.time)
    wait_until(ib, lambda: len(updates) > count + 2, timeout=30, what="ticks after resubscribing")


def test_delay_holds_every_message_in_order(harness):
    gw = harness.gateway(data=DataConfig(start_paused=True))
    ib = harness.connect(gw)
    ib.qualifyContracts(AAPL)
    gw.command("delay 400")
    t0 = time.monotonic()
    ib.reqCurrentTime()
    assert time.monotonic() - t0 >= 0.4
    trade = ib.placeOrder(AAPL, MarketOrder("BUY", 5))
    ib.sleep(0.2)
    assert trade.orderStatus.status == "PendingSubmit"
    wait_until(ib, lambda: trade.isDone() and trade.fills, what="the delayed fill")
    assert [e.status for e in trade.log] == ["PendingSubmit", "Submitted", "Submitted", "Filled"]
    gw.command("delay 0")
    t0 = time.monotonic()
    ib.reqCurrentTime()
    assert time.monotonic() - t0 < 0.4


def test_a_duplicated_execution_arrives_but_is_not_a_second_fill(harness, decode_errors):
    gw = harness.gateway(data=DataConfig(start_paused=True))
    ib = harness.connect(gw)
    ib.qualifyContracts(AAPL)
    trade = buy_now(ib, gw, AAPL, 10, "AAPL")
    exec_id = trade.fills[0].execution.execId
    assert gw.command("duplicate-exec") == f"ok execId {exec_id} sent again to client 1"
    seen = lambda: decode_errors.messages("ib_insync.wrapper", f"execDetails Execution(execId='{exec_id}'")  # noqa: E731
    wait_until(ib, lambda: len(seen()) == 2, what="the duplicate execDetails")
    assert [f.execution.execId for f in ib.fills()] == [exec_id] and len(trade.fills) == 1


def test_refused_and_duplicate_client_ids_get_326(harness):
    gw = harness.gateway()
    gw.command("refuse-client-id 9")
    ib = IB()
    seen = errors_of(ib)
    with pytest.raises((TimeoutError, ConnectionError)):
        ib.connect("127.0.0.1", gw.port, clientId=9, timeout=2)
    assert (-1, 326) in seen and not ib.isConnected()
    gw.command("allow-client-id 9")
    harness.connect(gw, client_id=9, ib=ib)
    other = IB()
    seen = errors_of(other)
    with pytest.raises((TimeoutError, ConnectionError)):
        other.connect("127.0.0.1", gw.port, clientId=9, timeout=2)
    assert (-1, 326) in seen and ib.isConnected()
    injected = gw.call(lambda g: dict(g.faults.injected))
    assert injected["refused-client-id"] == 1 and injected["client-id-in-use"] == 1


def test_rejected_orders_end_cancelled_with_the_error(harness):
    gw = harness.gateway(data=DataConfig(start_paused=True))
    ib = harness.connect(gw)
    ib.qualifyContracts(AAPL)
    gw.command("reject-next-order")
    trade = ib.placeOrder(AAPL, MarketOrder("BUY", 5))
    wait_until(ib, lambda: trade.isDone())
    assert trade.orderStatus.status == "Cancelled" and trade.log[-1].errorCode == 201
    off_grid = ib.placeOrder(AAPL, LimitOrder("BUY", 5, 100.001))
    wait_until(ib, lambda: off_grid.isDone())
    assert off_grid.orderStatus.status == "Cancelled"
    fine = buy_now(ib, gw, AAPL, 5, "AAPL")
    assert fine.orderStatus.status == "Filled" and len(ib.fills()) == 1


def test_pacing_violation_answers_the_next_request(harness):
    gw = harness.gateway(data=DataConfig(start_paused=True))
    ib = harness.connect(gw)
    seen = errors_of(ib)
    gw.command("pacing")
    stock = Stock("AAPL", "SMART", "USD")
    assert ib.qualifyContracts(stock) == []
    assert any(code == 100 for _, code in seen)
    assert ib.qualifyContracts(stock) == [stock]
    gw.command("pacing 420")
    ticker = ib.reqMktData(stock)
    wait_until(ib, lambda: any(code == 420 for _, code in seen), what="error 420")
    ib.sleep(0.2)
    assert math.isnan(ticker.bid)


def test_too_many_messages_per_second_get_error_100(harness):
    gw = harness.gateway(data=DataConfig(start_paused=True), max_messages_per_s=5)
    ib = harness.connect(gw)
    seen = errors_of(ib)
    ib.client.MaxRequests = 0  # no client-side throttle: 20 requests at once
    ib.sleep(1.1)
    for _ in range(20):
        ib.client.reqCurrentTime()
    wait_until(ib, lambda: sum(code == 100 for _, code in seen) == 15, what="15 pacing errors")


def test_halted_data_still_fills_orders_and_resumes_with_the_book(harness):
    gw = harness.gateway(data=DataConfig(speed=20.0))
    ib = harness.connect(gw)
    ib.qualifyContracts(EURUSD)
    ticker = ib.reqMktData(EURUSD)
    updates = []
    ticker.updateEvent += lambda t: updates.append(t.time)
    wait_until(ib, lambda: len(updates) >= 2, timeout=30)
    gw.command("halt-data")
    ib.sleep(0.3)
    count = len(updates)
    trade = buy_now(ib, gw, EURUSD, 10_000, "EURUSD")
    ib.sleep(0.5)
    assert len(updates) == count and trade.orderStatus.status == "Filled"
    gw.command("resume-data")
    wait_until(ib, lambda: len(updates) > count, timeout=30, what="ticks after resume-data")


def test_commission_reports_can_arrive_after_the_fill(harness):
    gw = harness.gateway(data=DataConfig(start_paused=True), commission_delay_ms=600)
    ib = harness.connect(gw)
    ib.qualifyContracts(AAPL)
    reports = []
    ib.commissionReportEvent += lambda trade, fill, report: reports.append(report.execId)
    trade = ib.placeOrder(AAPL, MarketOrder("BUY", 5))
    wait_until(ib, lambda: trade.isDone() and trade.fills)
    assert trade.fills[0].commissionReport.execId == "" and not reports
    wait_until(ib, lambda: reports, what="the late commission report")
    assert reports == [trade.fills[0].execution.execId] and trade.fills[0].commissionReport.commission == 1.0


def test_order_latency_keeps_orders_pending(harness):
    gw = harness.gateway(data=DataConfig(start_paused=True), order_latency_ms=300)
    ib = harness.connect(gw)
    ib.qualifyContracts(AAPL)
    t0 = time.monotonic()
    trade = ib.placeOrder(AAPL, MarketOrder("BUY", 5))
    wait_until(ib, lambda: trade.orderStatus.status != "PendingSubmit")
    assert time.monotonic() - t0 >= 0.3
    wait_until(ib, lambda: trade.isDone() and trade.fills)


def _admin(port: int, *lines: str) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rw")
        out = []
        for line in lines:
            f.write(line + "\n")
            f.flush()
            out.append(f.readline().strip())
        return out


def test_admin_port_speaks_one_line_per_command(harness):
    gw = harness.gateway(data=DataConfig(start_paused=True), admin_port=0)
    ib = harness.connect(gw, client_id=4)
    seen = errors_of(ib)
    helped, bad, status, clock, stepped, err = _admin(
        gw.admin_port, "help", "bogus 1", "status", "step x", "step 2.5", "error 1100"
    )
    assert helped.startswith("ok drop [SECONDS]") and "duplicate-exec" in helped
    assert bad.startswith("error: unknown command 'bogus'") and clock.startswith("error: SECONDS must be a number")
    state = json.loads(status.removeprefix("ok "))
    assert state["clients"] == [4] and state["server_version"] == 176 and state["paused"] is True
    assert stepped.startswith("ok ") and "records, clock at" in stepped
    assert err == "ok error 1100 sent to 1 clients"
    wait_until(ib, lambda: (-1, 1100) in seen)
    (executions,) = _admin(gw.admin_port, "executions")
    assert executions == "ok []"
