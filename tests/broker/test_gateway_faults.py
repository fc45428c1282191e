"""The broker's real failure modes, injected by the simulated IB Gateway, each handled by the
gateway (real ib_insync client inside) with the test as the engine; every test ends with the
engine's fills and positions checked against the simulator's executions."""

from __future__ import annotations

import time

import pytest

from quayside.core import wire
from quayside.core.broker.sim.testing import no_decode_errors
from quayside.core.broker.testing import BackgroundBrokerGateway, GatewayRig, wait_for
from quayside.core.wire import ControlCommand, Flag, LogCode, OrderStatus, RecordKind, Side

EURUSD, AAPL = 1, 3


@pytest.fixture(autouse=True)
def decode_errors():
    with no_decode_errors() as watch:
        yield watch


@pytest.fixture
def rigs(shm_dir):
    made: list[GatewayRig] = []

    def make(sim_options=None, *, pause=True, **options) -> GatewayRig:
        rig = GatewayRig(shm_dir, sim_options, **options)
        made.append(rig)
        return rig.settle(EURUSD, AAPL, pause=pause)

    yield make
    for rig in made:
        rig.close()


def messages(rig) -> int:
    return rig.gateway.stats()["messages_limited"]


def controls(eng) -> list[tuple[int, int]]:
    return [(int(c["command"]), int(c["instrument_id"])) for c in eng.of_kind(RecordKind.CONTROL)]


def broker_logs(eng, code: int) -> list[int]:
    return [int(r["i0"]) for r in eng.of_kind(RecordKind.LOG, code=code)]


def quotes_after(eng, index: int, iid: int) -> int:
    eng.poll()
    return sum(1 for r in eng.records[index:] if r["kind"] == RecordKind.QUOTE and r["instrument_id"] == iid)


def test_restart_window_reconnects_resubscribes_and_loses_or_repeats_nothing(rigs):
    rig = rigs()
    eng, gw = rig.engine, rig.gateway
    bid = rig.book(AAPL).bid
    resting = eng.order(AAPL, Side.BUY, 10, round(bid - 1.0, 2))  # fills during the outage
    to_cancel = eng.order(AAPL, Side.BUY, 3, round(bid - 3.0, 2))  # cancelled during the outage
    eng.wait(RecordKind.ORDER_STATUS, order_id=resting, status=OrderStatus.SUBMITTED)
    eng.wait(RecordKind.ORDER_STATUS, order_id=to_cancel, status=OrderStatus.SUBMITTED)

    def stall(g):  # the next order waits in ib_insync's own throttle, which a dropped socket discards
        g.ib.client.MaxRequests, g.ib.client.RequestsInterval = 1, 60
        return g.ib.client.isConnected()

    assert gw.call(stall)
    lost = eng.order(AAPL, Side.BUY, 7, round(bid - 2.0, 2))
    eng.wait(RecordKind.ORDER_STATUS, order_id=lost, status=OrderStatus.PENDING_SUBMIT)
    assert "API port closed for 2 s" in rig.sim.command("drop 2")
    eng.wait(RecordKind.LOG, code=LogCode.BROKER_DISCONNECTED)
    assert (ControlCommand.MARK_STALE, 0) in controls(eng)
    rig.sim.call(lambda g: g.broker.on_trade(AAPL, bid - 1.5))  # the market trades through `resting`
    eng.cancel(to_cancel, AAPL)
    refused = eng.order(AAPL, Side.SELL, 1, round(bid + 5, 2))
    (st,) = eng.wait(RecordKind.ORDER_STATUS, order_id=refused)
    assert (st["status"], st["error_code"]) == (OrderStatus.REJECTED, 504)  # not connected: not queued
    mark = len(eng.records)
    rig.sim.command("resume")
    eng.wait(RecordKind.LOG, code=LogCode.BROKER_CONNECTED, count=2, timeout=30)
    fill = eng.wait(RecordKind.FILL, order_id=resting)[0]
    assert fill["quantity"] == 10.0 and fill["flags"] & Flag.COMMISSION_KNOWN
    eng.wait(RecordKind.ORDER_STATUS, order_id=resting, status=OrderStatus.FILLED)
    eng.wait(RecordKind.ORDER_STATUS, order_id=to_cancel, status=OrderStatus.CANCELLED)
    eng.wait(RecordKind.ORDER_STATUS, order_id=lost, status=OrderStatus.INACTIVE)
    (log,) = eng.of_kind(RecordKind.LOG, code=LogCode.ORDER_NOT_AT_BROKER)
    assert (log["i0"], log["instrument_id"]) == (lost, AAPL)
    wait_for(lambda: quotes_after(eng, mark, EURUSD) and quotes_after(eng, mark, AAPL), "quotes after the reconnect")
    assert {(ControlCommand.MARK_FRESH, EURUSD), (ControlCommand.MARK_FRESH, AAPL)} <= set(controls(eng))
    stats = gw.stats()
    assert (stats["connections"], stats["disconnects"], stats["fills"]) == (2, 1, 1)
    assert rig.sim.call(lambda g: len(g.broker.working_orders())) == 0
    rig.check_fills_exact()


