"""The wire format: every record that crosses a process boundary.

Each record is a fixed-size, little-endian numpy structured dtype of one cache line (64 bytes).
The same bytes travel on every shared-memory ring, inside UDP datagrams and in recorded files,
so a recording replays through the same code that handled it live.

Every record starts with the same 24-byte header::

    kind u1 | version u1 | flags u1 | strategy_id u1 | instrument_id u4 | seq u8 | ts_event i8

``kind`` says which dtype the remaining 40 bytes follow, ``version`` is the format version of
that kind (a reader refuses versions it does not know), ``seq`` is the record's sequence number
on the stream that carries it, and ``ts_event`` is when the event happened, in int64
nanoseconds since the Unix epoch. Records that pass through several stages carry further
``ts_*`` timestamps (or stage durations in ``dt_*_ns`` fields) in their payload.
``instrument_id`` and ``strategy_id`` are small integers resolved through the instrument
registry (:mod:`quayside.core.instruments`) and the engine configuration; 0 means "none" or
"all", so real ids start at 1.

Enumerations are ``NamedTuple`` instances: numba folds ``RecordKind.QUOTE`` to a constant
inside jitted code, and Python code gets names back with :func:`enum_name`.

This module imports numpy only; support services import it without numba. Run
``python -m quayside.core.wire`` to print ``docs/wire-format.md``, which a test keeps in step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "RECORD_SIZE",
    "HEADER_SIZE",
    "RecordKind",
    "Side",
    "OrderType",
    "TimeInForce",
    "OrderStatus",
    "BookAction",
    "Flag",
    "DenyReason",
    "ControlCommand",
    "LimitId",
    "TradingState",
    "PositionOrigin",
    "LogLevel",
    "LogCode",
    "LOG_TEMPLATES",
    "header_dtype",
    "segment_header_dtype",
    "datagram_header_dtype",
    "SEGMENT_MAGIC",
    "SEGMENT_LAYOUT_VERSION",
    "SEGMENT_HEADER_SIZE",
    "DATAGRAM_MAGIC",
    "DATAGRAM_VERSION",
    "DATAGRAM_HEADER_SIZE",
    "file_header_dtype",
    "FILE_MAGIC",
    "FILE_VERSION",
    "FILE_HEADER_SIZE",
    "record_dtype",
    "quote_dtype",
    "trade_dtype",
    "book_dtype",
    "order_dtype",
    "cancel_dtype",
    "order_status_dtype",
    "fill_dtype",
    "position_dtype",
    "denial_dtype",
    "heartbeat_dtype",
    "control_dtype",
    "log_dtype",
    "DTYPES",
    "WireFormatError",
    "dtype_for",
    "enum_name",
    "validate",
    "markdown",
]

RECORD_SIZE = 64
HEADER_SIZE = 24
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- enumerations


class _RecordKind(NamedTuple):
    QUOTE: int = 1
    TRADE: int = 2
    BOOK: int = 3
    ORDER: int = 4
    CANCEL: int = 5
    ORDER_STATUS: int = 6
    FILL: int = 7
    POSITION: int = 8
    DENIAL: int = 9
    HEARTBEAT: int = 10
    CONTROL: int = 11
    LOG: int = 12


RecordKind = _RecordKind()


class _Side(NamedTuple):
    BUY: int = 1
    SELL: int = -1


Side = _Side()


class _OrderType(NamedTuple):
    MARKET: int = 1
    LIMIT: int = 2


OrderType = _OrderType()


class _TimeInForce(NamedTuple):
    DAY: int = 1
    IOC: int = 2
    GTC: int = 3


TimeInForce = _TimeInForce()


class _OrderStatus(NamedTuple):
    PENDING_SUBMIT: int = 1
    SUBMITTED: int = 2
    PARTIALLY_FILLED: int = 3
    FILLED: int = 4
    PENDING_CANCEL: int = 5
    CANCELLED: int = 6
    REJECTED: int = 7
    INACTIVE: int = 8


OrderStatus = _OrderStatus()


class _BookAction(NamedTuple):
    ADD: int = 1
    MODIFY: int = 2
    DELETE: int = 3
    CLEAR: int = 4
    EXECUTE: int = 5


BookAction = _BookAction()


class _Flag(NamedTuple):
    """Bits of the header's ``flags`` byte."""

    REPLAY: int = 0x01  # produced by a backtest or a replay, not by a live venue
    SNAPSHOT: int = 0x02  # part of a snapshot (book, positions), not an incremental change
    CORRECTION: int = 0x04  # replaces an earlier record with the same key (e.g. a corrected fill)
    COMMISSION_KNOWN: int = 0x08  # a fill whose commission field is final
    STALE: int = 0x10  # market data the gateway marked stale (data farm or connectivity loss)
    LAST_IN_BATCH: int = 0x20  # the producer has nothing more queued after this record


