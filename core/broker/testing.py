"""Helpers for tests and benchmarks that run the broker gateway against the simulated gateway.

* :class:`BackgroundBrokerGateway` runs a :class:`~.gateway.Gateway` on its own event loop in a
  thread (the way :class:`~.sim.background.BackgroundGateway` runs the simulator), with
  :meth:`~BackgroundBrokerGateway.call` to look at it from its own loop;
* :class:`EngineStandIn` plays the engine: writes ORDER and CANCEL records to the outbound ring
  and consumes (and keeps) everything the gateway writes to the inbound ring;
* :class:`Process` starts ``quayside engine run`` or ``quayside gateway run`` with a TOML
  configuration and stops it with SIGTERM;
* :func:`toml_text` writes such a configuration from a dict.

A benchmark can use the same pieces: the gateway in-process (``BackgroundBrokerGateway``) or as
a subprocess (``Process(["gateway", "run", "--config", path], ...)``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from quayside.core import wire
from quayside.core.broker.config import GatewayConfig
from quayside.core.feed.ring import CommandReader, CommandWriter, RingResult
from quayside.core.wire import RecordKind

__all__ = [
    "BackgroundBrokerGateway",
    "EngineStandIn",
    "FeedTail",
    "GatewayRig",
    "Process",
    "toml_text",
    "wait_for",
    "QUAYSIDE",
    "ENGINE_STARTUP_TIMEOUT",
    "TRADING_ENGINE",
    "TEST_CAPACITIES",
    "gateway_test_config",
]

QUAYSIDE = str(Path(sys.executable).with_name("quayside"))

ENGINE_STARTUP_TIMEOUT = 420.0  # the engine's first kernel compile on a loaded 2-core machine
TEST_CAPACITIES = {
    "inbound_capacity": 1 << 14,
    "outbound_capacity": 256,
    "control_capacity": 64,
    "feed_capacity": 1 << 20,
}
#: An engine that trades on almost every EURUSD quote (crossover with tiny spans), within limits
#: that let a test see fills, positions and denials quickly.
TRADING_ENGINE = {
    "heartbeat_ms": 500.0,
    "lock_memory": False,
    "strategy": {
        "name": "crossover",
        "instruments": ["EURUSD"],
        "params": {"fast_span": 2, "slow_span": 4, "threshold_bps": 0.0, "order_qty": 10_000.0},
    },
    "risk": {
        "duplicate_window_ms": 0.0,
        "defaults": {
            "max_order_qty": 20_000.0,
            "max_long_position": 10_000.0,
            "max_short_position": 10_000.0,
            "stale_quote_ms": 60_000.0,
        },
    },
}


def gateway_test_config(port: int, client_id: int, rings: dict[str, str], state_file: Path) -> dict:
    """A gateway on the simulator at ``port``, on the engine's ``rings`` (the TEST_CAPACITIES),
    reconciling and reconnecting quickly, with patience for a loaded machine."""
    return {
        "port": port,
        "client_id": client_id,
        "instruments": ["EURUSD"],
        "state_file": str(state_file),
        "reconcile_interval_s": 0.25,
        "reconnect_initial_s": 0.2,
        "max_order_age_ms": 30_000.0,  # a loaded machine may be slow; no order is too old here
        "rings": {k: v for k, v in {**rings, **TEST_CAPACITIES}.items() if "control" not in k},
    }


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0, poll: float = 0.005):
    """Poll ``condition`` until it returns something truthy (returned); AssertionError after
    ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


