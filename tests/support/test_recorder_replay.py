"""What the recorder writes is a recording ``quayside replay`` reads: the same loader, the
same records, byte for byte."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _monitoring_feed import session

from quayside.core.feed.ring import FeedWriter
from quayside.core.replay.loaders import detect_format, load
from quayside.core.replay.recording import read_recording, recording_files
from quayside.support.recorder.service import RecorderService, RecorderSettings

QUAYSIDE = str(Path(sys.executable).with_name("quayside"))


@pytest.fixture
def recording(shm_dir, tmp_path) -> tuple[Path, np.ndarray]:
    writer = FeedWriter(shm_dir / "feed", 1 << 16)
    feed = session(20_000)
    svc = RecorderService(
        RecorderSettings(
            feed={"ring": str(shm_dir / "feed")}, recorder={"folder": str(tmp_path / "rec"), "events": "none"}
        )
    )
    svc.open()
    writer.publish(feed)
    while svc.poll_once():
        pass
    svc.close()
    writer.close()
    (path,) = recording_files(tmp_path / "rec")
    return path, feed


def test_the_replay_loader_reads_a_recording_as_it_was_recorded(recording):
    path, feed = recording
    assert detect_format(path) == "recording"
    loaded = load(path)
    assert loaded.format == "recording" and loaded.extra["writers"] == ["recorder"]
    assert loaded.records.tobytes() == read_recording(path).tobytes()
    assert len(loaded.records) == len(feed) + 1  # and the attach marker
    assert load(path.parent).records.tobytes() == loaded.records.tobytes()  # the folder of daily files too


def _limit_memory() -> None:  # a replay that runs away must not take the machine with it
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


@pytest.mark.slow
def test_quayside_replay_runs_on_a_recording(recording, tmp_path):
    path, _ = recording
    config = tmp_path / "replay.toml"
    config.write_text(
        '[strategy]\nname = "crossover"\ninstruments = ["EURUSD", "AAPL"]\n'
        "[strategy.params]\nfast_span = 5\nslow_span = 20\nthreshold_bps = 0.1\n"
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [QUAYSIDE, "replay", "--data", str(path), "--config", str(config), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_memory,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["events"] > 0
