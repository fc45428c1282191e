"""A small harness around the real engine kernels, for the pre-trade risk tests.

:class:`Bench` builds engine state with :func:`prepare_engine` (replay clock, so the kernels use
the event time the test passes), private in-memory rings for the outbound commands and the feed,
and helpers that hand-build inbound records (quotes, trades, fills, order status, control
commands) and run them through ``process_record_nb``. ``drain_out`` / ``drain_feed`` return
what the engine wrote since the last call, read straight from the ring slots.
"""

from __future__ import annotations

import numpy as np

from quayside.core import wire
from quayside.core.engine.config import StrategyConfig
from quayside.core.engine.setup import prepare_engine
from quayside.core.engine.state import IntentAction, Rings, inbound_views
from quayside.core.feed.segment import W_CONSUMER_POSITION, W_PRODUCER_POSITION, RingType, private_segment
from quayside.core.instruments import Instrument, InstrumentRegistry, default_registry
from quayside.core.risk.config import RiskConfig
from quayside.core.wire import OrderType, RecordKind, TimeInForce

T0 = 1_723_161_600 * 10**9  # 2024-08-09T00:00:00Z, ns
MS = 1_000_000

EURUSD, USDJPY, AAPL, ESZ6, TOYOTA = 1, 2, 3, 4, 5


def registry() -> InstrumentRegistry:
    """The built-in instruments (EURUSD, USDJPY, AAPL, ESZ6 with multiplier 50) plus a stock
    quoted in JPY, converted to the USD account through USDJPY (inverted)."""
    extra = Instrument(id=TOYOTA, symbol="7203", sec_type="STK", exchange="TSEJ", currency="JPY", tick_size=1.0)
    return InstrumentRegistry([*default_registry(), extra], source="<risk tests>")


def record(dtype: np.dtype, kind: int, iid: int, ts: int, flags: int = 0, strategy_id: int = 0, **fields) -> np.ndarray:
    """One inbound record of ``dtype`` (an array of length 1)."""
    rec = np.zeros(1, dtype=dtype)
    rec["kind"], rec["version"], rec["flags"] = kind, wire.VERSIONS[kind], flags
    rec["strategy_id"], rec["instrument_id"], rec["ts_event"] = strategy_id, iid, ts
    for name, value in fields.items():
        rec[name] = value
    return rec


class Bench:
    """Engine state + rings for one test; every method runs the real kernels."""

    def __init__(
        self,
        risk: RiskConfig | None = None,
        *,
        fx_fallback: dict[str, float] | None = None,
        out_capacity: int = 256,
        feed_capacity: int = 4096,
    ):
        reg = registry()
        risk = risk or RiskConfig(allow=["EURUSD", "USDJPY", "AAPL", "ESZ6", "7203"])
        prepared = prepare_engine(reg, StrategyConfig(instruments=["AAPL"]), risk, fx_fallback=fx_fallback, replay=True)
        self.k = prepared.kernels.engine
        self.a = prepared.arrays
        self.a.static["traded"] = 0  # the strategy is never called: tests send the orders
        self.out = private_segment(RingType.COMMAND, out_capacity)
        self.feed = private_segment(RingType.FEED, feed_capacity)
        self.r = Rings(self.out.words, self.out.slot_words, self.feed.words, self.feed.slot_words)
        self.out_seen = 0
        self.feed_seen = 0

    # ----------------------------------------------------------------- inbound records

    def process(self, rec: np.ndarray, now: int) -> None:
        words = rec.view(np.int64).reshape(-1, 8)
        self.k.process_record_nb(self.a, self.r, inbound_views(words), 0, now)

    def quote(self, iid: int, bid: float, ask: float, now: int, *, flags: int = 0) -> None:
        rec = record(wire.quote_dtype, RecordKind.QUOTE, iid, now, flags, ts_recv=now)
        rec["bid_price"], rec["ask_price"], rec["bid_size"], rec["ask_size"] = bid, ask, 1.0, 1.0
        self.process(rec, now)

    def trade(self, iid: int, price: float, now: int) -> None:
        self.process(record(wire.trade_dtype, RecordKind.TRADE, iid, now, ts_recv=now, price=price, size=1.0), now)

    def fill(self, oid: int, iid: int, qty: float, price: float, now: int, fill_id: int = 1) -> None:
        rec = record(wire.fill_dtype, RecordKind.FILL, iid, now, ts_recv=now, order_id=oid, fill_id=fill_id)
        rec["price"], rec["quantity"], rec["commission"] = price, qty, np.nan
        self.process(rec, now)

    def status(self, oid: int, iid: int, status: int, now: int) -> None:
        rec = record(wire.order_status_dtype, RecordKind.ORDER_STATUS, iid, now, ts_recv=now, order_id=oid)
        rec["status"], rec["avg_fill_price"] = status, np.nan
        self.process(rec, now)

    def control(
        self,
        command: int,
        now: int,
        *,
        iid: int = 0,
        limit_id: int = 0,
        value: float = 0.0,
        command_id: int = 1,
        strategy_id: int = 0,
    ) -> None:
        rec = record(wire.control_dtype, RecordKind.CONTROL, iid, now, strategy_id=strategy_id)
        rec["command_id"], rec["command"], rec["limit_id"], rec["value"] = command_id, command, limit_id, value
        self.process(rec, now)

    # ----------------------------------------------------------------- orders out

    def order(
        self,
        iid: int,
        side: int,
        price: float,
        qty: float,
        now: int,
        *,
        order_type: int = OrderType.LIMIT,
        tif: int = TimeInForce.DAY,
    ) -> int:
        """``send_order_nb``: the order id, or minus the DenyReason."""
        return int(self.k.send_order_nb(self.a, self.r, iid, side, order_type, tif, price, qty, now, now, now))

    def cancel(self, oid: int, now: int) -> bool:
        return bool(self.k.send_cancel_nb(self.a, self.r, oid, 0, now, now))

    def intents(self, rows: list[tuple], now: int) -> None:
        """Run strategy intents through ``process_intents_nb``: each row is
        ``(IntentAction.NEW, iid, side, order_type, tif, price, qty)`` or
        ``(IntentAction.CANCEL, order_id)``."""
        it = self.a.intents
        for k, row in enumerate(rows):
            if row[0] == IntentAction.CANCEL:
                it[k] = (IntentAction.CANCEL, 0, 0, 0, 0, np.nan, 0.0, row[1])
            else:
                it[k] = (*row, 0)
        self.k.process_intents_nb(self.a, self.r, len(rows), now, now)

    # ----------------------------------------------------------------- what came out

    def drain_out(self, *, release: bool = True) -> np.ndarray:
        """Records written to the outbound ring since the last call (``record_dtype``);
        ``release`` consumes them, as the gateway would."""
        end = int(self.out.words[W_PRODUCER_POSITION])
        got = self._slots(self.out, self.out_seen, end)
        self.out_seen = end
        if release:
            self.out.words[W_CONSUMER_POSITION] = end
        return got

    def drain_feed(self) -> np.ndarray:
        end = int(self.feed.words[W_PRODUCER_POSITION])
        assert end - self.feed_seen <= self.feed.capacity, "feed lapped the test reader"
        got = self._slots(self.feed, self.feed_seen, end)
        self.feed_seen = end
        return got

    @staticmethod
    def _slots(seg, start: int, end: int) -> np.ndarray:
        idx = np.arange(start, end) & seg.mask
        return seg.slots[idx].copy()

    def denials(self) -> np.ndarray:
        feed = self.drain_feed()
        return feed[feed["kind"] == RecordKind.DENIAL].view(wire.denial_dtype)


