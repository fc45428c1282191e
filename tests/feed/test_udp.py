"""The UDP relay and receiver: exact gap / duplicate / reorder accounting (through ``feed`` and
through a real 127.0.0.1 socket), fuzzed datagrams that must never raise, the sender's
datagram boundaries, a real relay subprocess reading a real ring, and the demo command.
Loopback only; no timing assertions; every wait has a generous deadline."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quayside.cli import main as cli_main
from quayside.core.feed.ring import FeedWriter
from quayside.core.feed.udp import (
    MAX_RECORDS_PER_DATAGRAM,
    Relay,
    UdpReceiver,
    UdpSender,
    encode_datagram,
)
from quayside.core.wire import (
    DATAGRAM_HEADER_SIZE,
    RECORD_SIZE,
    RecordKind,
    datagram_header_dtype,
    record_dtype,
    validate,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WAIT = 60.0  # seconds: generous, for a loaded 2-core machine


def records(lo: int, hi: int, *, seed: int = 0, kind: int = RecordKind.QUOTE) -> np.ndarray:
    """Records with sequence numbers ``[lo, hi)``, a valid kind and version, random payload."""
    rng = np.random.default_rng(seed + lo)
    out = np.frombuffer(rng.bytes((hi - lo) * RECORD_SIZE), dtype=record_dtype).copy()
    out["kind"], out["version"], out["seq"] = kind, 1, np.arange(lo, hi)
    return out


def dgram(lo: int, hi: int, *, stream: int = 1, ts: int | None = None) -> bytes:
    """A datagram of records ``[lo, hi)``; ``ts_sent`` grows with the sequence, as a sender's does."""
    return encode_datagram(records(lo, hi), stream_id=stream, ts_sent=lo if ts is None else ts)


def seqs(recs: np.ndarray) -> list[int]:
    return recs["seq"].tolist()


def invariant_holds(rx: UdpReceiver) -> None:
    """Every datagram lands in one bucket; every sequence number of a stream is accounted once."""
    s = rx.stats
    assert s.datagrams == sum(v.datagrams for v in s.streams.values()) + s.malformed + s.truncated + s.foreign
    for v in s.streams.values():
        if v.restarts == 0:
            assert v.next_seq - v.first_seq == v.records + v.foreign_records + v.missing + v.lost
        assert v.gaps == v.missing + v.lost >= 0 and v.missing >= 0


# --------------------------------------------------------------------------- accounting


# (datagram range, records returned, then the cumulative counters after it)
SCENARIO = [
    ((0, 10), range(0, 10), dict(gaps=0, missing=0, reordered=0, duplicates=0, gap_events=0)),
    ((20, 30), range(20, 30), dict(gaps=10, missing=10, reordered=0, duplicates=0, gap_events=1)),
    ((10, 20), range(10, 20), dict(gaps=0, missing=0, reordered=10, duplicates=0, gap_events=1)),
    ((10, 20), [], dict(gaps=0, missing=0, reordered=10, duplicates=10, gap_events=1)),
    ((40, 50), range(40, 50), dict(gaps=10, missing=10, reordered=10, duplicates=10, gap_events=2)),
    ((35, 45), range(35, 40), dict(gaps=5, missing=5, reordered=15, duplicates=15, gap_events=2)),
    ((50, 60), range(50, 60), dict(gaps=5, missing=5, reordered=15, duplicates=15, gap_events=2)),
    ((28, 33), range(30, 33), dict(gaps=2, missing=2, reordered=18, duplicates=17, gap_events=2)),
]


def check_final(rx: UdpReceiver) -> None:
    s = rx.stats
    assert (s.records, s.gaps, s.missing, s.lost, s.reordered, s.duplicates, s.stale) == (58, 2, 2, 0, 18, 17, 0)
    assert (s.malformed, s.truncated, s.foreign, s.foreign_records) == (0, 0, 0, 0)
    assert s.streams[1].next_seq == 60 and s.streams[1].first_seq == 0
    invariant_holds(rx)


