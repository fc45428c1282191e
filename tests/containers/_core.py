"""The host side the containers read: the simulated IB Gateway (in this process), ``quayside
engine run`` and ``quayside gateway run`` as plain processes, trading EURUSD with the crossover
on the simulator's synthetic market, on rings in a folder of /dev/shm.

The folder is group-owned by the containers' group and set-group-id, and the engine and the
gateway start with umask 007, so every ring they create there (mode 0660) belongs to that group
and is group-writable: the services, running as a non-root user of the group, read the feed and
write the control ring, as in a deployment where the engine's user and the containers' share a
group (with the same user, the default umask is enough).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from quayside.core.broker.sim.background import BackgroundGateway
from quayside.core.broker.sim.config import DataConfig, SimGatewayConfig
from quayside.core.broker.testing import (
    ENGINE_STARTUP_TIMEOUT,
    TEST_CAPACITIES,
    TRADING_ENGINE,
    FeedTail,
    Process,
    gateway_test_config,
    toml_text,
    wait_for,
)
from quayside.core.wire import LogCode, RecordKind

RINGS = ("inbound", "outbound", "control", "feed")


def group_shm_dir(name: str, gid: int) -> Path:
    """A new folder in /dev/shm whose files belong to group ``gid``."""
    path = Path("/dev/shm") / name
    path.mkdir(mode=0o2770)
    os.chown(path, -1, gid)
    path.chmod(0o2770)  # mkdir's mode is filtered by the umask, and chown clears set-group-id
    return path


@contextlib.contextmanager
def group_writable():
    """Processes started inside inherit umask 007: what they create is group-writable."""
    old = os.umask(0o007)
    try:
        yield
    finally:
        os.umask(old)


class HostCore:
    """Simulator, engine and gateway; ``start()`` starts them, ``wait_trading()`` waits for the
    engine's start record and the gateway's connection."""

    def __init__(self, shm_dir: Path, work: Path):
        self.rings = {name: str(shm_dir / name) for name in RINGS}
        self.work = work
        self.sim: BackgroundGateway | None = None
        self.engine: Process | None = None
        self.gateway: Process | None = None
        self.feed: FeedTail | None = None

    def start(self) -> HostCore:
        self.sim = BackgroundGateway(SimGatewayConfig(port=0, admin_port=None, data=DataConfig(speed=20.0))).start()
        engine_toml = self.work / "engine.toml"
        engine_toml.write_text(toml_text({**TRADING_ENGINE, "rings": {**self.rings, **TEST_CAPACITIES}}))
        with group_writable():
            self.engine = Process(["engine", "run", "--config", str(engine_toml)], self.work / "engine.log")
        return self

    def wait_trading(self) -> None:
        feed = Path(self.rings["feed"])
        wait_for(lambda: self._alive() and feed.exists(), "the engine's feed ring", ENGINE_STARTUP_TIMEOUT, 0.05)
        self.feed = FeedTail(feed)
        started = lambda: self._alive() and len(self.logs(LogCode.ENGINE_STARTED))  # noqa: E731
        wait_for(started, "the engine to start", ENGINE_STARTUP_TIMEOUT, 0.05)
        gateway_toml = self.work / "gateway.toml"
        gateway_toml.write_text(
            toml_text(gateway_test_config(self.sim.port, 23, self.rings, self.work / "gateway-state.jsonl"))
        )
        with group_writable():
            self.gateway = Process(["gateway", "run", "--config", str(gateway_toml)], self.work / "gateway.log")
        wait_for(
            lambda: self._alive() and len(self.logs(LogCode.BROKER_CONNECTED)), "the gateway to connect", 120.0, 0.05
        )

    def _alive(self) -> bool:
        assert self.engine.alive(), f"the engine exited\n{self.engine.output()}"
        assert self.gateway is None or self.gateway.alive(), f"the gateway exited\n{self.gateway.output()}"
        return True

    def logs(self, code: int):
        logs = self.feed.of_kind(RecordKind.LOG)
        return logs[logs["code"] == code]

    def wait(self, condition, what: str, timeout: float = 120.0):
        return wait_for(lambda: self._alive() and condition(), what, timeout, 0.05)

    def close(self) -> None:
        for proc in (self.gateway, self.engine):
            if proc is not None:
                proc.close()
        if self.feed is not None:
            self.feed.close()
        if self.sim is not None:
            self.sim.stop()


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
