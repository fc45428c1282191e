"""The engine's state, as preallocated numpy arrays that the jitted kernels update in place.

Everything the hot loop touches is allocated here, once, before it goes live:

* ``engine`` — one ``engine_dtype`` record: trading state, counters, order-id sequence.
* ``inst`` — ``inst_state_dtype`` per instrument id: top of book, last trade, position,
  working quantities, staleness, per-instrument trading state.
* ``static`` — ``inst_static_dtype`` per instrument id: multiplier, tick, lot, FX conversion,
  allow-list.
* ``limits`` — float64 ``[instrument_id, LimitId]``; row 0 holds the defaults and the global
  limits (message rate, fill latch), a row per instrument its own (a value of NaN in an
  instrument row means "use row 0").
* ``orders`` — ``order_slot_dtype`` slots, direct-mapped by ``order_id % capacity``.
* ``msg_times`` / ``fill_times`` — rolling windows of the last messages and fills.
* strategy ``params`` / ``sstate`` and an ``intents`` buffer for the strategy's output.
* one scratch record per kind the engine emits, with its int64 word view for ring copies.

:class:`EngineArrays` bundles them as a named tuple, which numba passes to kernels as one
argument and caches by type.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from quayside.core import wire
from quayside.core.instruments import InstrumentRegistry

__all__ = [
    "ORDER_CAPACITY",
    "WINDOW_CAPACITY",
    "MAX_INTENTS",
    "N_LIMITS",
    "SlotStatus",
    "IntentAction",
    "engine_dtype",
    "inst_state_dtype",
    "inst_static_dtype",
    "order_slot_dtype",
    "intent_dtype",
    "EngineArrays",
    "Rings",
    "Inbound",
    "inbound_views",
    "allocate",
]

ORDER_CAPACITY = 1024  # working orders at once (direct-mapped by order id)
WINDOW_CAPACITY = 512  # longest rolling window of messages or fills the limits may ask for
MAX_INTENTS = 16  # order intents a strategy may return from one call
RECENT_CAPACITY = 64  # orders remembered by the duplicate-order guard (the message rate keeps
# far fewer than this inside any realistic duplicate window)
# columns of ``recent`` (int64: instrument, side, time) and ``recent_px`` (float64: price, quantity)
R_INSTRUMENT, R_SIDE, R_TS = range(3)
R_PRICE, R_QTY = range(2)
N_LIMITS = max(wire.LimitId) + 1


class _SlotStatus(NamedTuple):
    FREE: int = 0
    PENDING_NEW: int = 1  # sent, not yet acknowledged
    WORKING: int = 2  # acknowledged by the broker
    PENDING_CANCEL: int = 3  # cancel sent
    CANCEL_WANTED: int = 4  # cancel decided, outbound ring was full: retried every iteration


SlotStatus = _SlotStatus()


class _IntentAction(NamedTuple):
    NEW: int = 1
    CANCEL: int = 2


IntentAction = _IntentAction()

engine_dtype = np.dtype(
    [
        ("trading_state", "i8"),  # TradingState
        ("latched", "i8"),  # fill-count latch engaged: no new orders until RESUME
        ("next_order_id", "i8"),
        ("strategy_id", "i8"),
        ("loop_iterations", "i8"),
        ("events_in", "i8"),
        ("orders_out", "i8"),
        ("cancels_out", "i8"),
        ("denials", "i8"),
        ("fills", "i8"),
        ("backpressure", "i8"),
        ("controls", "i8"),
        ("msg_head", "i8"),  # next write index into msg_times
        ("msg_count", "i8"),
        ("fill_head", "i8"),
        ("fill_count", "i8"),
        ("pending_cancels", "i8"),  # slots in CANCEL_WANTED
        ("last_heartbeat_ns", "i8"),
        ("heartbeat_interval_ns", "i8"),
        ("max_loop_ns", "i8"),
        ("cpu", "i8"),
        ("wait_strategy", "i8"),
        ("replay", "i8"),  # 1 in a backtest: records get Flag.REPLAY
        ("feed_dropped", "i8"),  # records not published because no feed was attached (replay option)
        ("collar_ref_last", "i8"),  # price collar reference: 0 = mid, 1 = last trade
        ("recent_head", "i8"),  # next write index into recent
    ],
    align=True,
)

inst_state_dtype = np.dtype(
    [
        ("bid", "f8"),
        ("ask", "f8"),
        ("bid_size", "f8"),
        ("ask_size", "f8"),
        ("last_price", "f8"),
        ("last_size", "f8"),
        ("ts_quote", "i8"),  # engine clock when the last quote was seen
        ("ts_trade", "i8"),
        ("position", "f8"),
        ("avg_price", "f8"),
        ("working_buy", "f8"),
        ("working_sell", "f8"),
        ("stale", "i8"),  # the gateway marked data stale (farm or connectivity loss)
        ("blocked", "i8"),  # reconciliation break: no new orders until resolved
        ("trading_state", "i8"),  # per-instrument TradingState (ACTIVE unless a scoped control)
        ("quotes", "i8"),
        ("buy_order_id", "i8"),  # the newest working buy order, 0 if none (for quoting strategies)
        ("sell_order_id", "i8"),
    ],
    align=True,
)

inst_static_dtype = np.dtype(
    [
        ("known", "i8"),
        ("allowed", "i8"),  # on the allow-list
        ("traded", "i8"),  # the strategy is called for this instrument's events
        ("multiplier", "f8"),
        ("tick_size", "f8"),
        ("lot_size", "f8"),
        ("fx_instrument", "i8"),  # instrument whose mid converts to the account currency; 0 = same
        ("fx_invert", "i8"),  # 1: divide by that mid instead of multiplying
        ("fx_fallback", "f8"),  # rate to use when the FX instrument has no quote (NaN: none)
    ],
    align=True,
)

order_slot_dtype = np.dtype(
    [
        ("order_id", "i8"),
        ("instrument_id", "i8"),
        ("status", "i8"),  # SlotStatus
        ("side", "i8"),
        ("order_type", "i8"),
        ("tif", "i8"),
        ("price", "f8"),
        ("quantity", "f8"),
        ("filled", "f8"),
        ("ts_sent", "i8"),
    ],
    align=True,
)

intent_dtype = np.dtype(
    [
        ("action", "i8"),  # IntentAction
        ("instrument_id", "i8"),
        ("side", "i8"),
        ("order_type", "i8"),
        ("tif", "i8"),
        ("price", "f8"),
        ("quantity", "f8"),
        ("order_id", "i8"),  # for CANCEL
    ],
    align=True,
)


class EngineArrays(NamedTuple):
    engine: np.ndarray
    limits: np.ndarray
    inst: np.ndarray
    static: np.ndarray
    orders: np.ndarray
    msg_times: np.ndarray
    fill_times: np.ndarray
    recent: np.ndarray
    recent_px: np.ndarray
    params: np.ndarray
    sstate: np.ndarray
    intents: np.ndarray
    # scratch records the engine fills in before copying them to a ring
    order_rec: np.ndarray
    cancel_rec: np.ndarray
    denial_rec: np.ndarray
    position_rec: np.ndarray
    heartbeat_rec: np.ndarray
    log_rec: np.ndarray
    order_words: np.ndarray
    cancel_words: np.ndarray
    denial_words: np.ndarray
    position_words: np.ndarray
    heartbeat_words: np.ndarray
    log_words: np.ndarray


class Rings(NamedTuple):
    """Where the engine writes: the outbound command ring and the feed ring (header words and
    slot words of each)."""

    out_words: np.ndarray
    out_slots: np.ndarray
    feed_words: np.ndarray
    feed_slots: np.ndarray


class Inbound(NamedTuple):
    """Typed views of one array of inbound records (a ring's slots, or replay events)."""

    words: np.ndarray
    quote: np.ndarray
    trade: np.ndarray
    fill: np.ndarray
    status: np.ndarray
    control: np.ndarray


def inbound_views(words: np.ndarray) -> Inbound:
    """Typed views of an ``(n, 8)`` int64 array of records, for the engine kernels."""
    recs = words.reshape(-1).view(wire.record_dtype)
    return Inbound(
        words=words,
        quote=recs.view(wire.quote_dtype),
        trade=recs.view(wire.trade_dtype),
        fill=recs.view(wire.fill_dtype),
        status=recs.view(wire.order_status_dtype),
        control=recs.view(wire.control_dtype),
    )


def _scratch(dtype: np.dtype, kind: int) -> tuple[np.ndarray, np.ndarray]:
    rec = np.zeros(1, dtype=dtype)
    rec["kind"] = kind
    rec["version"] = wire.VERSIONS[kind]
    return rec, rec.view(np.int64).reshape(1, wire.RECORD_SIZE // 8)


def allocate(
    registry: InstrumentRegistry,
    *,
    params: np.ndarray,
    state_width: int,
    strategy_id: int = 1,
    first_order_id: int = 1,
    replay: bool = False,
) -> EngineArrays:
    """Fresh engine state for the instruments of ``registry`` (nothing allowed, no limits:
    the caller applies the risk configuration with :func:`quayside.core.risk.config.apply`)."""
    size = max((i.id for i in registry), default=0) + 1
    engine = np.zeros(1, dtype=engine_dtype)
    engine["trading_state"] = wire.TradingState.ACTIVE
    engine["next_order_id"] = first_order_id
    engine["strategy_id"] = strategy_id
    engine["cpu"] = -1
    engine["replay"] = int(replay)
    engine["heartbeat_interval_ns"] = 1_000_000_000
    inst = np.zeros(size, dtype=inst_state_dtype)
    for name in ("bid", "ask", "bid_size", "ask_size", "last_price", "last_size", "avg_price"):
        inst[name] = np.nan
    inst["trading_state"] = wire.TradingState.ACTIVE
    static = np.zeros(size, dtype=inst_static_dtype)
    static["fx_fallback"] = np.nan
    static["multiplier"] = 1.0
    for i in registry:
        static[i.id] = (1, 0, 0, i.multiplier, i.tick_size, i.lot_size, 0, 0, np.nan)
    limits = np.full((size, N_LIMITS), np.nan)
    records = {}
    for name, dtype, kind in [
        ("order", wire.order_dtype, wire.RecordKind.ORDER),
        ("cancel", wire.cancel_dtype, wire.RecordKind.CANCEL),
        ("denial", wire.denial_dtype, wire.RecordKind.DENIAL),
        ("position", wire.position_dtype, wire.RecordKind.POSITION),
        ("heartbeat", wire.heartbeat_dtype, wire.RecordKind.HEARTBEAT),
        ("log", wire.log_dtype, wire.RecordKind.LOG),
    ]:
        rec, words = _scratch(dtype, kind)
        rec["strategy_id"] = strategy_id
        if replay:
            rec["flags"] = wire.Flag.REPLAY
        records[f"{name}_rec"], records[f"{name}_words"] = rec, words
    return EngineArrays(
        engine=engine,
        limits=limits,
        inst=inst,
        static=static,
        orders=np.zeros(ORDER_CAPACITY, dtype=order_slot_dtype),
        msg_times=np.zeros(WINDOW_CAPACITY, dtype=np.int64),
        fill_times=np.zeros(WINDOW_CAPACITY, dtype=np.int64),
        recent=np.zeros((RECENT_CAPACITY, 3), dtype=np.int64),
        recent_px=np.full((RECENT_CAPACITY, 2), np.nan),
        params=np.ascontiguousarray(params, dtype=np.float64),
        sstate=np.zeros((size, max(state_width, 1)), dtype=np.float64),
        intents=np.zeros(MAX_INTENTS, dtype=intent_dtype),
        **records,
    )