def test_gap_duplicate_reorder_counts_through_feed():
    rx = UdpReceiver(None)
    for (lo, hi), expect_seqs, expect in SCENARIO:
        got = rx.feed(dgram(lo, hi))
        assert seqs(got) == list(expect_seqs)
        assert got.tobytes() == records(lo, hi)[np.isin(np.arange(lo, hi), list(expect_seqs))].tobytes()
        stream = rx.stats.streams[1]
        assert {k: getattr(stream, k) for k in expect} == expect, (lo, hi)
    check_final(rx)


def test_gap_duplicate_reorder_counts_through_a_socket():
    with UdpReceiver(("127.0.0.1", 0)) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for n, ((lo, hi), expect_seqs, _) in enumerate(SCENARIO, 1):
            tx.sendto(dgram(lo, hi), rx.address)
            got = []
            deadline = time.monotonic() + WAIT
            while rx.datagrams < n and time.monotonic() < deadline:  # one at a time: the order is ours
                got.append(rx.poll(timeout=0.1))
            assert rx.datagrams == n
            assert seqs(np.concatenate(got)) == list(expect_seqs)
        check_final(rx)


def test_each_sequence_number_is_returned_at_most_once_in_any_order():
    rx = UdpReceiver(None)
    order = [(100, 110), (130, 140), (120, 125), (110, 130), (100, 140), (140, 141), (125, 126)]
    got = [s for lo, hi in order for s in seqs(rx.feed(dgram(lo, hi)))]
    assert sorted(got) == list(range(100, 141)) and len(got) == len(set(got))
    invariant_holds(rx)


def test_window_of_outstanding_ranges_is_bounded():
    rx = UdpReceiver(None, max_ranges=3)
    for lo in range(0, 100, 20):  # holes [10,20) [30,40) [50,60) [70,80)
        rx.feed(dgram(lo, lo + 10))
    s = rx.stats.streams[1]
    assert (s.gap_events, s.missing, s.lost, s.gaps) == (4, 30, 10, 40)
    assert seqs(rx.feed(dgram(10, 20))) == []  # written off: older than anything tracked
    assert seqs(rx.feed(dgram(30, 40))) == list(range(30, 40))  # still tracked: recovered
    s = rx.stats.streams[1]
    assert (s.stale, s.reordered, s.missing, s.lost, s.gaps) == (10, 10, 20, 10, 30)
    invariant_holds(rx)


def test_gaps_older_than_the_window_are_written_off():
    rx = UdpReceiver(None, window=100)
    rx.feed(dgram(0, 10))
    rx.feed(dgram(15, 20))
    assert rx.stats.streams[1].missing == 5
    rx.feed(dgram(20, 120))
    s = rx.stats.streams[1]
    assert (s.missing, s.lost, s.gaps) == (0, 5, 5)
    assert seqs(rx.feed(dgram(10, 15))) == [] and rx.stats.stale == 5
    invariant_holds(rx)


def test_a_restarted_sender_starts_a_new_epoch():
    rx = UdpReceiver(None)
    now = time.time_ns()
    rx.feed(dgram(1000, 1010, ts=now))
    rx.feed(dgram(1020, 1030, ts=now + 1))
    late = rx.feed(dgram(1010, 1015, ts=now - 5))  # older send time: reordering, not a restart
    assert seqs(late) == list(range(1010, 1015))
    assert seqs(rx.feed(dgram(0, 10, ts=now + 10))) == list(range(10))  # newer send time, lower seq
    s = rx.stats.streams[1]
    assert (s.restarts, s.first_seq, s.next_seq, s.lost, s.missing) == (1, 0, 10, 5, 0)


def test_streams_are_counted_apart_and_unsubscribed_ones_are_foreign():
    rx = UdpReceiver(None, streams=[1, 2])
    rx.feed(dgram(0, 5, stream=1))
    rx.feed(dgram(100, 105, stream=2))
    rx.feed(dgram(10, 15, stream=2))  # stream 2 went backwards with an older ts: stale
    assert seqs(rx.feed(dgram(0, 5, stream=3))) == []
    s = rx.stats
    assert s.foreign == 1 and set(s.streams) == {1, 2}
    assert s.streams[1].records == 5 and s.streams[2].records == 5 and s.streams[2].stale == 5
    capped = UdpReceiver(None, max_streams=2)
    for sid in (1, 2, 3):
        capped.feed(dgram(0, 1, stream=sid))
    assert capped.stats.foreign == 1 and set(capped.stats.streams) == {1, 2}


