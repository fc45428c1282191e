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
