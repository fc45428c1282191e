"""The simulated gateway's market: wire records replayed on a clock, and the top of book they make.

A :class:`MarketReplay` reads ``QUOTE`` and ``TRADE`` records (other kinds are skipped) from a
source — an array loaded from a recording or a data file, or the endless seeded synthetic
market — and hands each one to a listener after updating its :class:`Book`. The gateway's
clock is the data's clock (``ts_event``): in real time (``speed`` 1), accelerated (``speed``
> 1), as fast as possible (``speed`` infinite: batches of records with a yield to the event
loop between them), or paused and moved by hand with :meth:`MarketReplay.step`.

``now_ns`` is the simulated time: every record at or before it has been handed out, none after.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from quayside.core.wire import RecordKind, quote_dtype, record_dtype

__all__ = ["Book", "ArraySource", "SyntheticSource", "MarketReplay"]

#: Records handed out per batch before yielding to the event loop.
BATCH = 2048


@dataclass
class Book:
    """Top of book and trade summary of one instrument (NaN until known)."""

    bid: float = math.nan
    ask: float = math.nan
    bid_size: float = 0.0
    ask_size: float = 0.0
    last: float = math.nan
    last_size: float = 0.0
    volume: float = 0.0
    ts_quote: int = 0
    ts_trade: int = 0

    @property
    def two_sided(self) -> bool:
        return not (math.isnan(self.bid) or math.isnan(self.ask))

    def mark(self) -> float:
        """Mid if two-sided, else last trade, else NaN."""
        if self.two_sided:
            return 0.5 * (self.bid + self.ask)
        return self.last


class ArraySource:
    """Records from an array sorted by ``ts_event``; with ``loop``, replayed again and again,
    each lap shifted by the data's span plus one second."""

    def __init__(self, records: np.ndarray, loop: bool = False):
        if records.dtype.itemsize != record_dtype.itemsize:
            raise ValueError("records must be 64-byte wire records")
        self.records = np.ascontiguousarray(records).view(record_dtype)
        self.loop = loop and len(self.records) > 0
        self._pos = 0
        self._offset = 0
        ts = self.records["ts_event"]
        self._ts = ts
        self.span = int(ts[-1] - ts[0]) + 1_000_000_000 if len(ts) else 0
        self.laps = 0

    @property
    def ts_first(self) -> int | None:
        return int(self._ts[0]) if len(self._ts) else None

    @property
    def ts_next(self) -> int | None:
        if self._pos >= len(self._ts):
            if not self.loop:
                return None
            return int(self._ts[0]) + self._offset + self.span
        return int(self._ts[self._pos]) + self._offset

    def read_until(self, ts_end: int, limit: int) -> np.ndarray:
        """Up to ``limit`` records with ``ts_event <= ts_end`` (shifted when looping)."""
        if self._pos >= len(self._ts) and self.loop:
            self._pos, self._offset, self.laps = 0, self._offset + self.span, self.laps + 1
        stop = int(np.searchsorted(self._ts, ts_end - self._offset, side="right"))
        stop = min(stop, self._pos + limit)
        if stop <= self._pos:
            return self.records[:0]
        out = self.records[self._pos : stop]
        self._pos = stop
        if self._offset:
            out = out.copy()
            out["ts_event"] += self._offset
            out.view(quote_dtype)["ts_recv"] += self._offset
        return out


class SyntheticSource:
    """The built-in synthetic market, endless (or ``duration_s`` long)."""

    def __init__(self, seed: int, symbols: list[str] | None, start_ns: int, duration_s: float | None = None):
        from quayside.core.market.synthetic import SyntheticMarket

        self.market = SyntheticMarket(seed, symbols, start_ns)
        self.end_ns = None if duration_s is None else start_ns + round(duration_s * 1e9)
        self.instrument_ids = [c.instrument_id for c in self.market.configs]

    @property
    def ts_first(self) -> int:
        return self.market.start_ns

    @property
    def ts_next(self) -> int | None:
        ts = self.market.ts_next
        return None if self.end_ns is not None and ts >= self.end_ns else ts

    def read_until(self, ts_end: int, limit: int) -> np.ndarray:
        end = ts_end + 1 if self.end_ns is None else min(ts_end + 1, self.end_ns)
        return self.market.next_chunk(limit, end)


QuoteHandler = Callable[[int, int, Book, float, float, float, float], None]


