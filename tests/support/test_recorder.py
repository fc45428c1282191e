"""The recorder: every feed record in daily files that replay, its own loss in the file, JSON events."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from _monitoring_feed import log, record, session
from _monitoring_procs import http_get, serve

from quayside.core import wire
from quayside.core.feed.ring import FeedWriter
from quayside.core.replay.recording import iter_recordings, read_recording, recording_files
from quayside.support.common.rebuild import LOG_RECORDER_ATTACHED, LOG_RECORDER_GAP, scan_recordings
from quayside.support.recorder.events import events_of, iso_ns
from quayside.support.recorder.service import RecorderService, RecorderSettings

T0 = 1_723_161_600_000_000_000  # 2024-08-09 00:00:00 UTC
DAY = 86_400 * 10**9


class Clock:
    def __init__(self, now: int):
        self.now = now

    def __call__(self) -> int:
        return self.now


def recorder(tmp_path, ring, *, clock=None, stdout=None, **opts) -> RecorderService:
    settings = RecorderSettings(feed={"ring": str(ring)}, recorder={"folder": str(tmp_path / "rec"), **opts})
    svc = RecorderService(settings, clock=clock or Clock(T0), stdout=stdout or io.StringIO())
    svc.open()
    return svc


def drain(svc) -> int:
    total = 0
    while n := svc.poll_once():
        total += n
    return total


def recorded(folder) -> np.ndarray:
    return np.concatenate([r for _, r in iter_recordings(folder, allow_truncated_tail=True)])


def split(records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(feed records, attach markers, gap markers) of a recording."""
    logs = records.view(wire.log_dtype)
    is_log = records["kind"] == wire.RecordKind.LOG
    attach = is_log & (logs["code"] == LOG_RECORDER_ATTACHED)
    gap = is_log & (logs["code"] == LOG_RECORDER_GAP)
    return records[~attach & ~gap], logs[attach], logs[gap]


def test_every_record_is_recorded_once_in_feed_order_after_an_attach_marker(shm_dir, tmp_path):
    writer = FeedWriter(shm_dir / "feed", 1 << 14)
    feed = session(20_000, t0=T0)
    svc = recorder(tmp_path, shm_dir / "feed", events="none")
    for lo in range(0, len(feed), 3000):
        writer.publish(feed[lo : lo + 3000])
        drain(svc)
    svc.close()
    files = recording_files(tmp_path / "rec")
    assert [f.name for f in files] == ["feed-20240809.qsf"]
    got = read_recording(files[0])
    records, attach, gaps = split(got)
    assert got.view(wire.log_dtype)[0]["code"] == LOG_RECORDER_ATTACHED  # the file starts with the ring's marker
    assert len(attach) == 1 and attach[0]["i0"] == writer.segment.header["ts_created"][0] and attach[0]["i1"] == 0
    assert not len(gaps)
    expected = feed.copy()
    expected["seq"] = np.arange(len(feed))
    assert records.tobytes() == expected.tobytes()
    assert svc.counts["records"] == len(feed) and svc.counts["lost"] == 0
    writer.close()


def test_a_new_utc_day_starts_a_new_file_that_names_its_ring_again(shm_dir, tmp_path):
    writer = FeedWriter(shm_dir / "feed", 1 << 12)
    clock = Clock(T0 - 10**9)  # one second before midnight
    svc = recorder(tmp_path, shm_dir / "feed", clock=clock, events="none")
    writer.publish(session(100, t0=T0, start=False))
    drain(svc)
    clock.now = T0 + 5 * 10**9
    writer.publish(session(50, t0=T0, start=False))
    drain(svc)
    svc.close()
    files = recording_files(tmp_path / "rec")
    assert [f.name for f in files] == ["feed-20240808.qsf", "feed-20240809.qsf"]
    day2 = read_recording(files[1])
    head = day2.view(wire.log_dtype)[0]
    assert (head["code"], head["i1"], head["i0"]) == (
        LOG_RECORDER_ATTACHED,
        100,
        writer.segment.header["ts_created"][0],
    )
    assert len(split(read_recording(files[0]))[0]) == 100 and len(split(day2)[0]) == 50
    # a service rebuilding from the second day alone still knows which ring those records are of
    found = scan_recordings(tmp_path / "rec", newest_only=True)
    assert found.last_seq == {int(writer.segment.header["ts_created"][0]): 149}
    writer.close()


