"""The intended tuning of an engine host: one schema, written by the Ansible roles, read by the verifier.

The ``quayside_tuning`` role renders ``/etc/quayside/host-profile.toml`` from its variables; the
``quayside_engine`` role adds ``/etc/quayside/host-profile.d/*.toml`` with the processes it pins.
The verifier (``quayside host check``) reads both, so what it checks is what the playbook meant.
Unknown keys are errors that name the file and the field. Example::

    isolated_cpus = "2-7"
    housekeeping_cpus = "0-1"
    kernel_cmdline = ["isolcpus=domain,managed_irq,2-7", "nohz_full=2-7", "rcu_nocbs=2-7", "irqaffinity=0-1"]
    governor = "performance"
    max_cstate = 1
    thp = "never"
    hugepages_2m = 0
    irqbalance = "banned"

    [sysctl]
    "net.core.rmem_max" = "33554432"

    [[process]]
    name = "engine"
    match = ["quayside", "engine", "run"]
    cpus = "2"
    policy = "fifo"
    priority = 50
    lock_memory = true
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ProfileError",
    "ProcessExpectation",
    "HostProfile",
    "DEFAULT_PROFILE_PATH",
    "DEFAULT_SYSCTL",
    "parse_cpulist",
    "format_cpulist",
    "parse_cpumask",
    "load_profile",
    "isolation_cmdline",
    "with_isolation",
    "builtin_profile",
]

DEFAULT_PROFILE_PATH = Path("/etc/quayside/host-profile.toml")

#: The sysctls the tuning role sets by default (its ``quayside_tuning_sysctl``); the verifier's
#: built-in expectation when no profile has been written. Sources are in docs/deploy.md.
DEFAULT_SYSCTL: dict[str, str] = {
    "net.core.rmem_max": "33554432",
    "net.core.wmem_max": "33554432",
    "net.core.rmem_default": "4194304",
    "net.core.wmem_default": "4194304",
    "net.core.netdev_max_backlog": "65536",
    "net.core.busy_poll": "50",
    "net.core.busy_read": "50",
    "net.ipv4.udp_rmem_min": "16384",
    "net.ipv4.udp_wmem_min": "16384",
    "vm.swappiness": "10",
    "vm.stat_interval": "10",
    "kernel.numa_balancing": "0",
    "kernel.timer_migration": "0",
}


class ProfileError(ValueError):
    """The intended profile is missing or invalid; the message says where and why."""


def parse_cpulist(text: str) -> frozenset[int]:
    """``"0-2,5"`` → {0, 1, 2, 5}; also accepts the kernel's ``isolcpus`` flags prefix-free lists."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.strip().split(","))):
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"not a CPU list: {text!r}") from None
        if last < first:
            raise ValueError(f"not a CPU list: {text!r} ({part} runs backwards)")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def format_cpulist(cpus) -> str:
    """{0, 1, 2, 5} → ``"0-2,5"`` (the kernel's own notation)."""
    out, run = [], []
    for cpu in sorted(cpus):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [cpu]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def parse_cpumask(text: str) -> frozenset[int]:
    """A hexadecimal CPU mask as in ``/proc/irq/default_smp_affinity`` (``"ff,ffffffff"``)."""
    value = int(text.strip().replace(",", "") or "0", 16)
    return frozenset(i for i in range(value.bit_length()) if value >> i & 1)


def _cpulist_field(value: str) -> str:
    parse_cpulist(value)
    return value.strip()


