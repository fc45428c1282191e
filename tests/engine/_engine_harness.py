"""Run ``quayside engine run`` as a real process on real /dev/shm rings, and talk to it.

The test plays the gateway (writes the inbound ring), the broker (reads the outbound ring) and
a support service (reads the feed ring). Every wait is bounded; a timeout shows the engine's
output. Nothing here asserts on wall-clock performance.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from quayside.core import wire
from quayside.core.broker.testing import toml_text
from quayside.core.feed.ring import CommandReader, CommandWriter, FeedReader, RingResult
from quayside.core.feed.segment import W_CONSUMER_POSITION

QUAYSIDE = str(Path(sys.executable).with_name("quayside"))
STARTUP_TIMEOUT = 420.0  # the first compile of the engine kernels, on a loaded 2-core machine
TIMEOUT = 60.0
RING_NAMES = ("inbound", "outbound", "control", "feed")
CAPACITIES = {"inbound_capacity": 1024, "outbound_capacity": 256, "control_capacity": 64, "feed_capacity": 1 << 16}


# --------------------------------------------------------------------------- configuration


def ring_paths(folder: Path) -> dict[str, str]:
    return {name: str(folder / name) for name in RING_NAMES}


# --------------------------------------------------------------------------- records


def record(dtype: np.dtype, kind: int, **fields) -> np.ndarray:
    """One record of ``kind`` with ``fields`` set, as ``record_dtype``."""
    rec = np.zeros(1, dtype=dtype)
    rec["kind"], rec["version"] = kind, wire.VERSIONS[kind]
    for name, value in fields.items():
        rec[name] = value
    return rec.view(wire.record_dtype)


def typed(rec) -> np.void:
    """A ``record_dtype`` record viewed as its kind's dtype."""
    arr = np.asarray(rec).reshape(1).view(wire.record_dtype)
    return arr.view(wire.dtype_for(int(arr["kind"][0])))[0]


def quote(iid: int, bid: float, ask: float, *, ts_recv: int | None = None, size: float = 1e6) -> np.ndarray:
    ts_recv = time.time_ns() if ts_recv is None else ts_recv
    return record(
        wire.quote_dtype,
        wire.RecordKind.QUOTE,
        instrument_id=iid,
        ts_event=ts_recv - 1_000,
        ts_recv=ts_recv,
        bid_price=bid,
        ask_price=ask,
        bid_size=size,
        ask_size=size,
    )


def order_status(order: np.void, status: int, *, filled: float = 0.0, avg: float = np.nan, ts: int | None = None):
    ts = time.time_ns() if ts is None else ts
    return record(
        wire.order_status_dtype,
        wire.RecordKind.ORDER_STATUS,
        strategy_id=order["strategy_id"],
        instrument_id=order["instrument_id"],
        ts_event=ts,
        ts_recv=ts,
        order_id=order["order_id"],
        status=status,
        broker_order_id=order["order_id"],
        perm_id=order["order_id"],
        filled_qty=filled,
        avg_fill_price=avg,
    )


def fill(order: np.void, quantity: float, price: float, *, fill_id: int, commission=np.nan, flags=0, ts=None):
    """A fill of ``order``; ``quantity`` is signed (positive bought)."""
    ts = time.time_ns() if ts is None else ts
    return record(
        wire.fill_dtype,
        wire.RecordKind.FILL,
        flags=flags,
        strategy_id=order["strategy_id"],
        instrument_id=order["instrument_id"],
        ts_event=ts,
        ts_recv=ts,
        order_id=order["order_id"],
        fill_id=fill_id,
        price=price,
        quantity=quantity,
        commission=commission,
    )


# --------------------------------------------------------------------------- the process


class FeedTail:
    """Everything read so far from a feed ring, from its oldest record, plus a cursor."""

    def __init__(self, path: str | Path):
        self.reader = FeedReader(path, start="oldest")
        self._chunks: list[np.ndarray] = []
        self._records = np.zeros(0, wire.record_dtype)
        self.cursor = 0

    @property
    def records(self) -> np.ndarray:
        if self._chunks:
            self._records = np.concatenate([self._records, *self._chunks])
            self._chunks = []
        return self._records

    def poll(self) -> int:
        """Read everything published so far; how many records that was."""
        total = 0
        while len(got := self.reader.read()):
            self._chunks.append(got.copy())
            total += len(got)
        assert self.reader.lost == 0, "the feed lapped this reader"
        return total

    def find(self, kind: int, start: int, **fields) -> int | None:
        recs = self.records
        for i in np.flatnonzero(recs["kind"][start:] == kind) + start:
            r = typed(recs[i])
            if all(r[k] == v for k, v in fields.items()):
                return int(i)
        return None

    def of_kind(self, kind: int, start: int = 0) -> np.ndarray:
        recs = self.records[start:]
        return recs[recs["kind"] == kind].view(wire.dtype_for(kind))