Flag = _Flag()


class _DenyReason(NamedTuple):
    """Reason codes of pre-trade risk denials; each control has its own code."""

    MAX_ORDER_QTY: int = 1
    MAX_ORDER_NOTIONAL: int = 2
    PRICE_COLLAR: int = 3
    MAX_LONG_POSITION: int = 4
    MAX_SHORT_POSITION: int = 5
    MESSAGE_RATE: int = 6
    DUPLICATE_ORDER: int = 7
    INSTRUMENT_NOT_ALLOWED: int = 8
    STALE_MARKET_DATA: int = 9
    TRADING_HALTED: int = 10
    REDUCE_ONLY: int = 11
    FILL_LATCH: int = 12
    RECONCILIATION_BREAK: int = 13
    INVALID_ORDER: int = 14
    OUTBOUND_FULL: int = 15
    TOO_MANY_ORDERS: int = 16
    UNKNOWN_FX_RATE: int = 17


DenyReason = _DenyReason()


class _ControlCommand(NamedTuple):
    HALT: int = 1  # cancel all working orders (in scope) and accept no new ones
    RESUME: int = 2  # back to ACTIVE, also clears a fill-count latch
    REDUCE_ONLY: int = 3  # only orders that reduce the position
    SET_LIMIT: int = 4  # limit ``limit_id`` := ``value``
    CANCEL_ALL: int = 5  # cancel working orders in scope, keep the trading state
    # sent by the broker gateway through the inbound ring:
    BLOCK: int = 6  # reconciliation break: no new orders for the instrument(s) until UNBLOCK
    UNBLOCK: int = 7
    MARK_STALE: int = 8  # market data lost (1100, 2103): no new orders until MARK_FRESH or a fresh quote
    MARK_FRESH: int = 9


ControlCommand = _ControlCommand()


class _LimitId(NamedTuple):
    MAX_ORDER_QTY: int = 1
    MAX_ORDER_NOTIONAL: int = 2
    PRICE_COLLAR_PCT: int = 3
    PRICE_COLLAR_TICKS: int = 4
    MAX_LONG_POSITION: int = 5
    MAX_SHORT_POSITION: int = 6
    MAX_MESSAGES_PER_WINDOW: int = 7
    MESSAGE_WINDOW_NS: int = 8
    STALE_QUOTE_NS: int = 9
    FILL_LATCH_COUNT: int = 10
    FILL_LATCH_WINDOW_NS: int = 11
    DUPLICATE_WINDOW_NS: int = 12


LimitId = _LimitId()


class _TradingState(NamedTuple):
    ACTIVE: int = 1
    REDUCING: int = 2
    HALTED: int = 3


TradingState = _TradingState()


class _PositionOrigin(NamedTuple):
    ENGINE: int = 1
    BROKER: int = 2
    SERVICE: int = 3


PositionOrigin = _PositionOrigin()


class _LogLevel(NamedTuple):
    DEBUG: int = 10
    INFO: int = 20
    WARNING: int = 30
    ERROR: int = 40
    CRITICAL: int = 50


