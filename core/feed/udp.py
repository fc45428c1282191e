"""The feed over UDP: a relay that batches ring records into datagrams, and its command line.

A datagram is a ``datagram_header_dtype`` header (32 bytes: magic, version, record size,
count, stream id, first_seq, ts_sent) followed by ``count`` records of 64 bytes whose own
``seq`` fields are consecutive, starting at ``first_seq``. The relay (:class:`Relay`, ``quayside
feed relay``) is an ordinary feed-ring reader, never the producer; its :class:`UdpSender` cuts a
batch into datagrams at every break in ``seq`` (records the ring reader lost) and at the size
limit, so a gap-free stream's next datagram starts at ``first_seq + count`` and every ring loss
reaches receivers as a gap. :class:`~quayside.core.feed.receiver.UdpReceiver` (re-exported
here) turns datagrams back into records; its module documents each counter.

This module imports numpy, the standard library and the numpy-only ring reader; loguru only
inside the command handlers.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from quayside.core.feed.receiver import (
    MAX_RECORDS_PER_DATAGRAM,
    MAX_UDP_PAYLOAD,
    ReceiverStats,
    StreamStats,
    UdpReceiver,
    _resolve_ipv4,
)
from quayside.core.feed.ring import FeedReader
from quayside.core.wire import (
    DATAGRAM_HEADER_SIZE,
    DATAGRAM_MAGIC,
    DATAGRAM_VERSION,
    RECORD_SIZE,
    datagram_header_dtype,
    record_dtype,
)

__all__ = [
    "MAX_UDP_PAYLOAD",
    "MAX_RECORDS_PER_DATAGRAM",
    "DEFAULT_MAX_DATAGRAM",
    "encode_datagram",
    "UdpSender",
    "RelayStats",
    "Relay",
    "StreamStats",
    "ReceiverStats",
    "UdpReceiver",
    "parse_address",
    "add_relay_arguments",
    "relay_main",
    "add_receive_arguments",
    "receive_main",
]

#: Fits a 1500-byte Ethernet MTU without fragmentation: 22 records.
DEFAULT_MAX_DATAGRAM = 1472


def _as_records(records: np.ndarray) -> np.ndarray:
    if records.dtype.itemsize != RECORD_SIZE:
        raise ValueError(f"records must be {RECORD_SIZE} bytes each, got a {records.dtype.itemsize}-byte dtype")
    return np.ascontiguousarray(records).reshape(-1).view(record_dtype)


def encode_datagram(records: np.ndarray, *, stream_id: int, ts_sent: int | None = None) -> bytes:
    """One datagram holding ``records`` (consecutive in ``seq``, at most 1023 of them).

    For tools and tests; :class:`UdpSender` does the same into a reused buffer.
    """
    recs = _as_records(records)
    n = len(recs)
    if not 1 <= n <= MAX_RECORDS_PER_DATAGRAM:
        raise ValueError(f"a datagram holds 1 to {MAX_RECORDS_PER_DATAGRAM} records, got {n}")
    seq = recs["seq"]
    if n > 1 and np.any(seq[1:] - seq[:-1] != 1):
        raise ValueError("records in one datagram must be consecutive in seq")
    hdr = np.zeros(1, dtype=datagram_header_dtype)
    hdr["magic"], hdr["version"], hdr["record_size"] = DATAGRAM_MAGIC, DATAGRAM_VERSION, RECORD_SIZE
    hdr["count"], hdr["stream_id"], hdr["first_seq"] = n, stream_id, seq[0]
    hdr["ts_sent"] = time.time_ns() if ts_sent is None else ts_sent
    return hdr.tobytes() + recs.tobytes()


# the datagram header as struct sees it; a test checks it against datagram_header_dtype
_HEADER = struct.Struct("<IBBHIIQq")


class UdpSender:
    """Sends records as datagrams to one unicast or multicast IPv4 address.

    ``max_datagram`` bounds the UDP payload (header included): 1472 fits an Ethernet MTU,
    up to 65507 suits loopback or jumbo-frame links (1023 records per datagram). For a
    multicast ``dest`` the socket (``sock``, connected to ``dest``) gets ``IP_MULTICAST_TTL``
    = ``multicast_ttl``, ``IP_MULTICAST_LOOP`` on (receivers on this host hear it too) and,
    if given, ``IP_MULTICAST_IF`` = ``interface`` (an address of the outgoing interface).

    Counters: ``datagrams_sent``, ``records_sent``, ``bytes_sent``, ``send_errors``
    (datagrams whose ``send`` failed, e.g. ``ECONNREFUSED`` while nobody listens on a unicast
    port; their records are not sent), ``records_unsent``, ``last_error`` (the errno).
    """

    def __init__(
        self,
        dest: tuple[str, int],
        *,
        stream_id: int,
        max_datagram: int = DEFAULT_MAX_DATAGRAM,
        multicast_ttl: int = 1,
        interface: str | None = None,
    ):
        if not 0 <= stream_id <= 0xFFFF_FFFF:
            raise ValueError(f"stream_id must fit 32 bits, got {stream_id}")
        smallest = DATAGRAM_HEADER_SIZE + RECORD_SIZE
        if not smallest <= max_datagram <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_datagram must be {smallest} to {MAX_UDP_PAYLOAD} bytes, got {max_datagram}")
        host, port = dest
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"destination port must be 1 to 65535, got {port}")
        self.dest = (_resolve_ipv4(host, port), int(port))
        self.stream_id = stream_id
        self.max_records = (max_datagram - DATAGRAM_HEADER_SIZE) // RECORD_SIZE
        self.multicast = ipaddress.ip_address(self.dest[0]).is_multicast
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if self.multicast:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, multicast_ttl)
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                if interface:
                    self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            self.sock.connect(self.dest)
        except BaseException:
            self.sock.close()
            raise
        # the header is packed with struct (a numpy scalar write costs a microsecond) and sent
        # with the records straight from the caller's array by sendmsg: no copy of the body
        self._header = bytearray(DATAGRAM_HEADER_SIZE)
        self.datagrams_sent = self.records_sent = self.bytes_sent = 0
        self.send_errors = self.records_unsent = 0
        self.last_error: int | None = None

    def send(self, records: np.ndarray) -> int:
        """Send ``records`` (any 64-byte dtype); returns the number of datagrams sent."""
        recs = _as_records(records)
        n = len(recs)
        if n == 0:
            return 0
        body = memoryview(np.ascontiguousarray(recs).view(np.uint8)).cast("B")
        seq = recs["seq"]
        runs = [0, *(np.flatnonzero(seq[1:] - seq[:-1] != 1) + 1).tolist(), n] if n > 1 else [0, 1]
        firsts = seq[runs[:-1]].tolist()
        step, sock, header, stream = self.max_records, self.sock, self._header, self.stream_id
        ts_sent = time.time_ns()  # one time per batch: the datagrams of a batch leave together
        sent = 0
        for r, first in enumerate(firsts):
            start, end = runs[r], runs[r + 1]
            for lo in range(start, end, step):
                m = min(step, end - lo)
                _HEADER.pack_into(
                    header,
                    0,
                    DATAGRAM_MAGIC,
                    DATAGRAM_VERSION,
                    RECORD_SIZE,
                    m,
                    stream,
                    0,
                    first + (lo - start),
                    ts_sent,
                )
                try:
                    self.bytes_sent += sock.sendmsg([header, body[lo * RECORD_SIZE : (lo + m) * RECORD_SIZE]])
                except OSError as exc:  # ECONNREFUSED (no listener yet), ENOBUFS, ...
                    self.send_errors += 1
                    self.records_unsent += m
                    self.last_error = exc.errno
                    continue
                sent += 1
                self.records_sent += m
        self.datagrams_sent += sent
        return sent

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class RelayStats:
    records_read: int  # records the relay's ring reader delivered
    records_sent: int  # records in datagrams that were sent
    datagrams_sent: int
    bytes_sent: int
    ring_lost: int  # records the ring overwrote before the relay read them (FeedReader.lost)
    ring_laps: int  # occasions the relay fell a lap behind (FeedReader.laps)
    send_errors: int  # datagrams whose send failed; their records count in records_read only


class Relay:
    """Reads a feed ring and sends everything it gets with a :class:`UdpSender`.

    ``start`` is ``"live"`` (from the producer's position) or ``"oldest"`` (the oldest record
    still in the ring); ``batch`` bounds the records read per poll.
    """

    def __init__(
        self,
        ring: str | os.PathLike,
        dest: tuple[str, int],
        *,
        stream_id: int,
        max_datagram: int = DEFAULT_MAX_DATAGRAM,
        start: str = "live",
        batch: int = 8192,
        multicast_ttl: int = 1,
        interface: str | None = None,
        idle_sleep: float = 50e-6,
    ):
        self.sender = UdpSender(
            dest, stream_id=stream_id, max_datagram=max_datagram, multicast_ttl=multicast_ttl, interface=interface
        )
        try:
            self.reader = FeedReader(ring, start=start, batch=batch)
        except BaseException:
            self.sender.close()
            raise
        self.idle_sleep = idle_sleep

    @property
    def stats(self) -> RelayStats:
        s, r = self.sender, self.reader
        return RelayStats(
            records_read=r.delivered,
            records_sent=s.records_sent,
            datagrams_sent=s.datagrams_sent,
            bytes_sent=s.bytes_sent,
            ring_lost=r.lost,
            ring_laps=r.laps,
            send_errors=s.send_errors,
        )

    @property
    def closed(self) -> bool:
        """The producer closed the ring and the relay has sent everything before that."""
        return self.reader.closed

    def poll(self) -> int:
        """Read what the ring has and send it; returns the records sent."""
        before = self.sender.records_sent
        records = self.reader.read()
        if len(records):
            self.sender.send(records)
        return self.sender.records_sent - before

    def run(
        self, duration: float | None = None, stop: threading.Event | None = None, *, until_closed: bool = False
    ) -> RelayStats:
        """Busy-poll (sleeping ``idle_sleep`` when the ring is empty) until ``duration`` has
        passed, ``stop`` is set, or, with ``until_closed``, the producer closed the ring and
        everything has been sent."""
        deadline = None if duration is None else time.monotonic() + duration
        reader, sender, nap = self.reader, self.sender, self.idle_sleep
        while True:
            records = reader.read()
            if len(records):
                sender.send(records)
            else:
                if until_closed and reader.closed:
                    break
                time.sleep(nap)
            if stop is not None and stop.is_set():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self.stats

    def close(self) -> None:
        self.reader.close()
        self.sender.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- command line


def parse_address(text: str, *, allow_any_port: bool = False) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(numeric IPv4 host, port)``; ``argparse.ArgumentTypeError`` if bad.

    An empty host (``":5000"``) means every interface.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:5000)")
    port = int(port_text)
    if not (0 if allow_any_port else 1) <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} in {text!r} is out of range")
    try:
        return _resolve_ipv4(host, port), port
    except (OSError, UnicodeError):
        raise argparse.ArgumentTypeError(f"cannot resolve host {host!r} in {text!r} to an IPv4 address") from None


def _bind_address(text: str) -> tuple[str, int]:
    return parse_address(text, allow_any_port=True)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def _stream_id(text: str) -> int:
    if not text.isdigit() or int(text) > 0xFFFF_FFFF:
        raise argparse.ArgumentTypeError(f"stream id {text!r} must be an integer from 0 to {0xFFFF_FFFF}")
    return int(text)


def _datagram_size(text: str) -> int:
    smallest = DATAGRAM_HEADER_SIZE + RECORD_SIZE
    if not text.isdigit() or not smallest <= int(text) <= MAX_UDP_PAYLOAD:
        raise argparse.ArgumentTypeError(f"--max-datagram must be {smallest} to {MAX_UDP_PAYLOAD} bytes, got {text!r}")
    return int(text)


def add_relay_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Read a feed ring like any other reader and send its records as batched UDP datagrams "
        "(32-byte header: stream id, first sequence number, count; then the 64-byte records). "
        "A batch is split into datagrams at the size limit and wherever the relay lost records "
        "to the ring, so receivers see every loss as a gap."
    )
    p.add_argument("--ring", required=True, help="feed ring name in $QUAYSIDE_SHM_DIR (default /dev/shm), or a path")
    p.add_argument(
        "--dest", required=True, type=parse_address, metavar="HOST:PORT", help="unicast or multicast IPv4 destination"
    )
    p.add_argument("--stream-id", type=_stream_id, default=1, help="stream id in every datagram header (default: 1)")
    p.add_argument(
        "--max-datagram",
        type=_datagram_size,
        default=DEFAULT_MAX_DATAGRAM,
        metavar="BYTES",
        help="UDP payload limit, header included: 1472 (default) fits a 1500-byte MTU; "
        f"up to {MAX_UDP_PAYLOAD} on loopback or jumbo frames",
    )
    p.add_argument(
        "--start",
        choices=["live", "oldest"],
        default="live",
        help="begin at the producer's position (live, default) or at the oldest record in the ring",
    )
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds (default: run on)")
    p.add_argument("--until-closed", action="store_true", help="stop once the producer has closed the ring")
    p.add_argument("--ttl", type=int, default=1, help="multicast TTL (default: 1, this subnet only)")
    p.add_argument("--interface", metavar="ADDR", help="multicast: address of the interface to send from")
    p.add_argument(
        "--interval",
        type=_positive_float,
        default=0.0,
        metavar="S",
        help="print stats every S seconds (default: 0, only at the end)",
    )
    p.add_argument("--json", action="store_true", help="print JSON lines: ready, stats, final")


def _emit(event: str, payload: dict, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps({"event": event, **payload}), flush=True)
    else:
        print(text, flush=True)


def _stop_on_signals(stop: threading.Event) -> dict:
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())
    return previous


def _relay_line(stats: RelayStats, elapsed: float) -> str:
    return (
        f"{elapsed:7.1f}s  sent {stats.records_sent:,} records in {stats.datagrams_sent:,} datagrams  "
        f"ring lost {stats.ring_lost:,} (laps {stats.ring_laps:,})  send errors {stats.send_errors:,}"
    )


def relay_main(args: argparse.Namespace) -> int:
    from loguru import logger

    from quayside.core.feed.segment import RingLayoutError

    try:
        relay = Relay(
            args.ring,
            args.dest,
            stream_id=args.stream_id,
            max_datagram=args.max_datagram,
            start=args.start,
            multicast_ttl=args.ttl,
            interface=args.interface,
        )
    except (FileNotFoundError, RingLayoutError, OSError) as exc:
        print(f"quayside feed relay: error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    dest = f"{args.dest[0]}:{args.dest[1]}"
    logger.info("relaying ring {} to {} as stream {}", args.ring, dest, args.stream_id)
    started = time.monotonic()
    ready = {"ring": str(relay.reader.segment.path), "dest": dest, "stream_id": args.stream_id}
    ready["records_per_datagram"] = relay.sender.max_records
    ready["position"] = relay.reader.position
    text = f"relay: ring {ready['ring']} from position {ready['position']:,} to {dest}, stream {args.stream_id}"
    _emit("ready", ready, args.json, text + f", up to {relay.sender.max_records} records per datagram")
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            left = None if args.duration is None else args.duration - elapsed
            if left is not None and left <= 0:
                break
            chunk = args.interval or None
            if chunk is not None and left is not None:
                chunk = min(chunk, left)
            elif chunk is None:
                chunk = left
            stats = relay.run(chunk, stop, until_closed=args.until_closed)
            if args.until_closed and relay.closed:
                break
            if args.interval:
                elapsed = time.monotonic() - started
                _emit("stats", asdict(stats) | {"elapsed": round(elapsed, 3)}, args.json, _relay_line(stats, elapsed))
        stats = relay.stats
        elapsed = time.monotonic() - started
        final = asdict(stats) | {"elapsed": round(elapsed, 3), "closed": relay.closed}
        _emit("final", final, args.json, _relay_line(stats, elapsed) + (" (ring closed)" if relay.closed else ""))
    finally:
        relay.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("relay stopped after {} records in {} datagrams", stats.records_sent, stats.datagrams_sent)
    return 0


def add_receive_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Receive relayed UDP datagrams, check every sequence number and print what arrived: "
        "records, gaps (missing now + written off as lost), reordered, duplicates, and the "
        "datagrams dropped as malformed, truncated or foreign."
    )
    p.add_argument(
        "--bind",
        required=True,
        type=_bind_address,
        metavar="HOST:PORT",
        help="address to listen on (':PORT' for every interface; port 0 picks a free one)",
    )
    p.add_argument("--group", metavar="ADDR", help="join this IPv4 multicast group")
    p.add_argument("--interface", metavar="ADDR", help="multicast: address of the interface to join on")
    p.add_argument(
        "--stream", type=_stream_id, action="append", metavar="N", help="accept only this stream id (repeatable)"
    )
    p.add_argument("--rcvbuf", type=int, default=8 << 20, metavar="BYTES", help="socket receive buffer (default 8 MiB)")
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds (default: run on)")
    p.add_argument(
        "--interval", type=_positive_float, default=1.0, metavar="S", help="print stats every S seconds (default 1)"
    )
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")


def _receiver_line(stats: ReceiverStats, elapsed: float) -> str:
    rate = stats.records / elapsed if elapsed > 0 else 0.0
    return (
        f"{elapsed:7.1f}s  records {stats.records:,} ({rate:,.0f}/s) in {stats.datagrams:,} datagrams  "
        f"gaps {stats.gaps:,} (missing {stats.missing:,}, lost {stats.lost:,})  reordered {stats.reordered:,}  "
        f"duplicates {stats.duplicates:,}  stale {stats.stale:,}  malformed {stats.malformed:,}  "
        f"truncated {stats.truncated:,}  foreign {stats.foreign:,}/{stats.foreign_records:,}"
    )


def receive_main(args: argparse.Namespace) -> int:
    try:
        receiver = UdpReceiver(
            args.bind, group=args.group, interface=args.interface, rcvbuf=args.rcvbuf, streams=args.stream
        )
    except (OSError, ValueError) as exc:
        print(f"quayside feed receive: error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    started = time.monotonic()
    next_report = started + args.interval if args.interval else float("inf")
    host, port = receiver.address
    _emit("ready", {"bind": f"{host}:{port}"}, args.json, f"receiving on {host}:{port}")
    try:
        while not stop.is_set():
            receiver.poll(timeout=0.05)
            now = time.monotonic()
            if args.duration is not None and now - started >= args.duration:
                break
            if now >= next_report:
                next_report += args.interval
                stats = receiver.stats
                _emit(
                    "stats",
                    stats.to_dict() | {"elapsed": round(now - started, 3)},
                    args.json,
                    _receiver_line(stats, now - started),
                )
        receiver.poll()
        stats, elapsed = receiver.stats, time.monotonic() - started
        _emit("final", stats.to_dict() | {"elapsed": round(elapsed, 3)}, args.json, _receiver_line(stats, elapsed))
    finally:
        receiver.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
