"""The replay backtest as a container (docker/replay.Dockerfile), run the way docs/containers.md
says: the data folder mounted read-only, an output folder mounted writable, ``--user`` the
invoking user's uid:gid. The results must land on the host, complete, and owned by that
uid:gid (not root, not the image's own user)."""

from __future__ import annotations

import json
import os

import pytest
from _docker import REPLAY_DOCKERFILE, TEST_GID, TEST_UID, build, docker, remove_image, unique
from conftest import SHARED_DATA, require

pytestmark = [pytest.mark.slow, pytest.mark.docker]

DATA = "eurusd-quotes-2020-01-01.csv"
RESULTS = {"summary.json", "orders.csv", "fills.csv", "positions.csv", "equity.csv", "equity.png", "feed.qsf"}


@pytest.fixture(scope="session")
def replay_image(docker_engine) -> str:
    tag = f"quayside-replay:{unique('test')}"
    build(REPLAY_DOCKERFILE, tag)
    yield tag
    remove_image(tag)


def test_a_replay_container_writes_results_owned_by_the_given_user(replay_image, tmp_path):
    require((SHARED_DATA / DATA).is_file(), f"{SHARED_DATA / DATA} is absent (CI has ../shared/data beside the clone)")
    out = tmp_path / "results"
    out.mkdir()
    os.chown(out, TEST_UID, TEST_GID)  # the invoking user's own folder
    name = unique("qs-replay")
    try:
        printed = docker(
            "run", "--rm", "--name", name, "--network", "none", "--user", f"{TEST_UID}:{TEST_GID}",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
            "-v", f"{SHARED_DATA}:/data:ro", "-v", f"{out}:/results",
            replay_image, "--data", f"/data/{DATA}", "--out", "/results/eurusd", "--json", "--no-progress",
            timeout=900.0,
        )  # fmt: skip
    finally:
        docker("rm", "-f", name, check=False)
    summary = json.loads(printed[printed.index("{") :])
    folder = out / "eurusd"
    assert {p.name for p in folder.iterdir()} >= RESULTS, sorted(p.name for p in folder.iterdir())
    for path in [folder, *folder.iterdir()]:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (TEST_UID, TEST_GID), f"{path} is owned by {st.st_uid}:{st.st_gid}"
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk["fills"] == summary["fills"] and on_disk["orders"] == summary["orders"]
    assert summary["orders"] > 0, summary