LogLevel = _LogLevel()


class _LogCode(NamedTuple):
    ENGINE_STARTED: int = 1
    ENGINE_STOPPED: int = 2
    STATE_CHANGED: int = 3
    LIMIT_CHANGED: int = 4
    OUTBOUND_BACKPRESSURE: int = 5
    FEED_READER_LAPPED: int = 6
    BROKER_CONNECTED: int = 7
    BROKER_DISCONNECTED: int = 8
    BROKER_ERROR: int = 9
    RECONCILIATION_BREAK: int = 10
    CONTROL_REJECTED: int = 11
    FILL_LATCH_ENGAGED: int = 12
    CONTROL_APPLIED: int = 13
    RECONCILIATION_RESOLVED: int = 14
    ORDER_NOT_AT_BROKER: int = 15


LogCode = _LogCode()

# A compact log record carries a template id and four arguments; readers format it.
LOG_TEMPLATES: dict[int, str] = {
    LogCode.ENGINE_STARTED: "engine started on cpu {i0} (wait strategy {i1})",
    LogCode.ENGINE_STOPPED: "engine stopped after {i0} loop iterations",
    LogCode.STATE_CHANGED: "trading state {i0} -> {i1}",
    LogCode.LIMIT_CHANGED: "limit {i0} changed from {a0} to {a1}",
    LogCode.OUTBOUND_BACKPRESSURE: "outbound ring full {i0} times",
    LogCode.FEED_READER_LAPPED: "feed reader lapped, {i0} records lost",
    LogCode.BROKER_CONNECTED: "broker connected (client id {i0})",
    LogCode.BROKER_DISCONNECTED: "broker disconnected (attempt {i0})",
    LogCode.BROKER_ERROR: "broker error {i0} for request {i1}",
    LogCode.RECONCILIATION_BREAK: "reconciliation break: engine {a0}, broker {a1}",
    LogCode.CONTROL_REJECTED: "control command {i0} rejected: {i1} is out of range",
    LogCode.FILL_LATCH_ENGAGED: "fill-count latch engaged after {i0} fills; a person must resume",
    LogCode.CONTROL_APPLIED: "control command {i0} (id {i1}) applied",
    LogCode.RECONCILIATION_RESOLVED: "reconciliation break resolved: engine {a0}, broker {a1}",
    LogCode.ORDER_NOT_AT_BROKER: "order {i0} (broker id {i1}) is not at the broker after a reconnect: reported inactive",
}


def enum_name(enum: NamedTuple, value: int) -> str:
    """The name of ``value`` in one of this module's enumerations, or ``"UNKNOWN(v)"``."""
    for name, v in zip(enum._fields, enum, strict=True):
        if v == value:
            return name
    return f"UNKNOWN({value})"


# --------------------------------------------------------------------------- dtypes

_HEADER: list[tuple[str, str, str]] = [
    ("kind", "u1", "record kind (RecordKind)"),
    ("version", "u1", "format version of this kind"),
    ("flags", "u1", "bit set of Flag"),
    ("strategy_id", "u1", "strategy that owns the record; 0 = none / all"),
    ("instrument_id", "<u4", "instrument registry id; 0 = none / all"),
    ("seq", "<u8", "sequence number on the carrying stream"),
    ("ts_event", "<i8", "when the event happened, ns since the Unix epoch"),
]

# Per-field descriptions, shown in docs/wire-format.md.
_DOCS: dict[str, dict[str, str]] = {}