def test_records_of_unknown_kind_or_version_are_dropped_one_by_one():
    recs = records(0, 8)
    recs["kind"][2] = 200
    recs["version"][5] = 9
    rx = UdpReceiver(None)
    got = rx.feed(encode_datagram(recs, stream_id=1, ts_sent=0))
    assert seqs(got) == [0, 1, 3, 4, 6, 7]
    assert got.tobytes() == recs[[0, 1, 3, 4, 6, 7]].tobytes()
    s = rx.stats
    assert (s.foreign_records, s.records, s.gaps, s.foreign) == (2, 6, 0, 0)
    invariant_holds(rx)


# --------------------------------------------------------------------------- fuzzing


@FUZZ
@given(st.binary(max_size=3 * DATAGRAM_HEADER_SIZE + 4 * RECORD_SIZE))
def test_random_bytes_never_raise(data):
    rx = UdpReceiver(None, max_batch=2048)
    got = rx.feed(data)
    assert got.dtype == record_dtype
    assert rx.stats.datagrams == 1
    invariant_holds(rx)


@FUZZ
@given(st.integers(1, 40), st.data())
def test_truncated_datagrams_are_counted_as_truncated(count, data):
    full = dgram(0, count)
    cut = data.draw(st.integers(0, len(full) - 1))
    rx = UdpReceiver(None, max_batch=2048)
    assert len(rx.feed(full[:cut])) == 0
    assert (rx.stats.truncated, rx.stats.malformed, rx.stats.records) == (1, 0, 0)


@FUZZ
@given(st.integers(1, 40), st.binary(min_size=1, max_size=200))
def test_datagrams_longer_than_their_count_are_malformed(count, extra):
    rx = UdpReceiver(None, max_batch=2048)
    assert len(rx.feed(dgram(0, count) + extra)) == 0
    assert (rx.stats.malformed, rx.stats.truncated) == (1, 0)


HEADER_FIELDS = ["magic", "version", "record_size", "count", "stream_id", "first_seq", "ts_sent"]


@FUZZ
@given(st.sampled_from(HEADER_FIELDS), st.integers(0, 2**64 - 1), st.integers(1, 30))
def test_mutated_header_fields_land_in_the_right_bucket(name, value, count):
    raw = bytearray(dgram(1000, 1000 + count, stream=7))
    hdr = np.frombuffer(raw, dtype=datagram_header_dtype, count=1)
    kind = hdr.dtype.fields[name][0]
    value = value % (1 << (8 * kind.itemsize))
    if kind.kind == "i":
        value -= (1 << (8 * kind.itemsize - 1)) * 2 if value >= 1 << (8 * kind.itemsize - 1) else 0
    original = int(hdr[name][0])
    hdr[name] = value
    rx = UdpReceiver(None, streams=[7], max_batch=2048)
    got = rx.feed(bytes(raw))
    s = rx.stats
    if value == original or name == "ts_sent":
        expected = "accepted"
    elif name == "count":
        expected = "truncated" if count < value <= MAX_RECORDS_PER_DATAGRAM else "malformed"
    elif name == "stream_id":
        expected = "foreign"
    else:  # magic, version, record size, or a first_seq the records disagree with
        expected = "malformed"
    buckets = {"malformed": s.malformed, "truncated": s.truncated, "foreign": s.foreign, "accepted": s.records > 0}
    assert [k for k, v in buckets.items() if v] == [expected]
    assert len(got) == (count if expected == "accepted" else 0)
    invariant_holds(rx)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=40))
def test_wrong_record_kinds_are_counted_and_dropped(kinds_versions):
    recs = records(0, len(kinds_versions))
    recs["kind"] = [k for k, _ in kinds_versions]
    recs["version"] = [v for _, v in kinds_versions]
    ok = validate(recs)
    rx = UdpReceiver(None, max_batch=2048)
    got = rx.feed(encode_datagram(recs, stream_id=1))
    assert got.tobytes() == recs[ok].tobytes()
    s = rx.stats
    assert (s.foreign_records, s.records, s.gaps) == (int((~ok).sum()), int(ok.sum()), 0)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 30)), min_size=1, max_size=30))
