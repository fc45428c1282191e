"""The rings, from plain Python (numpy only; support services use these without numba).

Two kinds of ring share one segment layout (``quayside.core.feed.segment``):

* **Feed ring** — one producer, any number of readers that attach and detach at will. The
  producer never waits. To write positions ``[p, p+n)`` it first stores ``producer_intent =
  p+n``, then writes the slots, then stores ``producer_position = p+n``. A reader copies the
  records it wants, *then* loads ``producer_intent``: any position below ``intent - capacity``
  may have been overwritten while it copied, so it drops those and counts them as lost. Every
  position is either delivered once or counted lost once, so the loss count is exact. A reader
  more than a lap behind resynchronises to live data (the producer's position).
* **Command ring** — one producer, one consumer, nothing lost: the producer refuses a batch
  that does not fit (``RingResult.BACK_PRESSURED``) and counts it in the header; the consumer
  publishes ``consumer_position`` after it has finished with the slots.

Memory ordering: the jitted kernels (``quayside.core.feed.nb``) use acquire/release atomics and
fences. This module's numpy code relies on x86-64's total store order: each numpy call is
opaque to the interpreter's compiler, loads are not reordered with loads, and stores are not
reordered with other stores or with earlier loads, which is exactly the order the protocol
needs. Every record written through these classes gets ``seq`` = its ring position.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import NamedTuple

import numpy as np

from quayside.core.feed.segment import (
    W_BACKPRESSURE,
    W_CACHED_CONSUMER,
    W_CONSUMER_HEARTBEAT,
    W_CONSUMER_PID,
    W_CONSUMER_POSITION,
    W_PRODUCER_CLOSED,
    W_PRODUCER_HEARTBEAT,
    W_PRODUCER_INTENT,
    W_PRODUCER_POSITION,
    W_RECORDS_OFFERED,
    RingType,
    Segment,
    attach_segment,
    create_segment,
)
from quayside.core.wire import RECORD_SIZE, record_dtype

__all__ = ["RingResult", "FeedWriter", "FeedReader", "CommandWriter", "CommandReader"]


class _RingResult(NamedTuple):
    BACK_PRESSURED: int = -2  # command ring full: nothing was written, try again later
    CLOSED: int = -3  # the producer closed the stream
    TOO_LARGE: int = -4  # a batch larger than the ring: it can never fit, do not retry


RingResult = _RingResult()

_SEQ_WORD = 1  # the header's ``seq`` is the second int64 word of every record


def _as_records(records: np.ndarray) -> np.ndarray:
    if records.dtype.itemsize != RECORD_SIZE:
        raise ValueError(f"records must be {RECORD_SIZE} bytes each, got a {records.dtype.itemsize}-byte dtype")
    return np.ascontiguousarray(records).reshape(-1).view(record_dtype)


def _words_of(records: np.ndarray) -> np.ndarray:
    return records.view(np.int64).reshape(-1, RECORD_SIZE // 8)


def _copy_in(seg: Segment, pos: int, records: np.ndarray) -> None:
    """Write ``records`` into the slots of positions ``[pos, pos+n)`` and stamp their seq."""
    n, cap = len(records), seg.capacity
    start = pos & (cap - 1)
    first = min(n, cap - start)
    src = _words_of(records)
    seg.slot_words[start : start + first] = src[:first]
    seg.slot_words[: n - first] = src[first:]
    seq = np.arange(pos, pos + n, dtype=np.int64)
    seg.slot_words[start : start + first, _SEQ_WORD] = seq[:first]
    seg.slot_words[: n - first, _SEQ_WORD] = seq[first:]


def _copy_out(seg: Segment, pos: int, out: np.ndarray) -> None:
    n, cap = len(out), seg.capacity
    start = pos & (cap - 1)
    first = min(n, cap - start)
    dst = _words_of(out)
    dst[:first] = seg.slot_words[start : start + first]
    dst[first:] = seg.slot_words[: n - first]


class FeedWriter:
    """The single producer of a feed ring. Creates the segment; never waits for readers."""

    def __init__(self, path: str | os.PathLike, capacity: int = 1 << 16, *, replace: bool = False):
        if replace:
            _unlink_quietly(path)
        self.segment = create_segment(path, RingType.FEED, capacity)
        self._words = self.segment.words
        self._position = 0

    @property
    def position(self) -> int:
        """Records published so far (the next record's sequence number)."""
        return self._position

    def publish(self, records: np.ndarray) -> int:
        """Publish a batch of 64-byte records; returns the position of the first one."""
        records = _as_records(records)
        first = self._position
        cap = self.segment.capacity
        for lo in range(0, len(records), cap):  # a batch larger than the ring goes a lap at a time
            chunk = records[lo : lo + cap]
            pos, end = self._position, self._position + len(chunk)
            self._words[W_PRODUCER_INTENT] = end
            _copy_in(self.segment, pos, chunk)
            self._words[W_PRODUCER_HEARTBEAT] = time.time_ns()
            self._words[W_PRODUCER_POSITION] = end
            self._position = end
        return first

    def heartbeat(self) -> None:
        """Tell readers the producer is alive while it has nothing to publish."""
        self._words[W_PRODUCER_HEARTBEAT] = time.time_ns()

    def close(self, *, unlink: bool = True) -> None:
        """Mark the stream closed (readers see ``closed``), unmap, and remove the file."""
        if self.segment.words is None:
            return
        self._words[W_PRODUCER_CLOSED] = 1
        if unlink:
            self.segment.unlink()
        self._words = None
        self.segment.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FeedReader:
    """One reader of a feed ring, mapped read-only: it can never disturb the producer.

    ``start="live"`` begins at the producer's current position; ``"oldest"`` at the oldest
    record still in the ring. ``lost`` counts every record skipped because the producer lapped
    this reader; ``laps`` counts the occasions.
    """

    def __init__(self, path: str | os.PathLike, *, start: str = "live", batch: int = 4096):
        if start not in ("live", "oldest"):
            raise ValueError(f"start must be 'live' or 'oldest', got {start!r}")
        self.segment = attach_segment(path, RingType.FEED, writable=False)
        self._words = self.segment.words
        tail = int(self._words[W_PRODUCER_POSITION])
        self.position = tail if start == "live" else max(0, tail - self.segment.capacity)
        self.lost = 0
        self.laps = 0
        self.delivered = 0
        self._buffer = np.empty(batch, dtype=record_dtype)

    @property
    def producer_position(self) -> int:
        return int(self._words[W_PRODUCER_POSITION])

    @property
    def closed(self) -> bool:
        """The producer closed the stream and this reader has read everything before that."""
        return bool(self._words[W_PRODUCER_CLOSED]) and self.position >= self.producer_position

    def producer_heartbeat_age_ns(self) -> int:
        return time.time_ns() - int(self._words[W_PRODUCER_HEARTBEAT])

    def read(self, out: np.ndarray | None = None) -> np.ndarray:
        """Copy the next available records into ``out`` (default: an internal buffer, reused
        by the next call) and return the filled part, possibly empty. Never blocks."""
        out = self._buffer if out is None else out
        words, cap = self._words, self.segment.capacity
        tail = int(words[W_PRODUCER_POSITION])
        available = tail - self.position
        if available <= 0:
            return out[:0]
        if available > cap:  # lapped while away: resynchronise to live data
            self._skip_to(tail)
            return out[:0]
        n = min(available, len(out))
        _copy_out(self.segment, self.position, out[:n])
        first_valid = int(words[W_PRODUCER_INTENT]) - cap  # loaded after the copy
        skip = first_valid - self.position
        if skip <= 0:
            self.position += n
            self.delivered += n
            return out[:n]
        if skip >= n:  # everything copied may have been overwritten
            self._skip_to(int(words[W_PRODUCER_POSITION]))
            return out[:0]
        self.lost += skip
        self.laps += 1
        self.position += n
        self.delivered += n - skip
        return out[skip:n]

    def _skip_to(self, tail: int) -> None:
        self.lost += tail - self.position
        self.laps += 1
        self.position = tail

    def close(self) -> None:
        self._words = None
        self.segment.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CommandWriter:
    """The producer of a command ring (engine inbound, engine outbound, control).

    The ring is created by whichever side starts first and attached by the other; a restarted
    producer or consumer continues from the positions in the segment, so nothing is lost.

    ``shared=True`` makes this one of several producers of the same ring (the control ring:
    dashboard, risk monitor, operator CLI): each offer then holds an exclusive ``flock`` on the
    segment file, so producers take turns and the consumer still sees a single producer. The
    kernel drops the lock if a producer dies holding it. Not for the hot path: a lock costs
    microseconds, which is nothing for a control command.
    """

    def __init__(self, path: str | os.PathLike, capacity: int = 1 << 12, *, shared: bool = False):
        self.segment = create_segment(path, RingType.COMMAND, capacity, exist_ok=True)
        self._words = self.segment.words
        self._lock_fd = os.open(self.segment.path, os.O_RDONLY) if shared else None
        if not shared:
            self._words[W_PRODUCER_CLOSED] = 0  # a restarted producer reopens the stream its predecessor closed

    @property
    def position(self) -> int:
        return int(self._words[W_PRODUCER_POSITION])

    @property
    def backpressure(self) -> int:
        """How many offers found the ring full."""
        return int(self._words[W_BACKPRESSURE])

    def offer(self, records: np.ndarray) -> int:
        """Publish the whole batch, or nothing: its first position, or ``BACK_PRESSURED``."""
        if self._lock_fd is None:
            return self._offer(records)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            return self._offer(records)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _offer(self, records: np.ndarray) -> int:
        records = _as_records(records)
        words, cap, n = self._words, self.segment.capacity, len(records)
        if n > cap:
            raise ValueError(f"a batch of {n} records cannot fit a ring of {cap}")
        pos = int(words[W_PRODUCER_POSITION])
        words[W_RECORDS_OFFERED] += n
        if pos + n - int(words[W_CACHED_CONSUMER]) > cap:
            words[W_CACHED_CONSUMER] = words[W_CONSUMER_POSITION]
            if pos + n - int(words[W_CACHED_CONSUMER]) > cap:
                words[W_BACKPRESSURE] += 1
                return RingResult.BACK_PRESSURED
        _copy_in(self.segment, pos, records)
        words[W_PRODUCER_HEARTBEAT] = time.time_ns()
        words[W_PRODUCER_POSITION] = pos + n
        return pos

    def close(self) -> None:
        if self._words is not None:
            if self._lock_fd is None:
                self._words[W_PRODUCER_CLOSED] = 1  # a shared producer never closes the stream
            else:
                os.close(self._lock_fd)
            self._words = None
            self.segment.close()


class CommandReader:
    """The consumer of a command ring. ``poll`` copies; ``peek``/``release`` is zero-copy."""

    def __init__(self, path: str | os.PathLike, capacity: int = 1 << 12, *, batch: int = 4096):
        self.segment = create_segment(path, RingType.COMMAND, capacity, exist_ok=True)
        self._words = self.segment.words
        self._words[W_CONSUMER_PID] = os.getpid()
        self._words[W_CONSUMER_HEARTBEAT] = time.time_ns()
        self._buffer = np.empty(batch, dtype=record_dtype)

    @property
    def position(self) -> int:
        return int(self._words[W_CONSUMER_POSITION])

    def available(self) -> int:
        return int(self._words[W_PRODUCER_POSITION]) - int(self._words[W_CONSUMER_POSITION])

    def poll(self, out: np.ndarray | None = None) -> np.ndarray:
        """Copy out and consume up to ``len(out)`` records; returns the filled part."""
        out = self._buffer if out is None else out
        words = self._words
        pos = int(words[W_CONSUMER_POSITION])
        n = min(int(words[W_PRODUCER_POSITION]) - pos, len(out))
        if n <= 0:
            return out[:0]
        _copy_out(self.segment, pos, out[:n])
        words[W_CONSUMER_HEARTBEAT] = time.time_ns()
        words[W_CONSUMER_POSITION] = pos + n  # after the copy: the slots may now be reused
        return out[:n]

    def peek(self, limit: int | None = None) -> np.ndarray:
        """The next available records as a view into the ring (contiguous up to the wrap),
        without consuming them. Call :meth:`release` when done; until then the producer
        cannot overwrite them."""
        words, cap = self._words, self.segment.capacity
        pos = int(words[W_CONSUMER_POSITION])
        n = int(words[W_PRODUCER_POSITION]) - pos
        start = pos & (cap - 1)
        n = min(n, cap - start, limit if limit is not None else n)
        return self.segment.slots[start : start + max(n, 0)]

    def release(self, n: int) -> None:
        """Consume ``n`` records returned by :meth:`peek`."""
        words = self._words
        pos = int(words[W_CONSUMER_POSITION])
        if n < 0 or pos + n > int(words[W_PRODUCER_POSITION]):
            raise ValueError(f"cannot release {n} records: only {self.available()} are available")
        words[W_CONSUMER_HEARTBEAT] = time.time_ns()
        words[W_CONSUMER_POSITION] = pos + n

    def close(self) -> None:
        if self._words is not None:
            self._words[W_CONSUMER_PID] = 0
            self._words = None
            self.segment.close()


def _unlink_quietly(path) -> None:
    from quayside.core.feed.segment import resolve

    with contextlib.suppress(FileNotFoundError):
        os.unlink(resolve(path))
