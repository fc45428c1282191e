"""Feed records built by hand (tests, examples) and a synthetic feed (the services' benchmark).

Every builder returns a one-record ``record_dtype`` array (concatenate them into a batch);
``seq`` is left 0 because a ring writer stamps it with the record's position.
"""

from __future__ import annotations

import math

import numpy as np

from quayside.core import wire
from quayside.core.wire import Flag, RecordKind, record_dtype

__all__ = [
    "quote",
    "quotes",
    "trade",
    "fill",
    "position",
    "order",
    "cancel",
    "order_status",
    "heartbeat",
    "log",
    "control",
    "synthetic_feed",
]


def _one(dtype: np.dtype, kind: int, ts: int, iid: int = 0, strategy_id: int = 0, flags: int = 0, **fields):
    r = np.zeros(1, dtype)
    r["kind"], r["version"] = kind, wire.VERSIONS[kind]
    r["ts_event"], r["instrument_id"], r["strategy_id"], r["flags"] = ts, iid, strategy_id, flags
    for k, v in fields.items():
        r[k] = v
    return r.view(record_dtype)


def quote(iid: int, bid: float, ask: float, ts: int, *, flags: int = 0, size: float = 1.0) -> np.ndarray:
    return _one(
        wire.quote_dtype, RecordKind.QUOTE, ts, iid, 0, flags, ts_recv=ts, bid_price=bid, ask_price=ask,
        bid_size=size, ask_size=size,
    )  # fmt: skip


def quotes(iids, bids, asks, ts) -> np.ndarray:
    """Many quotes at once (arrays of equal length)."""
    n = len(iids)
    r = np.zeros(n, wire.quote_dtype)
    r["kind"], r["version"] = RecordKind.QUOTE, wire.VERSIONS[RecordKind.QUOTE]
    r["instrument_id"], r["bid_price"], r["ask_price"], r["ts_event"], r["ts_recv"] = iids, bids, asks, ts, ts
    r["bid_size"] = r["ask_size"] = 1.0
    return r.view(record_dtype)


def trade(iid: int, price: float, size: float, ts: int) -> np.ndarray:
    return _one(wire.trade_dtype, RecordKind.TRADE, ts, iid, ts_recv=ts, price=price, size=size)


def fill(
    iid: int,
    quantity: float,
    price: float,
    ts: int,
    *,
    fill_id: int,
    strategy_id: int = 1,
    order_id: int = 0,
    commission: float = math.nan,
    flags: int | None = None,
) -> np.ndarray:
    """A FILL; ``flags`` defaults to COMMISSION_KNOWN when ``commission`` is a number."""
    if flags is None:
        flags = Flag.COMMISSION_KNOWN if math.isfinite(commission) else 0
    return _one(
        wire.fill_dtype, RecordKind.FILL, ts, iid, strategy_id, flags, ts_recv=ts, order_id=order_id,
        fill_id=fill_id, price=price, quantity=quantity, commission=commission,
    )  # fmt: skip


def position(
    iid: int, quantity: float, ts: int, *, origin: int = wire.PositionOrigin.BROKER, strategy_id: int = 0,
    avg_price: float = math.nan, working_buy: float = 0.0, working_sell: float = 0.0,
) -> np.ndarray:  # fmt: skip
    return _one(
        wire.position_dtype, RecordKind.POSITION, ts, iid, strategy_id, quantity=quantity, avg_price=avg_price,
        working_buy_qty=working_buy, working_sell_qty=working_sell, origin=origin,
    )  # fmt: skip


def order(
    iid: int, side: int, quantity: float, price: float, ts: int, *, order_id: int, strategy_id: int = 1,
    order_type: int = wire.OrderType.LIMIT,
) -> np.ndarray:  # fmt: skip
    return _one(
        wire.order_dtype, RecordKind.ORDER, ts, iid, strategy_id, order_id=order_id, side=side,
        order_type=order_type, tif=wire.TimeInForce.DAY, price=price, quantity=quantity,
    )  # fmt: skip


