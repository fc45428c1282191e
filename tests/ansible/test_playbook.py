"""The provisioning playbook (ansible/): ansible-lint and syntax checks; site.yml converged twice
into a fresh Debian container running systemd (the second run must change nothing), then what it
left inside checked from outside; a --check --diff run against this machine; the support role
starting a real compose stack on the test Docker engine.

Live kernel settings are never written: the container run sets quayside_tuning_apply_live=false
(its /proc/sys and /sys are the host's) and the tests compare the host's values before and after.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import require

from quayside.core.host.profile import load_profile

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
BASE_IMAGE = os.environ.get("QUAYSIDE_BASE_IMAGE", "local/debian:bookworm")
EXAMPLE_VAULT_PASSWORD = "quayside-example-vault"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
# host settings the tuning role would change if it wrote live ones
LIVE_SETTINGS = [
    "/proc/sys/vm/swappiness",
    "/proc/sys/net/core/rmem_max",
    "/proc/sys/net/core/busy_poll",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/proc/irq/default_smp_affinity",
]


def _tool(name: str) -> str | None:
    """An Ansible tool from this interpreter's environment (the locked dev tools), else PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _pip() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    return [shutil.which("python3") or "python3", "-m", "pip"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCAL_TEMP=str(Path(os.environ.get("TMPDIR", "/tmp")) / "quayside-ansible-tmp"),
        QUAYSIDE_VAULT_PASSWORD=EXAMPLE_VAULT_PASSWORD,
    )
    env.update(extra)
    return env


def _playbook(*args: str, timeout: int = 1200, **env: str) -> subprocess.CompletedProcess:
    cmd = [
        _tool("ansible-playbook"),
        "--vault-password-file",
        str(ANSIBLE / "vault-password.sh"),
        *args,
    ]
    return subprocess.run(cmd, cwd=ANSIBLE, env=_env(**env), capture_output=True, text=True, timeout=timeout)


