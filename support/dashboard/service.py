"""The risk dashboard: ``quayside support dashboard`` (default port 9105, 127.0.0.1).

A web page a trader keeps open all day (``GET /``): positions with average price and mark,
P&L, the equity curve with drawdown, limit utilisation, the order and fill blotter with denial
reasons, the tick-to-order latency histogram, feed, engine and broker health with staleness,
and the trading state. The page updates live over server-sent events (``GET /api/events``): a
fill is pushed the moment the feed thread has applied it. Charts are drawn by plotly's own
``plotly.min.js``, served from the installed ``plotly`` package (no CDN: the page works
offline); the page's own files are in ``static/``.

Controls (kill switch, reduce-only, resume, cancel-all, limit changes) need a bearer token
(:mod:`.auth`), are recorded in the audit log (:mod:`.audit`) whatever their outcome, and reach
the engine through its control ring (:mod:`.control`). Routes: :mod:`.api`.

The state is the risk monitor's and the metrics exporter's (:mod:`.state`), rebuilt from the
recordings at start like every support service, plus the frame's ``/metrics`` and ``/health``.
"""

from __future__ import annotations

import math
import os
from typing import ClassVar

import numpy as np
from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from quayside.core.feed.control import ControlSender
from quayside.core.wire import LimitId, TradingState, enum_name
from quayside.support.common.logs import logger
from quayside.support.common.service import Service
from quayside.support.common.settings import ServiceSettings
from quayside.support.dashboard.audit import AuditLog, AuditUnavailable
from quayside.support.dashboard.auth import HOW_TO_CONFIGURE, load_tokens
from quayside.support.dashboard.events import Hub
from quayside.support.dashboard.settings import DashboardConfig, DashboardSettings
from quayside.support.dashboard.state import DashboardState
from quayside.support.metrics.state import LATENCY_BUCKETS, TICK_TO_ORDER_STAGES, BucketHistogram
from quayside.support.pnl.accounting import json_safe
from quayside.support.pnl.clock import iso
from quayside.support.risk.limits import EngineRiskLimits, LimitTable, load_engine_limits

__all__ = ["DashboardService"]

_NS = 1_000_000_000
ENGINE_STALE_S = 5.0  # no heartbeat for this long: the engine is shown stale
_DOC_ROUTES = {"/docs", "/docs/oauth2-redirect", "/redoc"}


