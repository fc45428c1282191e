"""The feed the support-service benchmark offers (``benchmarks/_support_feed.py``) is a valid
engine feed at live feed time: every record is one this build reads, time only moves forward
at the rate asked for, stage latencies are those of the pattern, ids stay unique across the
repetitions, and the denials and heartbeats it adds are where the engine would put them.
(Its rates are measured by ``python -m benchmarks.support``, never asserted here.)"""

from __future__ import annotations

import numpy as np

from benchmarks._support_feed import bench_feed, mix
from quayside.core import wire
from quayside.core.wire import RecordKind
from quayside.support.pnl import records as R

MS = 1_000_000


def pattern() -> np.ndarray:
    """A replay-like stretch: quotes and trades 50 ms apart, two orders with a status and a
    fill each, and an engine position, at replay feed time (slow)."""
    t, out = 1_791_207_000 * 10**9, []
    for k in range(40):
        ts = t + k * 50 * MS
        out.append(R.quote(1 + k % 3, 1.0 + k, 1.1 + k, ts))
        out[-1].view(wire.quote_dtype)["ts_recv"] = ts + 200_000  # gateway receipt 200 µs later
        out.append(R.trade(1 + k % 3, 1.05 + k, 1.0, ts + MS))
        if k in (10, 30):
            oid = 1 if k == 10 else 2
            order = R.order(1, 1, 2.0, 11.0, ts + 2 * MS, order_id=oid)
            order.view(wire.order_dtype)["ts_recv"] = ts + 200_000
            out += [
                order,
                R.order_status(1, wire.OrderStatus.FILLED, ts + 3 * MS, order_id=oid, filled=2.0),
                R.fill(1, 2.0, 11.0, ts + 3 * MS, fill_id=oid, order_id=oid, commission=1.0),
                R.position(1, 2.0 * oid, ts + 3 * MS, origin=wire.PositionOrigin.ENGINE),
            ]
    return np.concatenate(out)


def test_the_benchmark_feed_is_a_valid_live_feed():
    pat = pattern()
    n, rate = 1_000, 2e6
    feed = bench_feed(pat, n, rate=rate, heartbeat_ms=0.1, deny_every=2)
    assert len(feed) == n and wire.validate(feed).all()
    assert np.array_equal(feed["seq"], np.arange(n))
    ts = feed["ts_event"]
    assert np.all(np.diff(ts) >= 0) and ts[-1] - ts[0] == round((n - 1) * 1e9 / rate)
    kinds = feed["kind"]
    quotes = feed[kinds == RecordKind.QUOTE].view(wire.quote_dtype)
    assert np.all(quotes["ts_recv"] - quotes["ts_event"] == 200_000)  # stage latencies kept
    orders = feed[kinds == RecordKind.ORDER].view(wire.order_dtype)
    assert np.all(orders["ts_event"] - orders["ts_recv"] == 2 * MS - 200_000)
    assert len(np.unique(orders["order_id"])) == len(orders) > 2  # unique across repetitions
    fills = feed[kinds == RecordKind.FILL].view(wire.fill_dtype)
    assert len(np.unique(fills["fill_id"])) == len(fills) and set(fills["order_id"]) <= set(orders["order_id"])
    denied = np.flatnonzero(kinds == RecordKind.DENIAL)
    assert len(denied) == len(orders) // 2  # one order in two (deny_every=2) ...
    assert np.all(kinds[denied - 1] == RecordKind.ORDER)  # ... right after its order
    d = feed[denied].view(wire.denial_dtype)
    assert np.all(d["reason"] == wire.DenyReason.MESSAGE_RATE) and np.all(d["instrument_id"] == 1)
    beats = np.flatnonzero(kinds == RecordKind.HEARTBEAT)
    assert len(beats) == n // 200 - (n % 200 == 0)  # one per 0.1 ms of feed time at 2 M/s
    h = feed[beats[:1]].view(wire.heartbeat_dtype)[0]
    assert h["trading_state"] == wire.TradingState.ACTIVE and h["events_in"] > 0
    shares = mix(feed)
    assert shares["QUOTE"] > 0.4 and abs(sum(shares.values()) - 1.0) < 1e-5
