"""The strategy interface, and how a strategy module is found and checked.

A strategy is a Python module with:

``NAME``
    A short name for logs and results.
``Params``
    A pydantic model (frozen, ``extra="forbid"``) of its parameters. Errors in it are
    reported before anything runs.
``STATE_WIDTH``
    How many float64 numbers of private state it keeps per instrument.
``params_array(params, registry, instruments) -> np.ndarray``
    Its parameters as a float64 array (the kernels get arrays, not objects).
``on_quote_nb(params, sstate, inst, static, orders, iid, now, intents) -> int``
    ``@kernel`` (``quayside.core.jit``). Called after every quote of a traded instrument ``iid``, with the
    engine's state already updated. It writes order intents into ``intents`` (an array of
    ``intent_dtype``, ``len(intents)`` at most) and returns how many it wrote.
``on_fill_nb(params, sstate, inst, static, orders, iid, quantity, price, now, intents) -> int``
    ``@kernel`` (``quayside.core.jit``). Called after a fill of one of its orders (signed ``quantity``).

The arguments, all owned by the engine:

- ``params`` — float64 array from ``params_array``.
- ``sstate`` — float64 ``[instrument_id, STATE_WIDTH]``, the strategy's own memory, zeroed at start.
- ``inst`` — ``inst_state_dtype`` per instrument id: ``bid``, ``ask``, ``bid_size``,
  ``ask_size``, ``last_price``, ``position``, ``working_buy``, ``working_sell``,
  ``buy_order_id``/``sell_order_id`` (the newest working order per side, 0 if none)… Read only.
- ``static`` — ``inst_static_dtype``: ``tick_size``, ``lot_size``, ``multiplier``. Read only.
- ``orders`` — working orders, ``order_slot_dtype``, slot ``order_id % len(orders)``. Read only.
- ``now`` — the engine clock in ns (wall clock live, event time in replay).

An intent is ``(action, instrument_id, side, order_type, tif, price, quantity, order_id)``:
``IntentAction.NEW`` with side/type/tif/price/quantity, or ``IntentAction.CANCEL`` with
``order_id``. Every NEW intent goes through pre-trade risk; a strategy cannot bypass it. The
same module runs unchanged live and in replay; only the clock and the venue differ.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel, ValidationError

__all__ = ["BUILTIN", "StrategyError", "load_strategy_module", "validate_params"]

BUILTIN = {
    "crossover": "quayside.core.strategies.crossover",
    "market_maker": "quayside.core.strategies.market_maker",
}

_REQUIRED = ("NAME", "Params", "STATE_WIDTH", "params_array", "on_quote_nb", "on_fill_nb")


class StrategyError(ValueError):
    """A strategy cannot be loaded or its configuration is invalid."""


def load_strategy_module(ref: str) -> ModuleType:
    """A built-in name (``crossover``), a module path (``mypkg.mystrat``) or a ``.py`` file."""
    target = BUILTIN.get(ref, ref)
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            name = f"quayside_user_strategy_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None or not path.exists():
                raise StrategyError(f"strategy file {target} does not exist")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        known = ", ".join(sorted(BUILTIN))
        raise StrategyError(f"cannot import strategy {ref!r} ({exc}); built-in strategies: {known}") from None
    missing = [name for name in _REQUIRED if not hasattr(module, name)]
    if missing:
        raise StrategyError(f"strategy {ref!r} lacks {', '.join(missing)} (see quayside.core.strategies.base)")
    return module


def validate_params(module: ModuleType, raw: dict) -> BaseModel:
    """The strategy's ``Params`` from configuration, or a :class:`StrategyError` naming each bad field."""
    try:
        return module.Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors())
        raise StrategyError(f"strategy {module.NAME!r} parameters: {problems}") from None
