"""Helpers for the P&L and risk service tests: a real HTTP server on a free port, waiting,
log capture, and a Python subprocess in which numba cannot be imported."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import uvicorn
from loguru import logger

ROOT = Path(__file__).resolve().parents[2]
QUAYSIDE = ROOT / ".venv" / "bin" / "quayside"


@contextlib.contextmanager
def serve(app):
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port, in a thread; yields its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_for(predicate, timeout: float, what: str = "condition", interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def captured_logs(level: str = "INFO"):
    """Loguru records (dicts: level, message, extra) emitted inside the block."""
    records: list[dict] = []

    def sink(message):
        r = message.record
        records.append({"level": r["level"].name, "message": r["message"], "extra": dict(r["extra"])})

    handler = logger.add(sink, level=level)
    try:
        yield records
    finally:
        logger.remove(handler)


_BLOCKER = """
import sys
class _NoNumba:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numba", "llvmlite"):
            raise ImportError(f"{name} is blocked: support services must not need it")
        return None
sys.meta_path.insert(0, _NoNumba())
"""


def run_without_numba(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in which importing numba or llvmlite fails."""
    script = _BLOCKER + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ)
    )
