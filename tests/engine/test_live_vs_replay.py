"""The same recorded events through the live engine process and through replay give the same
orders.

(a) Live: ``quayside engine run`` on /dev/shm rings. The test feeds the events one by one into
the inbound ring and plays the venue: after each event it reads the engine's orders from the
outbound ring and answers them exactly as the replay venue does with zero latency, before the
next event goes in. (b) Replay: ``run_replay`` over the same array, venue latencies zero.

What could differ, and how each is held equal or kept out of play:

* the clock: live kernels read the wall clock, replay the events' ``ts_recv``. Every risk control
  that depends on time (message rate, duplicate guard, fill latch, stale quotes) is configured so
  it cannot bind in either run, and the crossover's state counts quotes, not time;
* the venue's view of the market: with zero latency an order reaches the replay venue at the
  engine time of its trigger (``max(ts_recv)`` so far), when the venue has seen every event with
  ``ts_event`` up to then (possibly a later quote than the trigger). The test venue below keeps
  that same book and the same marketability rule, commission and answer order (fill, then
  status), so a position, and so the next order, can only agree if the venues agree;
* order ids: both start at 1.

The comparison is not vacuous: it needs dozens of orders, both sides, and the fills to agree.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _engine_harness import LiveEngine, record, typed

from quayside.core import wire
from quayside.core.engine.config import StrategyConfig
from quayside.core.instruments import default_registry
from quayside.core.market.synthetic import generate
from quayside.core.replay.runner import ReplayConfig, run_replay
from quayside.core.replay.venue import VenueConfig
from quayside.core.risk.config import InstrumentLimits, RiskConfig
from quayside.core.wire import Flag, OrderStatus, OrderType, RecordKind, Side

SEED, DURATION_S = 11, 600.0  # about 4,000 EURUSD quotes and trades
STRATEGY = {
    "name": "crossover",
    "instruments": ["EURUSD"],
    "params": {"fast_span": 5, "slow_span": 30, "threshold_bps": 0.1, "order_qty": 1000.0},
}
RISK = {
    "max_messages_per_window": 512,  # 512 messages within 1 µs: never
    "message_window_ms": 0.001,
    "duplicate_window_ms": 0.0,  # the duplicate guard off
    "fill_latch_count": 512,
    "fill_latch_window_ms": 0.001,
    "defaults": {
        "max_order_qty": 10_000.0,
        "max_long_position": 10_000.0,
        "max_short_position": 10_000.0,
        "stale_quote_ms": 3_600_000.0,
    },
}
COMMISSION_BPS = 0.2
ORDER_FIELDS = ["instrument_id", "side", "order_type", "tif", "price", "quantity", "order_id"]


class ZeroLatencyVenue:
    """``core/replay/venue_nb.py`` with order and response latency zero, for orders that do not
    rest (IOC and market orders, which is all the crossover sends)."""

    def __init__(self, events: np.ndarray, multiplier: float = 1.0):
        self.events = events
        self.quotes = events.view(wire.quote_dtype)
        self.next = 0
        self.bid = self.ask = math.nan
        self.multiplier = multiplier
        self.fill_id = 1
        self.position = 0.0

    def see_market_until(self, t: int) -> None:
        """Every market record with ``ts_event <= t``, in order (the venue goes first on ties)."""
        while self.next < len(self.events) and self.events["ts_event"][self.next] <= t:
            if self.events["kind"][self.next] == RecordKind.QUOTE:
                q = self.quotes[self.next]
                self.bid, self.ask = float(q["bid_price"]), float(q["ask_price"])
            self.next += 1

    def answer(self, order: np.void, t: int) -> list[np.ndarray]:
        """The venue's answers to ``order`` arriving at ``t``, in the order the engine gets them."""
        assert order["kind"] == RecordKind.ORDER, "the crossover never cancels"
        assert order["tif"] == wire.TimeInForce.IOC
        self.see_market_until(t)
        buy = order["side"] == Side.BUY
        touch = self.ask if buy else self.bid
        if math.isnan(touch):
            return [self._status(order, OrderStatus.REJECTED, 0.0, math.nan, t)]
        limit = float(order["price"])
        if not (order["order_type"] == OrderType.MARKET or (limit >= touch if buy else limit <= touch)):
            return [self._status(order, OrderStatus.CANCELLED, 0.0, math.nan, t)]
        qty = float(order["quantity"])
        notional = qty * touch * self.multiplier
        commission = max(notional * COMMISSION_BPS * 1e-4, 0.0)
        signed = qty if buy else -qty
        self.position += signed
        fill = record(
            wire.fill_dtype,
            RecordKind.FILL,
            flags=Flag.REPLAY | Flag.COMMISSION_KNOWN,
            strategy_id=order["strategy_id"],
            instrument_id=order["instrument_id"],
            ts_event=t,
            ts_recv=t,
            order_id=order["order_id"],
            fill_id=self.fill_id,
            price=touch,
            quantity=signed,
            commission=commission,
        )
        self.fill_id += 1
        return [fill, self._status(order, OrderStatus.FILLED, qty, touch, t)]

    @staticmethod
    def _status(order, status, filled, avg, t) -> np.ndarray:
        return record(
            wire.order_status_dtype,
            RecordKind.ORDER_STATUS,
            flags=Flag.REPLAY,
            strategy_id=order["strategy_id"],
            instrument_id=order["instrument_id"],
            ts_event=t,
            ts_recv=t,
            order_id=order["order_id"],
            status=status,
            broker_order_id=order["order_id"],
            perm_id=order["order_id"],
            filled_qty=filled,
            avg_fill_price=avg,
        )


