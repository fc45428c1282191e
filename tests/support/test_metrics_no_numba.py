"""Support images do not need numba: the recorder and the metrics exporter import, rebuild,
record, export and serve HTTP in processes where ``import numba`` fails."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from _monitoring_procs import TIMEOUT, free_port, http_get, wait_for

HERE = Path(__file__).resolve().parent

BLOCKER = textwrap.dedent(
    """
    import sys

    class NoNumba:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("numba", "llvmlite"):
                raise ImportError(name + " is not installed in this image (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoNumba())
    sys.path.insert(0, HERE)
    """
)

WORK = textwrap.dedent(
    """
    import numpy as np
    from _monitoring_feed import session
    from quayside.cli import build_parser
    from quayside.core.feed.ring import FeedWriter
    from quayside.support.metrics.service import MetricsService, MetricsSettings
    from quayside.support.recorder.service import RecorderService, RecorderSettings
    from prometheus_client import generate_latest

    build_parser()  # the command that starts the services
    ring, folder = sys.argv[1], sys.argv[2]
    writer = FeedWriter(ring, 1 << 14)
    recorder = RecorderService(RecorderSettings(feed={"ring": ring}, recorder={"folder": folder, "events": "file"}))
    recorder.open()
    writer.publish(session(5000))
    while recorder.poll_once():
        pass
    recorder.close()
    metrics = MetricsService(MetricsSettings(feed={"ring": ring}, recordings=folder))
    metrics.open()  # rebuilt from the recording, joined at its end
    while metrics.poll_once():
        pass
    text = generate_latest(metrics.metrics).decode()
    assert 'quayside_rebuild_records{service="metrics"} 5002.0' in text, text
    assert "quayside_orders_total 100.0" in text, text
    numba = sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite"))
    assert not numba, numba
    print("numba-free ok")
    """
)

SERVE = textwrap.dedent(
    """
    from quayside.cli import main
    sys.exit(main(["support", "metrics"]))
    """
)


def test_services_run_where_numba_cannot_be_imported(shm_dir, tmp_path):
    code = f"HERE = {str(HERE)!r}\n" + BLOCKER + WORK
    done = subprocess.run(
        [sys.executable, "-c", code, str(shm_dir / "feed"), str(tmp_path / "rec")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "numba-free ok" in done.stdout


def test_the_exporter_serves_where_numba_cannot_be_imported(shm_dir, tmp_path):
    import os

    from quayside.core.feed.ring import FeedWriter

    writer = FeedWriter(shm_dir / "feed", 1 << 12)
    port = free_port()
    env = {**os.environ, "QUAYSIDE_FEED__RING": str(shm_dir / "feed"), "QUAYSIDE_HTTP__PORT": str(port)}
    log = tmp_path / "metrics.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"HERE = {str(HERE)!r}\n" + BLOCKER + SERVE],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        body = wait_for(
            lambda: proc.poll() is None and http_get(f"http://127.0.0.1:{port}/metrics")[1],
            "/metrics from the numba-free exporter",
            explain=lambda: log.read_text(errors="replace"),
        )
        assert 'quayside_feed_records_total{service="metrics"}' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(TIMEOUT)
        writer.close()
    assert code == 0, log.read_text(errors="replace")
