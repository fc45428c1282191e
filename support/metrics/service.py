"""The metrics exporter: the engine's statistics and latencies as Prometheus metrics.

Everything comes from the feed (:class:`~.state.MetricsState` does the arithmetic, batch by
batch, with numpy); this module names it. Names follow Prometheus conventions: base units
(seconds), ``_total`` for counters, histograms for latencies, few label values — ``stage``,
``reason``, ``status`` and ``level`` come from the wire format's enumerations, ``instrument``
from the instrument registry, so no label can grow without bound.

====================================================  =========  ============================================
metric                                                type       from
====================================================  =========  ============================================
``quayside_engine_loop_iterations_total``             counter    HEARTBEAT (the engine's own count)
``quayside_engine_events_in_total``                   counter    HEARTBEAT: inbound records processed
``quayside_engine_orders_out_total``                  counter    HEARTBEAT: orders and cancels written
``quayside_engine_denials_total``                     counter    HEARTBEAT: risk denials
``quayside_engine_fills_total``                       counter    HEARTBEAT: fills
``quayside_engine_backpressure_total``                counter    HEARTBEAT: outbound ring found full
``quayside_engine_trading_state``                     gauge      HEARTBEAT: 1 ACTIVE, 2 REDUCING, 3 HALTED
``quayside_engine_max_loop_seconds``                  gauge      HEARTBEAT: longest loop since the last one
``quayside_engine_cpu``                               gauge      HEARTBEAT: CPU the engine runs on (-1 unpinned)
``quayside_engine_last_heartbeat_timestamp_seconds``  gauge      HEARTBEAT ``ts_event``
``quayside_engine_heartbeats_total``                  counter    HEARTBEAT records
``quayside_engine_starts_total``                      counter    LOG ENGINE_STARTED
``quayside_tick_to_order_seconds{stage}``             histogram  ORDER: ``queue`` (dt_queue_ns), ``decide``
                                                                 (dt_decide_ns), ``total`` (ts_event - ts_recv)
``quayside_order_round_trip_seconds``                 histogram  ORDER ts_event -> first ORDER_STATUS/FILL ts_recv
``quayside_orders_total``                             counter    ORDER
``quayside_cancels_total``                            counter    CANCEL
``quayside_fills_total``                              counter    FILL with a quantity, not a CORRECTION
``quayside_fill_updates_total``                       counter    FILL: a late commission or a correction
``quayside_order_status_total{status}``               counter    ORDER_STATUS by OrderStatus name
``quayside_order_rejects_total``                      counter    ORDER_STATUS REJECTED
``quayside_orders_awaiting_answer``                   gauge      orders with no status or fill yet
``quayside_risk_denials_total{reason}``               counter    DENIAL by DenyReason name
``quayside_quotes_total{instrument}``                 counter    QUOTE
``quayside_quote_last_timestamp_seconds{instrument}`` gauge      QUOTE ts_recv, newest
``quayside_quote_age_seconds{instrument}``            gauge      now - the above (feed staleness)
``quayside_broker_connected``                         gauge      LOG BROKER_CONNECTED (1) / DISCONNECTED (0)
``quayside_broker_disconnects_total``                 counter    LOG BROKER_DISCONNECTED
``quayside_reconciliation_breaks_total``              counter    LOG RECONCILIATION_BREAK
``quayside_reconciliation_breaks_open``               gauge      instruments with a break not yet RESOLVED
``quayside_log_records_total{level}``                 counter    LOG by LogLevel name
``quayside_metrics_malformed_records_total{reason}``  counter    records skipped: ``unknown_instrument``,
                                                                 ``negative_latency``
====================================================  =========  ============================================

Plus the frame's metrics of every service (``quayside_feed_*_total{service}``,
``quayside_feed_age_seconds``, ``quayside_rebuild_records``). Default port 9104.
"""

from __future__ import annotations

import time

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from pydantic import BaseModel, ConfigDict, Field

