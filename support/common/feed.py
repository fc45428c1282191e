"""The engine's feed as a support service reads it: from /dev/shm or over UDP, in batches.

Batches are ``record_dtype`` arrays. Records whose kind or version this build does not know
are dropped and counted (``foreign``), never fatal. Nothing here needs numba.

Joining recordings and the live feed (shm only): every feed ring has an *epoch*, the
``ts_created`` of its segment header (each engine start creates a new ring whose ``seq``
restarts at 0). After a service has rebuilt its state from the recorder's files up to ``seq``
``n`` of the ring it is reading now, :meth:`FeedSource.skip_through` moves the reader past
``n``: nothing is applied twice, and records that were neither recorded nor still in the ring
are counted as lost. :meth:`FeedSource.replaced` tells when the engine has started a new ring
under the same name, so that the service can attach to it.
"""

from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass

import numpy as np

from quayside.core.feed.ring import FeedReader
from quayside.core.wire import record_dtype, validate
from quayside.support.common.settings import FeedSettings

__all__ = ["FeedSource", "FeedStats", "open_feed"]


@dataclass
class FeedStats:
    records: int = 0  # accepted and handed to the service
    foreign: int = 0  # dropped: unknown kind or version
    lost: int = 0  # the ring lapped this reader, UDP gaps written off, or not recorded before a join
    batches: int = 0
    last_record_ns: int = 0  # wall clock when a record last arrived
    skipped: int = 0  # not read from the ring: already applied from the recordings


class FeedSource:
    """``read()`` returns the next batch (possibly empty) without blocking.

    ``gaps`` holds ``(first_lost_seq, count)`` for every loss seen by the shm reader, oldest
    first, until a consumer (the recorder) takes them; it keeps the newest 4096."""

    def __init__(self, settings: FeedSettings):
        self.settings = settings
        self.stats = FeedStats()
        self.gaps: collections.deque[tuple[int, int]] = collections.deque(maxlen=4096)
        self._reader = None
        self._receiver = None
        self._lost_extra = 0  # lost before a join (skip_through) and by readers of earlier rings
        self._inode: tuple[int, int] | None = None
        if settings.source == "shm":
            self._reader = FeedReader(settings.ring, start=settings.start, batch=settings.batch)
            st = os.stat(self._reader.segment.path)
            self._inode = (st.st_dev, st.st_ino)
        else:
            from quayside.core.feed.receiver import UdpReceiver

            host, _, port = settings.udp_bind.rpartition(":")
            self._receiver = UdpReceiver(
                (host or "127.0.0.1", int(port)), group=settings.udp_group, interface=settings.udp_interface
            )

    @property
    def producer_closed(self) -> bool:
        return self._reader is not None and self._reader.closed

    @property
    def epoch(self) -> int | None:
        """The ring's ``ts_created`` (ns): which engine run this feed belongs to; None for UDP."""
        if self._reader is None:
            return None
        return int(self._reader.segment.header["ts_created"][0])

    @property
    def position(self) -> int | None:
        """The ``seq`` of the next record this reader will read; None for UDP."""
        return None if self._reader is None else self._reader.position

    @property
    def producer_position(self) -> int | None:
        return None if self._reader is None else self._reader.producer_position

    def skip_through(self, seq: int) -> int:
        """Continue after ``seq`` of this ring (already applied from the recordings).

        Returns how many ring records that skips. If the ring no longer holds ``seq + 1`` (it
        was neither recorded nor kept), the missing records are counted as lost and reading
        continues at the oldest position still in the ring. No-op for UDP."""
        if self._reader is None:
            return 0
        reader = self._reader
        want = seq + 1
        tail = reader.producer_position
        oldest = max(0, tail - reader.segment.capacity)
        want = min(want, tail)  # recordings ahead of the ring cannot be of it; never skip past live data
        if want < oldest:
            missing = oldest - want
            self._lost_extra += missing
            self.gaps.append((want, missing))
            self.stats.lost = reader.lost + self._lost_extra
            want = oldest
        skipped = max(0, want - reader.position)
        self.stats.skipped += skipped
        reader.position = want
        return skipped

    def read(self) -> np.ndarray:
        if self._reader is not None:
            reader = self._reader
            before, lost_before = reader.position, reader.lost
            batch = reader.read()
            if reader.lost != lost_before:  # a lap: the lost records are the first ones after `before`
                self.gaps.append((before, reader.lost - lost_before))
            self.stats.lost = reader.lost + self._lost_extra
        else:
            batch = self._receiver.poll(0.0)
            self.stats.lost = self._receiver.stats.gaps
        if not len(batch):
            return np.zeros(0, record_dtype)
        ok = validate(batch)
        if not ok.all():
            self.stats.foreign += int((~ok).sum())
            batch = batch[ok]
        self.stats.records += len(batch)
        self.stats.batches += 1
        self.stats.last_record_ns = time.time_ns()
        return batch

    def replaced(self) -> bool:
        """Has the ring file been replaced by a new ring (a restarted engine)? False for UDP,
        and while no new ring exists yet."""
        if self._reader is None:
            return False
        try:
            st = os.stat(self._reader.segment.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) != self._inode

    def reattach(self) -> None:
        """Attach to the ring now at the configured name (see :meth:`replaced`), from where the
        settings say (``start``); counters carry on. Read the old ring dry first."""
        if self._reader is None:
            return
        new = FeedReader(self.settings.ring, start=self.settings.start, batch=self.settings.batch)
        st = os.stat(new.segment.path)
        old, self._reader, self._inode = self._reader, new, (st.st_dev, st.st_ino)
        self._lost_extra += old.lost
        old.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._receiver is not None:
            self._receiver.close()


def open_feed(settings: FeedSettings, timeout: float = 0.0) -> FeedSource:
    """Open the feed, waiting up to ``timeout`` seconds for the engine to create its ring."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return FeedSource(settings)
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