class DashboardService(Service):
    name: ClassVar[str] = "dashboard"
    default_port: ClassVar[int] = 9105
    settings_cls: ClassVar[type[ServiceSettings]] = DashboardSettings
    graceful_shutdown_s: ClassVar[float | None] = 2.0  # open event streams never end by themselves

    def __init__(self, settings: DashboardSettings, registry=None):
        super().__init__(settings, registry)
        cfg: DashboardConfig = settings.dashboard
        if cfg.engine_config:
            limits = load_engine_limits(cfg.engine_config)
            self.limits_source = cfg.engine_config
        else:
            limits = cfg.limits or EngineRiskLimits()
            self.limits_source = "settings" if cfg.limits else "engine defaults"
        self.config = cfg
        self.state = DashboardState(
            self.registry, LimitTable(limits, self.registry), blotter_rows=cfg.blotter_rows,
            equity_every_s=cfg.equity_every_s, equity_points=cfg.equity_points, fx_max_age_s=cfg.fx_max_age_s,
            reset_at=cfg.daily_reset, timezone=cfg.timezone, issuer_id=cfg.issuer_id,
        )  # fmt: skip
        self.hub = Hub()
        self.audit = AuditLog(settings.audit_log)
        self.sender = ControlSender(cfg.control_ring, cfg.issuer_id)
        self.control_counts: dict[tuple[str, str], int] = {}
        self.metrics.register(_DashboardCollector(self))

    # ------------------------------------------------------------------ the frame's hooks

    def handle(self, batch: np.ndarray) -> None:
        rows = self.state.handle(batch)
        if rows:
            self.hub.publish(rows)

    def attached(self) -> None:
        if not self.state.monitor.live:
            if self.limits_source == "engine defaults":
                logger.warning(
                    "dashboard: no engine_config or limits configured: assuming the engine runs its defaults"
                )
            self.state.monitor.go_live()

    def close(self) -> None:
        self.sender.close()

    def health(self) -> dict:
        return {
            "records_applied": self.state.monitor.records,
            "blotter_newest": self.state.seq,
            "stream_clients": len(self.hub.subscribers),
            "controls_enabled": self.controls_status()[0],
            "limits_from": self.limits_source,
        }

    def app(self) -> FastAPI:
        from quayside.support.dashboard.api import add_routes

        app = super().app()
        # FastAPI's /docs and /redoc load their scripts from a CDN, which an offline trader does
        # not have: the schema is at /openapi.json and the API is described in docs/dashboard.md.
        app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in _DOC_ROUTES]
        app.docs_url = app.redoc_url = None
        add_routes(self, app)
        return app

    # ------------------------------------------------------------------ controls

    def controls_status(self) -> tuple[bool, str]:
        """Whether controls can be used at all, and if not, how to make them usable."""
        tokens = load_tokens(self.settings.tokens_file)
        if not tokens:
            problems = "; ".join(tokens.problems)
            return False, HOW_TO_CONFIGURE + (f" ({problems})" if problems else "")
        try:
            os.close(self.audit.open())
        except AuditUnavailable as exc:
            return False, str(exc)
        return True, f"{len(tokens.entries)} operator token(s) configured; audit log {self.audit.path}"

    def count_control(self, action: str, result: str) -> None:
        self.control_counts[(action, result)] = self.control_counts.get((action, result), 0) + 1

    # ------------------------------------------------------------------ reports (call under self.lock)

    def summary(self) -> dict:
        m, st = self.state.monitor, self.state
        report = m.ledger.report()
        enabled, detail = self.controls_status()
        return json_safe(
            {
                "account_currency": m.ledger.account_currency,
                "feed_time": iso(m.ledger.clock_ns),
                "trading": self.trading(),
                "totals": report["totals"],
                "equity": {
                    "equity": m.equity,
                    "high_water_mark": m.hwm if m.equity is not None else None,
                    "drawdown": m.drawdown,
                    "daily_pnl": m.daily,
                },
                "positions": [_position(p) for p in report["positions"]],
                "limits": self.limits(),
                "health": self.health_report(),
                "latency": self.latency(),
                "blotter_newest": st.seq,
                "fills": st.fills,
                "controls": {"enabled": enabled, "detail": detail},
            }
        )

    def trading(self) -> dict:
        m = self.state.monitor
        return {
            "state": enum_name(TradingState, m.trading_state) if m.trading_state else None,
            "instrument_states": {
                m._symbol(i): enum_name(TradingState, s) for i, s in sorted(m.instrument_state.items())
            },
            "fill_latch_engaged": m.latched,
            "working_orders": len(m.orders),
            "denials": dict(m.denials),
        }

    def limits(self) -> list[dict]:
        return [
            {k: row[k] for k in ("limit", "instrument", "used", "utilisation", "peak_today")}
            | {"value": None if math.isinf(row["value"]) else row["value"]}
            for row in self.state.monitor.utilisation()
        ]

    def equity_curve(self, max_points: int | None = None) -> dict:
        """The curve, thinned to at most ``max_points``: the page draws it on the browser's main
        thread, where twenty thousand points would hold up the live updates behind it."""
        curve = list(self.state.monitor.curve)
        return json_safe(
            {
                "account_currency": self.state.monitor.ledger.account_currency,
                "every_s": self.config.equity_every_s,
                "points": [
                    {"ts_event": t, "equity": e, "high_water_mark": h, "drawdown": d}
                    for t, e, h, d in thin_curve(curve, max_points)
                ],
            }
        )

    def latency(self) -> dict:
        ms = self.state.metrics
        return {
            "bounds_s": [float(b) for b in LATENCY_BUCKETS],
            "tick_to_order": {s: _stage(ms.tick_to_order[s]) for s in TICK_TO_ORDER_STAGES},
            "round_trip": _stage(ms.round_trip),
        }

    def health_report(self) -> dict:
        m, ms = self.state.monitor, self.state.metrics
        wall = self.state.wall_clock()
        age = self.feed_age_s()
        stats = self.feed.stats if self.feed is not None else None
        hb_age = (wall - m.heartbeat_wall) / _NS if m.heartbeat_wall else None
        quotes = []
        for symbol, q_age in self.state.quote_ages().items():
            if q_age is None and not m.ledger.net_quantity(self.registry.by_symbol(symbol).id):
                continue  # never quoted and not held: not worth a line
            limit = m.limits.value(self.registry.by_symbol(symbol).id, LimitId.STALE_QUOTE_NS) / _NS
            stale_after = None if math.isinf(limit) else limit
            quotes.append({"instrument": symbol, "age_s": q_age, "stale_after_s": stale_after,
                           "stale": q_age is None or (stale_after is not None and q_age > stale_after)})  # fmt: skip
        return {
            "feed": {
                "source": self.settings.feed.source,
                "age_s": age,
                "records": stats.records if stats else 0,
                "lost": stats.lost if stats else 0,
                "stale": age is None or age > self.stale_after_s,
            },
            "engine": {
                "heartbeats": m.heartbeats,
                "heartbeat_age_s": hb_age,
                "stale": hb_age is None or hb_age > ENGINE_STALE_S,
                "starts": ms.engine_starts,
            },
            "broker": {
                "connected": None if ms.broker_connected is None else bool(ms.broker_connected),
                "disconnects": ms.broker_disconnects,
                "reconciliation_breaks_open": len(ms.open_breaks),
            },
            "quotes": quotes,
        }