def test_any_arrival_order_matches_a_simple_model(arrivals):
    """Datagrams of one sender (``ts_sent`` grows with the sequence) in any order, duplicated
    or overlapping: each number comes back at most once, counts match a set-based model."""
    rx = UdpReceiver(None, max_batch=2048)
    seen: set[int] = set()
    first = arrivals[0][0]
    returned, duplicates, stale, reordered, nxt = [], 0, 0, 0, first
    for lo, n in arrivals:
        returned += seqs(rx.feed(dgram(lo, lo + n, ts=0)))
        for s in range(lo, lo + n):
            if s < first:
                stale += 1
            elif s in seen:
                duplicates += 1
            else:
                reordered += s < nxt
                seen.add(s)
        nxt = max(nxt, lo + n)
    s = rx.stats
    assert sorted(returned) == sorted(seen) and len(returned) == len(set(returned))
    assert (s.duplicates, s.stale, s.reordered) == (duplicates, stale, reordered)
    assert s.missing == nxt - first - len(seen) and s.lost == 0 and s.restarts == 0
    invariant_holds(rx)


# --------------------------------------------------------------------------- sender and relay


def _raw_datagrams(sock: socket.socket, n: int) -> list[bytes]:
    out = []
    deadline = time.monotonic() + WAIT
    while len(out) < n and time.monotonic() < deadline:
        if select.select([sock], [], [], 0.1)[0]:
            out.append(sock.recv(65536))
    return out


def _headers(datagrams: list[bytes]) -> list[tuple[int, int]]:
    hdrs = [np.frombuffer(d, dtype=datagram_header_dtype, count=1)[0] for d in datagrams]
    return [(int(h["first_seq"]), int(h["count"])) for h in hdrs]


def test_sender_splits_at_gaps_and_at_the_size_limit():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        with UdpSender(rx.getsockname(), stream_id=9, max_datagram=DATAGRAM_HEADER_SIZE + 4 * RECORD_SIZE + 63) as tx:
            assert tx.max_records == 4
            # runs: 0..9, then 20..23 (two arrays, still consecutive), then 5..6 (backwards)
            batch = np.concatenate([records(0, 10), records(20, 23), records(23, 24), records(5, 7)])
            assert tx.send(batch) == 5
            assert (tx.datagrams_sent, tx.records_sent, tx.send_errors) == (5, 16, 0)
        datagrams = _raw_datagrams(rx, 5)
    expected = [(0, 4), (4, 4), (8, 2), (20, 4), (5, 2)]
    assert sorted(_headers(datagrams)) == sorted(expected)
    hdrs = np.frombuffer(b"".join(d[:DATAGRAM_HEADER_SIZE] for d in datagrams), dtype=datagram_header_dtype)
    assert set(hdrs["stream_id"].tolist()) == {9}
    by_first = {first: d[DATAGRAM_HEADER_SIZE:] for (first, _), d in zip(_headers(datagrams), datagrams, strict=True)}
    assert b"".join(by_first[first] for first, _ in expected) == batch.tobytes()


def test_sender_output_round_trips_through_the_receiver():
    with UdpReceiver(("127.0.0.1", 0)) as rx, UdpSender(rx.address, stream_id=4) as tx:
        batch = records(0, 1000)
        tx.send(batch[:300])
        tx.send(batch[310:])  # a gap of 10
        got = []
        deadline = time.monotonic() + WAIT
        while sum(map(len, got)) < 990 and time.monotonic() < deadline:
            got.append(rx.poll(timeout=0.1))
        got = np.concatenate(got)
        got = got[np.argsort(got["seq"], kind="stable")]  # loopback may, rarely, reorder under load
        assert got.tobytes() == np.concatenate([batch[:300], batch[310:]]).tobytes()
        s = rx.stats.streams[4]
        assert (s.gaps, s.duplicates, s.datagrams) == (10, 0, tx.datagrams_sent)