class BackgroundBrokerGateway:
    """A :class:`~.gateway.Gateway` serving from a daemon thread."""

    def __init__(self, config: GatewayConfig, registry=None, timeout: float = 30.0):
        self.config = config
        self.registry = registry
        self.timeout = timeout
        self.gateway = None
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> BackgroundBrokerGateway:
        from quayside.core.broker.gateway import Gateway

        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self.gateway = Gateway(self.config, self.registry)
            except BaseException as exc:
                self.error = exc
                ready.set()
                loop.close()
                return

            async def run():
                ready.set()
                return await self.gateway.run()

            try:
                self.exit_code = loop.run_until_complete(run())
            except BaseException as exc:
                self.error = exc
            finally:
                loop.run_until_complete(asyncio.sleep(0.01))
                loop.close()

        self._thread = threading.Thread(target=main, name="broker-gateway", daemon=True)
        self._thread.start()
        ready.wait(self.timeout)
        if self.error is not None:
            raise self.error
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def call(self, fn: Callable):
        """``fn(gateway)`` on the gateway's loop; its result."""

        async def run():
            return fn(self.gateway)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self.timeout)

    def stats(self) -> dict:
        return self.call(lambda g: g.stats())

    def stop(self) -> int | None:
        if self._thread is None:
            return self.exit_code
        if self._thread.is_alive() and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.gateway.stop)
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the gateway did not stop within {self.timeout} s")
        self._thread = None
        return self.exit_code

    def wait_exit(self, timeout: float) -> int | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.exit_code

    def __enter__(self) -> BackgroundBrokerGateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def typed(rec) -> np.void:
    arr = np.asarray(rec).reshape(1).view(wire.record_dtype)
    return arr.view(wire.dtype_for(int(arr["kind"][0])))[0]


class EngineStandIn:
    """The engine's side of the inbound and outbound rings, played by a test."""

    def __init__(self, config: GatewayConfig, strategy_id: int = 1):
        rings = config.rings
        self.strategy_id = strategy_id
        self.outbound = CommandWriter(rings.outbound, rings.outbound_capacity)
        self.inbound = CommandReader(rings.inbound, rings.inbound_capacity)
        self.records: list[np.void] = []
        self.next_order_id = 1

    # ---- out

    def order(self, iid: int, side: int, qty: float, price: float = float("nan"), *, tif=wire.TimeInForce.DAY, ts=None):
        """Write an ORDER (limit if ``price`` is a number, else market); its engine order id."""
        rec = np.zeros(1, wire.order_dtype)
        rec["kind"], rec["version"] = RecordKind.ORDER, wire.VERSIONS[RecordKind.ORDER]
        oid = self.next_order_id
        self.next_order_id += 1
        rec["strategy_id"], rec["instrument_id"], rec["ts_event"] = self.strategy_id, iid, ts or time.time_ns()
        rec["order_id"], rec["side"], rec["tif"], rec["quantity"] = oid, side, tif, qty
        limit = price == price
        rec["order_type"] = wire.OrderType.LIMIT if limit else wire.OrderType.MARKET
        rec["price"] = price
        self._offer(rec)
        return oid

    def cancel(self, order_id: int, iid: int = 0) -> None:
        rec = np.zeros(1, wire.cancel_dtype)
        rec["kind"], rec["version"] = RecordKind.CANCEL, wire.VERSIONS[RecordKind.CANCEL]
        rec["strategy_id"], rec["instrument_id"], rec["ts_event"] = self.strategy_id, iid, time.time_ns()
        rec["order_id"] = order_id
        self._offer(rec)

    def _offer(self, rec: np.ndarray) -> None:
        wait_for(lambda: self.outbound.offer(rec) != RingResult.BACK_PRESSURED, "space on the outbound ring")

    # ---- in

    def poll(self) -> int:
        got = self.inbound.poll()
        self.records.extend(typed(r) for r in got.copy())
        return len(got)

    def of_kind(self, kind: int, **fields) -> list[np.void]:
        self.poll()
        return [r for r in self.records if r["kind"] == kind and all(r[k] == v for k, v in fields.items())]

    def wait(self, kind: int, what: str = "", timeout: float = 30.0, count: int = 1, **fields) -> list[np.void]:
        """Wait until ``count`` inbound records of ``kind`` with ``fields`` arrived; all of them."""
        label = what or f"{wire.enum_name(RecordKind, kind)} {fields}"
        return wait_for(lambda: (got := self.of_kind(kind, **fields)) and len(got) >= count and got, label, timeout)

    def fills(self, order_id: int | None = None) -> list[np.void]:
        got = self.of_kind(RecordKind.FILL)
        return [f for f in got if order_id is None or f["order_id"] == order_id]

    def position(self, iid: int) -> float:
        """The engine's position from the fills it received (corrections included)."""
        return float(sum(f["quantity"] for f in self.fills() if f["instrument_id"] == iid))

    def statuses(self, order_id: int) -> list[int]:
        return [int(s["status"]) for s in self.of_kind(RecordKind.ORDER_STATUS, order_id=order_id)]

    def close(self) -> None:
        self.outbound.close()
        self.inbound.close()


