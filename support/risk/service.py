"""The risk monitor service: ``quayside support risk``.

Reads the engine's feed into a :class:`~quayside.support.risk.monitor.RiskMonitor` and acts on
its rules: ``warn`` logs; ``reduce`` and ``halt`` send a REDUCE_ONLY or HALT control record
through the engine's control ring, as one of its several producers
(:class:`~quayside.core.feed.control.ControlSender`, taking turns with the dashboard and the
operator's ``quayside control``).

**Published.** The monitor cannot write the engine's feed (one producer), so every action is
published three ways: a structured log line (loguru; JSON in containers, the action under
``extra.risk_action``), ``GET /actions`` (the latest ``max_actions``, oldest first, with their
state), and the metrics (``quayside_risk_actions_total{rule,response}``,
``quayside_risk_control_records_total{command,outcome}``, ``quayside_risk_rule_breached``).
And the engine echoes every control record it applies onto the feed (issuer id and command
id included), so any feed reader sees the monitor's HALT or REDUCE_ONLY there too.

**Never twice, never stale.** A command id is derived from the rule, the key and the feed time
of the breach, so replaying history after a restart finds the same ids and recognises the
engine's echoes of commands already sent. Responses found while replaying are never sent;
live ones only once the reader has caught up with the feed (an echo may follow), and only if
the breach is younger than ``control.max_action_age_s``.

Routes: ``GET /risk`` (exposure, limit utilisation, equity, drawdown, engine state, rules),
``GET /actions``, and the frame's ``/metrics`` and ``/health``. Among the metrics,
``quayside_risk_drawdown_ratio{rule}`` is the drawdown over the threshold of each ``drawdown``
rule (1 = at the limit): the shipped alerts (``monitoring/alerts.yml``) fire at 0.8 and 1, so
without a drawdown rule they stay silent.
"""

from __future__ import annotations

import math
import threading
import time
from typing import ClassVar

import numpy as np
from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, model_validator

from quayside.core import wire
from quayside.core.feed.control import ControlSender
from quayside.support.common.logs import logger
from quayside.support.common.service import Service
from quayside.support.common.settings import ServiceSettings
from quayside.support.pnl.accounting import json_safe
from quayside.support.pnl.service import PnlConfig
from quayside.support.risk.limits import WINDOW_LIMITS, EngineRiskLimits, LimitTable, load_engine_limits
from quayside.support.risk.monitor import RiskMonitor
from quayside.support.risk.rules import DEFAULT_RULES, WATCHDOG_METRICS, Action, Rule

__all__ = ["ControlSettings", "RiskConfig", "RiskSettings", "RiskService"]

_NS = 1_000_000_000
_ISSUER = 0x5249534B  # "RISK"


class ControlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ring: str = Field(default="quayside-control", description="the engine's control ring (name or path)")
    issuer_id: int = Field(default=_ISSUER, ge=1, le=2**32 - 1, description="our id in the control records")
    enabled: bool = Field(default=True, description="False: decide and log responses, never send (dry run)")
    max_action_age_s: float = Field(default=10.0, gt=0, description="never act on a breach older than this")


