"""The P&L service: ``quayside support pnl``.

Reads the engine's feed and keeps an average-cost :class:`~quayside.support.pnl.accounting.Ledger`
per strategy and instrument (conventions in :mod:`quayside.support.pnl.position` and
:mod:`quayside.support.pnl.accounting`), reconciles it with the broker's positions, and
serves:

* ``GET /pnl`` — totals, per strategy, per instrument and per position, in the account
  currency; ``null`` where a number is unknown, with the reasons (``commission``, ``fx``,
  ``mark``); FX rates with their age and staleness; reconciliation breaks; skipped records;
  whether the history it was built from is complete (no feed records lost, no recorder gaps).
* ``GET /positions`` — positions with average price, mark, and the latest broker and engine
  positions.
* ``GET /metrics`` — ``quayside_pnl_*`` gauges labelled by ``strategy`` and ``instrument``
  (``all`` for totals), in the account currency (``quayside_pnl_info`` names it); NaN where
  unknown.
* ``GET /health`` — the frame's, plus skipped records by reason and the ledger's state.

Settings (``[pnl]`` in the TOML file, ``QUAYSIDE_PNL__*`` in the environment): see
:class:`PnlConfig`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, field_validator

from quayside.core import wire
from quayside.core.wire import LogCode, PositionOrigin, RecordKind
from quayside.support.common.rebuild import LOG_RECORDER_GAP
from quayside.support.common.service import Service
from quayside.support.common.settings import ServiceSettings
from quayside.support.pnl.accounting import Ledger, json_safe
from quayside.support.pnl.clock import DailySchedule, iso, parse_hhmm
from quayside.support.pnl.feed import LedgerFeed
from quayside.support.pnl.reconcile import Reconciler

__all__ = ["PnlConfig", "PnlSettings", "PnlFeed", "PnlService"]

_POS = wire.position_dtype
_LOG = wire.log_dtype


class PnlConfig(BaseModel):
    """The P&L service's own settings; every default is here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily_reset: str = Field(default="17:00", description="local time of day the day's P&L restarts (HH:MM)")
    timezone: str = Field(default="America/New_York", description="IANA time zone of daily_reset")
    fx_max_age_s: float = Field(default=60.0, gt=0, description="an FX rate older than this (feed time) is stale")
    reconcile_tolerance: float = Field(default=1e-6, ge=0, description="relative position difference that is a break")

    @field_validator("daily_reset")
    @classmethod
    def _time(cls, v: str) -> str:
        parse_hhmm(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            DailySchedule("00:00", v)
        except Exception:
            raise ValueError(f"{v!r} is not an IANA time zone (e.g. America/New_York, Europe/London, UTC)") from None
        return v


class PnlSettings(ServiceSettings):
    pnl: PnlConfig = PnlConfig()


class PnlFeed(LedgerFeed):
    """The ledger plus broker reconciliation and the engine's own positions."""

    rare_kinds = (RecordKind.FILL, RecordKind.POSITION, RecordKind.LOG)

    def __init__(self, ledger: Ledger, tolerance: float):
        super().__init__(ledger)
        self.reconciler = Reconciler(self.symbol_of, tolerance)
        self.engine_positions: dict[tuple[int, int], tuple[float, float]] = {}  # key -> (qty, avg)
        self.recorded_gaps = 0  # records the recorder said it lost (its gap markers, when rebuilding)

    def symbol_of(self, iid: int) -> str:
        return self.ledger.registry.by_id(iid).symbol if self.instrument_ok(iid) else f"#{iid}"

    def _fill(self, f: np.void) -> None:
        super()._fill(f)
        sid, iid = int(f["strategy_id"]), int(f["instrument_id"])
        if self.reconciler.breaks and self.instrument_ok(iid):
            p = self.ledger.positions.get((sid, iid))
            ours = p.quantity if p is not None else 0.0
            self.reconciler.on_fill(sid, iid, ours, self.ledger.net_quantity(iid), int(f["ts_event"]))

    def on_record(self, kind: int, batch: np.ndarray, i: int) -> None:
        if kind == RecordKind.POSITION:
            p = batch.view(_POS)[i]
            iid, sid, qty = int(p["instrument_id"]), int(p["strategy_id"]), float(p["quantity"])
            if not self.instrument_ok(iid):
                self.skipped["unknown_instrument"] += 1
                return
            if not math.isfinite(qty):
                self.skipped["bad_position"] += 1
                return
            if p["origin"] == PositionOrigin.BROKER:
                led = self.ledger
                ours = led.net_quantity(iid) if sid == 0 else led.positions.get((sid, iid), _FLAT).quantity
                self.reconciler.on_broker(sid, iid, qty, ours, int(p["ts_event"]))
            elif p["origin"] == PositionOrigin.ENGINE:
                self.engine_positions[(sid, iid)] = (qty, float(p["avg_price"]))
        elif kind == RecordKind.LOG:
            r = batch.view(_LOG)[i]
            code = int(r["code"])
            if code == LOG_RECORDER_GAP:
                self.recorded_gaps += int(r["i0"])
            elif code in (LogCode.RECONCILIATION_BREAK, LogCode.RECONCILIATION_RESOLVED):
                self.reconciler.on_gateway_log(
                    int(r["instrument_id"]),
                    code == LogCode.RECONCILIATION_RESOLVED,
                    float(r["a0"]),
                    float(r["a1"]),
                    int(r["ts_event"]),
                )


class _Flat:
    quantity = 0.0


_FLAT = _Flat()


class PnlService(Service):
    name: ClassVar[str] = "pnl"
    default_port: ClassVar[int] = 9101
    settings_cls: ClassVar[type[ServiceSettings]] = PnlSettings

    def __init__(self, settings: PnlSettings, registry=None):
        super().__init__(settings, registry)
        cfg: PnlConfig = settings.pnl
        self.ledger = Ledger(
            self.registry, fx_max_age_s=cfg.fx_max_age_s, reset_at=cfg.daily_reset, timezone=cfg.timezone
        )
        self.state = PnlFeed(self.ledger, cfg.reconcile_tolerance)
        self.metrics.register(_PnlCollector(self))

    # ------------------------------------------------------------------ the frame's hooks

    def handle(self, batch: np.ndarray) -> None:
        self.state.handle(batch)

    def health(self) -> dict:
        return {
            "skipped": dict(self.state.skipped),
            "records_applied": self.state.records,
            "positions": len(self.ledger.positions),
            "unknown_commissions": sum(len(p.pending()) for p in self.ledger.positions.values()),
            "reconciliation_breaks": len(self.state.reconciler.breaks),
            "feed_time": iso(self.ledger.clock_ns),
        }

    def routes(self, app: FastAPI) -> None:
        @app.get("/pnl")
        def pnl() -> dict:
            with self.lock:
                return json_safe(self.pnl_report())

        @app.get("/positions")
        def positions() -> dict:
            with self.lock:
                return json_safe(self.positions_report())

    # ------------------------------------------------------------------ reports

    def pnl_report(self) -> dict:
        report = self.ledger.report()
        report["reconciliation"] = self.state.reconciler.report()
        report["skipped"] = dict(self.state.skipped)
        lost = self.feed.stats.lost if self.feed is not None else 0
        report["history"] = {
            "feed_lost": lost,  # lapped, UDP gaps, or neither recorded nor in the ring at a restart
            "recorded_gaps": self.state.recorded_gaps,
            "complete": lost == 0 and self.state.recorded_gaps == 0,  # else the P&L may miss fills
        }
        return report

    def positions_report(self) -> dict:
        led, st = self.ledger, self.state
        rows = []
        for key in sorted(led.positions):
            p = led.positions[key]
            row = led.position_report(p)
            engine = st.engine_positions.get(key)
            row["engine_quantity"] = engine[0] if engine else None
            rows.append(row)
        broker = [
            {"strategy_id": s, "instrument_id": i, "symbol": st.symbol_of(i), "quantity": q, "at": iso(ts)}
            for (s, i), (q, ts) in sorted(st.reconciler.broker.items())
        ]
        return {"account_currency": led.account_currency, "positions": rows, "broker": broker}


class _PnlCollector:
    """Builds the ``quayside_pnl_*`` families from the ledger at scrape time."""

    def __init__(self, service: PnlService):
        self.service = service

    def describe(self):
        return []

    def collect(self):
        svc = self.service
        with svc.lock:
            report = svc.ledger.report()
            rec = svc.state.reconciler
            skipped = dict(svc.state.skipped)
            breaks = list(rec.breaks.values())
            opened = rec.opened
        ccy = report["account_currency"]
        labels = ["strategy", "instrument"]
        amounts = {}
        for field, what in [
            ("realized", "realized P&L net of realized fees"),
            ("unrealized", "unrealized P&L (longs at the bid, shorts at the ask) net of open fees"),
            ("total", "realized plus unrealized P&L"),
            ("fees", "commissions, realized and open"),
            ("realized_today", "realized P&L since the daily reset"),
            ("daily", "change in total P&L since the daily reset"),
        ]:
            amounts[field] = GaugeMetricFamily(
                f"quayside_pnl_{field}", f"{what}, account currency ({ccy}); NaN when unknown", labels=labels
            )
        position = GaugeMetricFamily("quayside_pnl_position", "Signed position", labels=labels)
        unknown = GaugeMetricFamily(
            "quayside_pnl_unknown_commissions", "Fills whose commission is not known yet", labels=labels
        )
        groups = [("all", "all", report["totals"])]
        groups += [(s, "all", a) for s, a in report["strategies"].items()]
        groups += [("all", sym, a) for sym, a in report["instruments"].items()]
        groups += [(str(p["strategy_id"]), p["symbol"], p) for p in report["positions"]]
        for strategy, instrument, a in groups:
            for field, fam in amounts.items():
                fam.add_metric([strategy, instrument], _nan(a[field]))
            unknown.add_metric([strategy, instrument], a["unknown_commissions"])
            if "quantity" in a:
                position.add_metric([strategy, instrument], a["quantity"])
        yield from amounts.values()
        yield position
        yield unknown
        info = GaugeMetricFamily("quayside_pnl_info", "The ledger's account currency", labels=["account_currency"])
        info.add_metric([ccy], 1.0)
        yield info
        rate = GaugeMetricFamily("quayside_pnl_fx_rate", "Account-currency value of one unit", labels=["currency"])
        stale = GaugeMetricFamily(
            "quayside_pnl_fx_stale", "1 when the FX rate is stale or unknown", labels=["currency"]
        )
        for c, fx in report["fx"].items():
            rate.add_metric([c], _nan(fx["rate"]))
            stale.add_metric([c], float(fx["stale"] or not fx["known"]))
        yield rate
        yield stale
        open_breaks = GaugeMetricFamily("quayside_pnl_reconciliation_breaks", "Open breaks against the broker")
        open_breaks.add_metric([], len(breaks))
        yield open_breaks
        ever = CounterMetricFamily("quayside_pnl_reconciliation_breaks_opened", "Breaks opened against the broker")
        ever.add_metric([], opened)
        yield ever
        diff = GaugeMetricFamily(
            "quayside_pnl_reconciliation_difference", "Ledger minus broker position", labels=labels
        )
        for b in breaks:
            diff.add_metric([str(b.strategy_id), b.symbol], b.ledger - b.broker)
        yield diff
        skip = CounterMetricFamily("quayside_pnl_skipped_records", "Feed records skipped, by reason", labels=["reason"])
        for reason, n in sorted(skipped.items()):
            skip.add_metric([reason], n)
        yield skip


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)