class FeedTail:
    """Everything read so far from a feed ring (from its oldest record), kept in one array."""

    def __init__(self, path):
        from quayside.core.feed.ring import FeedReader

        self.reader = FeedReader(path, start="oldest")
        self._chunks: list[np.ndarray] = []
        self._records = np.zeros(0, wire.record_dtype)

    @property
    def records(self) -> np.ndarray:
        if self._chunks:
            self._records = np.concatenate([self._records, *self._chunks])
            self._chunks = []
        return self._records

    def poll(self) -> int:
        total = 0
        while len(got := self.reader.read()):
            self._chunks.append(got.copy())
            total += len(got)
        assert self.reader.lost == 0, "the feed lapped this reader"
        return total

    def of_kind(self, kind: int, start: int = 0) -> np.ndarray:
        self.poll()
        recs = self.records[start:]
        return recs[recs["kind"] == kind].view(wire.dtype_for(kind))

    def close(self) -> None:
        self.reader.close()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def toml_text(data: dict, table: str = "") -> str:
    """A nested dict as TOML (dicts become tables; None values are left out)."""
    lines = [f"[{table}]"] if table else []
    lines += [f"{k} = {_toml_value(v)}" for k, v in data.items() if v is not None and not isinstance(v, dict)]
    text = "\n".join(lines) + "\n"
    for k, v in data.items():
        if isinstance(v, dict):
            text += "\n" + toml_text(v, f"{table}.{k}" if table else k)
    return text


