"""Bitstamp order-level (L3) captures: the orders CSV (gzip or plain), its trades CSV and its
capture metadata, as ob-analytics records them.

Orders columns: ``id, timestamp, exchange_timestamp, price, volume, action, direction``
(times in epoch ms: ``timestamp`` local receive, ``exchange_timestamp`` Bitstamp's; ``volume``
is what is still open; ``action`` created/changed/deleted; ``direction`` bid/ask).
``exchange_timestamp`` must not go backwards. Each row becomes a BOOK record (order-level:
``order_id``, ``side``, ``level`` 0): created -> ADD (size = volume), changed -> MODIFY
(size = volume), deleted -> DELETE (size 0); ``ts_event`` = exchange time, ``ts_recv`` = local.

The price of a MODIFY or DELETE is the order's price when it was created
(``order_prices="created"``, the default): Bitstamp reports a fill's price on the "changed" row
and sometimes a different price on the delete, neither of which moves the resting order. Rows
whose price differs are counted in ``extra["row_price_differs"]``; ``order_prices="row"`` keeps
the row's own price.

The capture is not all live messages. Its first rows are a *synthetic snapshot* (the REST book
at the start): they get ``Flag.SNAPSHOT`` and are preceded by a BOOK CLEAR (side 0, NaN price)
carrying the same flag. Its last rows are *synthetic deletes* at the end time, added so that
every order ends; ``drop_synthetic_deletes=True`` leaves them out. How many rows are synthetic
comes from the capture's ``meta.json`` (``synthetic_created``, ``synthetic_deleted``) when found,
else from the file itself: the leading run of "created" rows sharing the first exchange time,
and the trailing run of "deleted" rows whose local and exchange times both equal the last
exchange time (``extra["synthetic_source"]`` says which). ``price_range=(low, high)`` leaves out
every row of an order created outside it (a few orders sit at 0 or 999,999,999). Everything
left out is counted in ``excluded``.

Trades columns: ``trade_id, timestamp, exchange_timestamp, price, amount, buy_order_id,
sell_order_id, side`` -> TRADE records (``trade_id``, size = amount, aggressor = side). The
order ids have no place in a TRADE record and are not kept.

``quotes=True`` adds QUOTE records from the reconstructed top of book (a price-level book per
side, built from the orders as their creation price and open volume say), one after each group
of rows with the same exchange time, when the best bid or ask (price or size) changed; their
``ts_recv`` is the local time of the group's last row. Far-off orders are part of that book
unless ``price_range`` leaves them out. Some snapshot orders are never deleted by a live message
(they were gone before the stream started) and would cross the book: with ``uncross=True`` (the
default) a book still crossed after a group loses the crossed level whose last update is older,
counted in ``extra["uncrossed_orders"]``; quotes still crossed are counted in
``extra["crossed_quotes"]``. This touches only the derived quotes, never the BOOK records.

The instrument is ``BTCUSD`` (or the metadata's ``pair``, or the ``bitstamp-<pair>-`` part of the
file name), CRYPTO on BITSTAMP in USD; tick and lot sizes are not in the data (Instrument
defaults: pass a registry for real ones). At equal exchange times the orders' records come
first, then the derived quote, then trades.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Literal

import numpy as np

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
from quayside.core.wire import BookAction, Flag, RecordKind, Side

__all__ = ["load_bitstamp", "load_bitstamp_trades", "ORDERS_HEADER", "TRADES_HEADER"]

ORDERS_HEADER = ["id", "timestamp", "exchange_timestamp", "price", "volume", "action", "direction"]
TRADES_HEADER = [
    "trade_id",
    "timestamp",
    "exchange_timestamp",
    "price",
    "amount",
    "buy_order_id",
    "sell_order_id",
    "side",
]
CREATED, CHANGED, DELETED = 1, 2, 3
_ACTIONS = {"created": CREATED, "changed": CHANGED, "deleted": DELETED}
_SIDES = {"bid": Side.BUY, "ask": Side.SELL}
_AGGRESSORS = {"buy": Side.BUY, "sell": Side.SELL}
_SPEC = dict(sec_type="CRYPTO", exchange="BITSTAMP", currency="USD")


def _header_rows(path: Path, log: ErrorLog, header: list[str], types: dict) -> Rows:
    text = read_text(path, log)
    first, _, body = text.partition("\n")
    names = [h.strip() for h in first.rstrip("\r").split(",")]
    if names != header:
        missing = [h for h in header if h not in names]
        raise DataFormatError(
            path,
            f"the header must be {','.join(header)}" + (f" (missing {', '.join(missing)})" if missing else ""),
            line=1,
            field=missing[0] if missing else "header",
            value=first.rstrip("\r"),
        )
    return Rows(log, body, header, first_line=2, types=types)


def _symbol(path: Path, meta: dict | None) -> str:
    """The pair from the capture metadata, else from a ``bitstamp-<pair>-...`` name, else BTCUSD."""
    if meta and isinstance(meta.get("pair"), str) and meta["pair"].isalnum():
        return meta["pair"].upper()
    parts = path.name.split("-")
    if len(parts) > 2 and parts[0] == "bitstamp" and parts[1].isalnum():
        return parts[1].upper()
    return "BTCUSD"


def _read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(Path(meta_path).read_text())
    except (OSError, ValueError) as exc:
        raise DataFormatError(meta_path, f"cannot read the capture metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise DataFormatError(meta_path, "the capture metadata is not a JSON object")
    return meta


def _sibling(path: Path, kind: str) -> Path | None:
    """The capture's trades or meta file beside an orders file, by the names ob-analytics and
    this repository's data folder use."""
    name = path.name
    if kind == "trades":
        candidates = [name.replace("-l3-orders-", "-trades-").replace(".csv.gz", ".csv"), "trades.csv"]
    else:
        stem = name.replace("-l3-orders-", "-").removesuffix(".gz").removesuffix(".csv")
        candidates = [stem + ".meta.json", "meta.json"]
    for c in candidates:
        p = path.with_name(c)
        if c != name and p.is_file():
            return p
    return None