def _record(name: str, payload: list[tuple[str, str, str]]) -> np.dtype:
    """Header + payload, packed in order, padded to RECORD_SIZE with ``_pad`` bytes."""
    fields = _HEADER + payload
    names, formats, offsets, docs = [], [], [], {}
    offset = 0
    for fname, fmt, doc, *shape in fields:
        if shape:
            fmt = (fmt, shape[0])
        size = np.dtype(fmt).itemsize
        if offset % np.dtype(fmt).base.itemsize:
            raise AssertionError(f"{name}.{fname} at offset {offset} is not {size}-byte aligned")
        names.append(fname)
        formats.append(fmt)
        offsets.append(offset)
        docs[fname] = doc
        offset += size
    if offset > RECORD_SIZE:
        raise AssertionError(f"{name} needs {offset} bytes, more than {RECORD_SIZE}")
    # bytes after the last field are padding: reserved, written as zero. They are not a field,
    # because numba cannot compile records with opaque (void) fields.
    _DOCS[name] = docs
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": RECORD_SIZE})


header_dtype = np.dtype(
    {
        "names": [f[0] for f in _HEADER],
        "formats": [f[1] for f in _HEADER],
        "offsets": [0, 1, 2, 3, 4, 8, 16],
        "itemsize": HEADER_SIZE,
    }
)

#: Any record, viewed as header + opaque payload: what rings and files store.
record_dtype = _record("record", [("payload", "<u8", "kind-specific payload, 40 bytes", (5,))])

_TS_RECV = ("ts_recv", "<i8", "when the gateway (or loader) received it, ns")

quote_dtype = _record(
    "quote",
    [
        _TS_RECV,
        ("bid_price", "<f8", "best bid price"),
        ("ask_price", "<f8", "best ask price"),
        ("bid_size", "<f8", "size at the best bid"),
        ("ask_size", "<f8", "size at the best ask"),
    ],
)

trade_dtype = _record(
    "trade",
    [
        _TS_RECV,
        ("price", "<f8", "trade price"),
        ("size", "<f8", "trade size"),
        ("trade_id", "<u8", "venue trade id, 0 if none"),
        ("aggressor", "i1", "Side of the aggressor, 0 if unknown"),
    ],
)

book_dtype = _record(
    "book",
    [
        _TS_RECV,
        ("price", "<f8", "level (L2) or order (L3) price"),
        ("size", "<f8", "new size at the level / of the order; 0 on delete"),
        ("order_id", "<u8", "venue order id for order-level data, 0 for L2"),
        ("side", "i1", "Side of the book"),
        ("action", "u1", "BookAction"),
        ("level", "u1", "depth index for L2 (0 = top), 0 for L3"),
        ("_res", "u1", "reserved"),
        ("order_count", "<u4", "orders at the level, 0 if unknown"),
    ],
)

order_dtype = _record(
    "order",
    [
        ("ts_recv", "<i8", "gateway receipt of the event that triggered the order, ns (0 if none)"),
        ("order_id", "<u4", "engine order id, unique per engine session"),
        ("side", "i1", "Side"),
        ("order_type", "u1", "OrderType"),
        ("tif", "u1", "TimeInForce"),
        ("_res", "u1", "reserved"),
        ("price", "<f8", "limit price (NaN for market orders)"),
        ("quantity", "<f8", "quantity, positive"),
        ("dt_queue_ns", "<u4", "trigger received by gateway -> seen by engine, ns (saturates)"),
        ("dt_decide_ns", "<u4", "seen by engine -> decided, ns; ts_event is when it was sent"),
    ],
)

cancel_dtype = _record(
    "cancel",
    [
        ("ts_recv", "<i8", "gateway receipt of the triggering event, ns (0 if none)"),
        ("order_id", "<u4", "engine order id to cancel"),
        ("reason", "u1", "0 = strategy, else the ControlCommand that caused it"),
    ],
)

order_status_dtype = _record(
    "order_status",
    [
        _TS_RECV,
        ("order_id", "<u4", "engine order id"),
        ("status", "u1", "OrderStatus"),
        ("_res", "u1", "reserved"),
        ("error_code", "<i2", "broker error / reject code, 0 if none"),
        ("broker_order_id", "<i4", "IB orderId"),
        ("perm_id", "<i4", "IB permId, 0 until known"),
        ("filled_qty", "<f8", "cumulative filled quantity"),
        ("avg_fill_price", "<f8", "average fill price (NaN if nothing filled)"),
    ],
)

