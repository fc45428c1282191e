"""Real servers and processes for the recorder, metrics and Prometheus tests.

``serve(app)`` runs a service's FastAPI app on a real socket in a thread; ``ServiceProcess``
runs ``quayside support <name>`` as a process (settings through ``QUAYSIDE_*`` variables),
with bounded waits that show the process's output when they time out.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import uvicorn

QUAYSIDE = str(Path(sys.executable).with_name("quayside"))
TIMEOUT = 60.0  # generous: a loaded two-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(condition, what: str, timeout: float = TIMEOUT, *, explain=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s\n{explain()}")
        time.sleep(0.05)


@contextlib.contextmanager
def serve(app):
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_for(lambda: server.started, "HTTP server", 30)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class ServiceProcess:
    """``quayside support NAME`` with ``env`` (``QUAYSIDE_*`` settings), on a free port."""

    def __init__(self, name: str, log_path: Path, env: dict[str, str], port: int | None = None):
        self.name, self.log_path = name, log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "QUAYSIDE_HTTP__PORT": str(self.port), **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [QUAYSIDE, "support", self.name], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_healthy(self, timeout: float = TIMEOUT) -> dict:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode})\n{self.output()}")
            status, body = http_get(f"{self.url}/health")
            return json.loads(body) if status in (200, 503) else None

        return wait_for(up, f"{self.name} /health", timeout, explain=self.output)

    def health(self) -> dict:
        return json.loads(http_get(f"{self.url}/health")[1])

    def metrics(self) -> str:
        status, body = http_get(f"{self.url}/metrics")
        assert status == 200, body
        return body

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            raise AssertionError(f"{self.name} did not stop on SIGTERM\n{self.output()}") from None
