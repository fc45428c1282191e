"""The engine's compact LOG and DENIAL records as structured events: one JSON object per line.

A LOG record carries a template id and four arguments (``wire.LOG_TEMPLATES``); a DENIAL
record a reason code and the order that was refused. :func:`events_of` turns them into plain
dicts with a stable schema, ready for Loki or Elastic::

    {"ts": "2024-08-08T13:30:00.000123456Z", "ts_event": 1723123800000123456, "seq": 42,
     "level": "WARNING", "kind": "log", "event": "STATE_CHANGED",
     "message": "trading state 1 -> 3", "instrument": "EURUSD", "instrument_id": 1,
     "strategy_id": 0, "source": "engine", "args": {"i0": 1, "i1": 3, "a0": 0.0, "a1": 0.0}}

    {..., "level": "WARNING", "kind": "denial", "event": "DENIAL", "reason": "PRICE_COLLAR",
     "message": "order 17 denied (PRICE_COLLAR): BUY 100 @ 1.2 LIMIT, limit 0.5",
     "order_id": 17, "side": "BUY", "order_type": "LIMIT", "price": 1.2, "qty": 100.0, "limit": 0.5}

Not-a-number floats become ``null`` (JSON has no NaN). Unknown codes and enum values are
named ``UNKNOWN(n)``, never an error.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from quayside.core.wire import (
    LOG_TEMPLATES,
    DenyReason,
    LogCode,
    LogLevel,
    OrderType,
    RecordKind,
    Side,
    denial_dtype,
    enum_name,
    log_dtype,
)
from quayside.support.common.rebuild import SUPPORT_LOG_TEMPLATES

__all__ = ["iso_ns", "events_of", "event_lines"]

_LEVELS = {v: n for n, v in zip(LogLevel._fields, LogLevel, strict=True)}
_CODES = {v: n for n, v in zip(LogCode._fields, LogCode, strict=True)}
_REASONS = {v: n for n, v in zip(DenyReason._fields, DenyReason, strict=True)}
_SIDES = {v: n for n, v in zip(Side._fields, Side, strict=True)}
_ORDER_TYPES = {v: n for n, v in zip(OrderType._fields, OrderType, strict=True)}


_last_second: list = [None, ""]  # the second formatted last, and its text: events come in bursts


def iso_ns(ts: int) -> str:
    """RFC 3339 UTC with nanoseconds, e.g. ``2024-08-08T13:30:00.000123456Z``."""
    seconds, ns = divmod(int(ts), 1_000_000_000)
    if seconds != _last_second[0]:
        _last_second[:] = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_last_second[1]}.{ns:09d}Z"


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _level(v: int) -> str:
    return _LEVELS.get(v, f"UNKNOWN({v})")


def _format(template: str, args: dict) -> str:
    try:
        return template.format(**args)
    except (KeyError, IndexError, ValueError):
        return template


def _log_event(base: dict, code: int, level: int, args: dict) -> dict:
    if code in SUPPORT_LOG_TEMPLATES:
        name, template = SUPPORT_LOG_TEMPLATES[code]
        source = "recorder"
    else:
        name, template, source = _CODES.get(code, f"UNKNOWN({code})"), LOG_TEMPLATES.get(code), "engine"
    if template:
        message = _format(template, args)
    else:
        message = f"log code {code}: " + " ".join(f"{k}={v}" for k, v in args.items())
    args = {k: (_num(v) if isinstance(v, float) else v) for k, v in args.items()}
    base.update(level=_level(level), kind="log", event=name, message=message, source=source, args=args)
    return base


def _denial_event(base: dict, reason: int, order_id: int, side: int, order_type: int, price, qty, limit) -> dict:
    reason_name = _REASONS.get(reason, f"UNKNOWN({reason})")
    side_name = _SIDES.get(side) or enum_name(Side, side)
    type_name = _ORDER_TYPES.get(order_type) or enum_name(OrderType, order_type)
    message = f"order {order_id} denied ({reason_name}): {side_name} {qty:g} @ {price:g} {type_name}, limit {limit:g}"
    base.update(level="WARNING", kind="denial", event="DENIAL", message=message, source="engine")
    base.update(reason=reason_name, order_id=order_id, side=side_name, order_type=type_name)
    base.update(price=_num(price), qty=_num(qty), limit=_num(limit))
    return base


def events_of(records: np.ndarray, symbols: dict[int, str], limit: int | None = None) -> list[dict]:
    """The LOG and DENIAL records of ``records`` (``record_dtype``, feed order) as event dicts,
    at most ``limit`` of them. ``symbols`` maps instrument ids to symbols."""
    kinds = records["kind"]
    picked = np.flatnonzero((kinds == RecordKind.LOG) | (kinds == RecordKind.DENIAL))
    if limit is not None:
        picked = picked[:limit]
    if not len(picked):
        return []
    sub = records[picked]  # columns as Python lists: numpy scalars are slow one at a time
    logs, denials = sub.view(log_dtype), sub.view(denial_dtype)
    head = zip(
        sub["kind"].tolist(), sub["ts_event"].tolist(), sub["seq"].tolist(), sub["instrument_id"].tolist(),
        sub["strategy_id"].tolist(), strict=True,
    )  # fmt: skip
    log_cols = zip(*(logs[f].tolist() for f in ("code", "level", "i0", "i1", "a0", "a1")), strict=True)
    denial_cols = (denials[f].tolist() for f in ("reason", "order_id", "side", "order_type", "price", "quantity"))
    denial_rows = zip(*denial_cols, denials["limit"].tolist(), strict=True)
    out = []
    for (kind, ts, seq, iid, sid), (code, level, i0, i1, a0, a1), den in zip(head, log_cols, denial_rows, strict=True):
        base = {
            "ts": iso_ns(ts),
            "ts_event": ts,
            "seq": seq,
            "instrument": symbols.get(iid) if iid else None,
            "instrument_id": iid,
            "strategy_id": sid,
        }
        if kind == RecordKind.LOG:
            out.append(_log_event(base, code, level, {"i0": i0, "i1": i1, "a0": a0, "a1": a1}))
        else:
            out.append(_denial_event(base, *den))
    return out


def event_lines(events: list[dict]) -> str:
    """Events as JSON lines (each ends with a newline)."""
    return "".join(_encode(e) + "\n" for e in events)


_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
