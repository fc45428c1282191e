"""Loaders: recorded and historical market data as wire records, for ``quayside replay``.

Every loader returns a :class:`LoadedData`: a ``record_dtype`` array sorted by ``ts_event``
(stably, so equal times keep the source's order), ``seq`` = index in that order,
``Flag.REPLAY`` set, ``ts_event`` the exchange/event time and ``ts_recv`` the local receive
time where the source has one (else ``ts_event``), both int64 ns UTC; plus the source paths,
symbols, instruments (:class:`~quayside.core.instruments.InstrumentRegistry`), row count,
records per kind, time range, and counts of everything skipped or left out.

=====================  ==============================================  =========================
format                 input                                           loader
=====================  ==============================================  =========================
``recording``          ``*.qsf`` recording, or a folder of them        :func:`load_recording`
``histdata-quotes``    ``YYYYMMDD HHMMSSmmm,bid,ask,volume`` CSV        :func:`load_quotes`
``quotes-csv``         quote CSV with a header (ts, bid, ask, ...)      :func:`load_quotes`
``lobster``            LOBSTER message + orderbook (zip or CSVs)        :func:`load_lobster`
``binance-raw``        Binance raw websocket capture (``.gz``)          :func:`load_binance_raw`
``bitstamp``           Bitstamp L3 orders CSV(.gz) (+ trades, meta)     :func:`load_bitstamp`
``bitstamp-trades``    Bitstamp trades CSV alone                        :func:`load_bitstamp_trades`
``pysystemtrade``      pysystemtrade price CSV, or a folder of them     :func:`load_pysystemtrade`
=====================  ==============================================  =========================

:func:`load` picks the loader from the name and first line. Every loader takes
``instruments`` (an :class:`InstrumentRegistry`, a symbol -> id mapping, or None for ids from 1)
and ``on_error``: ``"raise"`` (the default) stops at the first malformed row with a
:class:`DataFormatError` naming the file, the 1-based line, the field and the value;
``"skip"`` leaves such rows out and counts them in ``LoadedData.skipped`` (the first messages in
``LoadedData.errors``). Nothing else is dropped unless an option asks, and then it is counted
in ``LoadedData.excluded``.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np

from quayside.core.instruments import InstrumentRegistry
from quayside.core.replay.loaders.base import DataFormatError, ErrorLog, LoadedData, OnError, describe
from quayside.core.replay.loaders.binance import load_binance_raw
from quayside.core.replay.loaders.bitstamp import ORDERS_HEADER, TRADES_HEADER, load_bitstamp, load_bitstamp_trades
from quayside.core.replay.loaders.lobster import LOBSTER_NAME, load_lobster
from quayside.core.replay.loaders.pysystemtrade import load_pysystemtrade, read_instrument_config
from quayside.core.replay.loaders.quotes import HISTDATA_LINE, load_quotes
from quayside.core.replay.recording import (
    RECORDING_SUFFIX,
    iter_recordings,
    read_recording,
    recording_files,
    recording_info,
)
from quayside.core.wire import record_dtype

__all__ = [
    "FORMATS",
    "DataFormatError",
    "LoadedData",
    "load",
    "detect_format",
    "load_recording",
    "load_quotes",
    "load_lobster",
    "load_binance_raw",
    "load_bitstamp",
    "load_bitstamp_trades",
    "load_pysystemtrade",
    "read_instrument_config",
]

FORMATS: dict[str, str] = {
    "recording": "Quayside recording (*.qsf, or a folder of feed-YYYYMMDD.qsf)",
    "histdata-quotes": "HistData quote CSV (YYYYMMDD HHMMSSmmm,bid,ask,volume)",
    "quotes-csv": "quote CSV with a header (ts_event|timestamp, bid, ask[, bid_size, ask_size, ts_recv])",
    "lobster": "LOBSTER message + orderbook files (zip, or the *_message_*.csv path)",
    "binance-raw": "Binance raw websocket capture (<local ns> <json> lines, gzip)",
    "bitstamp": "Bitstamp L3 orders CSV(.gz) (id,timestamp,exchange_timestamp,price,volume,action,direction)",
    "bitstamp-trades": "Bitstamp trades CSV (trade_id,timestamp,exchange_timestamp,...)",
    "pysystemtrade": "pysystemtrade price CSV (DATETIME,price|PRICE...), or a folder of them",
}

_LOADERS = {
    "histdata-quotes": load_quotes,
    "quotes-csv": load_quotes,
    "lobster": load_lobster,
    "binance-raw": load_binance_raw,
    "bitstamp": load_bitstamp,
    "bitstamp-trades": load_bitstamp_trades,
    "pysystemtrade": load_pysystemtrade,
}


def _unknown(path: Path, why: str) -> DataFormatError:
    known = "; ".join(f"{name}: {desc}" for name, desc in FORMATS.items())
    return DataFormatError(path, f"unknown data format ({why}); the formats known are: {known}", line=1)


def _first_line(path: Path) -> str:
    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.readline(4096).decode("utf-8", "replace").rstrip("\r\n")
    except (EOFError, OSError) as exc:
        raise DataFormatError(path, f"cannot read the first line ({exc})", line=1) from None


def detect_format(path: str | Path) -> str:
    """The name (a key of :data:`FORMATS`) of the format of ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if any(path.glob(f"*{RECORDING_SUFFIX}")):
            return "recording"
        csvs = sorted(path.glob("*.csv"))
        if csvs and _first_line(csvs[0]).startswith("DATETIME,"):
            return "pysystemtrade"
        raise _unknown(path, "a folder with neither *.qsf recordings nor pysystemtrade price files")
    if path.suffix == RECORDING_SUFFIX:
        return "recording"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(LOBSTER_NAME.search(n) for n in zf.namelist()):
                return "lobster"
        raise _unknown(path, "a zip without LOBSTER message/orderbook files")
    if LOBSTER_NAME.search(path.name):
        return "lobster"
    line = _first_line(path)
    if line[:1].isdigit() and " {" in line[:32] and line.split(" ", 1)[0].isdigit():
        return "binance-raw"
    if HISTDATA_LINE.match(line):
        return "histdata-quotes"
    header = [h.strip() for h in line.split(",")]
    if header == ORDERS_HEADER:
        return "bitstamp"
    if header == TRADES_HEADER:
        return "bitstamp-trades"
    if header[:1] == ["DATETIME"]:
        return "pysystemtrade"
    lower = [h.lower() for h in header]
    if any(h in lower for h in ("bid", "bid_price")) and any(h in lower for h in ("ask", "ask_price")):
        return "quotes-csv"
    raise _unknown(path, f"first line {line[:60]!r}")


