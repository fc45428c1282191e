"""Kill and restart: ``quayside support pnl`` as a real process, killed with SIGKILL mid-session
and started again on the same feed ring, recovers exactly the P&L of a service that never
stopped; with the recorder's files, also when the ring has wrapped while it was down."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import httpx
import numpy as np
import pytest
from _pnl_risk_helpers import QUAYSIDE, free_port, wait_for

from quayside.core.feed.ring import FeedReader, FeedWriter
from quayside.core.replay.recording import RecordingWriter, recording_path
from quayside.support.common.rebuild import attach_marker
from quayside.support.pnl import records as R
from quayside.support.pnl.accounting import json_safe
from quayside.support.pnl.service import PnlService, PnlSettings

S = 1_000_000_000
RESET = 1_723_237_200 * S  # 2024-08-09T21:00:00Z: 17:00 in New York, the default daily reset


def session(n: int) -> np.ndarray:
    """Quotes of four instruments with fills (half with late commission reports) every 40
    records, crossing the daily reset in the middle."""
    return R.synthetic_feed(n, fill_every=40, t0=RESET - (n // 2) * 1000)


def reference(records: np.ndarray) -> dict:
    svc = PnlService(PnlSettings())
    svc.handle(records)
    return json.loads(json.dumps(json_safe(svc.pnl_report())))


class PnlProcess:
    def __init__(self, tmp_path, ring, **settings):
        self.port = free_port()
        lines = [
            'log_format = "json"',
            *[f'{k} = "{v}"' for k, v in settings.items()],
            "[feed]",
            f'ring = "{ring}"',
            'start = "oldest"',
            "idle_sleep_ms = 0.2",
            "[http]",
            f"port = {self.port}",
        ]
        self.config = tmp_path / "pnl.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = tmp_path / "pnl.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(QUAYSIDE), "support", "pnl", "--config", str(self.config)], stdout=log, stderr=log
            )
        wait_for(self._up, 60, f"the pnl service to answer (log: {self.log})", interval=0.1)

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return httpx.get(self.url("/health"), timeout=1).status_code in (200, 503)
        except httpx.TransportError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str):
        return httpx.get(self.url(path), timeout=5).json()

    def wait_applied(self, n: int) -> dict:
        return wait_for(
            lambda: (h := self.get("/health"))["records_applied"] + h["rebuilt_records"] >= n and h,
            30,
            f"{n} records applied",
        )

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def service(tmp_path, shm_dir):
    made = []

    def make(**settings):
        proc = PnlProcess(tmp_path, shm_dir / "feed", **settings)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()


def test_killed_and_restarted_on_the_same_ring_recovers_exactly(service, shm_dir):
    feed = session(3000)
    ring = FeedWriter(shm_dir / "feed", 1 << 12)  # holds the whole session
    try:
        pnl = service()
        pnl.start()
        ring.publish(feed[:1700])
        pnl.wait_applied(1700)
        before = pnl.get("/pnl")
        assert before == reference(feed[:1700])
        assert before["totals"]["realized"] is not None and before["resets"] == 1
        pnl.kill()  # SIGKILL mid-session: no clean shutdown
        ring.publish(feed[1700:])  # the session goes on while it is down
        pnl.start()
        health = pnl.wait_applied(len(feed))
        after = pnl.get("/pnl")
        assert health["records_applied"] == len(feed)  # re-read from the oldest record of the ring
        assert after == reference(feed)
        assert after != before
    finally:
        ring.close()


def test_restart_with_recordings_after_the_ring_wrapped(service, shm_dir, tmp_path):
    """The ring keeps 512 records; 2000 go by while the service is down. The recorder's file
    has them all: the restart rebuilds from it and joins the ring after its last record."""
    feed = session(4000)
    folder = tmp_path / "recordings"
    folder.mkdir()
    ring = FeedWriter(shm_dir / "feed", 512)
    recorder_reader = FeedReader(shm_dir / "feed", start="oldest", batch=512)
    epoch = int(ring.segment.header["ts_created"][0])
    recording = RecordingWriter(recording_path(folder, int(feed["ts_event"][0])), source="test")
    recording.write(attach_marker(epoch, 0, ts=int(feed["ts_event"][0])))

    def publish(records, reader=None):  # the engine publishes; the recorder (played here) keeps up
        for lo in range(0, len(records), 256):
            ring.publish(records[lo : lo + 256])
            recording.write(recorder_reader.read().copy())
            if reader is not None:  # a live service keeps up too (a ring of 512 would lap it)
                reader.wait_applied(ring.position)

    try:
        pnl = service(recordings=str(folder), recordings_since="2024-08-09")
        pnl.start()
        publish(feed[:1500], pnl)
        assert pnl.get("/pnl") == reference(feed[:1500])
        pnl.kill()
        publish(feed[1500:3500])  # four laps of the ring while the service is down
        pnl.start()
        health = pnl.wait_applied(3500)
        assert health["rebuilt_records"] == 3500 and health["feed"]["lost"] == 0
        rebuilt = pnl.get("/pnl")
        assert rebuilt["history"] == {"feed_lost": 0, "recorded_gaps": 0, "complete": True}
        assert rebuilt == reference(feed[:3500])
        publish(feed[3500:], pnl)  # and live again
        assert pnl.get("/pnl") == reference(feed)
    finally:
        recording.close()
        recorder_reader.close()
        ring.close()
