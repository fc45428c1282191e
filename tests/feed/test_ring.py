"""Unit tests of the rings and their segments, in one process, with the state built by hand.

The feed-reader tests run twice, against the Python ``FeedReader`` and against the jitted
``feed_read_nb``: both implement one protocol and must agree to the record. A "producer caught
in the act" is simulated exactly: a writable mapping of the same segment stores the header
words and slots that a producer in the middle of a batch would have stored, or a hook runs the
producer between the reader's load of the position and its copy of the slots.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from _stress_records import Tally, expected_words

import quayside.core.feed.ring as ring_module
from quayside.core.feed.nb import (
    S_DELIVERED,
    S_LAPS,
    S_LOST,
    S_POSITION,
    cmd_commit_nb,
    cmd_offer_nb,
    cmd_peek_nb,
    cmd_poll_nb,
    cmd_release_nb,
    cmd_try_claim_nb,
    feed_claim_nb,
    feed_commit_nb,
    feed_publish_nb,
    feed_read_nb,
    reader_state,
)
from quayside.core.feed.ring import CommandReader, CommandWriter, FeedReader, FeedWriter, RingResult
from quayside.core.feed.segment import (
    W_BACKPRESSURE,
    W_CACHED_CONSUMER,
    W_CONSUMER_PID,
    W_CONSUMER_POSITION,
    W_PRODUCER_CLOSED,
    W_PRODUCER_INTENT,
    W_PRODUCER_POSITION,
    W_RECORDS_OFFERED,
    RingLayoutError,
    RingType,
    attach_segment,
    create_segment,
)
from quayside.core.wire import SEGMENT_HEADER_SIZE, record_dtype, segment_header_dtype


def records(first: int, n: int) -> np.ndarray:
    """The checksummed records of positions ``[first, first + n)``, as ``record_dtype``."""
    return expected_words(np.arange(first, first + n, dtype=np.int64)).view(record_dtype).reshape(-1)


def words_of(recs: np.ndarray) -> np.ndarray:
    return recs.view(np.int64).reshape(-1, 8)


def publish(writer: FeedWriter, n: int) -> int:
    return writer.publish(records(writer.position, n))


class NbReader:
    """``feed_read_nb`` behind the same face as ``FeedReader`` (read -> (n, 8) int64)."""

    def __init__(self, path, *, start="live", batch=64):
        self.segment = attach_segment(path, RingType.FEED, writable=False)
        tail = int(self.segment.words[W_PRODUCER_POSITION])
        self.state = reader_state(tail if start == "live" else max(0, tail - self.segment.capacity))
        self.out = np.zeros((batch, 8), dtype=np.int64)

    def read(self, limit=None):
        n = feed_read_nb(self.segment.words, self.segment.slot_words, self.state, self.out[:limit])
        return self.out[:n]

    position = property(lambda self: int(self.state[S_POSITION]))
    lost = property(lambda self: int(self.state[S_LOST]))
    laps = property(lambda self: int(self.state[S_LAPS]))
    delivered = property(lambda self: int(self.state[S_DELIVERED]))

    def close(self):
        self.segment.close()


class PyReader:
    """``FeedReader``, returning its records as (n, 8) int64 like ``NbReader``."""

    def __init__(self, path, *, start="live", batch=64):
        self.reader = FeedReader(path, start=start, batch=batch)
        self.segment = self.reader.segment

    def read(self, limit=None):
        out = self.reader._buffer if limit is None else self.reader._buffer[:limit]
        return words_of(self.reader.read(out))

    def __getattr__(self, name):
        return getattr(self.reader, name)

    def close(self):
        self.reader.close()


@pytest.fixture(params=["python", "numba"])
def open_reader(request):
    kind = request.param
    opened = []

    def open_(path, **kw):
        r = (PyReader if kind == "python" else NbReader)(path, **kw)
        opened.append(r)
        return r

    open_.kind = kind
    yield open_
    for r in opened:
        r.close()


def check(reader, tally: Tally, limit=None) -> np.ndarray:
    """Read once, check the batch, and check the reader's books balance."""
    block = reader.read(limit)
    tally.add(block, reader.position)
    assert tally.corrupt == tally.misplaced == tally.disorder == 0
    assert reader.delivered == tally.delivered
    assert reader.delivered + reader.lost == reader.position - tally.start
    return block


# --------------------------------------------------------------------------- feed: writer


