"""Recorded feed files: append records to them, read them back, walk a folder of daily files.

A recording (``*.qsf``) is the 64-byte :data:`~quayside.core.wire.file_header_dtype` header
followed by 64-byte wire records, appended in feed order and never rewritten, so a recorded
session replays through the same code as a live one. A file is named for the UTC day its
records were written::

    <folder>/feed-YYYYMMDD.qsf      e.g. feed-20240808.qsf  (prefix "feed" by default)

:class:`RecordingWriter` appends to one file (and writes the header when the file is new);
:class:`RotatingRecordingWriter` starts the next day's file when the UTC date of its clock
changes. A writer that is killed mid-write leaves a partial record at the end of the file:
readers report it with its byte offset (and, if asked, read the whole records before it); a
writer refuses to append after it unless told to cut it off.

:func:`read_recording` returns the records as a read-only, memory-mapped ``record_dtype`` array
(zero-copy); :func:`iter_recordings` yields a folder's daily files in date order. Every problem
with a file raises :class:`DataFormatError` naming the file, the byte offset and the header
field or record field at fault. This module needs numpy only.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from quayside.core.wire import (
    FILE_HEADER_SIZE,
    FILE_MAGIC,
    FILE_VERSION,
    RECORD_SIZE,
    VERSIONS,
    file_header_dtype,
    record_dtype,
    validate,
)

__all__ = [
    "RECORDING_SUFFIX",
    "DataFormatError",
    "RecordingInfo",
    "RecordingWriter",
    "RotatingRecordingWriter",
    "recording_path",
    "recording_files",
    "recording_info",
    "read_recording",
    "iter_recordings",
]

RECORDING_SUFFIX = ".qsf"
_UNSET = object()


class DataFormatError(ValueError):
    """A recorded or historical data file does not follow its format.

    The message names the file and, where they apply, the 1-based ``line``, the byte ``offset``,
    the ``field`` and the offending ``value``; the same facts are attributes.
    """

    def __init__(self, path, problem: str, *, line=None, field=None, value=_UNSET, offset=None):
        self.path, self.problem, self.line, self.field, self.offset = str(path), problem, line, field, offset
        self.value = None if value is _UNSET else value
        where = [self.path]
        if line is not None:
            where.append(f"line {line}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        if field is not None:
            where.append(f"field {field!r}")
        text = f"{', '.join(where)}: {problem}"
        if value is not _UNSET:
            shown = repr(value)
            text += f" (got {shown[:77] + '...' if len(shown) > 80 else shown})"
        super().__init__(text)


@dataclass(frozen=True)
class RecordingInfo:
    """What a recording's header and size say about it."""

    path: Path
    source: str
    ts_created: int
    records: int  # whole records after the header
    partial_tail_bytes: int  # bytes of an incomplete last record (a writer stopped mid-write)

    @property
    def partial_tail_offset(self) -> int:
        """Byte offset where the incomplete record starts (the end of the whole records)."""
        return FILE_HEADER_SIZE + self.records * RECORD_SIZE


_FIELD_OFFSETS = {name: file_header_dtype.fields[name][1] for name in file_header_dtype.names}


def _check_header(path: Path, raw: bytes) -> np.void:
    if len(raw) < FILE_HEADER_SIZE:
        raise DataFormatError(
            path,
            f"the file is {len(raw)} bytes, shorter than the {FILE_HEADER_SIZE}-byte recording header",
            offset=0,
            field="header",
        )
    header = np.frombuffer(raw[:FILE_HEADER_SIZE], dtype=file_header_dtype)[0]
    expected = {
        "magic": FILE_MAGIC,
        "file_version": FILE_VERSION,
        "record_size": RECORD_SIZE,
        "header_size": FILE_HEADER_SIZE,
    }
    for name, want in expected.items():
        got = header[name].item() if name != "magic" else bytes(raw[:8])
        if got != want:
            problem = "not a Quayside recording" if name == "magic" else f"this build reads only {want}"
            offset = _FIELD_OFFSETS[name]
            raise DataFormatError(path, f"{problem} (expected {want!r})", offset=offset, field=name, value=got)
    return header


