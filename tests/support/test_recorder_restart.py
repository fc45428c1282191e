"""Kill -9 and restart mid-session: the recorder's files hold every record exactly once, and
the metrics exporter, rebuilt from them plus the live ring, shows exactly what one that never
stopped would show. Real processes (``quayside support ...``), a real shared-memory ring."""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pytest
from _monitoring_feed import session
from _monitoring_procs import ServiceProcess, wait_for
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from quayside.core import wire
from quayside.core.feed.ring import FeedWriter
from quayside.core.replay.recording import iter_recordings
from quayside.support.common.rebuild import LOG_RECORDER_ATTACHED, LOG_RECORDER_GAP
from quayside.support.metrics.service import MetricsService, MetricsSettings

pytestmark = pytest.mark.slow

N = 150_000
CHUNK = 500


def families(text: str) -> dict[tuple, float]:
    """The exporter's own samples; the frame's per-process ones and wall-clock ages left out."""
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith(("quayside_feed_", "quayside_rebuild_")) or "age_seconds" in family.name:
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Publisher(threading.Thread):
    """Publishes ``records`` in chunks at a steady pace, up to ``limit`` (raised by the test)."""

    def __init__(self, writer: FeedWriter, records: np.ndarray):
        super().__init__(daemon=True)
        self.writer, self.records, self.limit, self.done = writer, records, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.done < min(self.limit, len(self.records)):
                end = min(self.done + CHUNK, self.limit, len(self.records))
                self.writer.publish(self.records[self.done : end])
                self.done = end
                self.writer.heartbeat()
            time.sleep(0.002)

    def publish_until(self, limit: int) -> None:
        self.limit = limit
        wait_for(lambda: self.done >= min(limit, len(self.records)), f"{limit} records published", 120)


def test_recorder_and_exporter_killed_mid_session_recover_exactly(shm_dir, tmp_path):
    ring, folder = shm_dir / "feed", tmp_path / "rec"
    writer = FeedWriter(ring, 1 << 18)
    feed = session(N)
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    common = {"QUAYSIDE_FEED__RING": str(ring), "QUAYSIDE_LOG_FORMAT": "json"}
    rec_env = {**common, "QUAYSIDE_RECORDER__FOLDER": str(folder), "QUAYSIDE_RECORDER__EVENTS": "file"}
    met_env = {**common, "QUAYSIDE_RECORDINGS": str(folder), "QUAYSIDE_RECORDINGS_SINCE": yesterday}
    recorder = ServiceProcess("recorder", tmp_path / "recorder.log", rec_env)
    metrics = ServiceProcess("metrics", tmp_path / "metrics.log", met_env)
    publisher = Publisher(writer, feed)
    publisher.start()
    try:
        publisher.publish_until(5_000)
        recorder.start().wait_healthy()
        metrics.start().wait_healthy()
        publisher.publish_until(40_000)
        publisher.limit = 70_000  # keep publishing while they die
        wait_for(lambda: recorder.health()["records"] >= 30_000, "the recorder at 30,000 records")
        recorder.kill9()
        wait_for(lambda: publisher.done >= 50_000, "more records while the recorder is down")
        metrics.kill9()
        publisher.publish_until(70_000)
        metrics.start().wait_healthy()  # rebuilt from files that lag the ring: it joins the ring earlier
        recorder.start().wait_healthy()
        publisher.publish_until(len(feed))

        def recorded_all():
            return recorder.health()["position"] == len(feed)

        wait_for(recorded_all, "the recorder to catch up", explain=recorder.output)
        wait_for(
            lambda: f"quayside_orders_total {len(feed[feed['kind'] == wire.RecordKind.ORDER])}.0" in metrics.metrics(),
            "the exporter to catch up",
            explain=metrics.output,
        )
        scraped = families(metrics.metrics())
        assert recorder.stop() == 0 and metrics.stop() == 0
    finally:
        publisher.stop.set()
        for svc in (recorder, metrics):
            if svc.proc is not None and svc.proc.poll() is None:
                svc.stop()

    # the files: every record exactly once, in feed order, one attach marker per recorder start
    everything = np.concatenate([r for _, r in iter_recordings(folder)])
    logs = everything.view(wire.log_dtype)
    is_log = everything["kind"] == wire.RecordKind.LOG
    attach, gap = is_log & (logs["code"] == LOG_RECORDER_ATTACHED), is_log & (logs["code"] == LOG_RECORDER_GAP)
    assert int(attach.sum()) == 2 and not gap.any()
    expected = feed.copy()
    expected["seq"] = np.arange(len(feed))
    assert everything[~attach].tobytes() == expected.tobytes()

    # the exporter: what one that never stopped shows
    reference = MetricsService(MetricsSettings(feed={"ring": str(ring)}))
    reference.handle(expected)
    assert scraped == families(generate_latest(reference.metrics).decode())
    writer.close()