def test_a_killed_socket_before_the_commission_report_still_delivers_it_once(rigs):
    rig = rigs({"commission_delay_ms": 800})
    eng = rig.engine
    oid = eng.order(EURUSD, Side.BUY, 25_000)
    eng.wait(RecordKind.FILL, order_id=oid)
    rig.sim.command("drop")  # before the report
    eng.wait(RecordKind.LOG, code=LogCode.BROKER_CONNECTED, count=2, timeout=30)
    commission = eng.wait(RecordKind.FILL, count=2, order_id=oid, timeout=30)[1]
    assert commission["quantity"] == 0.0 and commission["flags"] == Flag.COMMISSION_KNOWN
    time.sleep(1.0)
    assert len(eng.fills(oid)) == 2
    rig.check_fills_exact()


def test_connectivity_lost_and_restored_with_data_kept_1100_1102(rigs):
    rig = rigs(pause=False)
    eng = rig.engine
    rig.sim.command("error 1100")
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_STALE, instrument_id=0)
    assert 1100 in broker_logs(eng, LogCode.BROKER_ERROR)
    time.sleep(0.3)
    mark = len(eng.records)
    time.sleep(0.5)
    assert quotes_after(eng, mark, EURUSD) == 0  # IB lost: no data
    before = messages(rig)
    rig.sim.command("error 1102")
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_FRESH, instrument_id=EURUSD)
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_FRESH, instrument_id=AAPL)
    assert 1102 in broker_logs(eng, LogCode.BROKER_ERROR)
    # between the news and the fresh quote, quotes are flagged STALE (ticks of the packet that
    # brought the 1100); the one that made it fresh is not
    kinds = [(int(r["kind"]), r) for r in eng.records]
    stale_at = next(
        i for i, (k, r) in enumerate(kinds) if k == RecordKind.CONTROL and r["command"] == ControlCommand.MARK_STALE
    )
    fresh_at = next(
        i
        for i, (k, r) in enumerate(kinds)
        if k == RecordKind.CONTROL and r["command"] == ControlCommand.MARK_FRESH and r["instrument_id"] == EURUSD
    )
    between = [r for k, r in kinds[stale_at:fresh_at] if k == RecordKind.QUOTE and r["instrument_id"] == EURUSD]
    assert between and not between[-1]["flags"] & Flag.STALE
    assert all(r["flags"] & Flag.STALE for r in between[:-1])
    subs = lambda: rig.sim.call(lambda g: sorted(k for s in g.sessions.values() for k, *_ in s.subs.values()))  # noqa: E731
    wait_for(lambda: messages(rig) >= before + 8 + 4, "the resubscription (4 cancels, 4 requests) and the sync")
    assert subs() == ["bidask", "bidask", "mkt", "mkt"]  # resubscribed, the old ones cancelled first
    oid = eng.order(EURUSD, Side.BUY, 10_000)  # and trading goes on
    eng.wait(RecordKind.ORDER_STATUS, order_id=oid, status=OrderStatus.FILLED)
    rig.check_fills_exact()


def test_restored_with_data_lost_1101_resubscribes(rigs):
    rig = rigs(pause=False)
    eng = rig.engine
    rig.sim.command("error 1100")
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_STALE)
    rig.sim.command("error 1101")  # the simulator drops every subscription, as IB does
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_FRESH, instrument_id=EURUSD, timeout=30)
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_FRESH, instrument_id=AAPL, timeout=30)
    assert 1101 in broker_logs(eng, LogCode.BROKER_ERROR)
    mark = len(eng.records)
    wait_for(lambda: quotes_after(eng, mark, EURUSD) >= 3, "quotes after 1101")


def test_data_farm_broken_2103_then_ok_2104(rigs):
    rig = rigs(pause=False)
    eng = rig.engine
    rig.sim.command("halt-data")
    rig.sim.command("error 2103")
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_STALE, instrument_id=0)
    assert 2103 in broker_logs(eng, LogCode.BROKER_ERROR)
    rig.sim.command("error 2106")  # another farm's notice changes nothing
    rig.sim.command("resume-data")
    before = messages(rig)
    rig.sim.command("error 2104")
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_FRESH, instrument_id=EURUSD, timeout=30)
    eng.wait(RecordKind.LOG, code=LogCode.BROKER_ERROR, i0=2104)  # the farm is back: resubscribed
    wait_for(lambda: messages(rig) == before + 8, "the resubscription: 4 cancels, 4 requests")
    assert 2106 not in broker_logs(eng, LogCode.BROKER_ERROR)


