"""The UDP relay (``quayside.core.feed.udp``) on loopback: records/s delivered, and loss.

Two modes, relay on CPU_A and a ``UdpReceiver`` on 127.0.0.1 on CPU_B in both:

* flat out: a feed ring is filled with ``records`` quotes and closed before anything is timed;
  the relay (``Relay(..., start="oldest")``, ``run(until_closed=True)``, what ``quayside feed
  relay --start oldest --until-closed`` runs) sends it as fast as it can. A burst: it shows
  the ceilings of sender and receiver, and the receiver's socket buffer overflowing.
* live: a producer sharing CPU_A (sleeping between ~0.5 ms bursts) publishes at a set rate
  and the relay forwards from ``start="live"``, as in production.

Delivered/s is records received per second from the start (relay's, or producer's) to the last
datagram received; loss is what was published minus what the receiver got, split into records
the ring overwrote before the relay read them and records lost between relay and receiver.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks._common import CPU_A, CPU_B, Child, ChildError, OnCpu, Workspace
from benchmarks._kernels import produce_nb
from quayside.core.feed.ring import FeedWriter

__all__ = ["fill_ring", "udp_relay", "udp_counters", "udp_preemption", "udp_summary"]

STREAM_ID = 7


def udp_counters() -> dict:
    """The kernel's system-wide UDP counters (``/proc/net/snmp``): drops show up in
    ``RcvbufErrors`` / ``InErrors`` (other processes' traffic counts too)."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines() if ln.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}
    except (OSError, IndexError, ValueError):
        return {}


def fill_ring(ws: Workspace, records: int) -> str:
    """A closed feed ring holding exactly ``records`` records (a power of two)."""
    path = ws.ring("udp-source")
    writer = FeedWriter(path, records)
    produce_nb(writer.segment.words, writer.segment.slot_words, records, 256, 0.0, np.zeros(2, np.int64))
    writer.close(unlink=False)  # closed, but left for the relays; the workspace removes it
    return path


def _receiver(conn, pinned, rcvbuf):
    from quayside.core.feed.udp import UdpReceiver

    rx = UdpReceiver(("127.0.0.1", 0), rcvbuf=rcvbuf)
    conn.send({"pinned": pinned, "port": rx.address[1], "rcvbuf": rx.rcvbuf})
    t_first = t_last = 0
    received = 0
    drain_until = None
    clock = OnCpu()
    while True:
        n = len(rx.poll(timeout=0.002))
        if n:
            t_last = time.time_ns()
            t_first = t_first or t_last
            received += n
        elif drain_until is not None and time.monotonic() > drain_until:
            break
        if drain_until is None and conn.poll(0):
            conn.recv()  # the relay has finished: drain what is queued, then stop
            drain_until = time.monotonic() + 0.2
    stats = rx.stats
    conn.send(
        {
            "cpu": clock.result(),
            "received": received,
            "t_first": t_first,
            "t_last": t_last,
            "datagrams": stats.datagrams,
            "gaps": stats.gaps,
            "duplicates": stats.duplicates,
            "reordered": stats.reordered,
            "malformed": stats.malformed + stats.truncated,
            "foreign_records": stats.foreign_records,
        }
    )
    rx.close()


def _ticking_producer(conn, pinned, ring, capacity, records, rate):
    """Publish ``records`` at ``rate`` records/s: every ~0.5 ms, whatever is due, in one burst
    (the process sleeps in between, so it leaves its core to the relay)."""
    writer = FeedWriter(ring, capacity)
    try:
        writer.segment.prefault()
        words, slots = writer.segment.words, writer.segment.slot_words
        times = np.zeros(2, dtype=np.int64)
        conn.send({"pinned": pinned})
        conn.recv()
        chunk = max(1, int(rate * 0.0005))
        t0, clock = time.time_ns(), OnCpu()
        published = 0
        while published < records:
            due = min(records, int((time.time_ns() - t0) * rate / 1e9))
            if due - published >= chunk or (due == records and due > published):
                produce_nb(words, slots, due - published, 256, 0.0, times)
                published = due
            else:
                time.sleep(0.0002)
        conn.send({"t_start": t0, "t_end": time.time_ns(), "cpu": clock.result()})
    finally:
        writer.close()


def _relay(conn, pinned, ring, port, max_datagram, start):
    from quayside.core.feed.udp import Relay

    relay = Relay(ring, ("127.0.0.1", port), stream_id=STREAM_ID, max_datagram=max_datagram, start=start)
    conn.send({"pinned": pinned, "records_per_datagram": relay.sender.max_records})
    conn.recv()
    t0, clock = time.time_ns(), OnCpu()
    stats = relay.run(until_closed=True)
    t1 = time.time_ns()
    conn.send({"t_start": t0, "t_end": t1, "stats": asdict(stats), "cpu": clock.result()})
    relay.close()


def udp_relay(
    ws: Workspace, records: int, max_datagram: int, *, rate: float = 0.0, ring: str | None = None, rcvbuf: int = 8 << 20
) -> dict:
    """``rate`` 0: relay the pre-filled, closed ``ring`` flat out. ``rate`` > 0: a producer
    (sharing CPU_A with the relay) publishes ``records`` live at ``rate`` records/s."""
    rx = Child(ws, "udp-receiver", CPU_B, _receiver, rcvbuf)
    try:
        hello = rx.recv()
        if rate > 0:
            ring = ws.ring(f"udp-live-{max_datagram}")
            prod = Child(ws, "udp-producer", CPU_A, _ticking_producer, ring, 1 << 20, records, rate)
            prod.recv()
        relay = Child(ws, "udp-relay", CPU_A, _relay, ring, hello["port"], max_datagram, "live" if rate else "oldest")
        ready = relay.recv()
        before = udp_counters()
        relay.send("go")
        if rate > 0:
            prod.send("go")
            produced = prod.recv(timeout=60 + records / rate)
        sent = relay.recv(timeout=60 + records * 2e-6)
        rx.send("relay done")
        got = rx.recv(timeout=30)
        after = udp_counters()
    finally:
        ws.reap()
    stats = sent["stats"]
    if stats["records_read"] + stats["ring_lost"] != records:
        raise ChildError(f"udp relay accounted for {stats['records_read'] + stats['ring_lost']} of {records} records")
    if got["malformed"] or got["foreign_records"] or got["duplicates"]:
        raise ChildError(f"udp receiver saw bad data: {got}")
    t_start = produced["t_start"] if rate > 0 else sent["t_start"]
    span = max(got["t_last"], sent["t_end"]) - t_start
    return {
        "mode": f"live, offered {rate:.0f} records/s" if rate else "pre-filled ring, flat out",
        "offered_rate": rate or None,
        "max_datagram": max_datagram,
        "records_per_datagram": ready["records_per_datagram"],
        "records": records,
        "pinned": hello["pinned"] and ready["pinned"],
        "rcvbuf_effective": hello["rcvbuf"],
        "relay": stats,
        "cpu": {"relay": sent["cpu"], "receiver": got["cpu"]} | ({"producer": produced["cpu"]} if rate else {}),
        "relay_seconds": (sent["t_end"] - sent["t_start"]) / 1e9,
        "relay_records_per_s": stats["records_sent"] / (sent["t_end"] - t_start) * 1e9,
        "receiver": got,
        "delivered_records_per_s": got["received"] / span * 1e9 if got["received"] else 0.0,
        "lost": records - got["received"],
        "lost_in_ring": stats["ring_lost"],
        "lost_in_network": stats["records_read"] - got["received"],
        "udp_counters_delta": {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)},
    }


def udp_preemption(r: dict) -> float:
    """The largest share of its wall time that one of the run's processes spent runnable but
    waiting for its CPU (these processes also sleep, so their on-CPU share says nothing)."""
    shares = [(c["waited_runnable_s"] or 0.0) / c["wall_s"] for c in r["cpu"].values() if c["wall_s"]]
    return round(max(shares, default=0.0), 3)


def udp_summary(r: dict) -> dict:
    return {"delivered_records_per_s": r["delivered_records_per_s"], "lost": r["lost"]}