@pytest.fixture(scope="module")
def events() -> np.ndarray:
    ev = generate(seed=SEED, duration_s=DURATION_S, instruments=["EURUSD"])
    assert len(ev) > 3_000 and set(np.unique(ev["kind"])) == {RecordKind.QUOTE, RecordKind.TRADE}
    return ev


def live_orders(events: np.ndarray, shm_dir, tmp_path) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Orders and fills of the live engine process over ``events``, and its final position."""
    engine = LiveEngine({"strategy": STRATEGY, "risk": RISK}, shm_dir, tmp_path)
    venue = ZeroLatencyVenue(events)
    orders, fills = [], []
    try:
        engine.start()
        clock = np.iinfo(np.int64).min  # the replay engine's clock: the latest ts_recv seen
        recv = events.view(wire.quote_dtype)["ts_recv"]
        for i in range(len(events)):
            clock = max(clock, int(recv[i]))
            engine.send(events[i : i + 1])
            pending = engine.poll_outbound()
            while pending:  # answers could trigger more orders (the crossover's on_fill never does)
                order = pending.pop(0)
                orders.append(order)
                answers = venue.answer(order, clock)
                fills += [typed(a) for a in answers if a["kind"][0] == RecordKind.FILL]
                engine.send(*answers)
                pending += engine.poll_outbound()
        engine.feed.poll()
        position = engine.feed.of_kind(RecordKind.POSITION)
        denials = engine.feed.of_kind(RecordKind.DENIAL)
        assert engine.terminate() == 0
    finally:
        engine.close()
    assert len(denials) == 0, [wire.enum_name(wire.DenyReason, int(r)) for r in denials["reason"]]
    assert len(position) == len(fills)  # one position record per fill
    frame = pd.DataFrame({k: [o[k] for o in orders] for k in ORDER_FIELDS})
    fills_frame = pd.DataFrame({k: [f[k] for f in fills] for k in ("order_id", "price", "quantity")})
    return frame, fills_frame, float(position["quantity"][-1]) if len(position) else 0.0


def replay_orders(events: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    config = ReplayConfig(
        strategy=StrategyConfig(**STRATEGY),
        risk=RiskConfig(**{**RISK, "defaults": InstrumentLimits(**RISK["defaults"])}),
        venue=VenueConfig(order_latency_us=0.0, response_latency_us=0.0, commission_bps=COMMISSION_BPS),
        write_feed=False,
    )
    result = run_replay(events, config, default_registry())
    assert result.summary["denials"] == 0 and result.summary["venue_rejects"] == 0
    kept = result.kept
    orders = kept[kept["kind"] == RecordKind.ORDER].view(wire.order_dtype)
    fills = kept[kept["kind"] == RecordKind.FILL].view(wire.fill_dtype)
    frame = pd.DataFrame({k: orders[k] for k in ORDER_FIELDS})
    fills_frame = pd.DataFrame({k: fills[k] for k in ("order_id", "price", "quantity")})
    return frame, fills_frame, float(result.positions["engine_position"].iloc[0])


def test_live_engine_and_replay_send_the_same_orders(events, shm_dir, tmp_path):
    replayed, replay_fills, replay_position = replay_orders(events)
    live, live_fills, live_position = live_orders(events, shm_dir, tmp_path)

    assert len(replayed) >= 40, "too few orders for the comparison to mean anything"
    assert set(replayed["side"]) == {Side.BUY, Side.SELL}
    assert (replayed["order_id"].to_numpy() == np.arange(1, len(replayed) + 1)).all()
    pd.testing.assert_frame_equal(live.astype(replayed.dtypes), replayed, check_exact=True)
    pd.testing.assert_frame_equal(live_fills.astype(replay_fills.dtypes), replay_fills, check_exact=True)
    assert live_position == replay_position
