"""A realistic engine feed for the recorder, metrics and rebuild tests, built with numpy.

:func:`session` lays out what a live engine publishes: ENGINE_STARTED and BROKER_CONNECTED
log records, then quotes on three instruments with, every ``order_every`` records, an order
triggered by the quote before it (``dt_queue_ns``, ``dt_decide_ns`` and ``ts_event`` set as
the engine sets them), its broker status (every tenth one REJECTED) and a fill, risk
denials, a reconciliation break and its resolution, and a heartbeat with the engine's running
counters every ``heartbeat_every`` records. Sequence numbers are left at 0: the ring stamps
them. Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import time

import numpy as np

from quayside.core import wire

IDS = (1, 3, 4)  # EURUSD, AAPL, ESZ6 in the built-in registry
DENY_REASONS = (wire.DenyReason.PRICE_COLLAR, wire.DenyReason.MAX_ORDER_QTY, wire.DenyReason.MESSAGE_RATE)


def record(dtype: np.dtype, kind: int, **fields) -> np.ndarray:
    rec = np.zeros(1, dtype=dtype)
    rec["kind"], rec["version"] = kind, wire.VERSIONS[kind]
    for name, value in fields.items():
        rec[name] = value
    return rec.view(wire.record_dtype)


def log(code: int, ts: int, *, level: int = wire.LogLevel.INFO, iid: int = 0, i0=0, i1=0, a0=0.0, a1=0.0):
    return record(
        wire.log_dtype, wire.RecordKind.LOG, instrument_id=iid, ts_event=ts, code=code, level=level, i0=i0, i1=i1,
        a0=a0, a1=a1,
    )  # fmt: skip


def session(
    n: int,
    *,
    t0: int | None = None,
    step_ns: int = 10_000,
    order_every: int = 50,
    heartbeat_every: int = 1000,
    deny_every: int = 250,
    first_order_id: int = 1,
    seed: int = 1,
    start: bool = True,
) -> np.ndarray:
    """``n`` records (plus the start-up log records when ``start``) as ``record_dtype``."""
    rng = np.random.default_rng(seed)
    t0 = time.time_ns() if t0 is None else t0
    out = np.zeros(n, wire.record_dtype)
    i = np.arange(n)
    ts = t0 + i * step_ns
    phase = i % order_every
    kind = np.full(n, wire.RecordKind.QUOTE, dtype=np.uint8)
    kind[(phase == 11) & (i + 2 < n)] = wire.RecordKind.ORDER
    is_order = kind == wire.RecordKind.ORDER
    kind[np.flatnonzero(is_order) + 1] = wire.RecordKind.ORDER_STATUS
    kind[np.flatnonzero(is_order) + 2] = wire.RecordKind.FILL
    kind[(i % deny_every == 30)] = wire.RecordKind.DENIAL
    kind[(i % heartbeat_every) == heartbeat_every - 1] = wire.RecordKind.HEARTBEAT
    out["kind"] = kind
    out["version"] = 1
    out["ts_event"] = ts
    iid = np.array(IDS, dtype=np.uint32)[i % len(IDS)]
    out["instrument_id"] = iid
    out["strategy_id"] = np.where(kind == wire.RecordKind.QUOTE, 0, 1)

    q = out.view(wire.quote_dtype)
    quotes = kind == wire.RecordKind.QUOTE
    base = np.array([0.0, 1.1, 0.0, 190.0, 5000.0])[iid]  # by instrument id (IDS)
    mid = base * (1 + np.cumsum(rng.normal(0, 1e-5, n)))
    q["ts_recv"][quotes] = ts[quotes]
    q["ts_event"][quotes] = ts[quotes] - 700
    q["bid_price"][quotes], q["ask_price"][quotes] = mid[quotes] * (1 - 1e-5), mid[quotes] * (1 + 1e-5)
    q["bid_size"][quotes] = q["ask_size"][quotes] = 100.0

    rows = np.flatnonzero(is_order)
    k = len(rows)
    oid = first_order_id + np.arange(k)
    o = out.view(wire.order_dtype)
    dt_queue = rng.integers(2_000, 20_000, k)
    dt_decide = rng.integers(500, 5_000, k)
    trigger = ts[rows - 1]
    sent = trigger + dt_queue + dt_decide + 300
    o["instrument_id"][rows] = iid[rows - 1]
    o["ts_recv"][rows], o["ts_event"][rows] = trigger, sent
    o["order_id"][rows], o["side"][rows] = oid, np.where(oid % 2 == 0, 1, -1)
    o["order_type"][rows], o["tif"][rows] = wire.OrderType.LIMIT, wire.TimeInForce.DAY
    o["price"][rows], o["quantity"][rows] = mid[rows - 1], 1.0
    o["dt_queue_ns"][rows], o["dt_decide_ns"][rows] = dt_queue, dt_decide

    s = out.view(wire.order_status_dtype)
    answered = sent + rng.integers(100_000, 900_000, k)
    rejected = (oid % 10) == 0
    srows = rows + 1
    s["instrument_id"][srows], s["ts_recv"][srows], s["order_id"][srows] = iid[rows - 1], answered, oid
    s["status"][srows] = np.where(rejected, wire.OrderStatus.REJECTED, wire.OrderStatus.SUBMITTED)
    s["error_code"][srows] = np.where(rejected, 201, 0)
    s["broker_order_id"][srows] = oid
    s["avg_fill_price"][srows] = np.nan

    f = out.view(wire.fill_dtype)
    frows = rows + 2
    f["instrument_id"][frows], f["ts_recv"][frows], f["order_id"][frows] = iid[rows - 1], answered + 50_000, oid
    f["fill_id"][frows], f["price"][frows], f["quantity"][frows] = oid, mid[rows - 1], np.where(oid % 2 == 0, 1, -1)
    f["commission"][frows] = 0.25
    f["flags"][frows] = wire.Flag.COMMISSION_KNOWN
    out["kind"][frows[rejected]] = wire.RecordKind.QUOTE  # a rejected order gets no fill: a quote instead
    q["ts_recv"][frows[rejected]] = ts[frows[rejected]]
    q["bid_price"][frows[rejected]], q["ask_price"][frows[rejected]] = 1.0, 1.0001

    d = out.view(wire.denial_dtype)
    drows = np.flatnonzero(kind == wire.RecordKind.DENIAL)
    d["ts_recv"][drows] = ts[drows] - 5_000
    d["reason"][drows] = np.array(DENY_REASONS)[np.arange(len(drows)) % len(DENY_REASONS)]
    d["side"][drows], d["order_type"][drows] = 1, wire.OrderType.LIMIT
    d["price"][drows], d["quantity"][drows], d["limit"][drows] = 1.2, 100.0, 0.5

    if n > 400:  # a reconciliation break on AAPL, resolved later (in place of two quotes)
        quote_rows = np.flatnonzero(out["kind"] == wire.RecordKind.QUOTE)
        brk, res = quote_rows[np.searchsorted(quote_rows, [n // 4, n // 2])]
        for row, code in ((brk, wire.LogCode.RECONCILIATION_BREAK), (res, wire.LogCode.RECONCILIATION_RESOLVED)):
            out[row] = log(code, int(ts[row]), level=wire.LogLevel.ERROR, iid=3, a0=5.0, a1=4.0)[0]

    h = out.view(wire.heartbeat_dtype)
    hrows = np.flatnonzero(out["kind"] == wire.RecordKind.HEARTBEAT)
    kinds_now = out["kind"]
    h["instrument_id"][hrows] = 0
    h["loop_iterations"][hrows] = 3 * hrows + 7
    h["events_in"][hrows] = np.cumsum(kinds_now == wire.RecordKind.QUOTE)[hrows]
    h["orders_out"][hrows] = np.cumsum(kinds_now == wire.RecordKind.ORDER)[hrows]
    h["denials"][hrows] = np.cumsum(kinds_now == wire.RecordKind.DENIAL)[hrows]
    h["fills"][hrows] = np.cumsum(kinds_now == wire.RecordKind.FILL)[hrows]
    h["trading_state"][hrows], h["wait_strategy"][hrows], h["cpu"][hrows] = wire.TradingState.ACTIVE, 2, 0
    h["max_loop_ns"][hrows] = 12_345

    if start:
        head = [
            log(wire.LogCode.ENGINE_STARTED, t0 - 2, i0=0, i1=2),
            log(wire.LogCode.BROKER_CONNECTED, t0 - 1, i0=7, i1=1),
        ]
        out = np.concatenate([*head, out])
    return out


def typed(records: np.ndarray, kind: int) -> np.ndarray:
    """The records of ``kind`` viewed with that kind's dtype."""
    return records[records["kind"] == kind].view(wire.dtype_for(kind))
