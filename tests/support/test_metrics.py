"""The metrics exporter: values and histograms from hand-built feeds, checked against plain
Python arithmetic and prometheus_client's own Histogram; bad records counted, never fatal."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _monitoring_feed import log, record, session, typed
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quayside.core import wire
from quayside.core.feed.ring import FeedWriter
from quayside.support.metrics.service import MetricsService, MetricsSettings
from quayside.support.metrics.state import LATENCY_BUCKETS, BucketHistogram

T0 = 1_723_161_600_000_000_000


def samples(text: str) -> dict[tuple, float]:
    """``{(name, sorted labels): value}`` of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def exporter(shm_dir, name: str = "feed", **settings) -> tuple[MetricsService, FeedWriter]:
    writer = FeedWriter(shm_dir / name, 1 << 16)
    svc = MetricsService(MetricsSettings(feed={"ring": str(shm_dir / name)}, **settings))
    svc.open()
    return svc, writer


def feed_through(svc: MetricsService, writer: FeedWriter, records: np.ndarray, chunk: int = 4096) -> dict:
    for lo in range(0, len(records), chunk):
        writer.publish(records[lo : lo + chunk])
        while svc.poll_once():
            pass
    return samples(generate_latest(svc.metrics).decode())


def reference_histogram(values_s) -> dict:
    """The same observations through prometheus_client's Histogram, one call each."""
    reg = CollectorRegistry()
    h = Histogram("ref_seconds", "reference", buckets=list(LATENCY_BUCKETS), registry=reg)
    for v in values_s:
        h.observe(v)
    got = samples(generate_latest(reg).decode())
    return {key: v for key, v in got.items() if key[0] != "ref_seconds_created"}


def test_bucket_histogram_matches_prometheus_client():
    rng = np.random.default_rng(3)
    values_ns = np.r_[(10 ** rng.uniform(2, 9.5, 5000)).astype(np.int64), 0]
    mine = BucketHistogram()
    mine.observe_ns(values_ns[:100])
    mine.observe_ns(values_ns[100:])
    reg = CollectorRegistry()
    h = Histogram("x_seconds", "x", buckets=list(LATENCY_BUCKETS), registry=reg)
    for v in values_ns.tolist():
        h.observe(v * 1e-9)
    ref = samples(generate_latest(reg).decode())
    for le, count in mine.cumulative():
        assert ref[("x_seconds_bucket", (("le", le),))] == count, le
    assert ref[("x_seconds_count", ())] == mine.count == len(values_ns)
    assert ref[("x_seconds_sum", ())] == pytest.approx(mine.sum)
    assert LATENCY_BUCKETS[0] == 1e-6 and LATENCY_BUCKETS[-1] == 1.0
    exact = BucketHistogram()
    exact.observe_ns(np.array([1000, 1001, 10**9]))  # "le" is inclusive, in exact nanoseconds
    assert (
        exact.cumulative()[0] == ("1e-06", 1) and exact.cumulative()[-2] == ("1.0", 3) and exact.sum_ns == 10**9 + 2001
    )


