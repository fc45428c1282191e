"""Real servers and processes for the recorder, metrics and Prometheus tests.

``serve(app)`` runs a service's FastAPI app on a real socket in a thread; ``ServiceProcess``
runs ``quayside support <name>`` as a process (settings through ``QUAYSIDE_*`` variables),
with bounded waits that show the process's output when they time out. ``CoreStack`` runs the
real engine side (simulated broker, gateway, engine, relay) through ``quayside demo --core-only``.
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


class CoreStack:
    """``quayside demo --core-only``: the simulated IB Gateway, the gateway, the engine and the
    relay as real processes, trading the demo's synthetic market on rings named ``prefix-*`` in
    ``shm_dir``. ``wait_up()`` returns the run's ``stack.json`` (rings, pids, logs)."""

    START_TIMEOUT = 420.0  # a first run compiles the engine's kernels on a loaded two-core machine

    def __init__(self, tmp_path: Path, shm_dir: Path, prefix: str, *args: str):
        self.run_dir, self.log_path = tmp_path / "run", tmp_path / "demo.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUAYSIDE_")}
        env |= {"QUAYSIDE_SHM_DIR": str(shm_dir), "PYTHONUNBUFFERED": "1"}
        if "QUAYSIDE_CACHE_DIR" in os.environ:
            env["QUAYSIDE_CACHE_DIR"] = os.environ["QUAYSIDE_CACHE_DIR"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # nobody listens: the relay's sink
            s.bind(("127.0.0.1", 0))
            sink = f"127.0.0.1:{s.getsockname()[1]}"
        command = [QUAYSIDE, "demo", "--core-only", "--ring-prefix", prefix, "--run-dir", str(self.run_dir)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*command, "--relay-dest", sink, "--duration", "600", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
            )

    def output(self) -> str:
        logs = sorted((self.run_dir / "logs").glob("*.log")) if (self.run_dir / "logs").exists() else []
        tails = "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-8:]) for p in logs)
        return f"--- demo\n{self.log_path.read_text(errors='replace')[-3000:]}{tails}"

    def wait_up(self) -> dict:
        state = self.run_dir / "stack.json"

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"the demo exited ({self.proc.returncode}) before it was up\n{self.output()}")
            return state.exists() and json.loads(state.read_text())

        return wait_for(up, "core stack up", self.START_TIMEOUT, explain=self.output)

    def stop(self) -> None:
        """SIGTERM (the demo stops its parts in order), then SIGKILL to whatever is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(TIMEOUT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
