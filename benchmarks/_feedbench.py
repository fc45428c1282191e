"""The Quayside feed ring measured from numba: ping-pong round trips and producer throughput
to one or more readers, each side a separate pinned process using the real ring kernels."""

from __future__ import annotations

import time

import numpy as np

from benchmarks._common import CPU_A, CPU_B, Child, ChildError, OnCpu, Workspace
from benchmarks._kernels import (
    QUOTE_WORD0,
    T_DONE,
    T_END,
    T_FIRST,
    T_SEQ_ERRORS,
    T_START,
    pingpong_echo_nb,
    pingpong_initiator_nb,
    produce_nb,
    read_until_nb,
)
from quayside.core.feed.nb import S_DELIVERED, S_LAPS, S_LOST, S_POSITION, reader_state
from quayside.core.feed.ring import FeedReader, FeedWriter
from quayside.core.feed.segment import W_PRODUCER_CLOSED, RingType, attach_segment

__all__ = ["compile_kernels", "feed_pingpong", "feed_throughput", "feed_preemption", "feed_summary"]


def _src(rows: int) -> np.ndarray:
    src = np.zeros((rows, 8), dtype=np.int64)
    src[:, 0] = QUOTE_WORD0
    return src


def compile_kernels(ws: Workspace) -> float:
    """Compile (or load from numba's cache) every kernel with the exact argument types the
    children use, before forking, so that no child compiles while it is being timed."""
    t0 = time.perf_counter()
    path = ws.ring("compile")
    w = FeedWriter(path, 16)
    seg = attach_segment(path, RingType.FEED, writable=False)
    try:
        out = np.zeros((4, 8), dtype=np.int64)
        times = np.zeros(4, dtype=np.int64)
        ww, ws_ = w.segment.words, w.segment.slot_words
        pingpong_initiator_nb(ww, ws_, seg.words, seg.slot_words, reader_state(0), _src(1), out[:1], times[:0], 0)
        pingpong_echo_nb(seg.words, seg.slot_words, ww, ws_, reader_state(0), out[:1], 0)
        produce_nb(ww, ws_, 8, 4, 0.0, times)
        ww[W_PRODUCER_CLOSED] = 1  # so that no loop below can spin: this process cannot be interrupted in one
        read_until_nb(seg.words, seg.slot_words, reader_state(0), out, 8, times)
    finally:
        seg.close()
        w.close()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- ping-pong


def _pingpong_side(conn, pinned, role, mine, peer, iterations, warmup):
    writer = FeedWriter(mine, 1024)
    try:
        conn.send({"pinned": pinned})
        conn.recv()  # both rings exist now
        seg = attach_segment(peer, RingType.FEED, writable=False)
        state = reader_state(0)
        out = np.zeros((1, 8), dtype=np.int64)
        mw, ms = writer.segment.words, writer.segment.slot_words
        clock = OnCpu()
        if role == "initiator":
            samples = np.zeros(iterations, dtype=np.int64)
            errors = pingpong_initiator_nb(mw, ms, seg.words, seg.slot_words, state, _src(1), out, samples, warmup)
            res = {"errors": int(errors), "samples": samples}
        else:
            res = {"echoed": int(pingpong_echo_nb(seg.words, seg.slot_words, mw, ms, state, out, iterations + warmup))}
        conn.send(res | {"lost": int(state[S_LOST]), "cpu": clock.result()})
        seg.close()
    finally:
        writer.close()


def feed_pingpong(ws: Workspace, iterations: int, warmup: int) -> tuple[np.ndarray, dict]:
    """One trial: A on CPU_A publishes into ring a2b and reads b2a; B on CPU_B echoes."""
    a2b, b2a = ws.ring("pp-a2b"), ws.ring("pp-b2a")
    echo = Child(ws, "feed-echo", CPU_B, _pingpong_side, "echo", b2a, a2b, iterations, warmup)
    init = Child(ws, "feed-initiator", CPU_A, _pingpong_side, "initiator", a2b, b2a, iterations, warmup)
    try:
        ready = [echo.recv(), init.recv()]
        echo.send("go")
        init.send("go")
        res = init.recv(timeout=60 + iterations * 2e-5)
        back = echo.recv(timeout=10)
    finally:
        ws.reap()
    if res["errors"] < 0:
        raise ChildError("feed ping-pong: the echo side closed its ring before the last round trip")
    if res["errors"] or res["lost"] or back["lost"]:
        raise ChildError(f"feed ping-pong: {res['errors']} bad echoes, {res['lost'] + back['lost']} lost")
    info = {"pinned": all(r["pinned"] for r in ready), "echoed": back["echoed"]}
    info["waited_runnable_s"] = [res["cpu"]["waited_runnable_s"], back["cpu"]["waited_runnable_s"]]
    return res["samples"], info


# --------------------------------------------------------------------------- throughput


def _producer(conn, pinned, ring, capacity, total, batch, rate):
    writer = FeedWriter(ring, capacity)
    try:
        writer.segment.prefault()  # no page faults while anything is timed
        conn.send({"pinned": pinned})
        conn.recv()
        times = np.zeros(2, dtype=np.int64)
        clock = OnCpu()
        end = produce_nb(writer.segment.words, writer.segment.slot_words, total, batch, rate, times)
        cpu = clock.result()
        conn.send({"end": int(end), "t_start": int(times[T_START]), "t_end": int(times[T_END]), "cpu": cpu})
    finally:
        writer.close()  # readers see producer_closed; their mappings stay valid


