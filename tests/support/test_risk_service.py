"""The risk monitor service on real rings in /dev/shm: a breach sends exactly one control record
into the engine's control ring (read back as the engine would), the action is logged, listed
and counted; a restart recognises the engine's echo and sends nothing again; watchdogs; HTTP;
settings; and no numba."""

from __future__ import annotations

import math
import time

import httpx
import numpy as np
import pytest
from _pnl_risk_helpers import captured_logs, run_without_numba, serve, wait_for

from quayside.core.feed.ring import CommandReader, FeedWriter
from quayside.core.wire import ControlCommand, LogCode, RecordKind, Side, control_dtype
from quayside.support.common.settings import SettingsError, load_settings
from quayside.support.pnl import records as R
from quayside.support.risk.service import RiskService, RiskSettings

MS = 1_000_000
S = 1_000_000_000
AAPL, ES = 3, 4


@pytest.fixture
def rings(shm_dir):
    feed = FeedWriter(shm_dir / "feed", 1 << 12)
    control = CommandReader(shm_dir / "control", 256)  # the engine's end, as it creates it
    yield feed, control
    control.close()
    feed.close()


def make(shm_dir, rules, **risk) -> RiskService:
    settings = RiskSettings(
        feed={"ring": str(shm_dir / "feed"), "start": "oldest", "idle_sleep_ms": 0.2},
        risk={
            "rules": rules,
            "watchdog_interval_s": 0.05,
            "control": {"ring": str(shm_dir / "control"), **risk.pop("control", {})},
            **risk,
        },
    )
    return RiskService(settings)


DRAWDOWN_HALT = [{"name": "drawdown", "metric": "drawdown", "threshold": 150.0, "response": "halt"}]


def losing_session(t: int) -> np.ndarray:
    """Long 10 AAPL at 100; up to 110 (the high-water mark, +100), then down to 90 (-100)."""
    return np.concatenate(
        [
            R.quote(AAPL, 100.0, 100.0, t),
            R.fill(AAPL, 10, 100.0, t, fill_id=1, commission=0.0),
            R.quote(AAPL, 110.0, 110.0, t + 150 * MS),
            R.quote(AAPL, 90.0, 90.0, t + 250 * MS),
            R.heartbeat(t + 400 * MS),
        ]
    )


def applied(svc: RiskService, n: int) -> bool:
    with svc.lock:
        return svc.monitor.records >= n


def test_breach_sends_exactly_one_halt_logged_listed_and_counted(rings, shm_dir):
    feed, control = rings
    t = time.time_ns()
    svc = make(shm_dir, DRAWDOWN_HALT)
    with captured_logs("WARNING") as logs:
        svc.start(feed_timeout=5)
        try:
            feed.publish(losing_session(t))
            wait_for(control.available, 10, "a control record")
            for k in range(5):  # the breach goes on: more quotes, lower
                feed.publish(R.quote(AAPL, 85.0 - k, 85.0 - k, t + (500 + 100 * k) * MS))
            wait_for(lambda: applied(svc, 10), 10, "the rest of the session")
            with serve(svc.app()) as url:
                actions = httpx.get(f"{url}/actions", timeout=5).json()
                risk = httpx.get(f"{url}/risk", timeout=5).json()
                metrics = httpx.get(f"{url}/metrics", timeout=5).text
        finally:
            svc.stop()
    sent = control.poll().copy()
    assert len(sent) == 1  # exactly one, however long the breach lasted
    rec = sent.view(control_dtype)[0]
    assert rec["kind"] == RecordKind.CONTROL and rec["command"] == ControlCommand.HALT
    assert rec["instrument_id"] == 0 and rec["issuer_id"] == svc.control.issuer_id
    assert len(actions) == 1
    action = actions[0]
    assert (action["rule"], action["command"], action["state"], action["id"]) == (
        "drawdown", "HALT", "sent", int(rec["command_id"]),
    )  # fmt: skip
    assert action["value"] == pytest.approx(200.0) and action["history"] == ["pending", "sent"]
    breach = [r for r in logs if "risk rule drawdown breached" in r["message"]]
    sent_log = [r for r in logs if "HALT sent" in r["message"]]
    assert len(breach) == 1 and len(sent_log) == 1
    assert sent_log[0]["level"] == "CRITICAL" and sent_log[0]["extra"]["risk_action"]["id"] == action["id"]
    assert risk["equity"]["high_water_mark"] == pytest.approx(100.0)
    assert risk["rules"][0]["breached"] == ["all"]
    assert 'quayside_risk_actions_total{response="halt",rule="drawdown"} 1.0' in metrics
    assert 'quayside_risk_control_records_total{command="HALT",outcome="sent"} 1.0' in metrics
    assert 'quayside_risk_rule_breached{rule="drawdown"} 1.0' in metrics


