"""The support image and compose.yaml, for real: the image built offline once for the session,
the whole support stack brought up with docker-compose beside an engine, a gateway and the
simulated IB Gateway running on the host as plain processes, on private rings.

What must hold: the image is under 300 MB; every service turns healthy by its own healthcheck
and answers /health and /metrics from inside its container, and the dashboard its page and
API; a fill the engine makes reaches the containerised P&L service's JSON; the containers run
as the configured non-root user, with read-only root file systems, no capabilities and no
privilege gain; what they write on the host (recordings, the dashboard's audit log) belongs
to that user; a dashboard control, authorised by the token from the secret file, reaches the
engine through its control ring.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from _core import HostCore, group_shm_dir, remove_dir
from _docker import (
    MAX_IMAGE_BYTES,
    SUPPORT_DOCKERFILE,
    TEST_GID,
    TEST_UID,
    Compose,
    build,
    container_exec,
    fetch_inside,
    free_port,
    inspect,
    logs,
    remove_image,
    unique,
    wait_healthy,
)

from quayside.core.wire import ControlCommand, RecordKind

pytestmark = [pytest.mark.slow, pytest.mark.docker]

SERVICES = ("pnl", "risk", "recorder", "metrics", "dashboard")
DASHBOARD_ISSUER = 0x44415348  # "DASH", the dashboard's issuer id in control records
HEALTHY_TIMEOUT = 240.0


@pytest.fixture(scope="session")
def support_image(docker_engine) -> str:
    tag = f"quayside-support:{unique('test')}"
    build(SUPPORT_DOCKERFILE, tag)
    yield tag
    remove_image(tag)


class Stack:
    def __init__(self, core: HostCore, compose: Compose, ports: dict[str, int], data: Path, token: str):
        self.core, self.compose, self.ports, self.data, self.token = core, compose, ports, data, token
        self.containers = {name: compose.container(name) for name in SERVICES}

    def get_json(self, service: str, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[service]}{path}", timeout=10) as reply:
            return json.loads(reply.read())


@pytest.fixture(scope="module")
def stack(request, docker_engine, tmp_path_factory):
    work = tmp_path_factory.mktemp("stack")
    shm = group_shm_dir(unique("quayside-test"), TEST_GID)
    core = HostCore(shm, work).start()
    compose = None
    try:
        tag = request.getfixturevalue("support_image")  # built while the engine compiles
        core.wait_trading()

        data, secret_dir = work / "data", work / "secrets"
        for folder in (data, data / "recordings", data / "audit"):
            folder.mkdir()
            os.chown(folder, TEST_UID, TEST_GID)
        secret_dir.mkdir()
        token = secrets.token_hex(16)
        (secret_dir / "quayside_tokens").write_text(f"tester:{token}\n")
        (secret_dir / "grafana_admin_password").write_text(secrets.token_hex(8) + "\n")
        for f in secret_dir.iterdir():
            f.chmod(0o444)
        ports = {name: free_port() for name in SERVICES}
        env = {
            "QUAYSIDE_IMAGE": tag,
            "QUAYSIDE_UID": str(TEST_UID),
            "QUAYSIDE_GID": str(TEST_GID),
            "QUAYSIDE_SUPPORT_CPUSET": "0",
            "QUAYSIDE_FEED__RING": core.rings["feed"],
            "QUAYSIDE_RISK__CONTROL__RING": core.rings["control"],
            "QUAYSIDE_DASHBOARD__CONTROL_RING": core.rings["control"],
            "QUAYSIDE_DATA_DIR": str(data),
            "QUAYSIDE_SECRETS_DIR": str(secret_dir),
            "QUAYSIDE_HEALTH_INTERVAL": "2s",
            **{f"QUAYSIDE_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        }
        compose = Compose(env)
        compose.run("up", "-d", "--no-build")
        s = Stack(core, compose, ports, data, token)
        wait_healthy(s.containers, HEALTHY_TIMEOUT, explain=compose.logs)
        yield s
    finally:
        if compose is not None:
            compose.down()
        core.close()
        remove_dir(shm)


def test_every_service_answers_health_and_metrics_from_inside_its_container(stack):
    for name, container in stack.containers.items():
        port = stack.ports[name]
        got = fetch_inside(container, port, "/health", "/metrics")
        status, body = got["/health"]
        assert status == 200, f"{name}: /health {status} {body}"
        health = json.loads(body)
        assert health["service"] == name and health["feed_thread_alive"], health
        status, body = got["/metrics"]
        assert status == 200 and f'quayside_feed_records_total{{service="{name}"}}' in body, f"{name}: {body[:500]}"
        # the feed the engine is writing, read through the /dev/shm mount
        records = float(body.split(f'quayside_feed_records_total{{service="{name}"}} ')[1].split()[0])
        assert records > 0, f"{name} has read nothing from the feed"


def test_the_dashboard_serves_its_page_and_api_from_inside_its_container(stack):
    got = fetch_inside(
        stack.containers["dashboard"], stack.ports["dashboard"], "/", "/api/summary", "/vendor/plotly.min.js"
    )
    status, page = got["/"]
    assert status == 200 and "<html" in page.lower(), page[:300]
    status, body = got["/api/summary"]
    assert status == 200, body[:300]
    assert isinstance(json.loads(body), dict)
    status, js = got["/vendor/plotly.min.js"]
    assert status == 200 and len(js) > 1_000_000, "plotly's bundle is missing from the image"


def test_a_fill_by_the_engine_reaches_the_pnl_service_in_its_container(stack):
    core = stack.core
    trades = lambda: (f := core.feed.of_kind(RecordKind.FILL))[f["quantity"] != 0]  # noqa: E731
    core.wait(lambda: len(trades()) > 0, "a fill from the engine", timeout=180.0)
    fills = trades()
    first = fills[0]
    key = (int(first["strategy_id"]), int(first["instrument_id"]))
    seen = {int(f["fill_id"]) for f in fills if (int(f["strategy_id"]), int(f["instrument_id"])) == key}

    def counted() -> int:
        report = stack.get_json("pnl", "/pnl")
        rows = [p for p in report["positions"] if (p["strategy_id"], p["instrument_id"]) == key]
        return rows[0]["fills"] if rows else 0

    core.wait(lambda: counted() >= len(seen), f"{len(seen)} fills of {key} in GET /pnl", timeout=60.0)

    def agrees() -> bool:  # the ledger's position is the engine's own (both move while it trades)
        rows = [
            p for p in stack.get_json("pnl", "/positions")["positions"] if (p["strategy_id"], p["instrument_id"]) == key
        ]
        return bool(rows) and rows[0]["engine_quantity"] == rows[0]["quantity"]

    core.wait(agrees, f"the P&L service's position of {key} to equal the engine's", timeout=60.0)


def test_containers_run_as_the_configured_user_read_only_without_capabilities(stack):
    for name, container in stack.containers.items():
        info = inspect(container)
        host = info["HostConfig"]
        assert info["Config"]["User"] == f"{TEST_UID}:{TEST_GID}", name
        assert host["ReadonlyRootfs"] is True, name
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], name
        assert "no-new-privileges:true" in host["SecurityOpt"], name
        assert host["Privileged"] is False and host["Init"] is True, name
        assert host["NetworkMode"] == "host", name
        assert host["CpusetCpus"] == "0" and host["Memory"] > 0, name
        assert host["RestartPolicy"]["Name"] == "unless-stopped", name
        assert any(m["Destination"] == "/dev/shm" and m["Source"] == "/dev/shm" for m in info["Mounts"]), name
        # and from inside: the service's own process
        probe = container_exec(
            container,
            "python3",
            "-c",
            "import os; s = open('/proc/1/status').read(); print(os.getuid(), os.getgid(), "
            "[l.split()[1] for l in s.splitlines() if l.startswith(('CapEff', 'CapPrm', 'NoNewPrivs'))]);"
            "open('/opt/written-by-the-test', 'w')",
        )
        assert probe.stdout.split("[")[0].split() == [str(TEST_UID), str(TEST_GID)], probe.stdout
        assert "['0000000000000000', '0000000000000000', '1']" in probe.stdout, probe.stdout
        assert "Read-only file system" in probe.stderr, probe.stderr


def test_services_log_json_lines(stack):
    lines = [line for line in logs(stack.containers["pnl"], tail=200).splitlines() if line.strip()]
    assert lines, "the P&L service logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_files_written_on_the_host_belong_to_the_configured_user(stack):
    folder = stack.data / "recordings"
    files = stack.core.wait(lambda: sorted(folder.glob("*.qsf")), "a recording from the recorder", timeout=60.0)
    for path in [*files, *folder.glob("*.jsonl")]:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (TEST_UID, TEST_GID), f"{path} is owned by {st.st_uid}:{st.st_gid}"
        assert st.st_size > 0, path


def test_a_dashboard_control_reaches_the_engine_and_is_audited(stack):
    """After the other stack tests: it halts the engine."""
    url = f"http://127.0.0.1:{stack.ports['dashboard']}/api/control/halt"
    body = json.dumps({"note": "container test"}).encode()

    def post(token: str):
        req = urllib.request.Request(url, data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            assert exc.code < 500, f"{exc.code} {text}\n{logs(stack.containers['dashboard'])}"
            return exc.code, json.loads(text or "null")

    status, _ = post("not-the-token-from-the-secret")
    assert status == 401
    status, answer = post(stack.token)
    assert status == 202 and answer["result"] == "sent", answer
    assert answer["operator"] == "tester"
    core = stack.core

    def echoed():
        controls = core.feed.of_kind(RecordKind.CONTROL)
        return np.any((controls["command_id"] == answer["command_id"]) & (controls["issuer_id"] == DASHBOARD_ISSUER))

    core.wait(echoed, "the engine's echo of the dashboard's HALT", timeout=30.0)
    controls = core.feed.of_kind(RecordKind.CONTROL)
    assert int(controls[controls["command_id"] == answer["command_id"]]["command"][0]) == ControlCommand.HALT
    audit = stack.data / "audit" / "audit.jsonl"
    st = audit.stat()
    assert (st.st_uid, st.st_gid) == (TEST_UID, TEST_GID)
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert any(e.get("operator") == "tester" for e in entries), entries


def test_the_support_image_is_under_300_mb(support_image):
    """A hard limit, independent of the stack (after it here, so the image builds while the
    engine compiles)."""
    size = inspect(support_image)["Size"]
    assert size < MAX_IMAGE_BYTES, f"the support image is {size / 1e6:.1f} MB; the limit is 300 MB"
