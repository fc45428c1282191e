"""Jitted ring kernels: the same protocol as ``ring.py``, for code that runs inside numba.

Every kernel takes the segment's header as an int64 array (``Segment.words``) and its slots as
an ``(capacity, 8)`` int64 array (``Segment.slot_words``); records to write or read are
``(n, 8)`` int64 arrays (``records.view(np.int64).reshape(-1, 8)``). Loads of the other side's
position are ``load_acquire`` and publications are ``store_release``, so a busy-poll loop sees
the other process's writes (see ``atomics.py``). Kernels allocate nothing and raise nothing;
they return positions, counts, or a negative ``RingResult`` code.

Verbs, as Aeron and the Disruptor name them:

* feed ring: ``feed_claim_nb`` -> write slots -> ``feed_commit_nb``; or ``feed_publish_nb``;
  readers: ``feed_read_nb`` with a small int64 state array ``[position, lost, laps, delivered]``.
* command ring: ``cmd_try_claim_nb`` -> write slots -> ``cmd_commit_nb``; or ``cmd_offer_nb``;
  consumer: ``cmd_poll_nb``, or ``cmd_peek_nb`` -> read slots -> ``cmd_release_nb``.
"""

from __future__ import annotations

import numpy as np

from quayside.core.feed.atomics import fence_acquire, fence_release, load_acquire, now_ns, store_release
from quayside.core.feed.ring import RingResult
from quayside.core.feed.segment import (
    W_BACKPRESSURE,
    W_CACHED_CONSUMER,
    W_CONSUMER_POSITION,
    W_PRODUCER_HEARTBEAT,
    W_PRODUCER_INTENT,
    W_PRODUCER_POSITION,
    W_RECORDS_OFFERED,
)
from quayside.core.jit import kernel

__all__ = [
    "reader_state",
    "S_POSITION",
    "S_LOST",
    "S_LAPS",
    "S_DELIVERED",
    "feed_claim_nb",
    "feed_commit_nb",
    "feed_publish_nb",
    "feed_read_nb",
    "feed_position_nb",
    "cmd_try_claim_nb",
    "cmd_commit_nb",
    "cmd_offer_nb",
    "cmd_poll_nb",
    "cmd_peek_nb",
    "cmd_release_nb",
    "producer_heartbeat_nb",
]

SEQ_WORD = 1
WORDS = 8
BACK_PRESSURED = RingResult.BACK_PRESSURED
TOO_LARGE = RingResult.TOO_LARGE

# Indices into a feed reader's state array.
S_POSITION = 0
S_LOST = 1
S_LAPS = 2
S_DELIVERED = 3


def reader_state(position: int) -> np.ndarray:
    """A feed reader's state for ``feed_read_nb``, starting at ``position``."""
    state = np.zeros(4, dtype=np.int64)
    state[S_POSITION] = position
    return state


@kernel(inline="always")
def _copy_slots_in(slot_words, pos, src, lo, n):
    mask = slot_words.shape[0] - 1
    for i in range(n):
        slot = (pos + i) & mask
        for w in range(WORDS):
            slot_words[slot, w] = src[lo + i, w]
        slot_words[slot, SEQ_WORD] = pos + i


@kernel(inline="always")
def _copy_slots_out(slot_words, pos, dst, n):
    mask = slot_words.shape[0] - 1
    for i in range(n):
        slot = (pos + i) & mask
        for w in range(WORDS):
            dst[i, w] = slot_words[slot, w]


# --------------------------------------------------------------------------- feed ring


@kernel
def feed_position_nb(words):
    """The producer's published position, as a reader sees it (an acquire load)."""
    return load_acquire(words, W_PRODUCER_POSITION)


@kernel
def feed_claim_nb(words, n):
    """Claim positions ``[p, p+n)`` (never fails: the feed producer does not wait); returns p.
    Write the slots ``(p + i) & mask`` (stamp ``seq``), then ``feed_commit_nb(words, p + n)``."""
    pos = words[W_PRODUCER_POSITION]  # only this process writes it
    store_release(words, W_PRODUCER_INTENT, pos + n)
    fence_release()  # the intent is visible before any slot it announces is overwritten
    return pos


@kernel
def feed_commit_nb(words, end):
    """Publish every claimed record below ``end``."""
    store_release(words, W_PRODUCER_POSITION, end)


