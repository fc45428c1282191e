"""compose.yaml as docker-compose reads it (``config``, with and without the monitoring profile),
and the support image's healthcheck script against the services it checks. The stack itself
runs in test_support_stack.py."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from _docker import ROOT

from quayside.support.commands import SERVICES

HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
SUPPORT = ("pnl", "risk", "recorder", "metrics", "dashboard")
MONITORING = ("prometheus", "grafana")


def _healthcheck():
    spec = importlib.util.spec_from_file_location("quayside_healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(*args: str, **env: str) -> dict:
    compose = shutil.which("docker-compose")
    if compose is None:
        from conftest import require

        require(False, "docker-compose is not installed (bash .ci/docker.sh installs it)")
    done = subprocess.run(
        [compose, "-f", str(ROOT / "compose.yaml"), *args, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_the_healthcheck_knows_every_service_and_its_default_port():
    import importlib

    ports = _healthcheck().DEFAULT_PORTS
    assert set(ports) == set(SERVICES)
    for name, (target, _) in SERVICES.items():
        module, _, cls = target.partition(":")
        assert getattr(importlib.import_module(module), cls).default_port == ports[name], name


def test_the_healthcheck_finds_the_port_from_the_environment_or_the_command_line():
    hc = _healthcheck()
    init = ["/sbin/docker-init", "--", "quayside", "support", "risk", ""]
    assert hc.health_url({}, init) == "http://127.0.0.1:9102/health"
    assert hc.health_url({}, ["python3", "/opt/quayside/bin/quayside", "support", "dashboard"]).endswith(":9105/health")
    env = {"QUAYSIDE_HTTP__PORT": "7777", "QUAYSIDE_HTTP__HOST": "0.0.0.0"}
    assert hc.health_url(env, init) == "http://127.0.0.1:7777/health"
    assert hc.health_url({"QUAYSIDE_HTTP__HOST": "10.0.0.5"}, init) == "http://10.0.0.5:9102/health"
    with pytest.raises(SystemExit, match="no known service"):
        hc.health_url({}, ["sleep", "infinity"])


def test_the_compose_file_has_no_version_key_and_names_every_service():
    raw = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert "version" not in raw
    assert set(raw["services"]) == {*SUPPORT, *MONITORING}


@pytest.mark.docker
def test_every_container_is_hardened_and_kept_off_the_engine_cpus():
    config = _config("--profile", "monitoring", QUAYSIDE_SUPPORT_CPUSET="0-1", QUAYSIDE_UID="1234")
    assert set(config["services"]) == {*SUPPORT, *MONITORING}
    for name, svc in config["services"].items():
        assert svc["network_mode"] == "host", name
        assert svc["init"] is True and svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"] and svc["security_opt"] == ["no-new-privileges:true"], name
        assert svc["cpuset"] == "0-1" and svc["mem_limit"], name
        assert svc["restart"] == "unless-stopped" and svc["healthcheck"]["test"], name
    for name in SUPPORT:
        svc = config["services"][name]
        assert svc["user"] == "1234:1000", name
        assert "/dev/shm:/dev/shm:rw" in svc["volumes"], name
        assert svc["command"] == [name] and svc["build"]["network"] == "host", name
    assert config["services"]["dashboard"]["secrets"] == [{"source": "quayside_tokens"}]


@pytest.mark.docker
def test_monitoring_is_behind_a_profile_and_mounts_files_that_exist():
    config = _config("--profile", "monitoring")
    for name, svc in config["services"].items():  # `config` lists every profile's services
        assert svc.get("profiles", []) == (["monitoring"] if name in MONITORING else []), name
    mounted = []
    for name in MONITORING:
        for volume in config["services"][name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("/"):  # a bind mount (the rest are named volumes)
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
                mounted.append(Path(source).relative_to(ROOT).as_posix())
    assert {"monitoring/prometheus.yml", "monitoring/alerts.yml", "monitoring/grafana/quayside.json"} <= set(mounted)