def of_kind(records: np.ndarray, kind: int) -> np.ndarray:
    """The records of ``kind``, viewed with that kind's dtype."""
    return records[records["kind"] == kind].view(wire.dtype_for(kind))


def aapl(b: Bench, now: int = T0) -> None:
    """AAPL quoted 99.5 / 100.5: mid exactly 100."""
    b.quote(AAPL, 99.5, 100.5, now)


def loose(*, defaults: dict | None = None, instruments: dict | None = None, **top) -> RiskConfig:
    """A risk configuration where nothing binds except what the test sets: every instrument
    allowed, no duplicate guard, generous limits."""
    from quayside.core.risk.config import InstrumentLimits

    base = dict(
        max_order_qty=1e6,
        max_order_notional=1e12,
        price_collar_pct=50.0,
        max_long_position=1e9,
        max_short_position=1e9,
        stale_quote_ms=60_000.0,
    )
    kw = dict(
        allow=["EURUSD", "USDJPY", "AAPL", "ESZ6", "7203"],
        max_messages_per_window=512,
        message_window_ms=1.0,
        duplicate_window_ms=0.0,
        fill_latch_count=512,
        fill_latch_window_ms=1.0,
    )
    kw |= top
    return RiskConfig(
        defaults=InstrumentLimits(**(base | (defaults or {}))),
        instruments={s: InstrumentLimits(**v) for s, v in (instruments or {}).items()},
        **kw,
    )


def assert_sent(b: Bench, result: int) -> np.ndarray:
    """``result`` is an order id, the order is the one new record on the outbound ring and it
    was echoed on the feed; returns the order record."""
    assert result > 0, f"denied with {wire.enum_name(wire.DenyReason, -result)}"
    out = b.drain_out()
    orders = of_kind(out, RecordKind.ORDER)
    assert len(out) == 1 and len(orders) == 1 and orders["order_id"][0] == result
    feed = b.drain_feed()
    assert len(of_kind(feed, RecordKind.DENIAL)) == 0
    assert of_kind(feed, RecordKind.ORDER)["order_id"].tolist() == [result]
    return orders[0]


def assert_denied(b: Bench, result: int, reason: int, limit: float) -> np.ndarray:
    """``result`` is ``-reason``, nothing reached the outbound ring, and exactly one denial
    with that reason and the breached ``limit`` was published on the feed."""
    name = wire.enum_name(wire.DenyReason, reason)
    assert result == -reason, f"expected {name}, got {result}"
    assert len(b.drain_out()) == 0
    denials = b.denials()
    assert len(denials) == 1, denials
    d = denials[0]
    assert d["reason"] == reason
    assert d["limit"] == limit, f"{name}: denial carries limit {d['limit']}, expected {limit}"
    return d
