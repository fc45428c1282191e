"""Compare the live host with its intended tuning profile: PASS, FAIL or SKIP per item, with the fix.

Everything is read from files under a root (``/`` on a live host, a recorded tree in tests):
``/proc/cmdline``, ``/sys/devices/system/cpu/{online,isolated,nohz_full}``, each CPU's cpufreq
governor and idle states, transparent huge pages, huge pages, each IRQ's affinity, irqbalance,
the workqueue mask, sysctls under ``/proc/sys``, and each pinned process's affinity, scheduling
policy and locked memory. Nothing is written. A check that cannot be made here (no cpufreq driver
in a VM, a process that is not running) is a SKIP that says why, never a silent PASS.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from quayside.core.host.profile import (
    HostProfile,
    ProcessExpectation,
    format_cpulist,
    parse_cpulist,
    parse_cpumask,
)

__all__ = ["Status", "Check", "HostFS", "check_host", "summary", "record_tree"]

_PLAYBOOK = "run the playbook (ansible-playbook site.yml)"
_BOOT = "the playbook writes it to /etc/default/grub.d/quayside-tuning.cfg (RHEL: tuned or grubby); reboot after"
_POLICIES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}


class Status(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    """One verdict: what was checked, what was found, and how to fix a FAIL."""

    item: str
    status: Status
    detail: str
    fix: str = ""


class HostFS:
    """Reads the host's /proc and /sys under ``root``, remembering every file it read (so that a
    live host can be recorded into a tree that replays the same verdicts)."""

    def __init__(self, root: str | Path = "/"):
        self.root = Path(root)
        self.read_paths: list[str] = []

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read(self, rel: str) -> str | None:
        """The file's text, or None when it does not exist or cannot be read."""
        try:
            text = self.path(rel).read_bytes().decode(errors="replace")
        except OSError:
            return None
        self.read_paths.append(rel)
        return text

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(p.name for p in self.path(rel).iterdir())
        except OSError:
            return []


def _cpus(fs: HostFS, rel: str) -> frozenset[int] | None:
    text = fs.read(rel)
    return None if text is None else parse_cpulist(text)


def _fmt(cpus) -> str:
    return format_cpulist(cpus) or "(none)"


def _cmdline_checks(fs: HostFS, profile: HostProfile) -> list[Check]:
    text = fs.read("/proc/cmdline")
    if text is None:
        return [Check("cmdline", Status.SKIP, "/proc/cmdline cannot be read")]
    # the kernel's own parameters end at a lone "--" (the rest goes to init)
    words = text.split(" -- ")[0].split()
    found: dict[str, str] = {}
    for word in words:
        key, _, value = word.partition("=")
        found[key] = value if "=" in word else ""
    out = []
    for param in profile.kernel_cmdline:
        key, sep, want = param.partition("=")
        item = f"cmdline {key}"
        fix = f"add {param} to the kernel command line: {_BOOT}"
        if key not in found:
            out.append(Check(item, Status.FAIL, f"{param} is not on the kernel command line", fix))
        elif sep and found[key] != want:
            out.append(Check(item, Status.FAIL, f"{key}={found[key]}, intended {want}", fix))
        else:
            out.append(Check(item, Status.PASS, f"{param} on the kernel command line"))
    return out


def _isolation_checks(fs: HostFS, profile: HostProfile, online: frozenset[int]) -> list[Check]:
    want = profile.isolated
    out = []
    if not want:
        return [Check("isolated", Status.SKIP, "no isolated CPUs intended")]
    missing = want - online
    if missing:
        out.append(
            Check(
                "cpus online",
                Status.FAIL,
                f"intended isolated CPUs {_fmt(missing)} are not online (online: {_fmt(online)})",
                "fix quayside_tuning_isolated_cpus for this host (it has fewer CPUs) or bring them online",
            )
        )
    have = _cpus(fs, "/sys/devices/system/cpu/isolated")
    fix = f"boot with isolcpus={profile.isolated_cpus}: {_BOOT}"
    if have is None:
        out.append(Check("isolated", Status.FAIL, "/sys/devices/system/cpu/isolated is missing", fix))
    elif have != want:
        out.append(Check("isolated", Status.FAIL, f"isolated CPUs are {_fmt(have)}, intended {_fmt(want)}", fix))
    else:
        out.append(Check("isolated", Status.PASS, f"CPUs {_fmt(have)} are isolated from the scheduler"))
    if profile.nohz_full:
        have = _cpus(fs, "/sys/devices/system/cpu/nohz_full")
        fix = f"boot with nohz_full={profile.isolated_cpus} on a kernel with CONFIG_NO_HZ_FULL: {_BOOT}"
        if have is None:
            out.append(Check("nohz_full", Status.FAIL, "no tickless CPUs (/sys/devices/system/cpu/nohz_full)", fix))
        elif not want <= have:
            out.append(Check("nohz_full", Status.FAIL, f"tickless CPUs are {_fmt(have)}, intended {_fmt(want)}", fix))
        else:
            out.append(Check("nohz_full", Status.PASS, f"CPUs {_fmt(have)} run without the scheduler tick"))
    return out