def test_client_id_in_use_moves_to_the_next_id(rigs):
    rig = rigs(client_id_fallbacks=[12])
    rig.stop_gateway()
    rig.sim.command("refuse-client-id 11")
    t0 = time.monotonic()
    rig.start_gateway()
    rig.wait_ready()
    assert rig.gateway.stats()["client_id"] == 12
    assert time.monotonic() - t0 < rig.config.connect_timeout_s  # did not sit out the timeout
    oid = rig.engine.order(EURUSD, Side.SELL, 10_000)
    rig.engine.wait(RecordKind.FILL, order_id=oid)
    rig.check_fills_exact()


def test_client_id_in_use_without_a_fallback_ends_the_gateway(shm_dir):
    rig = GatewayRig(shm_dir, start=False)
    try:
        rig.sim.command("refuse-client-id 11")
        t0 = time.monotonic()
        gw = BackgroundBrokerGateway(rig.config).start()
        assert gw.wait_exit(20.0) == 3
        assert time.monotonic() - t0 < rig.config.connect_timeout_s
        assert "every client id (11) is in use" in gw.gateway.fatal
    finally:
        rig.close()


# the pacing tests check positions rarely: the open-orders refresh that goes with each check
# would otherwise be the request the armed pacing fault answers


def test_pacing_violation_on_an_order_rejects_it_and_slows_down(rigs):
    rig = rigs(reconcile_interval_s=60.0)
    eng = rig.engine
    rig.sim.command("pacing")
    paced = eng.order(AAPL, Side.BUY, 5, round(rig.book(AAPL).ask + 0.02, 2))
    (st,) = eng.wait(RecordKind.ORDER_STATUS, order_id=paced, status=OrderStatus.REJECTED, timeout=20)
    assert st["error_code"] == 100 and eng.fills(paced) == []
    assert names_of(eng.statuses(paced)) == ["PENDING_SUBMIT", "REJECTED"]  # never CANCELLED in between
    stats = rig.gateway.stats()
    assert stats["pacing_errors"] == 1 and 100 in broker_logs(eng, LogCode.BROKER_ERROR)
    assert rig.gateway.call(lambda g: g.limiter.backoffs) == 1  # half speed for pacing_backoff_s
    fine = eng.order(AAPL, Side.BUY, 5, round(rig.book(AAPL).ask + 0.02, 2))
    eng.wait(RecordKind.ORDER_STATUS, order_id=fine, status=OrderStatus.FILLED)
    rig.check_fills_exact()


def test_pacing_violation_on_a_cancel_sends_it_again(rigs):
    rig = rigs(reconcile_interval_s=60.0)
    eng = rig.engine
    oid = eng.order(AAPL, Side.SELL, 5, round(rig.book(AAPL).ask + 2.0, 2))
    eng.wait(RecordKind.ORDER_STATUS, order_id=oid, status=OrderStatus.SUBMITTED)
    rig.sim.command("pacing 420")
    eng.cancel(oid, AAPL)
    eng.wait(RecordKind.ORDER_STATUS, order_id=oid, status=OrderStatus.CANCELLED, timeout=20)
    assert rig.sim.call(lambda g: len(g.broker.working_orders())) == 0
    assert rig.gateway.stats()["cancels_sent"] == 2


def test_pacing_violation_on_a_resubscription_is_retried(rigs):
    rig = rigs(pause=False, reconcile_interval_s=60.0)
    eng = rig.engine
    rig.sim.command("error 1100")
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_STALE)
    rig.sim.command("pacing")
    rig.sim.command("error 1101")  # the first reqMktData of the resubscription is refused
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_FRESH, instrument_id=EURUSD, timeout=30)
    eng.wait(RecordKind.CONTROL, command=ControlCommand.MARK_FRESH, instrument_id=AAPL, timeout=30)
    assert rig.gateway.stats()["pacing_errors"] == 1


def test_pacing_violation_during_the_sync_after_a_reconnect(rigs):
    rig = rigs(connect_timeout_s=2.0, request_timeout_s=1.0, reconcile_interval_s=60.0)
    eng = rig.engine
    oid = eng.order(EURUSD, Side.BUY, 10_000)
    eng.wait(RecordKind.FILL, count=2, order_id=oid)
    rig.sim.command("pacing")  # answers the first request after the reconnection
    rig.sim.command("drop")
    eng.wait(RecordKind.LOG, code=LogCode.BROKER_CONNECTED, count=2, timeout=40)
    rig.wait_ready()
    oid2 = eng.order(EURUSD, Side.SELL, 4_000)
    eng.wait(RecordKind.ORDER_STATUS, order_id=oid2, status=OrderStatus.FILLED)
    assert rig.gateway.stats()["pacing_errors"] == 1
    rig.check_fills_exact()


