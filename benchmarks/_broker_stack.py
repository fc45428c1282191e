"""The processes of the broker benchmarks and the engine's side of the rings.

* :class:`Sim` — ``quayside simgateway`` as a process (API and admin ports chosen by the OS),
  with :meth:`Sim.command` on its admin port;
* :class:`GatewayProcess` — ``quayside gateway run`` as a process on rings in the workspace,
  as users run it (the configuration's defaults: the central rate limiter at 40 messages/s,
  the outbound ring polled every 0.5 ms when idle);
* the benchmark process itself plays the engine (:class:`~quayside.core.broker.testing.EngineStandIn`):
  it writes ORDER records into the outbound ring and reads the inbound ring.

The engine side polls with a short sleep (``POLL_SLEEP_S``), not a busy spin: on a two-core
machine a spinning reader would take a whole core from the simulator and the gateway, whose
figures are in milliseconds anyway.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import numpy as np

from quayside.core import wire
from quayside.core.broker.config import GatewayConfig
from quayside.core.broker.testing import EngineStandIn, Process, toml_text, wait_for
from quayside.core.wire import RecordKind

__all__ = ["Sim", "GatewayProcess", "POLL_SLEEP_S", "order_round_trips", "drain_for"]

POLL_SLEEP_S = 20e-6
_LISTENING = re.compile(r"simgateway listening on [\d.]+:(\d+), admin port (\d+)")


class Sim:
    """``quayside simgateway`` on free ports, its synthetic market at real time."""

    def __init__(self, tmp: Path, name: str):
        self.proc = Process(["simgateway", "--port", "0", "--admin-port", "0"], tmp / f"{name}.log")
        m = wait_for(lambda: self._alive() and _LISTENING.search(self.proc.output()), "the simulator to listen", 60)
        self.port, self.admin_port = int(m.group(1)), int(m.group(2))

    def _alive(self) -> bool:
        if not self.proc.alive():
            raise RuntimeError(f"quayside simgateway exited:\n{self.proc.output()}")
        return True

    def command(self, line: str) -> str:
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=30) as sock:
            sock.sendall(line.encode() + b"\n")
            reply = sock.makefile("r").readline().strip()
        if not reply.startswith("ok"):
            raise RuntimeError(f"simgateway admin {line!r}: {reply}")
        return reply

    def status(self) -> dict:
        return json.loads(self.command("status").removeprefix("ok").strip())

    def close(self) -> None:
        try:
            self.proc.terminate(30)
        finally:
            self.proc.close()


class GatewayProcess:
    """``quayside gateway run`` against ``sim``, rings in ``shm``; the engine's side of them in
    :attr:`engine`."""

    def __init__(self, shm: Path, tmp: Path, sim: Sim, name: str, instruments: list[str], **options):
        rings = {
            "inbound": str(shm / f"{name}-inbound"),
            "outbound": str(shm / f"{name}-outbound"),
            "inbound_capacity": 1 << 16,
            "outbound_capacity": 1 << 10,
        }
        data = {
            "port": sim.port,
            "client_id": 31,
            "instruments": instruments,
            "engine_positions": "gateway",  # no engine, no feed ring: the gateway's own fills
            "state_file": str(tmp / f"{name}-state.jsonl"),
            "rings": rings,
            **options,
        }
        self.config = GatewayConfig(**data)
        path = tmp / f"{name}.toml"
        path.write_text(toml_text(data))
        self.engine = EngineStandIn(self.config)
        self.proc = Process(["gateway", "run", "--config", str(path)], tmp / f"{name}.log")
        self.stats: dict = {}

    def wait_synced(self, timeout: float = 120.0) -> None:
        """Until the gateway has connected and synced: its snapshot of the broker's positions
        (sent at the end of every sync) is in the inbound ring."""

        def synced() -> bool:
            if not self.proc.alive():
                raise RuntimeError(f"quayside gateway exited:\n{self.proc.output()}")
            got = self.engine.inbound.poll()
            return bool((got["kind"] == RecordKind.POSITION).any())

        wait_for(synced, "the gateway to connect and sync", timeout, 0.01)

    def close(self) -> dict:
        """SIGTERM; the gateway's counters (its last line)."""
        try:
            code = self.proc.terminate(60)
            lines = self.proc.output().strip().splitlines()
            if code == 0 and lines:
                self.stats = json.loads(lines[-1])
        finally:
            self.proc.close()
            self.engine.close()
        return self.stats


def order_round_trips(gw: GatewayProcess, iid: int, qty: float, n: int, warmup: int, rate: float) -> dict:
    """Market orders, alternately buy and sell, one in flight at a time, ``rate`` per second:
    ORDER written -> ORDER_STATUS SUBMITTED and the first FILL read back, in ns."""
    eng, reader = gw.engine, gw.engine.inbound
    to_ack, to_fill = [], []
    start = time.perf_counter()
    for i in range(warmup + n):
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        t0 = time.perf_counter_ns()
        oid = eng.order(iid, wire.Side.BUY if i % 2 == 0 else wire.Side.SELL, qty)
        ack = filled = 0
        deadline = t0 + 10_000_000_000
        while not filled:
            got = reader.poll()
            now = time.perf_counter_ns()
            if not len(got):
                if now > deadline:
                    raise RuntimeError(f"no fill for engine order {oid} within 10 s")
                time.sleep(POLL_SLEEP_S)
                continue
            kinds = got["kind"]
            st = got[kinds == RecordKind.ORDER_STATUS].view(wire.order_status_dtype)
            st = st[st["order_id"] == oid]
            if len(st):
                bad = np.isin(st["status"], [wire.OrderStatus.REJECTED, wire.OrderStatus.INACTIVE])
                if bad.any():
                    raise RuntimeError(f"engine order {oid} was refused (error {int(st['error_code'][bad][0])})")
                if not ack and (st["status"] == wire.OrderStatus.SUBMITTED).any():
                    ack = now
            fills = got[kinds == RecordKind.FILL].view(wire.fill_dtype)
            if ((fills["order_id"] == oid) & (fills["quantity"] != 0)).any():
                filled = now
        if i >= warmup:
            to_fill.append(filled - t0)
            if ack:
                to_ack.append(ack - t0)
    return {"order_to_fill_ns": np.array(to_fill), "order_to_ack_ns": np.array(to_ack)}


def drain_for(gw: GatewayProcess, seconds: float) -> dict:
    """Read the inbound ring for ``seconds``: QUOTE and TRADE records per second, and whether
    the gateway reported losing the connection meanwhile."""
    reader = gw.engine.inbound
    counts = {"quotes": 0, "trades": 0, "stale_quotes": 0, "disconnects": 0, "other": 0}
    t0 = time.perf_counter()
    end = t0 + seconds
    while (now := time.perf_counter()) < end:
        got = reader.poll()
        if not len(got):
            time.sleep(POLL_SLEEP_S)
            continue
        kinds = got["kind"]
        quotes = got[kinds == RecordKind.QUOTE]
        counts["quotes"] += len(quotes)
        counts["stale_quotes"] += int((quotes["flags"] & wire.Flag.STALE != 0).sum())
        counts["trades"] += int((kinds == RecordKind.TRADE).sum())
        logs = got[kinds == RecordKind.LOG].view(wire.log_dtype)
        counts["disconnects"] += int((logs["code"] == wire.LogCode.BROKER_DISCONNECTED).sum())
        counts["other"] += int(((kinds != RecordKind.QUOTE) & (kinds != RecordKind.TRADE)).sum())
    counts["seconds"] = now - t0
    counts["records_per_s"] = (counts["quotes"] + counts["trades"]) / counts["seconds"]
    return counts