def test_feed_publish_wraps_around_and_stamps_seq(shm_dir):
    with FeedWriter(shm_dir / "f", capacity=8) as w:
        assert publish(w, 5) == 0
        assert publish(w, 6) == 5
        assert w.position == 11
        assert list(w.segment.slots["seq"]) == [8, 9, 10, 3, 4, 5, 6, 7]
        assert (w.segment.slot_words.view(np.uint64) == expected_words(w.segment.slots["seq"])).all()
        assert w.segment.words[W_PRODUCER_POSITION] == w.segment.words[W_PRODUCER_INTENT] == 11


def test_feed_publish_stamps_seq_over_whatever_the_caller_wrote(shm_dir):
    with FeedWriter(shm_dir / "f", capacity=8) as w:
        recs = records(100, 3)
        w.publish(recs)
        assert list(w.segment.slots["seq"][:3]) == [0, 1, 2]
        assert list(recs["seq"]) == [100, 101, 102]  # the caller's array is left alone


def test_feed_batch_larger_than_the_ring_is_written_a_lap_at_a_time(shm_dir, open_reader):
    with FeedWriter(shm_dir / "f", capacity=8) as w:
        before = open_reader(w.segment.path)
        assert publish(w, 20) == 0
        assert w.position == 20 and w.segment.words[W_PRODUCER_INTENT] == 20
        assert list(w.segment.slots["seq"]) == [16, 17, 18, 19, 12, 13, 14, 15]
        tally = Tally(0)
        assert len(check(before, tally)) == 0  # lapped while it was away: it jumps to live data
        assert (before.position, before.lost, before.laps) == (20, 20, 1)
        after = open_reader(w.segment.path, start="oldest")
        assert after.position == 12
        late = Tally(12)
        assert list(check(after, late)[:, 1]) == list(range(12, 20))


def test_feed_numba_claim_commit_and_publish_wrap(shm_dir):
    seg = create_segment(shm_dir / "f", RingType.FEED, 8)
    words, slots = seg.words, seg.slot_words
    assert feed_publish_nb(words, slots, words_of(records(0, 6))) == 0
    pos = feed_claim_nb(words, 5)
    assert pos == 6 and words[W_PRODUCER_INTENT] == 11 and words[W_PRODUCER_POSITION] == 6
    for i in range(5):
        slots[(pos + i) & 7] = words_of(records(pos + i, 1))[0]
    feed_commit_nb(words, pos + 5)
    assert words[W_PRODUCER_POSITION] == 11
    assert list(seg.slots["seq"]) == [8, 9, 10, 3, 4, 5, 6, 7]
    assert (slots.view(np.uint64) == expected_words(seg.slots["seq"])).all()
    seg.close()


# --------------------------------------------------------------------------- feed: readers


def test_feed_reader_start_live_or_oldest(shm_dir, open_reader):
    with FeedWriter(shm_dir / "f", capacity=8) as w:
        publish(w, 3)
        live = open_reader(w.segment.path)
        assert live.position == 3 and len(live.read()) == 0
        oldest = open_reader(w.segment.path, start="oldest")
        assert list(check(oldest, Tally(0))[:, 1]) == [0, 1, 2]
        publish(w, 2)
        assert list(check(live, Tally(3))[:, 1]) == [3, 4]


def test_feed_reader_refuses_an_unknown_start(shm_dir):
    with FeedWriter(shm_dir / "f", capacity=8) as w, pytest.raises(ValueError, match="'live' or 'oldest'"):
        FeedReader(w.segment.path, start="newest")


def test_feed_reader_reads_across_the_wrap_in_small_batches(shm_dir, open_reader):
    with FeedWriter(shm_dir / "f", capacity=8) as w:
        r = open_reader(w.segment.path)
        tally = Tally(0)
        for n in (5, 7, 8, 3, 1, 8):
            publish(w, n)
            while len(check(r, tally, limit=3)):
                pass
        assert (r.position, r.lost, tally.delivered) == (32, 0, 32)
        assert tally.finish(r.position)["gaps"] == 0


def test_feed_reader_lapped_while_away_counts_exactly_and_resynchronises(shm_dir, open_reader):
    with FeedWriter(shm_dir / "f", capacity=8) as w:
        r = open_reader(w.segment.path)
        tally = Tally(0)
        publish(w, 5)
        assert len(check(r, tally, limit=2)) == 2  # positions 0, 1; 2..4 still unread
        publish(w, 8)  # now 13: position 2 was overwritten by 10, the reader is a lap behind
        assert len(check(r, tally)) == 0
        assert (r.position, r.lost, r.laps) == (13, 11, 1)
        publish(w, 3)
        assert list(check(r, tally)[:, 1]) == [13, 14, 15]
        report = tally.finish(r.position)
        assert report["gaps"] == r.lost == 11
        assert report["delivered"] + r.lost == 16


