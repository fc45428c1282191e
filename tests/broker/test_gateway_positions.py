"""The broker's positions on the feed: POSITION records of origin BROKER from the gateway (real
ib_insync client inside) against the simulated IB Gateway, with the test as the engine. A
snapshot after every sync (start, reconnect), each change afterwards, and the P&L service's
reconciliation reading exactly what the gateway sent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quayside.core import wire
from quayside.core.broker.sim.testing import no_decode_errors
from quayside.core.broker.testing import GatewayRig
from quayside.core.instruments import default_registry
from quayside.core.wire import Flag, LogCode, PositionOrigin, RecordKind, Side
from quayside.support.pnl.accounting import Ledger
from quayside.support.pnl.service import PnlFeed

EURUSD, AAPL = 1, 3


@pytest.fixture(autouse=True)
def decode_errors():
    with no_decode_errors() as watch:
        yield watch


@pytest.fixture
def rig(shm_dir):
    with GatewayRig(shm_dir) as r:
        yield r.settle(AAPL)


def broker_positions(rig: GatewayRig, iid: int | None = None) -> list[np.void]:
    got = rig.engine.of_kind(RecordKind.POSITION)
    assert all(p["origin"] == PositionOrigin.BROKER and p["strategy_id"] == 0 for p in got)
    return [p for p in got if iid is None or p["instrument_id"] == iid]


def shift_position(rig: GatewayRig, iid: int, delta: float) -> None:
    """The broker's position changes with no execution the engine could see."""

    def shift(g):
        from quayside.core.broker.sim.account import SimPosition

        pos = g.broker.positions.setdefault(iid, SimPosition())
        pos.quantity += delta
        pos.cost += delta * g.market.books[iid].mark()
        g.position_changed(iid)

    rig.sim.call(shift)


def sim_avg_price(rig: GatewayRig, iid: int) -> float:
    return rig.sim.call(lambda g: g.broker.positions[iid].avg_cost())  # multiplier 1 here


def test_a_snapshot_on_start_then_every_change_then_a_snapshot_after_a_reconnect(rig):
    eng = rig.engine
    first = rig.engine.wait(RecordKind.POSITION, count=2)
    assert {int(p["instrument_id"]) for p in first} == {EURUSD, AAPL}  # the streamed ones, flat
    assert all(p["flags"] == Flag.SNAPSHOT and p["quantity"] == 0.0 and math.isnan(p["avg_price"]) for p in first)

    oid = eng.order(AAPL, Side.BUY, 10, round(rig.book(AAPL).ask, 2))
    eng.wait(RecordKind.FILL, count=2, order_id=oid)
    (change,) = eng.wait(RecordKind.POSITION, "the position after the fill", instrument_id=AAPL, flags=0)
    assert change["quantity"] == 10.0 == rig.sim_position(AAPL)
    assert change["avg_price"] == pytest.approx(sim_avg_price(rig, AAPL))
    assert (change["working_buy_qty"], change["working_sell_qty"]) == (0.0, 0.0)

    resting = eng.order(AAPL, Side.SELL, 4, round(rig.book(AAPL).ask + 5.0, 2))  # works, never fills
    eng.wait(RecordKind.ORDER_STATUS, order_id=resting, status=wire.OrderStatus.SUBMITTED)
    shift_position(rig, AAPL, 5.0)  # a change IB reports with no execution behind it
    (shifted,) = eng.wait(RecordKind.POSITION, "the shifted position", instrument_id=AAPL, quantity=15.0)
    assert shifted["flags"] == 0 and shifted["working_sell_qty"] == 4.0

    before = len(broker_positions(rig))
    assert "API port closed" in rig.sim.command("drop 0.5")
    eng.wait(RecordKind.LOG, code=LogCode.BROKER_CONNECTED, count=2)
    rig.wait_ready()
    eng.wait(RecordKind.POSITION, "a snapshot after the reconnect", flags=Flag.SNAPSHOT, quantity=15.0)
    again = broker_positions(rig)[before:]
    snap = {int(p["instrument_id"]): p for p in again if p["flags"] == Flag.SNAPSHOT}
    assert snap[AAPL]["quantity"] == 15.0 == rig.sim_position(AAPL)
    assert snap[AAPL]["avg_price"] == pytest.approx(sim_avg_price(rig, AAPL))
    assert snap[AAPL]["working_sell_qty"] == 4.0  # the broker still works the order
    assert snap[EURUSD]["quantity"] == 0.0
    # the broker's repeated report of an unchanged position is not published twice
    quantities = [float(p["quantity"]) for p in broker_positions(rig, AAPL) if p["flags"] == 0]
    assert quantities == [10.0, 15.0]
    assert rig.gateway.stats()["broker_positions_published"] == len(broker_positions(rig))


def test_the_pnl_service_reconciles_against_what_the_gateway_sent(rig):
    """The records the engine passes on to the feed, straight into the P&L service's feed
    handling: no break while the two agree, one while the broker's position differs."""
    eng = rig.engine
    pnl = PnlFeed(Ledger(default_registry()), tolerance=1e-6)
    seen = 0

    def catch_up() -> None:
        nonlocal seen
        eng.poll()
        new, seen = eng.records[seen:], len(eng.records)
        pnl.handle(np.concatenate([np.asarray(r).reshape(1).view(wire.record_dtype) for r in new]))

    oid = eng.order(AAPL, Side.BUY, 10, round(rig.book(AAPL).ask, 2))
    eng.wait(RecordKind.FILL, count=2, order_id=oid)  # the execution and its commission
    eng.wait(RecordKind.POSITION, instrument_id=AAPL, quantity=10.0)
    catch_up()
    report = pnl.reconciler.report()
    assert report["breaks"] == [] and pnl.reconciler.broker[(0, AAPL)][0] == 10.0
    assert pnl.ledger.net_quantity(AAPL) == 10.0

    shift_position(rig, AAPL, 5.0)
    eng.wait(RecordKind.POSITION, instrument_id=AAPL, quantity=15.0)
    catch_up()
    (brk,) = pnl.reconciler.report()["breaks"]
    assert (brk["instrument_id"], brk["strategy_id"], brk["ledger"], brk["broker"]) == (AAPL, 0, 10.0, 15.0)

    shift_position(rig, AAPL, -5.0)
    eng.wait(RecordKind.POSITION, instrument_id=AAPL, quantity=10.0, count=2)
    catch_up()
    assert pnl.reconciler.report()["breaks"] == [] and pnl.reconciler.opened == 1
    assert pnl.skipped == {}