@kernel
def producer_heartbeat_nb(words):
    store_release(words, W_PRODUCER_HEARTBEAT, now_ns())


@kernel
def feed_publish_nb(words, slot_words, src):
    """Publish every record of ``src`` ((n, 8) int64, n <= capacity); returns the first position."""
    n = src.shape[0]
    pos = feed_claim_nb(words, n)
    _copy_slots_in(slot_words, pos, src, 0, n)
    feed_commit_nb(words, pos + n)
    return pos


@kernel
def feed_read_nb(words, slot_words, state, out):
    """Copy up to ``len(out)`` available records into ``out[:n]``; returns n (0 if none).

    ``state`` is the reader's ``[position, lost, laps, delivered]``. Records the producer
    overwrote before or while they were copied are counted in ``lost``, never returned; a
    reader more than a lap behind jumps to the producer's position (live data).
    """
    capacity = slot_words.shape[0]
    pos = state[S_POSITION]
    tail = load_acquire(words, W_PRODUCER_POSITION)
    available = tail - pos
    if available <= 0:
        return 0
    if available > capacity:
        state[S_LOST] += available
        state[S_LAPS] += 1
        state[S_POSITION] = tail
        return 0
    n = min(available, out.shape[0])
    _copy_slots_out(slot_words, pos, out, n)
    fence_acquire()  # the copy is complete before the intent is read
    skip = load_acquire(words, W_PRODUCER_INTENT) - capacity - pos
    if skip <= 0:
        state[S_POSITION] = pos + n
        state[S_DELIVERED] += n
        return n
    state[S_LAPS] += 1
    if skip >= n:
        tail = load_acquire(words, W_PRODUCER_POSITION)
        state[S_LOST] += tail - pos
        state[S_POSITION] = tail
        return 0
    for i in range(n - skip):  # keep the valid suffix, moved to the front of ``out``
        for w in range(WORDS):
            out[i, w] = out[skip + i, w]
    state[S_LOST] += skip
    state[S_POSITION] = pos + n
    state[S_DELIVERED] += n - skip
    return n - skip


# --------------------------------------------------------------------------- command rings


@kernel
def cmd_try_claim_nb(words, capacity, n):
    """Claim ``n`` slots; the first position, ``BACK_PRESSURED`` (counted in the header), or
    ``TOO_LARGE`` if ``n`` exceeds the capacity (retrying could never succeed)."""
    if n > capacity:
        return TOO_LARGE
    pos = words[W_PRODUCER_POSITION]
    words[W_RECORDS_OFFERED] += n
    if pos + n - words[W_CACHED_CONSUMER] > capacity:
        head = load_acquire(words, W_CONSUMER_POSITION)
        words[W_CACHED_CONSUMER] = head
        if pos + n - head > capacity:
            words[W_BACKPRESSURE] += 1
            return BACK_PRESSURED
    return pos


@kernel
def cmd_commit_nb(words, end):
    store_release(words, W_PRODUCER_POSITION, end)


@kernel
def cmd_offer_nb(words, slot_words, src, lo, n):
    """Publish ``src[lo:lo+n]`` whole, or nothing: the first position, or ``BACK_PRESSURED``."""
    pos = cmd_try_claim_nb(words, slot_words.shape[0], n)
    if pos < 0:
        return pos
    _copy_slots_in(slot_words, pos, src, lo, n)
    cmd_commit_nb(words, pos + n)
    return pos


@kernel
def cmd_peek_nb(words):
    """``(position, available)``: the records the consumer may read in place."""
    pos = words[W_CONSUMER_POSITION]
    return pos, load_acquire(words, W_PRODUCER_POSITION) - pos


@kernel
def cmd_release_nb(words, end):
    """Consume everything below ``end``; the producer may then reuse those slots."""
    store_release(words, W_CONSUMER_POSITION, end)


@kernel
def cmd_poll_nb(words, slot_words, out):
    """Copy out and consume up to ``len(out)`` records; returns how many."""
    pos, available = cmd_peek_nb(words)
    n = min(available, out.shape[0])
    if n <= 0:
        return 0
    _copy_slots_out(slot_words, pos, out, n)
    cmd_release_nb(words, pos + n)
    return n
