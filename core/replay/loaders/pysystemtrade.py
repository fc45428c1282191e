"""pysystemtrade price CSVs: ``adjusted_prices/<INSTR>.csv`` (``DATETIME,price``),
``multiple_prices/<INSTR>.csv`` (its ``PRICE`` column) and ``fx_prices/<PAIR>.csv``
(``DATETIME,PRICE``), one file or a whole folder of them.

Each price becomes one record at ``DATETIME`` (naive; read in zone ``tz``, UTC by default):
a QUOTE with ``bid = ask = price`` and NaN sizes (``kind="quote"``, the default, so that a
simulated venue can fill at the price), or a TRADE with NaN size, trade id 0 and no aggressor
(``kind="trade"``). ``ts_recv = ts_event``. Times must not go backwards. A row with an empty
price (pysystemtrade writes them where it has no price) gives no record and is counted in
``excluded["empty_price"]``.

Instruments come from ``instrumentconfig.csv`` (found in the folder above, or given as
``config_path``): ``multiplier`` = Pointsize, ``currency`` = Currency, ``sec_type`` FUT. FX
files (``fx_prices``) are CASH pairs quoted in their second currency. Loading a folder
gives ids 1, 2, ... in alphabetical order of the files (or the caller's ids) and one stream
sorted by time; at equal times, in that order.
"""

from __future__ import annotations

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
from quayside.core.wire import RecordKind

__all__ = ["load_pysystemtrade", "read_instrument_config"]

CONFIG_NAME = "instrumentconfig.csv"


def read_instrument_config(path: str | Path) -> dict[str, dict]:
    """``instrumentconfig.csv`` as {instrument: Instrument fields (symbol, sec_type,
    multiplier, currency)}; errors name the file, line and field."""
    path = Path(path)
    log = ErrorLog(path, "raise")
    text = read_text(path, log)
    first, _, body = text.partition("\n")
    header = [h.strip() for h in first.rstrip("\r").split(",")]
    for name in ("Instrument", "Pointsize", "Currency"):
        if name not in header:
            raise DataFormatError(path, "missing column in the header", line=1, field=name, value=first)
    rows = Rows(log, body, header, first_line=2)
    multiplier = rows.floats("Pointsize")
    rows.flag(multiplier <= 0, "Pointsize", rows.columns["Pointsize"], "not a positive multiplier")
    currency = rows.columns["Currency"]
    rows.flag(
        np.array([not (len(c) == 3 and c.isalpha() and c.isupper()) for c in currency], dtype=bool),
        "Currency",
        currency,
        "not a three-letter currency code",
    )
    rows.keep()
    return {
        sym: dict(symbol=sym, sec_type="FUT", multiplier=float(m), currency=cur)
        for sym, m, cur in zip(rows.columns["Instrument"], multiplier, currency, strict=True)
    }


def _spec(path: Path, symbol: str, config: dict[str, dict] | None) -> dict:
    if path.parent.name == "fx_prices" and len(symbol) == 6:
        return dict(symbol=symbol, sec_type="CASH", exchange="IDEALPRO", currency=symbol[3:], tick_size=0.00001)
    if config is not None and symbol in config:
        return config[symbol]
    return dict(symbol=symbol, sec_type="FUT")


def load_pysystemtrade(
    path: str | Path,
    *,
    kind: Literal["quote", "trade"] = "quote",
    column: str | None = None,
    symbol: str | None = None,
    config_path: str | Path | Literal["auto"] | None = "auto",
    instruments: Instruments = None,
    tz: str = "UTC",
    on_error: OnError = "raise",
) -> LoadedData:
    """QUOTE (or TRADE) records from one price CSV or a folder of them (see the module docstring).

    ``column`` defaults to ``price`` or ``PRICE``; ``symbol`` (one file only) to the file name.
    """
    if kind not in ("quote", "trade"):
        raise ValueError(f"kind must be 'quote' or 'trade', not {kind!r}")
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(path, "no price files (*.csv) in this folder")
    folder = path if path.is_dir() else path.parent
    if config_path == "auto":
        candidate = folder.parent / CONFIG_NAME
        config_path = candidate if candidate.is_file() else None
    config = read_instrument_config(config_path) if config_path is not None else None
    symbols = [symbol if symbol and len(files) == 1 else f.stem for f in files]
    specs = [_spec(f, s, config) for f, s in zip(files, symbols, strict=True)]
    registry, ids = resolve_instruments(specs, instruments, path)
    log = ErrorLog(path, on_error)
    parts, rows_read, empty, offset = [], 0, 0, 0
    for f, iid in zip(files, ids, strict=True):
        flog = ErrorLog(f, on_error)
        ts, price, line, n_rows, n_empty = _read_prices(f, flog, column, tz)
        rows_read += n_rows
        empty += n_empty
        log.skipped += flog.skipped
        log.examples += flog.examples
        log.notes.update(flog.notes)
        if kind == "quote":
            recs = new_records(RecordKind.QUOTE, len(ts), instrument_id=iid, ts_event=ts)
            recs["bid_price"] = recs["ask_price"] = price
            recs["bid_size"] = recs["ask_size"] = np.nan
        else:
            recs = new_records(RecordKind.TRADE, len(ts), instrument_id=iid, ts_event=ts)
            recs["price"], recs["size"] = price, np.nan
        parts.append(Part(recs, line + offset))
        offset += n_rows + 2
    extra = {"files": len(files), "config": str(config_path) if config_path else None}
    sources = [path] + ([Path(config_path)] if config_path else [])
    excluded = {"empty_price": empty}
    return result("pysystemtrade", sources, registry, rows_read, parts, log, excluded=excluded, extra=extra)


def _read_prices(path: Path, log: ErrorLog, column: str | None, tz: str):
    text = read_text(path, log)
    first, _, body = text.partition("\n")
    header = [h.strip() for h in first.rstrip("\r").split(",")]
    if not header or header[0] != "DATETIME":
        raise DataFormatError(path, "the first column must be DATETIME", line=1, field="DATETIME", value=first)
    name = column or next((c for c in ("price", "PRICE") if c in header), None)
    if name is None or name not in header:
        raise DataFormatError(path, "missing price column in the header", line=1, field=column or "price", value=first)
    rows = Rows(log, body, header, first_line=2)
    ts = rows.times("DATETIME", tz=tz)
    price = rows.floats(name, empty_nan=True)
    rows.non_decreasing(ts, "DATETIME")
    keep = rows.keep()
    has_price = ~np.isnan(price)
    use = keep & has_price
    return ts[use], price[use], rows.line[use], len(rows), int(np.sum(keep & ~has_price))
