"""Schemathesis against the real running dashboard: whatever it sends, the answer is never a 5xx
and always matches the OpenAPI schema (status codes, content types, bodies).

It runs with an operator token, so the controls' validation is exercised past authentication;
the test drains the control ring as the engine would (a full ring would be the engine's
problem, answered 503). The event stream never ends, so it is left out.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _dashboard import AAPL, TOKEN, Dashboard, fill, heartbeat, order, quote

from quayside.core.wire import Side

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(shm_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("QUAYSIDE_DASHBOARD_TOKEN", raising=False)
    with Dashboard(shm_dir, tmp_path, tokens=f"fuzz:{TOKEN}\n") as d:
        d.publish(heartbeat(), quote(AAPL, 190.0, 190.02), order(1, AAPL, Side.BUY, 5.0, 190.02),
                  fill(1, AAPL, 5.0, 190.02, 1))  # fmt: skip
        stop = threading.Event()

        def engine():  # consume the control ring and beat, as the engine does (a quiet feed is 503 on /health)
            while not stop.wait(0.05):
                d.controls()
                d.publish(heartbeat())

        drain = threading.Thread(target=engine, daemon=True)
        drain.start()
        try:
            done = subprocess.run(
                [
                    SCHEMATHESIS, "run", f"{d.url}/openapi.json", "--checks", "all",
                    "--exclude-checks", "positive_data_acceptance,ignored_auth",
                    "--exclude-path", "/api/events", "-H", f"Authorization: Bearer {TOKEN}",
                    "--max-examples", "25", "--phases", "examples,coverage,fuzzing", "--workers", "1",
                    "--request-timeout", "10", "--no-color",
                ],
                capture_output=True, text=True, timeout=400, cwd=tmp_path,
            )  # fmt: skip
        finally:
            stop.set()
            drain.join(5)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert "No issues found" in done.stdout, done.stdout[-3000:]
        actions = {e["action"] for e in d.audit()}  # the controls were reached and every attempt recorded
        assert actions == {"halt", "resume", "reduce-only", "cancel-all", "set-limit"}