def test_multicast_destination_sets_ttl_and_loop():
    with UdpSender(("239.255.77.1", 5999), stream_id=1, multicast_ttl=3, interface="127.0.0.1") as tx:
        assert tx.multicast
        assert tx.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
        assert tx.sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
    with UdpSender(("127.0.0.1", 5999), stream_id=1) as tx:
        assert not tx.multicast


def test_sender_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_datagram"):
        UdpSender(("127.0.0.1", 5999), stream_id=1, max_datagram=64)
    with pytest.raises(ValueError, match="stream_id"):
        UdpSender(("127.0.0.1", 5999), stream_id=-1)
    with pytest.raises(ValueError, match="consecutive"):
        encode_datagram(np.concatenate([records(0, 2), records(3, 4)]), stream_id=1)
    with pytest.raises(ValueError, match="1 to"):
        encode_datagram(records(0, MAX_RECORDS_PER_DATAGRAM + 1), stream_id=1)


def _drain(rx: UdpReceiver, n: int) -> np.ndarray:
    got = []
    deadline = time.monotonic() + WAIT
    while sum(map(len, got)) < n and time.monotonic() < deadline:
        got.append(rx.poll(timeout=0.1))
    return np.concatenate(got) if got else np.empty(0, record_dtype)


def test_relay_reports_ring_loss_as_a_gap_the_receiver_sees(shm_dir):
    with FeedWriter(shm_dir / "feed", capacity=16) as writer, UdpReceiver(("127.0.0.1", 0)) as rx:
        relay = Relay(shm_dir / "feed", rx.address, stream_id=2, start="oldest")
        writer.publish(records(0, 10))
        assert relay.poll() == 10
        writer.publish(records(0, 40))  # the relay is now more than a lap behind
        relay.poll()
        writer.publish(records(0, 5))
        relay.poll()
        stats = relay.stats
        assert stats.ring_lost > 0 and stats.records_read + stats.ring_lost == 55
        got = _drain(rx, stats.records_sent)
        assert len(got) == stats.records_sent == stats.records_read
        assert sorted(seqs(got))[:10] == list(range(10)) and max(seqs(got)) == 54
        assert rx.stats.gaps == stats.ring_lost  # every record the ring overwrote is a gap downstream
        relay.close()


def _start_relay(ring, port: int, *extra: str) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, "-m", "quayside.cli", "feed", "relay", "--ring", str(ring)]
    cmd += ["--dest", f"127.0.0.1:{port}", "--stream-id", "5", "--json", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], WAIT)
    if not ready:
        proc.kill()
        pytest.fail("the relay printed nothing in time: " + proc.communicate()[1])
    line = proc.stdout.readline()
    if not line:
        pytest.fail("the relay exited: " + proc.communicate()[1])
    return proc, json.loads(line)


