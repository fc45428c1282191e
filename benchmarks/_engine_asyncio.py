"""The usual Python way, as a baseline: the same crossover (two EMAs of the mid, a signal with
hysteresis, a target position, one order at a time) and the same pre-trade checks (order
quantity, notional, long/short position counting working orders, message rate) written as an
asyncio pipeline of four tasks joined by ``asyncio.Queue``s: a producer of quote dicts, the
strategy, risk, and an order sink.

Two measurements, in a process pinned to CPU_A:

* stream: the derived quotes pushed through as fast as the pipeline takes them (queues of 1024);
  the sink fills every order at its limit price at once, so positions move as in a backtest;
* tick to order: one quote at a time, alternating between two levels so that every quote makes
  an order (fast_span=1, slow_span=2, threshold 0, as the live engine benchmark); from the quote
  being put on the first queue to the order reaching the sink, which then releases it unfilled
  (an IOC that missed), like the broker's answer in the live benchmark.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from benchmarks._common import CPU_A, Child, Workspace
from quayside.core import wire

__all__ = ["asyncio_baseline"]


@dataclass
class Order:
    symbol: str
    side: int  # +1 buy, -1 sell
    quantity: float
    price: float
    ts_recv: int  # the triggering quote's
    t_enqueued: int = 0  # perf_counter_ns when that quote was put on the first queue


@dataclass
class Book:
    bid: float = math.nan
    ask: float = math.nan
    position: float = 0.0
    working: float = 0.0


@dataclass
class Crossover:
    fast_span: int
    slow_span: int
    threshold_bps: float
    order_qty: float
    state: dict = field(default_factory=dict)

    def on_quote(self, symbol: str, book: Book, ts_recv: int) -> Order | None:
        mid = 0.5 * (book.bid + book.ask)
        if not mid > 0.0:
            return None
        s = self.state.setdefault(symbol, {"fast": mid, "slow": mid, "seen": 0, "signal": 0})
        if s["seen"]:
            s["fast"] += 2.0 / (self.fast_span + 1) * (mid - s["fast"])
            s["slow"] += 2.0 / (self.slow_span + 1) * (mid - s["slow"])
        s["seen"] += 1
        if s["seen"] < self.slow_span:
            return None
        gap = (s["fast"] - s["slow"]) / s["slow"]
        if gap > self.threshold_bps * 1e-4:
            s["signal"] = 1
        elif gap < -self.threshold_bps * 1e-4:
            s["signal"] = -1
        if s["signal"] == 0 or book.working > 0.0:
            return None
        delta = s["signal"] * self.order_qty - book.position
        if abs(delta) < 0.5:
            return None
        side = 1 if delta > 0 else -1
        return Order(symbol, side, abs(delta), book.ask if side > 0 else book.bid, ts_recv)


@dataclass
class Risk:
    max_order_qty: float
    max_order_notional: float
    max_long: float
    max_short: float
    max_messages: int
    window_ns: int
    sent: deque = field(default_factory=deque)

    def check(self, order: Order, book: Book, now: int) -> str | None:
        if order.quantity > self.max_order_qty:
            return "MAX_ORDER_QTY"
        if order.quantity * order.price > self.max_order_notional:
            return "MAX_ORDER_NOTIONAL"
        if order.side > 0 and book.position + book.working + order.quantity > self.max_long + 1e-9:
            return "MAX_LONG_POSITION"
        if order.side < 0 and book.position - book.working - order.quantity < -self.max_short - 1e-9:
            return "MAX_SHORT_POSITION"
        while self.sent and now - self.sent[0] >= self.window_ns:
            self.sent.popleft()
        if len(self.sent) >= self.max_messages:
            return "MESSAGE_RATE"
        self.sent.append(now)
        return None


async def _pipeline(quotes: list[dict], strategy: Crossover, risk: Risk, *, one_at_a_time: bool, fill: bool) -> dict:
    q_quotes: asyncio.Queue = asyncio.Queue(1024)
    q_intents: asyncio.Queue = asyncio.Queue(1024)
    q_orders: asyncio.Queue = asyncio.Queue(1024)
    done: asyncio.Queue = asyncio.Queue()
    books: dict[str, Book] = {}
    counts = {"orders": 0, "denials": 0, "fills": 0}
    latencies: list[int] = []
    clock = time.perf_counter_ns

    async def producer():
        for q in quotes:
            q["t_enqueued"] = clock()
            await q_quotes.put(q)
            if one_at_a_time:
                await done.get()
        await q_quotes.put(None)

    async def strategy_task():
        while (q := await q_quotes.get()) is not None:
            book = books.setdefault(q["symbol"], Book())
            book.bid, book.ask = q["bid"], q["ask"]
            order = strategy.on_quote(q["symbol"], book, q["ts_recv"])
            if order is None:
                if one_at_a_time:
                    done.put_nowait(None)
                continue
            order.t_enqueued = q["t_enqueued"]
            book.working += order.quantity
            await q_intents.put(order)
        await q_intents.put(None)

    async def risk_task():
        while (order := await q_intents.get()) is not None:
            book = books[order.symbol]
            if risk.check(order, book, order.ts_recv) is not None:
                counts["denials"] += 1
                book.working -= order.quantity
                if one_at_a_time:
                    done.put_nowait(None)
                continue
            await q_orders.put(order)
        await q_orders.put(None)

    async def sink():
        while (order := await q_orders.get()) is not None:
            latencies.append(clock() - order.t_enqueued)
            counts["orders"] += 1
            book = books[order.symbol]
            book.working -= order.quantity
            if fill:
                book.position += order.side * order.quantity
                counts["fills"] += 1
            if one_at_a_time:
                done.put_nowait(order)

    t0 = time.perf_counter()
    await asyncio.gather(producer(), strategy_task(), risk_task(), sink())
    return {"seconds": time.perf_counter() - t0, "latencies": np.array(latencies, dtype=np.int64), **counts}


def _quote_dicts(records: np.ndarray, symbol: str) -> list[dict]:
    q = records.view(wire.quote_dtype)
    return [
        {"symbol": symbol, "bid": float(b), "ask": float(a), "ts_recv": int(t)}
        for b, a, t in zip(q["bid_price"], q["ask_price"], q["ts_recv"], strict=True)
    ]


def _child(conn, pinned, records, symbol, stream_params, risk_limits, round_trips):
    quotes = _quote_dicts(records, symbol)
    stream = asyncio.run(
        _pipeline(quotes, Crossover(**stream_params), Risk(**risk_limits), one_at_a_time=False, fill=True)
    )
    # tick to order: two levels 1 pip apart, as in the live engine benchmark
    levels = [(1.10005, 1.10015), (1.09995, 1.10005)]
    prime = [{"symbol": symbol, "bid": levels[1][0], "ask": levels[1][1], "ts_recv": 0}]
    alternating = prime + [
        {"symbol": symbol, "bid": levels[i % 2][0], "ask": levels[i % 2][1], "ts_recv": i + 1}
        for i in range(round_trips)
    ]
    rtt_strategy = Crossover(fast_span=1, slow_span=2, threshold_bps=0.0, order_qty=1.0)
    rtt_risk = Risk(10.0, 100.0, 10.0, 10.0, 512, 1_000)
    rtt = asyncio.run(_pipeline(alternating, rtt_strategy, rtt_risk, one_at_a_time=True, fill=False))
    conn.send({"pinned": pinned, "stream": stream, "round_trip": rtt, "quotes": len(quotes)})


def asyncio_baseline(
    ws: Workspace, records: np.ndarray, symbol: str, stream_params: dict, risk_limits: dict, round_trips: int
) -> dict:
    child = Child(ws, "asyncio-pipeline", CPU_A, _child, records, symbol, stream_params, risk_limits, round_trips)
    try:
        return child.recv(timeout=120 + len(records) * 1e-4 + round_trips * 1e-3)
    finally:
        ws.reap()
