"""The whole order path as processes: the simulated IB Gateway (in this process, so the test can
read its executions), ``quayside gateway run`` (ib_insync inside) and ``quayside engine run``
(the crossover strategy trading EURUSD on the simulator's synthetic market), on /dev/shm rings.

The engine's fills (read from its feed ring), the gateway's records of them (its state journal)
and the simulator's executions must agree exactly, and so must the engine's positions and the
broker's (POSITION records of origin BROKER the gateway sent, passed on by the engine); a position changed behind the engine's back
blocks the instrument in the engine (its next order is denied with RECONCILIATION_BREAK) until
the position is put right.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from quayside.core.broker.sim.background import BackgroundGateway
from quayside.core.broker.sim.config import DataConfig, SimGatewayConfig
from quayside.core.broker.testing import (
    ENGINE_STARTUP_TIMEOUT,
    QUAYSIDE,
    TEST_CAPACITIES,
    TRADING_ENGINE,
    FeedTail,
    Process,
    gateway_test_config,
    toml_text,
    wait_for,
)
from quayside.core.wire import ControlCommand, DenyReason, Flag, LogCode, OrderStatus, PositionOrigin, RecordKind

EURUSD = 1


class Stack:
    """Simulator, engine process and gateway process on the rings in ``shm_dir``."""

    def __init__(self, shm_dir: Path, tmp_path: Path):
        self.sim = BackgroundGateway(SimGatewayConfig(port=0, admin_port=None, data=DataConfig(speed=20.0))).start()
        rings = {name: str(shm_dir / name) for name in ("inbound", "outbound", "control", "feed")}
        self.rings = rings
        self.state = tmp_path / "gateway-state.jsonl"
        engine_toml = tmp_path / "engine.toml"
        engine_toml.write_text(toml_text({**TRADING_ENGINE, "rings": {**rings, **TEST_CAPACITIES}}))
        gateway_toml = tmp_path / "gateway.toml"
        gateway_toml.write_text(toml_text(gateway_test_config(self.sim.port, 21, rings, self.state)))
        self.engine = Process(["engine", "run", "--config", str(engine_toml)], tmp_path / "engine.log")
        self.gateway: Process | None = None
        self.feed: FeedTail | None = None
        self._gateway_args = (["gateway", "run", "--config", str(gateway_toml)], tmp_path / "gateway.log")

    def start(self) -> None:
        feed = Path(self.rings["feed"])
        wait_for(lambda: self._alive() and feed.exists(), "the engine's feed ring", ENGINE_STARTUP_TIMEOUT, 0.05)
        self.feed = FeedTail(feed)
        wait_for(
            lambda: self._alive() and len(self.logs(LogCode.ENGINE_STARTED)),
            "the engine to start",
            ENGINE_STARTUP_TIMEOUT,
            0.05,
        )
        self.gateway = Process(*self._gateway_args)

    def _alive(self) -> bool:
        assert self.engine.alive(), f"the engine exited\n{self.engine.output()}"
        assert self.gateway is None or self.gateway.alive(), f"the gateway exited\n{self.gateway.output()}"
        return True

    def logs(self, code: int) -> np.ndarray:
        logs = self.feed.of_kind(RecordKind.LOG)
        return logs[logs["code"] == code]

    def wait(self, condition, what: str, timeout: float = 60.0):
        return wait_for(lambda: self._alive() and condition(), what, timeout, 0.01)

    def control(self, *args: str) -> None:
        import subprocess

        done = subprocess.run(
            [QUAYSIDE, "control", "--ring", self.rings["control"], *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr

    def shift_position(self, delta: float) -> None:
        def shift(g):
            g.broker.positions[EURUSD].quantity += delta
            g.position_changed(EURUSD)

        self.sim.call(shift)

    def close(self) -> None:
        for proc in (self.gateway, self.engine):
            if proc is not None:
                proc.close()
        if self.feed is not None:
            self.feed.close()
        self.sim.stop()


@pytest.fixture
def stack(shm_dir, tmp_path):
    s = Stack(shm_dir, tmp_path)
    try:
        s.start()
        yield s
    finally:
        s.close()


def journal_fills(path: Path) -> dict[str, dict]:
    """The gateway's final record of each execution: execId base -> entry."""
    out: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if item["k"] == "fill":
            out[item["d"]["base"]] = item["d"]
    return out


def last_positions(stack: Stack) -> tuple[np.void, np.void]:
    """The engine's and the broker's last POSITION for EURUSD on the feed."""
    positions = stack.feed.of_kind(RecordKind.POSITION)
    positions = positions[positions["instrument_id"] == EURUSD]
    engine = positions[positions["origin"] == PositionOrigin.ENGINE]
    broker = positions[(positions["origin"] == PositionOrigin.BROKER) & (positions["strategy_id"] == 0)]
    assert len(engine) and len(broker), "no engine or no broker positions on the feed"
    return engine[-1], broker[-1]