def _position(p: dict) -> dict:
    keep = ("strategy_id", "currency", "quantity", "avg_price", "mark", "mark_age_s", "fills", "realized",
            "unrealized", "total", "fees", "realized_today", "daily", "complete", "unknown", "unknown_commissions")  # fmt: skip
    return {"instrument": p["symbol"], **{k: p[k] for k in keep}}


def _stage(h: BucketHistogram) -> dict:
    n = h.count
    return {"counts": h.counts.tolist(), "count": n, "mean_s": h.sum / n if n else None}


class _DashboardCollector:
    def __init__(self, service: DashboardService):
        self.service = service

    def describe(self):
        return []

    def collect(self):
        svc = self.service
        with svc.lock:
            counts = dict(svc.control_counts)
            rows, clients = svc.state.seq, len(svc.hub.subscribers)
        c = CounterMetricFamily(
            "quayside_dashboard_controls", "Control requests by action and result", labels=["action", "result"]
        )
        for (action, result), n in sorted(counts.items()):
            c.add_metric([action, result], n)
        yield c
        g = GaugeMetricFamily("quayside_dashboard_stream_clients", "Pages connected to the event stream")
        g.add_metric([], clients)
        yield g
        c = CounterMetricFamily("quayside_dashboard_blotter_rows", "Blotter rows made from the feed")
        c.add_metric([], rows)
        yield c


def thin_curve(points: list[tuple], max_points: int | None) -> list[tuple]:
    """At most ``max_points`` of ``points`` (``(ts, equity, hwm, drawdown)``, in time order): from
    each of ``max_points - 1`` equal runs the point of deepest drawdown, so no trough is lost,
    then the newest point."""
    if max_points is None or len(points) <= max_points:
        return points
    body, last = points[:-1], points[-1]
    runs = max_points - 1
    out = []
    for k in range(runs):
        run = body[k * len(body) // runs : (k + 1) * len(body) // runs]
        if run:
            out.append(max(run, key=lambda p: p[3]))
    out.append(last)
    return out