def _numba_reader(conn, pinned, ring, total, out_rows):
    seg = attach_segment(ring, RingType.FEED, writable=False)
    seg.prefault()
    state = reader_state(0)
    out = np.zeros((out_rows, 8), dtype=np.int64)
    times = np.zeros(4, dtype=np.int64)
    conn.send({"pinned": pinned})
    conn.recv()
    conn.send("running")
    clock = OnCpu()
    read_until_nb(seg.words, seg.slot_words, state, out, total, times)
    cpu = clock.result()
    conn.send(
        {
            "cpu": cpu,
            "position": int(state[S_POSITION]),
            "delivered": int(state[S_DELIVERED]),
            "lost": int(state[S_LOST]),
            "laps": int(state[S_LAPS]),
            "t_first": int(times[T_FIRST]),
            "t_done": int(times[T_DONE]),
            "seq_errors": int(times[T_SEQ_ERRORS]),
        }
    )
    seg.close()


def _python_reader(conn, pinned, ring, total, batch):
    reader = FeedReader(ring, start="oldest", batch=batch)
    reader.segment.prefault()
    conn.send({"pinned": pinned})
    conn.recv()
    conn.send("running")
    clock = OnCpu()
    t_first, errors = 0, 0
    while reader.position < total:
        recs = reader.read()
        n = len(recs)
        if n == 0:
            if reader.closed:
                break
            continue
        if not t_first:
            t_first = time.time_ns()
        base = reader.position - n
        errors += int(np.count_nonzero(recs["seq"].astype(np.int64) != np.arange(base, base + n)))
    t_done = time.time_ns()
    cpu = clock.result()
    conn.send(
        {
            "cpu": cpu,
            "position": reader.position,
            "delivered": reader.delivered,
            "lost": reader.lost,
            "laps": reader.laps,
            "t_first": t_first,
            "t_done": t_done,
            "seq_errors": errors,
        }
    )
    reader.close()


def feed_throughput(
    ws: Workspace,
    tag: str,
    *,
    total: int,
    capacity: int,
    readers: int = 1,
    batch: int = 256,
    rate: float = 0.0,
    python_reader: bool = False,
    reader_rows: int = 256,
) -> dict:
    """The producer (CPU_A) publishes ``total`` records; ``readers`` readers (all on CPU_B)
    read until they reach the end. Rates are records per second of wall time from the
    producer's first claim: the producer's over its own run, each reader's until it is done."""
    ring = ws.ring(f"tp-{tag}")
    prod = Child(ws, "producer", CPU_A, _producer, ring, capacity, total, batch, rate)
    try:
        ready = [prod.recv()]
        kids = []
        for i in range(readers):
            if python_reader:
                kids.append(Child(ws, f"py-reader{i}", CPU_B, _python_reader, ring, total, 4096))
            else:
                kids.append(Child(ws, f"reader{i}", CPU_B, _numba_reader, ring, total, reader_rows))
        ready += [k.recv() for k in kids]
        for k in kids:
            k.send("go")
        for k in kids:
            k.recv()  # "running": about to enter its read loop
        time.sleep(0.02)
        prod.send("go")
        budget = 60 + total * (2e-6 if python_reader else 2e-7) * readers
        p = prod.recv(timeout=budget)
        results = [k.recv(timeout=budget) for k in kids]
    finally:
        ws.reap()
    span = p["t_end"] - p["t_start"]
    out = {
        "records": total,
        "capacity": capacity,
        "batch": batch,
        "offered_rate": rate or None,
        "producer": "feed_claim_nb, slots written in place, feed_commit_nb",
        "reader": "FeedReader (numpy)" if python_reader else f"feed_read_nb ({reader_rows} per call)",
        "pinned": all(r["pinned"] for r in ready),
        "producer_seconds": span / 1e9,
        "producer_records_per_s": total / span * 1e9,
        "producer_cpu": CPU_A,
        "reader_cpu": CPU_B,
        "producer_on_cpu": p["cpu"],
        "readers": [],
    }
    for r in results:
        wall = r["t_done"] - p["t_start"]
        r["records_per_s"] = r["delivered"] / wall * 1e9
        r["finished_after_producer_ms"] = (r["t_done"] - p["t_end"]) / 1e6
        if r["seq_errors"]:
            raise ChildError(f"feed throughput {tag}: {r['seq_errors']} records with a wrong seq")
        if r["delivered"] + r["lost"] != total:
            raise ChildError(f"feed throughput {tag}: delivered + lost = {r['delivered'] + r['lost']} != {total}")
        out["readers"].append(r)
    return out


def feed_preemption(r: dict) -> float:
    """Every process of a throughput run busy-polls, so each of the two CPUs should be ~100 %
    ours (the readers share CPU_B): the share that went elsewhere, on the worse CPU."""
    a = r["producer_on_cpu"]["on_cpu"] or 0.0
    b = sum(x["cpu"]["on_cpu"] or 0.0 for x in r["readers"])
    return round(max(0.0, 1.0 - min(a, b)), 3)


def feed_summary(r: dict) -> dict:
    return {
        "min_reader_records_per_s": min(x["records_per_s"] for x in r["readers"]),
        "lost": sum(x["lost"] for x in r["readers"]),
        "producer_records_per_s": r["producer_records_per_s"],
    }