def test_a_restart_recognises_the_engines_echo_and_sends_nothing_again(rings, shm_dir):
    feed, control = rings
    t = time.time_ns()
    svc = make(shm_dir, DRAWDOWN_HALT)
    svc.start(feed_timeout=5)
    try:
        feed.publish(losing_session(t))
        wait_for(control.available, 10, "a control record")
        echo = control.poll().copy()  # the engine applies it and publishes it on the feed
        command_id = int(echo.view(control_dtype)["command_id"][0])
        feed.publish(echo)
        feed.publish(R.log(LogCode.CONTROL_APPLIED, t + 500 * MS, i0=ControlCommand.HALT, i1=command_id))
        wait_for(lambda: applied(svc, 7), 10, "the echo")
        assert [a.state for a in svc.monitor.actions] == ["applied"]
    finally:
        svc.stop()
    again = make(shm_dir, DRAWDOWN_HALT)  # killed and restarted: reads the whole ring again
    again.start(feed_timeout=5)
    try:
        wait_for(lambda: applied(again, 7), 10, "the ring re-read")
        time.sleep(0.2)
        assert control.available() == 0
        assert [(a.id, a.state) for a in again.monitor.actions] == [(command_id, "applied")]
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("age_s", "control", "state", "detail"),
    [
        (3600, {}, "skipped", "old (history): not acted on"),
        (0, {"enabled": False}, "skipped", "dry run"),
        (0, {"ring": "does-not-exist/control"}, "failed", "no control ring at"),
    ],
)
def test_responses_that_must_not_or_cannot_be_sent(rings, shm_dir, age_s, control, state, detail):
    feed, reader = rings
    svc = make(shm_dir, DRAWDOWN_HALT, control=control)
    svc.start(feed_timeout=5)
    try:
        feed.publish(losing_session(time.time_ns() - age_s * S))
        wait_for(lambda: applied(svc, 5) and svc.monitor.actions and svc.monitor.actions[-1].state != "pending", 10)
        action = svc.monitor.actions[-1]
    finally:
        svc.stop()
    assert action.state == state and detail in action.detail
    assert reader.available() == 0


def test_reduce_only_for_the_instrument_near_its_position_limit(rings, shm_dir):
    feed, control = rings
    rules = [
        {
            "name": "long_limit",
            "metric": "utilisation",
            "limit": "MAX_LONG_POSITION",
            "threshold": 0.8,
            "response": "reduce",
            "scope": "instrument",
        }
    ]
    svc = make(shm_dir, rules, limits={"instruments": {"AAPL": {"max_long_position": 10}}})
    svc.start(feed_timeout=5)
    try:
        t = time.time_ns()
        feed.publish(R.order(AAPL, Side.BUY, 9, 100.0, t, order_id=1))
        feed.publish(R.fill(AAPL, 9, 100.0, t + MS, fill_id=1, order_id=1, commission=0.0))
        feed.publish(R.heartbeat(t + 200 * MS))
        wait_for(control.available, 10, "a control record")
    finally:
        svc.stop()
    rec = control.poll().view(control_dtype)
    assert len(rec) == 1 and rec["command"][0] == ControlCommand.REDUCE_ONLY and rec["instrument_id"][0] == AAPL
    assert svc.monitor.actions[-1].key == "AAPL:MAX_LONG_POSITION"


def test_heartbeat_watchdog_fires_when_heartbeats_stop(rings, shm_dir):
    feed, control = rings
    rules = [{"name": "engine_heartbeat", "metric": "heartbeat_age", "threshold": 1.0, "response": "warn"}]
    svc = make(shm_dir, rules)
    with captured_logs("WARNING") as logs:
        svc.start(feed_timeout=5)
        try:
            for _ in range(15):  # heartbeats every 0.1 s: no alarm
                feed.publish(R.heartbeat(time.time_ns()))
                time.sleep(0.1)
            assert list(svc.monitor.actions) == []
            stopped = time.monotonic()
            wait_for(lambda: svc.monitor.actions, 10, "the heartbeat watchdog")
            waited = time.monotonic() - stopped
            time.sleep(0.3)
            actions = list(svc.monitor.actions)
        finally:
            svc.stop()
    assert 0.8 < waited < 5.0
    assert [(a.rule, a.state, a.command) for a in actions] == [("engine_heartbeat", "logged", None)]  # once
    assert any("risk rule engine_heartbeat breached: heartbeat_age engine" in r["message"] for r in logs)
    assert control.available() == 0  # a warning sends nothing


