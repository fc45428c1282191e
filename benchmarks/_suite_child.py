"""One benchmark module in its own process, for the suite:

    python -m benchmarks._suite_child NAME MODULE OUT.json [ARG ...]

imports ``MODULE`` and calls its ``main([ARG ..., "--out", OUT.json])``. A module that is not
there yet, one that needs a package that is not installed, or one that raises
:class:`benchmarks._common.Skip` leaves a result saying SKIPPED and why, instead of a crash.
Anything else it raises is a crash: the traceback goes to stderr, which the suite keeps.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from benchmarks._common import Skip, skipped

#: Packages of this repository: a missing one of these is a bug, not an absent prerequisite.
OWN = ("benchmarks", "quayside")


def _missing(exc: ModuleNotFoundError, module: str) -> str | None:
    """Why this import error means "cannot run here" (None: it is a bug)."""
    name = exc.name or ""
    if name == module or module.startswith(name + "."):
        return f"{module} does not exist (yet)"
    if name and name.split(".")[0] not in OWN:
        return f"needs the Python package {name.split('.')[0]!r}, which is not installed"
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: python -m benchmarks._suite_child NAME MODULE OUT.json [ARG ...]", file=sys.stderr)
        return 2
    name, module, out, *rest = argv
    out_path = Path(out)
    try:
        mod = importlib.import_module(module)
        if not callable(getattr(mod, "main", None)):
            print(f"{module} has no main(argv) function", file=sys.stderr)
            return 2
        return int(mod.main([*rest, "--out", out]) or 0)
    except Skip as exc:
        return skipped(out_path, name, str(exc))
    except ModuleNotFoundError as exc:
        why = _missing(exc, module)
        if why is None:
            raise
        return skipped(out_path, name, why)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