from quayside.core.instruments import InstrumentRegistry
from quayside.core.wire import DenyReason, LogLevel, OrderStatus, TradingState, enum_name
from quayside.support.common.service import Service
from quayside.support.common.settings import ServiceSettings
from quayside.support.metrics.state import MetricsState

__all__ = ["MetricsOptions", "MetricsSettings", "MetricsService"]


class MetricsOptions(BaseModel):
    """``[metrics]`` settings (environment: ``QUAYSIDE_METRICS__<FIELD>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pending_orders: int = Field(
        default=100_000, ge=1, description="orders remembered while waiting for their first answer"
    )


class MetricsSettings(ServiceSettings):
    metrics: MetricsOptions = MetricsOptions()


class MetricsService(Service):
    """Exports the engine's statistics and latencies from the feed."""

    name = "metrics"
    default_port = 9104
    settings_cls = MetricsSettings

    def __init__(self, settings: MetricsSettings, registry: InstrumentRegistry | None = None):
        super().__init__(settings, registry)
        ids = [inst.id for inst in self.registry]
        self.symbols = {inst.id: inst.symbol for inst in self.registry}
        self.state = MetricsState(max(ids, default=0), max_pending_orders=settings.metrics.max_pending_orders)
        self.metrics.register(_MetricsCollector(self))

    def handle(self, batch: np.ndarray) -> None:
        self.state.handle(batch)

    def health(self) -> dict:
        s = self.state
        return {
            "records_applied": s.counts["records"],
            "heartbeats": s.heartbeats,
            "trading_state": enum_name(TradingState, s.heartbeat.trading_state) if s.heartbeat else None,
            "orders_awaiting_answer": s.pending,
            "malformed": {k: v for k, v in s.counts.items() if k.startswith("malformed_")},
        }


_ENGINE_COUNTERS = [
    ("loop_iterations", "Engine loop iterations since the engine started"),
    ("events_in", "Inbound records the engine processed"),
    ("orders_out", "Orders and cancels the engine wrote to the outbound ring"),
    ("denials", "Orders pre-trade risk denied"),
    ("fills", "Fills the engine applied"),
    ("backpressure", "Times the engine found the outbound ring full"),
]


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _by_enum(family, enum, counts: np.ndarray):
    """Counts indexed by enum value; index 0 and the last slot (clipped values) are UNKNOWN."""
    for name, value in zip(enum._fields, enum, strict=True):
        family.add_metric([name], int(counts[value]))
    family.add_metric(["UNKNOWN"], int(counts[0] + counts[-1]))
    return family


