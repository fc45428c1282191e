"""The TWS API socket protocol as the simulated gateway speaks it: framing, fields, message ids.

Every message is a 4-byte big-endian length followed by that many bytes: the message's fields,
each terminated by a NUL byte. A connection opens with the client sending ``API\\0`` and then
one framed field, the range of protocol versions it speaks (``v157..176``, optionally followed by
a space and connect options). The server answers with one framed message of exactly two fields
and no message id: the server version and the connection time. From then on every message
starts with its message id; many carry a message version as their second field.

The simulated gateway implements exactly one server version, :data:`SERVER_VERSION`, and lays
out every message as ib_insync 0.9.86 decodes it for that version. A client whose range does not
include it is refused.
"""

from __future__ import annotations

import math
import re
import struct
from typing import NamedTuple

__all__ = [
    "SERVER_VERSION",
    "MAX_FRAME",
    "UNSET_DOUBLE",
    "UNSET_INTEGER",
    "In",
    "Out",
    "REQ_ID_INDEX",
    "ProtocolError",
    "FrameDecoder",
    "encode",
    "fmt",
    "parse_version_range",
    "to_int",
    "to_float",
    "to_bool",
]

#: The one protocol version this server implements (the newest ib_insync 0.9.86 asks for;
#: IB Gateway 10.19 and later also settle on it with this client).
SERVER_VERSION = 176
#: A frame larger than this is a protocol error (IB's own limit is 16 MiB).
MAX_FRAME = 16 * 1024 * 1024
#: IB's "no value" markers (Java's Double.MAX_VALUE and Integer.MAX_VALUE).
UNSET_DOUBLE = 1.7976931348623157e308
UNSET_INTEGER = 2**31 - 1

_LENGTH = struct.Struct(">I")


class _In(NamedTuple):
    """Message ids of requests (client to server)."""

    REQ_MKT_DATA: int = 1
    CANCEL_MKT_DATA: int = 2
    PLACE_ORDER: int = 3
    CANCEL_ORDER: int = 4
    REQ_OPEN_ORDERS: int = 5
    REQ_ACCOUNT_UPDATES: int = 6
    REQ_EXECUTIONS: int = 7
    REQ_IDS: int = 8
    REQ_CONTRACT_DETAILS: int = 9
    REQ_MKT_DEPTH: int = 10
    REQ_AUTO_OPEN_ORDERS: int = 15
    REQ_ALL_OPEN_ORDERS: int = 16
    REQ_MANAGED_ACCOUNTS: int = 17
    REQ_HISTORICAL_DATA: int = 20
    REQ_CURRENT_TIME: int = 49
    REQ_REAL_TIME_BARS: int = 50
    REQ_GLOBAL_CANCEL: int = 58
    REQ_MARKET_DATA_TYPE: int = 59
    REQ_POSITIONS: int = 61
    REQ_ACCOUNT_SUMMARY: int = 62
    CANCEL_ACCOUNT_SUMMARY: int = 63
    CANCEL_POSITIONS: int = 64
    START_API: int = 71
    REQ_ACCOUNT_UPDATES_MULTI: int = 76
    CANCEL_ACCOUNT_UPDATES_MULTI: int = 77
    REQ_TICK_BY_TICK_DATA: int = 97
    CANCEL_TICK_BY_TICK_DATA: int = 98
    REQ_COMPLETED_ORDERS: int = 99


In = _In()


class _Out(NamedTuple):
    """Message ids of answers and events (server to client)."""

    TICK_PRICE: int = 1
    TICK_SIZE: int = 2
    ORDER_STATUS: int = 3
    ERROR: int = 4
    OPEN_ORDER: int = 5
    ACCOUNT_VALUE: int = 6
    PORTFOLIO_VALUE: int = 7
    ACCOUNT_UPDATE_TIME: int = 8
    NEXT_VALID_ID: int = 9
    CONTRACT_DETAILS: int = 10
    EXECUTION_DATA: int = 11
    MANAGED_ACCOUNTS: int = 15
    CURRENT_TIME: int = 49
    CONTRACT_DETAILS_END: int = 52
    OPEN_ORDER_END: int = 53
    ACCOUNT_DOWNLOAD_END: int = 54
    EXECUTION_DATA_END: int = 55
    TICK_SNAPSHOT_END: int = 57
    MARKET_DATA_TYPE: int = 58
    COMMISSION_REPORT: int = 59
    POSITION: int = 61
    POSITION_END: int = 62
    ACCOUNT_SUMMARY: int = 63
    ACCOUNT_SUMMARY_END: int = 64
    ACCOUNT_UPDATE_MULTI: int = 73
    ACCOUNT_UPDATE_MULTI_END: int = 74
    TICK_REQ_PARAMS: int = 81
    TICK_BY_TICK: int = 99
    COMPLETED_ORDER: int = 101
    COMPLETED_ORDERS_END: int = 102


