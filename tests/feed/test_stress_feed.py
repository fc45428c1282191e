"""Multi-process stress test of the feed ring: one jitted producer, four readers, one killed.

Ten million checksummed records (``_stress_records``) go through a ring of 2**16 slots, so the
producer laps the ring about 150 times. Every process is started with the ``spawn`` context: a
fresh interpreter, and a running resource tracker (the one that unlinks
``multiprocessing.shared_memory`` blocks behind the producer's back on Python < 3.13).

* the producer: a jitted loop, batches of 1..256 records, alternately claimed in place
  (``feed_claim_nb`` / ``feed_commit_nb``) and copied in (``feed_publish_nb``), paced to a
  steady trickle of small bursts so that readers copy while it writes;
* a fast reader: ``feed_read_nb`` called from a Python loop, batches of up to 8192;
* a slow reader: Python ``FeedReader`` sleeping after every read, lapped over and over;
* a doomed reader: Python ``FeedReader`` reading flat out, killed with SIGKILL half-way;
* an edge reader: ``feed_read_nb`` always from the oldest slot, the one the producer
  overwrites next, so that its copies race the producer's writes as often as possible (without
  it a reader that loads ``producer_intent`` before its copy instead of after went unnoticed).

Every record a reader accepts is checked whole (all eight words against the checksum of its
seq), its seq must be its ring position, and the positions a reader did not get must be
exactly the ones it counted lost. Readiness is signalled, never assumed: every reader has
attached before the producer writes its first record, and the producer pauses at the half-way
mark until the doomed reader is dead, so "killed mid-run" does not depend on timing.
"""

from __future__ import annotations

import os
import signal
import time

import _stress_feed_workers as workers
import numpy as np
import pytest
from _stress_procs import Workers
from _stress_records import Tally, expected_words

from quayside.core.feed.ring import FeedReader, FeedWriter
from quayside.core.wire import record_dtype

TOTAL = 10_000_000
PAUSE_AT = TOTAL // 2
CAPACITY = 1 << 16
RATE = 2_500_000  # records/s the producer aims at (load shaping only; nothing asserts speed)
SLOW_SLEEP_S = 0.002
SLOW_BATCH = 1024
TIMEOUT = 300.0  # bound of every wait; a healthy run needs a small fraction of it

pytestmark = pytest.mark.slow


@pytest.fixture
def procs():
    w = Workers()
    yield w
    w.close()


def _assert_read_only(name: str, proof: dict) -> None:
    """The reader's mapping has no write permission at all (``r--s`` in /proc/pid/maps, so even
    a raw pointer would fault) and numpy refuses both to assign and to unlock the views."""
    assert proof["maps"] is not None and proof["maps"][:2] == "r-", (name, proof)
    assert proof["assign"] is not None and "read-only" in proof["assign"], (name, proof)
    assert proof["set_writeable"] is not None, (name, proof)


def _assert_exact(name: str, report: dict, start: int = 0) -> None:
    """Nothing corrupt or out of place, and the loss count is exact: the positions the reader
    did not deliver are precisely the gaps in the seq numbers it saw, and it counted them."""
    assert report["corrupt"] == 0, (name, report)
    assert report["misplaced"] == 0, (name, report)
    assert report["disorder"] == 0, (name, report)
    assert report["start"] == start and report["end"] == TOTAL, (name, report)
    assert report["reader_delivered"] == report["delivered"], (name, report)
    assert report["delivered"] + report["lost"] == report["end"] - report["start"], (name, report)
    assert report["gaps"] == report["lost"], (name, report)


