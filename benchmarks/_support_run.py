"""One support-service throughput run: a producer process writes a feed into a real feed ring
(``FeedWriter``), and a consumer process reads it the way the service's feed thread does
(``Service.poll_once``: ``FeedSource.read`` then ``handle`` on the batch, sleeping
``idle_sleep_ms`` when the ring is empty). The baseline consumer, ``ring``, is a bare
``FeedReader`` that only copies batches out: the ring's own producer -> reader rate.

The producer runs on CPU_A, the consumer on CPU_B. A run is either *flat out* (the producer
publishes as fast as it can into a ring big enough to hold the whole feed, so the consumer
is measured at its own pace and nothing can be lost) or *paced* (the producer offers a fixed
rate into a ring of the engine's default size, and a consumer that falls a lap behind loses
records, exactly as it would live).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks._common import CPU_A, CPU_B, Child, ChildError, OnCpu, Workspace
from quayside.core.feed.ring import FeedReader, FeedWriter

__all__ = ["SERVICES", "make_service", "service_run", "run_preemption", "run_summary"]

SERVICES = ("pnl", "risk", "recorder", "metrics")
CHUNK_PACED = 1024  # records per publish: the engine publishes small batches, and pacing needs a fine grain
CHUNK_FLAT = 8192  # flat out: as fast as the numpy writer goes


def make_service(name: str, ring: str, folder: Path):
    """The service ``name`` reading ``ring`` with its default settings, except: it starts at the
    oldest record, the risk monitor decides but sends nothing (there is no engine to send to)
    and also watches drawdown and exposure, and the recorder writes into ``folder`` (events to
    a file, not to the terminal)."""
    feed = {"ring": ring, "start": "oldest"}
    if name == "pnl":
        from quayside.support.pnl.service import PnlService, PnlSettings

        return PnlService(PnlSettings(feed=feed))
    if name == "risk":
        from quayside.support.risk.rules import DEFAULT_RULES, Rule
        from quayside.support.risk.service import RiskService, RiskSettings

        rules = [
            *DEFAULT_RULES,
            Rule(name="drawdown_warn", metric="drawdown", threshold=5_000.0),
            Rule(name="drawdown_halt", metric="drawdown", threshold=20_000.0, response="halt"),
            Rule(name="gross_exposure", metric="gross_exposure", threshold=5e6, per_instrument=True),
        ]
        return RiskService(RiskSettings(feed=feed, risk={"rules": rules, "control": {"enabled": False}}))
    if name == "recorder":
        from quayside.support.recorder.service import RecorderService, RecorderSettings

        return RecorderService(RecorderSettings(feed=feed, recorder={"folder": str(folder), "events": "file"}))
    if name == "metrics":
        from quayside.support.metrics.service import MetricsService, MetricsSettings

        return MetricsService(MetricsSettings(feed=feed))
    raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")


# --------------------------------------------------------------------------- processes


def _producer(conn, pinned, ring, capacity, feed, rate):
    writer = FeedWriter(ring, capacity)
    try:
        writer.segment.prefault()
        conn.send({"pinned": pinned})
        conn.recv()
        n = len(feed)
        clock = OnCpu()
        t_start = time.time_ns()
        if rate:
            t0, step = time.perf_counter_ns(), 1e9 / rate
            for lo in range(0, n, CHUNK_PACED):
                due = t0 + int(lo * step)
                while time.perf_counter_ns() < due:
                    pass
                writer.publish(feed[lo : lo + CHUNK_PACED])
        else:
            for lo in range(0, n, CHUNK_FLAT):
                writer.publish(feed[lo : lo + CHUNK_FLAT])
        t_end = time.time_ns()
        conn.send({"t_start": t_start, "t_end": t_end, "cpu": clock.result()})
        conn.recv()  # the consumer is done: only now mark the stream closed and remove the file
    finally:
        writer.close()


def _consume_ring(ring: str, total: int, batch: int) -> Iterator[dict | None]:
    """Set up (first step), then read ``total`` records (second step: the result)."""
    reader = FeedReader(ring, start="oldest", batch=batch)
    t_first = 0
    yield
    while reader.position < total:
        got = len(reader.read())
        if got and not t_first:
            t_first = time.time_ns()
    out = {"t_done": time.time_ns(), "delivered": reader.delivered, "lost": reader.lost, "laps": reader.laps}
    out["t_first"] = t_first
    reader.close()
    yield out


def _consume_service(name: str, ring: str, total: int, folder: Path) -> Iterator[dict | None]:
    """Set up the service and attach (first step), then run its feed loop over ``total`` records."""
    from loguru import logger

    logger.remove()  # the services log breaches and markers: not what is measured, and not to the terminal
    svc = make_service(name, ring, folder)
    svc.open(feed_timeout=10)
    feed = svc.feed
    idle = svc.settings.feed.idle_sleep_ms / 1000.0
    t_first = 0
    yield
    while feed.position < total:  # the feed thread's loop (Service._feed_loop), minus ring replacement
        if svc.poll_once():
            if not t_first:
                t_first = time.time_ns()
        else:
            time.sleep(idle)
    t_done = time.time_ns()  # before stop(): closing (the recorder's fsync) is not feed handling
    s = feed.stats
    out = {
        "t_done": t_done,
        "delivered": s.records,
        "lost": s.lost,
        "foreign": s.foreign,
        "batches": s.batches,
        "t_first": t_first,
    }
    out["batch"] = svc.settings.feed.batch
    out["state"] = svc.health()
    svc.stop()
    yield out


def _consumer(conn, pinned, name, ring, total, folder):
    steps = _consume_ring(ring, total, 8192) if name == "ring" else _consume_service(name, ring, total, Path(folder))
    next(steps)  # attached, set up, not yet timed
    conn.send({"pinned": pinned})
    conn.recv()
    conn.send("running")
    clock = OnCpu()
    out = next(steps)
    out["cpu"] = clock.result()
    conn.send(out)


def service_run(ws: Workspace, name: str, feed: np.ndarray, *, capacity: int, rate: float = 0.0) -> dict:
    """``feed`` through a ring of ``capacity`` slots into the consumer ``name`` (a service, or
    ``ring`` for the bare reader), flat out (``rate`` 0) or paced at ``rate`` records/s."""
    total = len(feed)
    ring = ws.ring(f"support-{name}")
    folder = ws.tmp / f"recordings-{Path(ring).name}"
    prod = Child(ws, "producer", CPU_A, _producer, ring, capacity, feed, rate)
    try:
        ready = [prod.recv()]
        cons = Child(ws, f"consumer-{name}", CPU_B, _consumer, name, ring, total, str(folder))
        ready.append(cons.recv(timeout=120))
        cons.send("go")
        cons.recv()  # "running"
        time.sleep(0.02)
        prod.send("go")
        budget = 120 + total * 2e-6
        p = prod.recv(timeout=budget)
        c = cons.recv(timeout=budget)
        prod.send("close")
    finally:
        ws.reap()
        shutil.rmtree(folder, ignore_errors=True)
    span = p["t_end"] - p["t_start"]
    wall = c["t_done"] - p["t_start"]
    if c["delivered"] + c["lost"] != total:
        raise ChildError(f"{name}: delivered {c['delivered']} + lost {c['lost']} != {total} published")
    return {
        "consumer": name,
        "records": total,
        "capacity": capacity,
        "offered_rate": rate or None,
        "pinned": all(r["pinned"] for r in ready),
        "producer_records_per_s": total / span * 1e9,
        "producer_cpu": CPU_A,
        "consumer_cpu": CPU_B,
        "producer_on_cpu": p["cpu"],
        "records_per_s": c["delivered"] / wall * 1e9,
        "finished_after_producer_ms": (c["t_done"] - p["t_end"]) / 1e6,
        **{k: v for k, v in c.items() if k not in ("t_first", "t_done")},
    }


def run_preemption(r: dict) -> float:
    """The share of its wall time either process sat runnable while something else had its CPU
    (the consumer sleeps when idle, so time off the CPU alone says nothing)."""
    shares = []
    for cpu in (r["producer_on_cpu"], r["cpu"]):
        waited = cpu.get("waited_runnable_s")
        if waited is None:  # no schedstat: fall back to time not on the CPU (overstates a sleeper)
            waited = cpu["wall_s"] - cpu["ran_s"]
        shares.append(waited / cpu["wall_s"] if cpu["wall_s"] else 0.0)
    return round(max(shares), 3)


def run_summary(r: dict) -> dict:
    return {
        "records_per_s": r["records_per_s"],
        "lost": r["lost"],
        "producer_records_per_s": r["producer_records_per_s"],
    }
