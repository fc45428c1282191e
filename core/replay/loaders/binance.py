"""Binance raw websocket feed captures (hftbacktest's collector format), spot or USD-M futures.

One message a line, gzip or plain: ``<local receive ns> <json>``, the JSON a combined-stream
envelope ``{"stream": ..., "data": {...}}``, except REST depth snapshots, which are the bare
``{"lastUpdateId", "bids", "asks"}`` object. One file holds one symbol.

Records (``ts_recv`` = the line's local time; ``ts_event`` = the exchange time ``T``, else
``E``, else the local time when a message has neither, as spot bookTicker does):

- ``bookTicker`` -> QUOTE (``b``, ``a``, ``B``, ``A``);
- ``trade`` -> TRADE (``p``, ``q``, ``t``), ``aggTrade`` -> TRADE (``a`` as the trade id);
  aggressor SELL when ``m`` (the buyer was the maker), else BUY;
- ``depthUpdate`` -> one BOOK record per ``[price, qty]`` level, bids then asks: action MODIFY
  (the level's new size) or DELETE when qty is 0; ``order_id`` 0, ``level`` 0 (an L2 level is
  keyed by its price: its depth index is not in the message);
- a REST snapshot -> a BOOK CLEAR (side 0, NaN price) then one BOOK ADD per level, all with
  ``Flag.SNAPSHOT``.

Depth updates whose last update id ``u`` is below the ``lastUpdateId`` of the snapshot that
supersedes them are counted in ``extra["stale_depth_updates"]`` and kept, unless
``drop_stale_depth=True`` (then counted in ``excluded``). Breaks in the update-id chain
(``pu``, or ``U`` = previous ``u`` + 1 on spot) are counted in ``extra["depth_gaps"]``, lines
whose local time goes backwards in ``extra["local_time_backwards"]``.

The instrument is the messages' ``s`` symbol, CRYPTO on BINANCE, quoted in USD (the registry
allows three-letter currencies only, so USDT is recorded as USD); tick and lot sizes are not in
the feed (Instrument defaults: pass a registry for real ones).
"""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path

import numpy as np

from quayside.core.replay.loaders.base import (
    NS_PER_MS,
    DataFormatError,
    ErrorLog,
    Instruments,
    LoadedData,
    OnError,
    Part,
    new_records,
    read_text,
    resolve_instruments,
    result,
    split_lines,
)
from quayside.core.wire import BookAction, Flag, RecordKind, Side

__all__ = ["load_binance_raw"]

_EVENTS = ("bookTicker", "trade", "aggTrade", "depthUpdate")


class _Skip(Exception):
    """A line that has been reported (and, under on_error="skip", counted)."""