def recording_info(path: str | Path) -> RecordingInfo:
    """Check ``path``'s header and measure it, without reading the records."""
    path = Path(path)
    with open(path, "rb") as f:
        header = _check_header(path, f.read(FILE_HEADER_SIZE))
        size = os.fstat(f.fileno()).st_size
    body = size - FILE_HEADER_SIZE
    return RecordingInfo(
        path=path,
        source=header["source"].decode("ascii", "replace"),
        ts_created=int(header["ts_created"]),
        records=body // RECORD_SIZE,
        partial_tail_bytes=body % RECORD_SIZE,
    )


def read_recording(
    path: str | Path, *, allow_truncated_tail: bool = False, check_records: bool = True, mmap: bool = True
) -> np.ndarray:
    """The records of one recording, as a ``record_dtype`` array in file order.

    With ``mmap`` (the default) the array is a read-only view of the file mapped into memory;
    otherwise it is read into a private array. A partial record at the end raises
    :class:`DataFormatError` with its byte offset, unless ``allow_truncated_tail`` (then the
    whole records before it are returned). ``check_records`` refuses records whose kind or
    version this build does not know (``wire.validate``), naming the first one's offset.
    """
    info = recording_info(path)
    path = info.path
    if info.partial_tail_bytes and not allow_truncated_tail:
        raise DataFormatError(
            path,
            f"the file ends with a partial record of {info.partial_tail_bytes} bytes (its writer stopped "
            f"mid-record); pass allow_truncated_tail=True to read the {info.records} whole records before it",
            offset=info.partial_tail_offset,
            field="record",
        )
    if info.records == 0:
        return np.empty(0, dtype=record_dtype)
    if mmap:
        mapped = np.memmap(path, dtype=record_dtype, mode="r", offset=FILE_HEADER_SIZE, shape=(info.records,))
        records = mapped.view(np.ndarray)
    else:
        records = np.fromfile(path, dtype=record_dtype, count=info.records, offset=FILE_HEADER_SIZE)
    if check_records:
        ok = validate(records)
        if not ok.all():
            i = int(np.argmin(ok))
            kind, version = int(records["kind"][i]), int(records["version"][i])
            field = "version" if kind in VERSIONS else "kind"
            raise DataFormatError(
                path,
                f"record {i} has kind {kind} version {version}, which this build does not read",
                offset=FILE_HEADER_SIZE + i * RECORD_SIZE,
                field=field,
                value=kind if field == "kind" else version,
            )
    return records


_NAME = re.compile(r"^(?P<prefix>.+)-(?P<day>\d{8})\.qsf$")