fill_dtype = _record(
    "fill",
    [
        _TS_RECV,
        ("order_id", "<u4", "engine order id"),
        ("fill_id", "<u4", "gateway id of the execution (IB execId); a CORRECTION reuses it"),
        ("price", "<f8", "execution price"),
        ("quantity", "<f8", "signed quantity: positive bought, negative sold"),
        ("commission", "<f8", "commission in account currency; NaN until known"),
    ],
)

position_dtype = _record(
    "position",
    [
        ("quantity", "<f8", "signed position"),
        ("avg_price", "<f8", "average cost price (NaN when flat)"),
        ("working_buy_qty", "<f8", "open buy quantity"),
        ("working_sell_qty", "<f8", "open sell quantity"),
        ("origin", "u1", "PositionOrigin"),
    ],
)

denial_dtype = _record(
    "denial",
    [
        ("ts_recv", "<i8", "gateway receipt of the triggering event, ns (0 if none)"),
        ("order_id", "<u4", "the id the order would have had"),
        ("reason", "<u2", "DenyReason"),
        ("side", "i1", "Side"),
        ("order_type", "u1", "OrderType"),
        ("price", "<f8", "requested price"),
        ("quantity", "<f8", "requested quantity"),
        ("limit", "<f8", "the limit value that was breached"),
    ],
)

heartbeat_dtype = _record(
    "heartbeat",
    [
        ("loop_iterations", "<u8", "engine loop iterations since start"),
        ("events_in", "<u8", "inbound records processed since start"),
        ("orders_out", "<u4", "orders and cancels written since start"),
        ("denials", "<u4", "risk denials since start"),
        ("fills", "<u4", "fills since start"),
        ("backpressure", "<u4", "outbound-ring full results since start"),
        ("trading_state", "u1", "TradingState"),
        ("wait_strategy", "u1", "engine wait strategy id"),
        ("cpu", "<i2", "CPU the engine runs on, -1 if not pinned"),
        ("max_loop_ns", "<u4", "longest loop iteration since the last heartbeat, ns"),
    ],
)

control_dtype = _record(
    "control",
    [
        ("command_id", "<u8", "unique id, echoed in the engine's acknowledgement log record"),
        ("command", "u1", "ControlCommand"),
        ("limit_id", "u1", "LimitId for SET_LIMIT, else 0"),
        ("_res", "<u2", "reserved"),
        ("issuer_id", "<u4", "who asked (id in the audit log)"),
        ("value", "<f8", "new limit value for SET_LIMIT"),
    ],
)

log_dtype = _record(
    "log",
    [
        ("code", "<u2", "LogCode: the message template"),
        ("level", "u1", "LogLevel"),
        ("_res", "u1", "reserved"),
        ("_res2", "<u4", "reserved"),
        ("a0", "<f8", "float argument 0"),
        ("a1", "<f8", "float argument 1"),
        ("i0", "<i8", "integer argument 0"),
        ("i1", "<i8", "integer argument 1"),
    ],
)

# --------------------------------------------------------------------------- containers