def test_feed_ring_ten_million_records_four_readers_one_killed(shm_dir, procs):
    path = shm_dir / "feed"
    go, resume, progress = procs.ctx.Event(), procs.ctx.Event(), procs.ctx.Event()

    producer = procs.start(
        "producer", workers.producer_main, path, CAPACITY, TOTAL, PAUSE_AT, RATE, go, resume, TIMEOUT
    )
    created = procs.receive(producer, "created", TIMEOUT)
    inode = os.stat(path).st_ino
    assert created["inode"] == inode

    fast = procs.start("fast reader", workers.fast_reader_main, path, TIMEOUT)
    slow = procs.start("slow reader", workers.slow_reader_main, path, SLOW_SLEEP_S, SLOW_BATCH, TIMEOUT)
    doomed = procs.start("doomed reader", workers.doomed_reader_main, path, progress, TIMEOUT)
    edge = procs.start("edge reader", workers.edge_reader_main, path, TIMEOUT)
    assert procs.receive(edge, "ready", TIMEOUT)["position"] == 0
    for reader in (fast, slow, doomed):
        ready = procs.receive(reader, "ready", TIMEOUT)
        assert ready["position"] == 0, (reader.name, ready)  # attached before the first record
        _assert_read_only(reader.name, ready["readonly"])

    go.set()
    paused = procs.receive(producer, "paused", TIMEOUT)
    assert paused["position"] == PAUSE_AT
    assert progress.wait(TIMEOUT), "the doomed reader never saw the producer move"

    # SIGKILL: no exit handlers, no finalizers, no resource tracker clean-up in the reader.
    os.kill(doomed.pid, signal.SIGKILL)
    assert procs.join(doomed, TIMEOUT) == -signal.SIGKILL
    assert os.stat(path).st_ino == inode, "the segment must survive a reader's death"
    assert producer.is_alive()

    resume.set()
    done = procs.receive(producer, "done", TIMEOUT)
    assert done["position"] == done["header_position"] == done["header_intent"] == TOTAL
    assert procs.join(producer, TIMEOUT) == 0

    reports = {}
    for reader in (fast, slow):
        reports[reader.name] = procs.receive(reader, "done", TIMEOUT)
        assert procs.join(reader, TIMEOUT) == 0
    edge_report = procs.receive(edge, "done", TIMEOUT)
    assert procs.join(edge, TIMEOUT) == 0
    with pytest.raises(EOFError):
        doomed.conn.recv()  # the doomed reader said "ready" and nothing else

    for name, report in reports.items():
        _assert_exact(name, report)
    fast_report, slow_report = reports["fast reader"], reports["slow reader"]
    assert fast_report["delivered"] > 0
    # The slow reader cannot keep up: it is lapped again and again, and still counts exactly.
    assert slow_report["laps"] >= 10, slow_report
    assert slow_report["lost"] > CAPACITY, slow_report
    assert slow_report["delivered"] > 0, slow_report
    # Reading at the overwrite edge, copies raced the producer and were cut short, and every
    # record that came through was still whole and in its place.
    assert edge_report["corrupt"] == edge_report["misplaced"] == edge_report["unbalanced"] == 0, edge_report
    assert edge_report["delivered"] > 0, edge_report
    assert edge_report["raced"] + edge_report["dropped_all"] > 0, f"no read raced the producer: {edge_report}"

    # Readers exited normally (their resource trackers with them), one was killed: the
    # producer's segment is still there, the very same file, and its last lap is intact.
    assert os.stat(path).st_ino == inode
    with FeedReader(path, start="oldest") as late:
        assert late.position == TOTAL - CAPACITY
        tally = Tally(late.position)
        while not late.closed:
            tally.add(late.read().view(np.int64).reshape(-1, 8), late.position)
        report = tally.finish(late.position) | {"lost": late.lost, "reader_delivered": late.delivered}
        _assert_exact("late reader", report, start=TOTAL - CAPACITY)
        assert report["delivered"] == CAPACITY


def test_jitted_reader_spinning_on_an_idle_ring_wakes_when_the_producer_publishes(shm_dir, procs):
    """A reader waiting inside numba (``feed_position_nb`` in a bare loop, then
    ``feed_read_nb``, never returning to Python) sees records published by another process:
    the kernel's load of the producer position is atomic, so LLVM cannot keep it in a
    register (see test_atomics.py; with a plain load this test hangs)."""
    with FeedWriter(shm_dir / "feed", capacity=CAPACITY) as writer:
        writer.publish(expected_words(np.arange(2)).view(record_dtype).reshape(-1))
        reader = procs.start("waiting reader", workers.waiting_reader_main, writer.segment.path)
        assert procs.receive(reader, "ready", TIMEOUT)["position"] == 2
        time.sleep(0.2)
        assert reader.is_alive()
        writer.publish(expected_words(np.arange(2, 5)).view(record_dtype).reshape(-1))
        done = procs.receive(reader, "done", TIMEOUT)
        assert done["seq"] == [2, 3, 4] and done["corrupt"] == 0 and done["lost"] == 0
        assert procs.join(reader, TIMEOUT) == 0