def test_risk_route_health_and_metrics_over_http(rings, shm_dir):
    feed, _ = rings
    svc = make(shm_dir, [])
    svc.start(feed_timeout=5)
    try:
        t = time.time_ns()
        bad = R.fill(AAPL, 1, math.nan, t, fill_id=9)
        foreign = bad.copy()
        foreign["kind"] = 77
        feed.publish(np.concatenate([R.quotes([AAPL, ES], [99.0, 4999.0], [101.0, 5001.0], [t, t]), bad, foreign]))
        feed.publish(R.fill(ES, -2, 5000.0, t + MS, fill_id=1, commission=2.0))
        feed.publish(R.heartbeat(t + S))
        wait_for(lambda: applied(svc, 5), 10, "the records")
        with serve(svc.app()) as url:
            risk = httpx.get(f"{url}/risk", timeout=5).json()
            health = httpx.get(f"{url}/health", timeout=5).json()
            metrics = httpx.get(f"{url}/metrics", timeout=5).text
    finally:
        svc.stop()
    assert risk["exposure"]["instruments"]["ESZ6"]["net"] == pytest.approx(-2 * 5000.0 * 50)
    assert risk["exposure"]["total"] == {"net": pytest.approx(-500_000.0), "gross": pytest.approx(500_000.0)}
    assert risk["engine"]["trading_state"] == "ACTIVE" and risk["limits_from"] == "engine defaults"
    collar = next(r for r in risk["limits"] if r["limit"] == "PRICE_COLLAR_TICKS" and r["instrument"] == "AAPL")
    assert collar["unlimited"] is True and collar["value"] is None  # inf has no JSON form
    assert health["skipped"] == {"bad_fill": 1} and health["feed"]["foreign"] == 1
    assert 'quayside_risk_exposure_gross{instrument="all"} 500000.0' in metrics
    assert 'quayside_risk_limit_utilisation{instrument="ESZ6",limit="MAX_SHORT_POSITION"} 0.004' in metrics
    assert 'quayside_risk_skipped_records_total{reason="bad_fill"} 1.0' in metrics


def test_settings_from_a_file_with_the_engines_config(tmp_path):
    engine = tmp_path / "engine.toml"
    engine.write_text("[risk]\nmax_messages_per_window = 20\n[risk.defaults]\nmax_order_qty = 7\n")
    cfg = tmp_path / "risk.toml"
    cfg.write_text(
        f'[risk]\nengine_config = "{engine}"\n'
        '[[risk.rules]]\nname = "dd"\nmetric = "drawdown"\nthreshold = 1000\nresponse = "halt"\n'
        '[[risk.rules]]\nname = "loss"\nmetric = "daily_loss"\nthreshold = 500\nresponse = "reduce"\n'
    )
    settings = load_settings(RiskSettings, cfg)
    svc = RiskService(settings)
    assert [r.name for r in settings.risk.rules] == ["dd", "loss"]
    assert svc.monitor.limits.value(AAPL, 1) == 7 and svc.limits_source == str(engine)
    cfg.write_text(f'[risk]\nengine_config = "{engine}"\n[risk.limits]\nfill_latch_count = 3\n')
    with pytest.raises(SettingsError, match="not both"):
        load_settings(RiskSettings, cfg)
    cfg.write_text('[[risk.rules]]\nname = "x"\nmetric = "drawdown"\nthreshold = 1\nrespones = "halt"\n')
    with pytest.raises(SettingsError, match="respones"):
        load_settings(RiskSettings, cfg)
    cfg.write_text('[[risk.rules]]\nname = "x"\nmetric = "utilisation"\nthreshold = 1\nlimit = "MAX_QTY"\n')
    with pytest.raises(SettingsError, match="unknown limit 'MAX_QTY'"):
        load_settings(RiskSettings, cfg)


def test_risk_service_imports_and_runs_without_numba():
    result = run_without_numba(
        """
        import sys
        from quayside.support.risk.service import RiskService, RiskSettings
        from quayside.support.pnl import records as R
        svc = RiskService(RiskSettings())
        svc.monitor.go_live()
        svc.handle(R.synthetic_feed(300_000))  # 0.3 s of feed time: three equity samples
        svc.app()
        assert svc.monitor.report()["equity"]["samples"] > 0
        assert "numba" not in sys.modules and "llvmlite" not in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
