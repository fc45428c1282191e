"""A dashboard on real rings and a real HTTP port, and the feed records an engine would publish.

:class:`Dashboard` starts :class:`DashboardService` on a feed ring the test writes (the test is
the engine) and a control ring the test reads (as the engine does), serves it with uvicorn on a
free port of 127.0.0.1 in a thread, and stops both. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn

# the engine harness (a real engine process, record builders) lives beside the engine tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from _engine_harness import record

from quayside.core import wire
from quayside.core.feed.ring import CommandReader, FeedWriter
from quayside.core.wire import RecordKind
from quayside.support.dashboard.service import DashboardService, DashboardSettings

TOKEN = "s3cret-token-for-the-tests-0123456789"
OTHER_TOKEN = "another-operators-token-abcdefghij"
EURUSD, AAPL = 1, 3


def wait_for(condition, what: str, timeout: float = 30.0, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def serve(app):
    """uvicorn on 127.0.0.1, a free port, in a thread; open event streams are cut at shutdown."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the HTTP server")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class Dashboard:
    """The service, its rings, its audit log and its URL (use as a context manager)."""

    def __init__(
        self, shm_dir: Path, tmp_path: Path, *, tokens: str | None = None, audit: bool = True, engine=None, **dash
    ):
        """``engine``: a running ``LiveEngine`` whose rings to use; else the test plays the engine."""
        self.feed = FeedWriter(shm_dir / "feed", 1 << 14) if engine is None else None
        self.control = CommandReader(shm_dir / "control", 64) if engine is None else None  # as the engine makes it
        feed_ring = shm_dir / "feed" if engine is None else engine.rings["feed"]
        dash.setdefault("control_ring", str(shm_dir / "control") if engine is None else engine.rings["control"])
        self.audit_path = tmp_path / "audit.jsonl"
        tokens_file = None
        if tokens is not None:
            tokens_file = tmp_path / "tokens"
            tokens_file.write_text(tokens)
        self.settings = DashboardSettings(
            feed={"ring": str(feed_ring), "idle_sleep_ms": 0.2},
            dashboard=dash,
            audit_log=str(self.audit_path) if audit else None,
            tokens_file=str(tokens_file) if tokens_file else None,
        )
        self.service = DashboardService(self.settings)
        self._serving = None
        self.url = ""

    def __enter__(self):
        self.service.start(feed_timeout=10)
        self._serving = serve(self.service.app())
        self.url = self._serving.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self._serving.__exit__(*exc)
        finally:
            self.service.stop()
            for ring in (self.control, self.feed):
                if ring is not None:
                    ring.close()

    def publish(self, *records: np.ndarray) -> None:
        self.feed.publish(np.concatenate(records))

    def controls(self) -> list[np.void]:
        """Control records the dashboard wrote into the control ring since the last call."""
        return [r for r in self.control.poll().copy().view(wire.control_dtype)]

    def audit(self) -> list[dict]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


# --------------------------------------------------------------------------- feed records


def now() -> int:
    return time.time_ns()


def quote(iid: int, bid: float, ask: float, ts: int | None = None) -> np.ndarray:
    ts = ts or now()
    return record(
        wire.quote_dtype, RecordKind.QUOTE, instrument_id=iid, ts_event=ts, ts_recv=ts,
        bid_price=bid, ask_price=ask, bid_size=1e6, ask_size=1e6,
    )  # fmt: skip


def order(oid: int, iid: int, side: int, qty: float, price: float, ts: int | None = None) -> np.ndarray:
    ts = ts or now()
    return record(
        wire.order_dtype, RecordKind.ORDER, strategy_id=1, instrument_id=iid, ts_event=ts, ts_recv=ts - 9_000,
        order_id=oid, side=side, order_type=wire.OrderType.LIMIT, tif=wire.TimeInForce.DAY, price=price,
        quantity=qty, dt_queue_ns=5_000, dt_decide_ns=3_000,
    )  # fmt: skip


def fill(oid: int, iid: int, qty: float, price: float, fill_id: int, ts: int | None = None) -> np.ndarray:
    ts = ts or now()
    return record(
        wire.fill_dtype, RecordKind.FILL, flags=wire.Flag.COMMISSION_KNOWN, strategy_id=1, instrument_id=iid,
        ts_event=ts, ts_recv=ts, order_id=oid, fill_id=fill_id, price=price, quantity=qty, commission=1.0,
    )  # fmt: skip


def denial(oid: int, iid: int, reason: int, ts: int | None = None) -> np.ndarray:
    ts = ts or now()
    return record(
        wire.denial_dtype, RecordKind.DENIAL, strategy_id=1, instrument_id=iid, ts_event=ts, ts_recv=ts,
        order_id=oid, reason=reason, side=1, order_type=wire.OrderType.LIMIT, price=1.2, quantity=5000.0,
        limit=1000.0,
    )  # fmt: skip


def heartbeat(state: int = wire.TradingState.ACTIVE, ts: int | None = None) -> np.ndarray:
    return record(wire.heartbeat_dtype, RecordKind.HEARTBEAT, ts_event=ts or now(), trading_state=state, cpu=-1)


def log(code: int, *, iid: int = 0, i0: int = 0, i1: int = 0, a0: float = 0.0, a1: float = 0.0) -> np.ndarray:
    return record(
        wire.log_dtype, RecordKind.LOG, instrument_id=iid, ts_event=now(), code=code, level=wire.LogLevel.INFO,
        i0=i0, i1=i1, a0=a0, a1=a1,
    )  # fmt: skip
