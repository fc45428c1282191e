"""The tuning verifier (`quayside host check`) on fake host trees: an 8-CPU engine host tuned as
the playbook intends and the same host before it, a recording of a development VM; and for real
on this machine, which is not tuned and must say so."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quayside.cli import main
from quayside.core.host.check import HostFS, Status, check_host, record_tree, summary
from quayside.core.host.profile import (
    DEFAULT_SYSCTL,
    HostProfile,
    ProfileError,
    format_cpulist,
    load_profile,
    parse_cpulist,
    parse_cpumask,
    with_isolation,
)

FIXTURES = Path(__file__).with_name("fixtures")
TUNED, UNTUNED, VM = FIXTURES / "tuned", FIXTURES / "untuned", FIXTURES / "vm-recorded"
ROOT = Path(__file__).resolve().parents[2]


def _verdicts(root: Path, profile: HostProfile | None = None) -> dict[str, Status]:
    profile = profile or load_profile(root / "etc/quayside/host-profile.toml")
    return {c.item: c.status for c in check_host(profile, HostFS(root))}


def test_cpu_lists_and_masks():
    assert parse_cpulist("0-2,5, 7-8") == {0, 1, 2, 5, 7, 8}
    assert parse_cpulist("") == frozenset()
    assert format_cpulist({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert format_cpulist(parse_cpulist("3")) == "3"
    assert parse_cpumask("ff,00000003") == {0, 1, 32, 33, 34, 35, 36, 37, 38, 39}
    with pytest.raises(ValueError):
        parse_cpulist("3-1")


def test_profile_rejects_unknown_keys_and_names_the_file(tmp_path):
    path = tmp_path / "host-profile.toml"
    path.write_text('isolated_cpus = "2-3"\nisolate_cpus = "2"\n')
    with pytest.raises(ProfileError, match=r"host-profile\.toml: isolate_cpus"):
        load_profile(path)
    path.write_text('isolated_cpus = "2-x"\n')
    with pytest.raises(ProfileError, match="isolated_cpus"):
        load_profile(path)
    drop_in = tmp_path / "host-profile.d"
    drop_in.mkdir()
    path.write_text('isolated_cpus = "2-3"\n')
    (drop_in / "x.toml").write_text('governor = "powersave"\n')
    with pytest.raises(ProfileError, match=r"only \[\[process\]\] and \[sysctl\]"):
        load_profile(path)


def test_the_profile_joins_the_engine_roles_processes():
    profile = load_profile(TUNED / "etc/quayside/host-profile.toml")
    assert profile.isolated == frozenset(range(2, 8))
    assert [(p.name, p.cpus, p.policy) for p in profile.process] == [
        ("engine", "2", "fifo"),
        ("gateway", "3", "other"),
        ("relay-support", "4", "other"),
    ]


def test_a_tuned_host_passes_every_item():
    checks = check_host(load_profile(TUNED / "etc/quayside/host-profile.toml"), HostFS(TUNED))
    assert [c for c in checks if c.status != Status.PASS] == []
    items = {c.item for c in checks}
    for item in [
        "cmdline isolcpus",
        "cmdline nohz_full",
        "cmdline rcu_nocbs",
        "cmdline irqaffinity",
        "cmdline intel_idle.max_cstate",
        "isolated",
        "nohz_full",
        "irqbalance",
        "irq default affinity",
        "irq affinity",
        "workqueue",
        "governor",
        "c-states",
        "thp",
        "hugepages",
        "sysctl net.core.rmem_max",
        "sysctl vm.swappiness",
        "process engine affinity",
        "process engine scheduling",
        "process engine memlock",
        "process gateway affinity",
        "process relay-support affinity",
    ]:
        assert item in items, item


UNTUNED_EXPECTED = {
    "cmdline isolcpus": Status.FAIL,
    "cmdline nohz_full": Status.FAIL,
    "cmdline rcu_nocbs": Status.FAIL,
    "cmdline irqaffinity": Status.FAIL,
    "cmdline intel_idle.max_cstate": Status.FAIL,
    "cmdline transparent_hugepage": Status.FAIL,
    "isolated": Status.FAIL,
    "nohz_full": Status.FAIL,
    "irqbalance": Status.FAIL,
    "irq default affinity": Status.FAIL,
    "irq affinity": Status.FAIL,
    "workqueue": Status.FAIL,
    "governor": Status.FAIL,
    "c-states": Status.FAIL,
    "thp": Status.FAIL,
    "hugepages": Status.FAIL,
    "sysctl net.core.rmem_max": Status.FAIL,
    "sysctl net.core.busy_poll": Status.FAIL,
    "sysctl vm.swappiness": Status.FAIL,
    "process engine": Status.PASS,  # running, but:
    "process engine affinity": Status.FAIL,
    "process engine scheduling": Status.FAIL,
    "process engine memlock": Status.FAIL,
    "process gateway": Status.FAIL,
    "process relay-support": Status.FAIL,
}


def test_an_untuned_host_fails_each_item_with_its_fix():
    checks = check_host(load_profile(UNTUNED / "etc/quayside/host-profile.toml"), HostFS(UNTUNED))
    found = {c.item: c for c in checks}
    assert {item: found[item].status for item in UNTUNED_EXPECTED} == UNTUNED_EXPECTED
    for c in checks:
        if c.status == Status.FAIL:
            assert c.fix, c.item
    assert "CPUAffinity=2" in found["process engine affinity"].fix
    assert "isolcpus=2-7" in found["isolated"].fix
    assert "sysctl -w vm.swappiness=10" in found["sysctl vm.swappiness"].fix
    assert "cpu2 C1E" in found["c-states"].detail
    assert "25 eno1-rx-0 on 0-7" in found["irq affinity"].detail


def test_a_recorded_vm_without_cpufreq_skips_the_governor_and_fails_isolation():
    profile = with_isolation(HostProfile(sysctl=dict(DEFAULT_SYSCTL)), "1", "0")
    verdicts = _verdicts(VM, profile)
    assert verdicts["governor"] == Status.SKIP  # no cpufreq driver in a VM: not a silent PASS
    assert verdicts["isolated"] == Status.FAIL
    assert verdicts["cmdline isolcpus"] == Status.FAIL
    assert verdicts["irq affinity"] == Status.FAIL


def test_a_recording_replays_the_same_verdicts(tmp_path):
    profile = load_profile(TUNED / "etc/quayside/host-profile.toml")
    copied = record_tree(profile, tmp_path, TUNED)
    assert "/proc/cmdline" in copied and "/proc/1234/status" in copied
    assert _verdicts(tmp_path, profile) == _verdicts(TUNED, profile)


def test_the_command_exits_by_verdict(capsys):
    assert main(["host", "check", "--root", str(TUNED)]) == 0
    out = capsys.readouterr().out
    assert "host check: tuned as intended (43 PASS, 0 FAIL, 0 SKIP)" in out

    assert main(["host", "check", "--root", str(UNTUNED), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["totals"]["FAIL"] == 38
    assert {c["item"]: c["status"] for c in report["checks"]}["process engine"] == "PASS"

    # an override on the command line: a sysctl the tuned host does not have
    assert main(["host", "check", "--root", str(TUNED), "--sysctl", "vm.swappiness=1", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL\s+sysctl vm.swappiness\s+vm.swappiness = 10, intended 1", out)
    assert "PASS" not in out.replace("PASS,", "")  # --quiet prints only FAILs and the totals


def test_an_unusable_profile_exits_2(tmp_path, capsys):
    bad = tmp_path / "profile.toml"
    bad.write_text("thp = 'sometimes'\n")
    assert main(["host", "check", "--root", str(TUNED), "--profile", str(bad)]) == 2
    assert "thp" in capsys.readouterr().err


def test_the_built_in_sysctls_are_the_tuning_roles_defaults():
    """The verifier's built-in expectation (no profile written yet) mirrors the role's defaults."""
    text = (ROOT / "ansible/roles/quayside_tuning/defaults/main.yml").read_text()
    block = text.split("\nquayside_tuning_sysctl:\n", 1)[1].split("\n\n", 1)[0]
    role = {}
    for line in block.splitlines():
        if line.startswith("  ") and ":" in line and not line.strip().startswith("#"):
            key, value = line.strip().split(":", 1)
            role[key.strip()] = value.strip()
    assert role == DEFAULT_SYSCTL


def test_this_machine_reports_its_untuned_state_honestly():
    """For real: this development machine has no isolated CPUs, so the check must FAIL
    (exit 1) on isolation rather than pass or crash."""
    isolated = Path("/sys/devices/system/cpu/isolated")
    if isolated.exists() and isolated.read_text().strip():
        pytest.fail("this machine has isolated CPUs: the test expects an untuned development machine")
    result = subprocess.run(
        [sys.executable, "-m", "quayside.cli", "host", "check", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    verdicts = {c["item"]: c["status"] for c in report["checks"]}
    if parse_cpulist(Path("/sys/devices/system/cpu/online").read_text()) == {0}:
        assert verdicts["isolated"] == "SKIP"  # one CPU: nothing to isolate
    else:
        assert verdicts["isolated"] == "FAIL"
        assert verdicts["cmdline isolcpus"] == "FAIL"
    assert summary([]) == {"PASS": 0, "FAIL": 0, "SKIP": 0}
    assert all(c["fix"] for c in report["checks"] if c["status"] == "FAIL")
