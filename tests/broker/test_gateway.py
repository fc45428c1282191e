"""The broker gateway end to end: the real ib_insync client inside the gateway, the simulated IB
Gateway on 127.0.0.1, real /dev/shm rings, and the test as the engine (it writes ORDER and
CANCEL records to the outbound ring and reads what the gateway writes to the inbound ring).

Order tests run the simulator's market clock paused, so what fills where is deterministic.
Every test fails if ib_insync could not decode a message, and ends with the engine's fills and
positions checked against the simulator's executions."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from quayside.core import wire
from quayside.core.broker.config import GatewayConfig
from quayside.core.broker.sim.config import DataConfig
from quayside.core.broker.sim.testing import no_decode_errors
from quayside.core.broker.testing import GatewayRig
from quayside.core.wire import Flag, OrderStatus, RecordKind, Side, TimeInForce

EURUSD, AAPL = 1, 3


@pytest.fixture(autouse=True)
def decode_errors():
    with no_decode_errors() as watch:
        yield watch


@pytest.fixture
def rig_factory(shm_dir):
    rigs: list[GatewayRig] = []

    def make(sim_options=None, **options) -> GatewayRig:
        rig = GatewayRig(shm_dir, sim_options, name=f"rig{len(rigs)}-", **options)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


@pytest.fixture
def paused(rig_factory) -> GatewayRig:
    """A rig whose market stands still once both instruments have a two-sided book."""
    rig = rig_factory({"data": DataConfig(speed=20.0)})
    rig.wait_quotes(EURUSD)
    rig.wait_quotes(AAPL)
    rig.sim.command("pause")
    rig.wait_ready()
    return rig


def names(statuses: list[int]) -> list[str]:
    return [wire.enum_name(OrderStatus, s) for s in statuses]


def test_streams_quotes_and_trades_into_the_inbound_ring(rig_factory):
    t0 = time.time_ns()
    rig = rig_factory({"data": DataConfig(speed=20.0)})
    rig.wait_quotes(EURUSD, count=20)
    rig.wait_quotes(AAPL, count=5)
    rig.engine.wait(RecordKind.TRADE, count=3, instrument_id=EURUSD)
    quotes = rig.engine.of_kind(RecordKind.QUOTE, instrument_id=EURUSD)
    for q in quotes:
        assert q["kind"] == RecordKind.QUOTE and q["version"] == wire.VERSIONS[RecordKind.QUOTE]
        assert 0 < q["bid_price"] < q["ask_price"] < 2 and q["bid_size"] > 0 and q["ask_size"] > 0
        assert t0 <= q["ts_event"] <= q["ts_recv"] <= time.time_ns()  # packet arrival, then handled
    assert len({(q["bid_price"], q["ask_price"], q["bid_size"], q["ask_size"]) for q in quotes[1:3]}) == 2
    seqs = [int(r["seq"]) for r in rig.engine.records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one stream, nothing lost
    trade = rig.engine.of_kind(RecordKind.TRADE, instrument_id=EURUSD)[0]
    assert trade["price"] > 0 and trade["size"] > 0
    # the last quote is the simulator's book (the market runs on; compare once it stands still)
    rig.sim.command("pause")
    time.sleep(0.5)
    book, last = rig.book(EURUSD), rig.engine.of_kind(RecordKind.QUOTE, instrument_id=EURUSD)[-1]
    assert (last["bid_price"], last["ask_price"]) == (book.bid, book.ask)
    stats = rig.gateway.stats()
    assert stats["connections"] == 1 and stats["quotes"] >= 25 and stats["records_dropped"] == 0


def test_tick_by_tick_alone_and_market_data_alone_both_stream(rig_factory):
    for tick_by_tick in (False, True):
        rig = rig_factory({"data": DataConfig(speed=20.0)}, tick_by_tick=tick_by_tick, instruments=["EURUSD"])
        rig.wait_quotes(EURUSD, count=10)
        subs = rig.sim.call(lambda g: sorted(k for s in g.sessions.values() for k, *_ in s.subs.values()))
        assert subs == (["bidask", "mkt"] if tick_by_tick else ["mkt"])
        rig.close()


def test_an_order_is_placed_tagged_filled_and_its_commission_follows(paused):
    rig, eng = paused, paused.engine
    rig.sim.command("commission-delay 500")
    ask = rig.book(AAPL).ask
    oid = eng.order(AAPL, Side.BUY, 10, round(ask + 0.02, 2), tif=TimeInForce.IOC)
    fill = eng.wait(RecordKind.FILL, order_id=oid)[0]
    assert (fill["instrument_id"], fill["strategy_id"], fill["quantity"], fill["price"]) == (AAPL, 1, 10.0, ask)
    assert math.isnan(fill["commission"]) and fill["flags"] == 0  # acted on before its commission
    (sim_exec,) = rig.sim_executions()
    assert sim_exec.order_ref == f"qs:1:{oid}" and sim_exec.client_id == rig.config.client_id
    later = eng.wait(RecordKind.FILL, count=2, order_id=oid)[1]
    assert later["fill_id"] == fill["fill_id"] and later["quantity"] == 0.0 and later["commission"] == 1.0
    assert later["flags"] == Flag.COMMISSION_KNOWN and later["ts_recv"] - fill["ts_recv"] > 0.3e9
    assert names(eng.statuses(oid)) == ["PENDING_SUBMIT", "SUBMITTED", "FILLED"]
    sent, filled = eng.of_kind(RecordKind.ORDER_STATUS, order_id=oid)[::2]
    assert sent["broker_order_id"] > 0 and sent["perm_id"] == 0 and sent["ts_event"] > 0
    assert filled["perm_id"] == sim_exec.perm_id and filled["filled_qty"] == 10.0
    assert filled["avg_fill_price"] == pytest.approx(ask, rel=1e-12)
    rig.check_fills_exact()


def test_market_ioc_and_day_orders_and_a_cancel(paused):
    rig, eng = paused, paused.engine
    book = rig.book(EURUSD)
    market = eng.order(EURUSD, Side.SELL, 20_000)  # market order
    resting = eng.order(EURUSD, Side.BUY, 30_000, round(book.bid - 0.001, 5))  # a DAY limit away from the touch
    ioc = eng.order(EURUSD, Side.BUY, 10_000, round(book.bid - 0.001, 5), tif=TimeInForce.IOC)  # not marketable
    eng.wait(RecordKind.FILL, order_id=market)
    eng.wait(RecordKind.ORDER_STATUS, order_id=resting, status=OrderStatus.SUBMITTED)
    eng.wait(RecordKind.ORDER_STATUS, order_id=ioc, status=OrderStatus.CANCELLED)
    assert eng.fills(ioc) == []
    eng.cancel(resting, EURUSD)
    eng.wait(RecordKind.ORDER_STATUS, order_id=resting, status=OrderStatus.CANCELLED)
    assert names(eng.statuses(resting)) == ["PENDING_SUBMIT", "SUBMITTED", "PENDING_CANCEL", "CANCELLED"]
    assert rig.sim.call(lambda g: len(g.broker.working_orders())) == 0
    eng.cancel(resting, EURUSD)  # again, and of an unknown order: nothing happens
    eng.cancel(999, EURUSD)
    time.sleep(0.3)
    assert names(eng.statuses(resting))[-1] == "CANCELLED" and rig.gateway.stats()["cancels_sent"] == 1
    assert rig.sim_position(EURUSD) == -20_000
    rig.check_fills_exact()


def test_a_cancel_that_catches_its_order_still_in_the_gateway(paused):
    rig, eng = paused, paused.engine
    price = round(rig.book(AAPL).bid - 1.0, 2)
    # both written while the gateway's loop is busy with this call: read in one poll
    oid = rig.gateway.call(lambda g: (o := eng.order(AAPL, Side.BUY, 5, price), eng.cancel(o, AAPL))[0])
    eng.wait(RecordKind.ORDER_STATUS, order_id=oid, status=OrderStatus.CANCELLED)
    assert names(eng.statuses(oid)) == ["CANCELLED"]
    assert rig.sim.call(lambda g: g.broker.counters.orders) == 0


def test_partial_fills_report_partially_filled(paused):
    rig, eng = paused, paused.engine
    book = rig.book(AAPL)
    oid = eng.order(AAPL, Side.SELL, 50, round(book.ask + 0.10, 2))
    eng.wait(RecordKind.ORDER_STATUS, order_id=oid, status=OrderStatus.SUBMITTED)

    def fill_part(g):  # the market trades through it, for part of it: the broker fills 20
        order = g.broker.working_orders()[0]
        g.broker._fill(order, 20.0, order.lmt_price, liquidity=1)

    rig.sim.call(fill_part)
    status = eng.wait(RecordKind.ORDER_STATUS, order_id=oid, status=OrderStatus.PARTIALLY_FILLED)[0]
    assert status["filled_qty"] == 20.0
    rig.sim.call(lambda g: g.broker.on_trade(AAPL, book.ask + 1.0))  # the rest
    eng.wait(RecordKind.ORDER_STATUS, order_id=oid, status=OrderStatus.FILLED)
    assert [f["quantity"] for f in eng.fills(oid) if f["quantity"]] == [-20.0, -30.0]
    rig.check_fills_exact()


def test_orders_the_gateway_cannot_send_are_rejected_at_once(paused):
    rig, eng = paused, paused.engine
    unknown = eng.order(99, Side.BUY, 1, 1.0)
    old = eng.order(AAPL, Side.BUY, 1, 1.0, ts=time.time_ns() - 10_000_000_000)
    bad = eng.order(AAPL, 3, 1, 1.0)  # side 3
    for oid, code in ((unknown, 200), (old, -1), (bad, -2)):
        (st,) = eng.wait(RecordKind.ORDER_STATUS, order_id=oid)
        assert (st["status"], st["error_code"]) == (OrderStatus.REJECTED, code)
    assert rig.sim.call(lambda g: g.broker.counters.orders) == 0


def test_a_restarted_gateway_keeps_its_map_and_never_repeats_a_fill(paused):
    rig, eng = paused, paused.engine
    bid = rig.book(AAPL).bid
    first = eng.order(AAPL, Side.BUY, 10, round(bid + 0.5, 2))  # fills
    resting = eng.order(AAPL, Side.BUY, 5, round(bid - 1.0, 2))  # rests
    eng.wait(RecordKind.FILL, count=2, order_id=first)
    eng.wait(RecordKind.ORDER_STATUS, order_id=resting, status=OrderStatus.SUBMITTED)
    assert rig.stop_gateway() == 0
    rig.sim.call(lambda g: g.broker.on_trade(AAPL, bid - 2.0))  # it fills while no gateway runs
    rig.start_gateway()
    rig.wait_ready()
    fill = eng.wait(RecordKind.FILL, order_id=resting)[0]
    assert fill["quantity"] == 5.0 and fill["flags"] & Flag.COMMISSION_KNOWN  # the report came with it
    eng.wait(RecordKind.ORDER_STATUS, order_id=resting, status=OrderStatus.FILLED)
    assert len(eng.fills(first)) == 2  # the first one's fill and commission were not sent again
    assert rig.gateway.stats()["duplicate_executions"] >= 1
    rig.check_fills_exact()


def test_a_gateway_without_state_does_not_invent_fills(paused):
    rig, eng = paused, paused.engine
    oid = eng.order(AAPL, Side.BUY, 10, round(rig.book(AAPL).ask + 0.02, 2))
    eng.wait(RecordKind.FILL, count=2, order_id=oid)
    rig.stop_gateway()
    Path(rig.config.state_file).unlink()
    rig.start_gateway()
    rig.wait_ready()
    time.sleep(0.5)
    assert len(eng.fills(oid)) == 2  # the execution is known at the broker, taken as known
    assert rig.gateway.call(lambda g: [fe.baseline for fe in g.ledger.fills.values()]) == [True]


def test_configuration_from_toml_and_environment(tmp_path):
    from quayside.core.broker.config import ConfigError, load_config

    path = tmp_path / "gateway.toml"
    path.write_text('port = 4001\nclient_id = 3\nclient_id_fallbacks = [4]\ninstruments = ["AAPL"]\n')
    config = load_config(path, environ={"QUAYSIDE_GATEWAY_HOST": "10.0.0.2", "QUAYSIDE_GATEWAY_TICK_BY_TICK": "0"})
    assert (config.host, config.port, config.client_ids, config.tick_by_tick) == ("10.0.0.2", 4001, [3, 4], False)
    assert config.rings.inbound == "quayside-inbound"  # the engine's defaults
    path.write_text("prot = 4001\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="QUAYSIDE_GATEWAY_RINGS"):
        load_config(None, environ={"QUAYSIDE_GATEWAY_RINGS": "x"})
    with pytest.raises(ValueError, match="client_id_fallbacks"):
        GatewayConfig(client_id=1, client_id_fallbacks=[1])
    with pytest.raises(ConfigError, match="NOPE"):
        GatewayConfig(instruments=["NOPE"]).load_registry()


def test_records_carry_the_header_every_reader_expects(paused):
    eng = paused.engine
    eng.poll()
    recs = np.concatenate([np.asarray(r).reshape(1).view(wire.record_dtype) for r in eng.records])
    assert wire.validate(recs).all()
    kinds = {int(k) for k in recs["kind"]}
    assert {RecordKind.QUOTE, RecordKind.LOG} <= kinds
    connected = eng.of_kind(RecordKind.LOG, code=wire.LogCode.BROKER_CONNECTED)[0]
    assert connected["i0"] == paused.config.client_id


def test_the_command_line(tmp_path):
    import subprocess

    from quayside.core.broker.testing import QUAYSIDE

    good = tmp_path / "gateway.toml"
    good.write_text('client_id = 5\ninstruments = ["AAPL", "ESZ6"]\n')
    done = subprocess.run([QUAYSIDE, "gateway", "check-config", str(good)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and '"client_id": 5' in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('instruments = ["NOPE"]\n')
    for args in (["check-config", str(bad)], ["run", "--config", str(bad)]):
        done = subprocess.run([QUAYSIDE, "gateway", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "NOPE" in done.stderr


def test_the_library_is_chosen_by_configuration(shm_dir):
    import importlib.util

    from quayside.core.broker.gateway import Gateway

    rings = {"inbound": str(shm_dir / "i"), "outbound": str(shm_dir / "o"), "feed": str(shm_dir / "f")}
    config = GatewayConfig(library="ib_async", state_file=None, rings=rings)
    if importlib.util.find_spec("ib_async") is None:  # the fork is not a dependency: a clear message
        with pytest.raises(ImportError, match="pip install ib_async"):
            Gateway(config)
    else:
        assert Gateway(config).lib.module.__name__ == "ib_async"
