"""The P&L service on a real feed ring in /dev/shm, queried over HTTP: the numbers, broker
reconciliation, malformed and foreign records, batch-size independence, settings, and that it
imports and runs without numba."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest
from _pnl_risk_helpers import captured_logs, run_without_numba, serve, wait_for

from quayside.core.feed.ring import FeedWriter
from quayside.core.wire import Flag, PositionOrigin, RecordKind, fill_dtype, record_dtype
from quayside.support.common.settings import SettingsError, load_settings
from quayside.support.pnl import records as R
from quayside.support.pnl.service import PnlService, PnlSettings

S = 1_000_000_000
T0 = 1_723_212_000 * S  # 2024-08-09T14:00:00Z, 10:00 in New York
EURUSD, USDJPY, AAPL, ES = 1, 2, 3, 4


def session(t0: int = T0) -> np.ndarray:
    """A small trading session: quotes, fills with late commissions, a correction, positions."""
    recs = [
        R.log(1, t0, level=20),  # ENGINE_STARTED
        R.quotes([AAPL, ES, USDJPY], [101.0, 5004.75, 149.99], [101.1, 5005.0, 150.01], [t0] * 3),
        R.fill(AAPL, 10, 100.0, t0 + 1 * S, fill_id=1),  # commission later
        R.position(AAPL, 10, t0 + 1 * S, origin=PositionOrigin.ENGINE, strategy_id=1, avg_price=100.0),
        R.quote(AAPL, 101.5, 101.6, t0 + 2 * S),
        R.fill(AAPL, -4, 102.0, t0 + 3 * S, fill_id=2, commission=1.0),
        R.fill(AAPL, 0, 0.0, t0 + 4 * S, fill_id=1, commission=1.0),  # fill 1's commission report
        R.fill(AAPL, 0, 102.5, t0 + 5 * S, fill_id=2, flags=Flag.CORRECTION),  # price corrected
        R.fill(AAPL, 0, 0.0, t0 + 6 * S, fill_id=2, commission=1.1, flags=Flag.CORRECTION | Flag.COMMISSION_KNOWN),
        R.fill(ES, 2, 5000.0, t0 + 7 * S, fill_id=3, strategy_id=2, commission=2.5),
        R.heartbeat(t0 + 8 * S),
        R.quote(AAPL, 102.0, 102.1, t0 + 9 * S),
    ]
    return np.concatenate(recs)


def expected_totals() -> dict:
    # AAPL: long 10 @100 (fee 1), sold 4 @102.5 (fee 1.1): realized 4 x 2.5 - 1.1 - 0.4; 6 left, bid 102
    # ES: long 2 @5000 x 50 (fee 2.5), bid 5004.75
    realized = 10.0 - 1.5
    unrealized = 6 * 2.0 - 0.6 + 2 * 4.75 * 50 - 2.5
    return {"realized": realized, "unrealized": unrealized, "total": realized + unrealized, "fees": 4.6}


class Http:
    """GET against the app served on a real socket (uvicorn in a thread)."""

    def __init__(self, url: str):
        self.url = url

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=5)


def settings_for(ring, **extra) -> PnlSettings:
    feed = {"ring": str(ring), "start": "oldest", "idle_sleep_ms": 0.2, **extra.pop("feed", {})}
    return PnlSettings(feed=feed, **extra)


@pytest.fixture
def ring(shm_dir):
    writer = FeedWriter(shm_dir / "feed", 1 << 12)
    yield writer
    writer.close()


def test_pnl_from_a_real_ring_over_http(ring, shm_dir):
    feed = session()
    svc = PnlService(settings_for(shm_dir / "feed"))
    svc.start(feed_timeout=5)
    try:
        ring.publish(feed[:6])
        ring.publish(feed[6:])
        wait_for(lambda: svc.state.records == len(feed), 10, "the service to read the session")
        with serve(svc.app()) as url:
            pnl = httpx.get(f"{url}/pnl", timeout=5).json()
            positions = httpx.get(f"{url}/positions", timeout=5).json()
            metrics = httpx.get(f"{url}/metrics", timeout=5).text
            health = httpx.get(f"{url}/health", timeout=5)
    finally:
        svc.stop()
    totals = pnl["totals"]
    for key, value in expected_totals().items():
        assert totals[key] == pytest.approx(value), key
    assert totals["complete"] and totals["unknown_commissions"] == 0
    assert pnl["strategies"]["2"]["unrealized"] == pytest.approx(2 * 4.75 * 50 - 2.5)
    assert pnl["instruments"]["AAPL"]["quantity"] == 6.0
    aapl = next(p for p in positions["positions"] if p["symbol"] == "AAPL")
    assert aapl["avg_price"] == 100.0 and aapl["mark"] == 102.0 and aapl["engine_quantity"] == 10.0
    assert health.status_code == 200 and health.json()["records_applied"] == len(feed)
    assert 'quayside_pnl_total{instrument="all",strategy="all"}' in metrics
    assert 'quayside_pnl_unknown_commissions{instrument="AAPL",strategy="1"} 0.0' in metrics
    assert 'quayside_pnl_info{account_currency="USD"} 1.0' in metrics


def test_unknown_commission_is_shown_as_unknown_not_zero(ring, shm_dir):
    svc = PnlService(settings_for(shm_dir / "feed"))
    svc.handle(session()[:5])  # quotes and the first fill, before its commission report
    with serve(svc.app()) as url:
        totals = Http(url).get("/pnl").json()["totals"]
        metrics = Http(url).get("/metrics").text
    assert totals["unrealized"] is None and totals["total"] is None and totals["fees"] is None
    assert totals["unknown"] == ["commission"] and totals["unknown_commissions"] == 1
    assert 'quayside_pnl_total{instrument="all",strategy="all"} NaN' in metrics
    assert 'quayside_pnl_unknown_commissions{instrument="all",strategy="all"} 1.0' in metrics


def test_broker_reconciliation_breaks_are_reported(ring, shm_dir):
    svc = PnlService(settings_for(shm_dir / "feed"))
    svc.handle(session())
    with captured_logs("WARNING") as logs:
        svc.handle(R.position(AAPL, 6, T0 + 10 * S))  # agrees (strategy 0: summed over strategies)
        svc.handle(R.position(ES, 3, T0 + 10 * S))  # the broker has one more contract
    server = serve(svc.app())
    client = Http(server.__enter__())
    rec = client.get("/pnl").json()["reconciliation"]
    assert [(b["symbol"], b["ledger"], b["broker"], b["difference"]) for b in rec["breaks"]] == [("ESZ6", 2, 3, -1)]
    assert rec["breaks_opened"] == 1 and rec["broker_positions_checked"] == 2
    assert any("reconciliation break: ESZ6" in r["message"] for r in logs)
    metrics = client.get("/metrics").text
    assert "quayside_pnl_reconciliation_breaks 1.0" in metrics
    assert 'quayside_pnl_reconciliation_difference{instrument="ESZ6",strategy="0"} -1.0' in metrics
    with captured_logs("INFO") as logs:
        svc.handle(R.fill(ES, 1, 5001.0, T0 + 11 * S, fill_id=9, strategy_id=2, commission=1.0))
    assert client.get("/pnl").json()["reconciliation"]["breaks"] == []  # the missing fill arrived
    assert any("agrees again" in r["message"] for r in logs)
    assert "quayside_pnl_reconciliation_breaks 0.0" in client.get("/metrics").text
    server.__exit__(None, None, None)


def test_malformed_and_foreign_records_are_counted_and_skipped(ring, shm_dir):
    foreign = np.zeros(2, record_dtype)
    foreign["kind"] = [200, RecordKind.QUOTE]
    foreign["version"] = [1, 9]  # an unknown kind, and a quote of a version this build does not read
    foreign["ts_event"] = T0
    bad = [
        R.fill(AAPL, 5, math.nan, T0, fill_id=50),  # no price
        R.fill(AAPL, 5, 100.0, T0, fill_id=51, commission=math.nan, flags=Flag.COMMISSION_KNOWN),
        R.fill(AAPL, 0, 0.0, T0, fill_id=52),  # quantity 0 and no commission: means nothing
        R.fill(999, 5, 100.0, T0, fill_id=53),  # an instrument the registry does not know
        R.quote(999, 1.0, 2.0, T0),
        R.quote(AAPL, 1.0, 2.0, 0),  # no time
        R.position(AAPL, math.nan, T0),
    ]
    svc = PnlService(settings_for(shm_dir / "feed"))
    svc.start(feed_timeout=5)
    try:
        feed = session()
        ring.publish(feed[:4])
        ring.publish(foreign)
        ring.publish(np.concatenate(bad))
        ring.publish(feed[4:])
        wait_for(lambda: svc.state.records == len(feed) + len(bad) - 1, 10, "every record with a time")
        with serve(svc.app()) as url:
            health = Http(url).get("/health").json()
            metrics = Http(url).get("/metrics").text
            pnl = Http(url).get("/pnl").json()
    finally:
        svc.stop()
    assert health["feed"]["foreign"] == 2  # dropped by the feed source
    assert health["skipped"] == {"bad_fill": 3, "unknown_instrument": 2, "bad_position": 1, "bad_timestamp": 1}
    assert 'quayside_feed_foreign_records_total{service="pnl"} 2.0' in metrics
    assert 'quayside_pnl_skipped_records_total{reason="bad_fill"} 3.0' in metrics
    assert pnl["totals"]["total"] == pytest.approx(expected_totals()["total"])  # the rest is untouched


def test_state_does_not_depend_on_how_the_feed_was_batched(shm_dir):
    """A daily reset, fills, corrections and quotes: any split into batches, the same report."""
    reset = 1_723_237_200 * S  # 2024-08-09T21:00:00Z = 17:00 New York
    feed = np.concatenate([session(reset - 5 * S), session(reset + 3600 * S)])
    feed["seq"] = np.arange(len(feed))
    second = np.arange(len(feed)) >= len(feed) // 2
    fills = feed.view(fill_dtype)
    fills["fill_id"][second & (feed["kind"] == RecordKind.FILL)] += 100
    reports = []
    for sizes in ([len(feed)], [1] * len(feed), [3, 5, 7, 2, 11, 4, 1, 13]):
        svc = PnlService(settings_for(shm_dir / "feed"))
        i = k = 0
        while i < len(feed):
            n = sizes[k % len(sizes)]
            svc.handle(feed[i : i + n])
            i, k = i + n, k + 1
        reports.append(json.dumps(svc.pnl_report(), sort_keys=True))
    assert reports[0] == reports[1] == reports[2]
    report = json.loads(reports[0])
    assert report["resets"] == 1 and report["day_started"].startswith("2024-08-09T21:00")
    assert report["totals"]["realized_today"] != report["totals"]["realized"]


def test_settings_file_environment_and_unknown_keys(tmp_path, monkeypatch):
    cfg = tmp_path / "pnl.toml"
    cfg.write_text('[pnl]\ndaily_reset = "16:30"\ntimezone = "Europe/London"\n[http]\nport = 9999\n')
    monkeypatch.setenv("QUAYSIDE_PNL__FX_MAX_AGE_S", "5")
    s = load_settings(PnlSettings, cfg)
    assert (s.pnl.daily_reset, s.pnl.timezone, s.pnl.fx_max_age_s, s.http.port) == ("16:30", "Europe/London", 5, 9999)
    cfg.write_text('[pnl]\ndaily_rest = "16:30"\n')
    with pytest.raises(SettingsError, match="daily_rest"):
        load_settings(PnlSettings, cfg)
    cfg.write_text('[pnl]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(SettingsError, match="IANA"):
        load_settings(PnlSettings, cfg)


def test_pnl_service_imports_and_runs_without_numba():
    result = run_without_numba(
        """
        import sys
        from quayside.support.pnl.service import PnlService, PnlSettings
        from quayside.support.pnl import records as R
        svc = PnlService(PnlSettings())
        svc.handle(R.synthetic_feed(5000))
        import json
        from quayside.support.pnl.accounting import json_safe
        svc.app()
        assert json.loads(json.dumps(json_safe(svc.pnl_report())))["totals"]["complete"]
        assert "numba" not in sys.modules and "llvmlite" not in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