def test_rejected_orders_come_back_rejected_with_the_code(rigs):
    rig = rigs()
    eng = rig.engine
    rig.sim.command("reject-next-order")
    rejected = eng.order(AAPL, Side.BUY, 5, round(rig.book(AAPL).ask, 2))
    (st,) = eng.wait(RecordKind.ORDER_STATUS, order_id=rejected, status=OrderStatus.REJECTED)
    assert st["error_code"] == 201
    assert names_of(eng.statuses(rejected)) == ["PENDING_SUBMIT", "REJECTED"]
    rig.sim.command("reject-next-order 110")  # IB cancels first and says why after (a warning to ib_insync)
    off = eng.order(AAPL, Side.BUY, 5, round(rig.book(AAPL).ask, 2))
    (st,) = eng.wait(RecordKind.ORDER_STATUS, order_id=off, status=OrderStatus.REJECTED)
    assert st["error_code"] == 110
    assert names_of(eng.statuses(off)) == ["PENDING_SUBMIT", "CANCELLED", "REJECTED"]
    fine = eng.order(AAPL, Side.BUY, 5, round(rig.book(AAPL).ask, 2))
    eng.wait(RecordKind.ORDER_STATUS, order_id=fine, status=OrderStatus.FILLED)
    rig.check_fills_exact()


def test_a_duplicated_execution_report_is_not_a_second_fill(rigs):
    rig = rigs()
    eng = rig.engine
    oid = eng.order(AAPL, Side.BUY, 10, round(rig.book(AAPL).ask, 2))
    eng.wait(RecordKind.FILL, count=2, order_id=oid)
    assert rig.sim.command("duplicate-exec").startswith("ok execId")
    time.sleep(0.5)
    assert len(eng.fills(oid)) == 2
    rig.sim.command("drop")  # and the re-requested executions after a reconnect are not either
    eng.wait(RecordKind.LOG, code=LogCode.BROKER_CONNECTED, count=2, timeout=30)
    rig.wait_ready()
    assert len(eng.fills(oid)) == 2 and rig.gateway.stats()["duplicate_executions"] >= 1
    rig.check_fills_exact()


def test_delayed_messages_keep_their_order(rigs):
    rig = rigs()
    eng = rig.engine
    rig.sim.command("delay 300")
    oid = eng.order(EURUSD, Side.BUY, 10_000)
    eng.wait(RecordKind.ORDER_STATUS, order_id=oid, status=OrderStatus.FILLED, timeout=20)
    assert names_of(eng.statuses(oid)) == ["PENDING_SUBMIT", "SUBMITTED", "FILLED"]
    rig.sim.command("delay 0")
    rig.check_fills_exact()


def test_a_corrected_execution_sends_the_difference(rigs):
    """IB corrects an execution by sending it again under the next execId (``….01.02``); the
    simulator cannot, so the correction is handed to the gateway's execution handler as the
    library would deliver it."""
    rig = rigs()
    eng = rig.engine
    oid = eng.order(AAPL, Side.BUY, 10, round(rig.book(AAPL).ask, 2))
    first = eng.wait(RecordKind.FILL, count=2, order_id=oid)[0]

    def correct(g):
        m = g.lib.module
        (orig,) = [f for f in g.ib.fills() if f.execution.execId.endswith(".01.01")]
        ex = m.Execution(**{**orig.execution.__dict__, "execId": orig.execution.execId[:-2] + "02", "shares": 8.0})
        g.router.on_execution(m.Fill(orig.contract, ex, m.CommissionReport(), orig.time))
        g.router.on_commission(ex.execId, 0.8)
        g.router.on_execution(m.Fill(orig.contract, ex, m.CommissionReport(), orig.time))  # repeated: nothing
        return ex.execId

    rig.gateway.call(correct)
    fix, commission = eng.wait(RecordKind.FILL, count=4, order_id=oid)[2:]
    assert fix["fill_id"] == first["fill_id"] and fix["quantity"] == -2.0 and fix["flags"] == Flag.CORRECTION
    assert commission["fill_id"] == first["fill_id"] and commission["commission"] == 0.8
    assert commission["flags"] == Flag.COMMISSION_KNOWN | Flag.CORRECTION and commission["quantity"] == 0.0
    assert eng.position(AAPL) == 8.0 and len(eng.fills(oid)) == 4
    assert rig.gateway.stats()["corrections"] == 1


def names_of(statuses: list[int]) -> list[str]:
    return [wire.enum_name(OrderStatus, s) for s in statuses]
