"""``quayside host ...``: is this host tuned as intended?

``quayside host check`` reads the live kernel (``/proc``, ``/sys``) and compares it with the
intended profile that the Ansible roles wrote (``/etc/quayside/host-profile.toml`` and
``host-profile.d/*.toml``), or with the built-in default when there is none; flags override single
items. It prints PASS, FAIL or SKIP per item, with the fix for each FAIL, and exits 1 when
anything FAILed (0 otherwise, 2 for an unusable profile). ``--root`` reads a recorded tree
instead of the live host; ``quayside host record DIR`` writes such a tree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    host = sub.add_parser("host", help="verify the engine host's kernel and CPU tuning", description=__doc__)
    hsub = host.add_subparsers(dest="host_command", required=True, metavar="SUBCOMMAND")
    p = hsub.add_parser("check", help="compare the live host with its intended tuning; exit 1 on any FAIL")
    _profile_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--quiet", action="store_true", help="print only FAILs and the totals")
    p.set_defaults(func=_check)
    p = hsub.add_parser("record", help="copy the files the check reads into DIR (a fake tree for tests)")
    _profile_arguments(p)
    p.add_argument("dest", type=Path, help="directory to write the tree into")
    p.set_defaults(func=_record)


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        type=Path,
        help="intended profile (TOML); default /etc/quayside/host-profile.toml, else the built-in default",
    )
    p.add_argument("--root", type=Path, default=Path("/"), help="read /proc and /sys under this root (default /)")
    p.add_argument("--isolated-cpus", metavar="LIST", help="override: CPUs meant to be isolated ('' = none)")
    p.add_argument("--housekeeping-cpus", metavar="LIST", help="override: CPUs for everything else")
    p.add_argument("--governor", help="override: intended cpufreq governor ('' = don't check)")
    p.add_argument("--thp", choices=["always", "madvise", "never"], help="override: transparent huge pages")
    p.add_argument("--max-cstate", type=int, help="override: deepest idle state allowed (-1 = don't check)")
    p.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE", help="override or add a sysctl")


def _profile(args: argparse.Namespace):
    from quayside.core.host.profile import (
        DEFAULT_PROFILE_PATH,
        HostProfile,
        builtin_profile,
        load_profile,
        parse_cpulist,
        with_isolation,
    )

    notes = []
    path = args.profile
    if path is None and (args.root / DEFAULT_PROFILE_PATH.relative_to("/")).exists():
        path = args.root / DEFAULT_PROFILE_PATH.relative_to("/")
    if path is not None:
        profile = load_profile(path)
        notes.append(f"profile: {path}")
    else:
        online_text = (args.root / "sys/devices/system/cpu/online").read_text() if args.root.exists() else "0"
        profile = builtin_profile(parse_cpulist(online_text))
        notes.append(
            f"profile: none written at {DEFAULT_PROFILE_PATH} (the playbook writes it); checking the built-in "
            "default: every CPU but the first isolated"
        )
    update: dict = {}
    if args.isolated_cpus is not None or args.housekeeping_cpus is not None:
        profile = with_isolation(
            profile,
            profile.isolated_cpus if args.isolated_cpus is None else args.isolated_cpus,
            profile.housekeeping_cpus if args.housekeeping_cpus is None else args.housekeeping_cpus,
        )
        notes.append("CPU lists overridden on the command line (isolation boot parameters to match)")
    if args.governor is not None:
        update["governor"] = args.governor or None
    if args.thp is not None:
        update["thp"] = args.thp
    if args.max_cstate is not None:
        update["max_cstate"] = None if args.max_cstate < 0 else args.max_cstate
    if args.sysctl:
        sysctl = dict(profile.sysctl)
        for pair in args.sysctl:
            name, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"--sysctl {pair!r}: expected NAME=VALUE")
            sysctl[name.strip()] = value.strip()
        update["sysctl"] = sysctl
    if update:
        profile = HostProfile.model_validate({**profile.model_dump(), **update})
        notes.append("overridden on the command line: " + ", ".join(sorted(update)))
    return profile, notes


def _check(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from quayside.core.host.check import HostFS, Status, check_host, summary
    from quayside.core.host.profile import ProfileError

    try:
        profile, notes = _profile(args)
    except (ProfileError, ValidationError, ValueError, OSError) as exc:
        print(f"quayside host check: {exc}", file=sys.stderr)
        return 2
    checks = check_host(profile, HostFS(args.root))
    totals = summary(checks)
    failed = totals[Status.FAIL.value] > 0
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not failed,
                    "notes": notes,
                    "totals": totals,
                    "checks": [
                        {"item": c.item, "status": c.status.value, "detail": c.detail, "fix": c.fix} for c in checks
                    ],
                },
                indent=2,
            )
        )
        return 1 if failed else 0
    for note in notes:
        print(f"# {note}")
    width = max((len(c.item) for c in checks), default=10)
    for c in checks:
        if args.quiet and c.status != Status.FAIL:
            continue
        print(f"{c.status.value}  {c.item:<{width}}  {c.detail}")
        if c.status == Status.FAIL and c.fix:
            print(f"      {'':<{width}}  fix: {c.fix}")
    verdict = "tuned as intended" if not failed else "NOT tuned as intended"
    print(
        f"host check: {verdict} ({totals['PASS']} PASS, {totals['FAIL']} FAIL, {totals['SKIP']} SKIP)",
    )
    return 1 if failed else 0


def _record(args: argparse.Namespace) -> int:
    from quayside.core.host.check import record_tree
    from quayside.core.host.profile import ProfileError

    try:
        profile, _ = _profile(args)
    except (ProfileError, ValueError, OSError) as exc:
        print(f"quayside host record: {exc}", file=sys.stderr)
        return 2
    copied = record_tree(profile, args.dest, args.root)
    print(f"recorded {len(copied)} files into {args.dest}")
    return 0
