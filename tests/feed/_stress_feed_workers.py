"""Process entry points of the feed-ring stress test (``test_stress_feed.py``).

Each function runs in its own process (multiprocessing, ``spawn`` context) and talks to the
test through the pipe end passed as its first argument: a ``{"event": "created" | "ready" | "paused" | "done"}``
message at each step, or ``{"event": "error", "traceback": ...}`` if anything raised.
"""

from __future__ import annotations

import os
import time

import numpy as np
from _stress_procs import send_error
from _stress_records import Tally, fill_record_nb, splitmix64_nb
from numba import njit, typeof

from quayside.core.feed.atomics import store_release
from quayside.core.feed.nb import (
    S_DELIVERED,
    S_LAPS,
    S_LOST,
    S_POSITION,
    feed_claim_nb,
    feed_commit_nb,
    feed_position_nb,
    feed_publish_nb,
    feed_read_nb,
    producer_heartbeat_nb,
    reader_state,
)
from quayside.core.feed.ring import FeedReader
from quayside.core.feed.segment import (
    W_PRODUCER_CLOSED,
    W_PRODUCER_INTENT,
    W_PRODUCER_POSITION,
    RingType,
    attach_segment,
    create_segment,
)

MAX_BATCH = 256
PACE_CHUNK = 512


@njit(cache=True)
def produce_feed_nb(words, slot_words, scratch, start, stop, max_batch):
    """Publish the checksummed records of positions ``[start, stop)`` in batches of 1 to
    ``max_batch`` records, alternately claimed in place (claim, fill the slots, commit) and
    copied in (``feed_publish_nb``). Returns the end position, or ``-1 - p`` if a claim
    returned a position ``p`` other than the expected one."""
    mask = slot_words.shape[0] - 1
    pos = start
    k = 0
    while pos < stop:
        n = min(1 + np.int64(splitmix64_nb(np.uint64(pos)) % np.uint64(max_batch)), stop - pos)
        if k & 1:
            for i in range(n):
                fill_record_nb(scratch, i, pos + i)
            p = feed_publish_nb(words, slot_words, scratch[:n])
        else:
            p = feed_claim_nb(words, n)
            for i in range(n):
                fill_record_nb(slot_words, (p + i) & mask, p + i)
            feed_commit_nb(words, p + n)
        if p != pos:
            return -1 - p
        pos += n
        k += 1
        if (k & 1023) == 0:
            producer_heartbeat_nb(words)
    return pos


@njit(cache=True)
def close_feed_nb(words):
    store_release(words, W_PRODUCER_CLOSED, 1)


def _readonly_proof(seg) -> dict:
    """How this reader's mapping refuses writes: the kernel maps it ``r--s`` (no PROT_WRITE),
    and numpy will neither assign through the views nor be told they are writeable."""
    proof = {"maps": None, "assign": None, "set_writeable": None}
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(str(seg.path)):
                proof["maps"] = line.split()[1]
    try:
        seg.words[W_PRODUCER_POSITION] = -1
    except ValueError as exc:
        proof["assign"] = str(exc)
    try:
        seg.slot_words.flags.writeable = True
    except ValueError as exc:
        proof["set_writeable"] = str(exc)
    return proof


def _produce_paced(seg, scratch, start, stop, rate) -> int:
    """Publish ``[start, stop)`` in chunks of ``PACE_CHUNK`` records, sleeping between chunks
    to hold about ``rate`` records a second (load shaping, so that readers copy while the
    producer writes; nothing measures or asserts speed). Returns the end position."""
    t0, pos = time.perf_counter(), start
    while pos < stop:
        end = produce_feed_nb(seg.words, seg.slot_words, scratch, pos, min(pos + PACE_CHUNK, stop), MAX_BATCH)
        if end < 0:
            raise AssertionError(f"feed_claim_nb returned position {-1 - end}, expected {pos}")
        pos = end
        ahead = (pos - start) / rate - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
    return pos


