"""Top-of-book quote CSVs: the HistData tick layout and a generic CSV with a header.

*HistData layout* (no header; ``eurusd-quotes-2020-01-01.csv``)::

    20200101 170000065,1.121200,1.121720,0        # YYYYMMDD HHMMSSmmm, bid, ask, volume

Times are HistData's clock, fixed UTC-05:00 (EST, no daylight saving) unless ``tz`` says
otherwise (``tz="UTC"`` reads the wall-clock times as UTC). The volume column (always 0) is not
a quote size and is ignored.

*Generic quote CSV* (a header row; TrueFX's ``timestamp,bid,ask`` is one): columns, in any
order, matched without regard to case:

- ``ts_event`` (or ``ts``, ``timestamp``, ``time``): integer epoch time in ``ts_unit`` (ns by
  default), or ISO-8601; ISO times without an offset are in zone ``tz`` (UTC by default);
- ``bid`` (or ``bid_price``), ``ask`` (or ``ask_price``): prices;
- optional ``bid_size``, ``ask_size``: sizes (an empty cell is NaN);
- optional ``ts_recv``: local receive time, same forms as ``ts_event``.

Each row becomes one QUOTE record. Missing sizes are NaN ("unknown"); ``ts_recv`` is
``ts_event`` unless given. Timestamps must not go backwards. Crossed quotes (bid > ask) are
loaded as they are and counted in ``extra["crossed"]``.

The symbol defaults to a file-name token made of two currency codes (``eurusd-...`` ->
``EURUSD``; a CASH pair on IDEALPRO in its quote currency, tick 0.00001, or 0.001 for JPY),
else to the name's first token.
"""

from __future__ import annotations

import re
from pathlib import Path

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
from quayside.core.wire import RecordKind

__all__ = ["load_quotes", "HISTDATA_LINE", "fx_symbol_from_name"]

HISTDATA_LINE = re.compile(r"^\d{8} \d{9},")
HISTDATA_TZ = "Etc/GMT+5"  # POSIX sign: UTC-05:00 all year

_CURRENCIES = {
    *("USD", "EUR", "JPY", "GBP", "CHF", "AUD", "NZD", "CAD", "SEK", "NOK", "DKK", "HKD", "SGD", "MXN", "ZAR"),
    *("TRY", "PLN", "CZK", "HUF", "CNH", "CNY", "KRW", "INR", "BRL", "RUB", "ILS", "THB", "TWD", "XAU", "XAG"),
}
_ALIASES = {
    "ts_event": ("ts_event", "ts", "timestamp", "time"),
    "bid": ("bid", "bid_price"),
    "ask": ("ask", "ask_price"),
    "bid_size": ("bid_size",),
    "ask_size": ("ask_size",),
    "ts_recv": ("ts_recv",),
}


def fx_symbol_from_name(path: Path) -> str | None:
    """``EURUSD`` from ``eurusd-quotes-2020-01-01.csv``: a token that is two currency codes."""
    for token in re.split(r"[^A-Za-z]+", Path(path).name):
        t = token.upper()
        if len(t) == 6 and t[:3] in _CURRENCIES and t[3:] in _CURRENCIES:
            return t
    return None


def _instrument_spec(path: Path, symbol: str | None) -> dict:
    symbol = symbol or fx_symbol_from_name(path)
    if symbol is None:
        symbol = re.split(r"[-_.]", Path(path).name)[0].upper() or "UNKNOWN"
    if len(symbol) == 6 and symbol[:3] in _CURRENCIES and symbol[3:] in _CURRENCIES:
        tick = 0.001 if symbol.endswith("JPY") else 0.00001
        return dict(symbol=symbol, sec_type="CASH", exchange="IDEALPRO", currency=symbol[3:], tick_size=tick)
    return dict(symbol=symbol[:32])


def load_quotes(
    path: str | Path,
    *,
    symbol: str | None = None,
    instruments: Instruments = None,
    tz: str | None = None,
    ts_unit: str = "ns",
    on_error: OnError = "raise",
) -> LoadedData:
    """QUOTE records from a HistData-layout or generic quote CSV (see the module docstring)."""
    path = Path(path)
    log = ErrorLog(path, on_error)
    text = read_text(path, log)
    if not text.strip():
        raise DataFormatError(path, "the file is empty", line=1)
    first, _, body = text.partition("\n")
    first = first.rstrip("\r")
    if HISTDATA_LINE.match(first):
        fmt = "histdata-quotes"
        prices = {"bid": float, "ask": float}
        rows = Rows(log, text, ["timestamp", "bid", "ask", "volume"], first_line=1, types=prices)
        ts = rows.times("timestamp", fmt="%Y%m%d %H%M%S%f", tz=tz or HISTDATA_TZ)
        ts_recv = None
        names = {"ts_event": "timestamp", "bid": "bid", "ask": "ask"}
    else:
        fmt = "quotes-csv"
        header = [h.strip().lower() for h in first.split(",")]
        names = {}
        for key, aliases in _ALIASES.items():
            found = [a for a in aliases if a in header]
            if found:
                names[key] = found[0]
            elif key in ("ts_event", "bid", "ask"):
                raise DataFormatError(
                    path,
                    f"missing column in the header: expected one of {', '.join(aliases)}",
                    line=1,
                    field=key,
                    value=first,
                )
        rows = Rows(log, body, header, first_line=2, types={names["bid"]: float, names["ask"]: float})
        ts = _times(rows, names["ts_event"], tz or "UTC", ts_unit)
        ts_recv = _times(rows, names["ts_recv"], tz or "UTC", ts_unit) if "ts_recv" in names else None
    bid = rows.floats(names["bid"])
    ask = rows.floats(names["ask"])
    sizes = [
        rows.floats(names[k], nonnegative=True, empty_nan=True) if k in names else np.full(len(rows), np.nan)
        for k in ("bid_size", "ask_size")
    ]
    rows.non_decreasing(ts, names["ts_event"])
    keep = rows.keep()
    registry, (iid,) = resolve_instruments([_instrument_spec(path, symbol)], instruments, path)
    n = int(keep.sum())
    recs = new_records(
        RecordKind.QUOTE,
        n,
        instrument_id=iid,
        ts_event=ts[keep],
        ts_recv=None if ts_recv is None else ts_recv[keep],
    )
    recs["bid_price"], recs["ask_price"] = bid[keep], ask[keep]
    recs["bid_size"], recs["ask_size"] = sizes[0][keep], sizes[1][keep]
    extra = {"crossed": int(np.sum(recs["bid_price"] > recs["ask_price"]))}
    return result(fmt, [path], registry, len(rows), [Part(recs, rows.line[keep])], log, extra=extra)


def _times(rows: Rows, name: str, tz: str, unit: str) -> np.ndarray:
    col = rows.columns[name]
    first = next((s for s in col if s.strip()), "")
    if first.strip().lstrip("-").isdigit():
        return rows.epoch(name, unit)
    return rows.times(name, tz=tz)
