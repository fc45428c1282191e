"""Shared-memory ring segments: files in ``/dev/shm`` mapped by every process that uses them.

A segment is a plain file (``segment_header_dtype``, then ``capacity`` slots of 64 bytes), not
a ``multiprocessing.shared_memory`` block: nothing registers it with Python's resource tracker,
so no reader can unlink it when it exits (the tracker does that on Python < 3.13), and a
container that bind-mounts ``/dev/shm`` sees the very same file.

Creation is atomic: the file is built and initialised under a temporary name, then linked into
place, so a process that attaches never sees a half-written header. Readers of a feed map it
read-only and cannot change anything the producer or other readers depend on.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quayside.core.wire import (
    RECORD_SIZE,
    SEGMENT_HEADER_SIZE,
    SEGMENT_LAYOUT_VERSION,
    SEGMENT_MAGIC,
    record_dtype,
    segment_header_dtype,
)

__all__ = [
    "RingType",
    "RingLayoutError",
    "Segment",
    "create_segment",
    "attach_segment",
    "private_segment",
    "default_shm_dir",
    "W_PRODUCER_POSITION",
    "W_PRODUCER_INTENT",
    "W_PRODUCER_HEARTBEAT",
    "W_BACKPRESSURE",
    "W_PRODUCER_CLOSED",
    "W_CACHED_CONSUMER",
    "W_RECORDS_OFFERED",
    "W_CONSUMER_POSITION",
    "W_CONSUMER_HEARTBEAT",
    "W_CONSUMER_PID",
]


class RingType:
    FEED = 1
    COMMAND = 2


def _word(name: str) -> int:
    return segment_header_dtype.fields[name][1] // 8


# Indices of the header's int64 words, for code that sees the header as an int64 array.
W_PRODUCER_POSITION = _word("producer_position")
W_PRODUCER_INTENT = _word("producer_intent")
W_PRODUCER_HEARTBEAT = _word("producer_heartbeat")
W_BACKPRESSURE = _word("backpressure")
W_PRODUCER_CLOSED = _word("producer_closed")
W_CACHED_CONSUMER = _word("cached_consumer_position")
W_RECORDS_OFFERED = _word("records_offered")
W_CONSUMER_POSITION = _word("consumer_position")
W_CONSUMER_HEARTBEAT = _word("consumer_heartbeat")
W_CONSUMER_PID = _word("consumer_pid")

MAX_CAPACITY = 1 << 30


class RingLayoutError(ValueError):
    """A segment file is not a ring this build understands (or not a ring at all)."""


def default_shm_dir() -> Path:
    """Where segments live: ``$QUAYSIDE_SHM_DIR``, else ``/dev/shm``."""
    return Path(os.environ.get("QUAYSIDE_SHM_DIR", "/dev/shm"))


def resolve(path: str | os.PathLike) -> Path:
    """A bare name (``"feed"``) lives in the shm directory; anything with a slash is a path."""
    p = Path(path)
    return p if (p.is_absolute() or os.sep in str(path)) else default_shm_dir() / p


@dataclass
class Segment:
    """A mapped segment: its header as a structured scalar view and an int64 word view,
    and its slots as an array of ``record_dtype`` and as an ``(capacity, 8)`` int64 array."""

    path: Path
    ring_type: int
    capacity: int
    writable: bool
    _mm: mmap.mmap
    header: np.ndarray  # shape (1,), segment_header_dtype
    words: np.ndarray  # shape (SEGMENT_HEADER_SIZE // 8,), int64
    slots: np.ndarray  # shape (capacity,), record_dtype
    slot_words: np.ndarray  # shape (capacity, 8), int64

    @property
    def mask(self) -> int:
        return self.capacity - 1

    def prefault(self) -> None:
        """Map every page now, so the hot loop never takes a page fault on this ring."""
        # MADV_POPULATE_WRITE / _READ (Linux 5.14); Python 3.11's mmap module lacks the names
        advice = getattr(mmap, "MADV_POPULATE_WRITE", 23) if self.writable else getattr(mmap, "MADV_POPULATE_READ", 22)
        with contextlib.suppress(OSError):
            self._mm.madvise(advice)
            return
        raw = np.frombuffer(self._mm, dtype=np.uint8)
        int(raw[:: mmap.PAGESIZE].sum())  # older kernels: read one byte of every page

    def close(self) -> None:
        """Unmap. Arrays handed out earlier must not be used afterwards."""
        self.header = self.words = self.slots = self.slot_words = None  # type: ignore[assignment]
        # a caller may still hold a view: then the mapping goes when the last view does
        with contextlib.suppress(BufferError):
            self._mm.close()

    def unlink(self) -> None:
        """Remove the file (the creator does this when the ring is retired)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _map(path: Path, fd: int, size: int, writable: bool) -> tuple[mmap.mmap, np.ndarray]:
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
    return mm, np.frombuffer(mm, dtype=np.uint8)