def load_bitstamp(
    path: str | Path,
    trades_path: str | Path | Literal["auto"] | None = "auto",
    *,
    meta_path: str | Path | Literal["auto"] | None = "auto",
    symbol: str | None = None,
    instruments: Instruments = None,
    quotes: bool = False,
    uncross: bool = True,
    drop_synthetic_deletes: bool = False,
    price_range: tuple[float, float] | None = None,
    order_prices: Literal["created", "row"] = "created",
    on_error: OnError = "raise",
) -> LoadedData:
    """BOOK (and TRADE, QUOTE) records from a Bitstamp L3 capture (see the module docstring).

    ``trades_path`` and ``meta_path`` default to the files found beside the orders file
    (``"auto"``); None leaves them out.
    """
    path = Path(path)
    if order_prices not in ("created", "row"):
        raise ValueError(f"order_prices must be 'created' or 'row', not {order_prices!r}")
    trades_path = _sibling(path, "trades") if trades_path == "auto" else trades_path
    meta_path = _sibling(path, "meta") if meta_path == "auto" else meta_path
    log = ErrorLog(path, on_error)
    types = {"id": int, "timestamp": int, "exchange_timestamp": int, "price": float, "volume": float}
    rows = _header_rows(path, log, ORDERS_HEADER, types)
    oid = rows.ints("id", nonnegative=True)
    ts_recv = rows.epoch("timestamp", "ms")
    ts = rows.epoch("exchange_timestamp", "ms")
    price = rows.floats("price", nonnegative=True)
    volume = rows.floats("volume", nonnegative=True)
    action = rows.choice("action", _ACTIONS)
    side = rows.choice("direction", _SIDES)
    rows.non_decreasing(ts, "exchange_timestamp")
    keep = rows.keep()
    line = rows.line[keep]
    oid, ts_recv, ts, price, volume, action, side = (a[keep] for a in (oid, ts_recv, ts, price, volume, action, side))
    n = len(line)

    meta = _read_meta(meta_path) if meta_path is not None else None
    n_snap, n_tail, source = _synthetic(meta, meta_path, action, ts, ts_recv, path)
    excluded: dict[str, int] = {}
    extra: dict = {"synthetic_source": source, "synthetic_snapshot": n_snap, "synthetic_deletes": n_tail}
    extra["actions"] = {name: int(np.sum(action == code)) for name, code in _ACTIONS.items()}

    # each order's price at creation (the row's own for orders created before the capture)
    _, order_idx = np.unique(oid, return_inverse=True)
    created_price = np.full(order_idx.max() + 1 if n else 0, np.nan)
    is_created = action == CREATED
    created_price[order_idx[is_created][::-1]] = price[is_created][::-1]  # first creation wins
    book_price = np.where(np.isnan(created_price[order_idx]), price, created_price[order_idx])
    extra["row_price_differs"] = int(np.sum((book_price != price) & ~is_created))
    if order_prices == "created":
        price = book_price

    use = np.ones(n, dtype=bool)
    if drop_synthetic_deletes and n_tail:
        use[n - n_tail :] = False
        excluded["synthetic_deletes"] = n_tail
    if price_range is not None:
        low, high = price_range
        outside = (book_price < low) | (book_price > high)
        excluded["price_range"] = int(np.sum(outside & use))
        use &= ~outside

    spec = dict(_SPEC, symbol=symbol or _symbol(path, meta))
    registry, (iid,) = resolve_instruments([spec], instruments, path)
    sel = np.flatnonzero(use)
    b = new_records(RecordKind.BOOK, len(sel), instrument_id=iid, ts_event=ts[sel], ts_recv=ts_recv[sel])
    b["price"] = price[sel]
    b["size"] = np.where(action[sel] == DELETED, 0.0, volume[sel])
    b["order_id"] = oid[sel]
    b["side"] = side[sel]
    b["action"] = np.array([0, BookAction.ADD, BookAction.MODIFY, BookAction.DELETE], dtype=np.uint8)[action[sel]]
    b["flags"][sel < n_snap] = Flag.SNAPSHOT
    parts = [Part(b, line[sel])]
    if n_snap and use[:n_snap].any():
        first = int(np.argmax(use))
        clear = new_records(
            RecordKind.BOOK, 1, instrument_id=iid, ts_event=ts[first], ts_recv=ts_recv[first], flags=Flag.SNAPSHOT
        )
        clear["price"] = np.nan
        clear["action"] = BookAction.CLEAR
        parts.insert(0, Part(clear, line[first : first + 1]))
    if quotes:
        q, q_order, crossed, removed = _quotes(
            sel, order_idx, book_price, volume, action, side, ts, ts_recv, line, iid, uncross
        )
        parts.append(Part(q, q_order))
        extra["crossed_quotes"], extra["uncrossed_orders"] = crossed, removed
    sources, n_rows = [path], len(rows)
    if trades_path is not None:
        trades = load_bitstamp_trades(trades_path, symbol=spec["symbol"], instruments=registry, on_error=on_error)
        # after every orders row of the same exchange time
        parts.append(Part(trades.records, trades.records["seq"].astype(np.int64) + len(rows) + 2))
        sources.append(Path(trades_path))
        n_rows += trades.rows
        log.skipped += trades.skipped
        log.examples += [(10**12, e) for e in trades.errors]
        extra["trade_rows"] = trades.rows
    if meta_path is not None:
        sources.append(Path(meta_path))
    return result("bitstamp", sources, registry, n_rows, parts, log, excluded=excluded, extra=extra)


