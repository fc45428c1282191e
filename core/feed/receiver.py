"""The UDP receiver: datagrams back into records, with exact accounting per stream.

A datagram (see :mod:`quayside.core.feed.udp`) is a ``datagram_header_dtype`` header and
``count`` records whose ``seq`` runs from ``first_seq``. The receiver accounts, per stream id,
for every sequence number from the stream's first datagram up to ``next_seq`` (one past the
highest seen) exactly once, as received, ``missing`` or ``lost``:

* ``missing`` — outstanding: skipped by a later datagram, may still arrive (a bounded window);
* ``lost`` — written off: outstanding for more than ``window`` records, pushed out of the
  ``max_ranges`` window of outstanding ranges, or left behind by a stream restart;
* ``gaps`` = ``missing + lost``: the records the receiver does not have (exact);
  ``gap_events`` counts the holes as they opened;
* ``reordered`` — arrived late and filled a gap (returned; no longer in ``gaps``);
* ``duplicates`` — already received (dropped); ``stale`` — older than everything the window
  still tracks (before the stream's first datagram, or written off), so unknowable (dropped);
* ``restarts`` — a datagram with lower sequence numbers but a later ``ts_sent`` than the newest
  one: the sender started again (e.g. a new ring), so a new epoch begins there and the
  outstanding gaps become ``lost``.

Whole datagrams dropped: ``truncated`` (shorter than the header, or than ``count`` records),
``malformed`` (bad magic, version or record size, ``count`` of 0 or above 1023, longer than
``count`` records, or records whose own ``seq`` disagrees with ``first_seq``), ``foreign``
(a stream not subscribed, or beyond ``max_streams``). Single records whose kind or version
:func:`quayside.core.wire.validate` rejects are dropped and counted in ``foreign_records``;
their sequence numbers still count as received. So, per stream without restarts::

    next_seq - first_seq == records + foreign_records + missing + lost

Loss after the last datagram received cannot be seen from sequence numbers alone: compare with
the sender's counts. The receiver never raises on datagram content and logs nothing. It
imports numpy, the standard library and the wire format only (support containers use it).
"""

from __future__ import annotations

import ipaddress
import select
import socket
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from quayside.core.wire import (
    DATAGRAM_HEADER_SIZE,
    DATAGRAM_MAGIC,
    DATAGRAM_VERSION,
    RECORD_SIZE,
    datagram_header_dtype,
    record_dtype,
    validate,
)

__all__ = ["MAX_UDP_PAYLOAD", "MAX_RECORDS_PER_DATAGRAM", "StreamStats", "ReceiverStats", "UdpReceiver"]

#: Largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP).
MAX_UDP_PAYLOAD = 65_507
MAX_RECORDS_PER_DATAGRAM = (MAX_UDP_PAYLOAD - DATAGRAM_HEADER_SIZE) // RECORD_SIZE  # 1023
_MAX_SEQ = (1 << 63) - 1  # ring positions are non-negative int64

_valid_table: np.ndarray | None = None


def _kind_version_table() -> np.ndarray:
    """``table[kind, version]``: does :func:`quayside.core.wire.validate` accept a record with
    that kind and version? Worked out once by asking ``validate`` itself about every pair (it
    looks at those two bytes only), so the rule stays in the wire module."""
    global _valid_table
    if _valid_table is None:
        probe = np.zeros((256 * 256, RECORD_SIZE), dtype=np.uint8)
        pairs = np.arange(256 * 256)
        probe[:, 0], probe[:, 1] = pairs >> 8, pairs & 0xFF
        _valid_table = validate(probe.view(record_dtype).reshape(-1)).reshape(256, 256)
    return _valid_table


def _resolve_ipv4(host: str, port: int) -> str:
    """A numeric IPv4 address for ``host`` ('' means any); ``OSError`` if it does not resolve."""
    if host in ("", "*"):
        return "0.0.0.0"
    infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    return infos[0][4][0]


@dataclass(frozen=True)
class StreamStats:
    """One stream's accounting (see the module docstring for the meaning of each counter)."""

    stream_id: int
    datagrams: int  # datagrams of this stream that passed the header checks
    records: int  # records returned to the caller
    first_seq: int  # first sequence number this receiver accounts for (this epoch)
    next_seq: int  # one past the highest sequence number seen
    gaps: int  # missing + lost
    gap_events: int  # holes opened (a datagram starting beyond next_seq)
    missing: int
    lost: int
    reordered: int
    duplicates: int
    stale: int
    foreign_records: int
    restarts: int  # the sender started again from lower sequence numbers (newer ts_sent)


