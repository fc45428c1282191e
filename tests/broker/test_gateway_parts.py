"""The gateway's parts on their own: execId arithmetic, the ledger and its journal, the rate
limiter and the reconnection back-off, the inbound writer on a real (tiny) ring, the
reconciliation state machine, the engine's positions read from a real feed ring, and the one
module that knows the client library."""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest

from quayside.core import wire
from quayside.core.broker.ib import IbLibrary, ns_of, price_or_nan
from quayside.core.broker.inbound import InboundWriter, Records
from quayside.core.broker.ledger import Ledger, OrderEntry, exec_base, exec_version, order_ref, parse_order_ref
from quayside.core.broker.ratelimit import Backoff, RateLimiter
from quayside.core.broker.reconcile import EngineView, Reconciler
from quayside.core.feed.ring import CommandReader, FeedWriter
from quayside.core.instruments import default_registry
from quayside.core.wire import ControlCommand, LogCode, OrderType, RecordKind, Side, TimeInForce


def test_exec_ids_and_order_refs():
    assert exec_base("0000e0d5.6581c1ef.01.01") == "0000e0d5.6581c1ef.01"
    assert exec_version("0000e0d5.6581c1ef.01.02") == 2 and exec_version("0000e0d5.6581c1ef.01.0a") == 10
    assert exec_version("nodots") == 0 and exec_base("nodots") == "nodots"
    assert order_ref(3, 12345) == "qs:3:12345" and parse_order_ref("qs:3:12345") == (3, 12345)
    for foreign in ("", "manual", "qs:x:1", "qs:1:2:3", "ab:1:2"):
        assert parse_order_ref(foreign) is None


def _entry(eid: int, **kw) -> OrderEntry:
    return OrderEntry(eid, 1, 3, Side.BUY, 10.0, time.time_ns(), **kw)


def test_the_ledger_survives_a_restart_through_its_journal(tmp_path):
    path = tmp_path / "state.jsonl"
    ledger = Ledger.open(path)
    assert ledger.fresh
    e = _entry(1, order_type=OrderType.LIMIT, tif=TimeInForce.DAY, price=1.5)
    ledger.add_order(e)
    e.client_id, e.ib_order_id, e.perm_id = 11, 42, 9001
    ledger.update_order(e)
    now = time.time_ns()
    fields = dict(engine_id=1, instrument_id=3, strategy_id=1, quantity=10.0, price=1.5, ts_event=now, ts_recv=now)
    ledger.new_fill("a.01", exec_id="a.01.01", **fields)
    old = dict(fields, ts_recv=now - 3 * 86_400 * 10**9)
    ledger.new_fill("b.01", exec_id="b.01.01", **old)  # three days old: compacted away
    ledger.set_blocked(3, True)
    ledger.close()
    with open(path, "a") as f:
        f.write('{"k": "order", "d": {"engine_id": 2')  # a torn last line
    again = Ledger.open(path)
    assert not again.fresh and list(again.fills) == ["a.01"] and again.next_fill_id == 3
    restored = again.find_order(11, 42)
    assert restored is again.orders[1] and again.find_order(perm_id=9001) is restored
    assert (restored.price, restored.tif) == (1.5, TimeInForce.DAY)
    assert again.blocked == {3}
    again.close()
    assert len(path.read_text().splitlines()) == 4  # compacted: meta, order, fill, blocked


def test_a_reused_engine_order_id_displaces_the_working_order():
    ledger = Ledger()
    old = _entry(1, client_id=11, ib_order_id=5)
    ledger.add_order(old)
    new = _entry(1)
    assert ledger.add_order(new) is old  # the engine restarted: id 1 is another order now
    assert ledger.find_order(11, 5) is old and not ledger.is_current(old) and ledger.is_current(new)
    assert ledger.displaced == {(11, 5): old}


def test_the_rate_limiter_lets_rate_plus_burst_through_and_backs_off():
    now = [0.0]
    limiter = RateLimiter(40.0, burst=5, backoff_s=5.0, clock=lambda: now[0])
    assert sum(limiter.try_acquire() for _ in range(10)) == 5  # the burst
    sent = 0
    for _ in range(1000):  # one second in 1 ms steps
        now[0] += 0.001
        sent += limiter.try_acquire()
    assert sent == 40
    limiter.back_off()
    assert limiter.rate == 20.0 and not limiter.try_acquire()
    now[0] += 1.0
    assert sum(limiter.try_acquire() for _ in range(30)) == 5  # refilled at half speed, capped at the burst
    now[0] += 5.0
    assert limiter.rate == 40.0 and limiter.backoffs == 1
    assert limiter.wait_time() == 0.0


