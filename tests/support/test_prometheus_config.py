"""The shipped monitoring: promtool checks the Prometheus configuration and the alert rules
(and runs their unit tests); the Grafana dashboard is checked structurally; and every metric
that a rule or a panel uses is one that a service exports (or that the P&L and risk services
are documented to export)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _monitoring_feed import log, session
from conftest import require
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quayside.core import wire
from quayside.core.feed.ring import FeedWriter
from quayside.support.metrics.service import MetricsService, MetricsSettings
from quayside.support.recorder.service import RecorderService, RecorderSettings

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
DASHBOARD = MONITORING / "grafana" / "quayside.json"

#: Metrics the rules and the dashboard expect from the P&L and risk services
#: (monitoring/README.md lists them with their meaning).
FROM_PNL_AND_RISK = {
    "quayside_pnl_total",
    "quayside_pnl_realized",
    "quayside_pnl_unrealized",
    "quayside_risk_drawdown",
    "quayside_risk_drawdown_ratio",
    "quayside_risk_limit_utilisation",
}
FROM_PROMETHEUS = {"up"}
_NAME = re.compile(r"\b(quayside_[a-z0-9_]+|up)\b(?!\s*\()")


def promtool(*args: str) -> str:
    require(shutil.which("promtool") is not None, "promtool not installed (apt-get install prometheus)")
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=MONITORING)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_accepts_the_configuration():
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "1 rule files found" in out


def test_promtool_accepts_the_rules():
    out = promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in out


def test_the_alert_unit_tests_pass():
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_the_issue_asks_for_these_alerts():
    text = (MONITORING / "alerts.yml").read_text()
    alerts = set(re.findall(r"- alert: (\w+)", text))
    assert {
        "QuaysideFeedStale",
        "QuaysideEngineHeartbeatLost",
        "QuaysideTickToOrderP99OverBudget",
        "QuaysideRejectRateHigh",
        "QuaysideDrawdownNearLimit",
        "QuaysideDrawdownOverLimit",
        "QuaysideBrokerDisconnected",
        "QuaysideReconciliationBreak",
        "QuaysideFeedReaderLoss",
    } <= alerts


def test_the_configuration_scrapes_every_service_on_its_default_port():
    from quayside.support.commands import SERVICES

    text = (MONITORING / "prometheus.yml").read_text()
    ports = {"pnl": 9101, "risk": 9102, "recorder": 9103, "metrics": 9104}
    for name, port in ports.items():
        assert re.search(rf"job_name: quayside-{name}\s+static_configs:\s+- targets: \[\"127\.0\.0\.1:{port}\"\]", text)
        assert name in SERVICES
    assert RecorderService.default_port == 9103 and MetricsService.default_port == 9104


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """Every sample and family name the recorder and the exporter show for a full session."""
    folder = tmp_path_factory.mktemp("exported")
    ring = Path("/dev/shm") / f"quayside-test-exported-{folder.name}"
    writer = FeedWriter(ring, 1 << 16)
    feed = session(20_000)
    extras = [log(wire.LogCode.BROKER_DISCONNECTED, int(feed["ts_event"][-1]) + 1)]
    writer.publish(feed)
    writer.publish(extras[0])
    names: set[str] = set()
    try:
        for svc in (
            MetricsService(MetricsSettings(feed={"ring": str(ring)})),
            RecorderService(RecorderSettings(feed={"ring": str(ring)}, recorder={"folder": str(folder)})),
        ):
            svc.open()
            while svc.poll_once():
                pass
            for family in text_string_to_metric_families(generate_latest(svc.metrics).decode()):
                names.add(family.name)
                names.update(s.name for s in family.samples)
            svc.close()
    finally:
        writer.close()
    return names


def _names_in(expr: str) -> set[str]:
    return set(_NAME.findall(expr))


def _rule_exprs() -> list[tuple[str, str]]:
    text = (MONITORING / "alerts.yml").read_text()
    out, current, block = [], None, None
    for line in text.splitlines():
        if m := re.match(r"\s*- alert: (\w+)", line):
            current = m[1]
        elif m := re.match(r"\s*expr: (.*)", line):
            block = m[1].strip()
            if block in ("|", ">"):
                block = ""
            else:
                out.append((current, block))
                block = None
        elif block is not None:
            if re.match(r"\s*(for|labels|annotations):", line):
                out.append((current, block))
                block = None
            else:
                block += line.strip() + " "
    return out


def test_every_rule_uses_metrics_that_exist(exported):
    exprs = _rule_exprs()
    assert len(exprs) == len(re.findall(r"- alert:", (MONITORING / "alerts.yml").read_text()))
    for alert, expr in exprs:
        names = _names_in(expr)
        assert names, (alert, expr)
        missing = names - exported - FROM_PNL_AND_RISK - FROM_PROMETHEUS
        assert not missing, f"{alert} uses {missing}, which no service exports"


def _panels(dashboard: dict):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_the_dashboard_is_a_well_formed_provisioned_dashboard():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "quayside-overview" and dash["title"] == "Quayside"
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 30
    assert dash.get("id") is None  # provisioned dashboards carry no database id
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = list(_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y")), p["title"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] >= 1, p["title"]
        mine = set(itertools.product(range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])))
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        assert p["type"] in {"row", "stat", "timeseries", "heatmap", "bargauge", "gauge", "table"}, p["type"]
        if p["type"] == "row":
            continue
        assert p["title"] and p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        assert all(t["expr"].strip() for t in p["targets"]), p["title"]


def test_every_panel_queries_metrics_that_exist(exported):
    dash = json.loads(DASHBOARD.read_text())
    used = set()
    for p in _panels(dash):
        for t in p.get("targets", []):
            names = _names_in(t["expr"])
            assert names, (p["title"], t["expr"])
            missing = names - exported - FROM_PNL_AND_RISK - FROM_PROMETHEUS
            assert not missing, f"panel {p['title']!r} queries {missing}, which no service exports"
            used |= names
    assert {"quayside_tick_to_order_seconds_bucket", "quayside_engine_events_in_total"} <= used


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    provider = (MONITORING / "grafana" / "provisioning" / "dashboards" / "quayside.yml").read_text()
    assert re.search(r"^apiVersion: 1$", provider, re.M) and "type: file" in provider
    assert re.search(r"path: /var/lib/grafana/dashboards/quayside$", provider, re.M)
    source = (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "type: prometheus" in source and "url: http://127.0.0.1:9090" in source


def _scrape(svc) -> dict[str, list]:
    """Sample name -> [(labels, value)] of one service's /metrics, after it drained its feed."""
    svc.open(feed_timeout=5)
    try:
        while svc.poll_once():
            pass
        text = generate_latest(svc.metrics).decode()
    finally:
        svc.stop()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, [])
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_the_pnl_and_risk_services_export_what_the_rules_and_panels_expect(shm_dir):
    """The names the rules take on trust from these two services, and the drawdown ratio the
    drawdown alerts watch: drawdown over the threshold of each drawdown rule."""
    from quayside.support.pnl import records as R
    from quayside.support.pnl.service import PnlService, PnlSettings
    from quayside.support.risk.service import RiskService, RiskSettings

    ms, aapl, t = 1_000_000, 3, 1_723_161_600 * 10**9
    writer = FeedWriter(shm_dir / "feed", 1 << 12)
    writer.publish(  # long 10 AAPL at 100, marked up to 110 (high-water mark +100), then down to 90: drawdown 200
        np.concatenate(
            [
                R.quote(aapl, 100.0, 100.0, t),
                R.fill(aapl, 10, 100.0, t, fill_id=1, commission=0.0),
                R.quote(aapl, 110.0, 110.0, t + 150 * ms),
                R.quote(aapl, 90.0, 90.0, t + 250 * ms),
                R.heartbeat(t + 400 * ms),
            ]
        )
    )
    feed = {"ring": str(shm_dir / "feed"), "start": "oldest"}
    rules = [
        {"name": "dd_warn", "metric": "drawdown", "threshold": 400.0},
        {"name": "dd_halt", "metric": "drawdown", "threshold": 150.0, "response": "halt"},
    ]
    try:
        pnl = _scrape(PnlService(PnlSettings(feed=feed)))
        risk = _scrape(RiskService(RiskSettings(feed=feed, risk={"rules": rules, "control": {"enabled": False}})))
        bare = _scrape(RiskService(RiskSettings(feed=feed, risk={"control": {"enabled": False}})))
    finally:
        writer.close()
    missing = FROM_PNL_AND_RISK - set(pnl) - set(risk)
    assert not missing, f"monitoring/README.md says the P&L or risk service exports {missing}; neither does"
    assert risk["quayside_risk_drawdown"] == [({}, pytest.approx(200.0))]
    ratios = {labels["rule"]: value for labels, value in risk["quayside_risk_drawdown_ratio"]}
    assert ratios == {"dd_warn": pytest.approx(0.5), "dd_halt": pytest.approx(200.0 / 150.0)}
    assert bare["quayside_risk_drawdown_ratio"] == []  # no drawdown rule: no limit, no ratio, no alert
