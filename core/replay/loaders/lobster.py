"""LOBSTER message + orderbook files (NASDAQ TotalView-ITCH, reconstructed by LOBSTER).

Input: a zip holding ``<SYM>_<YYYY-MM-DD>_<start>_<end>_message_<L>.csv`` and the matching
``..._orderbook_<L>.csv``, or the message CSV's path (the orderbook file beside it, or given).
Message columns: time (seconds after midnight, US/Eastern, on the date in the file name), type,
order id, size, price (USD x 10,000), direction (1 buy order, -1 sell order). Orderbook row k
is the book after message k: ``ask_price_i, ask_size_i, bid_price_i, bid_size_i`` per level;
empty levels hold +-9999999999 with size 0.

Records, per message in file order (all at the message's time; ``ts_recv = ts_event``):

- type 1 (new order) -> BOOK ADD: order id, price, size, side = direction;
- type 2 (partial cancel) -> BOOK MODIFY, type 4 (visible execution) -> BOOK EXECUTE, both with
  ``size`` = the order's remaining size afterwards. It is known when the order's add is in the
  file; for an order added before the file starts (or outside its L levels) it is worked back
  from a later full delete, else NaN (counted in ``extra["unknown_remaining"]``);
- type 3 (delete) -> BOOK DELETE, size 0;
- types 4, 5 (hidden execution) and 6 (cross/auction trade) -> TRADE: price, size = shares
  executed, ``trade_id`` 0 (LOBSTER has none), aggressor = the opposite of the resting order's
  direction (0 for type 6); hidden executions have no BOOK record;
- type 7 (trading halt / quoting / resume) -> no record; counted in ``extra["halts"]``;
- then a QUOTE from the orderbook row's level 1 whenever it differs from the previous row's
  (always for the first row); an empty level gives a NaN price and size 0.

Times must not go backwards, and both files must have the same number of rows.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from quayside.core.replay.loaders.base import (
    DataFormatError,
    ErrorLog,
    Instruments,
    LoadedData,
    OnError,
    Part,
    Rows,
    new_records,
    read_text,
    resolve_instruments,
    result,
)
from quayside.core.wire import BookAction, RecordKind

__all__ = ["load_lobster", "LOBSTER_NAME"]

LOBSTER_NAME = re.compile(
    r"(?P<symbol>[^_/\\]+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_(?P<what>message|orderbook)_(?P<levels>\d+)\.csv$"
)
PRICE_SCALE = 10_000
EMPTY_ASK, EMPTY_BID = 9_999_999_999, -9_999_999_999
_MESSAGE = ["time", "type", "order_id", "size", "price", "direction"]
_BOOK = ["ask_price_1", "ask_size_1", "bid_price_1", "bid_size_1"]


def _members(path: Path) -> tuple[str, str]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    found = {}
    for what in ("message", "orderbook"):
        hits = [n for n in names if (m := LOBSTER_NAME.search(n)) and m["what"] == what]
        if len(hits) != 1:
            raise DataFormatError(
                path,
                f"expected exactly one LOBSTER {what} file (<SYM>_<date>_<start>_<end>_{what}_<L>.csv) in the zip",
                field="members",
                value=names,
            )
        found[what] = hits[0]
    return found["message"], found["orderbook"]


def load_lobster(
    path: str | Path,
    orderbook_path: str | Path | None = None,
    *,
    symbol: str | None = None,
    date: str | None = None,
    tz: str = "America/New_York",
    quotes: bool = True,
    instruments: Instruments = None,
    on_error: OnError = "raise",
) -> LoadedData:
    """BOOK, TRADE and QUOTE records from a LOBSTER pair (see the module docstring).

    ``symbol`` and ``date`` (YYYY-MM-DD) default to those in the file names; ``tz`` is the zone
    of the times of day; ``quotes=False`` leaves out the level-1 QUOTE records.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        msg_member, book_member = _members(path)
        mlog, blog = ErrorLog(f"{path}:{msg_member}", on_error), ErrorLog(f"{path}:{book_member}", on_error)
        msg_text, book_text = read_text(path, mlog, msg_member), read_text(path, blog, book_member)
        name, sources = msg_member, [path]
    else:
        if orderbook_path is None:
            orderbook_path = path.with_name(path.name.replace("_message_", "_orderbook_"))
            if orderbook_path == path:
                raise DataFormatError(path, "not a LOBSTER message file name; pass orderbook_path", field="name")
        orderbook_path = Path(orderbook_path)
        mlog, blog = ErrorLog(path, on_error), ErrorLog(orderbook_path, on_error)
        msg_text, book_text = read_text(path, mlog), read_text(orderbook_path, blog)
        name, sources = path.name, [path, orderbook_path]
    msg_src, book_src = mlog.path, blog.path
    m = LOBSTER_NAME.search(name)
    symbol = symbol or (m and m["symbol"])
    date = date or (m and m["date"])
    if not symbol or not date:
        raise DataFormatError(msg_src, "no symbol and date in the file name; pass symbol= and date=", field="name")
    levels = int(m["levels"]) if m else None

    msg = Rows(mlog, msg_text, _MESSAGE, first_line=1, types=dict.fromkeys(_MESSAGE, int) | {"time": float})
    if levels is None:
        levels = (book_text.partition("\n")[0].count(",") + 1) // 4
    book = Rows(blog, book_text, _BOOK, first_line=1, total_fields=4 * (levels or 1), types=dict.fromkeys(_BOOK, int))

    seconds = msg.floats("time", nonnegative=True)
    kind = msg.ints("type")
    msg.flag(~np.isin(kind, [1, 2, 3, 4, 5, 6, 7]), "type", msg.columns["type"], "not a LOBSTER event type (1-7)")
    order_id = msg.ints("order_id", nonnegative=True)
    size = msg.ints("size", nonnegative=True)
    price = msg.ints("price")
    direction = msg.ints("direction")
    msg.flag(~np.isin(direction, [1, -1]), "direction", msg.columns["direction"], "not 1 or -1")
    msg.flag((price <= 0) & (kind != 7), "price", msg.columns["price"], "not a positive price")
    ns_of_day = np.rint(np.where(np.isfinite(seconds), seconds, 0.0) * 1e9).astype(np.int64)
    msg.non_decreasing(ns_of_day, "time")
    top = np.stack([book.ints(n) for n in _BOOK], axis=1) if len(book) else np.zeros((0, 4), np.int64)
    book.check()
    if len(book) != len(msg):
        line = min(len(book), len(msg)) + 1
        raise DataFormatError(
            book_src if len(book) < len(msg) else msg_src,
            f"the message file has {len(msg)} rows and the orderbook file {len(book)}; they must pair up",
            line=line,
            field="row",
        )
    keep_m, keep_b = msg.keep(), book.keep()
    keep = keep_m & keep_b
    # a row dropped from one file is dropped from the other: count it once
    mlog.skipped -= int((~keep_m & ~keep_b).sum())
    line = msg.line[keep]
    seconds, kind, order_id, size, price, direction, top = (
        a[keep] for a in (seconds, kind, order_id, size, price, direction, top)
    )
    ts = _utc_ns(date, ns_of_day[keep], tz, msg_src, line)

    registry, (iid,) = resolve_instruments(
        [dict(symbol=symbol, sec_type="STK", exchange="SMART", primary_exchange="NASDAQ", currency="USD")],
        instruments,
        path,
    )
    parts, extra = [], {"date": date, "levels": levels, "message_types": {}}
    for t in range(1, 8):
        extra["message_types"][t] = int(np.sum(kind == t))
    extra["halts"] = extra["message_types"][7]

    remaining, unknown = _remaining(kind, order_id, size)
    extra["unknown_remaining"] = unknown
    is_book = np.isin(kind, [1, 2, 3, 4])
    action_of = np.zeros(8, dtype=np.uint8)
    action_of[[1, 2, 3, 4]] = [BookAction.ADD, BookAction.MODIFY, BookAction.DELETE, BookAction.EXECUTE]
    b = new_records(RecordKind.BOOK, int(is_book.sum()), instrument_id=iid, ts_event=ts[is_book])
    b["price"] = price[is_book] / PRICE_SCALE
    b["size"] = np.where(kind[is_book] == 1, size[is_book], np.where(kind[is_book] == 3, 0.0, remaining[is_book]))
    b["order_id"] = order_id[is_book]
    b["side"] = direction[is_book]
    b["action"] = action_of[kind[is_book]]
    parts.append(Part(b, line[is_book]))

    is_trade = np.isin(kind, [4, 5, 6])
    t = new_records(RecordKind.TRADE, int(is_trade.sum()), instrument_id=iid, ts_event=ts[is_trade])
    t["price"] = price[is_trade] / PRICE_SCALE
    t["size"] = size[is_trade]
    t["aggressor"] = np.where(kind[is_trade] == 6, 0, -direction[is_trade])
    parts.append(Part(t, line[is_trade]))

    if quotes and len(top):
        changed = np.ones(len(top), dtype=bool)
        changed[1:] = np.any(top[1:] != top[:-1], axis=1)
        q_top = top[changed]
        q = new_records(RecordKind.QUOTE, len(q_top), instrument_id=iid, ts_event=ts[changed])
        q["ask_price"] = np.where(q_top[:, 0] >= EMPTY_ASK, np.nan, q_top[:, 0] / PRICE_SCALE)
        q["ask_size"] = q_top[:, 1]
        q["bid_price"] = np.where(q_top[:, 2] <= EMPTY_BID, np.nan, q_top[:, 2] / PRICE_SCALE)
        q["bid_size"] = q_top[:, 3]
        parts.append(Part(q, line[changed]))
    log = ErrorLog(path, on_error)
    log.skipped = mlog.skipped + blog.skipped
    log.examples = sorted(mlog.examples + blog.examples)
    log.notes = {**mlog.notes, **blog.notes}
    return result("lobster", sources, registry, len(msg), parts, log, extra=extra)