def test_values_from_a_realistic_feed(shm_dir):
    svc, writer = exporter(shm_dir)
    feed = session(30_000, t0=T0)
    got = feed_through(svc, writer, feed)
    orders = typed(feed, wire.RecordKind.ORDER)
    statuses = typed(feed, wire.RecordKind.ORDER_STATUS)
    fills = typed(feed, wire.RecordKind.FILL)
    denials = typed(feed, wire.RecordKind.DENIAL)
    beat = typed(feed, wire.RecordKind.HEARTBEAT)[-1]

    def value(name, **labels):
        return got[(name, tuple(sorted(labels.items())))]

    # tick to order, per stage, against prometheus_client fed one value at a time
    stages = {
        "queue": orders["dt_queue_ns"] * 1e-9,
        "decide": orders["dt_decide_ns"] * 1e-9,
        "total": (orders["ts_event"] - orders["ts_recv"]) * 1e-9,
    }
    for stage, values in stages.items():
        ref = reference_histogram(values.tolist())
        for (name, labels), v in ref.items():
            mine = value(name.replace("ref_seconds", "quayside_tick_to_order_seconds"), stage=stage, **dict(labels))
            assert mine == pytest.approx(v), (stage, name, labels)
    # order round trip: ORDER ts_event -> first answer's ts_recv (the status comes before the fill)
    sent = dict(zip(orders["order_id"].tolist(), orders["ts_event"].tolist(), strict=True))
    rtt = [
        (t - sent[o]) * 1e-9 for o, t in zip(statuses["order_id"].tolist(), statuses["ts_recv"].tolist(), strict=True)
    ]
    for (name, labels), v in reference_histogram(rtt).items():
        assert value(name.replace("ref_seconds", "quayside_order_round_trip_seconds"), **dict(labels)) == pytest.approx(
            v
        )

    assert value("quayside_orders_total") == len(orders)
    assert value("quayside_fills_total") == len(fills)
    rejected = int(np.count_nonzero(statuses["status"] == wire.OrderStatus.REJECTED))
    assert value("quayside_order_rejects_total") == rejected > 0
    assert value("quayside_order_status_total", status="REJECTED") == rejected
    assert value("quayside_order_status_total", status="SUBMITTED") == len(statuses) - rejected
    assert value("quayside_orders_awaiting_answer") == 0
    for reason in ("PRICE_COLLAR", "MAX_ORDER_QTY", "MESSAGE_RATE", "FILL_LATCH"):
        expected = int(np.count_nonzero(denials["reason"] == getattr(wire.DenyReason, reason)))
        assert value("quayside_risk_denials_total", reason=reason) == expected
    assert sum(v for (n, _), v in got.items() if n == "quayside_risk_denials_total") == len(denials)
    # the engine's own counters: its latest heartbeat
    assert value("quayside_engine_events_in_total") == beat["events_in"]
    assert value("quayside_engine_orders_out_total") == beat["orders_out"]
    assert value("quayside_engine_denials_total") == beat["denials"]
    assert value("quayside_engine_fills_total") == beat["fills"]
    assert value("quayside_engine_loop_iterations_total") == beat["loop_iterations"]
    assert value("quayside_engine_trading_state") == wire.TradingState.ACTIVE
    assert value("quayside_engine_last_heartbeat_timestamp_seconds") == pytest.approx(beat["ts_event"] * 1e-9)
    assert value("quayside_engine_max_loop_seconds") == pytest.approx(12_345e-9)
    assert value("quayside_engine_heartbeats_total") == len(typed(feed, wire.RecordKind.HEARTBEAT))
    assert value("quayside_engine_starts_total") == 1
    # market data per instrument, labelled by registry symbol
    quotes = typed(feed, wire.RecordKind.QUOTE)
    for iid, symbol in ((1, "EURUSD"), (3, "AAPL"), (4, "ESZ6")):
        mine = quotes[quotes["instrument_id"] == iid]
        assert value("quayside_quotes_total", instrument=symbol) == len(mine)
        assert value("quayside_quote_last_timestamp_seconds", instrument=symbol) == pytest.approx(
            mine["ts_recv"].max() * 1e-9
        )
        assert value("quayside_quote_age_seconds", instrument=symbol) > 0
    assert ("quayside_quotes_total", (("instrument", "USDJPY"),)) not in got  # no quotes, no series
    # broker and reconciliation from LOG records
    assert value("quayside_broker_connected") == 1 and value("quayside_broker_disconnects_total") == 0
    assert value("quayside_reconciliation_breaks_total") == 1 and value("quayside_reconciliation_breaks_open") == 0
    assert value("quayside_log_records_total", level="ERROR") == 2
    assert value("quayside_feed_records_total", service="metrics") == len(feed)
    writer.close()


def test_batch_boundaries_do_not_change_anything(shm_dir):
    feed = session(12_000, t0=T0)
    results = []
    for i, chunk in enumerate((7, 97, 5000)):
        svc, writer = exporter(shm_dir, name=f"feed{i}")
        got = feed_through(svc, writer, feed, chunk)
        results.append({k: v for k, v in got.items() if "age_seconds" not in k[0]})
        writer.close()
        svc.feed.close()
    assert results[0] == results[1] == results[2]


