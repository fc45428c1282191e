"""Shared fixtures. ``QUAYSIDE_REQUIRE_ALL=1`` (set by CI) turns every skip for a missing
facility (Docker, a browser, Prometheus) into a failure, so CI cannot pass by skipping."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REQUIRE_ALL = os.environ.get("QUAYSIDE_REQUIRE_ALL") == "1"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require(condition: bool, reason: str) -> None:
    """Skip the calling test when a facility is missing, or fail under QUAYSIDE_REQUIRE_ALL=1."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (QUAYSIDE_REQUIRE_ALL=1 forbids skipping)")
    pytest.skip(reason)


def docker_available() -> bool:
    """A Docker engine answers on DOCKER_HOST (CI starts one with .ci/docker.sh)."""
    import shutil
    import subprocess

    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The DOCKER_HOST of a running engine with the base image; skips (or fails under
    QUAYSIDE_REQUIRE_ALL=1) without one. Start one with `bash .ci/docker.sh`."""
    require(docker_available(), "no Docker engine (run `bash .ci/docker.sh` and export its DOCKER_HOST)")
    return os.environ.get("DOCKER_HOST", "")


@pytest.fixture
def shm_dir(tmp_path_factory) -> Path:
    """A private folder in /dev/shm for this test's ring segments, removed afterwards."""
    base = Path("/dev/shm")
    path = base / f"quayside-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
