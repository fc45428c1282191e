"""What a Python shop would use instead of shared-memory rings: an ``asyncio.Queue`` between two
coroutines in one process, and a plain TCP socket on loopback between two processes. Both move
64-byte messages; round trips are timed with ``time.perf_counter_ns`` in the initiating side."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np

from benchmarks._common import CPU_A, CPU_B, Child, ChildError, Workspace

__all__ = ["asyncio_queue", "tcp_socket"]

MSG = bytes(range(64))


# --------------------------------------------------------------------------- asyncio.Queue


async def _asyncio_pingpong(iterations: int, warmup: int) -> np.ndarray:
    ping: asyncio.Queue = asyncio.Queue()
    pong: asyncio.Queue = asyncio.Queue()
    total = iterations + warmup

    async def echo():
        for _ in range(total):
            await pong.put(await ping.get())

    task = asyncio.create_task(echo())
    samples = np.zeros(iterations, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(total):
        t0 = clock()
        await ping.put(MSG)
        await pong.get()
        t1 = clock()
        if i >= warmup:
            samples[i - warmup] = t1 - t0
    await task
    return samples


async def _asyncio_stream(records: int, maxsize: int) -> float:
    q: asyncio.Queue = asyncio.Queue(maxsize)

    async def consume():
        for _ in range(records):
            await q.get()

    task = asyncio.create_task(consume())
    t0 = time.perf_counter_ns()
    for _ in range(records):
        await q.put(MSG)
    await task
    return records / (time.perf_counter_ns() - t0) * 1e9


def _asyncio_child(conn, pinned, iterations, warmup, records):
    samples = asyncio.run(_asyncio_pingpong(iterations, warmup))
    rate = asyncio.run(_asyncio_stream(records, 1024))
    conn.send({"pinned": pinned, "samples": samples, "records_per_s": rate})


def asyncio_queue(ws: Workspace, iterations: int, warmup: int, records: int) -> dict:
    """Ping-pong between two coroutines through two queues, then one producer coroutine
    streaming ``records`` messages through a queue of 1024 to a consumer coroutine."""
    child = Child(ws, "asyncio", CPU_A, _asyncio_child, iterations, warmup, records)
    try:
        return child.recv(timeout=60 + (iterations + records) * 1e-4)
    finally:
        ws.reap()


# --------------------------------------------------------------------------- TCP loopback


def _recv_exactly(sock: socket.socket, view: memoryview, n: int) -> None:
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n])
        if k == 0:
            raise ChildError("peer closed the socket")
        got += k


def _tcp_peer(conn, pinned, port, mode, count):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.send({"pinned": pinned})
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    if mode == "echo":
        for _ in range(count):
            _recv_exactly(sock, view, 64)
            sock.sendall(view[:64])
        conn.send({"done": True})
    else:  # sink: count bytes until every record has arrived
        need, got, t_first = count * 64, 0, 0
        while got < need:
            k = sock.recv_into(view)
            if k == 0:
                break
            if not t_first:
                t_first = time.time_ns()
            got += k
        conn.send({"records": got // 64, "t_done": time.time_ns()})
    sock.close()


def _tcp_initiator(conn, pinned, listener, mode, iterations, warmup, records):
    sock, _ = listener.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if mode == "pingpong":
        view = memoryview(bytearray(64))
        samples = np.zeros(iterations, dtype=np.int64)
        clock = time.perf_counter_ns
        for i in range(iterations + warmup):
            t0 = clock()
            sock.sendall(MSG)
            _recv_exactly(sock, view, 64)
            t1 = clock()
            if i >= warmup:
                samples[i - warmup] = t1 - t0
        conn.send({"pinned": pinned, "samples": samples})
    else:
        t0 = time.time_ns()
        for _ in range(records):
            sock.sendall(MSG)
        conn.send({"pinned": pinned, "t_start": t0})
    sock.close()


def tcp_socket(ws: Workspace, iterations: int, warmup: int, records: int) -> dict:
    """Round trips of one 64-byte message over TCP loopback (``TCP_NODELAY``, one ``sendall``
    and ``recv_into`` per message), then ``records`` messages streamed one ``sendall`` each."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        try:
            init = Child(ws, "tcp-initiator", CPU_A, _tcp_initiator, listener, "pingpong", iterations, warmup, 0)
            peer = Child(ws, "tcp-echo", CPU_B, _tcp_peer, port, "echo", iterations + warmup)
            ready = peer.recv()
            ping = init.recv(timeout=60 + iterations * 1e-4)
            peer.recv()
            ws.reap()
            send = Child(ws, "tcp-sender", CPU_A, _tcp_initiator, listener, "stream", 0, 0, records)
            sink = Child(ws, "tcp-sink", CPU_B, _tcp_peer, port, "sink", records)
            sink.recv()
            sent = send.recv(timeout=60 + records * 1e-5)
            res = sink.recv(timeout=60 + records * 1e-5)
        finally:
            ws.reap()
    return {
        "pinned": ping["pinned"] and ready["pinned"] and sent["pinned"],
        "samples": ping["samples"],
        "records_per_s": res["records"] / (res["t_done"] - sent["t_start"]) * 1e9,
        "records": res["records"],
    }