def _publish_by_hand(seg, first: int, n: int, *, commit: bool) -> None:
    """Do what a producer does for ``[first, first+n)``: announce the intent, overwrite the
    slots; and publish the position only if ``commit`` (otherwise it is caught mid-batch)."""
    seg.words[W_PRODUCER_INTENT] = first + n
    for p in range(first, first + n):
        seg.slot_words[p & seg.mask] = words_of(records(p, 1))[0]
    if commit:
        seg.words[W_PRODUCER_POSITION] = first + n


def test_feed_reader_drops_slots_a_producer_is_overwriting(shm_dir, open_reader):
    """The producer has announced ``[8, 11)`` and overwritten slots 0..2, but not published:
    the copies of positions 0..2 hold seq 8..10 and must never be delivered."""
    seg = create_segment(shm_dir / "f", RingType.FEED, 8)
    r = open_reader(seg.path)
    _publish_by_hand(seg, 0, 8, commit=True)
    _publish_by_hand(seg, 8, 3, commit=False)
    tally = Tally(0)
    assert list(check(r, tally)[:, 1]) == [3, 4, 5, 6, 7]
    assert (r.position, r.lost, r.laps, r.delivered) == (8, 3, 1, 5)
    seg.words[W_PRODUCER_POSITION] = 11
    assert list(check(r, tally)[:, 1]) == [8, 9, 10]
    assert tally.finish(r.position)["gaps"] == r.lost == 3
    seg.close()


def test_feed_reader_whose_whole_copy_may_be_overwritten_jumps_to_the_producer(shm_dir, open_reader):
    """Reading 4 of 8 records while the producer has announced ``[8, 13)``: every copied
    position is below intent - capacity, so all are dropped and the reader resynchronises."""
    seg = create_segment(shm_dir / "f", RingType.FEED, 8)
    r = open_reader(seg.path)
    _publish_by_hand(seg, 0, 8, commit=True)
    _publish_by_hand(seg, 8, 5, commit=False)
    tally = Tally(0)
    assert len(check(r, tally, limit=4)) == 0
    assert (r.position, r.lost, r.laps) == (8, 8, 1)  # to the published position: exact, nothing skipped twice
    seg.words[W_PRODUCER_POSITION] = 13
    assert list(check(r, tally)[:, 1]) == [8, 9, 10, 11, 12]
    assert tally.finish(r.position)["gaps"] == r.lost == 8
    seg.close()


@pytest.mark.parametrize(
    ("during_copy", "delivered_seq", "lost"),
    [
        (3, [3, 4, 5, 6, 7], 3),  # overwrites slots 0..2 before they are copied
        (6, [6, 7], 6),  # overwrites slots 0..5, half of them after the copy began
        (9, [], 17),  # more than a lap: everything copied is suspect, jump to 17
    ],
)
def test_feed_python_reader_with_a_producer_writing_during_its_copy(
    shm_dir, monkeypatch, during_copy, delivered_seq, lost
):
    """A real ``FeedWriter`` publishes between the reader's load of the producer position and
    the end of its copy (half the slots copied before, half after)."""
    with FeedWriter(shm_dir / "f", capacity=8) as w:
        reader = FeedReader(w.segment.path)
        publish(w, 8)
        real_copy_out = ring_module._copy_out

        def copy_out_while_the_producer_writes(seg, pos, out):
            half = len(out) // 2
            real_copy_out(seg, pos, out[:half])
            publish(w, during_copy)
            real_copy_out(seg, pos + half, out[half:])

        monkeypatch.setattr(ring_module, "_copy_out", copy_out_while_the_producer_writes)
        got = words_of(reader.read())
        monkeypatch.undo()
        tally = Tally(0)
        tally.add(got, reader.position)
        assert list(got[:, 1]) == delivered_seq
        assert tally.corrupt == tally.misplaced == 0
        assert reader.lost == lost and reader.laps == 1
        assert reader.delivered + reader.lost == reader.position
        rest = words_of(reader.read())
        tally.add(rest, reader.position)
        assert reader.position == w.position == 8 + during_copy
        assert tally.corrupt == tally.misplaced == 0
        assert tally.finish(reader.position)["gaps"] == reader.lost
        reader.close()