def producer_main(conn, path, capacity, total, pause_at, rate, go, resume, timeout) -> None:
    """Create the ring, wait for ``go``, publish ``[0, pause_at)``, report ``paused``, wait for
    ``resume``, publish ``[pause_at, total)``, close the stream. Never unlinks the segment."""
    try:
        seg = create_segment(path, RingType.FEED, capacity)
        scratch = np.zeros((MAX_BATCH, 8), dtype=np.int64)
        produce_feed_nb(seg.words, seg.slot_words, scratch, 0, 0, MAX_BATCH)  # compile / load cache
        conn.send({"event": "created", "pid": os.getpid(), "inode": os.stat(path).st_ino})
        if not go.wait(timeout):
            raise TimeoutError("no go from the test")
        t0 = time.perf_counter()
        first = _produce_paced(seg, scratch, 0, pause_at, rate)
        conn.send({"event": "paused", "position": first})
        if not resume.wait(timeout):
            raise TimeoutError("no resume from the test")
        end = _produce_paced(seg, scratch, pause_at, total, rate)
        close_feed_nb(seg.words)
        conn.send(
            {
                "event": "done",
                "position": end,
                "header_position": int(seg.words[W_PRODUCER_POSITION]),
                "header_intent": int(seg.words[W_PRODUCER_INTENT]),
                "seconds": time.perf_counter() - t0,
            }
        )
        seg.close()
    except BaseException:
        send_error(conn)


def fast_reader_main(conn, path, timeout) -> None:
    """Read with ``feed_read_nb`` as fast as it can until the stream is closed and drained."""
    try:
        seg = attach_segment(path, RingType.FEED, writable=False)
        proof = _readonly_proof(seg)
        words, slot_words = seg.words, seg.slot_words
        state = reader_state(int(feed_position_nb(words)))
        out = np.empty((8192, 8), dtype=np.int64)
        feed_read_nb(words, slot_words, state.copy(), out[:0])  # compile / load cache
        start = int(state[S_POSITION])
        conn.send({"event": "ready", "position": start, "readonly": proof})
        tally = Tally(start)
        deadline = time.monotonic() + timeout
        while True:
            closed = words[W_PRODUCER_CLOSED]  # loaded before the read: then the read saw the end
            n = feed_read_nb(words, slot_words, state, out)
            if n:
                tally.add(out[:n], int(state[S_POSITION]))
            elif closed and state[S_POSITION] >= feed_position_nb(words):
                break
            elif time.monotonic() > deadline:
                raise TimeoutError(f"stream not closed after {timeout} s at position {state[S_POSITION]}")
        report = tally.finish(int(state[S_POSITION]))
        report.update(lost=int(state[S_LOST]), laps=int(state[S_LAPS]), reader_delivered=int(state[S_DELIVERED]))
        conn.send({"event": "done", **report})
        seg.close()
    except BaseException:
        send_error(conn)


def slow_reader_main(conn, path, sleep_s, batch, timeout) -> None:
    """A Python ``FeedReader`` that sleeps after every read, so the producer laps it."""
    try:
        reader = FeedReader(path, start="live", batch=batch)
        proof = _readonly_proof(reader.segment)
        start = reader.position
        conn.send({"event": "ready", "position": start, "readonly": proof})
        tally = Tally(start)
        deadline = time.monotonic() + timeout
        while True:
            records = reader.read()
            if len(records):
                tally.add(records.view(np.int64).reshape(-1, 8), reader.position)
            elif reader.closed:
                break
            elif time.monotonic() > deadline:
                raise TimeoutError(f"stream not closed after {timeout} s at position {reader.position}")
            time.sleep(sleep_s)
        report = tally.finish(reader.position)
        report.update(lost=reader.lost, laps=reader.laps, reader_delivered=reader.delivered)
        conn.send({"event": "done", **report})
        reader.close()
    except BaseException:
        send_error(conn)