class _MetricsCollector:
    def __init__(self, service: MetricsService):
        self.service = service

    def collect(self):
        with self.service.lock:
            yield from self._engine()
            yield from self._orders()
            yield from self._market()
            yield from self._broker()

    def _engine(self):
        s = self.service.state
        h = s.heartbeat
        yield _counter("quayside_engine_heartbeats", "Engine heartbeat records seen", s.heartbeats)
        yield _counter("quayside_engine_starts", "Engine starts seen (LOG ENGINE_STARTED)", s.engine_starts)
        if h is None:
            return
        for field, doc in _ENGINE_COUNTERS:
            yield _counter(f"quayside_engine_{field}", doc + " (engine heartbeat)", getattr(h, field))
        states = ", ".join(f"{v} {n}" for n, v in zip(TradingState._fields, TradingState, strict=True))
        yield _gauge("quayside_engine_trading_state", f"Engine trading state: {states}", h.trading_state)
        yield _gauge(
            "quayside_engine_max_loop_seconds", "Longest engine loop since the previous heartbeat", h.max_loop_ns * 1e-9
        )
        yield _gauge("quayside_engine_cpu", "CPU the engine runs on, -1 if not pinned", h.cpu)
        yield _gauge(
            "quayside_engine_last_heartbeat_timestamp_seconds", "Engine time of its latest heartbeat", h.ts_event * 1e-9
        )

    def _orders(self):
        s = self.service.state
        tto = HistogramMetricFamily(
            "quayside_tick_to_order_seconds",
            "Tick to order: gateway receipt -> engine (queue), engine -> decision (decide), receipt -> sent (total)",
            labels=["stage"],
        )
        for stage, hist in s.tick_to_order.items():
            tto.add_metric([stage], hist.cumulative(), hist.sum)
        yield tto
        rtt = HistogramMetricFamily(
            "quayside_order_round_trip_seconds", "Order sent -> its first status or fill received by the gateway"
        )
        rtt.add_metric([], s.round_trip.cumulative(), s.round_trip.sum)
        yield rtt
        yield _counter("quayside_orders", "Orders the engine sent (feed ORDER records)", s.counts["orders"])
        yield _counter("quayside_cancels", "Cancels the engine sent (feed CANCEL records)", s.counts["cancels"])
        yield _counter(
            "quayside_fills",
            "Executions (feed FILL records with a quantity, corrections not counted again)",
            s.counts["fills"],
        )
        yield _counter(
            "quayside_fill_updates",
            "FILL records that update an execution: a late commission or a correction",
            s.counts["fill_updates"],
        )
        status = CounterMetricFamily("quayside_order_status", "Order status updates by status", labels=["status"])
        yield _by_enum(status, OrderStatus, s.statuses)
        yield _counter("quayside_order_rejects", "Orders the broker rejected", int(s.statuses[OrderStatus.REJECTED]))
        yield _gauge("quayside_orders_awaiting_answer", "Orders with no status or fill yet", s.pending)
        denials = CounterMetricFamily("quayside_risk_denials", "Pre-trade risk denials by reason", labels=["reason"])
        yield _by_enum(denials, DenyReason, s.denials)
        malformed = CounterMetricFamily(
            "quayside_metrics_malformed_records", "Records the exporter skipped, by reason", labels=["reason"]
        )
        unknown = sum(v for k, v in s.counts.items() if k.startswith("malformed_") and k != "malformed_latency")
        malformed.add_metric(["unknown_instrument"], unknown)
        malformed.add_metric(["negative_latency"], s.counts["malformed_latency"])
        yield malformed

    def _market(self):
        s, symbols = self.service.state, self.service.symbols
        seen = np.flatnonzero(s.quotes).tolist()
        quotes = CounterMetricFamily("quayside_quotes", "Quotes by instrument", labels=["instrument"])
        last = GaugeMetricFamily(
            "quayside_quote_last_timestamp_seconds", "Gateway receipt time of the newest quote", labels=["instrument"]
        )
        age = GaugeMetricFamily("quayside_quote_age_seconds", "Seconds since the newest quote", labels=["instrument"])
        now = time.time_ns()
        for iid in seen:
            symbol = symbols.get(iid, str(iid))
            quotes.add_metric([symbol], int(s.quotes[iid]))
            last.add_metric([symbol], int(s.quote_ts[iid]) * 1e-9)
            age.add_metric([symbol], max(0.0, (now - int(s.quote_ts[iid])) * 1e-9))
        yield quotes
        yield last
        yield age

    def _broker(self):
        s = self.service.state
        if s.broker_connected is not None:
            yield _gauge(
                "quayside_broker_connected", "1 while the gateway is connected to the broker", s.broker_connected
            )
        yield _counter("quayside_broker_disconnects", "Broker disconnections", s.broker_disconnects)
        yield _counter("quayside_reconciliation_breaks", "Reconciliation breaks reported", s.reconciliation_breaks)
        yield _gauge("quayside_reconciliation_breaks_open", "Instruments with an unresolved break", len(s.open_breaks))
        levels = CounterMetricFamily(
            "quayside_log_records", "Engine and gateway log records by level", labels=["level"]
        )
        for name, value in zip(LogLevel._fields, LogLevel, strict=True):
            levels.add_metric([name], s.log_levels[value])
        yield levels
