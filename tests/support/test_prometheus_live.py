"""A real Prometheus (the Debian package) scrapes the four support services while the real
engine trades: ``quayside demo --core-only`` runs the simulated IB Gateway, the gateway, the
engine and the relay on private rings; the P&L service, the risk monitor, the recorder and the
metrics exporter run as ``quayside support ...`` processes on that feed. The queries must agree
with what the engine did, the shipped rules must evaluate, and halting the engine through its
control ring must fire the trading-halted alert."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.parse
import uuid
from pathlib import Path

import pytest
from _monitoring_procs import QUAYSIDE, TIMEOUT, CoreStack, ServiceProcess, free_port, http_get, wait_for
from conftest import require

pytestmark = pytest.mark.slow

ALERTS = Path(__file__).resolve().parents[2] / "monitoring" / "alerts.yml"
SERVICES = ("pnl", "risk", "recorder", "metrics")


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


def test_prometheus_scrapes_the_services_while_the_engine_trades(shm_dir, tmp_path):
    require(shutil.which("prometheus") is not None, "prometheus not installed (apt-get install prometheus)")
    stack = CoreStack(tmp_path, shm_dir, f"prom-{uuid.uuid4().hex[:8]}")
    services: dict[str, ServiceProcess] = {}
    prometheus = None
    try:
        state = stack.wait_up()
        rings, run = state["ring_paths"], stack.run_dir
        env = {
            "QUAYSIDE_FEED__RING": rings["feed"],
            "QUAYSIDE_REGISTRY": str(run / "registry.toml"),
            "QUAYSIDE_LOG_FORMAT": "json",
        }
        extra = {
            "risk": {
                "QUAYSIDE_RISK__ENGINE_CONFIG": str(run / "engine.toml"),
                "QUAYSIDE_RISK__CONTROL__RING": rings["control"],
            },
            "recorder": {"QUAYSIDE_RECORDER__FOLDER": str(tmp_path / "recordings")},
        }
        for name in SERVICES:
            services[name] = ServiceProcess(name, tmp_path / f"{name}.log", {**env, **extra.get(name, {})}).start()
        for svc in services.values():
            svc.wait_healthy()
        prometheus = Prometheus(tmp_path, {f"quayside-{n}": svc.url[len("http://") :] for n, svc in services.items()})

        def explain() -> str:
            return prometheus.output() + "\n" + stack.output()

        def all_up():
            targets = prometheus.api("targets")["activeTargets"]
            return len(targets) == len(SERVICES) and all(t["health"] == "up" for t in targets)

        wait_for(all_up, "all four targets scraped", explain=explain)
        wait_for(
            lambda: (prometheus.value("quayside_fills_total") or 0) >= 2,
            "fills scraped from the metrics exporter",
            explain=explain,
        )
        assert prometheus.value("quayside_engine_events_in_total") > 0
        assert prometheus.value("quayside_orders_total") > 0  # (an order may fill in several parts)
        assert prometheus.value('quayside_tick_to_order_seconds_count{stage="total"}') > 0
        p99 = prometheus.value(
            'histogram_quantile(0.99, sum by (le) (quayside_tick_to_order_seconds_bucket{stage="total"}))'
        )
        assert 0 < p99 < 5  # gateway receipt to order on the outbound ring: well under a second here

        # halt the engine: no new orders, so the services' views settle and can be compared
        subprocess.run(
            [QUAYSIDE, "control", "--ring", rings["control"], "halt"],
            check=True, capture_output=True, timeout=TIMEOUT,
        )  # fmt: skip
        wait_for(
            lambda: prometheus.value("quayside_engine_trading_state") == 3,
            "HALTED from the metrics exporter",
            explain=explain,
        )
        wait_for(
            lambda: prometheus.value("quayside_risk_engine_trading_state") == 3,
            "HALTED from the risk monitor",
            explain=explain,
        )

        seen: dict = {}

        def settled():
            """The engine's own fill count (heartbeat) and the fills in the P&L service's
            positions agree, every commission has arrived, and Prometheus has the P&L service's
            positions as its JSON route reports them."""
            positions = json.loads(http_get(services["pnl"].url + "/positions")[1])["positions"]
            seen.update(
                engine_fills=prometheus.value("quayside_engine_fills_total"),
                feed_fills=prometheus.value("quayside_fills_total"),
                pnl_fills=sum(p["fills"] for p in positions),
                scraped={
                    r["metric"]["instrument"]: float(r["value"][1])
                    for r in prometheus.api("query", query='quayside_pnl_position{strategy!="all"}')["result"]
                },
                reported={p["symbol"]: p["quantity"] for p in positions},
                pending=sum(p["unknown_commissions"] for p in positions),
            )
            fills = seen["engine_fills"]
            agree = fills == seen["pnl_fills"] > 0 and seen["scraped"] == seen["reported"]
            # the exporter counts FILL records: the gateway's later commission reports are FILLs too
            agree = agree and seen["feed_fills"] >= fills and seen["pending"] == 0
            return agree and (fills, seen["reported"])

        fills, positions = wait_for(
            settled,
            "fill counts and positions that agree across the services",
            explain=lambda: f"last seen: {seen}\n{explain()}",
        )
        assert prometheus.value("quayside_pnl_reconciliation_breaks") == 0  # the ledger agrees with the broker
        assert prometheus.value('quayside_pnl_fees{strategy="all",instrument="all"}') > 0  # commissions arrived
        wait_for(  # the risk monitor's exposure agrees: some while the P&L service holds a position
            lambda: (
                (prometheus.value('quayside_risk_exposure_gross{instrument="all"}') > 0)
                == any(q != 0 for q in positions.values())
            ),
            "the risk monitor's gross exposure",
            explain=explain,
        )
        assert prometheus.value("quayside_recorder_records_total") > fills
        assert prometheus.value("sum(quayside_feed_lost_records_total)") == 0

        def rules_evaluated():
            groups = prometheus.api("rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return len(rules) >= 14 and all(r["health"] == "ok" for r in rules)

        wait_for(rules_evaluated, "every shipped rule evaluated without error", explain=explain)

        def firing():
            return {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"}

        wait_for(lambda: "QuaysideTradingHalted" in firing(), "the trading-halted alert firing", explain=explain)
        assert not firing() & {"QuaysideEngineHeartbeatLost", "QuaysideServiceDown", "QuaysideFeedReaderLoss"}
    finally:
        if prometheus is not None:
            prometheus.stop()
        for svc in services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                svc.stop()
        stack.stop()