@pytest.mark.parametrize("seed", range(6))
def test_feed_random_interleavings_keep_the_books_exact(shm_dir, open_reader, seed):
    rng = np.random.default_rng(seed)
    with FeedWriter(shm_dir / "f", capacity=16) as w:
        r = open_reader(w.segment.path, batch=32)
        tally = Tally(0)
        for _ in range(300):
            if rng.random() < 0.5:
                publish(w, int(rng.choice([0, 1, 3, 7, 15, 16, 17, 40])))
            else:
                check(r, tally, limit=int(rng.integers(1, 33)))
        while check(r, tally).size or r.position < w.position:
            pass
        report = tally.finish(r.position)
        assert r.position == w.position
        assert report["gaps"] == r.lost
        assert report["delivered"] + r.lost == w.position


def test_feed_closed_stream(shm_dir):
    w = FeedWriter(shm_dir / "f", capacity=8)
    r = FeedReader(w.segment.path)
    publish(w, 3)
    w.close(unlink=False)
    assert w.segment.path.exists()
    assert r.closed is False  # three records still to read
    assert len(r.read()) == 3
    assert r.closed is True
    r.close()
    w.segment.unlink()


def test_feed_writer_close_unlinks_but_readers_keep_their_mapping(shm_dir):
    w = FeedWriter(shm_dir / "f", capacity=8)
    r = FeedReader(w.segment.path)
    publish(w, 4)
    path = w.segment.path
    w.close()
    assert not path.exists()
    assert list(r.read()["seq"]) == [0, 1, 2, 3]
    assert r.closed
    r.close()


def test_feed_writer_refuses_an_existing_ring_unless_replacing(shm_dir):
    path = shm_dir / "f"
    stale = FeedWriter(path, capacity=8)
    publish(stale, 5)
    with pytest.raises(FileExistsError, match="exists"):
        FeedWriter(path, capacity=8)
    fresh = FeedWriter(path, capacity=8, replace=True)
    assert fresh.segment.words[W_PRODUCER_POSITION] == 0
    stale.close(unlink=False)
    fresh.close()


def test_feed_reader_maps_read_only_and_never_unlinks(shm_dir):
    with FeedWriter(shm_dir / "f", capacity=8) as w:
        r = FeedReader(w.segment.path)
        for array in (r.segment.words, r.segment.slot_words, r.segment.slots, r.segment.header):
            assert not array.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                array[0] = array[0]
            with pytest.raises(ValueError):
                array.flags.writeable = True
        inode = os.stat(w.segment.path).st_ino
        r.close()
        del r
        assert os.stat(w.segment.path).st_ino == inode


# --------------------------------------------------------------------------- command rings


def test_command_offer_back_pressure_result_and_counters(shm_dir):
    path = shm_dir / "c"
    w = CommandWriter(path, capacity=4)
    r = CommandReader(path, capacity=4)
    words = w.segment.words
    assert w.offer(records(0, 3)) == 0
    assert w.offer(records(3, 2)) == RingResult.BACK_PRESSURED  # 3 + 2 > 4: nothing written
    assert (w.position, w.backpressure, words[W_RECORDS_OFFERED]) == (3, 1, 5)
    assert words[W_CACHED_CONSUMER] == 0
    assert len(r.poll(np.empty(2, dtype=record_dtype))) == 2
    assert words[W_CACHED_CONSUMER] == 0  # the producer's copy is refreshed only when it looks full
    assert w.offer(records(3, 2)) == 3
    assert words[W_CACHED_CONSUMER] == 2
    assert (w.position, w.backpressure, words[W_RECORDS_OFFERED]) == (5, 1, 7)
    assert w.offer(records(5, 2)) == RingResult.BACK_PRESSURED
    assert w.backpressure == 2
    with pytest.raises(ValueError, match="cannot fit a ring of 4"):
        w.offer(records(0, 5))
    got = r.poll()
    assert list(got["seq"]) == [2, 3, 4]
    assert (words_of(got).view(np.uint64) == expected_words(got["seq"])).all()
    w.close()
    r.close()


