"""State at start: the recorder's files first, then the live feed, each record applied once.

A support service that restarts must lose nothing and count nothing twice. The recorder's
daily files (``<folder>/feed-YYYYMMDD.qsf``) hold every feed record, and the live ring holds
the newest ones; the two overlap. They are joined by ring *epoch* and ``seq``:

* each engine start creates a new feed ring whose ``seq`` restarts at 0; its epoch is the
  ``ts_created`` of the ring's segment header;
* the recorder writes an **attach marker** — a ``LOG`` record with code
  :data:`LOG_RECORDER_ATTACHED`, ``i0`` = the ring's epoch, ``i1`` = the first ``seq`` it will
  record — whenever it attaches to a ring and at the head of every new daily file, so every
  record in a file belongs to the epoch of the marker before it;
* when the recorder loses records (it was lapped, or they left the ring while it was down) it
  writes a **gap marker** (code :data:`LOG_RECORDER_GAP`, ``i0`` = records lost, ``i1`` = the
  first lost ``seq``) where they would have been, so a replay knows.

:func:`rebuild_from_recordings` feeds the files' records (from ``since``, default today, UTC)
through ``service.handle`` in order — attach markers left out, foreign records counted and
skipped — and learns, per epoch, the last ``seq`` recorded. :func:`resume_feed` then moves the
service's live reader past that ``seq`` if it reads the same ring (same epoch). Records that
were neither recorded nor still in the ring are counted as lost by the feed.

Until ``core/wire.py`` has codes for the two markers, they use support-side codes from 100 up
(:data:`SUPPORT_LOG_CODE_MIN`): ``LogCode`` values below 100 belong to the engine and gateway.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quayside.core.replay.recording import read_recording, recording_files
from quayside.core.wire import VERSIONS, LogLevel, RecordKind, log_dtype, record_dtype, validate

__all__ = [
    "SUPPORT_LOG_CODE_MIN",
    "LOG_RECORDER_ATTACHED",
    "LOG_RECORDER_GAP",
    "SUPPORT_LOG_TEMPLATES",
    "Rebuilt",
    "attach_marker",
    "gap_marker",
    "scan_recordings",
    "rebuild_from_recordings",
    "resume_feed",
]

#: LOG codes from here up are written by support services, never by the engine or gateway.
SUPPORT_LOG_CODE_MIN = 100
#: i0 = ring epoch (ts_created), i1 = first seq.
LOG_RECORDER_ATTACHED = 100
#: i0 = records lost, i1 = first lost seq.
LOG_RECORDER_GAP = 101

SUPPORT_LOG_TEMPLATES: dict[int, tuple[str, str]] = {
    LOG_RECORDER_ATTACHED: ("RECORDER_ATTACHED", "recorder attached to feed ring {i0}, recording from seq {i1}"),
    LOG_RECORDER_GAP: ("RECORDER_GAP", "recorder lost {i0} feed records from seq {i1}"),
}

_CHUNK = 1 << 16
_DAY = re.compile(r"-(\d{8})\.qsf$")


def _marker(code: int, level: int, seq: int, ts: int, i0: int, i1: int) -> np.ndarray:
    rec = np.zeros(1, log_dtype)
    rec["kind"], rec["version"] = RecordKind.LOG, VERSIONS[RecordKind.LOG]
    rec["seq"], rec["ts_event"] = seq, ts
    rec["code"], rec["level"], rec["i0"], rec["i1"] = code, level, i0, i1
    return rec.view(record_dtype)


def attach_marker(epoch: int, first_seq: int, ts: int | None = None) -> np.ndarray:
    """The LOG record the recorder writes when it attaches to ring ``epoch`` at ``first_seq``."""
    ts = time.time_ns() if ts is None else ts
    return _marker(LOG_RECORDER_ATTACHED, LogLevel.INFO, first_seq, ts, epoch, first_seq)


def gap_marker(first_seq: int, count: int, ts: int | None = None) -> np.ndarray:
    """The LOG record the recorder writes where ``count`` records from ``first_seq`` are missing."""
    ts = time.time_ns() if ts is None else ts
    return _marker(LOG_RECORDER_GAP, LogLevel.WARNING, first_seq, ts, count, first_seq)


@dataclass
class Rebuilt:
    """What the recordings held: records applied, per-epoch last ``seq``, recorded loss."""

    records: int = 0  # applied through handle()
    foreign: int = 0  # unknown kind or version in the files: counted, skipped
    markers: int = 0  # attach markers seen (not applied)
    gap_records: int = 0  # records the recorder said it lost (gap markers)
    files: list[Path] = field(default_factory=list)
    last_seq: dict[int, int] = field(default_factory=dict)  # epoch -> last seq recorded
    epoch: int | None = None  # epoch of the last marker read (the ring recorded most recently)
    seconds: float = 0.0

    def last_seq_of(self, epoch: int | None) -> int | None:
        return None if epoch is None else self.last_seq.get(epoch)


def _day_of(path: Path) -> dt.date | None:
    m = _DAY.search(path.name)
    return dt.datetime.strptime(m[1], "%Y%m%d").date() if m else None


def _files(folder: Path, since: dt.date | None, newest_only: bool, prefix: str) -> list[Path]:
    try:
        files = recording_files(folder, prefix)
    except FileNotFoundError:
        return []
    if newest_only:
        return files[-1:]
    if since is not None:
        files = [f for f in files if (_day_of(f) or since) >= since]
    return files


def scan_recordings(
    folder: str | Path,
    *,
    since: dt.date | None = None,
    newest_only: bool = False,
    apply: Callable[[np.ndarray], None] | None = None,
    prefix: str = "feed",
) -> Rebuilt:
    """Walk the daily recordings of ``folder`` (from day ``since``, or only the newest file) in
    order; hand every record except attach markers and foreign ones to ``apply`` in batches;
    return what was found. A partial last record (a writer stopped mid-write, or is writing
    now) is left for later."""
    started = time.perf_counter()
    out = Rebuilt()
    epoch: int | None = None
    for path in _files(Path(folder), since, newest_only, prefix):
        out.files.append(path)
        records = read_recording(path, allow_truncated_tail=True, check_records=False)
        for lo in range(0, len(records), _CHUNK):
            chunk = records[lo : lo + _CHUNK]
            epoch = _scan_chunk(chunk, epoch, out, apply)
    out.epoch = epoch
    out.seconds = time.perf_counter() - started
    return out


def _scan_chunk(chunk: np.ndarray, epoch: int | None, out: Rebuilt, apply) -> int | None:
    ok = validate(chunk)
    logs = chunk.view(log_dtype)
    is_log = ok & (chunk["kind"] == RecordKind.LOG)
    codes = logs["code"]
    injected = is_log & (codes >= SUPPORT_LOG_CODE_MIN)
    attach = injected & (codes == LOG_RECORDER_ATTACHED)
    gaps = injected & (codes == LOG_RECORDER_GAP)
    real = ok & ~injected
    out.foreign += int(len(chunk) - np.count_nonzero(ok))
    out.markers += int(np.count_nonzero(attach))
    if gaps.any():
        out.gap_records += int(logs["i0"][gaps].sum())
    seqs = chunk["seq"]
    bounds = [0, *np.flatnonzero(attach).tolist(), len(chunk)]
    for a, b in itertools.pairwise(bounds):
        if a < b and attach[a]:  # a marker starts this stretch: its records belong to the marker's epoch
            epoch = int(logs["i0"][a])
        sel = real[a:b]
        if epoch is not None and sel.any():
            last = int(seqs[a:b][sel].max())
            out.last_seq[epoch] = max(last, out.last_seq.get(epoch, -1))
    if apply is not None:
        keep = ok & ~attach
        batch = chunk if keep.all() else chunk[keep]
        if len(batch):
            apply(np.ascontiguousarray(batch))
            out.records += len(batch)
    return epoch


def rebuild_from_recordings(service, folder: str | Path, *, since: dt.date | None = None) -> Rebuilt:
    """Feed the recordings of ``folder`` from day ``since`` (default: today, UTC) through
    ``service.handle`` (under ``service.lock``), in order; returns what was applied."""
    if since is None:
        since = dt.datetime.now(dt.UTC).date()

    def apply(batch: np.ndarray) -> None:
        with service.lock:
            service.handle(batch)

    return scan_recordings(folder, since=since, apply=apply)


def resume_feed(feed, rebuilt: Rebuilt) -> int:
    """Move ``feed`` (a :class:`~quayside.support.common.feed.FeedSource`) past the last ``seq``
    the recordings hold for the ring it reads; returns the ring records skipped (0 if the
    recordings have nothing of this ring)."""
    last = rebuilt.last_seq_of(feed.epoch)
    if last is None:
        return 0
    return feed.skip_through(last)
