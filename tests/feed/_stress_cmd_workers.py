"""Process entry points of the command-ring stress test (``test_stress_command.py``).

As in ``_stress_feed_workers``: each function runs in a spawned process and reports through
the pipe end passed as its first argument.
"""

from __future__ import annotations

import os
import time

import numpy as np
from _stress_procs import send_error
from _stress_records import Tally, expected_words, fill_record_nb, splitmix64_nb
from numba import njit

from quayside.core.feed.atomics import cpu_relax, store_release
from quayside.core.feed.nb import (
    cmd_commit_nb,
    cmd_offer_nb,
    cmd_peek_nb,
    cmd_poll_nb,
    cmd_release_nb,
    cmd_try_claim_nb,
)
from quayside.core.feed.ring import CommandReader, CommandWriter
from quayside.core.feed.segment import (
    W_BACKPRESSURE,
    W_CONSUMER_POSITION,
    W_PRODUCER_CLOSED,
    W_PRODUCER_POSITION,
    W_RECORDS_OFFERED,
)

MAX_BATCH = 64
CONSUMER_MODES = ("nb_peek", "py_peek", "nb_poll", "py_poll")

# The producer's own counts, in an int64 array it shares with the caller.
P_RETRIES = 0  # offers or claims refused with BACK_PRESSURED
P_OFFERED = 1  # records in every offer or claim, refused or not
P_MISMATCH = 2  # claims that returned a position other than the expected one

# What a consumer has verified so far, in shared memory that outlives it when it is killed.
V_END = 0  # position up to which every record was checked (before any of them was released)
V_CORRUPT = 1
V_MISPLACED = 2
V_GAPS = 3

REFUSALS_BEFORE_YIELD = 256


@njit(cache=True)
def produce_cmd_nb(words, slot_words, scratch, start, stop, max_batch, max_refusals, counts):
    """Publish the checksummed records of ``[start, stop)`` in batches of 1 to ``max_batch``,
    each with ``cmd_offer_nb`` (copy in) or ``cmd_try_claim_nb`` + ``cmd_commit_nb`` (fill the
    slots in place), chosen by a hash of its position. A refused batch is retried at once
    (``cpu_relax`` between tries), each refusal counted; after ``max_refusals`` refusals in a
    row the kernel returns the position it has reached, so that the caller can yield the CPU
    and call again. Batch sizes and methods depend on the position only."""
    capacity = slot_words.shape[0]
    mask = capacity - 1
    pos = start
    while pos < stop:
        h = splitmix64_nb(np.uint64(pos))
        n = min(1 + np.int64(h % np.uint64(max_batch)), stop - pos)
        in_place = (h >> np.uint64(32)) & np.uint64(1)
        if not in_place:
            for i in range(n):
                fill_record_nb(scratch, i, pos + i)
        refusals = 0
        while True:
            counts[P_OFFERED] += n
            p = cmd_try_claim_nb(words, capacity, n) if in_place else cmd_offer_nb(words, slot_words, scratch, 0, n)
            if p >= 0:
                break
            counts[P_RETRIES] += 1
            refusals += 1
            if refusals == max_refusals:
                return pos
            cpu_relax()
        if p != pos:
            counts[P_MISMATCH] += 1
            return pos
        if in_place:
            for i in range(n):
                fill_record_nb(slot_words, (p + i) & mask, p + i)
            cmd_commit_nb(words, p + n)
        pos += n
    return pos


@njit(cache=True)
def close_cmd_nb(words):
    store_release(words, W_PRODUCER_CLOSED, 1)


def producer_main(conn, path, capacity, total, go, timeout) -> None:
    """Attach (or create) the ring as its producer, wait for ``go``, publish ``[0, total)``
    through back-pressure (sleeping briefly whenever the kernel gives up a refused batch, as
    an engine returns to Python for control work), close the stream, report its counts and
    the header's."""
    try:
        writer = CommandWriter(path, capacity)
        words, slot_words = writer.segment.words, writer.segment.slot_words
        scratch = np.zeros((MAX_BATCH, 8), dtype=np.int64)
        counts = np.zeros(3, dtype=np.int64)
        produce_cmd_nb(words, slot_words, scratch, 0, 0, MAX_BATCH, 1, counts)  # compile / load cache
        conn.send({"event": "created", "pid": os.getpid()})
        if not go.wait(timeout):
            raise TimeoutError("no go from the test")
        t0 = time.perf_counter()
        pos, yields = 0, 0
        while pos < total:
            pos = produce_cmd_nb(words, slot_words, scratch, pos, total, MAX_BATCH, REFUSALS_BEFORE_YIELD, counts)
            if counts[P_MISMATCH]:
                raise AssertionError(f"a claim at {pos} returned another position")
            if pos < total:
                yields += 1
                time.sleep(50e-6)
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"producer still refused at {pos} after {timeout} s")
        close_cmd_nb(words)
        conn.send(
            {
                "event": "done",
                "position": pos,
                "retries": int(counts[P_RETRIES]),
                "offered": int(counts[P_OFFERED]),
                "yields": yields,
                "header_position": int(words[W_PRODUCER_POSITION]),
                "header_backpressure": int(words[W_BACKPRESSURE]),
                "header_offered": int(words[W_RECORDS_OFFERED]),
                "seconds": time.perf_counter() - t0,
            }
        )
        writer.close()
    except BaseException:
        send_error(conn)


