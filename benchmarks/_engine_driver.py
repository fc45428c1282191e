"""The tick-to-order driver: a jitted loop that plays the gateway and the broker for a live
engine process, using the real command-ring kernels (``quayside.core.feed.nb``).

Each round trip: stamp ``t0`` (``now_ns``, the same ``CLOCK_REALTIME`` the engine stamps with)
into a quote's ``ts_recv`` and offer it to the inbound ring; busy-poll the outbound ring until the
order appears and stamp ``t1``; copy the order out; answer it with an ORDER_STATUS CANCELLED (an
unfilled IOC), so the engine frees the order's slot and working quantity; wait until the engine
has consumed that answer, so that it is idle again before the next quote. Quotes alternate
between two price levels, so that a crossover with ``fast_span=1, slow_span=2, threshold_bps=0``
flips its signal, and sends an order, on every one of them.
"""

from __future__ import annotations

import numpy as np

from quayside.core import wire
from quayside.core.feed.atomics import cpu_relax, load_acquire, now_ns
from quayside.core.feed.nb import cmd_offer_nb, cmd_peek_nb, cmd_poll_nb
from quayside.core.feed.segment import W_CONSUMER_POSITION
from quayside.core.jit import kernel

__all__ = [
    "quote_words",
    "status_word0",
    "price_bits",
    "tick_to_order_nb",
    "S_T_WRITE",
    "S_T_SEEN",
    "S_TS_RECV",
    "S_TS_EVENT",
    "S_DT_QUEUE",
    "S_DT_DECIDE",
    "S_ORDER_ID",
    "S_SIDE",
]

# columns of the samples array, one row per timed round trip
S_T_WRITE, S_T_SEEN, S_TS_RECV, S_TS_EVENT, S_DT_QUEUE, S_DT_DECIDE, S_ORDER_ID, S_SIDE = range(8)
NAN_BITS = 0x7FF8000000000000

_U32 = 0xFFFFFFFF
_ORDER = wire.RecordKind.ORDER
_CANCELLED = wire.OrderStatus.CANCELLED


def quote_words(instrument_id: int) -> np.ndarray:
    """A quote record as a (1, 8) int64 array; the loop fills in times and prices."""
    rec = np.zeros(1, wire.quote_dtype)
    rec["kind"], rec["version"] = wire.RecordKind.QUOTE, wire.VERSIONS[wire.RecordKind.QUOTE]
    rec["instrument_id"] = instrument_id
    rec["bid_size"] = rec["ask_size"] = 1e6
    return rec.view(np.int64).reshape(1, 8).copy()


def status_word0() -> int:
    """Kind and version of an ORDER_STATUS record (strategy and instrument come from the order)."""
    return int(wire.RecordKind.ORDER_STATUS) | (int(wire.VERSIONS[wire.RecordKind.ORDER_STATUS]) << 8)


def price_bits(*prices: float) -> np.ndarray:
    """Prices as the int64 bit patterns the loop stores into record words."""
    return np.array(prices, dtype=np.float64).view(np.int64)


@kernel(inline="always")
def _offer_nb(in_words, in_slots, rec):
    pos = cmd_offer_nb(in_words, in_slots, rec, 0, 1)
    while pos < 0:
        cpu_relax()
        pos = cmd_offer_nb(in_words, in_slots, rec, 0, 1)
    return pos


@kernel(inline="always")
def _consumed_nb(in_words, pos, since, timeout_ns):
    """Wait until the engine has handled the record at ``pos``; False on timeout."""
    while load_acquire(in_words, W_CONSUMER_POSITION) < pos + 1:
        if now_ns() - since > timeout_ns:
            return False
        cpu_relax()
    return True


@kernel(inline="always")
def _cancelled_nb(in_words, in_slots, status, order, status_w0, now, timeout_ns):
    """Answer the order in ``order[0]`` as the broker would an unfilled IOC (ORDER_STATUS
    CANCELLED) and wait until the engine has handled it; False on timeout."""
    oid = order[0, 4] & _U32
    status[0, 0] = status_w0 | (order[0, 0] & ~0xFFFFFF)  # the order's strategy and instrument
    status[0, 2] = now
    status[0, 3] = now
    status[0, 4] = oid | (_CANCELLED << 32)
    status[0, 5] = oid | (oid << 32)
    status[0, 6] = 0
    status[0, 7] = NAN_BITS
    return _consumed_nb(in_words, _offer_nb(in_words, in_slots, status), now, timeout_ns)


@kernel
def tick_to_order_nb(
    in_words, in_slots, out_words, out_slots, quote, status, order, prices, status_w0, samples, warmup, timeout_ns
):
    """A priming quote, then ``warmup + len(samples)`` timed round trips; ``prices`` holds the
    bit patterns of (bid, ask) for the high and the low level. Returns the number of round
    trips completed: fewer than asked if an order (or the engine's handling of an answer) did
    not come within ``timeout_ns``."""
    # priming: the low level (the first quote of a fresh engine only seeds the EMAs; on an
    # engine that has traded it may send an order, which is answered like any other)
    quote[0, 4] = prices[2]
    quote[0, 5] = prices[3]
    t = now_ns()
    quote[0, 2] = t
    quote[0, 3] = t
    if not _consumed_nb(in_words, _offer_nb(in_words, in_slots, quote), t, timeout_ns):
        return -1
    if cmd_poll_nb(out_words, out_slots, order[:1]) > 0 and not _cancelled_nb(
        in_words, in_slots, status, order, status_w0, now_ns(), timeout_ns
    ):
        return -1
    total = warmup + samples.shape[0]
    for i in range(total):
        level = (i & 1) * 2  # even: high, odd: low
        quote[0, 4] = prices[level]
        quote[0, 5] = prices[level + 1]
        t0 = now_ns()
        quote[0, 2] = t0
        quote[0, 3] = t0
        _offer_nb(in_words, in_slots, quote)
        while True:
            _, n = cmd_peek_nb(out_words)
            if n > 0:
                break
            if now_ns() - t0 > timeout_ns:
                return i
            cpu_relax()
        t1 = now_ns()
        cmd_poll_nb(out_words, out_slots, order[:1])
        if i >= warmup:
            s = samples[i - warmup]
            s[S_T_WRITE] = t0
            s[S_T_SEEN] = t1
            s[S_TS_RECV] = order[0, 3]
            s[S_TS_EVENT] = order[0, 2]
            s[S_DT_QUEUE] = order[0, 7] & _U32
            s[S_DT_DECIDE] = (order[0, 7] >> 32) & _U32
            s[S_ORDER_ID] = order[0, 4] & _U32 if (order[0, 0] & 0xFF) == _ORDER else -1
            s[S_SIDE] = (order[0, 4] >> 32) & 0xFF  # 1 BUY, 255 SELL
        if not _cancelled_nb(in_words, in_slots, status, order, status_w0, t1, timeout_ns):
            return i
    return total