class LiveEngine:
    """A ``quayside engine run --config FILE --cpu 0`` subprocess and the test's ends of its rings."""

    def __init__(self, config: dict, shm_dir: Path, tmp_path: Path, *, cpu: int = 0):
        self.rings = ring_paths(shm_dir)
        self.config = {**config, "rings": {**self.rings, **CAPACITIES}}
        self.config_path = tmp_path / "engine.toml"
        self.config_path.write_text(toml_text(self.config))
        self.log_path = tmp_path / "engine.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [QUAYSIDE, "engine", "run", "--config", str(self.config_path), "--cpu", str(cpu)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.feed: FeedTail | None = None
        self.inbound: CommandWriter | None = None
        self.outbound: CommandReader | None = None
        self.sent = 0  # inbound records written
        self.last_feed_index = -1  # feed index of the record next_feed returned last

    # ---- waiting

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, condition, what: str, timeout: float = TIMEOUT, *, alive: bool = True):
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if alive and self.proc.poll() is not None:
                raise AssertionError(
                    f"engine exited ({self.proc.returncode}) while waiting for {what}\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:g} s\n--- engine output ---\n{self.output()}")
            time.sleep(0.0005)

    def start(self) -> np.void:
        """Wait until the engine is live (ENGINE_STARTED on the feed); attach the rings."""
        feed = Path(self.rings["feed"])
        self.wait_until(feed.exists, "feed ring", STARTUP_TIMEOUT)
        self.feed = FeedTail(feed)
        started = self.next_feed(wire.RecordKind.LOG, STARTUP_TIMEOUT, code=wire.LogCode.ENGINE_STARTED)
        self.inbound = CommandWriter(self.rings["inbound"], CAPACITIES["inbound_capacity"])
        self.outbound = CommandReader(self.rings["outbound"], CAPACITIES["outbound_capacity"])
        return started

    def next_feed(self, kind: int, timeout: float = TIMEOUT, **fields) -> np.void:
        """The next feed record (after the cursor) of ``kind`` with ``fields``; moves the cursor past it."""
        tail = self.feed

        def found():  # index + 1, so that index 0 is truthy
            tail.poll()
            i = tail.find(kind, tail.cursor, **fields)
            return None if i is None else i + 1

        what = f"{wire.enum_name(wire.RecordKind, kind)} {fields or ''} on the feed"
        i = self.wait_until(found, what, timeout) - 1
        tail.cursor = i + 1
        self.last_feed_index = i
        return typed(tail.records[i])

    # ---- the gateway side

    def send(self, *records: np.ndarray) -> None:
        """Write records to the inbound ring and wait until the engine has handled them (it
        releases a batch only after handling it, orders and feed records included)."""
        batch = np.concatenate(records)

        def offered():  # position + 1, or 0 while the ring is full
            pos = self.inbound.offer(batch)
            return 0 if pos == RingResult.BACK_PRESSURED else pos + 1

        end = self.wait_until(offered, "space on the inbound ring") - 1 + len(batch)
        words = self.inbound.segment.words
        self.wait_until(lambda: int(words[W_CONSUMER_POSITION]) >= end, "the engine to consume the inbound ring")
        self.sent += len(batch)

    def poll_outbound(self) -> list[np.void]:
        return [typed(r) for r in self.outbound.poll().copy()]  # poll() reuses its buffer

    def next_outbound(self, timeout: float = TIMEOUT) -> np.void:
        got: list[np.void] = []

        def one():
            if not got:
                got.extend(self.poll_outbound())
            return bool(got)

        self.wait_until(one, "a record on the outbound ring", timeout)
        assert len(got) == 1, f"expected one outbound record, got {len(got)}"
        return got[0]

    def control(self, *args: str) -> str:
        """``quayside control --ring <control> ARGS``; its stdout."""
        done = subprocess.run(
            [QUAYSIDE, "control", "--ring", self.rings["control"], *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, f"quayside control {args}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    # ---- the end

    def terminate(self, timeout: float = TIMEOUT) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"engine did not stop within {timeout:g} s of SIGTERM\n{self.output()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        for ring in (self.inbound, self.outbound, self.feed and self.feed.reader):
            if ring is not None:
                ring.close()
