"""From the feed thread to every open page: a hub of per-stream asyncio queues.

The feed thread must never wait for a browser, so :meth:`Hub.publish` only schedules a
``put_nowait`` on each stream's event loop. A stream whose page cannot keep up (its queue
holds ``max_pending`` batches) is marked lapped; it then tells the page to reload its state
(a ``resync`` event) instead of growing without bound.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["Hub", "Subscription"]


class Subscription:
    def __init__(self, loop: asyncio.AbstractEventLoop, max_pending: int):
        self.loop = loop
        self.queue: asyncio.Queue[list[dict]] = asyncio.Queue()
        self.max_pending = max_pending
        self.lapped = False

    def _put(self, rows: list[dict]) -> None:  # on the stream's event loop
        if self.queue.qsize() >= self.max_pending:
            self.lapped = True
            return
        self.queue.put_nowait(rows)


class Hub:
    def __init__(self, max_pending: int = 10_000):
        self.max_pending = max_pending
        self.subscribers: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.get_running_loop(), self.max_pending)
        with self._lock:
            self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self.subscribers.discard(sub)

    def publish(self, rows: list[dict]) -> None:
        """Hand ``rows`` to every stream (from any thread); never blocks."""
        with self._lock:
            subs = list(self.subscribers)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub._put, rows)
            except RuntimeError:  # its event loop has closed: the server is stopping
                self.unsubscribe(sub)
