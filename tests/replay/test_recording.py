"""Recorded feed files: byte-exact round trips, appends, daily rotation, and the errors a damaged
file gives (each names the file, the byte offset and the field)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from quayside.core.replay.loaders import load
from quayside.core.replay.recording import (
    DataFormatError,
    RecordingWriter,
    RotatingRecordingWriter,
    iter_recordings,
    read_recording,
    recording_info,
    recording_path,
)
from quayside.core.wire import (
    FILE_HEADER_SIZE,
    FILE_MAGIC,
    RECORD_SIZE,
    Flag,
    RecordKind,
    file_header_dtype,
    quote_dtype,
    record_dtype,
    trade_dtype,
)

DAY = 86_400 * 10**9
T0 = 1_723_161_600 * 10**9  # 2024-08-09T00:00:00Z


def feed(n: int, start: int = 0) -> np.ndarray:
    """``n`` records of a small feed: quotes with a trade every third record."""
    out = np.zeros(n, dtype=record_dtype)
    q = out.view(quote_dtype)
    q["kind"], q["version"], q["instrument_id"] = RecordKind.QUOTE, 1, 1
    q["seq"] = np.arange(start, start + n)
    q["ts_event"] = T0 + q["seq"].astype(np.int64) * 1000
    q["ts_recv"] = q["ts_event"] + 7
    q["bid_price"], q["ask_price"], q["bid_size"], q["ask_size"] = 1.1, 1.2, 3.0, np.nan
    t = out.view(trade_dtype)
    every = slice(2, None, 3)
    out["kind"][every] = RecordKind.TRADE
    t["price"][every], t["size"][every], t["trade_id"][every], t["aggressor"][every] = 1.15, 2.0, 99, -1
    return out


def test_write_then_read_is_byte_identical(tmp_path):
    path = tmp_path / "feed-20240809.qsf"
    records = feed(1000)
    with RecordingWriter(path, source="test", clock=lambda: T0) as w:
        assert w.write(records[:400]) == 400
        w.write(records[400:])
    raw = path.read_bytes()
    assert len(raw) == FILE_HEADER_SIZE + 1000 * RECORD_SIZE
    assert raw[FILE_HEADER_SIZE:] == records.tobytes()
    header = np.frombuffer(raw[:FILE_HEADER_SIZE], dtype=file_header_dtype)[0]
    assert (header["magic"], header["ts_created"], header["source"]) == (FILE_MAGIC, T0, b"test")
    back = read_recording(path)
    assert back.dtype == record_dtype and back.tobytes() == records.tobytes()
    assert not back.flags.writeable  # a read-only map of the file
    assert read_recording(path, mmap=False).tobytes() == records.tobytes()
    info = recording_info(path)
    assert (info.records, info.partial_tail_bytes, info.source) == (1000, 0, "test")


def test_a_writer_appends_and_keeps_the_header(tmp_path):
    path = tmp_path / "f.qsf"
    with RecordingWriter(path, clock=lambda: T0) as w:
        w.write(feed(10))
    with RecordingWriter(path, clock=lambda: T0 + 5, flush="manual", fsync="flush") as w:
        assert w.records == 10
        w.write(feed(5, start=10))
        assert (w.records, w.records_written) == (15, 5)
    assert recording_info(path).ts_created == T0
    assert read_recording(path).tobytes() == np.concatenate([feed(10), feed(5, start=10)]).tobytes()


def test_an_empty_recording_has_no_records(tmp_path):
    path = tmp_path / "f.qsf"
    RecordingWriter(path, fsync="never").close()
    assert len(read_recording(path)) == 0 and recording_info(path).records == 0


def test_a_partial_tail_is_reported_with_its_offset(tmp_path):
    path = tmp_path / "f.qsf"
    with RecordingWriter(path) as w:
        w.write(feed(3))
    with open(path, "ab") as f:
        f.write(feed(1, start=3).tobytes()[:20])  # a writer killed mid-record
    offset = FILE_HEADER_SIZE + 3 * RECORD_SIZE
    with pytest.raises(DataFormatError) as err:
        read_recording(path)
    assert str(err.value).startswith(f"{path}, byte offset {offset}, field 'record': ")
    assert "partial record of 20 bytes" in str(err.value) and err.value.offset == offset
    assert read_recording(path, allow_truncated_tail=True).tobytes() == feed(3).tobytes()
    with pytest.raises(DataFormatError, match=f"byte offset {offset}"):
        RecordingWriter(path)
    with RecordingWriter(path, on_partial_tail="truncate") as w:
        w.write(feed(2, start=3))
    assert read_recording(path).tobytes() == feed(5).tobytes()


@pytest.mark.parametrize(
    ("offset", "patch", "field"),
    [
        (0, b"NOTQSREC", "magic"),
        (8, (2).to_bytes(4, "little"), "file_version"),
        (12, (128).to_bytes(4, "little"), "record_size"),
        (16, (32).to_bytes(4, "little"), "header_size"),
    ],
)
def test_a_bad_header_is_refused(tmp_path, offset, patch, field):
    path = tmp_path / "f.qsf"
    with RecordingWriter(path) as w:
        w.write(feed(2))
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(patch)] = patch
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError) as err:
        read_recording(path)
    assert str(err.value).startswith(f"{path}, byte offset {offset}, field {field!r}: ")
    with pytest.raises(DataFormatError, match=field):
        RecordingWriter(path)


def test_a_short_file_and_an_unknown_record_are_refused(tmp_path):
    short = tmp_path / "short.qsf"
    short.write_bytes(FILE_MAGIC)
    with pytest.raises(DataFormatError, match="field 'header': the file is 8 bytes"):
        read_recording(short)
    path = tmp_path / "f.qsf"
    records = feed(4)
    records["kind"][2] = 200
    with RecordingWriter(path) as w:
        with pytest.raises(ValueError, match="record 2 has an unknown kind"):
            w.write(records)
        assert w.records == 0
    with open(path, "ab") as f:
        f.write(records.tobytes())
    with pytest.raises(DataFormatError, match=f"byte offset {FILE_HEADER_SIZE + 2 * RECORD_SIZE}, field 'kind'"):
        read_recording(path)
    assert len(read_recording(path, check_records=False)) == 4


def test_the_writer_takes_only_wire_records(tmp_path):
    with RecordingWriter(tmp_path / "f.qsf") as w, pytest.raises(ValueError, match="64-byte"):
        w.write(np.zeros(3, dtype=np.float64))
    with pytest.raises(ValueError, match="longer than 32"):
        RecordingWriter(tmp_path / "g.qsf", source="x" * 33)


def test_one_writer_per_file(tmp_path):
    path = tmp_path / "f.qsf"
    with RecordingWriter(path), pytest.raises(BlockingIOError):
        RecordingWriter(path)


def test_daily_rotation_and_iteration_in_date_order(tmp_path):
    now = [T0 - 10]
    batches = [feed(3), feed(2, start=3), feed(1, start=5)]
    with RotatingRecordingWriter(tmp_path, source="rec", clock=lambda: now[0], fsync="never") as w:
        w.write(batches[0])
        assert w.path == tmp_path / "feed-20240808.qsf"
        now[0] = T0 + 10  # past midnight UTC
        w.write(batches[1])
        now[0] = T0 + DAY + 1
        w.write(batches[2])
    (tmp_path / "notes.txt").write_text("not a recording")
    (tmp_path / "other-20240801.qsf").write_bytes(b"")
    days = list(iter_recordings(tmp_path))
    assert [p.name for p, _ in days] == ["feed-20240808.qsf", "feed-20240809.qsf", "feed-20240810.qsf"]
    assert [len(r) for _, r in days] == [3, 2, 1]
    assert np.concatenate([r for _, r in days]).tobytes() == np.concatenate(batches).tobytes()
    assert recording_path(tmp_path, dt.date(2024, 8, 9)) == tmp_path / "feed-20240809.qsf"
    assert recording_path(tmp_path, T0, prefix="x").name == "x-20240809.qsf"


def test_a_loaded_source_replays_from_its_recording(tmp_path):
    """A recorded session goes through the same load() as the data it came from."""
    records = feed(30)
    records["flags"] |= Flag.REPLAY
    path = tmp_path / "feed-20240809.qsf"
    with RecordingWriter(path, source="replay") as w:
        w.write(records)
    data = load(path)
    assert data.format == "recording" and data.counts == {"QUOTE": 20, "TRADE": 10}
    assert data.records.tobytes() == records.tobytes()
    assert (data.ts_first, data.ts_last) == (T0, T0 + 29_000)
    folder = load(tmp_path, on_error="skip")
    assert folder.records.tobytes() == records.tobytes() and folder.extra["writers"] == ["replay"]
    path.rename(tmp_path / "feed.qsf")  # not a daily name: load it by its path
    assert load(tmp_path / "feed.qsf").records.tobytes() == records.tobytes()
    with pytest.raises(DataFormatError, match=r"no daily recordings named feed-YYYYMMDD\.qsf"):
        load(tmp_path)


def test_loader_output_records_and_replays_unchanged(tmp_path):
    csv = tmp_path / "eurusd.csv"
    csv.write_text("timestamp,bid,ask,bid_size\n2024-08-09T00:00:00Z,1.1,1.2,5\n2024-08-09T00:00:01Z,1.1,1.3,\n")
    loaded = load(csv)
    with RecordingWriter(tmp_path / "feed-20240809.qsf") as w:
        w.write(loaded.records)
    replayed = load(tmp_path / "feed-20240809.qsf")
    assert replayed.records.tobytes() == loaded.records.tobytes() and replayed.counts == loaded.counts