def consumer_main(conn, path, capacity, mode, batch, timeout, verified=None) -> None:
    """Consume until the stream is closed and drained, checking every record.

    ``mode``: ``nb_peek`` (``cmd_peek_nb``, check the slots in place, ``cmd_release_nb``),
    ``py_peek`` (``CommandReader.peek``/``release``), ``nb_poll`` (``cmd_poll_nb``) or
    ``py_poll`` (``CommandReader.poll``). With ``verified`` (a shared int64 array), the
    zero-copy modes record there what they have checked *before* releasing it.
    """
    try:
        reader = CommandReader(path, capacity, batch=batch)
        words, slot_words = reader.segment.words, reader.segment.slot_words
        mask = capacity - 1
        out = np.empty((batch, 8), dtype=np.int64)
        cmd_peek_nb(words)  # compile / load cache (neither consumes anything)
        cmd_poll_nb(words, slot_words, out[:0])
        start = reader.position
        conn.send({"event": "ready", "position": start, "pid": os.getpid()})
        tally = Tally(start)
        deadline = time.monotonic() + timeout

        def checked(end: int) -> None:
            if verified is not None:
                verified[V_CORRUPT], verified[V_MISPLACED] = tally.corrupt, tally.misplaced
                verified[V_GAPS] = tally.gaps
                verified[V_END] = end

        while True:
            closed = words[W_PRODUCER_CLOSED]  # loaded first: if set, what follows sees the end
            if mode == "nb_peek":
                pos, available = cmd_peek_nb(words)
                k = min(available, capacity - (pos & mask), batch)
                if k:
                    tally.add(slot_words[pos & mask : (pos & mask) + k], pos + k)
                    checked(pos + k)
                    cmd_release_nb(words, pos + k)
            elif mode == "py_peek":
                view = reader.peek(batch)
                k = len(view)
                if k:
                    tally.add(view.view(np.int64).reshape(-1, 8), reader.position + k)
                    checked(reader.position + k)
                    reader.release(k)
            elif mode == "nb_poll":
                k = cmd_poll_nb(words, slot_words, out)
                tally.add(out[:k], reader.position)
            else:
                k = len(records := reader.poll())
                tally.add(records.view(np.int64).reshape(-1, 8), reader.position)
            if k == 0:
                if closed and reader.available() == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"stream not closed after {timeout} s at position {reader.position}")
        report = tally.finish(reader.position)
        report["header_consumer_position"] = int(words[W_CONSUMER_POSITION])
        conn.send({"event": "done", **report})
        reader.close()
    except BaseException:
        send_error(conn)


# --------------------------------------------------------------------------- busy-poll wake-ups
#
# These loops deliberately spin without ``cpu_relax``: LLVM knows nothing about the ``pause``
# intrinsic, so it treats it as a call that may write any memory, which forces every load in
# the loop to be redone and would hide a kernel that loads the other side's position with a
# plain load (on x86; elsewhere cpu_relax is empty and the bug would show). Bare loops leave
# the kernels' own loads as the only thing between the loop and ``for (;;);``.


@njit(cache=True)
def offer_spinning_nb(words, slot_words, src):
    """Offer ``src`` one record at a time, spinning (never returning) while the ring is full."""
    for i in range(src.shape[0]):
        while cmd_offer_nb(words, slot_words, src, i, 1) < 0:
            pass
    return src.shape[0]


@njit(cache=True)
def wait_for_records_nb(words, n):
    """Spin (never returning) until at least ``n`` records are available to the consumer."""
    while cmd_peek_nb(words)[1] < n:
        pass
    return cmd_peek_nb(words)[1]


def spinning_producer_main(conn, path, capacity, n) -> None:
    """Offer ``n`` checksummed records from one jitted call that spins while the ring is full."""
    try:
        writer = CommandWriter(path, capacity)
        src = expected_words(np.arange(n, dtype=np.int64)).view(np.int64)
        offer_spinning_nb(writer.segment.words, writer.segment.slot_words, src[:0])  # compile / load cache
        conn.send({"event": "ready"})
        offered = offer_spinning_nb(writer.segment.words, writer.segment.slot_words, src)
        conn.send({"event": "done", "offered": int(offered), "backpressure": writer.backpressure})
        writer.close()
    except BaseException:
        send_error(conn)


def waiting_consumer_main(conn, path, capacity, n) -> None:
    """Wait for ``n`` records in one jitted call that spins on the producer position, then
    take them with ``cmd_poll_nb`` and report their seq."""
    try:
        reader = CommandReader(path, capacity)
        words, slot_words = reader.segment.words, reader.segment.slot_words
        wait_for_records_nb(words, 0)  # compile / load cache
        out = np.zeros((n, 8), dtype=np.int64)
        cmd_poll_nb(words, slot_words, out[:0])
        conn.send({"event": "ready"})
        available = wait_for_records_nb(words, n)
        got = cmd_poll_nb(words, slot_words, out)
        intact = bool((out[:got].view(np.uint64) == expected_words(out[:got, 1])).all())
        conn.send({"event": "done", "available": int(available), "seq": out[:got, 1].tolist(), "intact": intact})
        reader.close()
    except BaseException:
        send_error(conn)