def test_several_hundred_orders_agree_in_engine_gateway_and_simulator(stack):
    orders = lambda: stack.feed.of_kind(RecordKind.ORDER)  # noqa: E731
    stack.wait(lambda: len(orders()) >= 300, "300 orders from the engine", timeout=240)
    stack.control("halt")
    stack.wait(lambda: stack.sim.call(lambda g: not g.broker.working_orders()), "no working orders")
    time.sleep(1.0)  # the last answers reach the engine
    assert stack.gateway.terminate() == 0  # SIGTERM: a clean stop
    stats = json.loads(stack.gateway.output().strip().splitlines()[-1])
    assert stats["decode_errors"] == 0 and stats["disconnects"] == 0 and stats["breaks"] == 0

    execs = {e.exec_id: e for e in stack.sim.call(lambda g: list(g.broker.executions))}
    sim_orders = stack.sim.call(lambda g: {o.order_ref: o for o in g.broker.orders.values()})
    feed_orders = orders()
    statuses = stack.feed.of_kind(RecordKind.ORDER_STATUS)
    # every order reached the simulator, tagged, once; but one the halt cancelled while it still
    # waited in the gateway (ORDER and CANCEL read together) never leaves: CANCELLED, nothing else
    missing = {f"qs:1:{int(o['order_id'])}" for o in feed_orders} - set(sim_orders)
    why = {ref: statuses[statuses["order_id"] == int(ref.split(":")[2])]["status"].tolist() for ref in missing}
    assert all(s == [OrderStatus.CANCELLED] for s in why.values()), f"orders not at the simulator: {why}"
    assert len(feed_orders) >= 300 and len(sim_orders) == len(feed_orders) - len(missing)
    fills = stack.feed.of_kind(RecordKind.FILL)
    ledger = journal_fills(stack.state)
    assert len(execs) >= 100, "too few fills to compare"
    assert {fe["exec_id"] for fe in ledger.values()} == set(execs)
    by_fill: dict[int, list] = {}
    for f in fills:
        by_fill.setdefault(int(f["fill_id"]), []).append(f)
    assert set(by_fill) == {fe["fill_id"] for fe in ledger.values()}
    for fe in ledger.values():
        e, records = execs[fe["exec_id"]], by_fill[fe["fill_id"]]
        signed = e.shares if e.side == "BOT" else -e.shares
        trade = [r for r in records if r["quantity"] != 0]
        known = [r for r in records if r["flags"] & Flag.COMMISSION_KNOWN]
        assert [float(r["quantity"]) for r in trade] == [signed] == [fe["quantity"]]
        assert float(trade[0]["price"]) == e.price == fe["price"]
        assert [float(r["commission"]) for r in known] == [e.commission]
        assert e.order_ref == f"qs:1:{int(trade[0]['order_id'])}" == f"qs:1:{fe['engine_id']}"
    # the engine's position is the simulator's, and so is the broker's last word on the feed;
    # every order ended
    last, broker = last_positions(stack)
    assert last["quantity"] == stack.sim.call(lambda g: g.broker.positions[EURUSD].quantity) == sum(fills["quantity"])
    assert last["working_buy_qty"] == 0.0 and last["working_sell_qty"] == 0.0
    assert broker["quantity"] == last["quantity"] and broker["working_buy_qty"] == broker["working_sell_qty"] == 0.0
    terminal = statuses[np.isin(statuses["status"], [OrderStatus.FILLED, OrderStatus.CANCELLED])]
    assert set(terminal["order_id"].tolist()) == set(feed_orders["order_id"].tolist())
    assert not np.isin(statuses["status"], [OrderStatus.REJECTED, OrderStatus.INACTIVE]).any()


def test_a_reconciliation_break_blocks_the_instrument_in_the_engine_until_resolved(stack):
    fills = lambda: stack.feed.of_kind(RecordKind.FILL)  # noqa: E731
    stack.wait(lambda: len(fills()) >= 5, "the first fills")
    stack.shift_position(50_000.0)
    stack.wait(lambda: len(stack.logs(LogCode.RECONCILIATION_BREAK)), "the break on the feed")
    (log,) = stack.logs(LogCode.RECONCILIATION_BREAK)
    assert log["instrument_id"] == EURUSD and log["a1"] - log["a0"] == 50_000.0
    assert log["a1"] in stack.feed.of_kind(RecordKind.POSITION)["quantity"]  # the broker's, on the feed
    controls = lambda: stack.feed.of_kind(RecordKind.CONTROL)  # noqa: E731
    stack.wait(lambda: (controls()["command"] == ControlCommand.BLOCK).any(), "BLOCK on the feed")
    applied = stack.logs(LogCode.CONTROL_APPLIED)
    assert (applied["i0"] == ControlCommand.BLOCK).any()  # the engine acknowledged it
    mark = len(stack.feed.records)
    denials = lambda: stack.feed.of_kind(RecordKind.DENIAL, mark)  # noqa: E731
    stack.wait(lambda: (denials()["reason"] == DenyReason.RECONCILIATION_BREAK).any(), "an order denied")
    stack.shift_position(-50_000.0)
    stack.wait(lambda: len(stack.logs(LogCode.RECONCILIATION_RESOLVED)), "the break resolved")
    stack.wait(lambda: (controls()["command"] == ControlCommand.UNBLOCK).any(), "UNBLOCK on the feed")
    mark = len(stack.feed.records)
    stack.wait(lambda: len(stack.feed.of_kind(RecordKind.ORDER, mark)), "orders again after UNBLOCK")
    stack.control("halt")
    stack.wait(lambda: stack.sim.call(lambda g: not g.broker.working_orders()), "no working orders")
    time.sleep(1.0)
    last, broker = last_positions(stack)
    assert last["quantity"] == broker["quantity"] == stack.sim.call(lambda g: g.broker.positions[EURUSD].quantity)
    assert stack.gateway.terminate() == 0
