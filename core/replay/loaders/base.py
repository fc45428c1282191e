"""What every loader shares: the result type, the row parser that names file, line and field in
each error, and the assembly of wire records in time order."""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import methodcaller
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from quayside.core.instruments import Instrument, InstrumentRegistry
from quayside.core.replay.recording import DataFormatError
from quayside.core.wire import DTYPES, VERSIONS, Flag, RecordKind, enum_name, record_dtype

__all__ = ["DataFormatError", "LoadedData", "OnError", "Instruments"]

OnError = Literal["raise", "skip"]
#: What callers pass to name instruments: a registry (its entries are used), a symbol -> id
#: mapping (the loader describes the instrument), or None (ids from 1 in the order found).
Instruments = InstrumentRegistry | Mapping[str, int] | None
MAX_EXAMPLES = 20
NS_PER_MS = 1_000_000


@dataclass(frozen=True, eq=False)
class LoadedData:
    """Wire records loaded from one source, with what is known about them.

    ``records`` is a ``record_dtype`` array in replay order: sorted by ``ts_event`` and, for
    equal times, by position in the source (stable); ``seq`` is the index in that order and
    every record carries ``Flag.REPLAY``. ``rows`` counts the data rows (lines) read in all files,
    ``counts`` the records per kind name, ``skipped`` the malformed rows left out under
    ``on_error="skip"`` (``errors`` holds the first messages), ``excluded`` the rows an option
    asked to leave out, and ``extra`` format-specific facts.
    """

    records: np.ndarray
    format: str
    sources: tuple[Path, ...]
    symbols: tuple[str, ...]
    instruments: InstrumentRegistry
    rows: int
    counts: dict[str, int]
    ts_first: int
    ts_last: int
    skipped: int = 0
    errors: tuple[str, ...] = ()
    excluded: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.sources[0]

    @property
    def symbol(self) -> str:
        """The symbol, when the data holds exactly one."""
        if len(self.symbols) != 1:
            raise ValueError(f"{self.path} holds {len(self.symbols)} symbols: {', '.join(self.symbols)}")
        return self.symbols[0]

    def __len__(self) -> int:
        return len(self.records)

    def of_kind(self, kind: int) -> np.ndarray:
        """The records of one kind, viewed through that kind's dtype (a copy)."""
        return self.records[self.records["kind"] == kind].view(DTYPES[kind])

    def quotes(self) -> np.ndarray:
        return self.of_kind(RecordKind.QUOTE)

    def trades(self) -> np.ndarray:
        return self.of_kind(RecordKind.TRADE)

    def book(self) -> np.ndarray:
        return self.of_kind(RecordKind.BOOK)


# --------------------------------------------------------------------------- errors and rows


class ErrorLog:
    """Raises the first malformed row (``on_error="raise"``) or counts and drops it (``"skip"``)."""

    def __init__(self, path, on_error: OnError):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.path, self.on_error = str(path), on_error
        self.skipped = 0
        self.examples: list[tuple[int, str]] = []
        self.notes: dict[str, Any] = {}

    @property
    def raising(self) -> bool:
        return self.on_error == "raise"

    def error(self, line: int, field: str | None, value, problem: str) -> None:
        """One bad row: raise, or count it."""
        exc = DataFormatError(self.path, problem, line=line, field=field, value=value)
        if self.raising:
            raise exc
        self.skipped += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((line, str(exc)))

    def messages(self) -> tuple[str, ...]:
        return tuple(text for _, text in sorted(self.examples)[:MAX_EXAMPLES])


def read_text(path: Path, log: ErrorLog, member: str | None = None) -> str:
    """A text file (plain, gzip or a zip member) decoded as UTF-8.

    A truncated gzip stream raises, or under ``on_error="skip"`` loses its incomplete last line
    (counted) and sets ``log.notes["truncated"]``.
    """
    if member is not None:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(member)
    else:
        raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, log)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataFormatError(log.path, "not UTF-8 text", line=line, value=raw[exc.start : exc.start + 8]) from None


def _gunzip(raw: bytes, log: ErrorLog) -> bytes:
    out: list[bytes] = []
    data = raw
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            out.append(d.decompress(data))
        except zlib.error as exc:
            line = b"".join(out).count(b"\n") + 1
            raise DataFormatError(log.path, f"corrupt gzip data ({exc})", line=line) from None
        if not d.eof:
            done = b"".join(out)
            cut = done.rfind(b"\n") + 1
            line = done.count(b"\n") + 1
            log.notes["truncated"] = True
            problem = "truncated gzip stream: the compressed data ends before its end-of-stream marker"
            if cut < len(done):
                log.error(line, None, done[cut:][:40].decode("utf-8", "replace"), problem + ", inside this line")
            elif log.raising:
                log.error(line, None, "", problem)
            return done[:cut]
        data = d.unused_data.lstrip(b"\0")
    return b"".join(out)