def load_binance_raw(
    path: str | Path,
    *,
    symbol: str | None = None,
    instruments: Instruments = None,
    drop_stale_depth: bool = False,
    on_error: OnError = "raise",
) -> LoadedData:
    """QUOTE, TRADE and BOOK records from a raw feed capture (see the module docstring)."""
    path = Path(path)
    log = ErrorLog(path, on_error)
    lines = split_lines(read_text(path, log))
    decode = json.JSONDecoder().raw_decode
    seen_symbol = symbol
    local: list[int] = []
    # per kind: line index, local ns, exchange ms (or -1), then the raw fields
    q_line, q_ts, q_vals = [], [], []
    t_line, t_ts, t_vals = [], [], []
    d_line, d_ts, d_ids, d_nb, d_na, d_flat = [], [], [], [], [], []
    s_line, s_ts, s_ids, s_nb, s_na, s_flat = [], [], [], [], [], []

    def bad(i: int, field: str | None, value, problem: str):
        log.error(i + 1, field, value, problem)
        raise _Skip

    for i, line in enumerate(lines):
        try:
            sp = line.find(" ")
            head = line[:sp] if sp > 0 else line
            if not head.isdigit():
                bad(i, "local_ts", head, "not an integer nanosecond timestamp")
            ts_local = int(head)
            try:
                obj, end = decode(line, sp + 1)
            except json.JSONDecodeError as exc:
                bad(i, "json", line[sp + 1 : sp + 61], f"not valid JSON: {exc.msg} at column {exc.colno + sp + 1}")
            if end != len(line) and line[end:].strip():
                bad(i, "json", line[end : end + 40], "text after the JSON object")
            if not isinstance(obj, dict):
                bad(i, "json", type(obj).__name__, "not a JSON object")
            data = obj.get("data")
            try:
                if data is None:
                    if "lastUpdateId" not in obj:
                        bad(i, "stream", sorted(obj)[:6], "neither a stream message nor a REST depth snapshot")
                    bids, asks = obj["bids"], obj["asks"]
                    flat = _levels(bids) + _levels(asks)
                    exch, last_id = obj.get("T", obj.get("E", -1)), obj["lastUpdateId"]
                    if type(exch) is not int or type(last_id) is not int:
                        bad(i, "lastUpdateId/T", (last_id, exch), "not integers")
                    s_line.append(i)
                    s_ts.append((ts_local, exch))
                    s_ids.append(last_id)
                    s_nb.append(len(bids))
                    s_na.append(len(asks))
                    s_flat.extend(flat)
                    local.append(ts_local)
                    continue
                event = data["e"]
                sym = data["s"]
                if seen_symbol is None:
                    seen_symbol = sym
                elif sym != seen_symbol:
                    bad(i, "data.s", sym, f"a second symbol in a one-symbol file (the first was {seen_symbol!r})")
                exch = data.get("T", data.get("E", -1))
                if type(exch) is not int:
                    bad(i, "data.T" if "T" in data else "data.E", exch, "not an integer time in ms")
                if event == "bookTicker":
                    q_vals.append((data["b"], data["a"], data["B"], data["A"]))
                    q_line.append(i)
                    q_ts.append((ts_local, exch))
                elif event == "trade" or event == "aggTrade":
                    m = data["m"]
                    if not isinstance(m, bool):
                        bad(i, "data.m", m, "not true or false")
                    t_vals.append((data["p"], data["q"], data["t" if event == "trade" else "a"], m))
                    t_line.append(i)
                    t_ts.append((ts_local, exch))
                elif event == "depthUpdate":
                    bids, asks = data["b"], data["a"]
                    flat = _levels(bids) + _levels(asks)
                    d_line.append(i)
                    d_ts.append((ts_local, exch))
                    ids = (data["U"], data["u"], data.get("pu", -1))
                    if not all(type(x) is int for x in ids):
                        bad(i, "data.U/u/pu", ids, "update ids are not integers")
                    d_ids.append(ids)
                    d_nb.append(len(bids))
                    d_na.append(len(asks))
                    d_flat.extend(flat)
                else:
                    bad(i, "data.e", event, f"an event type this loader does not know ({', '.join(_EVENTS)})")
            except DataFormatError:
                raise
            except KeyError as exc:
                where = "data." if data is not None else ""
                present = sorted(data if data is not None else obj)[:12]
                bad(i, f"{where}{exc.args[0]}", present, "missing (the keys present are shown)")
            except (TypeError, AttributeError, ValueError) as exc:
                bad(i, "data" if data is not None else "json", None, f"malformed message ({exc})")
            local.append(ts_local)
        except _Skip:
            continue

    if seen_symbol is None:
        raise DataFormatError(path, "no message names a symbol; pass symbol=", field="data.s")
    spec = dict(symbol=seen_symbol[:32], sec_type="CRYPTO", exchange="BINANCE", currency="USD")
    registry, (iid,) = resolve_instruments([spec], instruments, path)
    conv = _Converter(log)
    q_line_a, t_line_a, d_line_a, s_line_a = (np.array(x, dtype=np.int64) for x in (q_line, t_line, d_line, s_line))
    qv = list(zip(*q_vals, strict=True)) if q_vals else [()] * 4
    q_num = [conv.floats(qv[j], q_line_a, "data." + "baBA"[j]) for j in range(4)]
    tv = list(zip(*t_vals, strict=True)) if t_vals else [()] * 4
    t_price, t_size = conv.floats(tv[0], t_line_a, "data.p"), conv.floats(tv[1], t_line_a, "data.q")
    t_id = conv.ints(tv[2], t_line_a, "data.t")
    d_nb_a, d_na_a = np.array(d_nb, dtype=np.int64), np.array(d_na, dtype=np.int64)
    d_values = conv.floats(d_flat, np.repeat(d_line_a, 2 * (d_nb_a + d_na_a)), "data.b/a").reshape(-1, 2)
    s_nb_a, s_na_a = np.array(s_nb, dtype=np.int64), np.array(s_na, dtype=np.int64)
    s_values = conv.floats(s_flat, np.repeat(s_line_a, 2 * (s_nb_a + s_na_a)), "bids/asks").reshape(-1, 2)
    bad = np.array(sorted(conv.bad_lines), dtype=np.int64)

    parts: list[Part] = []
    extra: dict = {}
    excluded: dict[str, int] = {}

    # quotes
    ok = ~np.isin(q_line_a, bad)
    q_ts_local, q_ts_event = _times(q_ts)
    q = new_records(RecordKind.QUOTE, int(ok.sum()), instrument_id=iid, ts_event=q_ts_event[ok], ts_recv=q_ts_local[ok])
    for j, name in enumerate(("bid_price", "ask_price", "bid_size", "ask_size")):
        q[name] = q_num[j][ok]
    parts.append(Part(q, q_line_a[ok]))

    # trades
    ok = ~np.isin(t_line_a, bad)
    t_ts_local, t_ts_event = _times(t_ts)
    t = new_records(RecordKind.TRADE, int(ok.sum()), instrument_id=iid, ts_event=t_ts_event[ok], ts_recv=t_ts_local[ok])
    t["price"], t["size"], t["trade_id"] = t_price[ok], t_size[ok], t_id[ok]
    t["aggressor"] = np.where(np.array(tv[3], dtype=bool)[ok], Side.SELL, Side.BUY)
    parts.append(Part(t, t_line_a[ok]))

    # depth updates
    ok = ~np.isin(d_line_a, bad)
    d_ts_local, d_ts_event = _times(d_ts)
    ids = np.array(d_ids, dtype=np.int64).reshape(-1, 3)
    snap_ok = ~np.isin(s_line_a, bad)
    snap_ids = np.array(s_ids, dtype=np.int64)
    stale = _stale(d_line_a, ids[:, 1], s_line_a[snap_ok], snap_ids[snap_ok]) & ok
    extra["depth_updates"] = int(ok.sum())
    extra["depth_levels"] = int((d_nb_a + d_na_a)[ok].sum())
    extra["stale_depth_updates"] = int(stale.sum())
    extra["depth_gaps"] = _gaps(ids[ok])
    extra["first_update_id"] = int(ids[ok][0, 0]) if ok.any() else 0
    extra["last_update_id"] = int(ids[ok][-1, 1]) if ok.any() else 0
    if drop_stale_depth:
        excluded["stale_depth_updates"] = int(stale.sum())
        ok &= ~stale
    parts.append(_levels_part(iid, d_line_a, d_nb_a, d_na_a, d_values, d_ts_local, d_ts_event, ok, snapshot=False))

    # snapshots
    s_ts_local, s_ts_event = _times(s_ts)
    extra["snapshots"] = int(snap_ok.sum())
    extra["snapshot_lines"] = [int(i) + 1 for i in s_line_a[snap_ok]]
    extra["snapshot_update_ids"] = [int(x) for x in snap_ids[snap_ok]]
    clear = new_records(
        RecordKind.BOOK,
        int(snap_ok.sum()),
        instrument_id=iid,
        ts_event=s_ts_event[snap_ok],
        ts_recv=s_ts_local[snap_ok],
        flags=Flag.SNAPSHOT,
    )
    clear["price"] = np.nan
    clear["action"] = BookAction.CLEAR
    parts.append(Part(clear, s_line_a[snap_ok]))
    parts.append(_levels_part(iid, s_line_a, s_nb_a, s_na_a, s_values, s_ts_local, s_ts_event, snap_ok, snapshot=True))

    local_a = np.array(local, dtype=np.int64)
    extra["local_time_backwards"] = int(np.sum(local_a[1:] < local_a[:-1]))
    return result("binance-raw", [path], registry, len(lines), parts, log, excluded=excluded, extra=extra)