def test_a_lapped_recorder_records_exactly_what_it_lost_where_it_lost_it(shm_dir, tmp_path):
    cap = 1 << 10
    writer = FeedWriter(shm_dir / "feed", cap)
    svc = recorder(tmp_path, shm_dir / "feed", events="none")
    feed = session(10_000, t0=T0, start=False)
    writer.publish(feed[:500])
    drain(svc)
    writer.publish(feed[500:4000])  # 3.4 laps while the recorder was not reading: it resynchronises to live data
    for lo in range(4000, len(feed), 500):
        drain(svc)
        writer.publish(feed[lo : lo + 500])
    drain(svc)
    svc.close()
    everything = recorded(tmp_path / "rec")
    records, _, gaps = split(everything)
    assert [(int(g["i1"]), int(g["i0"])) for g in gaps] == [(500, 3500)]
    assert svc.counts["lost"] == 3500 == svc.feed.stats.lost
    assert np.array_equal(records["seq"].astype(np.int64), np.r_[np.arange(500), np.arange(4000, 10_000)])
    assert len(records) + 3500 == len(feed)
    is_gap = (everything["kind"] == wire.RecordKind.LOG) & (everything.view(wire.log_dtype)["code"] == LOG_RECORDER_GAP)
    gap_at = int(np.flatnonzero(is_gap)[0])
    assert everything["seq"][gap_at - 1] == 499 and everything["seq"][gap_at + 1] == 4000  # where the loss was
    writer.close()


def test_a_restarted_recorder_continues_after_its_last_record_and_marks_what_the_ring_lost(shm_dir, tmp_path):
    cap = 1 << 10
    writer = FeedWriter(shm_dir / "feed", cap)
    feed = session(5000, t0=T0, start=False)
    first = recorder(tmp_path, shm_dir / "feed", events="none")
    writer.publish(feed[:300])
    drain(first)
    first.close()  # down for a while: 2,700 more records, the ring keeps the last 1,024
    writer.publish(feed[300:600])
    second = recorder(tmp_path, shm_dir / "feed", events="none")  # restarted: nothing lost yet
    drain(second)
    second.close()
    writer.publish(feed[600:3000])
    third = recorder(tmp_path, shm_dir / "feed", events="none")
    for lo in range(3000, len(feed), 500):
        drain(third)
        writer.publish(feed[lo : lo + 500])
    drain(third)
    third.close()
    records, attach, gaps = split(recorded(tmp_path / "rec"))
    assert [int(a["i1"]) for a in attach] == [0, 300, 3000 - cap]
    assert [(int(g["i1"]), int(g["i0"])) for g in gaps] == [(600, 3000 - cap - 600)]
    assert np.array_equal(records["seq"].astype(np.int64), np.r_[np.arange(600), np.arange(3000 - cap, 5000)])
    writer.close()


def test_foreign_records_are_counted_and_left_out_not_fatal(shm_dir, tmp_path):
    writer = FeedWriter(shm_dir / "feed", 1 << 10)
    svc = recorder(tmp_path, shm_dir / "feed", events="none")
    feed = session(300, t0=T0, start=False)
    feed["kind"][[10, 20]] = 200  # a kind nobody knows
    feed["version"][30] = 9  # a version this build does not read
    writer.publish(feed)
    drain(svc)
    svc.close()
    records, _, _ = split(recorded(tmp_path / "rec"))
    assert len(records) == 297 and svc.feed.stats.foreign == 3
    assert 10 not in records["seq"] and 30 not in records["seq"]
    writer.close()


def test_a_failed_write_becomes_a_gap_marker_once_the_disk_works_again(shm_dir, tmp_path, monkeypatch):
    writer = FeedWriter(shm_dir / "feed", 1 << 10)
    svc = recorder(tmp_path, shm_dir / "feed", events="none")
    real_write = svc.writer.write
    calls = []

    def failing_once(records):
        calls.append(len(records))
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_write(records)

    monkeypatch.setattr(svc.writer, "write", failing_once)
    writer.publish(session(100, t0=T0, start=False))
    drain(svc)
    writer.publish(session(20, t0=T0, start=False))
    drain(svc)
    svc.close()
    records, _, gaps = split(recorded(tmp_path / "rec"))
    assert svc.counts["write_errors"] == 1
    assert [(int(g["i1"]), int(g["i0"])) for g in gaps] == [(0, 100)]
    assert records["seq"].tolist() == list(range(100, 120))
    writer.close()


