"""Every benchmark in one run: one table, one JSON file, plots, and a comparison with an earlier run.

    python -m benchmarks.suite [--quick] [--only MODULE,...] [--out DIR] [--compare OLD.json]
    quayside bench ...        (the same, from anywhere in the checkout)

Each module (``benchmarks/<name>.py``: feed, engine, broker, support, containers, dashboard,
peers) runs in its own process with ``--quick`` and ``--out DIR/<name>.json``; one that is
missing or cannot run here is SKIPPED with the reason, one that crashes loses only its own
results. Before anything runs, the tuning verifier (``quayside host check``) says whether this
host has isolated CPUs; the two CPUs every module pins to (``QUAYSIDE_BENCH_CPUS``) are chosen
from them. ``DIR/suite.json`` holds the machine (CPU, kernel, Python, numpy, numba, commit and
whether the tree was dirty), the host's verdicts, every module's outcome and result, and the
comparison; ``DIR/plots/`` holds the PNGs. Exit status: 1 when a module crashed, timed out or
had errors, or when ``--compare`` found a regression; 2 for bad options; else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import _suite_compare, _suite_table
from benchmarks._common import CPUS_ENV, SCHEMA, jsonable, machine_info
from benchmarks._suite_run import FAILED, run_module
from quayside.bench import MODULES, add_arguments

__all__ = ["run", "main", "build_parser"]

ROOT = Path(__file__).resolve().parents[1]


class UsageError(ValueError):
    """Bad options or an unreadable input file: exit 2 with the message."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return p


def _selected(only: str | None, modules: dict[str, str]) -> list[str]:
    if not only:
        return list(modules)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in modules]
    if unknown or not names:
        raise UsageError(
            f"--only {only!r}: unknown module(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(modules)}"
        )
    return names


def _load(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text())
        return _suite_compare.as_suite(doc)
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{what} {path}: not a benchmark result ({exc})") from None


def _machine_notes(doc: dict) -> list[str]:
    """What this machine is, said beside every latency figure."""
    m, host, cpus = doc.get("machine") or {}, doc.get("host") or {}, doc.get("cpus") or {}
    out = [
        f"machine: {m.get('cpu_model')}, {m.get('cpu_count')} CPUs, kernel {m.get('kernel')}, Python {m.get('python')}, "
        f"numpy {m.get('numpy')}, numba {m.get('numba')}; commit {str(m.get('git_commit'))[:10]}"
        + (" (with uncommitted changes)" if m.get("git_dirty") else "")
    ]
    check = host.get("host_check") or {}
    iso = check.get("isolated")
    if host.get("isolated_cpus"):
        out.append(f"isolated CPUs: {host['isolated_cpus']} (quayside host check: {iso and iso['status']})")
    elif host:
        out.append(
            "no isolated CPUs (quayside host check: "
            + (f"{iso['status']}: {iso['detail']}" if iso else check.get("error", "not run"))
            + "): every CPU is shared with everything else on this machine, so latency tails (p99 and beyond) "
            "include preemptions; read the p50 beside them"
        )
    if cpus:
        out.append(f"pinned to CPUs {cpus['a']} and {cpus['b']}: {cpus['why']}")
    return out


def _print(doc: dict, markdown: bool) -> None:
    print()
    if markdown:
        print(_suite_table.format_markdown(doc))
        print()
        print(_suite_table.targets_markdown(doc))
        return
    print(_suite_table.format_text(doc))
    print()
    print(_suite_table.targets_text(doc))
    for m in doc["modules"]:
        if m["status"] != "OK":
            print(f"{m['status']}: {m['name']}: {m['reason']}" + (f" (log: {m['log']})" if m.get("log") else ""))
        for note in (doc["results"].get(m["name"]) or {}).get("notes") or []:
            print(f"note: {m['name']}: {note}")
    for note in _machine_notes(doc):
        print(f"note: {note}")


def _measure(args: argparse.Namespace, root: Path, out_dir: Path, modules: dict[str, str], python_path) -> dict:
    from benchmarks._suite_host import choose_cpus, host_facts

    names = _selected(args.only, modules)
    host = host_facts()
    try:
        cpus = choose_cpus(host, args.cpus)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    started = time.time()
    machine = machine_info(root)
    outcomes = []
    for name in names:
        outcome = run_module(
            name,
            modules[name],
            out_dir,
            ["--quick"] if args.quick else [],
            root=root,
            env={CPUS_ENV: f"{cpus['a']},{cpus['b']}"},
            timeout=args.timeout,
            python_path=python_path,
        )
        print(f"  {name}: {outcome.status} in {outcome.seconds:.1f} s {outcome.reason}".rstrip(), file=sys.stderr)
        outcomes.append(outcome)
    return {
        "schema": SCHEMA,
        "benchmark": "suite",
        "quick": args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine,
        "host": host,
        "cpus": cpus,
        "modules": [o.summary() for o in outcomes],
        "results": {o.name: o.result for o in outcomes if o.result is not None},
    }


def run(
    args: argparse.Namespace,
    root: Path = ROOT,
    *,
    modules: dict[str, str] | None = None,
    python_path: list[Path] = (),
) -> int:
    """The suite as parsed from the command line. ``modules`` (name -> importable module, default
    ``benchmarks.<name>`` for each of ``MODULES``) and ``python_path`` let a test run modules of
    its own through the same machinery."""
    modules = modules or {name: f"benchmarks.{name}" for name in MODULES}
    try:
        if args.tolerance < 0:
            raise UsageError(f"--tolerance {args.tolerance}: must be 0 or more")
        old = _load(args.compare, "--compare") if args.compare else None
        if args.load:
            doc = _load(args.load, "--load")
            out_dir = args.out or args.load.resolve().parent
        else:
            out_dir = (args.out or root / "benchmarks" / "results").resolve()
            out_dir.mkdir(parents=True, exist_ok=True)
            doc = _measure(args, root, out_dir, modules, python_path)
    except UsageError as exc:
        print(f"quayside bench: {exc}", file=sys.stderr)
        return 2
    _print(doc, args.markdown)
    if not args.no_plots:
        from benchmarks._suite_plots import write_plots

        plots = write_plots(doc, out_dir / "plots")
        doc["plots"] = [str(p.relative_to(out_dir)) for p in plots]
        print(f"plots: {len(plots)} PNG files in {out_dir / 'plots'}", file=sys.stderr)
    regressions = 0
    if old is not None:
        doc["comparison"] = c = _suite_compare.compare(old, doc, args.tolerance)
        print()
        print(_suite_compare.format_comparison(c))
        regressions = c["regressions"]
    if not args.load:
        path = out_dir / "suite.json"
        path.write_text(json.dumps(doc, indent=2, default=jsonable) + "\n")
        print(f"wrote {path} ({doc['seconds']} s)", file=sys.stderr)
    failed = [m["name"] for m in doc["modules"] if m["status"] in FAILED]
    return 1 if failed or regressions else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("\ninterrupted: the running module was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
