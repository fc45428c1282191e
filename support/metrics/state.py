"""What the metrics exporter knows, computed from feed batches with numpy: no Prometheus here.

:class:`MetricsState` takes ``record_dtype`` batches in feed order and keeps counters, the
engine's latest heartbeat, per-instrument quote times, and latency histograms as bucket
counts (:class:`BucketHistogram`: one ``np.searchsorted`` + ``np.bincount`` per batch instead
of a Python call per observation). Only LOG records, which are rare, are looked at one by one.
The exporter (:mod:`.service`) turns this state into Prometheus metric families at scrape time.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.utils import floatToGoString

from quayside.core.wire import (
    DenyReason,
    Flag,
    LogCode,
    OrderStatus,
    RecordKind,
    denial_dtype,
    fill_dtype,
    heartbeat_dtype,
    log_dtype,
    order_dtype,
    order_status_dtype,
    quote_dtype,
)
from quayside.support.common.rebuild import LOG_RECORDER_GAP

__all__ = ["LATENCY_BUCKETS", "BucketHistogram", "EngineHeartbeat", "MetricsState"]

#: Upper bounds (seconds) of the latency histograms: 1-2-5 steps from 1 µs to 1 s.
LATENCY_BUCKETS = np.array([float(f"{m}e{e}") for e in range(-6, 0) for m in (1, 2, 5)] + [1.0])

TICK_TO_ORDER_STAGES = ("queue", "decide", "total")


class BucketHistogram:
    """A Prometheus histogram of durations as bucket counts: ``counts[i]`` observations in
    ``(bounds[i-1], bounds[i]]``, the last one above every bound (``+Inf``). Observations are
    integer nanoseconds and the sum is kept exactly, so the result does not depend on how the
    feed was cut into batches (a rebuilt exporter shows the same numbers as one that ran on)."""

    def __init__(self, bounds_s: np.ndarray = LATENCY_BUCKETS):
        self.bounds = np.asarray(bounds_s, dtype=np.float64)
        self.bounds_ns = np.round(self.bounds * 1e9).astype(np.int64)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)
        self.sum_ns = 0

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @property
    def sum(self) -> float:
        """Sum of the observations in seconds."""
        return self.sum_ns * 1e-9

    def observe_ns(self, values_ns: np.ndarray) -> None:
        """Add many observations (integer nanoseconds) at once."""
        values_ns = np.asarray(values_ns, dtype=np.int64)
        if not len(values_ns):
            return
        self.counts += np.bincount(np.searchsorted(self.bounds_ns, values_ns, side="left"), minlength=len(self.counts))
        self.sum_ns += int(values_ns.sum())

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs, ``+Inf`` last, as Prometheus exposes them."""
        cum = np.cumsum(self.counts)
        return [(_le(b), int(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)] + [("+Inf", int(cum[-1]))]


def _le(bound: float) -> str:
    return floatToGoString(float(bound))  # as prometheus_client's own Histogram writes ``le``


@dataclass
class EngineHeartbeat:
    """The fields of the engine's latest HEARTBEAT record."""

    ts_event: int = 0
    loop_iterations: int = 0
    events_in: int = 0
    orders_out: int = 0
    denials: int = 0
    fills: int = 0
    backpressure: int = 0
    trading_state: int = 0
    cpu: int = -1
    max_loop_ns: int = 0


@dataclass
class MetricsState:
    """Everything the exporter shows. ``instrument_count`` bounds the instrument ids it tracks
    (ids above it are counted as malformed, so labels stay bounded by the registry)."""

    instrument_count: int
    max_pending_orders: int = 100_000
    counts: collections.Counter = field(default_factory=collections.Counter)
    heartbeat: EngineHeartbeat | None = None
    heartbeats: int = 0
    engine_starts: int = 0
    broker_connected: int | None = None  # None until a BROKER_CONNECTED/DISCONNECTED record
    broker_disconnects: int = 0
    reconciliation_breaks: int = 0
    open_breaks: set[int] = field(default_factory=set)
    recorder_gaps: int = 0
    recorder_lost: int = 0

    def __post_init__(self):
        n = self.instrument_count + 1
        self.quote_ts = np.zeros(n, dtype=np.int64)  # last quote ts_recv per instrument id, ns
        self.quotes = np.zeros(n, dtype=np.int64)
        self.denials = np.zeros(max(DenyReason) + 2, dtype=np.int64)  # last slot: unknown reasons
        self.statuses = np.zeros(max(OrderStatus) + 2, dtype=np.int64)
        self.log_levels: collections.Counter = collections.Counter()
        self.tick_to_order = {stage: BucketHistogram() for stage in TICK_TO_ORDER_STAGES}
        self.round_trip = BucketHistogram()
        # orders still waiting for their first answer: engine order id and ORDER ts_event, oldest first
        self.pending_ids = np.zeros(0, dtype=np.int64)
        self.pending_ts = np.zeros(0, dtype=np.int64)

    @property
    def pending(self) -> int:
        """Orders with no status or fill yet."""
        return len(self.pending_ids)

    # ------------------------------------------------------------------ batches

    def handle(self, batch: np.ndarray) -> None:
        """Apply a batch of records (``record_dtype``, feed order)."""
        kinds = np.ascontiguousarray(batch["kind"])  # compared several times: one strided read only
        per_kind = np.bincount(kinds, minlength=256)
        if per_kind[RecordKind.LOG]:
            starts = np.flatnonzero(kinds == RecordKind.LOG)
            starts = starts[batch.view(log_dtype)["code"][starts] == LogCode.ENGINE_STARTED]
            if len(starts) > 1 or (len(starts) == 1 and starts[0] > 0):  # a new engine run: order ids restart
                cuts = [0, *starts.tolist(), len(batch)]
                for a, b in itertools.pairwise(cuts):
                    if b > a:
                        self._handle(batch[a:b], kinds[a:b], np.bincount(kinds[a:b], minlength=256))
                return
        self._handle(batch, kinds, per_kind)

    def _handle(self, batch: np.ndarray, kinds: np.ndarray, per_kind: np.ndarray) -> None:
        self.counts["records"] += len(batch)
        if per_kind[RecordKind.LOG]:  # first: ENGINE_STARTED (always at the head here) resets order ids
            self._logs(batch[kinds == RecordKind.LOG])
        if per_kind[RecordKind.QUOTE]:
            self._quotes(batch, kinds == RecordKind.QUOTE)
        if per_kind[RecordKind.ORDER]:
            self._orders(batch[kinds == RecordKind.ORDER].view(order_dtype))
        self.counts["cancels"] += int(per_kind[RecordKind.CANCEL])
        if per_kind[RecordKind.ORDER_STATUS] or per_kind[RecordKind.FILL]:
            self._answers(batch, kinds, per_kind)
        if per_kind[RecordKind.DENIAL]:
            reasons = batch.view(denial_dtype)["reason"][kinds == RecordKind.DENIAL]
            self.denials += np.bincount(np.minimum(reasons, len(self.denials) - 1), minlength=len(self.denials))
        if per_kind[RecordKind.HEARTBEAT]:
            last = int(np.flatnonzero(kinds == RecordKind.HEARTBEAT)[-1])
            self._heartbeat(batch[last : last + 1].view(heartbeat_dtype)[0])
            self.heartbeats += int(per_kind[RecordKind.HEARTBEAT])

    def _known(self, iid: np.ndarray, what: str) -> np.ndarray:
        ok = (iid >= 1) & (iid <= self.instrument_count)
        if not ok.all():
            self.counts[f"malformed_{what}"] += int(len(ok) - np.count_nonzero(ok))
        return ok

    def _quotes(self, batch: np.ndarray, mask: np.ndarray) -> None:
        iid = batch["instrument_id"][mask]
        ts = batch.view(quote_dtype)["ts_recv"][mask]
        ok = self._known(iid, "quote")
        if not ok.all():
            iid, ts = iid[ok], ts[ok]
        np.maximum.at(self.quote_ts, iid, ts)
        self.quotes += np.bincount(iid, minlength=len(self.quotes))

    def _orders(self, orders: np.ndarray) -> None:
        self.counts["orders"] += len(orders)
        ts_recv, ts_event = orders["ts_recv"], orders["ts_event"]
        triggered = ts_recv > 0
        if triggered.any():
            self.tick_to_order["queue"].observe_ns(orders["dt_queue_ns"][triggered])
            self.tick_to_order["decide"].observe_ns(orders["dt_decide_ns"][triggered])
            total = ts_event[triggered] - ts_recv[triggered]
            bad = total < 0
            if bad.any():  # clocks disagree: not a latency
                self.counts["malformed_latency"] += int(bad.sum())
                total = total[~bad]
            self.tick_to_order["total"].observe_ns(total)
        self.pending_ids = np.concatenate([self.pending_ids, orders["order_id"].astype(np.int64)])
        self.pending_ts = np.concatenate([self.pending_ts, ts_event])
        excess = len(self.pending_ids) - self.max_pending_orders
        if excess > 0:  # answers that never came: forget the oldest
            self.pending_ids, self.pending_ts = self.pending_ids[excess:], self.pending_ts[excess:]
            self.counts["unanswered_orders"] += excess

    def _answers(self, batch: np.ndarray, kinds: np.ndarray, per_kind: np.ndarray) -> None:
        """ORDER_STATUS and FILL: status counts, fills, and the first answer of each order."""
        is_status = kinds == RecordKind.ORDER_STATUS
        if per_kind[RecordKind.ORDER_STATUS]:
            status = batch.view(order_status_dtype)["status"][is_status]
            self.statuses += np.bincount(np.minimum(status, len(self.statuses) - 1), minlength=len(self.statuses))
        if per_kind[RecordKind.FILL]:
            # executions only: the gateway sends a late commission as a second FILL record with
            # quantity 0, and a correction replaces an execution already counted
            f = batch.view(fill_dtype)[kinds == RecordKind.FILL]
            late_commission = f["quantity"] == 0
            correction = (f["flags"] & Flag.CORRECTION) != 0
            self.counts["fills"] += int(np.count_nonzero(~late_commission & ~correction))
            self.counts["fill_updates"] += int(np.count_nonzero(late_commission | correction))
        if not len(self.pending_ids):
            return
        answer = is_status | (kinds == RecordKind.FILL)
        answers = batch.view(fill_dtype)  # order_id and ts_recv sit at the same offsets in both kinds
        ids, first = np.unique(answers["order_id"][answer], return_index=True)  # each order's first answer
        ts = answers["ts_recv"][answer][first]
        by_id = np.argsort(self.pending_ids, kind="stable")
        sorted_ids = self.pending_ids[by_id]
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        hit = sorted_ids[at] == ids
        if not hit.any():
            return
        rows = by_id[at[hit]]
        rtt = ts[hit] - self.pending_ts[rows]
        keep = np.ones(len(self.pending_ids), dtype=bool)
        keep[rows] = False
        self.pending_ids, self.pending_ts = self.pending_ids[keep], self.pending_ts[keep]
        bad = rtt < 0
        if bad.any():
            self.counts["malformed_latency"] += int(bad.sum())
            rtt = rtt[~bad]
        self.round_trip.observe_ns(rtt)

    def _heartbeat(self, h: np.void) -> None:
        self.heartbeat = EngineHeartbeat(
            ts_event=int(h["ts_event"]),
            loop_iterations=int(h["loop_iterations"]),
            events_in=int(h["events_in"]),
            orders_out=int(h["orders_out"]),
            denials=int(h["denials"]),
            fills=int(h["fills"]),
            backpressure=int(h["backpressure"]),
            trading_state=int(h["trading_state"]),
            cpu=int(h["cpu"]),
            max_loop_ns=int(h["max_loop_ns"]),
        )

    def _logs(self, logs: np.ndarray) -> None:
        logs = logs.view(log_dtype)
        for code, level, iid, i0 in zip(
            logs["code"].tolist(),
            logs["level"].tolist(),
            logs["instrument_id"].tolist(),
            logs["i0"].tolist(),
            strict=True,
        ):
            self.log_levels[level] += 1
            if code == LogCode.ENGINE_STARTED:
                self.engine_starts += 1
                self.pending_ids, self.pending_ts = self.pending_ids[:0], self.pending_ts[:0]
            elif code == LogCode.BROKER_CONNECTED:
                self.broker_connected = 1
            elif code == LogCode.BROKER_DISCONNECTED:
                self.broker_connected = 0
                self.broker_disconnects += 1
            elif code == LogCode.RECONCILIATION_BREAK:
                self.reconciliation_breaks += 1
                self.open_breaks.add(iid)
            elif code == LogCode.RECONCILIATION_RESOLVED:
                self.open_breaks.discard(iid)
            elif code == LOG_RECORDER_GAP:  # a gap in the recording this state was rebuilt from
                self.recorder_gaps += 1
                self.recorder_lost += i0
