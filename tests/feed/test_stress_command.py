"""Multi-process stress test of the command rings: nothing lost, order kept, back-pressure seen.

A jitted producer pushes millions of checksummed records (``_stress_records``) through a ring
of 1024 slots, in batches of 1 to 64, some with ``cmd_offer_nb`` and some with
``cmd_try_claim_nb`` + ``cmd_commit_nb``; a full ring refuses the batch, and the producer
retries until it fits (spinning a little, then sleeping 50 µs between rounds of retries).
The consumer, in another process, is slower (it checks every record in numpy), so the
producer is back-pressured constantly. The consumer must receive seq 0, 1, 2, …
exactly, every record intact, whichever way it reads: zero-copy ``peek`` + ``release`` (jitted
or Python) or copying ``poll`` (jitted or Python). A zero-copy consumer checks the records in
place, in the ring, before it releases them: a producer that overwrote an unreleased slot
would be caught.

Then a consumer is killed with SIGKILL mid-stream and a new one attached to the same segment
continues exactly where the dead one had released: nothing lost, and nothing seen twice except
what the dead consumer had looked at but not released.
"""

from __future__ import annotations

import os
import signal
import time

import _stress_cmd_workers as workers
import numpy as np
import pytest
from _stress_procs import Workers
from _stress_records import Tally, expected_words

from quayside.core.feed.ring import CommandReader, CommandWriter
from quayside.core.feed.segment import (
    W_BACKPRESSURE,
    W_CONSUMER_PID,
    W_CONSUMER_POSITION,
    W_PRODUCER_POSITION,
    RingType,
    attach_segment,
)
from quayside.core.wire import record_dtype

CAPACITY = 1024
BATCH = 1024
TOTAL = 2_000_000  # per consumer mode: 8 million records over the four modes
RESTART_TOTAL = 2_000_000
TIMEOUT = 300.0  # bound of every wait; a healthy run needs a small fraction of it

pytestmark = pytest.mark.slow


@pytest.fixture
def procs():
    w = Workers()
    yield w
    w.close()


def _assert_in_order(name: str, report: dict, start: int, end: int) -> None:
    """Seq ``start, start+1, …, end-1``, each exactly once, each record intact."""
    assert report["corrupt"] == 0, (name, report)
    assert report["misplaced"] == 0, (name, report)
    assert report["disorder"] == 0, (name, report)
    assert report["gaps"] == 0, (name, report)
    assert report["start"] == start and report["end"] == end, (name, report)
    assert report["delivered"] == end - start, (name, report)
    assert report["first_seq"] == start and report["last_seq"] == end - 1, (name, report)
    assert report["header_consumer_position"] == end, (name, report)


def _assert_backpressure(done: dict, total: int) -> None:
    """The producer was refused many times, retried every time, and the header's counters
    agree with its own: one ``backpressure`` per refusal, every offered record counted."""
    assert done["position"] == done["header_position"] == total, done
    assert done["retries"] > 0, done
    assert done["header_backpressure"] == done["retries"], done
    assert done["header_offered"] == done["offered"] >= total, done


@pytest.mark.parametrize("mode", workers.CONSUMER_MODES)
def test_command_ring_delivers_everything_in_order_under_backpressure(shm_dir, procs, mode):
    path = shm_dir / "cmd"
    go = procs.ctx.Event()
    producer = procs.start("producer", workers.producer_main, path, CAPACITY, TOTAL, go, TIMEOUT)
    procs.receive(producer, "created", TIMEOUT)
    consumer = procs.start(f"consumer ({mode})", workers.consumer_main, path, CAPACITY, mode, BATCH, TIMEOUT)
    assert procs.receive(consumer, "ready", TIMEOUT)["position"] == 0

    go.set()
    done = procs.receive(producer, "done", TIMEOUT)
    report = procs.receive(consumer, "done", TIMEOUT)
    assert procs.join(producer, TIMEOUT) == 0
    assert procs.join(consumer, TIMEOUT) == 0

    _assert_backpressure(done, TOTAL)
    _assert_in_order(consumer.name, report, 0, TOTAL)


