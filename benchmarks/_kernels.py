"""Jitted benchmark loops around the real feed-ring kernels (``quayside.core.feed.nb``).

Every loop runs entirely inside numba: no return to the interpreter between records. An
empty poll is followed by ``cpu_relax`` (``pause``), as in the engine's ``BUSY_SPIN`` wait
strategy and in the C floor's spin loops. Each loop also watches the ``producer_closed`` word
of the ring it reads, so the orchestrating process can stop a side whose peer died.

The loops are compiled like the engine's own (``quayside.core.jit.kernel``: no numba runtime,
so no reference counting around the arrays handed to the ring kernels).

Records are quotes (kind 1, version 1) with ``seq`` stamped by the ring and ``ts_event`` /
``ts_recv`` filled by the producer, so a UDP receiver validates them like live data.
"""

from __future__ import annotations

import numpy as np

from quayside.core.feed.atomics import cpu_relax, load_acquire, now_ns
from quayside.core.feed.nb import (
    S_POSITION,
    feed_claim_nb,
    feed_commit_nb,
    feed_publish_nb,
    feed_read_nb,
)
from quayside.core.feed.segment import W_PRODUCER_CLOSED, W_PRODUCER_POSITION
from quayside.core.jit import kernel
from quayside.core.wire import FORMAT_VERSION, RecordKind

__all__ = [
    "QUOTE_WORD0",
    "pingpong_initiator_nb",
    "pingpong_echo_nb",
    "produce_nb",
    "read_until_nb",
    "T_START",
    "T_END",
    "T_FIRST",
    "T_DONE",
    "T_SEQ_ERRORS",
]

#: First int64 word of a quote record: kind, version, flags = 0, strategy = 0, instrument 7.
QUOTE_WORD0 = RecordKind.QUOTE | (FORMAT_VERSION << 8) | (7 << 32)

# Slots of the small int64 ``times`` arrays the loops fill in.
T_START = 0  # producer: first claim
T_END = 1  # producer: last commit
T_FIRST = 0  # reader: first record seen
T_DONE = 1  # reader: reached the end position (or the stream closed)
T_SEQ_ERRORS = 2  # reader: delivered records whose seq is not their position


@kernel
def pingpong_initiator_nb(w_out, s_out, w_in, s_in, state, src, out, samples, warmup):
    """Side A: publish one record into ``out``'s ring, spin until its echo comes back on the
    ``in`` ring, and store the round trip in ns. Returns the number of bad echoes, or -1 if the
    peer's ring closed."""
    total = warmup + samples.shape[0]
    errors = 0
    for i in range(total):
        t0 = now_ns()
        src[0, 2] = t0
        src[0, 3] = t0
        feed_publish_nb(w_out, s_out, src)
        while feed_read_nb(w_in, s_in, state, out) == 0:
            if load_acquire(w_in, W_PRODUCER_CLOSED) != 0:
                return -1
            cpu_relax()
        t1 = now_ns()
        if out[0, 2] != t0 or out[0, 1] != i:
            errors += 1
        if i >= warmup:
            samples[i - warmup] = t1 - t0
    return errors


@kernel
def pingpong_echo_nb(w_in, s_in, w_out, s_out, state, out, total):
    """Side B: spin on the ``in`` ring and publish every record read into the ``out`` ring,
    ``total`` times. Returns the number echoed (fewer if the peer's ring closed)."""
    done = 0
    while done < total:
        n = feed_read_nb(w_in, s_in, state, out)
        if n == 0:
            if load_acquire(w_in, W_PRODUCER_CLOSED) != 0:
                break
            cpu_relax()
            continue
        feed_publish_nb(w_out, s_out, out[:n])
        done += n
    return done


@kernel
def produce_nb(words, slot_words, total, batch, rate, times):
    """Publish ``total`` records in batches of ``batch`` (claim -> write the slots in place ->
    commit), as fast as possible (``rate`` <= 0) or paced at ``rate`` records/s by busy-waiting
    on the clock. Returns the position after the last record."""
    mask = slot_words.shape[0] - 1
    first = words[W_PRODUCER_POSITION]
    pos = first
    end = first + total
    t_start = now_ns()
    times[T_START] = t_start
    while pos < end:
        n = min(batch, end - pos)
        if rate > 0:
            due = t_start + np.int64((pos + n - first) * 1e9 / rate)
            while now_ns() < due:
                cpu_relax()
        ts = now_ns()
        p = feed_claim_nb(words, n)
        for i in range(n):
            slot = (p + i) & mask
            slot_words[slot, 0] = QUOTE_WORD0
            slot_words[slot, 1] = p + i
            slot_words[slot, 2] = ts
            slot_words[slot, 3] = ts
            slot_words[slot, 4] = p + i
            slot_words[slot, 5] = p + i + 1
            slot_words[slot, 6] = 100
            slot_words[slot, 7] = 200
        feed_commit_nb(words, p + n)
        pos += n
    times[T_END] = now_ns()
    return pos


@kernel
def read_until_nb(words, slot_words, state, out, end, times):
    """Read with ``feed_read_nb`` until the reader's position reaches ``end`` (or the stream
    closes with nothing left), checking that every delivered record's seq is its position."""
    first = 0
    errors = 0
    while state[S_POSITION] < end:
        n = feed_read_nb(words, slot_words, state, out)
        if n == 0:
            # closed is loaded first: once it is set, the producer's position is final
            if (
                load_acquire(words, W_PRODUCER_CLOSED) != 0
                and load_acquire(words, W_PRODUCER_POSITION) <= state[S_POSITION]
            ):
                break
            cpu_relax()
            continue
        if first == 0:
            first = now_ns()
        base = state[S_POSITION] - n
        for i in range(n):
            if out[i, 1] != base + i:
                errors += 1
    times[T_FIRST] = first
    times[T_DONE] = now_ns()
    times[T_SEQ_ERRORS] = errors
    return state[S_POSITION]
