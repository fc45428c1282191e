"""The engine's feed as a support service reads it: from /dev/shm or over UDP, in batches.

Batches are ``record_dtype`` arrays. Records whose kind or version this build does not know
are dropped and counted (``foreign``), never fatal. Nothing here needs numba.
"""

from __future__ import annotations

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
    lost: int = 0  # the ring lapped this reader, or UDP gaps written off
    batches: int = 0
    last_record_ns: int = 0  # wall clock when a record last arrived


class FeedSource:
    """``read()`` returns the next batch (possibly empty) without blocking."""

    def __init__(self, settings: FeedSettings):
        self.settings = settings
        self.stats = FeedStats()
        self._reader = None
        self._receiver = None
        if settings.source == "shm":
            self._reader = FeedReader(settings.ring, start=settings.start, batch=settings.batch)
        else:
            from quayside.core.feed.receiver import UdpReceiver

            host, _, port = settings.udp_bind.rpartition(":")
            self._receiver = UdpReceiver((host or "127.0.0.1", int(port)), group=settings.udp_group)

    @property
    def producer_closed(self) -> bool:
        return self._reader is not None and self._reader.closed

    def read(self) -> np.ndarray:
        if self._reader is not None:
            batch = self._reader.read()
            self.stats.lost = self._reader.lost
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