@dataclass(frozen=True)
class ReceiverStats:
    """Totals over every stream, and the datagram-level counters."""

    datagrams: int  # every datagram handed in, whatever its content
    bytes: int
    records: int  # records returned to the caller
    malformed: int  # datagrams: bad magic, version, record size, count 0 or > 1023, too long, seq mismatch
    truncated: int  # datagrams shorter than the header, or than their count says
    foreign: int  # datagrams of a stream not subscribed (or beyond max_streams)
    foreign_records: int
    gaps: int
    gap_events: int
    missing: int
    lost: int
    reordered: int
    duplicates: int
    stale: int
    restarts: int
    streams: dict[int, StreamStats] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["streams"] = {str(k): v for k, v in out["streams"].items()}
        return out


class _Stream:
    __slots__ = (
        "datagrams",
        "duplicates",
        "first_seq",
        "floor",
        "foreign_records",
        "gap_events",
        "his",
        "last_ts",
        "los",
        "lost",
        "missing",
        "next_seq",
        "records",
        "reordered",
        "restarts",
        "stale",
        "stream_id",
    )

    def __init__(self, stream_id: int):
        self.stream_id = stream_id
        self.datagrams = self.records = self.first_seq = self.next_seq = self.floor = self.last_ts = 0
        self.los: list[int] = []  # outstanding ranges [lo, hi), ascending and disjoint
        self.his: list[int] = []
        self.missing = self.lost = self.gap_events = self.reordered = 0
        self.duplicates = self.stale = self.foreign_records = self.restarts = 0

    def write_off(self, window: int, max_ranges: int) -> None:
        """Give up on the oldest outstanding ranges beyond the window."""
        los, his = self.los, self.his
        horizon = self.next_seq - window
        while los and (his[0] <= horizon or len(los) > max_ranges):
            lo, hi = los.pop(0), his.pop(0)
            self.missing -= hi - lo
            self.lost += hi - lo
            self.floor = hi

    def snapshot(self) -> StreamStats:
        return StreamStats(
            stream_id=self.stream_id,
            datagrams=self.datagrams,
            records=self.records,
            first_seq=self.first_seq,
            next_seq=self.next_seq,
            gaps=self.missing + self.lost,
            gap_events=self.gap_events,
            missing=self.missing,
            lost=self.lost,
            reordered=self.reordered,
            duplicates=self.duplicates,
            stale=self.stale,
            foreign_records=self.foreign_records,
            restarts=self.restarts,
        )


