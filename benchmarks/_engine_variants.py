"""Where the replay loop's time goes: copies of the bound engine and replay kernel modules with
one piece taken out, timed on the same events. A measurement, not a change: the real modules
are untouched, and a variant's results (orders, fills) are not the real ones.

The copies are generated the way :mod:`quayside.core.engine.binding` generates the real ones
(the same templates, the same strategy binding), with exact text edits; an edit that no longer
matches its template raises, so a variant never silently measures the unmodified code. They are
written next to the real generated modules (the kernel cache folder), named by a hash of their
text, so numba's cache keeps them between runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from types import ModuleType

from quayside.core.engine.binding import kernel_cache_dir

__all__ = ["Variant", "VARIANTS", "load_variant"]

_ENGINE = "quayside.core.engine.nb"
_REPLAY = "quayside.core.replay.nb"


@dataclass(frozen=True)
class Variant:
    name: str
    removes: str  # what the variant takes out, for the table
    engine_edits: tuple[tuple[str, str], ...] = ()
    replay_edits: tuple[tuple[str, str], ...] = ()


_PUBLISH_BODY = (
    "    pos = feed_claim_nb(r.feed_words, 1)\n"
    "    slot = pos & (r.feed_slots.shape[0] - 1)\n"
    "    for w in range(8):\n"
    "        r.feed_slots[slot, w] = src[row, w]\n"
    "    r.feed_slots[slot, 1] = pos\n"
    "    feed_commit_nb(r.feed_words, pos + 1)\n"
)
_STRATEGY_CALL = (
    "        n = strategy_on_quote_nb(a.params, a.sstate, a.inst, a.static, a.orders, iid, ts_seen, a.intents)\n"
)
_CONTROL_BRANCH = "    elif kind == RecordKind.CONTROL:\n        handle_control_nb(a, r, inb, row, ts_seen)\n"
_RISK_CALL = "    reason, limit = check_new_order_nb(a, iid, side, order_type, price, qty, ts_decided)\n"
_VENUE_QUOTE = "            market_event_nb(v, a, ev, iv, t_v)\n"
_EQUITY = "        if t >= c[C_NEXT_EQUITY_T]:\n            _sample_equity(v, a.static, a.inst, t)\n"
_RETRY = (
    "    if a.engine[0].pending_cancels > 0:\n"
    "        _retry_cancels_nb(a.engine, a.orders, a.cancel_rec, a.cancel_words, a.msg_times, r, ts_seen)\n"
)

#: Each variant removes one piece of the per-event work.
VARIANTS = (
    Variant(
        "no_feed",
        "feed publish (every record the engine sees or makes)",
        engine_edits=((_PUBLISH_BODY, "    return\n"),),
    ),
    Variant(
        "no_strategy", "strategy call (EMAs, signal, intents)", engine_edits=((_STRATEGY_CALL, "        n = 0\n"),)
    ),
    Variant(
        "no_risk",
        "pre-trade risk check (orders go straight out)",
        engine_edits=((_RISK_CALL, "    reason, limit = 0, 0.0\n"),),
    ),
    Variant(
        "no_control_branch",
        "the never-taken CONTROL branch of process_record_nb (a call with the whole state)",
        engine_edits=((_CONTROL_BRANCH, ""),),
    ),
    Variant(
        "no_cancel_retry_check",
        "the pending-cancel check after every record (never true here)",
        engine_edits=((_RETRY, ""),),
    ),
    Variant(
        "no_equity", "equity sampling (its check after every step, a sample per minute)", replay_edits=((_EQUITY, ""),)
    ),
)


def _edit(source: str, edits: tuple[tuple[str, str], ...], what: str) -> str:
    for old, new in edits:
        count = source.count(old)
        if count != 1:
            raise RuntimeError(f"variant edit of {what} matches {count} times (the template changed): {old.strip()!r}")
        source = source.replace(old, new)
    return source


def _bind(source: str, tag: str, module: str) -> str:
    lines = []
    for line in source.splitlines():
        if line.rstrip().endswith(f"# {tag}"):
            line = re.sub(r"^from [\w.]+ import", f"from {module} import", line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _dependencies_key() -> str:
    """numba's cache checks only the file that defines a kernel: like ``binding.bind``, name the
    copies by every source they inline, so an edit there gives a fresh compile."""
    import numba

    from quayside.core.engine import binding

    key = hashlib.sha256(numba.__version__.encode())
    for name in binding._DEPENDENCIES:
        key.update(inspect.getsource(importlib.import_module(name)).encode())
    return key.hexdigest()


def _write_module(stem: str, text: str) -> ModuleType:
    digest = hashlib.sha256((text + _dependencies_key()).encode()).hexdigest()[:16]
    name = f"quayside_bench_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = kernel_cache_dir() / "bench-variants"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_variant(variant: Variant, strategy: ModuleType) -> ModuleType:
    """The replay kernel module of ``variant``, bound to ``strategy``."""
    engine_src = inspect.getsource(importlib.import_module(_ENGINE))
    engine_src = _edit(engine_src, variant.engine_edits, _ENGINE)
    engine_src = _bind(engine_src, "strategy-binding", strategy.__name__)
    engine_src += f"# strategy source hash {hashlib.sha256(inspect.getsource(strategy).encode()).hexdigest()}\n"
    engine = _write_module(f"engine_{variant.name}", engine_src)
    replay_src = inspect.getsource(importlib.import_module(_REPLAY))
    replay_src = _edit(replay_src, variant.replay_edits, _REPLAY)
    replay_src = _bind(replay_src, "engine-binding", engine.__name__)
    return _write_module(f"replay_{variant.name}", replay_src)