def test_log_and_denial_records_become_json_lines(shm_dir, tmp_path):
    writer = FeedWriter(shm_dir / "feed", 1 << 10)
    out = io.StringIO()
    svc = recorder(tmp_path, shm_dir / "feed", stdout=out, events="both")
    denial = record(
        wire.denial_dtype, wire.RecordKind.DENIAL, instrument_id=3, strategy_id=2, ts_event=T0 + 123, order_id=17,
        reason=wire.DenyReason.PRICE_COLLAR, side=wire.Side.SELL, order_type=wire.OrderType.LIMIT, price=191.5,
        quantity=100.0, limit=np.nan,
    )  # fmt: skip
    batch = np.concatenate(
        [
            log(wire.LogCode.STATE_CHANGED, T0 + 1, level=wire.LogLevel.WARNING, i0=1, i1=3),
            session(5, t0=T0, start=False),
            denial,
            log(wire.LogCode.RECONCILIATION_BREAK, T0 + 2, level=wire.LogLevel.ERROR, iid=1, a0=5.0, a1=4.0),
            log(999, T0 + 3, i0=4, a1=math.inf),
        ]
    )
    writer.publish(batch)
    drain(svc)
    svc.close()
    lines = out.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert (tmp_path / "rec" / "events-20240809.jsonl").read_text().splitlines() == lines
    assert [e["event"] for e in events] == [
        "RECORDER_ATTACHED", "STATE_CHANGED", "DENIAL", "RECONCILIATION_BREAK", "UNKNOWN(999)",
    ]  # fmt: skip
    state, den, brk, unknown = events[1:]
    assert state["message"] == "trading state 1 -> 3" and state["level"] == "WARNING" and state["kind"] == "log"
    assert state["ts"] == "2024-08-09T00:00:00.000000001Z" and state["ts_event"] == T0 + 1 and state["seq"] == 0
    assert den["reason"] == "PRICE_COLLAR" and den["instrument"] == "AAPL" and den["strategy_id"] == 2
    assert (den["side"], den["order_type"], den["price"], den["qty"], den["limit"]) == (
        "SELL",
        "LIMIT",
        191.5,
        100.0,
        None,
    )
    assert den["order_id"] == 17 and "denied (PRICE_COLLAR)" in den["message"]
    assert brk["message"] == "reconciliation break: engine 5.0, broker 4.0" and brk["instrument"] == "EURUSD"
    assert brk["level"] == "ERROR" and unknown["args"]["a1"] is None and "log code 999" in unknown["message"]
    assert svc.counts["events"] == 5
    writer.close()


def test_json_events_are_rate_limited_and_the_rest_counted(shm_dir, tmp_path):
    writer = FeedWriter(shm_dir / "feed", 1 << 12)
    out = io.StringIO()
    svc = recorder(tmp_path, shm_dir / "feed", stdout=out, events="stdout", max_events_per_s=10)
    logs = np.concatenate([log(wire.LogCode.CONTROL_APPLIED, T0 + i, i0=1, i1=i) for i in range(200)])
    writer.publish(logs)
    drain(svc)
    assert svc.counts["events"] + svc.counts["suppressed"] == 201  # the attach marker too
    assert svc.counts["events"] <= 20  # at most two one-second windows in this test
    assert len(split(recorded(tmp_path / "rec"))[0]) == 200  # the recording itself keeps everything
    svc.close()
    writer.close()


def test_events_of_reads_columns_not_records_one_by_one():
    feed = session(2000, t0=T0)
    events = events_of(feed, {1: "EURUSD", 3: "AAPL", 4: "ESZ6"})
    kinds = feed["kind"]
    assert len(events) == int(np.count_nonzero((kinds == wire.RecordKind.LOG) | (kinds == wire.RecordKind.DENIAL)))
    assert events[0]["event"] == "ENGINE_STARTED" and iso_ns(T0).startswith("2024-08-09T00:00:00.")
    assert len(events_of(feed, {}, limit=3)) == 3


def test_http_lists_the_recordings_and_exports_the_recorder_metrics(shm_dir, tmp_path):
    writer = FeedWriter(shm_dir / "feed", 1 << 10)
    svc = recorder(tmp_path, shm_dir / "feed")
    writer.publish(session(500, t0=T0))
    drain(svc)
    with serve(svc.app()) as url:
        files = json.loads(http_get(f"{url}/files")[1])
        text = http_get(f"{url}/metrics")[1]
    assert files["current"] == "feed-20240809.qsf"
    (item,) = files["recordings"]
    assert item["name"] == "feed-20240809.qsf" and item["records"] == 503 and item["bytes"] == 64 + 503 * 64
    assert item["source"] == "recorder" and files["events"][0]["name"] == "events-20240809.jsonl"
    assert "quayside_recorder_records_total 502.0" in text
    assert "quayside_recorder_attach_markers_total 1.0" in text
    assert 'quayside_feed_records_total{service="recorder"} 502.0' in text
    assert "quayside_recorder_file_bytes 32256.0" in text
    svc.close()
    writer.close()


@pytest.mark.parametrize("fsync", ["never", "close", "flush"])
def test_every_fsync_policy_records(shm_dir, tmp_path, fsync):
    writer = FeedWriter(shm_dir / "feed", 1 << 10)
    svc = recorder(tmp_path, shm_dir / "feed", fsync=fsync, events="none")
    writer.publish(session(100, t0=T0, start=False))
    drain(svc)
    svc.close()
    assert len(split(recorded(tmp_path / "rec"))[0]) == 100
    writer.close()