def load(path: str | Path, *, format: str | None = None, **options) -> LoadedData:
    """Load ``path`` with the loader its format needs (``format`` overrides the guess);
    ``options`` go to that loader."""
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt == "recording":
        return load_recording(path, **options)
    try:
        loader = _LOADERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; the formats known are: {', '.join(FORMATS)}") from None
    return loader(path, **options)


def load_recording(
    path: str | Path,
    *,
    instruments: InstrumentRegistry | None = None,
    allow_truncated_tail: bool = False,
    prefix: str = "feed",
    on_error: OnError = "raise",
) -> LoadedData:
    """A recording (or a folder of daily ``<prefix>-YYYYMMDD.qsf`` recordings, concatenated in
    date order) as it was recorded: in feed order, flags and ``seq`` untouched (a single file
    stays memory-mapped, read-only). ``instruments`` is only passed through: a recording holds
    ids, not symbols. A recording has no rows to skip: every problem raises, whatever
    ``on_error`` says (a partial last record is read past only with ``allow_truncated_tail``)."""
    ErrorLog(path, on_error)  # validates the option, as every loader does
    path = Path(path)
    files = recording_files(path, prefix) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise DataFormatError(path, f"no daily recordings named {prefix}-YYYYMMDD{RECORDING_SUFFIX} in this folder")
    infos = [recording_info(f) for f in files]
    if path.is_dir():
        chunks = [r for _, r in iter_recordings(path, prefix=prefix, allow_truncated_tail=allow_truncated_tail)]
        records = np.concatenate(chunks) if chunks else np.empty(0, dtype=record_dtype)
    else:
        records = read_recording(path, allow_truncated_tail=allow_truncated_tail)
    registry = instruments if instruments is not None else InstrumentRegistry([], source=str(path))
    extra = {
        "files": len(files),
        "writers": sorted({i.source for i in infos}),
        "partial_tail_bytes": sum(i.partial_tail_bytes for i in infos),
    }
    return describe(records, "recording", files or [path], registry, len(records), ErrorLog(path, "raise"), extra=extra)