def recording_path(folder: str | Path, day: dt.date | int, prefix: str = "feed") -> Path:
    """``<folder>/<prefix>-YYYYMMDD.qsf`` for a date, or for the UTC day of a ns timestamp."""
    if isinstance(day, int):
        day = dt.datetime.fromtimestamp(day // 1_000_000_000, tz=dt.UTC).date()
    return Path(folder) / f"{prefix}-{day:%Y%m%d}{RECORDING_SUFFIX}"


def recording_files(folder: str | Path, prefix: str = "feed") -> list[Path]:
    """The ``<prefix>-YYYYMMDD.qsf`` files in ``folder``, oldest day first (other names ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such recordings folder")
    found = []
    for child in folder.iterdir():
        m = _NAME.match(child.name)
        if m and m["prefix"] == prefix and child.is_file():
            found.append((m["day"], child))
    return [p for _, p in sorted(found)]


def iter_recordings(
    folder: str | Path, *, prefix: str = "feed", allow_truncated_tail: bool = False, check_records: bool = True
) -> Iterator[tuple[Path, np.ndarray]]:
    """``(path, records)`` for each daily file of ``folder``, in date order (see :func:`read_recording`)."""
    for path in recording_files(folder, prefix):
        yield path, read_recording(path, allow_truncated_tail=allow_truncated_tail, check_records=check_records)


class RecordingWriter:
    """Appends records to one recording, creating it (with its header) if it does not exist.

    ``flush``: ``"write"`` hands every :meth:`write` batch to the OS at once (a reader tailing
    the file sees whole batches; a crash of this process loses nothing written), ``"manual"``
    only on :meth:`flush` and :meth:`close`. ``fsync``: ``"never"``, ``"close"`` (the default),
    or ``"flush"`` (every flush also waits for the disk: durable, slow). An existing file must
    have a valid header; if it ends with a partial record, ``on_partial_tail="raise"`` refuses
    to append after it, ``"truncate"`` cuts it off first (the only change ever made to bytes
    already written). Only one writer may hold a file: a second one gets ``BlockingIOError``.
    """

    def __init__(
        self,
        path: str | Path,
        source: str = "recorder",
        *,
        flush: Literal["write", "manual"] = "write",
        fsync: Literal["never", "close", "flush"] = "close",
        on_partial_tail: Literal["raise", "truncate"] = "raise",
        clock: Callable[[], int] = time.time_ns,
    ):
        if flush not in ("write", "manual"):
            raise ValueError(f"flush must be 'write' or 'manual', not {flush!r}")
        if fsync not in ("never", "close", "flush"):
            raise ValueError(f"fsync must be 'never', 'close' or 'flush', not {fsync!r}")
        if on_partial_tail not in ("raise", "truncate"):
            raise ValueError(f"on_partial_tail must be 'raise' or 'truncate', not {on_partial_tail!r}")
        encoded = source.encode("ascii")
        if len(encoded) > file_header_dtype["source"].itemsize:
            raise ValueError(f"source {source!r} is longer than {file_header_dtype['source'].itemsize} bytes")
        self.path, self.source = Path(path), source
        self._flush_each, self._fsync = flush == "write", fsync
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open until close()
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                header = np.zeros(1, dtype=file_header_dtype)
                header[0] = (FILE_MAGIC, FILE_VERSION, RECORD_SIZE, FILE_HEADER_SIZE, clock(), encoded)
                self._file.write(header.tobytes())
                self._file.flush()
                if fsync != "never":
                    os.fsync(self._file.fileno())
                    _fsync_dir(self.path.parent)
                self.records = 0
            else:
                info = recording_info(self.path)
                if info.partial_tail_bytes:
                    if on_partial_tail == "raise":
                        raise DataFormatError(
                            self.path,
                            f"the file ends with a partial record of {info.partial_tail_bytes} bytes; appending "
                            "after it would misalign every later record (on_partial_tail='truncate' cuts it off)",
                            offset=info.partial_tail_offset,
                            field="record",
                        )
                    self._file.truncate(info.partial_tail_offset)
                self.records = info.records
        except BaseException:
            self._file.close()
            raise
        self.records_written = 0  # by this writer

    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, records: np.ndarray) -> int:
        """Append ``records`` (any 64-byte wire records, in feed order); returns how many."""
        if self._file.closed:
            raise ValueError(f"{self.path}: the writer is closed")
        records = np.ascontiguousarray(records)
        if records.dtype.itemsize != RECORD_SIZE or records.ndim != 1:
            raise ValueError(f"records must be a 1-d array of {RECORD_SIZE}-byte wire records, got {records.dtype}")
        ok = validate(records)
        if not ok.all():
            i = int(np.argmin(ok))
            raw = records.view(np.uint8).reshape(-1, RECORD_SIZE)[i]
            raise ValueError(f"record {i} has an unknown kind {raw[0]} or version {raw[1]}; nothing was written")
        self._file.write(records.view(np.uint8).data)
        n = len(records)
        self.records += n
        self.records_written += n
        if self._flush_each:
            self.flush()
        return n

    def flush(self) -> None:
        self._file.flush()
        if self._fsync == "flush":
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self._file.flush()
            if self._fsync != "never":
                os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RotatingRecordingWriter:
    """Appends to ``<folder>/<prefix>-YYYYMMDD.qsf``, moving to a new file when the UTC day of
    ``clock()`` changes. A batch goes whole into the file of the day it is written; the other
    options are those of :class:`RecordingWriter`."""

    def __init__(
        self,
        folder: str | Path,
        source: str = "recorder",
        *,
        prefix: str = "feed",
        clock: Callable[[], int] = time.time_ns,
        **options,
    ):
        self.folder, self.source, self.prefix, self._clock, self._options = Path(folder), source, prefix, clock, options
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer: RecordingWriter | None = None

    @property
    def path(self) -> Path | None:
        """The file being written, None before the first write."""
        return self._writer.path if self._writer else None

    def write(self, records: np.ndarray) -> int:
        now = self._clock()
        path = recording_path(self.folder, now, self.prefix)
        if self._writer is None or self._writer.path != path:
            self.close()
            self._writer = RecordingWriter(path, self.source, clock=lambda: now, **self._options)
        return self._writer.write(records)

    def flush(self) -> None:
        if self._writer:
            self._writer.flush()

    def close(self) -> None:
        if self._writer:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RotatingRecordingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