def _views(path, ring_type, capacity, writable, mm, raw) -> Segment:
    return Segment(
        path=path,
        ring_type=ring_type,
        capacity=capacity,
        writable=writable,
        _mm=mm,
        header=raw[:SEGMENT_HEADER_SIZE].view(segment_header_dtype),
        words=raw[:SEGMENT_HEADER_SIZE].view(np.int64),
        slots=raw[SEGMENT_HEADER_SIZE:].view(record_dtype),
        slot_words=raw[SEGMENT_HEADER_SIZE:].view(np.int64).reshape(capacity, RECORD_SIZE // 8),
    )


def create_segment(path: str | os.PathLike, ring_type: int, capacity: int, *, exist_ok: bool = False) -> Segment:
    """Create and map a new ring segment of ``capacity`` slots (a power of two).

    If the file exists: with ``exist_ok`` a compatible segment is attached read-write instead
    (a restarted peer of a command ring continues where it left off); otherwise, or if it is
    not compatible, :class:`FileExistsError` / :class:`RingLayoutError`.
    """
    path = resolve(path)
    if capacity < 2 or capacity & (capacity - 1) or capacity > MAX_CAPACITY:
        raise ValueError(f"ring capacity must be a power of two from 2 to {MAX_CAPACITY}, got {capacity}")
    if path.exists():
        if exist_ok:
            seg = attach_segment(path, ring_type, writable=True)
            if seg.capacity != capacity:
                seg.close()
                raise RingLayoutError(f"{path}: existing ring has capacity {seg.capacity}, wanted {capacity}")
            return seg
        raise FileExistsError(f"{path} exists (another producer? remove it if it is stale)")
    size = SEGMENT_HEADER_SIZE + capacity * RECORD_SIZE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o660)
    try:
        os.ftruncate(fd, size)
        mm, raw = _map(path, fd, size, True)
    finally:
        os.close(fd)
    hdr = raw[:SEGMENT_HEADER_SIZE].view(segment_header_dtype)
    hdr["layout_version"] = SEGMENT_LAYOUT_VERSION
    hdr["ring_type"] = ring_type
    hdr["capacity"] = capacity
    hdr["record_size"] = RECORD_SIZE
    hdr["header_size"] = SEGMENT_HEADER_SIZE
    hdr["ts_created"] = time.time_ns()
    hdr["creator_pid"] = os.getpid()
    hdr["magic"] = SEGMENT_MAGIC  # last: a header with the magic is complete
    try:
        os.link(tmp, path)  # atomic, and fails if someone else created it meanwhile
    except FileExistsError:
        mm.close()
        os.unlink(tmp)
        if exist_ok:
            return create_segment(path, ring_type, capacity, exist_ok=True)
        raise
    os.unlink(tmp)
    return _views(path, ring_type, capacity, True, mm, raw)


def private_segment(ring_type: int, capacity: int) -> Segment:
    """A ring in this process's anonymous memory (no file): replay and tests use the same
    kernels on it without touching /dev/shm."""
    if capacity < 2 or capacity & (capacity - 1) or capacity > MAX_CAPACITY:
        raise ValueError(f"ring capacity must be a power of two from 2 to {MAX_CAPACITY}, got {capacity}")
    size = SEGMENT_HEADER_SIZE + capacity * RECORD_SIZE
    mm = mmap.mmap(-1, size)
    raw = np.frombuffer(mm, dtype=np.uint8)
    hdr = raw[:SEGMENT_HEADER_SIZE].view(segment_header_dtype)
    hdr["layout_version"], hdr["ring_type"], hdr["capacity"] = SEGMENT_LAYOUT_VERSION, ring_type, capacity
    hdr["record_size"], hdr["header_size"], hdr["ts_created"] = RECORD_SIZE, SEGMENT_HEADER_SIZE, time.time_ns()
    hdr["creator_pid"], hdr["magic"] = os.getpid(), SEGMENT_MAGIC
    return _views(Path("<private>"), ring_type, capacity, True, mm, raw)


def attach_segment(path: str | os.PathLike, ring_type: int, *, writable: bool) -> Segment:
    """Map an existing segment, refusing one whose layout this build does not understand."""
    path = resolve(path)
    try:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(f"no ring at {path} (is its producer running?)") from None
    try:
        size = os.fstat(fd).st_size
        if size < SEGMENT_HEADER_SIZE:
            raise RingLayoutError(f"{path}: {size} bytes is too small for a ring segment")
        hdr = np.frombuffer(os.pread(fd, SEGMENT_HEADER_SIZE, 0), dtype=segment_header_dtype)[0]
        _check_layout(path, hdr, size, ring_type)
        capacity = int(hdr["capacity"])
        mm, raw = _map(path, fd, size, writable)
    finally:
        os.close(fd)
    return _views(path, ring_type, capacity, writable, mm, raw)


def _check_layout(path: Path, hdr, size: int, ring_type: int) -> None:
    def bad(what: str) -> RingLayoutError:
        return RingLayoutError(f"{path}: {what}; not a ring this build can use")

    if bytes(hdr["magic"]) != SEGMENT_MAGIC:
        raise bad(f"magic is {bytes(hdr['magic'])!r}, expected {SEGMENT_MAGIC!r}")
    if hdr["layout_version"] != SEGMENT_LAYOUT_VERSION:
        raise bad(f"layout version {hdr['layout_version']}, this build reads {SEGMENT_LAYOUT_VERSION}")
    if hdr["ring_type"] != ring_type:
        names = {RingType.FEED: "feed", RingType.COMMAND: "command"}
        got = names.get(int(hdr["ring_type"]), str(hdr["ring_type"]))
        raise bad(f"it is a {got} ring, expected a {names[ring_type]} ring")
    if hdr["record_size"] != RECORD_SIZE:
        raise bad(f"record size {hdr['record_size']}, expected {RECORD_SIZE}")
    if hdr["header_size"] != SEGMENT_HEADER_SIZE:
        raise bad(f"header size {hdr['header_size']}, expected {SEGMENT_HEADER_SIZE}")
    capacity = int(hdr["capacity"])
    if capacity < 2 or capacity & (capacity - 1) or capacity > MAX_CAPACITY:
        raise bad(f"capacity {capacity} is not a power of two from 2 to {MAX_CAPACITY}")
    if size != SEGMENT_HEADER_SIZE + capacity * RECORD_SIZE:
        raise bad(f"file is {size} bytes, a ring of {capacity} slots is {SEGMENT_HEADER_SIZE + capacity * RECORD_SIZE}")