def _wait_for(what: str, condition, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def test_command_ring_consumer_killed_and_restarted_loses_nothing(shm_dir, procs):
    path = shm_dir / "cmd"
    go = procs.ctx.Event()
    verified = procs.ctx.RawArray("q", 4)  # survives the consumer: what it checked before releasing
    producer = procs.start("producer", workers.producer_main, path, CAPACITY, RESTART_TOTAL, go, TIMEOUT)
    procs.receive(producer, "created", TIMEOUT)
    first = procs.start("first consumer", workers.consumer_main, path, CAPACITY, "nb_peek", 256, TIMEOUT, verified)
    assert procs.receive(first, "ready", TIMEOUT)["position"] == 0
    go.set()

    # Kill it at whatever point it has reached once a third of the stream is through: maybe
    # between checking and releasing a batch, maybe in the middle of a peek.
    _wait_for("the first consumer to get a third of the way", lambda: verified[workers.V_END] >= RESTART_TOTAL // 3)
    os.kill(first.pid, signal.SIGKILL)
    assert procs.join(first, TIMEOUT) == -signal.SIGKILL

    ring = attach_segment(path, RingType.COMMAND, writable=False)
    words = ring.words
    released = int(words[W_CONSUMER_POSITION])
    assert int(words[W_CONSUMER_PID]) == first.pid  # nobody tidied up after it
    # Everything it released it had checked first, and found intact and in order; at most a
    # ring's worth was checked but not released (the batch it held when it died).
    assert released <= verified[workers.V_END] <= released + CAPACITY
    assert verified[workers.V_CORRUPT] == verified[workers.V_MISPLACED] == verified[workers.V_GAPS] == 0
    # With no consumer the producer fills the ring as far as its next batch allows, then is
    # refused again and again; it never overwrites a slot that was not released.
    refusals = int(words[W_BACKPRESSURE])
    _wait_for("a refusal after the kill", lambda: int(words[W_BACKPRESSURE]) > refusals)
    stuck = int(words[W_PRODUCER_POSITION])
    refusals = int(words[W_BACKPRESSURE])
    _wait_for("another refusal", lambda: int(words[W_BACKPRESSURE]) > refusals)
    assert int(words[W_PRODUCER_POSITION]) == stuck
    assert released + CAPACITY - workers.MAX_BATCH < stuck <= released + CAPACITY
    assert int(words[W_CONSUMER_POSITION]) == released

    second = procs.start("second consumer", workers.consumer_main, path, CAPACITY, "py_poll", BATCH, TIMEOUT)
    ready = procs.receive(second, "ready", TIMEOUT)
    assert ready["position"] == released
    done = procs.receive(producer, "done", TIMEOUT)
    report = procs.receive(second, "done", TIMEOUT)
    assert procs.join(producer, TIMEOUT) == 0
    assert procs.join(second, TIMEOUT) == 0
    assert int(words[W_CONSUMER_PID]) == 0  # the second consumer detached cleanly
    ring.close()

    _assert_backpressure(done, RESTART_TOTAL)
    # The second consumer starts exactly at the first one's last release and gets the rest.
    _assert_in_order(second.name, report, released, RESTART_TOTAL)


# --------------------------------------------------------------------------- busy-poll wake-ups
#
# An engine waits inside numba: a producer spins in ``cmd_offer_nb`` while the ring is full, a
# consumer spins in ``cmd_peek_nb`` while it is empty, neither returning to Python. Unless
# those kernels load the other side's position atomically, LLVM may keep the first value in a
# register and the loop never ends (see test_atomics.py). Each test below leaves a child
# spinning inside one jitted call and changes the other side's position from this process.


def test_jitted_producer_spinning_on_a_full_ring_wakes_when_the_consumer_releases(shm_dir, procs):
    path = shm_dir / "cmd"
    reader = CommandReader(path, CAPACITY)
    words = reader.segment.words
    producer = procs.start("spinning producer", workers.spinning_producer_main, path, CAPACITY, CAPACITY + 5)
    procs.receive(producer, "ready", TIMEOUT)
    _wait_for("the ring to fill", lambda: int(words[W_PRODUCER_POSITION]) == CAPACITY)
    refusals = int(words[W_BACKPRESSURE])
    _wait_for("the producer to spin on the full ring", lambda: int(words[W_BACKPRESSURE]) > refusals + 100)
    assert producer.is_alive() and int(words[W_PRODUCER_POSITION]) == CAPACITY

    tally = Tally(0)
    first = reader.poll(np.empty(5, dtype=record_dtype))  # frees 5 slots
    tally.add(first.view(np.int64).reshape(-1, 8), reader.position)
    done = procs.receive(producer, "done", TIMEOUT)
    assert done["offered"] == CAPACITY + 5 and done["backpressure"] > refusals
    assert procs.join(producer, TIMEOUT) == 0
    while len(batch := reader.poll()):
        tally.add(batch.view(np.int64).reshape(-1, 8), reader.position)
    _assert_in_order(
        producer.name, tally.finish(reader.position) | {"header_consumer_position": reader.position}, 0, CAPACITY + 5
    )
    reader.close()


def test_jitted_consumer_spinning_on_an_empty_ring_wakes_when_the_producer_commits(shm_dir, procs):
    path = shm_dir / "cmd"
    writer = CommandWriter(path, CAPACITY)
    consumer = procs.start("waiting consumer", workers.waiting_consumer_main, path, CAPACITY, 3)
    procs.receive(consumer, "ready", TIMEOUT)
    time.sleep(0.2)
    writer.offer(expected_words(np.arange(2)).view(record_dtype).reshape(-1))  # not enough yet
    time.sleep(0.2)
    assert consumer.is_alive() and writer.segment.words[W_CONSUMER_POSITION] == 0
    writer.offer(expected_words(np.arange(2, 3)).view(record_dtype).reshape(-1))
    done = procs.receive(consumer, "done", TIMEOUT)
    assert done["available"] == 3 and done["seq"] == [0, 1, 2] and done["intact"]
    assert procs.join(consumer, TIMEOUT) == 0
    writer.close()