def test_the_rate_limiter_waits_on_the_event_loop():
    limiter = RateLimiter(200.0, burst=1)

    async def send(n):
        for _ in range(n):
            await limiter.acquire()

    t0 = time.monotonic()
    asyncio.run(send(21))
    assert time.monotonic() - t0 >= 0.09 and limiter.waits >= 19


def test_backoff_grows_to_the_maximum_with_seeded_jitter():
    a, b = Backoff(0.5, 4.0, 2.0, 0.2, seed=1), Backoff(0.5, 4.0, 2.0, 0.2, seed=1)
    waits = [a.next() for _ in range(6)]
    assert waits == [b.next() for _ in range(6)]
    for w, base in zip(waits, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= w <= 1.2 * base
    a.reset()
    assert a.next() <= 0.6


def test_the_inbound_writer_conflates_quotes_and_never_drops_fills(shm_dir):
    writer = InboundWriter(shm_dir / "in", 4, queue_capacity=3)
    reader = CommandReader(shm_dir / "in", 4)
    r = Records()
    now = time.time_ns()
    for k in range(4):  # fills the ring
        writer.send(r.quote(1, now, now, 1.0 + k, 2.0 + k, 1, 1))
    fill = r.fill(
        strategy_id=1, iid=1, order_id=7, fill_id=1, price=1.5, quantity=3.0, commission=math.nan, ts_event=now
    )
    writer.send(fill)
    writer.send(r.quote(1, now, now, 10.0, 11.0, 1, 1))
    writer.send(r.quote(2, now, now, 20.0, 21.0, 1, 1))
    writer.send(r.quote(1, now, now, 12.0, 13.0, 1, 1))  # replaces the waiting quote of instrument 1
    writer.send(r.trade(1, now, now, 1.5, 1))
    writer.send(r.trade(1, now, now, 1.6, 1))  # beyond the queue's capacity: dropped
    status = r.order_status(strategy_id=1, iid=1, order_id=7, status=wire.OrderStatus.FILLED, ts_event=now)
    writer.send(status)  # never dropped
    assert (writer.waiting, writer.conflated, writer.dropped, writer.fills_waiting) == (5, 1, 1, 1)
    assert not writer.engine_caught_up()
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 9 and time.monotonic() < deadline:
        got.extend(reader.poll().copy())
        writer.flush()
    kinds = [int(x["kind"]) for x in got]
    quote, trade, fill, st = RecordKind.QUOTE, RecordKind.TRADE, RecordKind.FILL, RecordKind.ORDER_STATUS
    assert kinds == [quote] * 4 + [fill, quote, quote, trade, st]  # in order, nothing lost but the dropped trade
    q = np.array(got[5:7]).view(wire.quote_dtype)
    assert q["bid_price"].tolist() == [12.0, 20.0]  # the newest quote of 1, in its place in line
    assert [int(x["seq"]) for x in got] == list(range(9))
    assert writer.engine_caught_up()
    writer.close()
    reader.close()


def test_a_break_needs_the_same_difference_in_consecutive_checks():
    sent: list = []
    rec = Reconciler(
        send_control=lambda cmd, iid: sent.append(("control", cmd, iid)),
        send_log=lambda code, level, iid, a0, a1: sent.append(("log", code, iid, a0, a1)),
        blocked=set(),
        confirmations=3,
    )
    rec.check({1: 100.0}, {1: 0.0}, {})  # a fill in flight ...
    rec.check({1: 200.0}, {1: 200.0}, {})  # ... arrived
    rec.check({1: 200.0}, {1: 250.0}, {})
    rec.check({1: 200.0}, {1: 250.0}, {})
    assert sent == []
    rec.check({1: 300.0}, {1: 350.0}, {})  # the same difference a third time, positions moving on
    assert sent == [("log", LogCode.RECONCILIATION_BREAK, 1, 300.0, 350.0), ("control", ControlCommand.BLOCK, 1)]
    rec.check({1: 300.0}, {1: 350.0}, {})  # reported once
    rec.check({1: 300.0}, {1: 300.0}, {})
    assert len(sent) == 2  # one agreeing check is not enough
    rec.check({1: 300.0}, {1: 300.0}, {})
    assert sent[2:] == [
        ("control", ControlCommand.UNBLOCK, 1),
        ("log", LogCode.RECONCILIATION_RESOLVED, 1, 300.0, 300.0),
    ]
    for _ in range(3):
        rec.check({}, {}, {2: 1})  # an orphan order
    assert sent[-1] == ("control", ControlCommand.BLOCK, 2) and rec.blocked == {2}
    rec.engine_restarted()
    assert rec.blocked == set()


def test_the_engine_view_reads_position_records_and_sees_a_restart(shm_dir):
    def position(iid, qty, origin=wire.PositionOrigin.ENGINE):
        rec = np.zeros(1, wire.position_dtype)
        rec["kind"], rec["version"], rec["instrument_id"] = RecordKind.POSITION, 1, iid
        rec["quantity"], rec["origin"] = qty, origin
        return rec

    view = EngineView(str(shm_dir / "feed"))
    assert not view.available() and not view.refresh()
    feed = FeedWriter(shm_dir / "feed", 64)
    feed.publish(position(1, 5.0))
    feed.publish(position(1, 7.0))
    feed.publish(position(2, -3.0, origin=wire.PositionOrigin.BROKER))  # not the engine's
    assert view.refresh() and view.positions == {1: 7.0}
    feed.close()  # the engine restarts: a new feed file
    feed = FeedWriter(shm_dir / "feed", 64, replace=True)
    assert view.refresh() and view.positions == {} and view.restarts == 1
    feed.publish(position(3, 1.0))
    assert view.refresh() and view.positions == {3: 1.0}
    view.close()
    feed.close()


@pytest.fixture
def event_loop_for_ib():
    from quayside.core.broker.sim.testing import IbEventLoop

    with IbEventLoop() as loop:  # importing the library wants an event loop in this thread
        yield loop


def test_the_library_module_builds_contracts_and_orders(event_loop_for_ib):
    lib = IbLibrary("ib_insync")
    reg = default_registry()
    eur, jpy, aapl, es = (lib.contract(i) for i in reg)
    assert (eur.secType, eur.symbol, eur.currency, eur.exchange) == ("CASH", "EUR", "USD", "IDEALPRO")
    assert (jpy.symbol, jpy.currency) == ("USD", "JPY")
    assert (aapl.secType, aapl.symbol, aapl.exchange, aapl.primaryExchange) == ("STK", "AAPL", "SMART", "NASDAQ")
    assert (es.secType, es.localSymbol, es.lastTradeDateOrContractMonth) == ("FUT", "ESZ6", "20261218")
    o = lib.order(
        side=Side.SELL,
        order_type=OrderType.LIMIT,
        tif=TimeInForce.IOC,
        price=1.0850000000000002,
        quantity=1000.0,
        order_ref="qs:1:9",
        account="DU1",
        tick_size=0.00005,
    )
    assert (o.action, o.orderType, o.lmtPrice, o.tif, o.orderRef, o.account) == (
        "SELL",
        "LMT",
        1.085,
        "IOC",
        "qs:1:9",
        "DU1",
    )
    m = lib.order(
        side=Side.BUY,
        order_type=OrderType.MARKET,
        tif=1,
        price=math.nan,
        quantity=2,
        order_ref="",
        account="",
        tick_size=0.01,
    )
    assert (m.action, m.orderType, m.tif) == ("BUY", "MKT", "DAY")
    for bad in ({"side": 0}, {"tif": 9}, {"quantity": 0.0}, {"price": math.nan}, {"order_type": 7}):
        args = dict(side=1, order_type=2, tif=1, price=1.0, quantity=1.0, order_ref="", account="", tick_size=0.01)
        with pytest.raises(ValueError):
            lib.order(**{**args, **bad})
    with pytest.raises(ValueError, match="library"):
        IbLibrary("ibapi")
    assert ns_of(None, 5) == 5 and price_or_nan(-1.0) != price_or_nan(-1.0) and price_or_nan(1.5) == 1.5


def test_only_one_module_imports_the_client_library():
    from pathlib import Path

    import quayside.core.broker as broker

    folder = Path(broker.__file__).parent
    importers = sorted(
        p.name
        for p in folder.glob("*.py")
        if any(w in p.read_text() for w in ("import ib_insync", "from ib_insync", "import ib_async", "from ib_async"))
    )
    assert importers == []  # not even ib.py names it in an import statement: importlib does
    assert "importlib.import_module(name)" in (folder / "ib.py").read_text()