def _utc_ns(date: str, ns_of_day: np.ndarray, tz: str, src: str, line: np.ndarray) -> np.ndarray:
    """Wall-clock ns after midnight of ``date`` in ``tz`` -> ns since the epoch, UTC."""
    try:
        midnight = np.datetime64(date, "ns")
    except ValueError:
        raise DataFormatError(src, "not a date (YYYY-MM-DD)", field="date", value=date) from None
    wall = pd.DatetimeIndex(midnight + ns_of_day.astype("m8[ns]"))
    local = wall.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    bad = np.asarray(local.isna())
    if bad.any():
        i = int(np.argmax(bad))
        problem = f"not a valid time of day in {tz}"
        raise DataFormatError(src, problem, line=int(line[i]), field="time", value=str(wall[i]))
    return local.as_unit("ns").asi8.copy()


def _remaining(kind: np.ndarray, order_id: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, int]:
    """The remaining size of the order after each message (NaN where it cannot be known)."""
    remaining = np.full(len(kind), np.nan)
    sel = np.flatnonzero(np.isin(kind, [1, 2, 3, 4]))
    if not len(sel):
        return remaining, 0
    o = sel[np.argsort(order_id[sel], kind="stable")]
    ids, k = order_id[o], kind[o]
    delta = np.where(k == 1, size[o], -size[o]).astype(np.float64)
    start = np.ones(len(o), dtype=bool)
    start[1:] = ids[1:] != ids[:-1]
    group = np.cumsum(start) - 1
    cum = np.cumsum(delta)
    first = np.flatnonzero(start)
    before = np.concatenate([[0.0], cum[:-1]])[first]  # cumulative sum before each group
    within = cum - before[group]
    last = np.append(first[1:], len(o)) - 1
    has_add = np.zeros(len(first), dtype=bool)
    np.logical_or.at(has_add, group, k == 1)
    initial = np.where(has_add, 0.0, np.where(k[last] == 3, -within[last], np.nan))
    remaining[o] = initial[group] + within
    return remaining, int(np.isnan(remaining[sel]).sum())