def _synthetic(meta, meta_path, action, ts, ts_recv, path) -> tuple[int, int, str]:
    """How many leading snapshot rows and trailing synthetic deletes the capture has."""
    n = len(action)
    if meta is not None:
        counts = []
        for key, want in (("synthetic_created", CREATED), ("synthetic_deleted", DELETED)):
            value = meta.get(key)
            if not isinstance(value, int) or not 0 <= value <= n:
                raise DataFormatError(meta_path, f"not a row count of {path.name}", field=key, value=value)
            rows = action[:value] if key == "synthetic_created" else action[n - value :]
            if value and not np.all(rows == want):
                problem = f"these {value} rows of {path.name} are not all {key[10:]}"
                raise DataFormatError(meta_path, problem, field=key, value=value)
            counts.append(value)
        return counts[0], counts[1], "meta"
    if not n:
        return 0, 0, "file"
    lead = np.flatnonzero((action != CREATED) | (ts != ts[0]))
    n_snap = int(lead[0]) if len(lead) else n
    if n_snap < 2:
        n_snap = 0
    tail = (action == DELETED) & (ts == ts[-1]) & (ts_recv == ts[-1])
    not_tail = np.flatnonzero(~tail)
    n_tail = n - 1 - int(not_tail[-1]) if len(not_tail) else n
    return n_snap, max(0, min(n_tail, n - n_snap)), "file"


