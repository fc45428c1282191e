"""Busy-poll loops for the two-process memory-ordering test (``test_atomics.py``).

Run as a script: ``python _stress_spin.py SEGMENT acquire|naive``. The child maps the command
ring segment ``SEGMENT``, and a jitted loop stores 1 in the ``READY`` word, then spins until
the ``SPIN`` word differs from the value it read before signalling, and prints that value.

* ``spin_acquire_nb`` reads ``SPIN`` with ``load_acquire``: it sees the parent's store.
* ``spin_naive_nb`` reads it with a plain ``words[SPIN]``. Nothing inside the loop stores to
  memory, and the ready store goes to a provably different word (constant indices), so LLVM
  may assume ``words[SPIN]`` never changes: it reuses the value read before the loop, folds
  ``words[SPIN] == old`` to true and leaves ``for (;;);``. The loop never reads memory again;
  whatever the parent writes after READY, the child spins forever. (Numba marks no function
  ``mustprogress``, so LLVM keeps the infinite loop rather than deleting it.)
"""

from __future__ import annotations

import sys

from numba import njit

from quayside.core.feed.atomics import cpu_relax, load_acquire
from quayside.core.feed.segment import W_CONSUMER_POSITION, W_PRODUCER_POSITION, RingType, attach_segment

SPIN = W_PRODUCER_POSITION  # the word the parent changes
READY = W_CONSUMER_POSITION  # the word the child sets once it is about to spin

# No ``cache=True``: this file also runs as ``__main__``, and the test inspects a fresh compile.


@njit
def spin_acquire_nb(words):
    old = load_acquire(words, SPIN)
    words[READY] = 1
    while load_acquire(words, SPIN) == old:
        cpu_relax()
    return load_acquire(words, SPIN)


@njit
def spin_naive_nb(words):
    old = words[SPIN]
    words[READY] = 1
    while words[SPIN] == old:
        pass
    return words[SPIN]


KERNELS = {"acquire": spin_acquire_nb, "naive": spin_naive_nb}


def main(argv: list[str]) -> int:
    path, kind = argv
    seg = attach_segment(path, RingType.COMMAND, writable=True)
    print(KERNELS[kind](seg.words), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
