"""State at start from the recorder's files plus the live feed: each record applied exactly once.

A tiny service that keeps every ``seq`` it was handed stands in for a real one, so the tests
can see exactly which records were applied, in which order, and how often.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from _monitoring_feed import log, session
from _monitoring_procs import wait_for

from quayside.core import wire
from quayside.core.feed.ring import FeedWriter
from quayside.core.replay.recording import RecordingWriter, recording_path
from quayside.support.common.rebuild import (
    LOG_RECORDER_ATTACHED,
    LOG_RECORDER_GAP,
    attach_marker,
    gap_marker,
    rebuild_from_recordings,
    scan_recordings,
)
from quayside.support.common.service import Service
from quayside.support.common.settings import ServiceSettings
from quayside.support.recorder.service import RecorderService, RecorderSettings

T0 = 1_723_100_000_000_000_000  # 2024-08-08 06:53:20 UTC
DAY = 86_400 * 10**9


class Keeper(Service):
    """Remembers every record it is handed."""

    name = "keeper"

    def __init__(self, settings):
        super().__init__(settings)
        self.seen: list[np.ndarray] = []

    def handle(self, batch: np.ndarray) -> None:
        self.seen.append(batch.copy())

    @property
    def seqs(self) -> np.ndarray:
        """The ``seq`` of every feed record applied (the recorder's markers left out)."""
        got = np.concatenate(self.seen) if self.seen else np.zeros(0, wire.record_dtype)
        marker = (got["kind"] == wire.RecordKind.LOG) & (got.view(wire.log_dtype)["code"] >= 100)
        return got[~marker]["seq"].astype(np.int64)


def drain(service: Service) -> int:
    total = 0
    while n := service.poll_once():
        total += n
    return total


def markers(records: np.ndarray, code: int) -> np.ndarray:
    logs = records.view(wire.log_dtype)
    return logs[(records["kind"] == wire.RecordKind.LOG) & (logs["code"] == code)]


def quotes(n: int, t0: int = T0) -> np.ndarray:
    return session(n, t0=t0, order_every=10**9, heartbeat_every=10**9, deny_every=10**9, start=False)


def test_markers_are_log_records_every_reader_accepts():
    a, g = attach_marker(123, 45, ts=T0), gap_marker(46, 7, ts=T0)
    assert wire.validate(np.concatenate([a, g])).all()
    la, lg = a.view(wire.log_dtype)[0], g.view(wire.log_dtype)[0]
    assert (la["code"], la["i0"], la["i1"], la["seq"]) == (LOG_RECORDER_ATTACHED, 123, 45, 45)
    assert (lg["code"], lg["i0"], lg["i1"], lg["level"]) == (LOG_RECORDER_GAP, 7, 46, wire.LogLevel.WARNING)
    assert min(LOG_RECORDER_ATTACHED, LOG_RECORDER_GAP) > max(wire.LogCode)  # never an engine code


def test_scan_finds_the_last_seq_of_each_ring_across_files_and_skips_what_is_not_a_record(tmp_path):
    day1, day2 = T0, T0 + DAY
    ring_a, ring_b = 111, 222
    recs = quotes(30)
    recs["seq"] = np.arange(30)
    foreign = recs[:2].copy()
    foreign["kind"] = 99
    with RecordingWriter(recording_path(tmp_path, day1), clock=lambda: day1) as w:
        w.write(attach_marker(ring_a, 0, day1))
        w.write(recs[:10])
        w.write(gap_marker(10, 5, day1))
        w.write(recs[15:20])
    with open(recording_path(tmp_path, day1), "ab") as f:  # a foreign writer's records, and a torn tail
        f.write(foreign.tobytes() + b"\x01" * 17)
    with RecordingWriter(recording_path(tmp_path, day2), clock=lambda: day2) as w:
        w.write(attach_marker(ring_a, 20, day2))  # the head of a new day's file re-states the ring
        w.write(recs[20:25])
        w.write(attach_marker(ring_b, 0, day2))  # the engine restarted: a new ring, seq from 0
        w.write(recs[:3])
    applied = []
    found = scan_recordings(tmp_path, apply=lambda b: applied.append(b.copy()))
    assert found.last_seq == {ring_a: 24, ring_b: 2}
    assert found.epoch == ring_b and found.markers == 3 and found.foreign == 2 and found.gap_records == 5
    got = np.concatenate(applied)
    assert len(got) == found.records == 10 + 1 + 5 + 5 + 3  # attach markers left out, the gap marker kept
    assert not len(markers(got, LOG_RECORDER_ATTACHED)) and len(markers(got, LOG_RECORDER_GAP)) == 1
    only_day2 = scan_recordings(tmp_path, since=dt.date(2024, 8, 9))
    assert only_day2.last_seq == {ring_a: 24, ring_b: 2} and len(only_day2.files) == 1
    assert scan_recordings(tmp_path, newest_only=True).files == only_day2.files
    assert scan_recordings(tmp_path / "missing").records == 0


def _recorder(tmp_path, ring, **opts) -> RecorderService:
    settings = RecorderSettings(
        feed={"ring": str(ring)}, recorder={"folder": str(tmp_path / "rec"), "events": "none", **opts}
    )
    return RecorderService(settings)


def test_a_service_rebuilds_from_the_recording_then_continues_live_without_double_counting(shm_dir, tmp_path):
    ring = shm_dir / "feed"
    writer = FeedWriter(ring, 1 << 12)
    feed = quotes(3000)
    recorder = _recorder(tmp_path, ring)
    recorder.open()
    writer.publish(feed[:1000])
    drain(recorder)
    writer.publish(feed[1000:1500])  # in the ring, not recorded yet
    settings = ServiceSettings(feed={"ring": str(ring)}, recordings=str(tmp_path / "rec"), recordings_since=None)
    keeper = Keeper(settings)
    keeper.open()  # rebuilds 0..999 from the file, joins the ring at 1000
    assert keeper.rebuilt.records == 1000 and keeper.feed.position == 1000
    assert keeper.feed.stats.skipped == 1000 - max(0, 1500 - (1 << 12))
    drain(keeper)
    writer.publish(feed[1500:])
    drain(keeper)
    assert np.array_equal(keeper.seqs, np.arange(3000))
    assert keeper.feed.stats.lost == 0
    recorder.close()
    writer.close()


def test_records_neither_recorded_nor_still_in_the_ring_are_counted_lost(shm_dir, tmp_path):
    ring = shm_dir / "feed"
    writer = FeedWriter(ring, 1 << 10)
    recorder = _recorder(tmp_path, ring)
    recorder.open()
    writer.publish(quotes(100))
    drain(recorder)
    recorder.close()  # the recorder stops; the ring laps it
    writer.publish(quotes(3000))
    keeper = Keeper(ServiceSettings(feed={"ring": str(ring)}, recordings=str(tmp_path / "rec")))
    keeper.open()
    oldest = 3100 - 1024
    assert keeper.feed.position == oldest and keeper.feed.stats.lost == oldest - 100
    assert list(keeper.feed.gaps) == [(100, oldest - 100)]
    drain(keeper)
    assert np.array_equal(keeper.seqs, np.r_[np.arange(100), np.arange(oldest, 3100)])
    writer.close()


def test_recordings_of_an_earlier_engine_run_are_applied_but_do_not_move_the_live_reader(shm_dir, tmp_path):
    ring = shm_dir / "feed"
    first = FeedWriter(ring, 1 << 12)
    recorder = _recorder(tmp_path, ring)
    recorder.open()
    first.publish(quotes(500))
    drain(recorder)
    first.close()  # the engine stops; a new one creates a new ring under the same name
    second = FeedWriter(ring, 1 << 12)
    assert recorder.reattach_if_replaced()
    second.publish(quotes(200))
    drain(recorder)
    keeper = Keeper(ServiceSettings(feed={"ring": str(ring)}, recordings=str(tmp_path / "rec")))
    keeper.open()
    assert keeper.rebuilt.records == 700 and len(keeper.rebuilt.last_seq) == 2
    assert keeper.feed.position == 200
    second.publish(quotes(10))
    drain(keeper)
    assert np.array_equal(keeper.seqs, np.r_[np.arange(500), np.arange(210)])
    recorder.close()
    second.close()


def test_the_feed_thread_attaches_to_the_ring_of_a_restarted_engine(shm_dir):
    ring = shm_dir / "feed"
    first = FeedWriter(ring, 1 << 10)
    keeper = Keeper(ServiceSettings(feed={"ring": str(ring)}))
    keeper.start()
    try:
        first.publish(quotes(100))
        wait_for(lambda: len(keeper.seqs) == 100, "the first ring's records")
        epoch = keeper.feed.epoch
        first.close()  # the engine stops (its ring file goes) and a new engine starts
        second = FeedWriter(ring, 1 << 10)
        second.publish(quotes(50))
        wait_for(lambda: len(keeper.seqs) == 150, "the new ring's records")
        assert keeper.feed.epoch != epoch and keeper.feed.stats.lost == 0
        assert np.array_equal(keeper.seqs, np.r_[np.arange(100), np.arange(50)])
    finally:
        keeper.stop()
    second.close()


def test_rebuild_reads_today_by_default_and_earlier_days_on_request(tmp_path, shm_dir):
    today = dt.datetime.now(dt.UTC).date()
    now = int(dt.datetime(today.year, today.month, today.day, 12, tzinfo=dt.UTC).timestamp()) * 10**9
    for ts, n in ((now - DAY, 5), (now, 7)):
        with RecordingWriter(recording_path(tmp_path, ts), clock=lambda ts=ts: ts) as w:
            w.write(attach_marker(1, 0, ts))
            w.write(quotes(n, ts))
    writer = FeedWriter(shm_dir / "feed", 1 << 10)
    keeper = Keeper(ServiceSettings(feed={"ring": str(shm_dir / "feed")}))
    assert rebuild_from_recordings(keeper, tmp_path).records == 7
    assert rebuild_from_recordings(keeper, tmp_path, since=today - dt.timedelta(days=1)).records == 12
    writer.close()


@pytest.mark.parametrize("since", ["2024-08-08", None])
def test_the_rebuild_day_is_a_setting(since, monkeypatch):
    if since:
        monkeypatch.setenv("QUAYSIDE_RECORDINGS_SINCE", since)
    settings = ServiceSettings()
    assert settings.recordings_since == (dt.date(2024, 8, 8) if since else None)


def test_log_helper_builds_valid_records():
    assert wire.validate(log(wire.LogCode.ENGINE_STARTED, T0)).all()
