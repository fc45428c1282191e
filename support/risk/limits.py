"""The engine's risk limits, as the risk monitor sees them: the same table the engine checks.

**Where they come from.** The monitor reads the ``[risk]`` table of the *engine's own
configuration file* (``risk.engine_config``): the file the engine validated and runs with is
the single source of truth, so the two cannot drift apart. Where that file is not at hand (a
monitor on another host reading the UDP feed), the same table can be given inline in the
monitor's settings (``[risk.limits]``, the engine's schema). Either way it is validated by
:class:`EngineRiskLimits`, which is the engine's own ``RiskConfig`` (its module imports no
numba), and the table is written by the engine's own ``write_limit_table``.

**Changes at run time.** Every SET_LIMIT the engine applies appears on the feed as a
LIMIT_CHANGED log record (instrument in the header, ``i0`` = LimitId, ``a1`` = new value), which
:meth:`LimitTable.on_limit_changed` applies, so the table follows the engine's.

The table is the engine's layout: row 0 holds the global values, an instrument row overrides
them where it is not NaN; ``inf`` means no limit. Times are in ns.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from quayside.core.instruments import InstrumentRegistry
from quayside.core.risk.config import InstrumentLimits, RiskConfig, write_limit_table
from quayside.core.wire import LimitId, enum_name

__all__ = [
    "EngineRiskLimits",
    "InstrumentLimits",
    "LimitTable",
    "load_engine_limits",
    "N_LIMITS",
    "WINDOW_LIMITS",
    "ratio",
    "limit_row",
    "finite_or_none",
]

N_LIMITS = max(LimitId) + 1
#: limits that are the length of a window, not a capacity to use up
WINDOW_LIMITS = frozenset({LimitId.MESSAGE_WINDOW_NS, LimitId.FILL_LATCH_WINDOW_NS, LimitId.DUPLICATE_WINDOW_NS})


# The engine's own schema: core/risk/config.py imports no numba, so the support side reads the
# engine's [risk] table with exactly the engine's fields, defaults and bounds.
EngineRiskLimits = RiskConfig


def load_engine_limits(path: str | Path) -> EngineRiskLimits:
    """The ``[risk]`` table of the engine configuration file ``path`` (the rest is the engine's
    business and not read). ValueError naming the file and the field if it is invalid."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such engine configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    try:
        return EngineRiskLimits.model_validate(data.get("risk", {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path} [risk]: {problems}") from None


class LimitTable:
    """``value(iid, limit)`` as the engine's ``limit_nb`` computes it."""

    def __init__(self, limits: EngineRiskLimits, registry: InstrumentRegistry):
        unknown = [s for s in limits.instruments if s not in registry]
        if unknown:
            raise ValueError(f"risk limits name instruments not in the registry: {', '.join(sorted(unknown))}")
        size = max((i.id for i in registry), default=0) + 1
        self.config = limits
        self.table = np.empty((size, N_LIMITS))
        write_limit_table(self.table, limits, registry)
        self.changes = 0

    def value(self, iid: int, limit_id: int) -> float:
        if not 0 <= iid < len(self.table):
            iid = 0
        v = self.table[iid, limit_id]
        return float(self.table[0, limit_id]) if math.isnan(v) else float(v)

    def on_limit_changed(self, iid: int, limit_id: int, value: float) -> bool:
        """Apply a LIMIT_CHANGED the engine reported; False if it is not a limit of this table."""
        if not (0 < limit_id < N_LIMITS and 0 <= iid < len(self.table)):
            return False
        self.table[iid, limit_id] = value
        self.changes += 1
        return True

    @staticmethod
    def name(limit_id: int) -> str:
        return enum_name(LimitId, limit_id)


def ratio(used, limit) -> float | None:
    """``used / limit``: None if either is unknown, 0 against no limit (inf)."""
    if used is None or limit is None or math.isnan(used) or math.isnan(limit):
        return None
    if math.isinf(limit):
        return 0.0
    if limit <= 0.0:
        return math.inf if used > 0.0 else 0.0
    return float(used) / float(limit)


def finite_or_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def limit_row(lid: int, iid: int, symbol: str, value: float, used, util, peak) -> dict:
    """One limit's line in the risk report."""
    return {
        "limit": enum_name(LimitId, lid),
        "limit_id": int(lid),
        "instrument": symbol,
        "instrument_id": iid,
        "value": float(value),
        "unlimited": math.isinf(value),
        "used": used,
        "utilisation": util,
        "peak_today": peak,
    }