def test_command_numba_back_pressure_result_and_counters(shm_dir):
    seg = create_segment(shm_dir / "c", RingType.COMMAND, 4)
    words, slots = seg.words, seg.slot_words
    src = words_of(records(0, 8))
    assert cmd_offer_nb(words, slots, src, 0, 3) == 0
    assert cmd_offer_nb(words, slots, src, 3, 2) == RingResult.BACK_PRESSURED
    assert cmd_try_claim_nb(words, 4, 2) == RingResult.BACK_PRESSURED
    assert (words[W_PRODUCER_POSITION], words[W_BACKPRESSURE], words[W_RECORDS_OFFERED]) == (3, 2, 7)
    assert cmd_try_claim_nb(words, 4, 1) == 3  # one slot is still free
    slots[3] = src[3]
    cmd_commit_nb(words, 4)
    pos, available = cmd_peek_nb(words)
    assert (pos, available) == (0, 4)
    cmd_release_nb(words, 2)
    assert cmd_offer_nb(words, slots, src, 4, 2) == 4
    assert words[W_CACHED_CONSUMER] == 2
    out = np.zeros((8, 8), dtype=np.int64)
    assert cmd_poll_nb(words, slots, out) == 4
    assert list(out[:4, 1]) == [2, 3, 4, 5]
    assert (out[:4].view(np.uint64) == expected_words(out[:4, 1])).all()
    assert words[W_CONSUMER_POSITION] == 6
    assert cmd_poll_nb(words, slots, out) == 0
    seg.close()


def test_command_peek_is_contiguous_up_to_the_wrap_and_release_consumes(shm_dir):
    path = shm_dir / "c"
    w = CommandWriter(path, capacity=4)
    r = CommandReader(path, capacity=4)
    w.offer(records(0, 3))
    assert len(r.poll()) == 3
    w.offer(records(3, 3))  # slots 3, 0, 1
    assert r.available() == 3
    view = r.peek()
    assert list(view["seq"]) == [3]  # up to the end of the ring
    assert np.shares_memory(view, r.segment.slots)  # zero-copy
    r.release(len(view))
    view = r.peek(limit=1)
    assert list(view["seq"]) == [4]
    view = r.peek()
    assert list(view["seq"]) == [4, 5]
    r.release(2)
    assert len(r.peek()) == 0 and r.position == 6
    w.close()
    r.close()


def test_command_release_refuses_more_than_is_available(shm_dir):
    path = shm_dir / "c"
    w = CommandWriter(path, capacity=4)
    r = CommandReader(path, capacity=4)
    w.offer(records(0, 3))
    with pytest.raises(ValueError, match="cannot release 4 records: only 3 are available"):
        r.release(4)
    with pytest.raises(ValueError, match="cannot release -1 records"):
        r.release(-1)
    assert r.position == 0
    r.release(3)
    with pytest.raises(ValueError, match="only 0 are available"):
        r.release(1)
    w.close()
    r.close()


def test_command_ends_restart_where_they_left_off(shm_dir):
    path = shm_dir / "c"
    w = CommandWriter(path, capacity=4)
    r = CommandReader(path, capacity=4)
    assert r.segment.words[W_CONSUMER_PID] == os.getpid()
    w.offer(records(0, 3))
    r.peek()
    r.release(1)
    w.close()
    r.close()
    header = attach_segment(path, RingType.COMMAND, writable=False).words
    assert header[W_CONSUMER_PID] == 0 and header[W_PRODUCER_CLOSED] == 1
    w2 = CommandWriter(path, capacity=4)
    assert header[W_PRODUCER_CLOSED] == 0  # a live producer again: consumers must not stop
    r2 = CommandReader(path, capacity=4)
    assert (w2.position, r2.position) == (3, 1)
    assert list(r2.poll()["seq"]) == [1, 2]
    assert w2.offer(records(3, 4)) == 3
    assert list(r2.poll()["seq"]) == [3, 4, 5, 6]
    w2.close()
    r2.close()


def test_command_ring_of_another_capacity_is_refused(shm_dir):
    path = shm_dir / "c"
    CommandWriter(path, capacity=4).close()
    with pytest.raises(RingLayoutError, match="capacity 4, wanted 8"):
        CommandReader(path, capacity=8)


# --------------------------------------------------------------------------- segment layout


@pytest.fixture
def ring_file(shm_dir):
    seg = create_segment(shm_dir / "r", RingType.FEED, 8)
    path = seg.path
    seg.close()
    return path


def _poke(path, field: str, value) -> None:
    offset = segment_header_dtype.fields[field][1]
    data = np.array([value], dtype=segment_header_dtype.fields[field][0]).tobytes()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("magic", b"NOTARING", "magic is b'NOTARING', expected b'QSIDERNG'"),
        ("layout_version", 2, "layout version 2, this build reads 1"),
        ("record_size", 128, "record size 128, expected 64"),
        ("header_size", 1024, "header size 1024, expected 512"),
        ("capacity", 6, "capacity 6 is not a power of two"),
        ("capacity", 16, "file is 1024 bytes, a ring of 16 slots is 1536"),
    ],
)
def test_layout_checks_name_the_file_and_the_problem(ring_file, field, value, message):
    _poke(ring_file, field, value)
    with pytest.raises(RingLayoutError) as exc:
        attach_segment(ring_file, RingType.FEED, writable=False)
    assert str(ring_file) in str(exc.value)
    assert message in str(exc.value)


