"""Hundreds of orders through the real ib_insync client, with a dropped connection in the middle:
the simulator's own record of fills must equal what ib_insync reports, exactly. And the
``quayside simgateway`` command as a real process."""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import subprocess
import sys
import time

import pytest
from ib_insync import Forex, Future, LimitOrder, MarketOrder, Stock

from quayside.core.broker.sim import commands
from quayside.core.broker.sim.config import DataConfig
from quayside.core.broker.sim.testing import Harness, no_decode_errors, wait_disconnected, wait_until

ORDERS = 300
# symbol: (contract, tick, quantity choices)
MARKETS = {
    "EURUSD": (Forex("EURUSD"), 0.00005, [1_000, 10_000, 25_000]),
    "USDJPY": (Forex("USDJPY"), 0.005, [1_000, 20_000]),
    "AAPL": (Stock("AAPL", "SMART", "USD"), 0.01, [1, 10, 100]),
    "ESZ6": (Future("ES", "202612", "CME"), 0.25, [1, 2]),
}


@pytest.fixture(autouse=True)
def decode_errors():
    with no_decode_errors() as watch:
        yield watch


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def _gateway_fills(gw) -> set[tuple]:
    def read(g):
        return {
            (
                e.exec_id,
                e.order_id,
                e.perm_id,
                e.side,
                e.shares,
                e.price,
                e.commission,
                g.contracts.by_id(e.instrument_id).con_id,
            )
            for e in g.broker.executions
        }

    return gw.call(read)


def _client_fills(ib) -> set[tuple]:
    return {
        (
            f.execution.execId,
            f.execution.orderId,
            f.execution.permId,
            f.execution.side,
            f.execution.shares,
            f.execution.price,
            f.commissionReport.commission,
            f.contract.conId,
        )
        for f in ib.fills()
    }


def _wait_acknowledged(ib, trades) -> None:
    wait_until(ib, lambda: all(t.orderStatus.status != "PendingSubmit" for t in trades), timeout=60)


def _wait_fills_match(ib, gw, what: str) -> set[tuple]:
    expected = _gateway_fills(gw)
    wait_until(ib, lambda: _client_fills(ib) == expected, timeout=30, what=what)
    return expected


def test_hundreds_of_orders_fill_exactly_as_the_simulator_recorded(harness, decode_errors):
    gw = harness.gateway(data=DataConfig(speed=50.0, seed=11))
    ib = harness.connect(gw, client_id=5)
    ib.qualifyContracts(*(c for c, _, _ in MARKETS.values()))
    rng = random.Random(5)
    placed = []
    for n in range(ORDERS):
        if n == ORDERS // 2:  # the gateway restarts under the client's feet; the market goes on
            _wait_acknowledged(ib, placed)
            gw.command("drop")
            wait_disconnected(ib)
            ib.sleep(0.5)  # fills happen with nobody connected to hear of them
            harness.connect(gw, client_id=5, ib=ib)
            gw.command("pause")
            _wait_fills_match(ib, gw, "the fills missed while disconnected")
            gw.command("resume")
            placed = [t for t in placed if t.orderStatus.status != "PendingSubmit"]
        symbol = rng.choice(list(MARKETS))
        contract, tick, sizes = MARKETS[symbol]
        bid, ask = gw.call(
            lambda g, s=symbol: (lambda b: (b.bid, b.ask))(g.market.books[g.contracts.registry.by_symbol(s).id])
        )
        action = rng.choice(["BUY", "SELL"])
        qty = rng.choice(sizes)
        kind = rng.random()
        if kind < 0.2:
            order = MarketOrder(action, qty)
        else:
            touch, away = (ask, -1) if action == "BUY" else (bid, 1)
            ticks = rng.randint(0, 2) if kind < 0.6 else -rng.randint(1, 3)  # through the touch, or passive
            order = LimitOrder(action, qty, round(round(touch / tick - away * ticks) * tick, 6))
        placed.append(ib.placeOrder(contract, order))
        if n % 25 == 0:
            ib.sleep(0.05)
    _wait_acknowledged(ib, placed)
    ib.reqGlobalCancel()
    wait_until(ib, lambda: not gw.call(lambda g: g.broker.working_orders()), timeout=30, what="every order to be done")
    expected = _wait_fills_match(ib, gw, "ib_insync's fills to match the simulator's")
    assert len(ib.fills()) == len(expected) > ORDERS // 3
    assert len({f.execution.execId for f in ib.fills()}) == len(ib.fills())
    assert gw.call(lambda g: g.broker.counters.orders) == ORDERS
    positions = gw.call(
        lambda g: {g.contracts.by_id(i).con_id: p.quantity for i, p in g.broker.positions.items() if p.quantity}
    )
    wait_until(ib, lambda: {p.contract.conId: p.position for p in ib.positions()} == positions, timeout=30)
    assert not decode_errors.messages("ib_insync.wrapper", "No order found")  # every status found its trade


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quayside")
    commands.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_every_option_has_help():
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["simgateway", "--help"])
    assert exit_.value.code == 0
    args = _parser().parse_args(["simgateway", "--port", "0", "--speed", "max", "--seed", "3", "--admin-port", "-1"])
    config = commands._config(args)
    assert config.port == 0 and config.admin_port is None and config.as_fast_as_possible and config.data.seed == 3


_RUN = [sys.executable, "-m", "quayside.core.broker.sim"]  # what `quayside simgateway` runs


def test_the_simgateway_command_serves_until_sigterm(harness, tmp_path):
    env = {**os.environ, "QUAYSIDE_SIMGATEWAY_ACCOUNT": "DU7654321"}
    cmd = [*_RUN, "--port", "0", "--admin-port", "0", "--speed", "10"]
    with (
        open(tmp_path / "gateway.log", "w") as log,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env) as proc,
    ):
        try:
            _drive(proc, harness, tmp_path)
        finally:
            if proc.poll() is None:
                proc.kill()


def _drive(proc, harness, tmp_path) -> None:
    deadline = time.monotonic() + 300
    line = ""
    while not line.startswith("simgateway listening"):
        assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
        assert time.monotonic() < deadline, "the gateway did not start"
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line = proc.stdout.readline()
    address, admin = line.split("listening on ")[1].split(", admin port ")
    port, admin_port = int(address.rsplit(":", 1)[1]), int(admin)

    ib = harness.connect(argparse.Namespace(port=port), client_id=1)
    assert ib.managedAccounts() == ["DU7654321"]
    bad = subprocess.run([*_RUN, "--admin-port", str(admin_port), "--send", "bogus"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout.startswith("error: unknown command")
    sent = subprocess.run(
        [*_RUN, "--admin-port", str(admin_port), "--send", "status"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sent.returncode == 0 and sent.stdout.startswith("ok {") and '"clients": [1]' in sent.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
