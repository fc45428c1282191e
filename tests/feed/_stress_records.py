"""Checksummed records for the ring stress tests: every word of a record is a function of its seq.

Word 1 of a record is its ``seq`` (the rings stamp it with the ring position). Every other word
is splitmix64 of ``seq * 8 + word``, except that word 0 keeps ``kind = QUOTE`` and
``version = 1`` in its two low bytes so that the record is also a valid wire header. A record
torn between two writes, or a slot that holds another position's record, fails the check.

Producers fill records with :func:`fill_record_nb` inside numba; readers check whole batches
at once with :class:`Tally`, vectorised in numpy.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quayside.core.wire import FORMAT_VERSION, RecordKind

__all__ = ["WORDS", "expected_words", "fill_record_nb", "splitmix64_nb", "Tally"]

WORDS = 8
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_HEADER_LOW = RecordKind.QUOTE | (FORMAT_VERSION << 8)
_HEADER_MASK = 0xFFFF


@njit(cache=True, inline="always")
def splitmix64_nb(x):
    """splitmix64 of a uint64, as a uint64 (wrapping arithmetic)."""
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def fill_record_nb(rows, row, seq):
    """Write the checksummed record of ``seq`` into ``rows[row]`` (an ``(n, 8)`` int64 array)."""
    base = np.uint64(seq) * np.uint64(WORDS)
    for w in range(WORDS):
        rows[row, w] = np.int64(splitmix64_nb(base + np.uint64(w)))
    rows[row, 0] = (rows[row, 0] & ~np.int64(_HEADER_MASK)) | np.int64(_HEADER_LOW)
    rows[row, 1] = seq


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def expected_words(seq: np.ndarray) -> np.ndarray:
    """The ``(len(seq), 8)`` uint64 words that the records of ``seq`` must hold."""
    useq = np.asarray(seq, dtype=np.int64).astype(np.uint64)
    out = _splitmix64(useq[:, None] * np.uint64(WORDS) + np.arange(WORDS, dtype=np.uint64))
    out[:, 0] = (out[:, 0] & ~np.uint64(_HEADER_MASK)) | np.uint64(_HEADER_LOW)
    out[:, 1] = useq
    return out


class Tally:
    """What one reader saw: checks each batch it accepts and counts deliveries and gaps.

    ``add(block, end)`` takes the batch as an ``(k, 8)`` int64 array and the reader's position
    after it (so the batch holds positions ``[end - k, end)``). A record is *corrupt* if any
    word differs from :func:`expected_words` of its seq, *misplaced* if its seq is not its
    position; ``gaps`` is the number of positions between ``start`` and ``end`` that no
    delivered seq covers (seq must be strictly increasing, counted in ``disorder`` if not).
    """

    def __init__(self, start: int):
        self.start = start
        self.prev = start - 1
        self.delivered = 0
        self.corrupt = 0
        self.misplaced = 0
        self.disorder = 0
        self.gaps = 0
        self.batches = 0
        self.first_seq = -1
        self.last_seq = -1

    def add(self, block: np.ndarray, end: int) -> None:
        k = len(block)
        if k == 0:
            return
        seq = block[:, 1].copy()  # one load per seq word: the check and the gaps agree
        self.corrupt += int(np.count_nonzero((block.view(np.uint64) != expected_words(seq)).any(axis=1)))
        self.misplaced += int(np.count_nonzero(seq != np.arange(end - k, end, dtype=np.int64)))
        steps = np.diff(seq, prepend=np.int64(self.prev))
        self.disorder += int(np.count_nonzero(steps <= 0))
        self.gaps += int((steps - 1).sum())
        if self.first_seq < 0:
            self.first_seq = int(seq[0])
        self.prev = self.last_seq = int(seq[-1])
        self.delivered += k
        self.batches += 1

    def finish(self, end: int) -> dict:
        """The report, once the reader has stopped at position ``end``."""
        report = {k: v for k, v in vars(self).items() if k != "prev"}
        report["end"] = end
        report["gaps"] = self.gaps + (end - 1 - self.prev)
        return report
