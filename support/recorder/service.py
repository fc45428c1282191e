"""The recorder: every feed record to append-only daily files, and structured log events.

Records go to ``<folder>/<prefix>-YYYYMMDD.qsf`` (UTC day of the recorder's clock), in feed
order, in the recording format that ``quayside replay --data`` reads. Each batch is handed to
the OS as it is written, so a crash of the recorder loses nothing it wrote (``fsync``: on
close — the default — never, or after every batch). The feed is read by a reader that the
engine never waits for: when the ring laps it, the loss is counted (metric, log line) and a
gap marker goes into the file where the records would have been (see
:mod:`quayside.support.common.rebuild`, which also describes the attach markers written on
every attach and at the head of each day's file).

On a restart the recorder finds, in its newest file, the last ``seq`` it recorded of the ring
it is reading and continues right after it: across a restart every record is in the files
exactly once, or — if the ring overwrote it meanwhile — counted in a gap marker.

LOG and DENIAL records also become JSON events, one per line (:mod:`.events`), written to
``<folder>/<events_prefix>-YYYYMMDD.jsonl`` and/or stdout, at most ``max_events_per_s`` a
second (the rest are counted and summarised, so a denial storm cannot slow the recording).

HTTP: ``GET /files`` lists the recordings with their sizes; ``/metrics`` and ``/health`` as
every service.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field

from quayside.core.instruments import InstrumentRegistry
from quayside.core.replay.recording import (
    DataFormatError,
    RotatingRecordingWriter,
    recording_files,
    recording_info,
    recording_path,
)
from quayside.core.wire import RECORD_SIZE, RecordKind
from quayside.support.common.feed import FeedSettings
from quayside.support.common.logs import logger
from quayside.support.common.rebuild import attach_marker, gap_marker, resume_feed, scan_recordings
from quayside.support.common.service import Service
from quayside.support.common.settings import ServiceSettings
from quayside.support.recorder.events import event_lines, events_of, iso_ns

__all__ = ["RecorderOptions", "RecorderSettings", "RecorderService"]


class RecorderOptions(BaseModel):
    """``[recorder]`` settings (environment: ``QUAYSIDE_RECORDER__<FIELD>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: str = Field(default="recordings", description="where the daily files go")
    prefix: str = Field(default="feed", description="recordings are <prefix>-YYYYMMDD.qsf")
    fsync: Literal["never", "close", "flush"] = Field(
        default="close", description="wait for the disk: when a file is closed, never, or after every batch"
    )
    events: Literal["file", "stdout", "both", "none"] = Field(
        default="both", description="where LOG and DENIAL events go as JSON lines"
    )
    events_prefix: str = Field(default="events", description="event files are <events_prefix>-YYYYMMDD.jsonl")
    max_events_per_s: int = Field(default=5_000, ge=0, description="JSON events per second; the rest are counted")


class RecorderFeedSettings(FeedSettings):
    batch: int = Field(default=65_536, ge=1, description="records per read: large batches, one write each")


class RecorderSettings(ServiceSettings):
    feed: RecorderFeedSettings = RecorderFeedSettings()
    recorder: RecorderOptions = RecorderOptions()


class RecorderService(Service):
    """Writes every feed record to daily recordings; LOG/DENIAL records to JSON events."""

    name = "recorder"
    default_port = 9103
    settings_cls = RecorderSettings

    def __init__(
        self,
        settings: RecorderSettings,
        registry: InstrumentRegistry | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
        stdout=None,
    ):
        super().__init__(settings, registry)
        opts = self.options = settings.recorder
        self.folder = Path(opts.folder)
        self.clock = clock
        self._now = clock()
        self.writer = RotatingRecordingWriter(
            self.folder,
            "recorder",
            prefix=opts.prefix,
            clock=lambda: self._now,
            fsync=opts.fsync,
            on_partial_tail="truncate",  # a recorder killed mid-write left half a record: cut it off
        )
        self._stdout = stdout if stdout is not None else sys.stdout
        self._events_file = None
        self._events_path: Path | None = None
        self._symbols = {inst.id: inst.symbol for inst in self.registry}
        self._epoch = 0
        self._pending_gaps: list[tuple[int, int]] = []  # records that failed to be written
        self._window = [0, 0, 0]  # [monotonic second, events emitted in it, events left out]
        self.counts = dict.fromkeys(
            ["records", "bytes", "attach", "gap", "lost", "events", "suppressed", "write_errors", "files"], 0
        )
        self.metrics.register(_RecorderCollector(self))

    # ------------------------------------------------------------------ the frame's hooks

    def rebuild(self) -> int:
        """Find where this recorder stopped: the last ``seq`` of the current ring in its newest
        file; the feed continues right after it (nothing is handed to :meth:`handle`)."""
        self.rebuilt = found = scan_recordings(self.folder, newest_only=True, prefix=self.options.prefix)
        skipped = resume_feed(self.feed, found)
        logger.info(
            "recorder: {} holds seq {} of this ring (epoch {}); recording from seq {} ({} already recorded)",
            found.files[-1].name if found.files else "no recording",
            found.last_seq_of(self.feed.epoch),
            self.feed.epoch,
            self.feed.position,
            skipped,
        )
        return 0

    def attached(self) -> None:
        self._epoch = self.feed.epoch or 0  # 0: not a ring (UDP), no epoch to join on
        self._now = self.clock()
        self._write(attach_marker(self._epoch, self.feed.position or 0, self._now))
        self.counts["attach"] += 1

    def handle(self, batch: np.ndarray) -> None:
        self._now = now = self.clock()
        head = []
        if self.writer.path != recording_path(self.folder, now, self.options.prefix):
            head.append(attach_marker(self._epoch, int(batch["seq"][0]), now))  # a new day's file
            self.counts["attach"] += 1
        head += [gap_marker(first, count, now) for first, count in self._take_gaps()]
        self._write(np.concatenate([*head, batch]) if head else batch, feed_records=len(batch))

    def close(self) -> None:
        with self.lock:
            gaps = [gap_marker(first, count, self.clock()) for first, count in self._take_gaps()]
            if gaps:
                self._write(np.concatenate(gaps))
            self.writer.close()
            if self._events_file is not None:
                self._events_file.close()
                self._events_file = None

    def health(self) -> dict:
        return {
            "file": str(self.writer.path) if self.writer.path else None,
            "epoch": self._epoch,
            "position": self.feed.position if self.feed else None,
            **self.counts,
        }

    def routes(self, app: FastAPI) -> None:
        @app.get("/files")
        def files() -> dict:
            return {
                "folder": str(self.folder),
                "current": self.writer.path.name if self.writer.path else None,
                "recordings": self.recordings(),
                "events": [
                    {"name": p.name, "bytes": p.stat().st_size}
                    for p in sorted(self.folder.glob(f"{self.options.events_prefix}-*.jsonl"))
                ],
            }

    # ------------------------------------------------------------------ the work

    def recordings(self) -> list[dict]:
        """The daily recordings, oldest first, with sizes."""
        out = []
        for path in recording_files(self.folder, self.options.prefix):
            item = {"name": path.name, "bytes": path.stat().st_size}
            try:
                info = recording_info(path)
                item |= {"records": info.records, "partial_tail_bytes": info.partial_tail_bytes}
                item |= {"source": info.source, "created": iso_ns(info.ts_created)}
            except DataFormatError as exc:
                item["error"] = str(exc)
            out.append(item)
        return out

    def _take_gaps(self) -> list[tuple[int, int]]:
        gaps, self._pending_gaps = self._pending_gaps, []
        while self.feed is not None and self.feed.gaps:
            gaps.append(self.feed.gaps.popleft())
        for first, count in gaps:
            self.counts["gap"] += 1
            self.counts["lost"] += count
            logger.warning("recorder: lost {} feed records from seq {} (gap marker written)", count, first)
        return gaps

    def _write(self, records: np.ndarray, feed_records: int = 0) -> None:
        before = self.writer.path
        try:
            self.writer.write(records)
        except OSError as exc:  # disk full, folder gone: the records are lost, say so in the file later
            self.counts["write_errors"] += 1
            if feed_records:
                self._pending_gaps.append((int(records["seq"][-feed_records]), feed_records))
            logger.error("recorder: cannot write {} records to {}: {}", len(records), self.writer.path, exc)
            return
        if self.writer.path != before:
            self.counts["files"] += 1
        self.counts["records"] += feed_records
        self.counts["bytes"] += len(records) * RECORD_SIZE
        self._emit(records)

    def _emit(self, records: np.ndarray) -> None:
        sink = self.options.events
        if sink == "none":
            return
        kinds = records["kind"]
        wanted = int(np.count_nonzero((kinds == RecordKind.LOG) | (kinds == RecordKind.DENIAL)))
        if not wanted:
            return
        second = int(time.monotonic())
        lines = ""
        if second != self._window[0]:  # a new second: say what the last one left out
            if self._window[2]:
                lines += event_lines([self._suppressed_event(self._window[2])])
            self._window = [second, 0, 0]
        events = events_of(records, self._symbols, limit=max(0, self.options.max_events_per_s - self._window[1]))
        self._window[1] += len(events)
        self._window[2] += wanted - len(events)
        self.counts["events"] += len(events)
        self.counts["suppressed"] += wanted - len(events)
        lines += event_lines(events)
        if not lines:
            return
        if sink in ("file", "both"):
            self._events_sink().write(lines)
            self._events_file.flush()
        if sink in ("stdout", "both"):
            self._stdout.write(lines)
            self._stdout.flush()

    def _suppressed_event(self, count: int) -> dict:
        return {
            "ts": iso_ns(self._now),
            "ts_event": self._now,
            "level": "WARNING",
            "kind": "log",
            "event": "EVENTS_SUPPRESSED",
            "message": f"{count} events left out by the rate limit of {self.options.max_events_per_s}/s",
            "source": "recorder",
            "count": count,
        }

    def _events_sink(self):
        path = recording_path(self.folder, self._now, self.options.events_prefix).with_suffix(".jsonl")
        if path != self._events_path:
            if self._events_file is not None:
                self._events_file.close()
            self._events_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held until rotation or close
            self._events_path = path
        return self._events_file


class _RecorderCollector:
    def __init__(self, service: RecorderService):
        self.service = service

    def collect(self):
        c = self.service.counts
        for name, doc, value in [
            ("quayside_recorder_records", "Feed records written to recordings", c["records"]),
            ("quayside_recorder_written_bytes", "Bytes written to recordings, markers included", c["bytes"]),
            ("quayside_recorder_lost_records", "Feed records the recorder lost (in gap markers)", c["lost"]),
            ("quayside_recorder_gaps", "Gap markers written", c["gap"]),
            (
                "quayside_recorder_attach_markers",
                "Attach markers written (ring attaches, new daily files)",
                c["attach"],
            ),
            ("quayside_recorder_events", "LOG and DENIAL records written as JSON events", c["events"]),
            ("quayside_recorder_events_suppressed", "JSON events left out by the rate limit", c["suppressed"]),
            ("quayside_recorder_write_errors", "Batches that could not be written", c["write_errors"]),
        ]:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family
        size = GaugeMetricFamily("quayside_recorder_file_bytes", "Size of the recording being written")
        path = self.service.writer.path
        size.add_metric([], path.stat().st_size if path is not None and path.exists() else 0)
        yield size