def test_layout_check_refuses_the_wrong_ring_type(ring_file):
    with pytest.raises(RingLayoutError, match="it is a feed ring, expected a command ring") as exc:
        attach_segment(ring_file, RingType.COMMAND, writable=True)
    assert str(ring_file) in str(exc.value)
    with pytest.raises(RingLayoutError, match=str(ring_file)):
        CommandReader(ring_file, capacity=8)


@pytest.mark.parametrize("size", [0, 100, SEGMENT_HEADER_SIZE + 7 * 64])
def test_layout_check_refuses_a_truncated_file(ring_file, size):
    os.truncate(ring_file, size)
    with pytest.raises(RingLayoutError) as exc:
        FeedReader(ring_file)
    assert str(ring_file) in str(exc.value)
    assert ("too small" if size < SEGMENT_HEADER_SIZE else "a ring of 8 slots is 1024") in str(exc.value)


def test_attaching_to_a_missing_ring_says_where_it_looked(shm_dir):
    path = shm_dir / "nothing-here"
    with pytest.raises(FileNotFoundError, match=r"no ring at .*nothing-here \(is its producer running\?\)") as exc:
        FeedReader(path)
    assert str(path) in str(exc.value)
    with pytest.raises(FileNotFoundError, match=str(path)):
        attach_segment(path, RingType.COMMAND, writable=True)


@pytest.mark.parametrize("capacity", [0, 1, 6, 1 << 31])
def test_create_refuses_a_capacity_that_is_not_a_power_of_two_in_range(shm_dir, capacity):
    with pytest.raises(ValueError, match="power of two"):
        create_segment(shm_dir / "r", RingType.FEED, capacity)
    assert list(shm_dir.iterdir()) == []


def test_create_is_atomic_and_leaves_no_temporary_file(shm_dir):
    seg = create_segment(shm_dir / "r", RingType.COMMAND, 8)
    assert [p.name for p in shm_dir.iterdir()] == ["r"]
    hdr = seg.header[0]
    assert bytes(hdr["magic"]) == b"QSIDERNG" and hdr["capacity"] == 8 and hdr["creator_pid"] == os.getpid()
    assert os.path.getsize(seg.path) == SEGMENT_HEADER_SIZE + 8 * 64
    with pytest.raises(FileExistsError):
        create_segment(shm_dir / "r", RingType.COMMAND, 8)
    again = create_segment(shm_dir / "r", RingType.COMMAND, 8, exist_ok=True)
    seg.words[W_PRODUCER_POSITION] = 5
    assert again.words[W_PRODUCER_POSITION] == 5  # the same file, mapped twice
    again.close()
    seg.close()


def test_shared_producers_take_turns_and_lose_nothing(shm_dir):
    """Several processes offering into one control ring through shared writers: every record
    arrives exactly once and each producer's records keep their order."""
    import multiprocessing as mp

    from quayside.core.feed.ring import CommandReader

    path = shm_dir / "control"
    reader = CommandReader(path, 64)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_shared_producer, args=(str(path), k, 300)) for k in range(3)]
    for p in procs:
        p.start()
    got = []
    deadline = time.monotonic() + 120
    while len(got) < 900 and time.monotonic() < deadline:
        batch = reader.poll()
        got.extend(batch["payload"][:, 0].tolist())
        if not len(batch):
            time.sleep(0.001)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(got) == 900
    for k in range(3):
        mine = [v - k * 1000 for v in got if k * 1000 <= v < (k + 1) * 1000]
        assert mine == list(range(300))
    assert reader.available() == 0
    reader.close()


def _shared_producer(path: str, k: int, n: int) -> None:
    from quayside.core.feed.ring import CommandWriter, RingResult
    from quayside.core.wire import record_dtype

    writer = CommandWriter(path, 64, shared=True)
    rec = np.zeros(1, record_dtype)
    for i in range(n):
        rec["payload"][0, 0] = k * 1000 + i
        while writer.offer(rec) == RingResult.BACK_PRESSURED:
            time.sleep(0.0005)
    writer.close()