def split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [line.rstrip("\r") for line in lines]
    return lines


class Rows:
    """Delimited data rows as columns, with their 1-based line numbers.

    ``text`` holds data rows only (``first_line`` is the line number of its first row);
    ``names`` are the first columns to read and ``types`` their numpy types (default: str);
    ``total_fields`` is how many fields a row must have (default ``len(names)``). Well-formed
    text goes through pandas' C parser; anything it refuses is split again row by row so that
    each problem is pinned to its line. Checks mark bad rows; :meth:`check` raises the earliest
    one (``on_error="raise"``), and :meth:`keep` returns the rows to keep, counting the others.
    """

    def __init__(
        self,
        log: ErrorLog,
        text: str,
        names: Sequence[str],
        *,
        first_line: int,
        types: Mapping[str, type] | None = None,
        total_fields: int | None = None,
        sep: str = ",",
    ):
        self.log, self.names = log, list(names)
        types = dict(types or {})
        k = len(self.names)
        expected = total_fields or k
        n = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
        self.line = np.arange(first_line, first_line + n, dtype=np.int64)
        self.bad = np.zeros(n, dtype=bool)
        self._first: tuple[int, str, Any, str] | None = None
        self._examples: list[tuple[int, str, Any, str]] = []
        self.columns: dict[str, Any] = {}
        if n and '"' not in text and text.count(sep) == n * (expected - 1):
            try:
                df = pd.read_csv(
                    io.StringIO(text),
                    sep=sep,
                    header=None,
                    names=list(range(expected)),
                    usecols=list(range(k)),
                    dtype={j: types.get(name, object) for j, name in enumerate(self.names)},
                    na_filter=False,
                    skip_blank_lines=False,
                    quoting=csv.QUOTE_NONE,
                    engine="c",
                )
            except (ValueError, OverflowError, pd.errors.ParserError):
                pass
            else:
                if len(df) == n:
                    self.columns = {name: df[j].to_numpy() for j, name in enumerate(self.names)}
                    return
        self._split(split_lines(text), expected, sep)

    def _split(self, lines: list[str], expected: int, sep: str) -> None:
        """The slow path: split every row in Python, marking rows with the wrong field count."""
        k = len(self.names)
        if any('"' in line for line in lines):
            parts = list(csv.reader(lines, delimiter=sep))
            nfields = np.fromiter(map(len, parts), dtype=np.int64, count=len(lines))
        else:
            nfields = np.fromiter(map(methodcaller("count", sep), lines), dtype=np.int64, count=len(lines)) + 1
            maxsplit = k if expected > k else -1
            parts = [line.split(sep, maxsplit) for line in lines]
        for i in np.flatnonzero(nfields != expected):
            nf = int(nfields[i])
            if nf < expected:
                name = self.names[nf] if nf < k else f"column {nf + 1}"
                self._mark(i, name, lines[i], f"missing: the row has {nf} field{'s' * (nf != 1)}, expected {expected}")
            else:
                problem = f"extra field: the row has {nf} fields, expected {expected}"
                self._mark(i, f"column {expected + 1}", lines[i], problem)
            parts[i] = [""] * k
        self.columns = {name: [p[j] for p in parts] for j, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.line)

    def _mark(self, i: int, name: str, value, problem: str) -> None:
        self.bad[i] = True
        item = (int(self.line[i]), name, value, problem)
        if self._first is None or item[0] < self._first[0]:
            self._first = item
        if len(self._examples) < MAX_EXAMPLES:
            self._examples.append(item)

    def flag(self, mask: np.ndarray, name: str, values, problem: str) -> None:
        """Mark the rows of ``mask`` (not already bad) as bad in field ``name``."""
        idx = np.flatnonzero(mask & ~self.bad)
        if not len(idx):
            return
        self.bad[idx] = True
        for i in idx[: 1 if self.log.raising else MAX_EXAMPLES]:
            value = values[i]
            item = (int(self.line[i]), name, value.item() if isinstance(value, np.generic) else value, problem)
            if self._first is None or item[0] < self._first[0]:
                self._first = item
            if len(self._examples) < MAX_EXAMPLES:
                self._examples.append(item)

    def check(self) -> None:
        """Raise the earliest bad row (``on_error="raise"``)."""
        if self.log.raising and self._first is not None:
            line, name, value, problem = self._first
            raise DataFormatError(self.log.path, problem, line=line, field=name, value=value)

    def keep(self) -> np.ndarray:
        """The rows to keep; the bad ones are counted as skipped in the log."""
        self.check()
        self.log.skipped += int(self.bad.sum())
        for line, name, value, problem in self._examples:
            if len(self.log.examples) < MAX_EXAMPLES:
                exc = DataFormatError(self.log.path, problem, line=line, field=name, value=value)
                self.log.examples.append((line, str(exc)))
        self._examples.clear()
        return ~self.bad

    # ----------------------------------------------------------------------- conversions

    def floats(self, name: str, *, finite: bool = True, nonnegative: bool = False, empty_nan: bool = False):
        """Column ``name`` as float64; ``empty_nan`` lets an empty cell stand for NaN."""
        col = self.columns[name]
        if isinstance(col, np.ndarray) and col.dtype.kind in "fiu":
            out = col.astype(np.float64, copy=False)
        else:
            try:
                out = np.array(col, dtype=np.float64)
            except ValueError:
                out = np.full(len(col), np.nan)
                bad = np.zeros(len(col), dtype=bool)
                for i, s in enumerate(col):
                    try:
                        out[i] = float(s)
                    except ValueError:
                        bad[i] = not (empty_nan and s.strip() == "")
                self.flag(bad, name, col, "not a number")
        if finite:
            nonfinite = ~np.isfinite(out)
            if empty_nan and nonfinite.any() and not (isinstance(col, np.ndarray) and col.dtype.kind == "f"):
                nonfinite &= np.array([s.strip() != "" for s in col], dtype=bool)
            self.flag(nonfinite, name, col, "not a finite number")
        if nonnegative:
            self.flag(out < 0, name, col, "negative")
        return out

    def ints(self, name: str, *, dtype=np.int64, nonnegative: bool = False) -> np.ndarray:
        col = self.columns[name]
        if isinstance(col, np.ndarray) and col.dtype.kind in "iu" and np.can_cast(col.dtype, dtype):
            out = col.astype(dtype, copy=False)
        else:
            try:
                out = np.array(col, dtype=dtype)
            except (ValueError, OverflowError):
                info = np.iinfo(dtype)
                out = np.zeros(len(col), dtype=dtype)
                bad = np.zeros(len(col), dtype=bool)
                for i, s in enumerate(col):
                    try:
                        v = int(s)
                        if not info.min <= v <= info.max:
                            raise ValueError
                        out[i] = v
                    except ValueError:
                        bad[i] = True
                self.flag(bad, name, col, "not an integer" + (" in range" if dtype != np.int64 else ""))
        if nonnegative:
            self.flag(out < 0, name, col, "negative")
        return out

    def choice(self, name: str, mapping: Mapping[str, int], missing: int = -128) -> np.ndarray:
        col = self.columns[name]
        out = np.fromiter((mapping.get(s, missing) for s in col), dtype=np.int64, count=len(col))
        self.flag(out == missing, name, col, f"not one of {', '.join(mapping)}")
        return out

    def times(self, name: str, *, fmt: str = "ISO8601", tz: str = "UTC") -> np.ndarray:
        """Timestamps in ``fmt`` (naive ones in zone ``tz``) as int64 ns UTC."""
        col = self.columns[name]
        strings = np.asarray(col, dtype=object)
        try:
            idx = pd.to_datetime(strings, format=fmt, errors="coerce")
        except (ValueError, TypeError):  # mixed offsets, or naive mixed with aware
            aware = np.array([_has_offset(s) for s in col])
            self.flag(aware != aware[0], name, col, "mixes timestamps with and without a UTC offset")
            self.check()
            idx = pd.to_datetime(strings, format=fmt, errors="coerce", utc=True)
        idx = pd.DatetimeIndex(idx)
        if idx.tz is None:
            idx = idx.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        ns = idx.as_unit("ns").asi8.copy()
        nat = np.asarray(idx.isna())
        desc = "ISO-8601" if fmt == "ISO8601" else fmt
        self.flag(nat, name, col, f"not a timestamp in {desc} form (or not a valid time in {tz})")
        ns[nat] = 0
        return ns

    def epoch(self, name: str, unit: str = "ns") -> np.ndarray:
        """Integer epoch timestamps in ``unit`` (s, ms, us, ns) as int64 ns."""
        scale = {"s": 1_000_000_000, "ms": NS_PER_MS, "us": 1_000, "ns": 1}[unit]
        return self.ints(name) * scale

    def non_decreasing(self, values: np.ndarray, name: str, what: str = "time goes backwards") -> None:
        """Mark rows whose value is below that of an earlier good row."""
        self.check()
        good = ~self.bad
        if len(values) < 2:
            return
        running = np.maximum.accumulate(np.where(good, values, np.iinfo(np.int64).min))
        back = np.zeros(len(values), dtype=bool)
        back[1:] = values[1:] < running[:-1]
        col = self.columns[name]
        self.flag(back & good, name, col, what)


