"""``quayside demo`` as a person runs it: a real supervisor process starting real parts.

Each test runs the demo with its own run folder and shm directory (so its rings cannot meet
another test's or demo's), and after the demo has exited checks what a person would: every part
it started is gone, and so is every ring it made.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QUAYSIDE = str(Path(sys.executable).with_name("quayside"))
START_TIMEOUT = 420.0  # a first run compiles the engine's kernels; a loaded two-core machine is slow
SERVICES = ("pnl", "risk", "recorder", "metrics", "dashboard")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


class Demo:
    """``quayside demo ARGS`` in its own process group; output in files under ``tmp_path``."""

    def __init__(self, tmp_path: Path, shm_dir: Path, *args: str):
        self.run_dir = tmp_path / "run"
        self.shm_dir = shm_dir
        self.out_path, self.err_path = tmp_path / "demo.out", tmp_path / "demo.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUAYSIDE_")}
        env |= {"QUAYSIDE_SHM_DIR": str(shm_dir), "PYTHONUNBUFFERED": "1"}
        if "QUAYSIDE_CACHE_DIR" in os.environ:
            env["QUAYSIDE_CACHE_DIR"] = os.environ["QUAYSIDE_CACHE_DIR"]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [QUAYSIDE, "demo", "--run-dir", str(self.run_dir), "--relay-dest", f"127.0.0.1:{_free_port()}", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                process_group=0,
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def explain(self) -> str:
        logs = sorted((self.run_dir / "logs").glob("*.log")) if (self.run_dir / "logs").exists() else []
        tails = "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-8:]) for p in logs)
        return f"\n--- stdout\n{self.out}\n--- stderr\n{self.err}{tails}"

    def wait_up(self) -> dict:
        """The run's ``stack.json``, written once every part is ready."""
        state = self.run_dir / "stack.json"
        deadline = time.monotonic() + START_TIMEOUT
        while not state.exists():
            assert self.proc.poll() is None, (
                f"the demo exited ({self.proc.returncode}) before it was up{self.explain()}"
            )
            assert time.monotonic() < deadline, f"the demo was not up after {START_TIMEOUT:g} s{self.explain()}"
            time.sleep(0.1)
        return json.loads(state.read_text())

    def wait_exit(self, timeout: float = 120.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the demo did not exit within {timeout:g} s{self.explain()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def assert_nothing_left(self, state: dict) -> None:
        alive = []
        for name, part in state["parts"].items():
            try:
                os.kill(part["pid"], 0)
                alive.append(f"{name} (pid {part['pid']})")
            except ProcessLookupError:
                pass
        assert not alive, f"parts still running after the demo exited: {alive}{self.explain()}"
        assert not any(Path(p).exists() for p in state["ring_paths"].values())
        assert sorted(self.shm_dir.iterdir()) == [], "segments left in the shm directory"


@pytest.fixture
def demo_factory(tmp_path, shm_dir):
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        d = Demo(tmp_path, shm_dir, *args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


def test_the_whole_stack_starts_trades_reports_and_stops_clean(demo_factory):
    demo = demo_factory("--duration", "12", "--dashboard-token", "a-test-token-of-some-length")
    state = demo.wait_up()
    assert set(state["parts"]) == {"simgateway", "engine", "gateway", "relay", *SERVICES}
    for name in SERVICES:  # every service answers its health route while the stack runs
        status, body = _get(state["parts"][name]["health"])
        assert status == 200 and body["status"] == "ok", f"{name}: {status} {body}{demo.explain()}"
        assert body["feed"]["records"] > 0, f"{name} has read nothing from the feed"
    pnl = f"http://127.0.0.1:{state['ports']['pnl']}/pnl"
    deadline = time.monotonic() + 12
    fills = 0
    while fills == 0 and time.monotonic() < deadline:  # the engine trades: fills reach the P&L service
        _, report = _get(pnl)
        fills = sum(p["fills"] for p in report.get("positions", []))
        time.sleep(0.5)
    assert fills > 0, f"no fills in the P&L service's report{demo.explain()}"

    assert demo.wait_exit() == 0, demo.explain()
    out = demo.out
    assert f"Dashboard: http://127.0.0.1:{state['ports']['dashboard']}/" in out
    assert "Operator token for the controls (kill switch): a-test-token-of-some-length" in out
    assert "wait strategy" in out and "quayside engine: strategy crossover" in out  # the engine's banner
    lines = [line for line in out.splitlines() if line.startswith(("events ", "final: events "))]
    assert len(lines) >= 2, out
    final = lines[-1]
    assert "P&L" in final and "tick-to-order p50" in final and "feed loss 0" in final
    assert int(final.split("fills ")[1].split()[0].replace(",", "")) > 0
    assert "stopped (after 12 s)" in out
    demo.assert_nothing_left(state)
    for name in ("engine.toml", "dashboard.toml", "stack.json"):  # the token is never written
        assert "a-test-token-of-some-length" not in (demo.run_dir / name).read_text()


def test_a_part_that_dies_stops_the_stack_and_is_named(demo_factory):
    demo = demo_factory("--core-only", "--ring-prefix", "demo-dies")
    state = demo.wait_up()
    os.kill(state["parts"]["gateway"]["pid"], signal.SIGKILL)
    assert demo.wait_exit() == 1, demo.explain()
    assert "the gateway stopped unexpectedly (was killed by SIGKILL)" in demo.err, demo.explain()
    assert "stopping the stack" in demo.err
    demo.assert_nothing_left(state)


def test_ctrl_c_stops_every_part_in_reverse_order(demo_factory):
    demo = demo_factory("--core-only", "--ring-prefix", "demo-sigint")
    state = demo.wait_up()
    assert set(state["parts"]) == {"simgateway", "engine", "gateway", "relay"}
    assert state["rings"]["feed"] == "demo-sigint-feed"
    assert "QUAYSIDE_FEED__RING=demo-sigint-feed" in demo.out  # how to point compose at it
    demo.proc.send_signal(signal.SIGINT)
    assert demo.wait_exit() == 0, demo.explain()
    assert "stopped (SIGINT)" in demo.out, demo.explain()
    assert "did not stop in time" not in demo.err
    # each part stopped cleanly on its own SIGTERM, the gateway before the engine
    run = demo.run_dir / "logs"
    assert "gateway stopped" in (run / "gateway.log").read_text()
    assert "engine stopped after" in (run / "engine.log").read_text()
    demo.assert_nothing_left(state)


def test_bad_options_are_refused_before_anything_starts(tmp_path):
    done = subprocess.run(
        [QUAYSIDE, "demo", "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--data" in done.stderr and "missing.csv" in done.stderr and "no such file" in done.stderr


def test_rings_in_use_by_a_live_process_are_refused_and_left_alone(tmp_path, shm_dir):
    from quayside.core.feed.ring import FeedWriter

    writer = FeedWriter(shm_dir / "taken-feed", 1024)  # this test process holds the name
    try:
        demo = Demo(tmp_path, shm_dir, "--core-only", "--ring-prefix", "taken")
        assert demo.wait_exit() == 1, demo.explain()
        assert f"belongs to a running process (pid {os.getpid()})" in demo.err, demo.explain()
        assert "--ring-prefix" in demo.err
        assert not (demo.run_dir / "stack.json").exists()  # nothing was started
        assert (shm_dir / "taken-feed").exists()  # and the other process's ring is untouched
    finally:
        writer.close()