Out = _Out()

#: For requests that carry a request (or order) id: the index of that field. Used to answer
#: requests the simulator does not implement, and injected pacing errors, with the right id.
REQ_ID_INDEX: dict[int, int] = {
    1: 2,  # reqMktData
    2: 2,  # cancelMktData
    3: 1,  # placeOrder (order id)
    4: 2,  # cancelOrder (order id)
    7: 2,  # reqExecutions
    9: 2,  # reqContractDetails
    10: 2,  # reqMktDepth
    11: 2,  # cancelMktDepth
    20: 1,  # reqHistoricalData
    21: 2,  # exerciseOptions
    22: 1,  # reqScannerSubscription
    25: 2,  # cancelHistoricalData
    50: 2,  # reqRealTimeBars
    52: 2,  # reqFundamentalData
    54: 2,  # calculateImpliedVolatility
    55: 2,  # calculateOptionPrice
    62: 2,  # reqAccountSummary
    74: 2,  # reqPositionsMulti
    76: 2,  # reqAccountUpdatesMulti
    78: 1,  # reqSecDefOptParams
    79: 1,  # reqSoftDollarTiers
    81: 1,  # reqMatchingSymbols
    83: 1,  # reqSmartComponents
    84: 1,  # reqNewsArticle
    86: 1,  # reqHistoricalNews
    87: 1,  # reqHeadTimeStamp
    88: 1,  # reqHistogramData
    92: 1,  # reqPnL
    94: 1,  # reqPnLSingle
    96: 1,  # reqHistoricalTicks
    97: 1,  # reqTickByTickData
    98: 1,  # cancelTickByTickData
    100: 1,  # reqWshMetaData
    102: 1,  # reqWshEventData
    104: 1,  # reqUserInfo
}


class ProtocolError(ValueError):
    """The peer broke the framing or the handshake; the connection cannot continue."""


# --------------------------------------------------------------------------- fields


def fmt(value) -> str:
    """One field as text: ``None`` is empty, booleans are ``1``/``0``, floats the shortest
    repr that reads back to the same double (``UNSET_DOUBLE`` and infinities as IB writes them)."""
    if value is None:
        return ""
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float):
        if value == UNSET_DOUBLE:
            return "1.7976931348623157E308"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def encode(fields) -> bytes:
    """One framed message: length prefix, then each field NUL-terminated."""
    body = "".join(fmt(f) + "\0" for f in fields).encode()
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into messages (lists of field strings)."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[list[str]]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (size,) = _LENGTH.unpack_from(self._buf)
            if size > self._max:
                raise ProtocolError(f"frame of {size} bytes is larger than the limit of {self._max}")
            if len(self._buf) < 4 + size:
                break
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            text = body.decode("utf-8", errors="replace")
            fields = text.split("\0")
            if fields and fields[-1] == "":
                fields.pop()
            out.append(fields)
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


_VERSIONS = re.compile(r"^v(\d+)(?:\.\.(\d+))?(?:\s+(.*))?$")


def parse_version_range(text: str) -> tuple[int, int, str]:
    """``"v157..176 +PACEAPI"`` -> ``(157, 176, "+PACEAPI")``."""
    m = _VERSIONS.match(text.strip())
    if not m:
        raise ProtocolError(f"expected a version range like 'v157..176' after 'API', got {text[:40]!r}")
    low = int(m.group(1))
    high = int(m.group(2) or low)
    return low, high, m.group(3) or ""


def to_int(text: str, default: int = 0) -> int:
    """An integer field; empty is ``default``. Accepts ``"3.0"`` as 3."""
    if text == "" or text is None:
        return default
    try:
        return int(text)
    except ValueError:
        return int(float(text))


def to_float(text: str, default: float = UNSET_DOUBLE) -> float:
    """A double field; empty is ``default``; ``Infinite`` is how ib_insync writes infinity."""
    if text == "" or text is None:
        return default
    if text in ("Infinite", "Infinity"):
        return math.inf
    return float(text)


def to_bool(text: str) -> bool:
    return text not in ("", "0", "false", "False")