class ProcessExpectation(BaseModel):
    """A pinned process: how to recognise it and where and how it should run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="what the report calls it")
    match: list[str] = Field(min_length=1, description="words of its command line, in order")
    cpus: str = Field(description="its CPU affinity (CPU list)")
    policy: Literal["other", "fifo", "rr", "batch", "idle"] = "other"
    priority: int = Field(default=0, ge=0, le=99, description="real-time priority (fifo, rr)")
    lock_memory: bool = Field(default=False, description="expects unlimited memlock and locked pages")
    required: bool = Field(default=True, description="FAIL when not running (else SKIP)")

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, value: str) -> str:
        return _cpulist_field(value)


class HostProfile(BaseModel):
    """The tuning a host is meant to have. Empty or ``None`` fields are not checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    isolated_cpus: str = Field(default="", description="CPUs for the pinned processes; '' = no isolation")
    housekeeping_cpus: str = Field(default="", description="CPUs for everything else; '' = all but isolated")
    nohz_full: bool = Field(default=True, description="isolated CPUs run tickless (nohz_full)")
    kernel_cmdline: list[str] = Field(default_factory=list, description="parameters expected on /proc/cmdline")
    governor: str | None = Field(default="performance", description="cpufreq governor on every CPU; '' = any")
    max_cstate: int | None = Field(default=1, ge=0, description="deepest idle state allowed; -1 = any")
    thp: Literal["always", "madvise", "never"] | None = Field(default="never", description="transparent huge pages")
    hugepages_2m: int = Field(default=0, ge=0, description="2 MiB huge pages reserved (at least)")
    irqbalance: Literal["banned", "disabled", "any"] = Field(
        default="banned", description="irqbalance off the isolated CPUs (banned) or not running (disabled)"
    )
    sysctl: dict[str, str] = Field(default_factory=dict, description="kernel settings by sysctl name")
    process: list[ProcessExpectation] = Field(default_factory=list)

    @field_validator("isolated_cpus", "housekeeping_cpus")
    @classmethod
    def _cpus(cls, value: str) -> str:
        return _cpulist_field(value)

    @field_validator("governor", mode="before")
    @classmethod
    def _no_governor(cls, value):
        return value or None  # "" = don't check (TOML has no null)

    @field_validator("max_cstate", mode="before")
    @classmethod
    def _no_cap(cls, value):
        return None if value is None or int(value) < 0 else value  # -1 = no cap

    @field_validator("sysctl", mode="before")
    @classmethod
    def _sysctl_strings(cls, value):
        if isinstance(value, dict):
            return {k: " ".join(str(v).split()) if not isinstance(v, bool) else str(int(v)) for k, v in value.items()}
        return value

    @property
    def isolated(self) -> frozenset[int]:
        return parse_cpulist(self.isolated_cpus)

    def housekeeping(self, online: frozenset[int]) -> frozenset[int]:
        if self.housekeeping_cpus:
            return parse_cpulist(self.housekeeping_cpus)
        return online - self.isolated


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None


def _validate(data: dict, source: str) -> HostProfile:
    try:
        return HostProfile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ProfileError(f"{source}: {problems}") from None


def load_profile(path: str | Path) -> HostProfile:
    """The profile file, with ``[[process]]`` entries (and ``[sysctl]`` keys) added from the
    ``*.toml`` files of the ``<name>.d`` folder beside it, in name order."""
    path = Path(path)
    data = _read(path)
    _validate(data, str(path))  # name the main file's own errors first
    drop_in = path.with_suffix(".d")
    if drop_in.is_dir():
        for extra in sorted(drop_in.glob("*.toml")):
            more = _read(extra)
            unknown = set(more) - {"process", "sysctl"}
            if unknown:
                raise ProfileError(f"{extra}: only [[process]] and [sysctl] belong here, not {sorted(unknown)}")
            data.setdefault("process", []).extend(more.get("process", []))
            data.setdefault("sysctl", {}).update(more.get("sysctl", {}))
    return _validate(data, str(path))


ISOLATION_PARAMS = ("isolcpus", "nohz_full", "rcu_nocbs", "irqaffinity")


def isolation_cmdline(isolated: str, housekeeping: str) -> list[str]:
    """The boot parameters the tuning role writes for these CPU lists (none without isolation)."""
    if not isolated:
        return []
    return [
        f"isolcpus=domain,managed_irq,{isolated}",
        f"nohz_full={isolated}",
        f"rcu_nocbs={isolated}",
        f"irqaffinity={housekeeping}",
    ]


def with_isolation(profile: HostProfile, isolated: str, housekeeping: str = "") -> HostProfile:
    """The profile with other CPU lists, its isolation boot parameters rewritten to match."""
    isolated = format_cpulist(parse_cpulist(isolated))
    kept = [p for p in profile.kernel_cmdline if p.partition("=")[0] not in ISOLATION_PARAMS]
    cmdline = isolation_cmdline(isolated, housekeeping or profile.housekeeping_cpus or "0")
    data = profile.model_dump()
    data.update(isolated_cpus=isolated, housekeeping_cpus=housekeeping, kernel_cmdline=cmdline + kept)
    return HostProfile.model_validate(data)


def builtin_profile(online: frozenset[int]) -> HostProfile:
    """What the tuning role would intend with its defaults on a host with these CPUs: every CPU
    but the first isolated, the role's sysctls. Used when no profile has been written."""
    first = min(online) if online else 0
    isolated = format_cpulist(online - {first})
    cmdline = isolation_cmdline(isolated, str(first))
    cmdline += ["intel_idle.max_cstate=1", "processor.max_cstate=1", "transparent_hugepage=never"]
    return HostProfile(
        isolated_cpus=isolated,
        housekeeping_cpus=str(first),
        kernel_cmdline=cmdline,
        sysctl=dict(DEFAULT_SYSCTL),
    )
