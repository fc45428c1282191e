"""``quayside feed demo``: the main job on its built-in default, with no setup.

A producer (this process) publishes seeded synthetic quotes into a private feed ring; a
:class:`~quayside.core.feed.ring.FeedReader` in a thread and the UDP relay in a real subprocess
(``quayside feed relay --until-closed``) consume it; a :class:`~quayside.core.feed.udp.UdpReceiver`
on 127.0.0.1 gets what the relay sends. At the end it prints what each of them saw and removes
the ring. The synthetic market is deliberately simple: a random walk in ticks per instrument
with a spread of one to a few ticks; a fuller one comes later.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict

import numpy as np

from quayside.core.feed.ring import FeedReader, FeedWriter
from quayside.core.feed.segment import default_shm_dir
from quayside.core.feed.udp import DEFAULT_MAX_DATAGRAM, MAX_UDP_PAYLOAD, UdpReceiver
from quayside.core.wire import DATAGRAM_HEADER_SIZE, RECORD_SIZE, VERSIONS, RecordKind, quote_dtype

__all__ = ["SyntheticQuotes", "add_demo_arguments", "demo_main"]

# symbol, start price, spread in ticks (min, max), size in lots (min, max), lot
_MARKET = (
    ("EURUSD", 1.08500, 1, 3, 1, 10, 1_000_000.0),
    ("AAPL", 190.00, 1, 2, 1, 20, 100.0),
    ("ESZ6", 5000.00, 1, 1, 1, 60, 1.0),
)
STREAM_ID = 1
RING_CAPACITY = 1 << 17


class SyntheticQuotes:
    """Top-of-book quotes for a few instruments: each bid walks by a tick at a time, the ask
    sits one to a few ticks above it, sizes are whole lots. Seeded, so runs repeat."""

    def __init__(self, seed: int = 1):
        from quayside.core.instruments import default_registry

        registry = default_registry()
        instruments = [registry.by_symbol(m[0]) for m in _MARKET]
        self.symbols = [m[0] for m in _MARKET]
        self.ids = np.array([i.id for i in instruments], dtype=np.uint32)
        self.tick = np.array([i.tick_size for i in instruments])
        self._bid = np.array([round(m[1] / i.tick_size) for m, i in zip(_MARKET, instruments, strict=True)])
        self._spread = np.array([[m[2], m[3] + 1] for m in _MARKET])
        self._size = np.array([[m[4], m[5] + 1] for m in _MARKET])
        self._lot = np.array([m[6] for m in _MARKET])
        self._rng = np.random.default_rng(seed)

    def next(self, n: int, ts_now: int, spacing_ns: int = 1000) -> np.ndarray:
        """``n`` quotes (``quote_dtype``), the last one stamped ``ts_now``."""
        rng = self._rng
        inst = rng.integers(0, len(self.ids), n)
        u = rng.random((4, n))
        steps = (u[0] < 0.05).astype(np.int64) - (u[0] > 0.95)  # a tick down or up, 5% each
        bid_ticks = np.empty(n, dtype=np.int64)
        for i in range(len(self.ids)):
            mine = inst == i
            walk = np.maximum(np.cumsum(steps[mine]) + self._bid[i], 1)
            bid_ticks[mine] = walk
            if len(walk):
                self._bid[i] = walk[-1]
        lo, hi = self._spread[inst, 0], self._spread[inst, 1]
        spread = lo + (u[1] * (hi - lo)).astype(np.int64)
        smin, smax, lot = self._size[inst, 0], self._size[inst, 1], self._lot[inst]
        tick = self.tick[inst]
        q = np.zeros(n, dtype=quote_dtype)
        q["kind"] = RecordKind.QUOTE
        q["version"] = VERSIONS[RecordKind.QUOTE]
        q["instrument_id"] = self.ids[inst]
        q["ts_event"] = ts_now - spacing_ns * np.arange(n - 1, -1, -1, dtype=np.int64)
        q["ts_recv"] = q["ts_event"] + 2_000 + (u[3] * 38_000).astype(np.int64)
        q["bid_price"] = np.round(bid_ticks * tick, 10)
        q["ask_price"] = np.round((bid_ticks + spread) * tick, 10)
        q["bid_size"] = (smin + (u[2] * (smax - smin)).astype(np.int64)) * lot
        q["ask_size"] = (smin + ((u[2] * 7.0) % 1.0 * (smax - smin)).astype(np.int64)) * lot
        return q


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "The main job for now, on a built-in synthetic market: a producer writes seeded random-walk "
        "quotes into a private feed ring in $QUAYSIDE_SHM_DIR (default /dev/shm); a ring reader "
        "(a thread) and the UDP relay (a subprocess) consume it; a UDP receiver on 127.0.0.1 gets "
        "what the relay sends. Prints what each stage saw, then removes the ring."
    )
    p.add_argument("--duration", type=float, default=3.0, metavar="S", help="seconds of quotes to publish (default 3)")
    p.add_argument("--rate", type=int, default=200_000, metavar="N", help="quotes per second (default 200000)")
    p.add_argument("--port", type=int, default=0, metavar="P", help="UDP port on 127.0.0.1 (default 0: a free one)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic market (default 1)")
    p.add_argument(
        "--max-datagram",
        type=int,
        default=DEFAULT_MAX_DATAGRAM,
        metavar="BYTES",
        help=f"the relay's UDP payload limit (default {DEFAULT_MAX_DATAGRAM})",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")


class _ReaderThread(threading.Thread):
    """Reads the ring until the producer closes it; remembers the last quote per instrument."""

    def __init__(self, reader: FeedReader, stop: threading.Event):
        super().__init__(name="demo-reader", daemon=True)
        self.reader, self.stop = reader, stop
        self.last: dict[int, tuple[float, float]] = {}

    def run(self) -> None:
        reader = self.reader
        while not self.stop.is_set():
            records = reader.read()
            if len(records) == 0:
                if reader.closed:
                    return
                time.sleep(0.0005)
                continue
            quotes = records.view(quote_dtype)
            ids = quotes["instrument_id"][::-1]
            uniq, first = np.unique(ids, return_index=True)
            for iid, j in zip(uniq.tolist(), (len(quotes) - 1 - first).tolist(), strict=True):
                self.last[iid] = (float(quotes["bid_price"][j]), float(quotes["ask_price"][j]))


class _ReceiverThread(threading.Thread):
    """Polls the receiver until told the relay has finished and nothing more is waiting."""

    def __init__(self, receiver: UdpReceiver, stop: threading.Event, relay_done: threading.Event):
        super().__init__(name="demo-receiver", daemon=True)
        self.receiver, self.stop, self.relay_done = receiver, stop, relay_done

    def run(self) -> None:
        rx = self.receiver
        while not self.stop.is_set():
            done = self.relay_done.is_set()  # read before polling: then one empty poll drains
            before = rx.datagrams
            rx.poll(timeout=0.02)
            if done and rx.datagrams == before:
                return


class _RelayProcess:
    """``quayside feed relay`` as a subprocess, its JSON lines read by a thread."""

    def __init__(self, ring: str, port: int, max_datagram: int, timeout: float):
        cmd = [sys.executable, "-m", "quayside.cli", "feed", "relay", "--ring", ring]
        cmd += ["--dest", f"127.0.0.1:{port}", "--stream-id", str(STREAM_ID), "--start", "oldest"]
        cmd += ["--until-closed", "--json", "--max-datagram", str(max_datagram), "--duration", str(timeout)]
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.ready = threading.Event()
        self.final: dict | None = None
        self._lines = threading.Thread(target=self._read, name="demo-relay-stdout", daemon=True)
        self._lines.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "ready":
                self.ready.set()
            elif msg.get("event") == "final":
                self.final = msg

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.05):
                return True
            if self.proc.poll() is not None:
                return False
        return False

    def finish(self, timeout: float) -> int:
        """Wait for the relay to exit (it does once the ring is closed); stop it if it won't."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                code = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self._lines.join(5)
        return code

    def error_output(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.finish(0)
        self.proc.stdout.close()
        self.stderr.close()


def _publish(writer: FeedWriter, market: SyntheticQuotes, rate: int, duration: float) -> int:
    """Publish ``rate * duration`` quotes, paced to ``rate`` per second."""
    total = int(rate * duration)
    spacing = max(1, int(1e9 / rate)) if rate > 0 else 1000
    started = time.monotonic()
    published = 0
    while published < total:
        due = min(total, int(rate * (time.monotonic() - started))) - published
        if due <= 0:
            time.sleep(0.001)
            continue
        n = min(due, 8192)
        writer.publish(market.next(n, time.time_ns(), spacing))
        published += n
    return published


def demo_main(args: argparse.Namespace) -> int:
    smallest = DATAGRAM_HEADER_SIZE + RECORD_SIZE
    if not (args.duration >= 0 and args.rate >= 1 and 0 <= args.port <= 65535):
        print("quayside feed demo: error: --duration must be >= 0, --rate >= 1, --port 0..65535", file=sys.stderr)
        return 2
    if not smallest <= args.max_datagram <= MAX_UDP_PAYLOAD:
        print(f"quayside feed demo: error: --max-datagram must be {smallest} to {MAX_UDP_PAYLOAD}", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("quayside feed demo: interrupted; ring removed", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    ring_path = default_shm_dir() / f"quayside-demo-{os.getpid()}-{secrets.token_hex(4)}"
    market = SyntheticQuotes(args.seed)
    stop, relay_done = threading.Event(), threading.Event()
    writer = FeedWriter(ring_path, RING_CAPACITY)
    reader_thread = receiver_thread = relay = receiver = None
    try:
        try:
            receiver = UdpReceiver(("127.0.0.1", args.port), streams=[STREAM_ID])
        except OSError as exc:
            print(f"quayside feed demo: error: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
            return 1
        port = receiver.address[1]
        # --duration only as a safety net should this process die without closing the ring
        relay = _RelayProcess(str(ring_path), port, args.max_datagram, timeout=10 * args.duration + 120)
        reader_thread = _ReaderThread(FeedReader(ring_path, start="oldest"), stop)
        receiver_thread = _ReceiverThread(receiver, stop, relay_done)
        if not relay.wait_ready(60):
            relay.finish(5)
            print("quayside feed demo: error: the relay did not start:\n" + relay.error_output(), file=sys.stderr)
            return 1
        reader_thread.start()
        receiver_thread.start()
        started = time.monotonic()
        published = _publish(writer, market, args.rate, args.duration)
        elapsed = time.monotonic() - started
        writer.close(unlink=False)  # readers see `closed` once they have read everything
        reader_thread.join()
        code = relay.finish(60)
        relay_done.set()
        receiver_thread.join()
        if code != 0 or relay.final is None:
            print(f"quayside feed demo: error: the relay exited with {code}:\n" + relay.error_output(), file=sys.stderr)
            return 1
        result = _results(args, ring_path, port, published, elapsed, reader_thread, relay.final, receiver, market)
        print(json.dumps(result, indent=2) if args.json else _table(result))
        return 0
    finally:
        stop.set()
        relay_done.set()
        for thread in (reader_thread, receiver_thread):
            if thread is not None and thread.is_alive():
                thread.join(5)
        if relay is not None:
            relay.close()
        if reader_thread is not None:
            reader_thread.reader.close()
        if receiver is not None:
            receiver.close()
        writer.close()
        writer.segment.unlink()


def _results(args, ring_path, port, published, elapsed, reader_thread, relay_final, receiver, market) -> dict:
    reader = reader_thread.reader
    rx = receiver.stats
    names = dict(zip(market.ids.tolist(), market.symbols, strict=True))
    return {
        "ring": str(ring_path),
        "duration_s": round(elapsed, 3),
        "rate": args.rate,
        "published": published,
        "reader": {"delivered": reader.delivered, "lost": reader.lost, "laps": reader.laps},
        "relay": {k: relay_final[k] for k in ("records_sent", "datagrams_sent", "ring_lost", "send_errors")},
        "receiver": {
            "address": f"127.0.0.1:{port}",
            **{k: v for k, v in asdict(rx).items() if k != "streams"},
        },
        "last_quotes": {names[i]: {"bid": b, "ask": a} for i, (b, a) in sorted(reader_thread.last.items())},
    }


def _table(r: dict) -> str:
    rd, rl, rx = r["reader"], r["relay"], r["receiver"]
    unseen = rl["records_sent"] - rx["records"]
    rows = [
        ("producer", r["published"], "", f"published into the ring in {r['duration_s']:.2f} s"),
        ("reader", rd["delivered"], "", f"lost {rd['lost']:,} (laps {rd['laps']})"),
        (
            "relay",
            rl["records_sent"],
            rl["datagrams_sent"],
            f"ring lost {rl['ring_lost']:,}, send errors {rl['send_errors']:,}",
        ),
        (
            "receiver",
            rx["records"],
            rx["datagrams"],
            f"gaps {rx['gaps']:,} (the relay's ring loss included), lost in UDP {unseen:,}, "
            f"duplicates {rx['duplicates']:,}, reordered {rx['reordered']:,}, malformed {rx['malformed']:,}",
        ),
    ]
    lines = [
        f"quayside feed demo: {r['rate']:,} synthetic quotes/s, ring {r['ring']}, UDP to {rx['address']}",
        "",
        f"  {'stage':<9} {'records':>11} {'datagrams':>10}  what it saw",
    ]
    for name, records, datagrams, note in rows:
        dg = f"{datagrams:,}" if datagrams != "" else "-"
        lines.append(f"  {name:<9} {records:>11,} {dg:>10}  {note}")
    quotes = ", ".join(f"{sym} {q['bid']:g}/{q['ask']:g}" for sym, q in r["last_quotes"].items())
    lines += ["", f"  last quotes the reader saw: {quotes}"]
    return "\n".join(lines)