def test_broker_state_reconciliation_breaks_and_engine_restarts(shm_dir):
    svc, writer = exporter(shm_dir)
    order = record(wire.order_dtype, wire.RecordKind.ORDER, instrument_id=1, ts_event=T0, order_id=1, ts_recv=T0 - 500)
    answer = record(
        wire.order_status_dtype, wire.RecordKind.ORDER_STATUS, instrument_id=1, order_id=1, ts_recv=T0 + 10**6
    )
    feed = np.concatenate(
        [
            log(wire.LogCode.BROKER_CONNECTED, T0),
            order,  # never answered: the engine restarts and order ids begin again
            log(wire.LogCode.BROKER_DISCONNECTED, T0 + 1),
            log(wire.LogCode.RECONCILIATION_BREAK, T0 + 2, iid=1),
            log(wire.LogCode.RECONCILIATION_BREAK, T0 + 3, iid=3),
            log(wire.LogCode.RECONCILIATION_RESOLVED, T0 + 4, iid=1),
            log(wire.LogCode.ENGINE_STARTED, T0 + 5),
            answer,  # for the new run's order 1, which was never sent: no round trip
        ]
    )
    got = feed_through(svc, writer, feed)
    assert got[("quayside_broker_connected", ())] == 0
    assert got[("quayside_broker_disconnects_total", ())] == 1
    assert got[("quayside_reconciliation_breaks_total", ())] == 2
    assert got[("quayside_reconciliation_breaks_open", ())] == 1
    assert got[("quayside_engine_starts_total", ())] == 1
    assert got[("quayside_order_round_trip_seconds_count", ())] == 0
    assert got[("quayside_orders_awaiting_answer", ())] == 0
    assert ("quayside_engine_trading_state", ()) not in got  # no heartbeat yet: no engine counters
    writer.close()


def test_malformed_and_foreign_records_are_counted_and_skipped_not_fatal(shm_dir):
    svc, writer = exporter(shm_dir)
    rng = np.random.default_rng(11)
    junk = np.frombuffer(rng.bytes(64 * 2000), dtype=wire.record_dtype).copy()
    junk["kind"] = rng.choice(list(wire.DTYPES), len(junk)).astype(np.uint8)  # known kinds, garbage payloads
    junk["version"] = 1
    foreign = junk[:50].copy()
    foreign["kind"] = 77
    bad_time = record(wire.order_dtype, wire.RecordKind.ORDER, instrument_id=1, ts_event=T0, ts_recv=T0 + 10**9)
    unknown_instrument = record(wire.quote_dtype, wire.RecordKind.QUOTE, instrument_id=4242, ts_recv=T0, ts_event=T0)
    got = feed_through(svc, writer, np.concatenate([junk, foreign, bad_time, unknown_instrument, session(500, t0=T0)]))
    assert got[("quayside_feed_foreign_records_total", (("service", "metrics"),))] == 50
    assert got[("quayside_metrics_malformed_records_total", (("reason", "negative_latency"),))] >= 1
    assert got[("quayside_metrics_malformed_records_total", (("reason", "unknown_instrument"),))] >= 1
    assert got[("quayside_quotes_total", (("instrument", "EURUSD"),))] > 0  # the good records still count
    assert ("quayside_quotes_total", (("instrument", "4242"),)) not in got  # labels stay bounded
    instruments = {dict(k[1]).get("instrument") for k in got if k[0] == "quayside_quotes_total"}
    assert instruments <= {inst.symbol for inst in svc.registry}
    writer.close()


def test_metric_names_follow_prometheus_conventions(shm_dir):
    svc, writer = exporter(shm_dir)
    feed_through(svc, writer, session(5000, t0=T0))
    text = generate_latest(svc.metrics).decode()
    for family in text_string_to_metric_families(text):
        assert re.fullmatch(r"quayside_[a-z0-9_]+", family.name), family.name
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        assert not family.name.endswith(("_ms", "_ns", "_us", "_milliseconds")), family.name
        labels = {k for s in family.samples for k in s.labels}
        assert labels <= {"service", "stage", "reason", "status", "instrument", "level", "le"}, (family.name, labels)
    writer.close()


def test_late_commissions_and_corrections_are_not_counted_as_new_fills(shm_dir):
    """The gateway sends a commission that arrives after its execution as a second FILL record
    with quantity 0, and a corrected execution as a CORRECTION: neither is another execution."""
    svc, writer = exporter(shm_dir)
    feed = session(5_000, t0=T0)
    fills = typed(feed, wire.RecordKind.FILL)
    assert len(fills) >= 2
    late, fixed = fills[:1].copy(), fills[1:2].copy()
    late["quantity"], late["flags"] = 0.0, late["flags"] | wire.Flag.COMMISSION_KNOWN
    fixed["flags"] = fixed["flags"] | wire.Flag.CORRECTION
    got = feed_through(svc, writer, np.concatenate([feed, late.view(wire.record_dtype), fixed.view(wire.record_dtype)]))
    assert got[("quayside_fills_total", ())] == len(fills)
    assert got[("quayside_fill_updates_total", ())] == 2
