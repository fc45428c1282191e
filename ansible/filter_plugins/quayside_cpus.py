"""CPU-list filters for the Quayside roles: the kernel's notation ("0-3,6") to lists and back.

{{ "2-4,7" | quayside_cpulist }}                 -> [2, 3, 4, 7]
{{ [2, 3, 4, 7] | quayside_cpulist_format }}     -> "2-4,7"
{{ "0-7" | quayside_cpulist_minus("2-5") }}      -> "0-1,6-7"
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def quayside_cpulist(value):
    """A CPU list (string, integer or list of integers) as a sorted list of CPU numbers."""
    if value is None or value == "":
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return sorted({int(v) for v in value})
    cpus = set()
    for part in str(value).replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise AnsibleFilterError(f"not a CPU list: {value!r}") from None
        if last < first or first < 0:
            raise AnsibleFilterError(f"not a CPU list: {value!r} ({part})")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def quayside_cpulist_format(value):
    """CPU numbers as the kernel writes them: [0, 1, 2, 5] -> "0-2,5"."""
    out, run = [], []
    for cpu in quayside_cpulist(value):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [cpu]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def quayside_cpulist_minus(value, other):
    """The CPUs of ``value`` that are not in ``other``, as a CPU list string."""
    drop = set(quayside_cpulist(other))
    return quayside_cpulist_format([c for c in quayside_cpulist(value) if c not in drop])


def quayside_cpumask(value):
    """A CPU list as a hexadecimal mask (for /sys/devices/virtual/workqueue/cpumask)."""
    mask = 0
    for cpu in quayside_cpulist(value):
        mask |= 1 << cpu
    return f"{mask:x}"


class FilterModule:
    def filters(self):
        return {
            "quayside_cpulist": quayside_cpulist,
            "quayside_cpulist_format": quayside_cpulist_format,
            "quayside_cpulist_minus": quayside_cpulist_minus,
            "quayside_cpumask": quayside_cpumask,
        }