class Process:
    """``quayside ARGS`` as a subprocess, its output in ``log_path``."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 -- closed in close()
        self.proc = subprocess.Popen(
            [QUAYSIDE, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.proc.args} did not stop within {timeout:g} s of SIGTERM\n{self.output()}"
            ) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


class GatewayRig:
    """A simulated IB gateway (in a thread), the broker gateway (in another) and the test as
    the engine, on rings in ``shm_dir``. ``gateway_options`` override :class:`GatewayConfig`
    fields; ``sim_options`` those of the simulator's configuration.

    Defaults suit tests: reconnect and reconcile fast, requests time out in seconds, jitter
    seeded. ``name`` prefixes the ring and state file names (several rigs in one folder).
    """

    FAST: ClassVar[dict] = {
        "reconnect_initial_s": 0.2,
        "reconnect_max_s": 2.0,
        "reconnect_seed": 7,
        "connect_timeout_s": 5.0,
        "request_timeout_s": 3.0,
        "reconcile_interval_s": 0.25,
        "pacing_backoff_s": 1.0,
    }

    def __init__(
        self, shm_dir: Path, sim_options: dict | None = None, start: bool = True, name: str = "", **gateway_options
    ):
        from quayside.core.broker.sim.background import BackgroundGateway
        from quayside.core.broker.sim.config import DataConfig, SimGatewayConfig

        sim_options = dict(sim_options or {})
        sim_options.setdefault("admin_port", None)
        sim_options.setdefault("data", DataConfig(speed=20.0))
        self.sim = BackgroundGateway(SimGatewayConfig(port=0, **sim_options)).start()
        rings = {
            "inbound": str(shm_dir / f"{name}inbound"),
            "outbound": str(shm_dir / f"{name}outbound"),
            "control": str(shm_dir / f"{name}control"),
            "feed": str(shm_dir / f"{name}feed"),
            "inbound_capacity": 1 << 14,
            "outbound_capacity": 256,
            "control_capacity": 64,
            "feed_capacity": 1 << 16,
        }
        options = {
            **self.FAST,
            "port": self.sim.port,
            "instruments": ["EURUSD", "AAPL"],
            "rings": rings,
            "state_file": str(shm_dir / f"{name}gateway-state.jsonl"),
            **gateway_options,
        }
        self.config = GatewayConfig(**options)
        self.engine = EngineStandIn(self.config)
        self.gateway: BackgroundBrokerGateway | None = None
        if start:
            self.start_gateway()

    def start_gateway(self, **overrides) -> BackgroundBrokerGateway:
        config = self.config.model_copy(update=overrides) if overrides else self.config
        self.gateway = BackgroundBrokerGateway(config).start()
        return self.gateway

    def stop_gateway(self) -> int | None:
        gw, self.gateway = self.gateway, None
        return gw.stop() if gw is not None else None

    # ---- looking at the simulator

    def book(self, iid: int):
        return self.sim.call(lambda g: g.market.books[iid])

    def sim_executions(self) -> list:
        return self.sim.call(lambda g: list(g.broker.executions))

    def sim_position(self, iid: int) -> float:
        return self.sim.call(lambda g: g.broker.positions[iid].quantity if iid in g.broker.positions else 0.0)

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_for(lambda: self.gateway.call(lambda g: g.ready), "the gateway to connect and sync", timeout)

    def wait_quotes(self, iid: int, count: int = 1, timeout: float = 30.0) -> None:
        self.engine.wait(RecordKind.QUOTE, count=count, timeout=timeout, instrument_id=iid)

    def settle(self, *iids: int, pause: bool = True) -> GatewayRig:
        """Wait for a quote of each of ``iids`` on the feed, pause the simulator's market (with
        ``pause``: prices then hold still, so a test's orders meet the book it read) and wait for
        the gateway to be connected and synced; returns the rig."""
        for iid in iids:
            self.wait_quotes(iid)
        if pause:
            self.sim.command("pause")
        self.wait_ready()
        return self

    # ---- the exactness check

    def check_fills_exact(self, timeout: float = 30.0) -> dict:
        """Every execution of this gateway's orders at the simulator reached the engine exactly
        once (quantity, price, commission), nothing else did, and the engine's positions are
        the simulator's. Returns {exec_id: fill_id}."""
        eng = self.engine

        def commissions_in() -> bool:
            execs = [e for e in self.sim_executions() if e.order_ref.startswith("qs:")]
            known = [f for f in eng.fills() if f["flags"] & wire.Flag.COMMISSION_KNOWN]
            return len({int(f["fill_id"]) for f in known}) >= len(execs) and all(e.commission_reported for e in execs)

        wait_for(commissions_in, "every commission to reach the engine", timeout)
        execs = {e.exec_id: e for e in self.sim_executions() if e.order_ref.startswith("qs:")}
        ledger = self.gateway.call(
            lambda g: {fe.exec_id: fe.fill_id for fe in g.ledger.fills.values() if not fe.baseline}
        )
        assert set(ledger) == set(execs), f"gateway ledger {sorted(ledger)} != simulator {sorted(execs)}"
        by_fill: dict[int, list] = {}
        for f in eng.fills():
            by_fill.setdefault(int(f["fill_id"]), []).append(f)
        assert set(by_fill) == set(ledger.values()), "fills for executions the simulator does not have"
        for exec_id, e in execs.items():
            records = by_fill[ledger[exec_id]]
            qty = sum(float(r["quantity"]) for r in records)
            assert qty == (e.shares if e.side == "BOT" else -e.shares), f"{exec_id}: engine got {qty}, was {e.shares}"
            priced = [r for r in records if r["quantity"] != 0]
            assert all(r["price"] == e.price for r in priced), f"{exec_id}: price"
            assert int(priced[0]["order_id"]) == int(e.order_ref.split(":")[2]), f"{exec_id}: engine order id"
            commissions = [float(r["commission"]) for r in records if r["flags"] & wire.Flag.COMMISSION_KNOWN]
            assert commissions == [e.commission], f"{exec_id}: commissions {commissions} != {e.commission}"
        for iid in {int(f["instrument_id"]) for f in eng.fills()}:
            assert eng.position(iid) == self.sim_position(iid), f"instrument {iid}: positions differ"
        return {x: ledger[x] for x in execs}

    def close(self) -> None:
        try:
            if self.gateway is not None:
                self.stop_gateway()
        finally:
            self.engine.close()
            self.sim.stop()

    def __enter__(self) -> GatewayRig:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