#: Start of every shared-memory ring segment (a file in /dev/shm). Producer-owned and
#: consumer-owned fields sit on separate 128-byte blocks so that neither side's writes
#: invalidate the other's cache lines (x86 prefetches lines in adjacent pairs).
SEGMENT_MAGIC = b"QSIDERNG"
SEGMENT_LAYOUT_VERSION = 1
SEGMENT_HEADER_SIZE = 512
_SEGMENT_FIELDS = [
    # static block, written once by the creator
    ("magic", "S8", 0),
    ("layout_version", "<u4", 8),
    ("ring_type", "<u4", 12),
    ("capacity", "<i8", 16),
    ("record_size", "<u4", 24),
    ("header_size", "<u4", 28),
    ("ts_created", "<i8", 32),
    ("creator_pid", "<i8", 40),
    # producer block
    ("producer_position", "<i8", 128),
    ("producer_intent", "<i8", 136),
    ("producer_heartbeat", "<i8", 144),
    ("backpressure", "<i8", 152),
    ("producer_closed", "<i8", 160),
    ("cached_consumer_position", "<i8", 168),
    ("records_offered", "<i8", 176),
    # consumer block (command rings)
    ("consumer_position", "<i8", 256),
    ("consumer_heartbeat", "<i8", 264),
    ("consumer_pid", "<i8", 272),
]
segment_header_dtype = np.dtype(
    {
        "names": [f[0] for f in _SEGMENT_FIELDS],
        "formats": [f[1] for f in _SEGMENT_FIELDS],
        "offsets": [f[2] for f in _SEGMENT_FIELDS],
        "itemsize": SEGMENT_HEADER_SIZE,
    }
)
_DOCS["segment_header"] = {
    "magic": 'the 8 ASCII bytes "QSIDERNG"',
    "layout_version": "segment layout version; readers refuse others",
    "ring_type": "1 = feed (broadcast, one producer, many readers), 2 = command (SPSC)",
    "capacity": "slots, a power of two",
    "record_size": "bytes per slot (64)",
    "header_size": "bytes before slot 0 (512)",
    "ts_created": "creation time, ns",
    "creator_pid": "pid of the process that created the segment",
    "producer_position": "records published (release-stored after the records are written)",
    "producer_intent": "feed: end of the records being written (stored before writing them)",
    "producer_heartbeat": "producer's last sign of life, ns",
    "backpressure": "command rings: times the producer found the ring full",
    "producer_closed": "1 once the producer has closed the stream cleanly",
    "cached_consumer_position": "command rings: producer's private copy of consumer_position",
    "records_offered": "records the producer tried to publish (published + refused when full)",
    "consumer_position": "command rings: records consumed (release-stored after reading them)",
    "consumer_heartbeat": "command rings: consumer's last sign of life, ns",
    "consumer_pid": "command rings: pid of the attached consumer, 0 if none",
}

#: Header of every UDP datagram the relay sends; ``count`` records of RECORD_SIZE follow.
DATAGRAM_MAGIC = 0x51534431  # "QSD1" read as a little-endian uint32
DATAGRAM_VERSION = 1
DATAGRAM_HEADER_SIZE = 32
datagram_header_dtype = np.dtype(
    {
        "names": ["magic", "version", "record_size", "count", "stream_id", "_res", "first_seq", "ts_sent"],
        "formats": ["<u4", "u1", "u1", "<u2", "<u4", "<u4", "<u8", "<i8"],
        "offsets": [0, 4, 5, 6, 8, 12, 16, 24],
        "itemsize": DATAGRAM_HEADER_SIZE,
    }
)
_DOCS["datagram_header"] = {
    "magic": "0x51534431 (bytes `1DSQ` on the wire)",
    "version": "datagram format version",
    "record_size": "bytes per record (64)",
    "count": "records in this datagram, 1 to 1023 (65,507-byte UDP payload limit)",
    "_res": "reserved, zero",
    "stream_id": "sender's stream (one per feed ring and relay)",
    "first_seq": "`seq` of the first record (its feed position); the records are consecutive",
    "ts_sent": "when the relay sent it, ns",
}

#: Start of every recorded feed file (``*.qsf``): this 64-byte header, then raw records.
FILE_MAGIC = b"QSRECORD"
FILE_VERSION = 1
FILE_HEADER_SIZE = 64
file_header_dtype = np.dtype(
    {
        "names": ["magic", "file_version", "record_size", "header_size", "ts_created", "source"],
        "formats": ["S8", "<u4", "<u4", "<u4", "<i8", "S32"],
        "offsets": [0, 8, 12, 16, 24, 32],
        "itemsize": FILE_HEADER_SIZE,
    }
)
_DOCS["file_header"] = {
    "magic": 'the 8 ASCII bytes "QSRECORD"',
    "file_version": "recording format version; readers refuse others",
    "record_size": "bytes per record (64)",
    "header_size": "bytes before the first record (64)",
    "ts_created": "when the file was started, ns",
    "source": "ASCII name of the writer (e.g. `recorder`, `replay`), NUL-padded",
}