def _has_offset(s: str) -> bool:
    try:
        return pd.Timestamp(s).tzinfo is not None
    except ValueError:
        return False


# --------------------------------------------------------------------------- records


class Part(NamedTuple):
    """Records of one kind and their position in the source (the tie-break for equal times)."""

    records: np.ndarray
    order: np.ndarray


def new_records(kind: int, n: int, *, instrument_id, ts_event, ts_recv=None, flags=0) -> np.ndarray:
    out = np.zeros(n, dtype=DTYPES[kind])
    out["kind"] = kind
    out["version"] = VERSIONS[kind]
    out["flags"] = flags
    out["instrument_id"] = instrument_id
    out["ts_event"] = ts_event
    if "ts_recv" in out.dtype.names:
        out["ts_recv"] = ts_event if ts_recv is None else ts_recv
    return out


def assemble(parts: Sequence[Part]) -> np.ndarray:
    """One ``record_dtype`` array sorted by (ts_event, order) stably, with seq and REPLAY set."""
    parts = [p for p in parts if len(p.records)]
    if not parts:
        return np.empty(0, dtype=record_dtype)
    records = np.concatenate([p.records.view(record_dtype) for p in parts])
    order = np.concatenate([np.asarray(p.order, dtype=np.int64) for p in parts])
    ts = records["ts_event"]
    if len(ts) > 1 and np.all(ts[1:] >= ts[:-1]) and np.all(order[1:] >= order[:-1]):
        out = records.copy()  # already in replay order (one part, in time order)
    else:
        out = records[np.lexsort((order, ts))]  # lexsort is stable: equal keys keep part order
    out["seq"] = np.arange(len(out), dtype=np.uint64)
    out["flags"] |= Flag.REPLAY
    return out


