"""What the host is, for latency figures that say so honestly: the tuning verifier's verdicts
(``quayside host check``'s Python API), which CPUs are isolated, and the two CPUs the suite
hands every module (``QUAYSIDE_BENCH_CPUS``).

A host with isolated CPUs gets its benchmarks there: the latency-critical side (the reader, the
echo side, the engine: ``CPU_B``) on an isolated CPU, the producer or driver (``CPU_A``) on a
second isolated CPU when there is one, else on a housekeeping CPU.
"""

from __future__ import annotations

import os

from benchmarks._common import CPU_A, CPU_B

__all__ = ["host_facts", "choose_cpus", "parse_cpu_pair"]


def host_facts() -> dict:
    """Online and isolated CPUs, and every verdict of the tuning verifier against the host's
    intended profile (the one the playbook wrote, else the built-in default)."""
    from quayside.core.host.check import HostFS, check_host, summary
    from quayside.core.host.profile import DEFAULT_PROFILE_PATH, builtin_profile, load_profile, parse_cpulist

    fs = HostFS()
    online = parse_cpulist(fs.read("/sys/devices/system/cpu/online") or "0")
    isolated = parse_cpulist(fs.read("/sys/devices/system/cpu/isolated") or "")
    facts: dict = {
        "online_cpus": sorted(online),
        "isolated_cpus": sorted(isolated),
        "nohz_full_cpus": sorted(parse_cpulist(fs.read("/sys/devices/system/cpu/nohz_full") or "")),
        "allowed_cpus": sorted(os.sched_getaffinity(0)),
    }
    try:
        if DEFAULT_PROFILE_PATH.exists():
            profile, source = load_profile(DEFAULT_PROFILE_PATH), str(DEFAULT_PROFILE_PATH)
        else:
            profile, source = builtin_profile(online), "built-in default (every CPU but the first isolated)"
        checks = check_host(profile, fs)
    except (ValueError, OSError) as exc:  # an unusable profile: still benchmark, say why unchecked
        facts["host_check"] = {"error": str(exc)}
        return facts
    facts["host_check"] = {
        "profile": source,
        "intended_isolated_cpus": sorted(profile.isolated),
        "totals": summary(checks),
        "checks": [{"item": c.item, "status": c.status.value, "detail": c.detail} for c in checks],
    }
    iso = [c for c in checks if c.item == "isolated"]
    if iso:
        facts["host_check"]["isolated"] = {"status": iso[0].status.value, "detail": iso[0].detail}
    return facts


def parse_cpu_pair(text: str, online: list[int]) -> tuple[int, int]:
    """``"2,3"`` -> (2, 3), each CPU online."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--cpus {text!r}: expected two CPU numbers A,B (producer/initiator, reader/engine)")
    a, b = int(parts[0]), int(parts[1])
    missing = [c for c in (a, b) if online and c not in online]
    if missing:
        raise ValueError(f"--cpus {text!r}: CPU {missing[0]} is not online (online: {online})")
    return a, b


def choose_cpus(facts: dict, requested: str | None = None) -> dict:
    """The two CPUs for every module, and why those."""
    online, isolated = facts["online_cpus"], facts["isolated_cpus"]
    if requested:
        a, b = parse_cpu_pair(requested, online)
        why = "chosen with --cpus"
    elif len(isolated) >= 2:
        a, b = isolated[0], isolated[1]
        why = f"isolated CPUs {a} and {b}"
    elif isolated:
        b = isolated[0]
        a = next((c for c in online if c != b), b)
        why = f"the reader / engine side on isolated CPU {b}, the producer / driver on housekeeping CPU {a}"
    elif CPU_A in online and CPU_B in online:
        a, b = CPU_A, CPU_B
        why = f"no isolated CPUs: CPUs {a} and {b}, shared with everything else on this machine"
    else:
        a = online[0]
        b = online[1] if len(online) > 1 else online[0]
        why = f"no isolated CPUs: CPUs {a} and {b}, shared with everything else on this machine"
    return {"a": a, "b": b, "isolated": a in isolated and b in isolated, "b_isolated": b in isolated, "why": why}