def cancel(iid: int, ts: int, *, order_id: int, strategy_id: int = 1) -> np.ndarray:
    return _one(wire.cancel_dtype, RecordKind.CANCEL, ts, iid, strategy_id, order_id=order_id)


def order_status(iid: int, status: int, ts: int, *, order_id: int, filled: float = 0.0) -> np.ndarray:
    return _one(
        wire.order_status_dtype, RecordKind.ORDER_STATUS, ts, iid, 1, ts_recv=ts, order_id=order_id,
        status=status, filled_qty=filled, avg_fill_price=math.nan,
    )  # fmt: skip


def heartbeat(ts: int, *, trading_state: int = wire.TradingState.ACTIVE, fills: int = 0) -> np.ndarray:
    return _one(wire.heartbeat_dtype, RecordKind.HEARTBEAT, ts, trading_state=trading_state, fills=fills, cpu=-1)


def log(code: int, ts: int, *, iid: int = 0, i0: int = 0, i1: int = 0, a0: float = 0.0, a1: float = 0.0, level=None):
    level = wire.LogLevel.WARNING if level is None else level
    return _one(wire.log_dtype, RecordKind.LOG, ts, iid, code=code, level=level, i0=i0, i1=i1, a0=a0, a1=a1)


def control(command: int, ts: int, *, iid: int = 0, strategy_id: int = 0, command_id: int = 0, issuer_id: int = 0):
    return _one(
        wire.control_dtype, RecordKind.CONTROL, ts, iid, strategy_id, command_id=command_id, command=command,
        issuer_id=issuer_id,
    )  # fmt: skip


def synthetic_feed(
    n: int, *, instruments=(1, 2, 3, 4), fill_every: int = 1000, t0: int = 1_723_161_600 * 10**9, seed: int = 7
) -> np.ndarray:
    """``n`` records of a realistic feed: quotes of ``instruments`` (random walks), a FILL every
    ``fill_every`` records (half with their commission, each followed by its commission report
    some records later), an ORDER before each fill, a HEARTBEAT every 10,000 records; time
    advances 1 µs per record. ``seq`` runs from 0."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(instruments, dtype=np.uint32)
    base = {1: 1.10, 2: 150.0, 3: 200.0, 4: 5000.0}
    out = np.zeros(n, wire.quote_dtype)
    out["kind"], out["version"] = RecordKind.QUOTE, 1
    iid = ids[rng.integers(0, len(ids), n)]
    level = np.array([base.get(int(i), 100.0) for i in range(int(ids.max()) + 1)])
    walk = 1.0 + np.cumsum(rng.normal(0.0, 1e-5, n))
    mid = level[iid] * walk
    half = level[iid] * 5e-5
    out["instrument_id"], out["bid_price"], out["ask_price"] = iid, mid - half, mid + half
    out["bid_size"] = out["ask_size"] = 1.0
    out["ts_event"] = t0 + np.arange(n, dtype=np.int64) * 1000
    out["ts_recv"] = out["ts_event"]
    out["seq"] = np.arange(n)
    feed = out.view(record_dtype)
    f = feed.view(wire.fill_dtype)
    for fid, k in enumerate(range(fill_every // 2, n - 2, fill_every), start=1):
        i = int(iid[k])
        qty = float(rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]))
        feed[k - 1 : k] = order(i, 1 if qty > 0 else -1, abs(qty), float(mid[k]), int(out["ts_event"][k - 1]),
                                order_id=fid)  # fmt: skip
        known = fid % 2 == 0
        feed[k : k + 1] = fill(i, qty, float(mid[k]), int(out["ts_event"][k]), fill_id=fid, order_id=fid,
                               commission=1.0 if known else math.nan)  # fmt: skip
        if not known:
            j = min(k + fill_every // 4, n - 1)
            feed[j : j + 1] = fill(i, 0.0, 0.0, int(out["ts_event"][j]), fill_id=fid, commission=1.25)
    ts = out["ts_event"].copy()
    feed[::10_000] = heartbeat(0)
    feed["ts_event"][::10_000] = ts[::10_000]
    f["seq"] = np.arange(n)
    return feed