def doomed_reader_main(conn, path, progress, timeout) -> None:
    """A Python ``FeedReader`` that reads flat out and sets ``progress`` once the producer has
    moved it; the test kills it with SIGKILL. It reports only if it survives to the end."""
    try:
        reader = FeedReader(path, start="live", batch=2048)
        conn.send({"event": "ready", "position": reader.position, "readonly": _readonly_proof(reader.segment)})
        tally = Tally(reader.position)
        deadline = time.monotonic() + timeout
        while True:
            records = reader.read()
            if len(records):
                tally.add(records.view(np.int64).reshape(-1, 8), reader.position)
            elif reader.closed:
                break
            elif time.monotonic() > deadline:
                raise TimeoutError(f"not killed after {timeout} s")
            if reader.position > tally.start and not progress.is_set():
                progress.set()
        conn.send({"event": "done", **tally.finish(reader.position)})
    except BaseException:
        send_error(conn)


def edge_reader_main(conn, path, timeout) -> None:
    """Read with ``feed_read_nb`` always from the oldest record still in the ring, where the
    producer overwrites next: a fresh reader state each time, so that the copy races the
    producer as often as possible. Every accepted record is checked, and every single read
    must balance its books: the records it dropped are exactly the positions before the
    suffix it delivered."""
    try:
        seg = attach_segment(path, RingType.FEED, writable=False)
        words, slot_words = seg.words, seg.slot_words
        capacity = seg.capacity
        out = np.empty((4096, 8), dtype=np.int64)
        feed_read_nb(words, slot_words, reader_state(0), out[:0])  # compile / load cache
        conn.send({"event": "ready", "position": int(feed_position_nb(words))})
        counts = dict.fromkeys(["reads", "raced", "dropped_all", "delivered", "unbalanced", "corrupt", "misplaced"], 0)
        deadline = time.monotonic() + timeout
        while not words[W_PRODUCER_CLOSED]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream not closed after {timeout} s")
            start = max(0, int(feed_position_nb(words)) - capacity)
            state = reader_state(start)
            n = feed_read_nb(words, slot_words, state, out)
            end, lost = int(state[S_POSITION]), int(state[S_LOST])
            batch = Tally(end - n)
            batch.add(out[:n], end)
            counts["corrupt"] += batch.corrupt
            counts["misplaced"] += batch.misplaced
            if n + lost != end - start or int(state[S_DELIVERED]) != n or (n and lost != end - n - start):
                counts["unbalanced"] += 1
            counts["reads"] += 1
            counts["delivered"] += n
            if state[S_LAPS]:
                counts["raced" if n else "dropped_all"] += 1
        conn.send({"event": "done", **counts})
        seg.close()
    except BaseException:
        send_error(conn)


@njit(cache=True)
def read_spinning_nb(words, slot_words, state, out):
    """Spin (never returning) until the producer position moves past the reader's, then read.
    No ``cpu_relax``: see ``_stress_cmd_workers`` on why a bare loop is the sharper test."""
    while feed_position_nb(words) <= state[S_POSITION]:
        pass
    n = feed_read_nb(words, slot_words, state, out)
    while n == 0:
        n = feed_read_nb(words, slot_words, state, out)
    return n


def waiting_reader_main(conn, path) -> None:
    """Attach, then wait for records inside one jitted call; report what it got."""
    try:
        seg = attach_segment(path, RingType.FEED, writable=False)
        state = reader_state(int(feed_position_nb(seg.words)))
        out = np.zeros((16, 8), dtype=np.int64)
        feed_read_nb(seg.words, seg.slot_words, state.copy(), out[:0])  # compile / load cache
        read_spinning_nb.compile((*(typeof(a) for a in (seg.words, seg.slot_words, state, out)),))
        conn.send({"event": "ready", "position": int(state[S_POSITION])})
        n = read_spinning_nb(seg.words, seg.slot_words, state, out)
        tally = Tally(int(state[S_POSITION]) - n)
        tally.add(out[:n], int(state[S_POSITION]))
        conn.send({"event": "done", "seq": out[:n, 1].tolist(), "corrupt": tally.corrupt, "lost": int(state[S_LOST])})
        seg.close()
    except BaseException:
        send_error(conn)
