"""One rate limiter for every message the gateway sends to IB.

IB allows 50 messages per second from a client (and answers more with error 100, or drops the
connection); ib_insync throttles itself at 45 per second by queueing, and discards that queue if
the socket drops. The gateway therefore keeps every message it sends — orders, cancels, market
data requests, sync requests — below both, through this one token bucket: ``rate`` tokens per
second, at most ``burst`` saved up, so no one-second window ever sees more than
``rate + burst`` (40 + 5 by default). A pacing error from IB halves the rate for
``backoff_s``, after which it returns to normal.
"""

from __future__ import annotations

import asyncio
import random
import time

__all__ = ["RateLimiter", "Backoff"]


class RateLimiter:
    """A token bucket on the monotonic clock. ``sent`` counts messages let through,
    ``waits`` the times a caller had to wait, ``backoffs`` the pacing back-offs."""

    def __init__(self, rate: float, burst: int = 5, backoff_s: float = 5.0, clock=time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.base_rate = float(rate)
        self.burst = float(burst)
        self.backoff_s = backoff_s
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._slow_until = 0.0
        self.sent = self.waits = self.backoffs = 0

    @property
    def rate(self) -> float:
        return self.base_rate / 2 if self._clock() < self._slow_until else self.base_rate

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> bool:
        """Take a token if one is there (no waiting)."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.sent += 1
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token is there."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        waited = False
        while not self.try_acquire():
            waited = True
            await asyncio.sleep(max(self.wait_time(), 0.001))
        self.waits += waited

    def back_off(self) -> None:
        """IB said too fast (error 100 or 420): half speed for ``backoff_s``, and empty the bucket."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)
        self._slow_until = self._clock() + self.backoff_s
        self.backoffs += 1


class Backoff:
    """Waits between reconnection attempts: ``initial``, times ``factor`` per failure, at most
    ``maximum``, each spread by +-``jitter`` (a share of it) from a seeded generator, so that
    many gateways restarted together do not knock on IB at the same instant."""

    def __init__(self, initial: float, maximum: float, factor: float = 2.0, jitter: float = 0.2, seed=None):
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._random = random.Random(seed)
        self._next = initial

    def next(self) -> float:
        base = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return max(0.0, base * (1.0 + self.jitter * (2.0 * self._random.random() - 1.0)))

    def reset(self) -> None:
        self._next = self.initial