def _governor_check(fs: HostFS, profile: HostProfile, online: frozenset[int]) -> Check:
    if profile.governor is None:
        return Check("governor", Status.SKIP, "no governor intended")
    found = {cpu: fs.read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor") for cpu in sorted(online)}
    if all(v is None for v in found.values()):
        return Check("governor", Status.SKIP, "no cpufreq driver: the frequency is the firmware's or hypervisor's")
    wrong = {cpu: (v or "?").strip() for cpu, v in found.items() if v is None or v.strip() != profile.governor}
    if wrong:
        listed = ", ".join(f"cpu{c}={g}" for c, g in wrong.items())
        return Check(
            "governor",
            Status.FAIL,
            f"{listed}; intended {profile.governor}",
            f"{_PLAYBOOK}, or: echo {profile.governor} | tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
        )
    return Check("governor", Status.PASS, f"{profile.governor} on every CPU")


def _cstate_check(fs: HostFS, profile: HostProfile, online: frozenset[int]) -> Check:
    cap = profile.max_cstate
    if cap is None:
        return Check("c-states", Status.SKIP, "no C-state cap intended")
    cpus = sorted(profile.isolated or online)
    deep = []
    seen_any = False
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpuidle"
        for state in fs.listdir(base):
            if not state.startswith("state"):
                continue
            seen_any = True
            index = int(state[5:])
            disabled = (fs.read(f"{base}/{state}/disable") or "0").strip() == "1"
            if index > cap and not disabled:
                name = (fs.read(f"{base}/{state}/name") or state).strip()
                deep.append(f"cpu{cpu} {name}")
    if not seen_any:
        return Check("c-states", Status.SKIP, "no cpuidle states exposed")
    if deep:
        shown = ", ".join(deep[:6]) + (f" and {len(deep) - 6} more" if len(deep) > 6 else "")
        return Check(
            "c-states",
            Status.FAIL,
            f"idle states deeper than C{cap} are enabled: {shown}",
            f"boot with intel_idle.max_cstate={cap} processor.max_cstate={cap} ({_BOOT}), or now: "
            f"echo 1 > /sys/devices/system/cpu/cpuN/cpuidle/stateK/disable",
        )
    return Check("c-states", Status.PASS, f"no idle state deeper than C{cap} enabled on CPUs {_fmt(cpus)}")


def _selected(text: str) -> str:
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return text.strip()


def _memory_checks(fs: HostFS, profile: HostProfile) -> list[Check]:
    out = []
    if profile.thp is None:
        out.append(Check("thp", Status.SKIP, "no transparent huge page mode intended"))
    else:
        text = fs.read("/sys/kernel/mm/transparent_hugepage/enabled")
        if text is None:
            out.append(Check("thp", Status.SKIP, "kernel without transparent huge pages"))
        elif _selected(text) != profile.thp:
            out.append(
                Check(
                    "thp",
                    Status.FAIL,
                    f"transparent huge pages: {_selected(text)}, intended {profile.thp}",
                    f"boot with transparent_hugepage={profile.thp} ({_BOOT}), or now: "
                    f"echo {profile.thp} > /sys/kernel/mm/transparent_hugepage/enabled",
                )
            )
        else:
            out.append(Check("thp", Status.PASS, f"transparent huge pages: {profile.thp}"))
    if profile.hugepages_2m:
        text = fs.read("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
        have = int(text) if text and text.strip().isdigit() else 0
        if have < profile.hugepages_2m:
            out.append(
                Check(
                    "hugepages",
                    Status.FAIL,
                    f"{have} huge pages of 2 MiB reserved, intended {profile.hugepages_2m}",
                    f"{_PLAYBOOK} (vm.nr_hugepages={profile.hugepages_2m}); reserve at boot if memory is fragmented",
                )
            )
        else:
            out.append(Check("hugepages", Status.PASS, f"{have} huge pages of 2 MiB reserved"))
    return out


def _irq_names(fs: HostFS) -> dict[str, str]:
    names = {}
    for line in (fs.read("/proc/interrupts") or "").splitlines()[1:]:
        head, _, rest = line.partition(":")
        fields = rest.split()
        if head.strip().isdigit():
            words = [f for f in fields if not f.isdigit()]
            names[head.strip()] = words[-1] if words else ""
    return names


def _irq_checks(fs: HostFS, profile: HostProfile, housekeeping: frozenset[int]) -> list[Check]:
    isolated = profile.isolated
    if not isolated:
        return [Check("irq affinity", Status.SKIP, "no isolated CPUs intended")]
    out = []
    mask = fs.read("/proc/irq/default_smp_affinity")
    if mask is not None:
        default = parse_cpumask(mask)
        if default & isolated:
            out.append(
                Check(
                    "irq default affinity",
                    Status.FAIL,
                    f"new IRQs may land on isolated CPUs {_fmt(default & isolated)} (default {_fmt(default)})",
                    f"boot with irqaffinity={format_cpulist(housekeeping)}: {_BOOT}",
                )
            )
        else:
            out.append(Check("irq default affinity", Status.PASS, f"new IRQs go to CPUs {_fmt(default)}"))
    names = _irq_names(fs)
    offenders = []
    irqs = [d for d in fs.listdir("/proc/irq") if d.isdigit()]
    for irq in sorted(irqs, key=int):
        allowed = _cpus(fs, f"/proc/irq/{irq}/smp_affinity_list")
        if allowed is not None and allowed & isolated:
            label = f"{irq} {names.get(irq, '')}".strip()
            offenders.append(f"{label} on {_fmt(allowed)}")
    if not irqs:
        out.append(Check("irq affinity", Status.SKIP, "no IRQs listed in /proc/irq"))
    elif offenders:
        shown = "; ".join(offenders[:8]) + (f"; and {len(offenders) - 8} more" if len(offenders) > 8 else "")
        out.append(
            Check(
                "irq affinity",
                Status.FAIL,
                f"{len(offenders)} of {len(irqs)} IRQs may run on isolated CPUs: {shown}",
                f"{_PLAYBOOK} (quayside-irq-affinity.service writes {format_cpulist(housekeeping)} to "
                "/proc/irq/*/smp_affinity_list); managed IRQs follow isolcpus=managed_irq",
            )
        )
    else:
        out.append(Check("irq affinity", Status.PASS, f"all {len(irqs)} IRQs kept off CPUs {_fmt(isolated)}"))
    return out


def _processes(fs: HostFS) -> dict[int, list[str]]:
    procs = {}
    for pid in fs.listdir("/proc"):
        if pid.isdigit():
            text = fs.read(f"/proc/{pid}/cmdline")
            if text:
                procs[int(pid)] = [w for w in text.split("\0") if w]
    return procs


def _comm(fs: HostFS, pid: int) -> str:
    return (fs.read(f"/proc/{pid}/comm") or "").strip()


def _irqbalance_check(fs: HostFS, profile: HostProfile, procs: dict[int, list[str]]) -> Check:
    isolated = profile.isolated
    if profile.irqbalance == "any" or not isolated:
        return Check("irqbalance", Status.SKIP, "irqbalance is not constrained by the profile")
    running = [
        pid for pid, argv in procs.items() if Path(argv[0]).name == "irqbalance" or _comm(fs, pid) == "irqbalance"
    ]
    if not running:
        return Check("irqbalance", Status.PASS, "irqbalance is not running")
    if profile.irqbalance == "disabled":
        return Check(
            "irqbalance", Status.FAIL, "irqbalance is running", "systemctl disable --now irqbalance, or " + _PLAYBOOK
        )
    environ = fs.read(f"/proc/{running[0]}/environ") or ""
    banned = None
    for entry in environ.split("\0"):
        if entry.startswith("IRQBALANCE_BANNED_CPULIST="):
            banned = parse_cpulist(entry.partition("=")[2])
    if banned is None:  # irqbalance >= 1.8 also stays off isolcpus/nohz_full CPUs by itself
        auto = (_cpus(fs, "/sys/devices/system/cpu/isolated") or frozenset()) | (
            _cpus(fs, "/sys/devices/system/cpu/nohz_full") or frozenset()
        )
        if isolated <= auto:
            return Check("irqbalance", Status.PASS, "irqbalance runs; it skips the isolated/nohz_full CPUs itself")
        return Check(
            "irqbalance",
            Status.FAIL,
            "irqbalance runs without IRQBALANCE_BANNED_CPULIST and may move IRQs onto isolated CPUs",
            f"IRQBALANCE_BANNED_CPULIST={profile.isolated_cpus} in its environment file, restart it: {_PLAYBOOK}",
        )
    if not isolated <= banned:
        return Check(
            "irqbalance",
            Status.FAIL,
            f"irqbalance bans CPUs {_fmt(banned)}, not all of {_fmt(isolated)}",
            f"IRQBALANCE_BANNED_CPULIST={profile.isolated_cpus}, restart irqbalance: {_PLAYBOOK}",
        )
    return Check("irqbalance", Status.PASS, f"irqbalance runs with CPUs {_fmt(banned)} banned")


def _workqueue_check(fs: HostFS, profile: HostProfile) -> Check:
    isolated = profile.isolated
    text = fs.read("/sys/devices/virtual/workqueue/cpumask")
    if not isolated or text is None:
        return Check("workqueue", Status.SKIP, "no isolated CPUs intended or no workqueue mask")
    mask = parse_cpumask(text)
    if mask & isolated:
        return Check(
            "workqueue",
            Status.FAIL,
            f"unbound kernel work may run on isolated CPUs {_fmt(mask & isolated)}",
            f"{_PLAYBOOK} (writes the housekeeping mask to /sys/devices/virtual/workqueue/cpumask)",
        )
    return Check("workqueue", Status.PASS, f"unbound kernel work runs on CPUs {_fmt(mask)}")


def _sysctl_checks(fs: HostFS, profile: HostProfile) -> list[Check]:
    out = []
    for name, want in sorted(profile.sysctl.items()):
        text = fs.read("/proc/sys/" + name.replace(".", "/"))
        item = f"sysctl {name}"
        if text is None:
            out.append(Check(item, Status.SKIP, f"{name} does not exist in this kernel (or namespace)"))
            continue
        have = " ".join(text.split())
        if have != want:
            out.append(
                Check(
                    item, Status.FAIL, f"{name} = {have}, intended {want}", f"{_PLAYBOOK}, or: sysctl -w {name}={want}"
                )
            )
        else:
            out.append(Check(item, Status.PASS, f"{name} = {have}"))
    return out


def _matches(argv: list[str], words: list[str]) -> bool:
    """Whether ``words`` occur in ``argv`` in order; an argument matches by its full text or its
    file name (``/opt/quayside/current/venv/bin/quayside`` matches ``quayside``)."""
    i = 0
    for arg in argv:
        if i < len(words) and words[i] in (arg, Path(arg).name):
            i += 1
    return i == len(words)


def _status_field(text: str, name: str) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return None


def _process_checks(fs: HostFS, want: ProcessExpectation, procs: dict[int, list[str]]) -> list[Check]:
    pids = sorted(pid for pid, argv in procs.items() if _matches(argv, want.match))
    item = f"process {want.name}"
    if not pids:
        status = Status.FAIL if want.required else Status.SKIP
        return [
            Check(
                item,
                status,
                f"not running (no command line with {' '.join(want.match)!r})",
                f"systemctl start quayside-{want.name}; journalctl -u quayside-{want.name}" if want.required else "",
            )
        ]
    pid = pids[0]
    out = [Check(item, Status.PASS, f"running as pid {pid}")]
    status = fs.read(f"/proc/{pid}/status") or ""
    allowed = _status_field(status, "Cpus_allowed_list")
    target = parse_cpulist(want.cpus)
    unit_fix = f"CPUAffinity={want.cpus} in quayside-{want.name}.service: {_PLAYBOOK}"
    if allowed is None:
        out.append(Check(f"{item} affinity", Status.SKIP, "Cpus_allowed_list not readable"))
    elif parse_cpulist(allowed) != target:
        out.append(Check(f"{item} affinity", Status.FAIL, f"runs on CPUs {allowed}, intended {want.cpus}", unit_fix))
    else:
        out.append(Check(f"{item} affinity", Status.PASS, f"pinned to CPUs {allowed}"))
    stat = fs.read(f"/proc/{pid}/stat") or ""
    fields = stat.rpartition(")")[2].split()
    # after the command name: field 3 is fields[0]; rt_priority is field 40, policy field 41
    if len(fields) >= 39:
        priority, policy = int(fields[37]), _POLICIES.get(int(fields[38]), fields[38])
        if policy != want.policy or (want.policy in ("fifo", "rr") and priority != want.priority):
            out.append(
                Check(
                    f"{item} scheduling",
                    Status.FAIL,
                    f"policy {policy} priority {priority}, intended {want.policy} priority {want.priority}",
                    f"CPUSchedulingPolicy={want.policy} CPUSchedulingPriority={want.priority} and LimitRTPRIO "
                    f"in the unit: {_PLAYBOOK}",
                )
            )
        else:
            out.append(Check(f"{item} scheduling", Status.PASS, f"policy {policy} priority {priority}"))
    if want.lock_memory:
        limits = fs.read(f"/proc/{pid}/limits") or ""
        line = next((ln for ln in limits.splitlines() if ln.startswith("Max locked memory")), "")
        locked = _status_field(status, "VmLck") or "0 kB"
        fix = f"LimitMEMLOCK=infinity in quayside-{want.name}.service and lock_memory = true: {_PLAYBOOK}"
        if "unlimited" not in line:
            out.append(Check(f"{item} memlock", Status.FAIL, f"memlock limit: {' '.join(line.split()[3:5])}", fix))
        elif locked.split()[0] == "0":
            out.append(Check(f"{item} memlock", Status.FAIL, "no memory locked (VmLck 0 kB)", fix))
        else:
            out.append(Check(f"{item} memlock", Status.PASS, f"{locked} locked, no limit"))
    return out


def check_host(profile: HostProfile, fs: HostFS | None = None) -> list[Check]:
    """Every verdict for this host, in report order."""
    fs = fs or HostFS()
    online = _cpus(fs, "/sys/devices/system/cpu/online") or frozenset()
    housekeeping = profile.housekeeping(online)
    procs = _processes(fs)
    checks = _cmdline_checks(fs, profile)
    checks += _isolation_checks(fs, profile, online)
    checks.append(_irqbalance_check(fs, profile, procs))
    checks += _irq_checks(fs, profile, housekeeping)
    checks.append(_workqueue_check(fs, profile))
    checks.append(_governor_check(fs, profile, online))
    checks.append(_cstate_check(fs, profile, online))
    checks += _memory_checks(fs, profile)
    checks += _sysctl_checks(fs, profile)
    for want in profile.process:
        checks += _process_checks(fs, want, procs)
    return checks


def summary(checks: list[Check]) -> dict[str, int]:
    return {s.value: sum(c.status == s for c in checks) for s in Status}


def record_tree(profile: HostProfile, dest: str | Path, source: str | Path = "/") -> list[str]:
    """Copy every file the checks read on ``source`` into ``dest`` (a tree that gives the same
    verdicts: for bug reports and test fixtures). Returns the paths copied."""
    fs = HostFS(source)
    check_host(profile, fs)
    dest = Path(dest)
    copied = []
    for rel in dict.fromkeys(fs.read_paths):
        target = dest / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_bytes(fs.path(rel).read_bytes())
        except OSError:
            continue
        copied.append(rel)
    for rel in ("/proc/irq", "/proc"):  # empty directories the checks list
        (dest / rel.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return copied