def _recap(result: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    out = {}
    for host, ok, changed, unreachable, failed in RECAP.findall(result.stdout):
        out[host] = {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
    return out


def _explain(result: subprocess.CompletedProcess) -> str:
    return f"rc={result.returncode}\n--- stdout (end)\n{result.stdout[-12000:]}\n--- stderr\n{result.stderr[-4000:]}"


def _changed_tasks(result: subprocess.CompletedProcess) -> list[str]:
    """The names of the tasks that reported 'changed' (for an idempotence failure message)."""
    names, task = [], ""
    for line in result.stdout.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line
        elif line.startswith("changed:"):
            names.append(task)
    return names


@pytest.fixture(scope="module")
def ansible_tools() -> None:
    for name in ("ansible-playbook", "ansible-lint", "ansible-vault"):
        require(_tool(name) is not None, f"{name} is not installed (dev dependencies: ansible, ansible-lint)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from this tree as the operator would (`pip wheel --no-deps`);
    $QUAYSIDE_WHEEL names one built already."""
    if os.environ.get("QUAYSIDE_WHEEL"):
        return Path(os.environ["QUAYSIDE_WHEEL"])
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*_pip(), "wheel", "--quiet", "--disable-pip-version-check", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("quayside-*.whl")
    return built


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """Wheels of every locked requirement, downloaded once per lock file into build/ (ignored by
    git), so the container installs with --no-index."""
    lock = ROOT / "requirements.lock"
    key = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    folder = ROOT / "build" / "ansible-wheelhouse" / key
    done = folder / ".complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [*_pip(), "download", "--quiet", "--require-hashes", "-r", str(lock), "-d", str(folder)],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        done.touch()
    return folder


def _docker(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def _target_image() -> str:
    """A fresh Debian host: the offline base image plus systemd and python3 (built once)."""
    dockerfile = Path(__file__).with_name("target.Dockerfile")
    base_id = _docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    tag = "quayside-ansible-target:" + hashlib.sha256(dockerfile.read_bytes() + base_id.encode()).hexdigest()[:12]
    if _docker("image", "inspect", tag, check=False).returncode != 0:
        _docker(
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-t",
            tag,
            "-f",
            str(dockerfile),
            str(dockerfile.parent),
            timeout=900,
        )
    return tag


def _live_settings() -> dict[str, str]:
    out = {}
    for path in LIVE_SETTINGS:
        try:
            out[path] = Path(path).read_text()
        except OSError:
            out[path] = "(unreadable)"
    return out


def test_every_inventory_passes_the_syntax_check(ansible_tools):
    for inventory in ("example", "staging", "production"):
        result = _playbook("-i", f"inventories/{inventory}", "site.yml", "--syntax-check", timeout=300)
        assert result.returncode == 0, f"{inventory}: {_explain(result)}"


def test_ansible_lint_production_profile(ansible_tools):
    result = subprocess.run(
        [_tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor"],
        cwd=ANSIBLE,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_the_example_vault_opens_with_the_documented_password_only(ansible_tools):
    vault = "inventories/example/group_vars/all/vault.yml"
    assert (ANSIBLE / vault).read_text().startswith("$ANSIBLE_VAULT;")
    view = [_tool("ansible-vault"), "view", vault, "--vault-password-file", "vault-password.sh"]
    result = subprocess.run(view, cwd=ANSIBLE, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "vault_quayside_gateway_account" in result.stdout
    wrong = subprocess.run(
        view, cwd=ANSIBLE, env=_env(QUAYSIDE_VAULT_PASSWORD="wrong"), capture_output=True, text=True, timeout=120
    )
    assert wrong.returncode != 0
    unset = _env()
    del unset["QUAYSIDE_VAULT_PASSWORD"]
    missing = subprocess.run(view, cwd=ANSIBLE, env=unset, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "QUAYSIDE_VAULT_PASSWORD" in missing.stdout + missing.stderr


@pytest.fixture
def systemd_container(docker_engine, ansible_tools):
    """A fresh Debian host: systemd as PID 1, host network, removed afterwards."""
    image = _target_image()
    name = f"quayside-ansible-{uuid.uuid4().hex[:8]}"
    _docker(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--volume",
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "--cap-add",
        "ALL",
        "--cap-drop",
        "SYS_RESOURCE",
        "--shm-size",
        "256m",
        image,
    )
    try:
        for _ in range(60):
            state = _docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            subprocess.run(["sleep", "0.5"], check=True)
        yield name
    finally:
        _docker("rm", "--force", name, check=False)


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _sh(container: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    return _docker("exec", container, "sh", "-c", script, check=check, timeout=120)


@pytest.mark.timeout(1800)  # two full converges, installing the locked wheels into the container
def test_site_converges_in_a_systemd_container_then_changes_nothing(
    systemd_container, wheel, wheelhouse, tmp_path, docker_engine
):
    name = systemd_container
    sim_port, admin_port, udp_port = _free_ports(3)
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    # the example inventory's shared variables and its vault, as an operator's inventory has them
    shutil.copytree(ANSIBLE / "inventories/example/group_vars/all", inventory / "group_vars/all")
    docker_args = f"-H {docker_engine}" if docker_engine else ""
    (inventory / "hosts.yml").write_text(
        textwrap.dedent(f"""\
        all:
          children:
            engine_hosts:
              hosts:
                {name}:
                  ansible_connection: community.docker.docker
                  ansible_docker_extra_args: "{docker_args}"
                  ansible_python_interpreter: /usr/bin/python3
                  ansible_user: root
            support_hosts:
              hosts: {{}}
        """)
    )
    extra = tmp_path / "test-vars.yml"
    extra.write_text(
        json.dumps(
            {
                # a two-CPU host: CPU 1 for the pinned processes, CPU 0 for the rest
                "quayside_tuning_isolated_cpus": "1",
                "quayside_tuning_housekeeping_cpus": "0",
                # a container shares the host's kernel: render everything, write nothing live
                "quayside_tuning_apply_live": False,
                "quayside_tuning_reboot": False,
                "quayside_engine_cpu": 1,
                "quayside_engine_gateway_cpu": 1,
                "quayside_engine_relay_cpu": 1,
                # SCHED_FIFO units cannot start in a container (214/SETSCHEDULER)
                "quayside_engine_realtime_priority": 0,
                "quayside_engine_wheel": str(wheel),
                "quayside_engine_lock_file": str(ROOT / "requirements.lock"),
                "quayside_engine_wheelhouse": str(wheelhouse),
                "quayside_engine_simgateway_enabled": True,
                "quayside_engine_simgateway_port": sim_port,
                "quayside_engine_simgateway_admin_port": admin_port,
                "quayside_engine_gateway_port": sim_port,
                "quayside_engine_relays": [{"name": "test", "dest": f"127.0.0.1:{udp_port}"}],
                "quayside_engine_rings": {"feed_capacity": 65536},
                # the container is not tuned (nothing live is written): report, don't fail
                "quayside_engine_verify_fail": False,
            }
        )
    )
    before = _live_settings()
    args = ["-i", str(inventory), "-e", f"@{extra}", "site.yml"]

    first = _playbook(*args)
    assert first.returncode == 0, _explain(first)
    assert _recap(first)[name]["failed"] == 0
    assert _recap(first)[name]["changed"] > 0
    assert "REBOOT PENDING" in first.stdout  # told, not rebooted

    second = _playbook(*args)
    assert second.returncode == 0, _explain(second)
    assert _recap(second)[name]["changed"] == 0, "not idempotent: " + "; ".join(_changed_tasks(second))

    assert _live_settings() == before, "the playbook changed this machine's live kernel settings"

    # the service user and the release
    passwd = _sh(name, "getent passwd quayside").stdout
    assert passwd.strip().endswith(":/var/lib/quayside:/usr/sbin/nologin")
    link = _sh(name, "readlink /opt/quayside/current").stdout.strip()
    assert re.fullmatch(r"releases/0\.1\.0-[0-9a-f]{12}", link), link
    assert (
        _sh(
            name, f"test -f /opt/quayside/{link}/.complete && test -f /opt/quayside/{link}/requirements.lock"
        ).returncode
        == 0
    )
    assert _sh(name, "/opt/quayside/current/venv/bin/quayside --version").stdout.startswith("quayside 0.1.0")

    # files the tuning role renders (applied at the next boot on a real host)
    grub = _sh(name, "cat /etc/default/grub.d/quayside-tuning.cfg").stdout
    for param in ("isolcpus=domain,managed_irq,1", "nohz_full=1", "rcu_nocbs=1", "irqaffinity=0"):
        assert param in grub
    assert "transparent_hugepage=never" in grub and "intel_idle.max_cstate=1" in grub
    sysctl = _sh(name, "cat /etc/sysctl.d/90-quayside.conf").stdout
    assert "net.core.rmem_max = 33554432" in sysctl and "vm.swappiness = 10" in sysctl
    tuned = _sh(name, "cat /etc/tuned/quayside/tuned.conf /etc/tuned/active_profile").stdout
    assert "include=cpu-partitioning" in tuned and "isolated_cores=1" in tuned and tuned.strip().endswith("quayside")
    assert "CPUAffinity=0" in _sh(name, "cat /etc/systemd/system.conf.d/90-quayside-affinity.conf").stdout
    assert "IRQBALANCE_BANNED_CPULIST=1" in _sh(name, "cat /etc/default/irqbalance").stdout
    assert "@quayside  hard  memlock  unlimited" in _sh(name, "cat /etc/security/limits.d/90-quayside.conf").stdout
    # configuration from inventory variables, the account from the example vault
    gateway = _sh(name, "stat -c '%U:%G %a' /etc/quayside/gateway.toml; cat /etc/quayside/gateway.toml").stdout
    assert gateway.startswith("root:quayside 640") and 'account = "DU0000001"' in gateway
    assert f"port = {sim_port}" in gateway
    _sh(name, "/opt/quayside/current/venv/bin/quayside engine check-config /etc/quayside/engine.toml")

    # the units: loaded, enabled, pinned as intended
    units = {
        "quayside-engine.service": "1",
        "quayside-gateway.service": "1",
        "quayside-relay-test.service": "1",
        "quayside-simgateway.service": None,
    }
    for unit, cpus in units.items():
        show = _sh(
            name, f"systemctl show {unit} -p LoadState -p UnitFileState -p CPUAffinity -p User -p LimitMEMLOCK"
        ).stdout
        props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
        assert props["LoadState"] == "loaded", (unit, props)
        assert props["UnitFileState"] == "enabled", (unit, props)
        assert props["User"] == "quayside", (unit, props)
        if cpus is not None:
            assert props["CPUAffinity"] == cpus, (unit, props)
    engine = _sh(name, "systemctl show quayside-engine -p LimitMEMLOCK -p CPUSchedulingPolicy -p Restart").stdout
    assert "LimitMEMLOCK=infinity" in engine and "Restart=on-failure" in engine
    for unit in ("quayside-engine", "quayside-gateway", "quayside-simgateway"):
        assert _sh(name, f"systemctl is-active {unit}", check=False).stdout.strip() == "active", unit
    # systemd-analyze verify exits 0 on bad values: its stderr must be empty too
    verify = _sh(name, "systemd-analyze verify /etc/systemd/system/quayside-*.service", check=False)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr

    # the verifier's intended profile: the same variables, read back by quayside's own loader
    profile_dir = tmp_path / "etc-quayside"
    _docker("cp", f"{name}:/etc/quayside", str(profile_dir))
    profile = load_profile(profile_dir / "host-profile.toml")
    assert profile.isolated_cpus == "1" and profile.housekeeping_cpus == "0"
    assert {p.name: p.cpus for p in profile.process} == {"engine": "1", "gateway": "1", "relay-test": "1"}
    # ... and the verifier run inside: the engine is pinned, the kernel honestly not (no reboot)
    check = _sh(name, "/opt/quayside/current/venv/bin/quayside host check --json", check=False)
    assert check.returncode == 1, check.stdout + check.stderr
    verdicts = {c["item"]: c["status"] for c in json.loads(check.stdout)["checks"]}
    assert verdicts["process engine affinity"] == "PASS"
    assert verdicts["process gateway affinity"] == "PASS"
    assert verdicts["cmdline isolcpus"] == "FAIL"


def test_check_diff_against_this_machine_runs_clean(ansible_tools, wheel, tmp_path):
    """--check --diff on localhost, the way an operator previews a run: no failure, nothing
    written (this machine is not systemd-booted: units are rendered, not managed)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        textwrap.dedent("""\
        all:
          children:
            engine_hosts:
              hosts:
                localhost: {}
            support_hosts:
              hosts:
                localhost: {}
          vars:
            ansible_connection: local
            ansible_python_interpreter: /usr/bin/python3
        """)
    )
    extra = tmp_path / "vars.yml"
    extra.write_text(
        json.dumps(
            {
                "quayside_tuning_isolated_cpus": "1",
                "quayside_tuning_tuned": False,
                "quayside_tuning_apply_live": False,
                "quayside_engine_cpu": 1,
                "quayside_engine_gateway_cpu": 1,
                "quayside_engine_relay_cpu": 1,
                "quayside_engine_realtime_priority": 50,
                "quayside_engine_relays": [{"name": "preview", "dest": "127.0.0.1:17400"}],
                "quayside_engine_wheel": str(wheel),
                "quayside_engine_lock_file": str(ROOT / "requirements.lock"),
                "quayside_support_dir": str(tmp_path / "support"),
                "quayside_support_docker_install": False,
            }
        )
    )
    written = [
        Path("/etc/default/grub.d/quayside-tuning.cfg"),
        Path("/etc/sysctl.d/90-quayside.conf"),
        Path("/etc/quayside"),
        Path("/opt/quayside"),
        Path("/etc/systemd/system/quayside-engine.service"),
    ]
    existed = {p: p.exists() for p in written}
    before = _live_settings()
    result = _playbook("-i", str(inventory), "-e", f"@{extra}", "site.yml", "--check", "--diff")
    assert result.returncode == 0, _explain(result)
    assert _recap(result)["localhost"]["failed"] == 0
    # the diff previews what a real run would write
    assert "isolcpus=domain,managed_irq,1" in result.stdout
    assert "CPUSchedulingPolicy=fifo" in result.stdout and "CPUAffinity=1" in result.stdout
    assert "net.core.busy_poll = 50" in result.stdout
    assert {p: p.exists() for p in written} == existed, "check mode wrote files"
    assert _live_settings() == before


def test_support_role_starts_a_healthy_stack_off_the_engine_cpus(ansible_tools, docker_engine, tmp_path):
    """The support role against this machine's test Docker engine, with a one-service stack:
    started, healthy, pinned to the support CPUs by the generated override; a second run changes
    nothing. Files go to a temporary folder; dockerd's own unit is not touched."""
    project = f"quayside-test-{uuid.uuid4().hex[:8]}"
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        textwrap.dedent(f"""\
        services:
          probe:
            image: {BASE_IMAGE}
            command: ["sleep", "600"]
            init: true
            network_mode: host
            healthcheck:
              test: ["CMD", "true"]
              interval: 1s
              timeout: 5s
              retries: 3
        """)
    )
    playbook = tmp_path / "support.yml"
    playbook.write_text(
        textwrap.dedent("""\
        - name: Support stack
          hosts: localhost
          connection: local
          gather_facts: true
          roles:
            - role: quayside_support
        """)
    )
    extra = tmp_path / "vars.yml"
    extra.write_text(
        json.dumps(
            {
                "ansible_python_interpreter": "/usr/bin/python3",
                "quayside_support_docker_install": False,
                "quayside_support_manage_service": False,
                "quayside_support_docker_host": docker_engine,
                "quayside_support_compose": "v1",
                "quayside_support_project_name": project,
                "quayside_support_dir": str(tmp_path / "stack"),
                "quayside_support_compose_src": str(compose),
                "quayside_support_cpuset": "0",
                "quayside_support_secrets": {"quayside_tokens": "not-a-secret"},
                "quayside_support_files": [],
                "quayside_support_user": "nobody",  # exists here: the role creates no user on this machine
                "quayside_support_health_timeout": 60,
            }
        )
    )
    args = ["-i", "localhost,", "-e", f"@{extra}", str(playbook)]
    env = {"ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles"), "ANSIBLE_FILTER_PLUGINS": str(ANSIBLE / "filter_plugins")}
    try:
        first = _playbook(*args, **env)
        assert first.returncode == 0, _explain(first)
        second = _playbook(*args, **env)
        assert second.returncode == 0, _explain(second)
        assert _recap(second)["localhost"]["changed"] == 0, "; ".join(_changed_tasks(second))
        ids = _docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        assert len(ids) == 1
        state = json.loads(_docker("inspect", ids[0]).stdout)[0]
        assert state["State"]["Health"]["Status"] == "healthy"
        assert state["HostConfig"]["CpusetCpus"] == "0"
        env_file = (tmp_path / "stack" / ".env").read_text()
        nobody = pwd.getpwnam("nobody")
        assert f"QUAYSIDE_UID={nobody.pw_uid}\n" in env_file and f"QUAYSIDE_GID={nobody.pw_gid}\n" in env_file
        for sub in ("recordings", "audit"):
            assert (tmp_path / "stack" / "data" / sub).stat().st_uid == nobody.pw_uid
        secret = tmp_path / "stack" / "secrets" / "quayside_tokens"
        assert secret.read_text() == "not-a-secret" and oct(secret.stat().st_mode & 0o777) == "0o444"
    finally:
        subprocess.run(
            ["docker-compose", "-p", project, "-f", str(tmp_path / "stack" / "compose.yaml"), "down", "-t", "1"],
            cwd=tmp_path,
            capture_output=True,
            timeout=120,
            env={**os.environ, "DOCKER_HOST": docker_engine} if docker_engine else None,
        )
