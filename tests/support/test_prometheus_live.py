"""A real Prometheus (the Debian package) scrapes the exporter and the recorder, running as
``quayside support ...`` processes on a real feed ring that keeps receiving an engine's
records and heartbeats, evaluates the shipped alert rules, and answers queries."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from _monitoring_feed import log, record, session, typed
from _monitoring_procs import TIMEOUT, ServiceProcess, free_port, http_get, wait_for
from conftest import require

from quayside.core import wire
from quayside.core.feed.ring import FeedWriter

pytestmark = pytest.mark.slow

ALERTS = Path(__file__).resolve().parents[2] / "monitoring" / "alerts.yml"


def heartbeat(ts: int, events_in: int) -> np.ndarray:
    return record(
        wire.heartbeat_dtype, wire.RecordKind.HEARTBEAT, ts_event=ts, loop_iterations=3 * events_in,
        events_in=events_in, trading_state=wire.TradingState.ACTIVE, cpu=0, max_loop_ns=2_000,
    )  # fmt: skip


class Engine(threading.Thread):
    """Stands in for the engine: the session's records first, then a heartbeat every 200 ms."""

    def __init__(self, writer: FeedWriter, records: np.ndarray):
        super().__init__(daemon=True)
        self.writer, self.records, self.stop = writer, records, threading.Event()
        self.events_in = int(typed(records, wire.RecordKind.HEARTBEAT)["events_in"][-1])

    def run(self) -> None:
        for lo in range(0, len(self.records), 2000):
            self.writer.publish(self.records[lo : lo + 2000])
            time.sleep(0.01)
        while not self.stop.wait(0.2):
            self.events_in += 1
            self.writer.publish(heartbeat(time.time_ns(), self.events_in))


class Prometheus:
    def __init__(self, tmp_path: Path, targets: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        scrape = "\n".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']"
            for job, target in targets.items()
        )
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {ALERTS}\nscrape_configs:\n{scrape}\n"
        )
        self.log = tmp_path / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params) -> dict:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.proc.returncode})\n{self.output()}")
        status, body = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", body
        return data["data"]

    def value(self, query: str) -> float | None:
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)


def test_prometheus_scrapes_the_services_and_evaluates_the_rules(shm_dir, tmp_path):
    require(shutil.which("prometheus") is not None, "prometheus not installed (apt-get install prometheus)")
    writer = FeedWriter(shm_dir / "feed", 1 << 17)
    t0 = time.time_ns() - 10**9
    feed = np.concatenate([session(30_000, t0=t0), log(wire.LogCode.RECONCILIATION_BREAK, t0 + 10**6, iid=4)])
    orders = len(typed(feed, wire.RecordKind.ORDER))
    env = {"QUAYSIDE_FEED__RING": str(shm_dir / "feed"), "QUAYSIDE_LOG_FORMAT": "json"}
    metrics = ServiceProcess("metrics", tmp_path / "metrics.log", env)
    recorder = ServiceProcess(
        "recorder", tmp_path / "recorder.log", {**env, "QUAYSIDE_RECORDER__FOLDER": str(tmp_path / "rec")}
    )
    engine = Engine(writer, feed)
    prometheus = None
    try:
        metrics.start()
        recorder.start()
        engine.start()
        metrics.wait_healthy()
        recorder.wait_healthy()
        prometheus = Prometheus(tmp_path, {"quayside-metrics": metrics.url[7:], "quayside-recorder": recorder.url[7:]})

        def all_up():
            targets = prometheus.api("targets")["activeTargets"]
            return len(targets) == 2 and all(t["health"] == "up" for t in targets)

        wait_for(all_up, "both targets scraped", explain=prometheus.output)
        wait_for(
            lambda: prometheus.value('quayside_tick_to_order_seconds_count{stage="total"}') == orders,
            "the tick-to-order histogram in Prometheus",
            explain=prometheus.output,
        )
        assert prometheus.value("quayside_engine_events_in_total") > 0
        assert prometheus.value("quayside_orders_total") == orders
        p99 = prometheus.value(
            'histogram_quantile(0.99, sum by (le) (quayside_tick_to_order_seconds_bucket{stage="total"}))'
        )
        assert 1e-6 < p99 < 1e-3  # the session's orders take microseconds from tick to order
        wait_for(lambda: prometheus.value("quayside_recorder_records_total") >= len(feed), "the recorder's count")
        assert prometheus.value('quayside_feed_lost_records_total{service="metrics"}') == 0

        def rules_evaluated():
            groups = prometheus.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return len(rules) >= 14 and all(r["health"] == "ok" for r in rules)

        wait_for(rules_evaluated, "every shipped rule evaluated without error", explain=prometheus.output)

        def firing():
            return {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"}

        wait_for(lambda: "QuaysideReconciliationBreak" in firing(), "the reconciliation-break alert firing")
        assert "QuaysideEngineHeartbeatLost" not in firing()  # the engine keeps beating
    finally:
        engine.stop.set()
        if prometheus is not None:
            prometheus.stop()
        for svc in (metrics, recorder):
            if svc.proc is not None and svc.proc.poll() is None:
                svc.stop()
        engine.join(5)
        writer.close()
