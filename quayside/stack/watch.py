"""The supervisor's own reader of the engine's feed: readiness signals and the live summary line.

It maps the feed ring read-only like any support service (numpy, no numba) from the oldest
record, so nothing the engine published since it started is missed, and keeps only counters:
market events, orders, risk denials, fills, the engine's trading state, the broker connection,
tick-to-order latency (an order's ``ts_event`` minus the gateway's receipt of the quote that
triggered it) and the records this reader lost. Positions and P&L come from the P&L service's
own ledger code (:class:`~quayside.support.pnl.feed.LedgerFeed`), fed the same records, so the
line agrees with ``GET /pnl`` and needs no service to be running (``--core-only``).
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np

from quayside.core import wire
from quayside.core.feed.ring import FeedReader
from quayside.core.instruments import InstrumentRegistry
from quayside.core.wire import LogCode, RecordKind
from quayside.support.pnl.accounting import Ledger
from quayside.support.pnl.feed import LedgerFeed

__all__ = ["FeedWatch", "creator_pid"]

_MARKET = np.zeros(256, dtype=bool)
_MARKET[[RecordKind.QUOTE, RecordKind.TRADE, RecordKind.BOOK]] = True
_LATENCIES_KEPT = 2_000


def creator_pid(path: Path) -> int | None:
    """The pid that created the feed ring at ``path`` (None if there is no readable ring)."""
    from quayside.core.feed.segment import RingLayoutError, RingType, attach_segment

    try:
        seg = attach_segment(path, RingType.FEED, writable=False)
    except (FileNotFoundError, RingLayoutError, ValueError):
        return None
    try:
        return int(seg.header[0]["creator_pid"])
    finally:
        seg.close()


class FeedWatch:
    """Counters over everything the engine published on its feed ring."""

    def __init__(self, path: Path, registry: InstrumentRegistry, symbols: list[str]):
        self.reader = FeedReader(path, start="oldest", batch=65_536)
        self.registry = registry
        self.symbols = symbols
        self.ledger = Ledger(registry)
        self.ledger_feed = LedgerFeed(self.ledger)
        self.records = 0
        self.events = 0
        self.orders = 0
        self.denials = 0
        self.fills = 0
        self.engine_started = False
        self.broker_connected = False
        self.trading_state: int | None = None
        self._latencies: collections.deque[int] = collections.deque(maxlen=_LATENCIES_KEPT)
        self._decide: collections.deque[int] = collections.deque(maxlen=_LATENCIES_KEPT)

    def poll(self) -> int:
        """Read everything available; returns the records read."""
        total = 0
        while True:
            batch = self.reader.read()
            if not len(batch):
                return total
            total += len(batch)
            self._count(batch)
            self.ledger_feed.handle(batch)

    def _count(self, batch: np.ndarray) -> None:
        kinds = batch["kind"]
        self.records += len(batch)
        self.events += int(_MARKET[kinds].sum())
        orders = batch[kinds == RecordKind.ORDER].view(wire.order_dtype)
        self.orders += len(orders)
        if len(orders):
            triggered = orders[orders["ts_recv"] > 0]
            self._latencies.extend((triggered["ts_event"] - triggered["ts_recv"]).tolist())
            self._decide.extend(triggered["dt_decide_ns"].tolist())
        self.denials += int((kinds == RecordKind.DENIAL).sum())
        fills = batch[kinds == RecordKind.FILL].view(wire.fill_dtype)
        self.fills += int((fills["quantity"] != 0).sum())  # commission-only updates carry 0
        logs = batch[kinds == RecordKind.LOG].view(wire.log_dtype)
        if len(logs):
            codes = logs["code"]
            self.engine_started |= bool((codes == LogCode.ENGINE_STARTED).any())
            for code in codes[np.isin(codes, [LogCode.BROKER_CONNECTED, LogCode.BROKER_DISCONNECTED])]:
                self.broker_connected = code == LogCode.BROKER_CONNECTED
        beats = batch[kinds == RecordKind.HEARTBEAT].view(wire.heartbeat_dtype)
        if len(beats):
            self.trading_state = int(beats["trading_state"][-1])

    @property
    def lost(self) -> int:
        return self.reader.lost

    def tick_to_order_p50_us(self) -> float | None:
        """Gateway receipt of a quote to the order it triggered, written to the outbound ring."""
        return _median_us(self._latencies)

    def decide_p50_us(self) -> float | None:
        """The engine's share of it: saw the quote to decided (strategy and pre-trade risk)."""
        return _median_us(self._decide)

    def positions(self) -> dict[str, float]:
        return {s: self.ledger.net_quantity(self.registry.by_symbol(s).id) for s in self.symbols}

    def pnl(self) -> float | None:
        return self.ledger.totals().values["total"]

    def summary(self) -> dict:
        return {
            "events": self.events,
            "orders": self.orders,
            "denials": self.denials,
            "fills": self.fills,
            "positions": self.positions(),
            "pnl": self.pnl(),
            "currency": self.ledger.account_currency,
            "tick_to_order_p50_us": self.tick_to_order_p50_us(),
            "decide_p50_us": self.decide_p50_us(),
            "feed_lost": self.lost,
            "trading_state": None
            if self.trading_state is None
            else wire.enum_name(wire.TradingState, self.trading_state),
        }

    def line(self) -> str:
        """The live summary, one line."""
        s = self.summary()
        pos = " ".join(f"{sym} {_qty(q)}" for sym, q in s["positions"].items())
        pnl = "n/a" if s["pnl"] is None or not math.isfinite(s["pnl"]) else f"{s['pnl']:+,.2f} {s['currency']}"
        p50, decide = s["tick_to_order_p50_us"], s["decide_p50_us"]
        latency = "n/a" if p50 is None else f"{_us(p50)} (engine {_us(decide)})"
        state = f"  [{s['trading_state']}]" if s["trading_state"] not in (None, "ACTIVE") else ""
        return (
            f"events {s['events']:,}  orders {s['orders']:,}  fills {s['fills']:,}  denials {s['denials']:,}  "
            f"position {pos}  P&L {pnl}  tick-to-order p50 {latency}  feed loss {s['feed_lost']:,}{state}"
        )

    def close(self) -> None:
        self.reader.close()


def _median_us(values: collections.deque[int]) -> float | None:
    return float(np.median(np.fromiter(values, dtype=np.int64))) / 1e3 if values else None


def _us(us: float) -> str:
    return f"{us / 1e3:,.1f} ms" if us >= 1_000 else f"{us:,.1f} µs"


def _qty(q: float) -> str:
    return f"{q:+,.0f}" if q == int(q) else f"{q:+,.4g}"