def resolve_instruments(
    specs: Sequence[dict], instruments: Instruments, source
) -> tuple[InstrumentRegistry, list[int]]:
    """Instruments for the symbols found (``specs`` are Instrument fields without ``id``)."""
    chosen: list[Instrument] = []
    for i, spec in enumerate(specs):
        symbol = spec["symbol"]
        if instruments is None:
            chosen.append(Instrument(id=i + 1, **spec))
        elif isinstance(instruments, InstrumentRegistry):
            if symbol not in instruments:
                raise KeyError(f"{source}: symbol {symbol!r} is not in the instrument registry {instruments.source}")
            chosen.append(instruments.by_symbol(symbol))
        else:
            if symbol not in instruments:
                raise KeyError(f"{source}: symbol {symbol!r} is not in the given symbol -> id mapping")
            chosen.append(Instrument(id=int(instruments[symbol]), **spec))
    registry = InstrumentRegistry(chosen, source=str(source))
    return registry, [inst.id for inst in chosen]


def result(
    fmt: str,
    sources: Sequence[Path],
    registry: InstrumentRegistry,
    rows: int,
    parts: Sequence[Part],
    log: ErrorLog,
    *,
    excluded: dict[str, int] | None = None,
    extra: dict[str, Any] | None = None,
) -> LoadedData:
    records = assemble(parts)
    return describe(records, fmt, sources, registry, rows, log, excluded=excluded, extra=extra)


def describe(records, fmt, sources, registry, rows, log, *, excluded=None, extra=None) -> LoadedData:
    kinds, counts = np.unique(records["kind"], return_counts=True)
    ts = records["ts_event"]
    return LoadedData(
        records=records,
        format=fmt,
        sources=tuple(Path(s) for s in sources),
        symbols=tuple(inst.symbol for inst in registry),
        instruments=registry,
        rows=rows,
        counts={enum_name(RecordKind, int(k)): int(c) for k, c in zip(kinds, counts, strict=True)},
        ts_first=int(ts.min()) if len(ts) else 0,
        ts_last=int(ts.max()) if len(ts) else 0,
        skipped=log.skipped,
        errors=log.messages(),
        excluded=dict(excluded or {}),
        extra={**log.notes, **(extra or {})},
    )