class MarketReplay:
    """Replays a source on the simulated clock and keeps a :class:`Book` per instrument.

    ``on_quote(iid, ts, book, prev_bid, prev_ask, prev_bid_size, prev_ask_size)`` and
    ``on_trade(iid, ts, book, price, size)`` are called for every record of an instrument in
    ``instrument_ids``, after the book has been updated.
    """

    def __init__(self, source, instrument_ids, speed: float = 1.0, paused: bool = False):
        self.source = source
        self.books: dict[int, Book] = {int(i): Book() for i in instrument_ids}
        self._ids = np.array(sorted(self.books), dtype=np.uint32)
        self.on_quote: QuoteHandler | None = None
        self.on_trade: Callable[[int, int, Book, float, float], None] | None = None
        self.speed = float(speed)
        self.paused = paused
        first = source.ts_first
        self.now_ns = int(first) - 1 if first is not None else time.time_ns()
        self.records_seen = 0
        self._anchor_sim = self.now_ns
        self._anchor_wall = time.monotonic()
        self._wake = asyncio.Event()
        self._closed = False
        self.lock = asyncio.Lock()

    # ------------------------------------------------------------------ control

    @property
    def ended(self) -> bool:
        return self.source.ts_next is None

    def set_speed(self, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0 (inf for as fast as possible), got {speed}")
        self._reanchor()
        self.speed = float(speed)
        self._wake.set()

    def pause(self) -> None:
        self.paused = True
        self._wake.set()

    def resume(self) -> None:
        self.paused = False
        self._reanchor()
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def _reanchor(self) -> None:
        self._anchor_sim, self._anchor_wall = self.now_ns, time.monotonic()

    def _target(self) -> int:
        if math.isinf(self.speed):
            return 2**62  # everything there is, a batch at a time; the clock follows the records
        return max(self.now_ns, self._anchor_sim + int((time.monotonic() - self._anchor_wall) * self.speed * 1e9))

    # ------------------------------------------------------------------ processing

    def process_until(self, ts_end: int, limit: int = BATCH, clock_to_end: bool = True) -> int:
        """Hand out up to ``limit`` records with ``ts_event <= ts_end``; when that was all of
        them and ``clock_to_end``, move ``now_ns`` on to ``ts_end``. Returns the count read."""
        chunk = self.source.read_until(ts_end, limit)
        n = len(chunk)
        if n:
            self._dispatch(chunk)
            self.records_seen += n
        if n < limit and clock_to_end:
            self.now_ns = max(self.now_ns, ts_end)
        return n

    def _dispatch(self, chunk: np.ndarray) -> None:
        kind = chunk["kind"]
        iid = chunk["instrument_id"]
        keep = ((kind == RecordKind.QUOTE) | (kind == RecordKind.TRADE)) & np.isin(iid, self._ids)
        if not keep.all():
            chunk = chunk[keep]
            kind, iid = kind[keep], iid[keep]
        q = chunk.view(quote_dtype)
        cols = zip(
            kind.tolist(),
            iid.tolist(),
            chunk["ts_event"].tolist(),
            q["bid_price"].tolist(),
            q["ask_price"].tolist(),
            q["bid_size"].tolist(),
            q["ask_size"].tolist(),
            strict=True,
        )
        books, on_quote, on_trade = self.books, self.on_quote, self.on_trade
        for k, i, ts, a, b, c, d in cols:
            book = books[i]
            if k == RecordKind.QUOTE:
                pb, pa, pbs, pas = book.bid, book.ask, book.bid_size, book.ask_size
                book.bid, book.ask, book.bid_size, book.ask_size, book.ts_quote = a, b, c, d, ts
                self.now_ns = ts
                if on_quote is not None:
                    on_quote(i, ts, book, pb, pa, pbs, pas)
            else:  # a trade: price, size
                book.last, book.last_size, book.ts_trade = a, b, ts
                book.volume += b
                self.now_ns = ts
                if on_trade is not None:
                    on_trade(i, ts, book, a, b)

    def prime(self, max_s: float) -> None:
        """Read ahead until every instrument with data has a two-sided book, or ``max_s`` of
        data time has passed: so the first order finds a market."""
        if self.source.ts_first is None:
            return
        end = self.source.ts_first + round(max_s * 1e9)
        while not all(b.two_sided for b in self.books.values()):
            nxt = self.source.ts_next
            if nxt is None or nxt > end:
                break
            self.process_until(end, limit=64, clock_to_end=False)
        self._reanchor()

    async def step(self, seconds: float) -> int:
        """Move the clock ``seconds`` ahead at once (yielding between batches)."""
        target = self.now_ns + round(seconds * 1e9)
        total = 0
        async with self.lock:
            while True:
                n = self.process_until(target)
                total += n
                if n < BATCH:
                    break
                await asyncio.sleep(0)
        self._reanchor()
        return total

    async def run(self) -> None:
        """Replay until :meth:`close`: the clock follows the wall clock times ``speed``."""
        self._reanchor()
        while not self._closed:
            if self.paused:
                self._wake.clear()
                await self._wake.wait()
                continue
            async with self.lock:
                n = self.process_until(self._target(), clock_to_end=not math.isinf(self.speed))
            if n >= BATCH:
                await asyncio.sleep(0)
                continue
            nxt = self.source.ts_next
            if nxt is None or math.isinf(self.speed):
                delay = 0.25 if nxt is None else 0.0
            else:
                delay = (nxt - self._anchor_sim) / (self.speed * 1e9) - (time.monotonic() - self._anchor_wall)
            self._wake.clear()
            if delay <= 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(delay, 0.25))
