"""``quayside bench``: every benchmark in one run, one table, JSON results, plots, and a
comparison with an earlier run that fails on a regression.

The benchmarks live in the source checkout (``benchmarks/``), not in the installed package: this
command finds the checkout from the current directory (or, failing that, from where this package
was installed from in editable mode) and runs ``benchmarks/suite.py`` there. The options are
defined here, once, so that ``quayside bench --help`` works anywhere and ``python -m
benchmarks.suite`` takes exactly the same ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["MODULES", "register", "add_arguments", "find_checkout", "CheckoutNotFound"]

#: The benchmark modules, in the order they run (``benchmarks/<name>.py``).
MODULES = ("feed", "engine", "broker", "support", "containers", "dashboard", "peers")


class CheckoutNotFound(RuntimeError):
    """``quayside bench`` was run outside a source checkout."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="every module's --quick: fewer iterations (minutes, not tens)")
    p.add_argument(
        "--only",
        metavar="MODULE,...",
        help=f"run only these modules (default: all of {', '.join(MODULES)})",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder for suite.json, each module's <name>.json and log, and plots/ (default: benchmarks/results)",
    )
    p.add_argument(
        "--compare",
        type=Path,
        metavar="OLD.json",
        help="compare with an earlier suite.json (or one module's JSON); exit 1 on a regression beyond the tolerance",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.25,
        metavar="F",
        help="a figure regressed when it is worse by more than this fraction and more than its own run-to-run "
        "spread (default: 0.25)",
    )
    p.add_argument(
        "--load",
        type=Path,
        metavar="SUITE.json",
        help="run nothing: print, plot and compare this earlier suite.json instead",
    )
    p.add_argument("--markdown", action="store_true", help="print the tables in Markdown (for docs/performance.md)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--cpus",
        metavar="A,B",
        help="pin the two sides of each benchmark (producer/initiator, reader/engine) to these CPUs "
        "(default: isolated CPUs when `quayside host check` finds them, else 0,1)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="S",
        help="stop a module that runs longer than this many seconds (default: 3600)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmark suite (from a source checkout): one table, JSON, plots, regressions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _is_checkout(path: Path) -> bool:
    return (path / "benchmarks" / "suite.py").is_file() and (path / "pyproject.toml").is_file()


def find_checkout(start: Path | None = None) -> Path:
    """The source checkout holding ``benchmarks/``: the current directory or one above it, else
    the folder this package was installed from (an editable install)."""
    start = (start or Path.cwd()).resolve()
    for path in (start, *start.parents):
        if _is_checkout(path):
            return path
    installed = Path(__file__).resolve().parents[1]
    if _is_checkout(installed):
        return installed
    raise CheckoutNotFound(
        f"no benchmarks/suite.py in {start} or above it, nor beside the installed package ({installed}): "
        "the benchmarks live in the source checkout, not in the installed package; run `quayside bench` "
        "from a clone of the repository"
    )


def _run(args: argparse.Namespace) -> int:
    try:
        root = find_checkout()
    except CheckoutNotFound as exc:
        print(f"quayside bench: {exc}", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.suite import run

    return run(args, root)