def _quotes(sel, order_idx, price, volume, action, side, ts, ts_recv, line, iid, uncross):
    """QUOTE records for the top of book after each group of rows with equal exchange time."""
    n_orders = int(order_idx.max()) + 1 if len(order_idx) else 0
    at_price, alive, touched = [0.0] * n_orders, [False] * n_orders, [0] * n_orders
    levels: tuple[dict, dict] = ({}, {})  # bids, asks: price -> {order: open size}
    heaps: tuple[list, list] = ([], [])  # -price for bids, price for asks (lazy deletion)
    out, last, removed = [], None, 0
    rows = sel.tolist()
    ts_l, o_l, p_l = ts[sel].tolist(), order_idx[sel].tolist(), price[sel].tolist()
    v_l, a_l, s_l = volume[sel].tolist(), action[sel].tolist(), (side[sel] == Side.SELL).astype(int).tolist()

    def best(s_: int):
        heap, lv = heaps[s_], levels[s_]
        while heap and (heap[0] if s_ else -heap[0]) not in lv:
            heapq.heappop(heap)
        return (heap[0] if s_ else -heap[0]) if heap else None

    for j in range(len(rows)):
        o, s, a = o_l[j], s_l[j], a_l[j]
        lv = levels[s]
        if alive[o]:
            orders = lv[at_price[o]]
            if a == DELETED:
                del orders[o]
                if not orders:
                    del lv[at_price[o]]
                alive[o] = False
            else:
                orders[o] = v_l[j]
                touched[o] = ts_l[j]
        elif a != DELETED:
            p = p_l[j]
            orders = lv.get(p)
            if orders is None:
                orders = lv[p] = {}
                heapq.heappush(heaps[s], p if s else -p)
            orders[o] = v_l[j]
            at_price[o], alive[o], touched[o] = p, True, ts_l[j]
        if j + 1 < len(rows) and ts_l[j + 1] == ts_l[j]:
            continue
        bid, ask = best(0), best(1)
        while uncross and bid is not None and ask is not None and bid >= ask:
            # a crossed book after a whole batch holds orders that are gone: drop the level
            # whose last update is older (snapshot orders whose delete was never sent)
            age_bid = max(touched[x] for x in levels[0][bid])
            age_ask = max(touched[x] for x in levels[1][ask])
            s_, p_ = (0, bid) if age_bid < age_ask else (1, ask)
            for x in levels[s_].pop(p_):
                alive[x] = False
                removed += 1
            bid, ask = best(0), best(1)
        top = (
            bid,
            sum(levels[0][bid].values()) if bid is not None else 0.0,
            ask,
            sum(levels[1][ask].values()) if ask is not None else 0.0,
        )
        if top != last:
            out.append((rows[j], *(np.nan if x is None else x for x in top)))
            last = top
    arr = np.array(out, dtype=np.float64).reshape(-1, 5)
    at = arr[:, 0].astype(np.int64)
    q = new_records(RecordKind.QUOTE, len(arr), instrument_id=iid, ts_event=ts[at], ts_recv=ts_recv[at])
    q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"] = arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4]
    crossed = int(np.sum(q["bid_price"] >= q["ask_price"]))
    return q, line[at], crossed, removed


def load_bitstamp_trades(
    path: str | Path, *, symbol: str | None = None, instruments: Instruments = None, on_error: OnError = "raise"
) -> LoadedData:
    """TRADE records from a Bitstamp trades CSV alone."""
    path = Path(path)
    log = ErrorLog(path, on_error)
    types = {"trade_id": int, "timestamp": int, "exchange_timestamp": int, "price": float, "amount": float}
    rows = _header_rows(path, log, TRADES_HEADER, types)
    trade_id = rows.ints("trade_id", nonnegative=True)
    ts_recv = rows.epoch("timestamp", "ms")
    ts = rows.epoch("exchange_timestamp", "ms")
    price = rows.floats("price", nonnegative=True)
    amount = rows.floats("amount", nonnegative=True)
    aggressor = rows.choice("side", _AGGRESSORS)
    rows.non_decreasing(ts, "exchange_timestamp")
    keep = rows.keep()
    registry, (iid,) = resolve_instruments([dict(_SPEC, symbol=symbol or _symbol(path, None))], instruments, path)
    t = new_records(RecordKind.TRADE, int(keep.sum()), instrument_id=iid, ts_event=ts[keep], ts_recv=ts_recv[keep])
    t["price"], t["size"], t["trade_id"], t["aggressor"] = price[keep], amount[keep], trade_id[keep], aggressor[keep]
    return result("bitstamp-trades", [path], registry, len(rows), [Part(t, rows.line[keep])], log)