DTYPES: dict[int, np.dtype] = {
    RecordKind.QUOTE: quote_dtype,
    RecordKind.TRADE: trade_dtype,
    RecordKind.BOOK: book_dtype,
    RecordKind.ORDER: order_dtype,
    RecordKind.CANCEL: cancel_dtype,
    RecordKind.ORDER_STATUS: order_status_dtype,
    RecordKind.FILL: fill_dtype,
    RecordKind.POSITION: position_dtype,
    RecordKind.DENIAL: denial_dtype,
    RecordKind.HEARTBEAT: heartbeat_dtype,
    RecordKind.CONTROL: control_dtype,
    RecordKind.LOG: log_dtype,
}

#: The newest version of each kind that this build reads and writes.
VERSIONS: dict[int, int] = {kind: FORMAT_VERSION for kind in DTYPES}


class WireFormatError(ValueError):
    """A record (or a batch of them) does not follow this wire format."""


def dtype_for(kind: int) -> np.dtype:
    """The dtype of record kind ``kind``; :class:`WireFormatError` if unknown."""
    try:
        return DTYPES[int(kind)]
    except KeyError:
        raise WireFormatError(f"unknown record kind {int(kind)}") from None


def _version_table() -> np.ndarray:
    table = np.zeros((256, 256), dtype=bool)  # [kind, version] -> understood
    for kind, newest in VERSIONS.items():
        table[kind, 1 : newest + 1] = True
    return table


_UNDERSTOOD = _version_table()


def validate(records: np.ndarray) -> np.ndarray:
    """A boolean mask of the records whose kind and version this build understands.

    ``records`` is any array of 64-byte records (``record_dtype`` or a kind's dtype). Use it at
    trust boundaries (UDP, files, foreign feeds) to count and drop what is not ours.
    """
    if records.dtype.itemsize != RECORD_SIZE:
        raise WireFormatError(f"records are {records.dtype.itemsize} bytes, expected {RECORD_SIZE}")
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(-1, RECORD_SIZE)
    return _UNDERSTOOD[raw[:, 0], raw[:, 1]]


# --------------------------------------------------------------------------- documentation

_DOC_ORDER = [
    ("record", record_dtype, None),
    ("quote", quote_dtype, RecordKind.QUOTE),
    ("trade", trade_dtype, RecordKind.TRADE),
    ("book", book_dtype, RecordKind.BOOK),
    ("order", order_dtype, RecordKind.ORDER),
    ("cancel", cancel_dtype, RecordKind.CANCEL),
    ("order_status", order_status_dtype, RecordKind.ORDER_STATUS),
    ("fill", fill_dtype, RecordKind.FILL),
    ("position", position_dtype, RecordKind.POSITION),
    ("denial", denial_dtype, RecordKind.DENIAL),
    ("heartbeat", heartbeat_dtype, RecordKind.HEARTBEAT),
    ("control", control_dtype, RecordKind.CONTROL),
    ("log", log_dtype, RecordKind.LOG),
]

_TYPE_NAMES = {"u1": "uint8", "i1": "int8", "u2": "uint16", "i2": "int16", "u4": "uint32"}
_TYPE_NAMES |= {"i4": "int32", "u8": "uint64", "i8": "int64", "f8": "float64"}


def _type_name(dt: np.dtype) -> str:
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return f"{_TYPE_NAMES[f'{base.kind}{base.itemsize}']}[{shape[0]}]"
    return _TYPE_NAMES[f"{dt.kind}{dt.itemsize}"]


def _enum_table(title: str, enum: NamedTuple) -> list[str]:
    lines = [f"**{title}**: " + ", ".join(f"`{n}` = {v}" for n, v in zip(enum._fields, enum, strict=True))]
    return [*lines, ""]