def _levels(levels) -> list:
    """``[[price, qty], ...]`` flattened; refuses entries that are not pairs."""
    if not isinstance(levels, list):
        raise TypeError("a level list is not a list")
    if levels and set(map(len, levels)) != {2}:
        raise ValueError("a level is not a [price, qty] pair")
    return list(chain.from_iterable(levels))


def _times(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(local ns, exchange ns) arrays; the exchange time falls back to the local one."""
    a = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    ts_local, ms = a[:, 0], a[:, 1]
    return ts_local, np.where(ms >= 0, ms * NS_PER_MS, ts_local)


def _stale(d_line, last_id, s_line, s_ids) -> np.ndarray:
    """Depth updates already contained in the snapshot that supersedes them."""
    if not len(s_line) or not len(d_line):
        return np.zeros(len(d_line), dtype=bool)
    nxt = np.searchsorted(s_line, d_line)  # the first snapshot after each update
    bound = s_ids[np.minimum(nxt, len(s_ids) - 1)]
    return last_id < bound


def _gaps(ids: np.ndarray) -> int:
    if len(ids) < 2:
        return 0
    first, last, prev = ids[1:, 0], ids[:-1, 1], ids[1:, 2]
    futures = prev >= 0
    return int(np.sum(np.where(futures, prev != last, first != last + 1)))


def _levels_part(iid, lines, nb, na, values, ts_local, ts_event, keep, *, snapshot: bool) -> Part:
    """One BOOK record per level of the messages in ``keep``: bids first, then asks."""
    counts = nb + na
    msg = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(len(msg)) - np.repeat(np.cumsum(counts) - counts, counts)
    side = np.where(pos < np.repeat(nb, counts), Side.BUY, Side.SELL)
    sel = keep[msg]
    msg, side, values = msg[sel], side[sel], values[sel]
    recs = new_records(
        RecordKind.BOOK,
        len(msg),
        instrument_id=iid,
        ts_event=ts_event[msg],
        ts_recv=ts_local[msg],
        flags=Flag.SNAPSHOT if snapshot else 0,
    )
    recs["price"], recs["size"], recs["side"] = values[:, 0], values[:, 1], side
    if snapshot:
        recs["action"] = BookAction.ADD
    else:
        recs["action"] = np.where(values[:, 1] == 0, BookAction.DELETE, BookAction.MODIFY)
    return Part(recs, lines[msg])


class _Converter:
    """Bulk string -> number conversion; a value it cannot convert marks its line bad."""

    def __init__(self, log: ErrorLog):
        self.log = log
        self.bad_lines: set[int] = set()

    def floats(self, values, line_idx: np.ndarray, field: str) -> np.ndarray:
        try:
            out = np.array(values, dtype=np.float64)
            if np.isfinite(out).all():
                return out
        except (ValueError, TypeError):
            pass
        out = np.zeros(len(values))
        for j, v in enumerate(values):
            try:
                out[j] = float(v)
                if not np.isfinite(out[j]):
                    raise ValueError
            except (ValueError, TypeError):
                self._bad(int(line_idx[j]), field, v, "not a finite number")
        return out

    def ints(self, values, line_idx: np.ndarray, field: str) -> np.ndarray:
        try:
            return np.array(values, dtype=np.uint64)
        except (ValueError, TypeError, OverflowError):
            out = np.zeros(len(values), dtype=np.uint64)
            for j, v in enumerate(values):
                if isinstance(v, int) and 0 <= v < 2**64:
                    out[j] = v
                else:
                    self._bad(int(line_idx[j]), field, v, "not a non-negative integer")
            return out

    def _bad(self, i: int, field: str, value, problem: str) -> None:
        if i not in self.bad_lines:
            self.bad_lines.add(i)
            self.log.error(i + 1, field, value, problem)
