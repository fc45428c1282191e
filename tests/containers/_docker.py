"""Docker and compose, as the container tests drive them: builds with unique tags, a compose
project of their own, inspection, and cleanup of only what they made.

Images are built offline from ``QUAYSIDE_BASE_IMAGE`` (CI's ``local/debian:bookworm``) with host
networking, the way CI builds them. Removing a test image keeps its parent layers
(``--no-prune``): they are the build cache that makes the next run's build take seconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("QUAYSIDE_BASE_IMAGE", "local/debian:bookworm")
SUPPORT_DOCKERFILE = ROOT / "support" / "Dockerfile"
REPLAY_DOCKERFILE = ROOT / "docker" / "replay.Dockerfile"
BUILD_TIMEOUT = 3600.0  # a cold build downloads every wheel and compiles the engine's kernels
MAX_IMAGE_BYTES = 300_000_000  # the support image's hard limit (docker's "MB": 10^6 bytes)
# not root, not the image's own 10001, not the compose default 1000: the run's choice shows
TEST_UID = TEST_GID = 4321


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str, timeout: float = 120.0, check: bool = True, env: dict | None = None) -> str:
    """``docker ARGS``; its stdout. A failure shows the command and its output."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def build(dockerfile: Path, tag: str) -> None:
    docker(
        "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
        "-f", str(dockerfile), "-t", tag, str(ROOT),
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip


def remove_image(tag: str) -> None:
    docker("rmi", "--no-prune", tag, check=False)


def inspect(name: str) -> dict:
    return json.loads(docker("inspect", name))[0]


def logs(container: str, tail: int = 40) -> str:
    """A container's output (the services log to stderr)."""
    done = subprocess.run(
        ["docker", "logs", "--tail", str(tail), container], capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


def container_exec(container: str, *cmd: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", container, *cmd], capture_output=True, text=True, timeout=timeout)


# GET each path of 127.0.0.1:PORT from inside a container (its Python, no curl there); prints one
# JSON line {path: [status, body]}.
FETCH = """
import json, sys, urllib.error, urllib.request
out = {}
for path in sys.argv[2:]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{path}", timeout=10) as r:
            out[path] = [r.status, r.read().decode()]
    except urllib.error.HTTPError as exc:
        out[path] = [exc.code, exc.read().decode()]
print(json.dumps(out))
"""


def fetch_inside(container: str, port: int, *paths: str) -> dict[str, tuple[int, str]]:
    """GET ``paths`` from a service, from inside its container."""
    done = container_exec(container, "python3", "-c", FETCH, str(port), *paths)
    assert done.returncode == 0, f"docker exec {container} failed:\n{done.stdout}\n{done.stderr}"
    return {k: (v[0], v[1]) for k, v in json.loads(done.stdout).items()}


class Compose:
    """One compose project (a unique name) of ``compose.yaml``, with its own variables."""

    def __init__(self, env: dict[str, str], project: str | None = None):
        self.project = project or unique("qs-test")
        self.env = {**os.environ, **env}
        self.file = ROOT / "compose.yaml"

    def run(self, *args: str, timeout: float = 300.0, check: bool = True) -> str:
        cmd = ["docker-compose", "-f", str(self.file), "-p", self.project, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def container(self, service: str) -> str:
        ids = self.run("ps", "-q", service).split()
        assert ids, f"no container for {service} in {self.project}"
        return ids[0]

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "60", check=False)

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)


def health(container: str) -> str:
    state = inspect(container)["State"]
    return (state.get("Health") or {}).get("Status", "none")


def wait_healthy(containers: dict[str, str], timeout: float, explain=lambda: "") -> float:
    """Wait until every container (service -> id) is healthy; seconds waited. A container that
    stops or turns unhealthy fails at once, naming it."""
    started = time.monotonic()
    while True:
        states = {name: inspect(cid)["State"] for name, cid in containers.items()}
        for name, st in states.items():
            status = (st.get("Health") or {}).get("Status")
            if not st["Running"] or status == "unhealthy":
                log = (st.get("Health") or {}).get("Log") or []
                raise AssertionError(f"{name} is {st['Status']}/{status}: {log[-1:]}\n{explain()}")
        if all((st.get("Health") or {}).get("Status") == "healthy" for st in states.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not healthy within {timeout:g} s: {states}\n{explain()}")
        time.sleep(0.5)
