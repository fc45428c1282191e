"""The live engine as a real process (``quayside engine run``) on real /dev/shm rings.

The test is the gateway, the broker and a feed reader at once: it writes quotes, order statuses
and fills into the inbound ring, reads orders and cancels from the outbound ring, sends operator
commands through ``quayside control`` and the control ring, and checks what the engine publishes
on the feed. The machine has 2 shared cores, so the engine runs with its default wait strategy
(spin-yield when no core is isolated), which the start-up banner must say.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from _engine_harness import (
    QUAYSIDE,
    TIMEOUT,
    LiveEngine,
    fill,
    order_status,
    quote,
    record,
    ring_paths,
    toml_text,
)

from quayside.core import wire
from quayside.core.feed.idle import WaitStrategy
from quayside.core.feed.ring import CommandWriter
from quayside.core.wire import ControlCommand, DenyReason, LimitId, LogCode, OrderStatus, RecordKind, Side

EURUSD = 1
TICK = 0.00005
QTY = 100.0
CONFIG = {
    "heartbeat_ms": 200.0,
    "strategy": {
        "name": "crossover",
        "instruments": ["EURUSD"],
        "params": {"fast_span": 2, "slow_span": 4, "threshold_bps": 0.0, "order_qty": QTY},
    },
    "risk": {
        "duplicate_window_ms": 0.0,
        "defaults": {"max_order_qty": 1000.0, "max_long_position": 1000.0, "max_short_position": 1000.0},
    },
}


def at_mid(mid: float) -> np.ndarray:
    return quote(EURUSD, round(mid - TICK, 5), round(mid + TICK, 5))


def check_order(order: np.void, *, order_id: int, side: int, price: float, qty: float, trigger: np.ndarray) -> None:
    """An IOC limit of the crossover, and the per-stage timestamps of the quote that triggered it."""
    assert order["kind"] == RecordKind.ORDER
    assert (order["instrument_id"], order["strategy_id"], order["order_id"]) == (EURUSD, 1, order_id)
    assert (order["side"], order["order_type"], order["tif"]) == (side, wire.OrderType.LIMIT, wire.TimeInForce.IOC)
    assert order["price"] == pytest.approx(price, abs=1e-12)
    assert order["quantity"] == qty
    ts_recv = int(trigger.view(wire.quote_dtype)["ts_recv"][0])
    assert order["ts_recv"] == ts_recv  # the gateway's receipt time of the triggering quote
    seen = ts_recv + int(order["dt_queue_ns"])
    decided = seen + int(order["dt_decide_ns"])
    assert 0 < order["dt_queue_ns"] < 30e9  # seen after the test wrote it, and not absurdly late
    assert decided <= order["ts_event"]  # sent after decided
    assert order["ts_event"] - ts_recv < 30e9


def check_only(records: np.ndarray, allowed: set[int]) -> None:
    kinds = {int(k) for k in records["kind"]} - {RecordKind.HEARTBEAT}
    assert kinds <= allowed, f"unexpected kinds {[wire.enum_name(RecordKind, k) for k in kinds - allowed]}"


def test_live_engine_trades_obeys_control_and_stops_cleanly(shm_dir, tmp_path):
    engine = LiveEngine(CONFIG, shm_dir, tmp_path)
    try:
        started = engine.start()
        assert (started["i0"], started["i1"]) == (0, WaitStrategy.SPIN_YIELD)  # cpu, wait strategy
        assert os.sched_getaffinity(engine.proc.pid) == {0}  # the loop's thread is pinned

        # --- rising mids: after the warm-up (slow_span quotes) the fast EMA is above the slow one
        for mid in (1.1000, 1.1001, 1.1002):
            engine.send(at_mid(mid))
            assert engine.poll_outbound() == []
        trigger = at_mid(1.1003)
        engine.send(trigger)
        buy = engine.next_outbound()
        check_order(buy, order_id=1, side=Side.BUY, price=1.10035, qty=QTY, trigger=trigger)
        on_feed = engine.next_feed(RecordKind.ORDER, order_id=1)
        for part in (slice(0, 8), slice(16, 64)):  # the same record (but its seq) on the feed
            assert on_feed.tobytes()[part] == buy.tobytes()[part]

        # --- the broker acknowledges and fills it in two parts; commission not yet known
        engine.send(order_status(buy, OrderStatus.SUBMITTED), fill(buy, 60.0, 1.10035, fill_id=1))
        echoed = engine.next_feed(RecordKind.FILL, order_id=1, fill_id=1)
        assert np.isnan(echoed["commission"]) and not echoed["flags"] & wire.Flag.COMMISSION_KNOWN
        pos = engine.next_feed(RecordKind.POSITION)
        assert (pos["quantity"], pos["avg_price"], pos["working_buy_qty"]) == (60.0, 1.10035, 40.0)
        assert pos["origin"] == wire.PositionOrigin.ENGINE
        engine.send(fill(buy, 40.0, 1.10030, fill_id=2), order_status(buy, OrderStatus.FILLED, filled=QTY))
        pos = engine.next_feed(RecordKind.POSITION)
        assert pos["quantity"] == QTY and pos["working_buy_qty"] == 0.0
        assert pos["avg_price"] == pytest.approx((60 * 1.10035 + 40 * 1.10030) / 100, abs=1e-12)
        engine.send(at_mid(1.1003))  # on target: nothing to do
        assert engine.poll_outbound() == []

        # --- the mid falls: the signal flips, the order is for the difference (+100 -> -100)
        trigger = at_mid(1.0990)
        engine.send(trigger)
        sell = engine.next_outbound()
        check_order(sell, order_id=2, side=Side.SELL, price=1.09895, qty=2 * QTY, trigger=trigger)
        engine.send(order_status(sell, OrderStatus.SUBMITTED))
        engine.send(at_mid(1.0989))  # an order is working: the strategy waits
        assert engine.poll_outbound() == []

        # --- halt from the command line: the working order is cancelled in the same loop iteration
        assert "sent halt" in engine.control("halt")
        ctl = engine.next_feed(RecordKind.CONTROL, command=ControlCommand.HALT)
        i = engine.last_feed_index
        state = engine.next_feed(RecordKind.LOG, code=LogCode.STATE_CHANGED)
        cancel_on_feed = engine.next_feed(RecordKind.CANCEL, order_id=2)
        applied = engine.next_feed(RecordKind.LOG, code=LogCode.CONTROL_APPLIED)
        assert engine.last_feed_index == i + 3  # control, state change, cancel, acknowledgement: back to back
        assert (state["i0"], state["i1"]) == (wire.TradingState.ACTIVE, wire.TradingState.HALTED)
        assert (applied["i0"], applied["i1"]) == (ControlCommand.HALT, ctl["command_id"])
        cancel = engine.next_outbound()
        assert cancel["kind"] == RecordKind.CANCEL and cancel_on_feed["kind"] == RecordKind.CANCEL
        assert (cancel["order_id"], cancel["reason"], cancel["instrument_id"]) == (2, ControlCommand.HALT, EURUSD)
        engine.send(order_status(sell, OrderStatus.CANCELLED))

        # --- halted: every decision is denied, nothing goes out
        engine.feed.poll()  # everything up to here (send() waits until the engine handled it)
        mark = len(engine.feed.records)
        for mid in (1.0988, 1.0987, 1.0986):
            trigger = at_mid(mid)
            engine.send(trigger)
            d = engine.next_feed(RecordKind.DENIAL)
            assert d["ts_recv"] == trigger.view(wire.quote_dtype)["ts_recv"][0] <= d["ts_event"]
            assert (d["reason"], d["side"], d["quantity"], d["order_id"]) == (
                DenyReason.TRADING_HALTED,
                Side.SELL,
                2 * QTY,
                3,
            )
        assert engine.poll_outbound() == []
        engine.feed.poll()
        check_only(engine.feed.records[mark:], {RecordKind.QUOTE, RecordKind.DENIAL})

        # --- a smaller order-size limit, then resume: the next decision is denied for size
        engine.control("set-limit", "MAX_ORDER_QTY", "50")
        changed = engine.next_feed(RecordKind.LOG, code=LogCode.LIMIT_CHANGED)
        assert (changed["i0"], changed["a0"], changed["a1"]) == (LimitId.MAX_ORDER_QTY, 1000.0, 50.0)
        engine.control("resume")
        engine.next_feed(RecordKind.LOG, code=LogCode.CONTROL_APPLIED, i0=ControlCommand.RESUME)
        engine.send(at_mid(1.0985))
        d = engine.next_feed(RecordKind.DENIAL)
        assert (d["reason"], d["limit"], d["quantity"]) == (DenyReason.MAX_ORDER_QTY, 50.0, 2 * QTY)
        assert engine.poll_outbound() == []

        # --- the limit back up, through a control record written straight into the ring
        ctl_writer = CommandWriter(engine.rings["control"], engine.config["rings"]["control_capacity"])
        try:
            ctl_writer.offer(
                record(
                    wire.control_dtype,
                    RecordKind.CONTROL,
                    command_id=77,
                    command=ControlCommand.SET_LIMIT,
                    limit_id=LimitId.MAX_ORDER_QTY,
                    value=1000.0,
                )
            )
        finally:
            ctl_writer.close()
        engine.next_feed(RecordKind.LOG, code=LogCode.LIMIT_CHANGED, i1=77)
        trigger = at_mid(1.0984)
        engine.send(trigger)
        sell = engine.next_outbound()
        check_order(sell, order_id=3, side=Side.SELL, price=1.09835, qty=2 * QTY, trigger=trigger)
        engine.send(fill(sell, -2 * QTY, 1.09835, fill_id=3), order_status(sell, OrderStatus.FILLED, filled=2 * QTY))
        pos = engine.next_feed(RecordKind.POSITION)
        assert (pos["quantity"], pos["avg_price"]) == (-QTY, 1.09835)  # through zero: the new side's price

        # --- heartbeats carry the counters
        sent = engine.sent
        engine.wait_until(
            lambda: engine.feed.poll() >= 0 and _last_heartbeat(engine)["events_in"] == sent,
            "a heartbeat that counts every inbound record",
        )
        beats = engine.feed.of_kind(RecordKind.HEARTBEAT)
        assert len(beats) >= 3
        assert np.all(np.diff(beats["loop_iterations"].astype(np.int64)) > 0)
        assert np.all(np.diff(beats["ts_event"]) >= 0)
        last = beats[-1]
        assert (last["orders_out"], last["denials"], last["fills"], last["backpressure"]) == (4, 4, 3, 0)
        assert (last["cpu"], last["wait_strategy"], last["trading_state"]) == (
            0,
            WaitStrategy.SPIN_YIELD,
            wire.TradingState.ACTIVE,
        )

        # --- SIGTERM: a clean stop, announced on the feed, the feed marked closed
        assert engine.terminate() == 0
        stopped = engine.next_feed(RecordKind.LOG, code=LogCode.ENGINE_STOPPED)
        assert stopped["i0"] >= beats[-1]["loop_iterations"]
        engine.feed.poll()
        assert engine.feed.reader.closed
        final = engine.feed.of_kind(RecordKind.HEARTBEAT)[-1]
        assert (final["events_in"], final["orders_out"], final["fills"]) == (sent, 4, 3)
    finally:
        engine.close()

    out = engine.output()
    assert "cpu: pinned to 0" in out
    assert "wait strategy: spin-yield (no isolated core to burn)" in out
    assert "real-time scheduling: not requested; memory: " in out
    assert "memory: locked (mlockall)" in out or "memory: not locked (" in out  # either way, said plainly
    assert f"engine stopped after {sent} inbound records" in out


def _last_heartbeat(engine: LiveEngine) -> np.void:
    beats = engine.feed.of_kind(RecordKind.HEARTBEAT)
    return beats[-1]


# --------------------------------------------------------------------------- bad configurations

_GOOD_STRATEGY = CONFIG["strategy"]
BAD_CONFIGS = {
    "unknown-key": ({"bogus_key": 1}, ["bogus_key", "Extra inputs are not permitted"]),
    "unknown-risk-key": ({"risk": {"max_order_qtyy": 5.0}}, ["risk.max_order_qtyy", "Extra inputs"]),
    "unknown-strategy": (
        {"strategy": {**_GOOD_STRATEGY, "name": "no_such_strategy"}},
        ["cannot import strategy 'no_such_strategy'", "crossover, market_maker"],
    ),
    "fast-not-shorter": (
        {"strategy": {**_GOOD_STRATEGY, "params": {"fast_span": 10, "slow_span": 5}}},
        ["fast_span (10) must be shorter than slow_span (5)"],
    ),
    "unknown-param": (
        {"strategy": {**_GOOD_STRATEGY, "params": {"fast_spam": 3}}},
        ["strategy 'crossover' parameters", "fast_spam"],
    ),
    "instrument-not-in-registry": (
        {"strategy": {**_GOOD_STRATEGY, "instruments": ["EURUSD", "XAUUSD"]}},
        ["not in the registry: XAUUSD"],
    ),
}


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory):
    """Start every bad-configuration engine at once (each pays the interpreter start-up)."""
    runs = {}
    for case, (override, _) in BAD_CONFIGS.items():
        folder = tmp_path_factory.mktemp(case)
        rings = folder / "rings"
        rings.mkdir()
        config = {**CONFIG, **override, "rings": ring_paths(rings)}
        path = folder / "engine.toml"
        path.write_text(toml_text(config))
        cmd = [QUAYSIDE, "engine", "run", "--config", str(path), "--cpu", "0", "--duration", "5"]
        runs[case] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), path, rings)
    yield runs
    for proc, _, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configuration_fails_fast_naming_the_problem(bad_config_runs, case):
    proc, path, rings = bad_config_runs[case]
    out, err = proc.communicate(timeout=3 * TIMEOUT)  # six interpreters start at once
    assert proc.returncode == 2, f"{case}: exit {proc.returncode}\n{out}\n{err}"
    assert err.startswith("quayside engine: "), err
    for words in BAD_CONFIGS[case][1]:
        assert words in err, err
    if case.startswith("unknown") and "strategy" not in case and "param" not in case:
        assert str(path) in err  # schema errors name the file
    assert "ready in" not in out + err  # no banner: nothing started
    assert list(rings.iterdir()) == []  # no ring was created
