"""Bind a strategy into the engine kernels, so that it is compiled into (and cached with) them.

numba inlines a jitted function called through a module global, but not one passed as an
argument (that costs a function-pointer call and reference counting per call: measured at about
25 times the cost of the inlined call). And numba's cache cannot key a kernel on a function
argument at all. So each strategy gets its own copy of the kernel modules that call it:
``core/engine/nb.py`` and ``core/replay/nb.py`` are templates whose lines tagged
``strategy-binding`` (and ``engine-binding``) are rewritten to import the chosen strategy (and
the matching engine module). The copies are written once into the kernel cache folder, named by a
hash of every source they depend on, so editing a strategy gives a fresh compile instead of a
stale cache hit. The built-in crossover goes the same way: numba's own cache checks only the file
that defines a kernel, so the templates' cache would keep serving code inlined from an older
``risk/nb.py`` or ``replay/venue_nb.py`` after those files change.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import py_compile
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numba

from quayside import __version__
from quayside.core.strategies.base import load_strategy_module

__all__ = ["Kernels", "bind", "kernel_cache_dir"]

_TEMPLATES = {"engine": "quayside.core.engine.nb", "replay": "quayside.core.replay.nb"}
# every module whose code the generated kernels inline, for the cache key
_DEPENDENCIES = [
    "quayside.core.wire",
    "quayside.core.engine.state",
    "quayside.core.risk.nb",
    "quayside.core.feed.nb",
    "quayside.core.feed.atomics",
    "quayside.core.feed.idle",
    "quayside.core.replay.venue_nb",
    "quayside.core.replay.venue",  # index constants the venue kernels fold in
    "quayside.core.feed.segment",  # ring header word indices
    "quayside.core.jit",
]


class Kernels(NamedTuple):
    """The engine and replay kernel modules bound to one strategy, and the strategy itself."""

    strategy: ModuleType
    engine: ModuleType
    replay: ModuleType


def kernel_cache_dir() -> Path:
    """``$QUAYSIDE_CACHE_DIR/kernels``, by default ``~/.cache/quayside/kernels``."""
    base = os.environ.get("QUAYSIDE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "quayside"
    )
    return Path(base) / "kernels"


def bind(strategy_ref: str) -> Kernels:
    """The kernels for strategy ``strategy_ref`` (built-in name, module path or ``.py`` file)."""
    strategy = load_strategy_module(strategy_ref)
    key = hashlib.sha256()
    for part in (__version__, numba.__version__, inspect.getsource(strategy)):
        key.update(part.encode())
    for name in [*_TEMPLATES.values(), *_DEPENDENCIES]:
        key.update(inspect.getsource(importlib.import_module(name)).encode())
    digest = key.hexdigest()[:16]
    slug = re.sub(r"\W", "_", strategy.NAME)[:32]
    engine_name = f"quayside_kernels_engine_{slug}_{digest}"
    replay_name = f"quayside_kernels_replay_{slug}_{digest}"
    engine = _generate(engine_name, _TEMPLATES["engine"], {"strategy-binding": strategy.__name__})
    replay = _generate(replay_name, _TEMPLATES["replay"], {"engine-binding": engine_name})
    return Kernels(strategy, engine, replay)


def _generate(name: str, template: str, bindings: dict[str, str]) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    source = inspect.getsource(importlib.import_module(template))
    lines = []
    for line in source.splitlines():
        for tag, module in bindings.items():
            if line.rstrip().endswith(f"# {tag}"):
                line = re.sub(r"^from [\w.]+ import", f"from {module} import", line)
        lines.append(line)
    header = f"# Generated from {template} by quayside.core.engine.binding; do not edit.\n"
    text = header + "\n".join(lines) + "\n"
    folder = kernel_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    _compile_bytecode(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _compile_bytecode(path: Path) -> None:
    """Write the module's ``.pyc`` now, whatever ``PYTHONDONTWRITEBYTECODE`` says: the engine
    imports these modules on every start, and compiling their source each time costs start-up
    time (the installed packages have theirs from the installer)."""
    cached = Path(importlib.util.cache_from_source(str(path)))
    try:
        if cached.exists() and cached.stat().st_mtime >= path.stat().st_mtime:
            return
        py_compile.compile(str(path), cfile=str(cached), doraise=True)
    except (OSError, py_compile.PyCompileError):
        pass  # a read-only cache folder: the import compiles in memory instead
