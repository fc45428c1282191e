"""The feed the support-service benchmark offers: the engine's own record mix, at live feed time.

The mix comes from a real run: ``quayside replay`` of the built-in synthetic market (the
crossover strategy on EURUSD, AAPL and the ES future) writes every feed record it produced to
``feed.qsf``; that recording is the pattern. :func:`bench_feed` repeats it to the length
wanted and makes it look like a live feed read at ``rate`` records per second:

* **feed time** advances ``1 / rate`` per record (a replay's feed time runs ~40,000 times
  slower than its records would arrive live), and every other ``ts_*`` field of a record moves
  with its ``ts_event``, so stage latencies stay what the replay measured;
* **ids** of orders and fills are made unique per repetition (a repeated id would be a
  correction or a re-used order, not a new one);
* **denials**: the replayed strategy is never denied, a live one sometimes is: one order in
  ``deny_every`` is followed by a DENIAL of a second intent (reason MESSAGE_RATE);
* **heartbeats**: one every ``heartbeat_ms`` of feed time, as the engine publishes them, with
  its counters (in place of a quote).

Quotes dominate (about three records in four), trades most of the rest; orders, order
statuses, fills and engine positions are about 0.15 % each. :func:`mix` says what a feed holds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from quayside.core import wire
from quayside.core.wire import RecordKind, record_dtype

__all__ = ["record_replay", "bench_feed", "mix"]

T0 = 1_723_161_600 * 10**9  # 2024-08-09 00:00 UTC: feed time starts here

#: the ``ts_*`` payload fields of each kind (the header's ``ts_event`` is handled apart)
_TS_FIELDS = {
    kind: [n for n in dtype.names if n.startswith("ts_") and n != "ts_event"] for kind, dtype in wire.DTYPES.items()
}
_ID_FIELDS = ("order_id", "fill_id")
_TS_EVENT_WORD = record_dtype.fields["ts_event"][1] // 8


def _ts_words() -> dict[int, np.ndarray]:
    """int64 word of a record -> which kinds (a lookup table by kind) hold a ``ts_*`` there."""
    out: dict[int, np.ndarray] = {}
    for kind, names in _TS_FIELDS.items():
        for name in names:
            dtype, offset = wire.DTYPES[kind].fields[name][:2]
            assert dtype == np.int64 and offset % 8 == 0, (kind, name)
            out.setdefault(offset // 8, np.zeros(256, dtype=bool))[kind] = True
    return out


_TS_WORDS = _ts_words()


def record_replay(folder: Path, duration_s: float = 600.0, seed: int = 7) -> Path:
    """Run ``quayside replay`` on the synthetic market into ``folder``; returns its ``feed.qsf``."""
    cmd = [sys.executable, "-m", "quayside.cli", "replay", "--duration-s", f"{duration_s:g}", "--seed", str(seed)]
    cmd += ["--out", str(folder), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    path = folder / "feed.qsf"
    if done.returncode != 0 or not path.exists():
        raise RuntimeError(f"quayside replay failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return path


def _denials(orders: np.ndarray) -> np.ndarray:
    """A DENIAL per ORDER in ``orders`` (``record_dtype``): a second intent, refused."""
    o = orders.view(wire.order_dtype)
    d = np.zeros(len(orders), wire.denial_dtype)
    d["kind"], d["version"] = RecordKind.DENIAL, wire.VERSIONS[RecordKind.DENIAL]
    for name in ("flags", "strategy_id", "instrument_id", "ts_event", "ts_recv", "side", "order_type", "price"):
        d[name] = o[name]
    d["quantity"] = o["quantity"]
    d["order_id"] = 0  # denied intents never get an engine order id
    d["reason"] = wire.DenyReason.MESSAGE_RATE
    return d.view(record_dtype)


def _heartbeat(ts: int, counts: np.ndarray, records: int) -> np.ndarray:
    h = np.zeros(1, wire.heartbeat_dtype)
    h["kind"], h["version"] = RecordKind.HEARTBEAT, wire.VERSIONS[RecordKind.HEARTBEAT]
    h["ts_event"] = ts
    h["loop_iterations"] = records * 3
    h["events_in"] = counts[RecordKind.QUOTE] + counts[RecordKind.TRADE] + counts[RecordKind.ORDER_STATUS]
    h["orders_out"] = counts[RecordKind.ORDER] + counts[RecordKind.CANCEL]
    h["denials"], h["fills"] = counts[RecordKind.DENIAL], counts[RecordKind.FILL]
    h["trading_state"], h["cpu"], h["max_loop_ns"] = wire.TradingState.ACTIVE, 2, 1_500
    return h.view(record_dtype)


def bench_feed(
    pattern: np.ndarray, n: int, *, rate: float = 2e6, heartbeat_ms: float = 1000.0, deny_every: int = 10
) -> np.ndarray:
    """``n`` records built from ``pattern`` (a recording) as described in the module doc;
    ``seq`` runs from 0 (a ring writer stamps it anyway)."""
    pattern = np.array(pattern, dtype=record_dtype)  # a private copy (recordings are mapped read-only)
    kinds = pattern["kind"]
    orders = np.flatnonzero(kinds == RecordKind.ORDER)[deny_every - 1 :: deny_every] if deny_every else []
    if len(orders):  # each denial right after its order
        parts = np.split(pattern, orders + 1)
        denials = _denials(pattern[orders])
        pattern = np.concatenate([x for i, part in enumerate(parts) for x in (part, denials[i : i + 1])][:-1])
        kinds = pattern["kind"]
    size, reps = len(pattern), -(-n // len(pattern))
    feed = np.tile(pattern.view(np.int64).reshape(size, 8), (reps, 1))[:n].view(record_dtype).ravel()
    kinds = feed["kind"]
    for name in _ID_FIELDS:  # a few rows per repetition: index them, do not scan the feed
        holders = [(k, d) for k, d in wire.DTYPES.items() if name in d.names]
        span = 1 + max(int(pattern.view(d)[name][pattern["kind"] == k].max(initial=0)) for k, d in holders)
        for kind, dtype in holders:
            prows = np.flatnonzero(pattern["kind"] == kind)
            if len(prows):
                rows = (prows[None, :] + size * np.arange(reps)[:, None]).ravel()
                rows = rows[rows < n]
                ids = feed.view(dtype)[name][rows]
                feed.view(dtype)[name][rows] = np.where(ids > 0, ids + rows // size * span, ids)
    words = feed.view(np.int64).reshape(n, 8)
    ts_new = T0 + np.round(np.arange(n) * (1e9 / rate)).astype(np.int64)
    shift = ts_new - words[:, _TS_EVENT_WORD]
    for word, table in _TS_WORDS.items():
        rows = table[kinds]
        v = words[rows, word]
        words[rows, word] = np.where(v > 0, v + shift[rows], v)
    words[:, _TS_EVENT_WORD] = ts_new
    if heartbeat_ms:  # the first quote after each interval of feed time makes way for a heartbeat
        every = max(1, int(rate * heartbeat_ms / 1000.0))
        quotes = np.flatnonzero(kinds == RecordKind.QUOTE)
        for i in np.arange(every, n, every):
            j = quotes[min(np.searchsorted(quotes, i), len(quotes) - 1)]
            feed[j : j + 1] = _heartbeat(int(feed["ts_event"][j]), np.bincount(kinds[:j], minlength=256), int(j))
    feed["seq"] = np.arange(len(feed))
    return feed


def mix(feed: np.ndarray) -> dict[str, float]:
    """Share of each record kind in ``feed`` (kinds it does not hold left out)."""
    counts = np.bincount(feed["kind"], minlength=256)
    return {
        name: round(int(counts[v]) / len(feed), 6)
        for name, v in zip(RecordKind._fields, RecordKind, strict=True)
        if counts[v]
    }