class UdpReceiver:
    """Receives relayed datagrams and accounts for every sequence number, per stream.

    ``bind`` is ``(host, port)`` (port 0 picks a free one; see :attr:`address`), or ``None``
    for a receiver without a socket that is only given datagrams through :meth:`feed`.
    ``group`` joins an IPv4 multicast group (on ``interface``, an address; default any).
    ``streams`` subscribes to those stream ids only (default: all, up to ``max_streams``).
    Outstanding gaps are tracked for ``window`` records behind the newest, in at most
    ``max_ranges`` ranges per stream; older ones are written off as ``lost``. One
    :meth:`poll` returns at most ``max_batch`` records.
    """

    def __init__(
        self,
        bind: tuple[str, int] | None,
        *,
        group: str | None = None,
        interface: str | None = None,
        rcvbuf: int = 8 << 20,
        streams: Iterable[int] | None = None,
        window: int = 1 << 20,
        max_ranges: int = 1024,
        max_streams: int = 64,
        max_batch: int = 1 << 16,
    ):
        if window < 1 or max_ranges < 1 or max_streams < 1:
            raise ValueError("window, max_ranges and max_streams must be positive")
        if max_batch < MAX_RECORDS_PER_DATAGRAM + 1:
            raise ValueError(f"max_batch must be at least {MAX_RECORDS_PER_DATAGRAM + 1} records")
        self.window, self.max_ranges, self.max_streams = window, max_ranges, max_streams
        self.subscribed = None if streams is None else frozenset(int(s) for s in streams)
        self._streams: dict[int, _Stream] = {}
        self.datagrams = self.bytes = self.malformed = self.truncated = self.foreign = 0
        self._hdr = np.zeros(1, dtype=datagram_header_dtype)
        self._hdr_bytes = self._hdr.view(np.uint8)
        self._hdr_mv = memoryview(self._hdr_bytes)
        self._arena = np.zeros(max_batch, dtype=record_dtype)
        self._arena_bytes = self._arena.view(np.uint8)
        self._arena_rows = self._arena_bytes.reshape(max_batch, RECORD_SIZE)
        self._arena_mv = memoryview(self._arena_bytes)
        self._kind_version = self._arena_bytes.view("<u2")[:: RECORD_SIZE // 2]  # kind | version << 8
        self._valid = _kind_version_table().T.ravel()  # indexed by kind | version << 8
        self._arena_seq = self._arena["seq"]
        self._segments: list[tuple[_Stream, int, int]] = []
        self.sock: socket.socket | None = None
        self.rcvbuf = 0
        if bind is not None:
            self._open(bind, group, interface, rcvbuf)

    def _open(self, bind, group, interface, rcvbuf) -> None:
        host, port = bind
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if group is not None:
                if not ipaddress.ip_address(group).is_multicast:
                    raise ValueError(f"{group} is not an IPv4 multicast address")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((_resolve_ipv4(host, port), int(port)))
            if group is not None:
                mreq = socket.inet_aton(group) + socket.inet_aton(interface or "0.0.0.0")
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        if self.sock is None:
            raise RuntimeError("this receiver has no socket")
        return self.sock.getsockname()

    # -- the per-datagram path: no logging, no exceptions from content --------------------

    def _header(self, nbytes: int) -> tuple[int, int, int, int] | None:
        """Check the header in ``self._hdr``: stream id, count, first_seq and ts_sent, or None."""
        self.datagrams += 1
        self.bytes += nbytes
        if nbytes < DATAGRAM_HEADER_SIZE:
            self.truncated += 1
            return None
        magic, version, record_size, count, stream_id, _res, first, ts = self._hdr.item(0)
        if (
            magic != DATAGRAM_MAGIC
            or version != DATAGRAM_VERSION
            or record_size != RECORD_SIZE
            or not 1 <= count <= MAX_RECORDS_PER_DATAGRAM
            or first + count > _MAX_SEQ
        ):
            self.malformed += 1
            return None
        payload = nbytes - DATAGRAM_HEADER_SIZE
        if payload != count * RECORD_SIZE:
            if payload < count * RECORD_SIZE:
                self.truncated += 1
            else:
                self.malformed += 1
            return None
        return stream_id, count, first, ts

    def _accept(self, stream_id: int, count: int, a: int, ts: int, k: int) -> int:
        """Account for records ``[a, a+count)`` of ``stream_id`` sitting at arena index ``k``;
        move the ones the caller should get to ``arena[k:k+m]`` and return ``m``."""
        seqs = self._arena_seq
        if seqs[k] != a or seqs[k + count - 1] != a + count - 1:  # the records disagree with the header
            self.malformed += 1
            return 0
        st = self._streams.get(stream_id)
        if st is None:
            subscribed = self.subscribed
            if (subscribed is not None and stream_id not in subscribed) or len(self._streams) >= self.max_streams:
                self.foreign += 1
                return 0
            st = self._streams[stream_id] = _Stream(stream_id)
            st.first_seq = st.next_seq = st.floor = a
            st.last_ts = ts
        st.datagrams += 1
        b = a + count
        nxt = st.next_seq
        if a >= nxt:  # in order, or after a gap
            if a > nxt:
                st.los.append(nxt)
                st.his.append(a)
                st.missing += a - nxt
                st.gap_events += 1
            st.next_seq, st.last_ts = b, ts
            if st.los:
                st.write_off(self.window, self.max_ranges)
            st.records += count
            self._segments.append((st, k, k + count))
            return count
        if ts > st.last_ts:  # older sequence numbers sent later: the sender started again
            st.restarts += 1
            st.lost += st.missing
            st.missing = 0
            st.los.clear()
            st.his.clear()
            st.first_seq = st.floor = a
            st.next_seq, st.last_ts = b, ts
            st.records += count
            self._segments.append((st, k, k + count))
            return count
        keep: list[tuple[int, int]] = []  # sequence ranges to return
        if b > nxt:
            keep.append((nxt, b))
            st.next_seq, st.last_ts = b, ts
        old_end = min(b, nxt)
        lo_tracked = max(a, st.floor)
        if a < st.floor:
            st.stale += min(old_end, st.floor) - a
        if lo_tracked < old_end:
            filled = self._fill(st, lo_tracked, old_end, keep)
            st.reordered += filled
            st.duplicates += (old_end - lo_tracked) - filled
        if st.los:
            st.write_off(self.window, self.max_ranges)
        m = 0
        if keep:
            idx = np.concatenate([np.arange(lo - a, hi - a) for lo, hi in sorted(keep)])
            m = len(idx)
            self._arena_rows[k : k + m] = self._arena_rows[k + idx]
            st.records += m
            self._segments.append((st, k, k + m))
        return m

    @staticmethod
    def _fill(st: _Stream, a: int, c: int, keep: list[tuple[int, int]]) -> int:
        """Remove ``[a, c)`` from the outstanding ranges; the filled parts go to ``keep``."""
        los, his = st.los, st.his
        i = bisect_right(his, a)
        filled = 0
        while i < len(los) and los[i] < c:
            lo, hi = los[i], his[i]
            s, e = max(lo, a), min(hi, c)
            keep.append((s, e))
            filled += e - s
            pieces = ([(lo, s)] if lo < s else []) + ([(e, hi)] if e < hi else [])
            los[i : i + 1] = [p[0] for p in pieces]
            his[i : i + 1] = [p[1] for p in pieces]
            i += len(pieces)
        st.missing -= filled
        return filled

    def _finish(self, k: int) -> np.ndarray:
        """Drop the records whose kind or version the wire format rejects from ``arena[:k]``
        and return a copy of the rest."""
        segments, self._segments = self._segments, []
        ok = self._valid[self._kind_version[:k]]
        if ok.all():
            return np.frombuffer(bytearray(self._arena_mv[: k * RECORD_SIZE]), dtype=record_dtype)
        for st, lo, hi in segments:
            bad = int(hi - lo - np.count_nonzero(ok[lo:hi]))
            st.foreign_records += bad
            st.records -= bad
        return np.frombuffer(bytearray(self._arena_rows[:k][ok]), dtype=record_dtype)

    # -- public -----------------------------------------------------------------------------

    def feed(self, datagram: bytes | bytearray | memoryview) -> np.ndarray:
        """Account for one datagram given as bytes; returns its accepted records (a copy)."""
        data = np.frombuffer(datagram, dtype=np.uint8)
        n = len(data)
        h = min(n, DATAGRAM_HEADER_SIZE)
        self._hdr_bytes[:h] = data[:h]
        parsed = self._header(n)
        if parsed is None:
            return self._finish(0)
        stream_id, count, first, ts = parsed
        self._arena_bytes[: count * RECORD_SIZE] = data[DATAGRAM_HEADER_SIZE:]
        return self._finish(self._accept(stream_id, count, first, ts, 0))

    def poll(self, timeout: float = 0.0, max_datagrams: int = 4096) -> np.ndarray:
        """Receive up to ``max_datagrams`` waiting datagrams (waiting up to ``timeout`` seconds
        for the first) and return their accepted records (a copy, possibly empty)."""
        sock = self.sock
        if sock is None:
            raise RuntimeError("this receiver has no socket; use feed()")
        hdr_mv, arena_mv = self._hdr_mv, self._arena_mv
        limit = len(self._arena) - MAX_RECORDS_PER_DATAGRAM
        k = 0
        waited = timeout <= 0
        got = 0
        while got < max_datagrams and k <= limit:
            try:
                nbytes, _, flags, _ = sock.recvmsg_into([hdr_mv, arena_mv[k * RECORD_SIZE :]])
            except BlockingIOError:
                if waited or got:
                    break
                waited = True
                self._poller.poll(timeout * 1000.0)
                continue
            except OSError:
                break
            got += 1
            if flags & socket.MSG_TRUNC:  # larger than any datagram we could have sent
                self.datagrams += 1
                self.bytes += nbytes
                self.malformed += 1
                continue
            parsed = self._header(nbytes)
            if parsed is not None:
                stream_id, count, first, ts = parsed
                k += self._accept(stream_id, count, first, ts, k)
        return self._finish(k)

    @property
    def stats(self) -> ReceiverStats:
        streams = {sid: st.snapshot() for sid, st in self._streams.items()}

        def total(name: str) -> int:
            return sum(getattr(s, name) for s in streams.values())

        return ReceiverStats(
            datagrams=self.datagrams,
            bytes=self.bytes,
            records=total("records"),
            malformed=self.malformed,
            truncated=self.truncated,
            foreign=self.foreign,
            foreign_records=total("foreign_records"),
            gaps=total("gaps"),
            gap_events=total("gap_events"),
            missing=total("missing"),
            lost=total("lost"),
            reordered=total("reordered"),
            duplicates=total("duplicates"),
            stale=total("stale"),
            restarts=total("restarts"),
            streams=streams,
        )

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
