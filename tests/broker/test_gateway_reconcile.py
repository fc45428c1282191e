"""Reconciliation against the simulated IB Gateway, with the test as the engine (so the engine's
view is the gateway's own fill bookkeeping; tests/broker/test_gateway_engine.py runs it with a
real engine reading its POSITION records): a position changed behind the engine's back, and a
working order the engine does not know, each block the instrument until resolved."""

from __future__ import annotations

import time

import pytest
from ib_insync import LimitOrder, Stock

from quayside.core.broker.sim.testing import Harness, no_decode_errors, wait_until
from quayside.core.broker.testing import GatewayRig
from quayside.core.wire import ControlCommand, LogCode, OrderStatus, RecordKind, Side

EURUSD, AAPL = 1, 3


@pytest.fixture(autouse=True)
def decode_errors():
    with no_decode_errors() as watch:
        yield watch


@pytest.fixture
def rig(shm_dir):
    with GatewayRig(shm_dir) as r:
        yield r.settle(AAPL)


def shift_position(rig: GatewayRig, iid: int, delta: float) -> None:
    """The broker's position changes with no execution the engine could see."""

    def shift(g):
        from quayside.core.broker.sim.account import SimPosition

        pos = g.broker.positions.setdefault(iid, SimPosition())
        pos.quantity += delta
        g.position_changed(iid)

    rig.sim.call(shift)


def test_a_position_changed_behind_the_engine_blocks_then_unblocks(rig):
    eng = rig.engine
    oid = eng.order(AAPL, Side.BUY, 10, round(rig.book(AAPL).ask, 2))
    eng.wait(RecordKind.FILL, count=2, order_id=oid)
    shift_position(rig, AAPL, 5.0)
    (log,) = eng.wait(RecordKind.LOG, code=LogCode.RECONCILIATION_BREAK, instrument_id=AAPL)
    assert (log["a0"], log["a1"]) == (10.0, 15.0)  # engine, broker
    eng.wait(RecordKind.CONTROL, command=ControlCommand.BLOCK, instrument_id=AAPL)
    assert rig.gateway.call(lambda g: sorted(g.ledger.blocked)) == [AAPL]  # remembered across restarts
    shift_position(rig, AAPL, -5.0)
    (log,) = eng.wait(RecordKind.LOG, code=LogCode.RECONCILIATION_RESOLVED, instrument_id=AAPL)
    assert (log["a0"], log["a1"]) == (10.0, 10.0)
    eng.wait(RecordKind.CONTROL, command=ControlCommand.UNBLOCK, instrument_id=AAPL)
    stats = rig.gateway.stats()
    assert (stats["breaks"], stats["resolutions"], stats["blocked"]) == (1, 1, [])
    assert eng.of_kind(RecordKind.CONTROL, command=ControlCommand.BLOCK, instrument_id=EURUSD) == []
    rig.check_fills_exact()


def test_a_gateway_restarted_during_a_break_still_unblocks(rig):
    eng = rig.engine
    shift_position(rig, AAPL, 7.0)
    eng.wait(RecordKind.CONTROL, command=ControlCommand.BLOCK, instrument_id=AAPL)
    rig.stop_gateway()
    shift_position(rig, AAPL, -7.0)
    rig.start_gateway()
    eng.wait(RecordKind.CONTROL, command=ControlCommand.UNBLOCK, instrument_id=AAPL)


def test_a_working_order_the_engine_does_not_know_is_a_break_until_it_is_gone(rig):
    harness = Harness()
    try:
        other = harness.connect(rig.sim, client_id=99)  # say, a previous engine session's gateway
        stock = Stock("AAPL", "SMART", "USD")
        other.qualifyContracts(stock)
        order = LimitOrder("BUY", 1, round(rig.book(AAPL).bid - 5.0, 2), orderRef="qs:1:777")
        trade = other.placeOrder(stock, order)
        wait_until(other, lambda: trade.orderStatus.status == "Submitted")
        eng = rig.engine
        (log,) = eng.wait(RecordKind.LOG, code=LogCode.RECONCILIATION_BREAK, instrument_id=AAPL)
        assert (log["a0"], log["a1"]) == (0.0, 0.0)  # positions agree: the order is the break
        eng.wait(RecordKind.CONTROL, command=ControlCommand.BLOCK, instrument_id=AAPL)
        other.cancelOrder(order)
        wait_until(other, lambda: trade.orderStatus.status == "Cancelled")
        eng.wait(RecordKind.CONTROL, command=ControlCommand.UNBLOCK, instrument_id=AAPL)
        # the engine's own working orders are no break
        mine = eng.order(AAPL, Side.BUY, 1, round(rig.book(AAPL).bid - 5.0, 2))
        eng.wait(RecordKind.ORDER_STATUS, order_id=mine, status=OrderStatus.SUBMITTED)
        breaks = rig.gateway.stats()["breaks"]
        time.sleep(6 * rig.config.reconcile_interval_s)
        assert rig.gateway.stats()["breaks"] == breaks
    finally:
        harness.close()