class RiskConfig(BaseModel):
    """The monitor's settings (``[risk]``); every default is here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine_config: str | None = Field(default=None, description="the engine's TOML: its [risk] table is read")
    limits: EngineRiskLimits | None = Field(default=None, description="the engine's [risk] table, inline")
    rules: list[Rule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    sample_ms: float = Field(default=100.0, gt=0, description="equity and feed rules every this much feed time")
    watchdog_interval_s: float = Field(default=0.5, gt=0, description="how often the watchdogs look")
    max_actions: int = Field(default=1000, ge=1, description="actions kept for GET /actions")
    daily_reset: str = PnlConfig.model_fields["daily_reset"].default
    timezone: str = PnlConfig.model_fields["timezone"].default
    fx_max_age_s: float = Field(default=60.0, gt=0)
    control: ControlSettings = ControlSettings()

    @model_validator(mode="after")
    def _check(self):
        if self.engine_config is not None and self.limits is not None:
            raise ValueError("give the engine's limits once: engine_config (its file) or limits (inline), not both")
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(
                f"rule names must be unique: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}"
            )
        PnlConfig(daily_reset=self.daily_reset, timezone=self.timezone)  # same checks as the P&L service
        return self


class RiskSettings(ServiceSettings):
    risk: RiskConfig = RiskConfig()


class RiskService(Service):
    name: ClassVar[str] = "risk"
    default_port: ClassVar[int] = 9102
    settings_cls: ClassVar[type[ServiceSettings]] = RiskSettings

    def __init__(self, settings: RiskSettings, registry=None, *, wall_clock=time.time_ns):
        super().__init__(settings, registry)
        cfg: RiskConfig = settings.risk
        if cfg.engine_config:
            limits = load_engine_limits(cfg.engine_config)
            self.limits_source = cfg.engine_config
        else:
            limits = cfg.limits or EngineRiskLimits()
            self.limits_source = "settings" if cfg.limits else "engine defaults"
        self.monitor = RiskMonitor(
            self.registry, LimitTable(limits, self.registry), cfg.rules, sample_ms=cfg.sample_ms,
            fx_max_age_s=cfg.fx_max_age_s, reset_at=cfg.daily_reset, timezone=cfg.timezone,
            issuer_id=cfg.control.issuer_id, max_actions=cfg.max_actions, wall_clock=wall_clock,
        )  # fmt: skip
        self.control = cfg.control
        self.wall_clock = wall_clock
        self.control_counts: dict[tuple[str, str], int] = {}
        self.sender = ControlSender(self.control.ring, self.control.issuer_id, wall_clock=wall_clock)
        self._ticker: threading.Thread | None = None
        self.metrics.register(_RiskCollector(self))

    # ------------------------------------------------------------------ the frame's hooks

    def handle(self, batch: np.ndarray) -> None:
        self.monitor.handle(batch)
        if self.monitor.outbox and len(batch) < self.settings.feed.batch:  # caught up with the feed
            self.dispatch(caught_up=True)

    def attached(self) -> None:
        if self.monitor.live:
            return  # a new ring (a restarted engine): still live
        if self.limits_source == "engine defaults":
            logger.warning("risk: no engine_config or limits configured: assuming the engine runs its defaults")
        self.monitor.go_live()  # the recordings are replayed; from here the feed is live
        self.dispatch(caught_up=False)  # what replaying found: marked, never sent

    def start(self, feed_timeout: float = 30.0) -> None:
        super().start(feed_timeout)
        self._ticker = threading.Thread(target=self._watchdog_loop, name="risk-watchdog", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        self.sender.close()

    def health(self) -> dict:
        m = self.monitor
        return {
            "skipped": dict(m.skipped),
            "records_applied": m.records,
            "limits_from": self.limits_source,
            "actions": len(m.actions),
            "pending_actions": len(m.outbox),
            "engine_heartbeats": m.heartbeats,
        }

    def routes(self, app: FastAPI) -> None:
        @app.get("/risk")
        def risk() -> dict:
            with self.lock:
                return json_safe({**self.monitor.report(), "limits_from": self.limits_source})

        @app.get("/actions")
        def actions(limit: int = 100) -> list:
            with self.lock:
                return json_safe([a.as_dict() for a in list(self.monitor.actions)[-max(limit, 0) :]])

    # ------------------------------------------------------------------ watchdogs and responses

    def _watchdog_loop(self) -> None:
        while not self._stop.wait(self.settings.risk.watchdog_interval_s):
            self.tick()

    def tick(self, now: int | None = None) -> None:
        """Run the watchdogs once and send what they decided."""
        with self.lock:
            try:
                self.monitor.check_watchdogs(now)
                self.dispatch(caught_up=False)
            except Exception:  # the watchdog must outlive a bug in one of its checks
                logger.exception("risk watchdog failed; continuing")

    def dispatch(self, *, caught_up: bool) -> None:
        """Send (or settle) the pending responses; feed-rule ones only once ``caught_up``."""
        keep = []
        for action in self.monitor.outbox:
            if action.state == "replayed":
                continue  # found in history: the engine's echo (or its absence) is history too
            if action.metric not in WATCHDOG_METRICS and not caught_up:
                keep.append(action)
                continue
            self._settle(action)
        self.monitor.outbox = keep

    def _settle(self, action: Action) -> None:
        echoed = self.monitor.echoed.get(action.id)
        if echoed:
            action.set(echoed, "the engine had it already")
            return
        age = (self.wall_clock() - action.ts_breach) / _NS
        if age > self.control.max_action_age_s:
            self._outcome(action, "skipped", f"the breach is {age:.1f} s old (history): not acted on")
        elif not self.control.enabled:
            self._outcome(action, "skipped", "control disabled (dry run)")
        else:
            state, detail = self._send(action)
            self._outcome(action, state, detail)

    def _outcome(self, action: Action, state: str, detail: str) -> None:
        action.set(state, detail)
        key = (action.command or "NONE", state)
        self.control_counts[key] = self.control_counts.get(key, 0) + 1
        level = (
            "CRITICAL" if state == "sent" and action.command == "HALT" else "ERROR" if state != "sent" else "WARNING"
        )
        logger.bind(risk_action=action.as_dict()).log(
            level,
            "risk action {} ({} {}): {} {}: {}",
            action.id,
            action.rule,
            action.key,
            action.command,
            state,
            detail,
        )

    def _send(self, action: Action) -> tuple[str, str]:
        sent, _, detail = self.sender.send(
            getattr(wire.ControlCommand, action.command), instrument_id=action.instrument_id, command_id=action.id
        )
        return ("sent" if sent else "failed"), detail


class _RiskCollector:
    def __init__(self, service: RiskService):
        self.service = service

    def describe(self):
        return []

    def collect(self):
        svc = self.service
        m = svc.monitor
        with svc.lock:
            per, total = m.exposures()
            limits = m.utilisation()
            eq = (m.equity, m.hwm, m.drawdown, m.daily, m.pending_commissions)
            drawdown_limits = [(r.name, r.threshold) for r in m.rules if r.metric == "drawdown" and r.threshold > 0]
            breached = {r.name: len(m.tracker.keys_of(r)) for r in m.rules}
            counts = dict(m.action_counts)
            controls = dict(svc.control_counts)
            skipped, denials = dict(m.skipped), dict(m.denials)
            hb_age = (svc.wall_clock() - m.heartbeat_wall) / _NS if m.heartbeat_wall else math.nan
            state, latched = m.trading_state, m.latched
            symbols = {i: m._symbol(i) for i in per}
        ccy = m.ledger.account_currency
        for field in ("net", "gross"):
            fam = GaugeMetricFamily(
                f"quayside_risk_exposure_{field}", f"{field} exposure at the mid, {ccy}; NaN when unknown",
                labels=["instrument"],
            )  # fmt: skip
            fam.add_metric(["all"], _nan(total[field]))
            for iid, e in per.items():
                fam.add_metric([symbols[iid]], _nan(e[field]))
            yield fam
        util = GaugeMetricFamily(
            "quayside_risk_limit_utilisation", "Used / limit for each engine limit", labels=["limit", "instrument"]
        )
        value = GaugeMetricFamily("quayside_risk_limit_value", "Engine limit value", labels=["limit", "instrument"])
        for row in limits:
            if row["limit_id"] not in WINDOW_LIMITS:
                util.add_metric([row["limit"], row["instrument"]], _nan(row["utilisation"]))
            value.add_metric([row["limit"], row["instrument"]], row["value"])
        yield util
        yield value
        for name, v, what in [
            ("equity", eq[0], f"total P&L with known commissions, {ccy}"),
            ("equity_high_water_mark", eq[1], f"high-water mark of equity, {ccy}"),
            ("drawdown", eq[2], f"high-water mark minus equity, {ccy}"),
            ("daily_pnl", eq[3], f"change in equity since the daily reset, {ccy}"),
            ("pending_commissions", eq[4], "fills whose commission is not known yet"),
            ("heartbeat_age_seconds", hb_age, "seconds since the engine's last heartbeat"),
            ("engine_trading_state", state, "1 ACTIVE, 2 REDUCING, 3 HALTED, 0 unknown"),
            ("fill_latch_engaged", float(latched), "1 when the engine's fill-count latch is engaged"),
        ]:
            g = GaugeMetricFamily(f"quayside_risk_{name}", what)
            g.add_metric([], _nan(v))
            yield g
        ratio = GaugeMetricFamily(
            "quayside_risk_drawdown_ratio",
            "Drawdown divided by the threshold of each drawdown rule (1 = at the limit); NaN when unknown",
            labels=["rule"],
        )
        for rule, threshold in drawdown_limits:
            ratio.add_metric([rule], math.nan if eq[2] is None else eq[2] / threshold)
        yield ratio
        g = GaugeMetricFamily("quayside_risk_rule_breached", "Keys in breach per rule", labels=["rule"])
        for rule, n in breached.items():
            g.add_metric([rule], n)
        yield g
        c = CounterMetricFamily("quayside_risk_actions", "Responses decided", labels=["rule", "response"])
        for (rule, response), n in sorted(counts.items()):
            c.add_metric([rule, response], n)
        yield c
        c = CounterMetricFamily(
            "quayside_risk_control_records", "Control records by outcome", labels=["command", "outcome"]
        )
        for (command, outcome), n in sorted(controls.items()):
            c.add_metric([command, outcome], n)
        yield c
        for name, data, what in [
            ("skipped_records", skipped, "Feed records skipped, by reason"),
            ("denials", denials, "Engine denials seen on the feed, by reason"),
        ]:
            c = CounterMetricFamily(f"quayside_risk_{name}", what, labels=["reason"])
            for reason, n in sorted(data.items()):
                c.add_metric([reason], n)
            yield c


def _nan(x) -> float:
    return math.nan if x is None else float(x)