def markdown() -> str:
    """The byte layout of every record, as ``docs/wire-format.md`` shows it."""
    out = [
        "# Wire format",
        "",
        "<!-- Generated by `python -m quayside.core.wire`; tests/test_wire.py fails if this",
        "     file and core/wire.py disagree. Edit the dtypes, then regenerate. -->",
        "",
        f"Every record is {RECORD_SIZE} bytes (one cache line), little-endian, and begins with the",
        f"same {HEADER_SIZE}-byte header. The same bytes are used on the shared-memory rings, in UDP",
        "datagrams (after the datagram header, see `docs/architecture.md`) and in recorded files.",
        f"Format version: {FORMAT_VERSION}. Timestamps (`ts_*`) are int64 nanoseconds since the",
        "Unix epoch; `dt_*_ns` are stage durations in nanoseconds. Prices and quantities are",
        "IEEE-754 doubles. Fields named `_res` and padding are reserved and written as zero.",
        "",
    ]
    for name, dt, kind in _DOC_ORDER:
        heading = f"## `{name}`" + (f" — kind {kind}" if kind is not None else " — any kind")
        note = [f"The header (bytes 0 to {HEADER_SIZE - 1}) as under `record`, then:", ""] if kind else []
        out += [heading, "", *note, "| offset | size | field | type | meaning |", "|---:|---:|---|---|---|"]
        end = 0
        for fname in dt.names:
            fdt, off = dt.fields[fname][:2]
            end = max(end, off + fdt.itemsize)
            if kind is not None and off < HEADER_SIZE:
                continue  # the common header is shown once, under `record`
            doc = _DOCS[name][fname]
            out.append(f"| {off} | {fdt.itemsize} | `{fname}` | {_type_name(fdt)} | {doc} |")
        if end < RECORD_SIZE:
            out.append(f"| {end} | {RECORD_SIZE - end} | — | padding | reserved, zero |")
        out.append("")
    out += [
        "## Containers",
        "",
        "Records travel in three containers. A shared-memory ring is a file in `/dev/shm`: a",
        f"{SEGMENT_HEADER_SIZE}-byte segment header, then `capacity` slots of `record_size` bytes; the",
        "record at position `p` is in slot `p % capacity`. A UDP datagram is a",
        f"{DATAGRAM_HEADER_SIZE}-byte datagram header followed by `count` records. A recorded feed file",
        f"(`*.qsf`) is a {FILE_HEADER_SIZE}-byte file header followed by records, appended in feed order.",
        "",
    ]
    containers = [
        ("segment_header", segment_header_dtype),
        ("datagram_header", datagram_header_dtype),
        ("file_header", file_header_dtype),
    ]
    for name, dt in containers:
        out += [f"### `{name}`", "", "| offset | size | field | type | meaning |", "|---:|---:|---|---|---|"]
        for fname in dt.names:
            fdt, off = dt.fields[fname][:2]
            tname = f"{fdt.itemsize} ASCII bytes" if fdt.kind == "S" else _type_name(fdt)
            out.append(f"| {off} | {fdt.itemsize} | `{fname}` | {tname} | {_DOCS[name][fname]} |")
        out.append("")
    out += ["## Enumerations", ""]
    for title, enum in [
        ("RecordKind", RecordKind),
        ("Side", Side),
        ("OrderType", OrderType),
        ("TimeInForce", TimeInForce),
        ("OrderStatus", OrderStatus),
        ("BookAction", BookAction),
        ("Flag (bits)", Flag),
        ("DenyReason", DenyReason),
        ("ControlCommand", ControlCommand),
        ("LimitId", LimitId),
        ("TradingState", TradingState),
        ("PositionOrigin", PositionOrigin),
        ("LogLevel", LogLevel),
        ("LogCode", LogCode),
    ]:
        out += _enum_table(title, enum)
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