def test_a_relay_subprocess_delivers_a_real_ring_intact(shm_dir):
    ring = shm_dir / "feed"
    with FeedWriter(ring, capacity=1 << 14) as writer, UdpReceiver(("127.0.0.1", 0)) as rx:
        proc, ready = _start_relay(ring, rx.address[1], "--start", "oldest", "--until-closed", "--max-datagram", "8992")
        try:
            assert ready["event"] == "ready" and ready["records_per_datagram"] == 140
            sent = records(0, 5000, seed=42)
            for lo in range(0, 5000, 700):
                writer.publish(sent[lo : lo + 700])
            writer.close(unlink=False)
            got = _drain(rx, 5000)
            out, err = proc.communicate(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    final = json.loads(out.splitlines()[-1])
    assert final["event"] == "final" and final["closed"] is True
    assert (final["records_sent"], final["ring_lost"], final["send_errors"]) == (5000, 0, 0)
    got = got[np.argsort(got["seq"], kind="stable")]
    assert got.tobytes() == sent.tobytes()  # seq was already each record's ring position
    s = rx.stats.streams[5]
    assert (s.records, s.gaps, s.duplicates, s.datagrams) == (5000, 0, 0, final["datagrams_sent"])
    assert "Traceback" not in err


def test_relay_stops_cleanly_on_sigterm(shm_dir):
    ring = shm_dir / "feed"
    with FeedWriter(ring, capacity=64), UdpReceiver(("127.0.0.1", 0)) as rx:
        proc, _ = _start_relay(ring, rx.address[1])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["event"] == "final"


def test_the_udp_modules_import_without_numba():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('numba', 'llvmlite'):\n"
        "            raise ImportError('numba is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import quayside.core.feed.udp, quayside.core.feed.receiver\n"
        "assert 'numba' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["relay", "--ring", "x", "--dest", "nonsense"], "is not HOST:PORT"),
        (["relay", "--ring", "x", "--dest", "127.0.0.1:99999"], "out of range"),
        (["relay", "--ring", "x", "--dest", "127.0.0.1:0"], "out of range"),
        (["relay", "--ring", "x", "--dest", "127.0.0.1:5000", "--max-datagram", "70000"], "--max-datagram"),
        (["receive", "--bind", "127.0.0.1"], "is not HOST:PORT"),
    ],
)
def test_bad_addresses_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["feed", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: quayside feed" in err and "Traceback" not in err


def test_relay_without_a_ring_says_so(shm_dir, capsys):
    assert cli_main(["feed", "relay", "--ring", str(shm_dir / "absent"), "--dest", "127.0.0.1:5000"]) == 1
    assert "no ring at" in capsys.readouterr().err


def test_receive_command_prints_stats(capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert cli_main(["feed", "receive", "--bind", f"127.0.0.1:{port}", "--duration", "0.3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "ready" and lines[-1]["event"] == "final"
    assert lines[-1]["datagrams"] == 0 and lines[-1]["streams"] == {}


def _run_demo(shm_dir, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QUAYSIDE_SHM_DIR=str(shm_dir))
    cmd = [sys.executable, "-m", "quayside.cli", "feed", "demo", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_demo_runs_and_accounts_for_every_record(shm_dir):
    done = _run_demo(shm_dir, "--duration", "0.5", "--rate", "20000", "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["published"] == 10_000
    assert r["reader"]["delivered"] + r["reader"]["lost"] == r["published"]
    assert r["relay"]["records_sent"] + r["relay"]["ring_lost"] <= r["published"]
    rx = r["receiver"]
    assert 0 < rx["records"] <= r["relay"]["records_sent"]
    assert rx["records"] + rx["gaps"] <= r["published"]
    assert (rx["malformed"], rx["truncated"], rx["foreign"], rx["duplicates"]) == (0, 0, 0, 0)
    assert set(r["last_quotes"]) == {"EURUSD", "AAPL", "ESZ6"}
    assert all(q["bid"] < q["ask"] for q in r["last_quotes"].values())
    assert list(shm_dir.iterdir()) == []  # the ring is gone


def test_demo_explains_a_busy_port(shm_dir):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        done = _run_demo(shm_dir, "--duration", "0.1", "--port", str(busy.getsockname()[1]))
    assert done.returncode == 1 and "cannot listen on 127.0.0.1" in done.stderr and "Traceback" not in done.stderr
    assert list(shm_dir.iterdir()) == []


def test_demo_prints_a_table(shm_dir):
    done = _run_demo(shm_dir, "--duration", "0.2", "--rate", "5000")
    assert done.returncode == 0, done.stderr
    for stage in ("producer", "reader", "relay", "receiver"):
        assert f"  {stage} " in done.stdout
    assert list(shm_dir.iterdir()) == []


def test_sender_header_struct_matches_the_wire_dtype():
    from quayside.core.feed.udp import _HEADER
    from quayside.core.wire import datagram_header_dtype

    packed = _HEADER.pack(0x51534431, 1, 64, 22, 7, 0, 123456789, -5)
    assert _HEADER.size == datagram_header_dtype.itemsize
    hdr = np.frombuffer(packed, datagram_header_dtype)[0]
    assert (hdr["magic"], hdr["count"], hdr["stream_id"], hdr["first_seq"], hdr["ts_sent"]) == (
        0x51534431,
        22,
        7,
        123456789,
        -5,
    )
