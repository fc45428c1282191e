"""The engine's risk limits, as the risk monitor sees them: the same table the engine checks.

**Where they come from.** The monitor reads the ``[risk]`` table of the *engine's own
configuration file* (``risk.engine_config``): the file the engine validated and runs with is
the single source of truth, so the two cannot drift apart. Where that file is not at hand (a
monitor on another host reading the UDP feed), the same table can be given inline in the
monitor's settings (``[risk.limits]``, the engine's schema). Either way it is validated by
:class:`EngineRiskLimits`, a copy of the engine's ``RiskConfig`` schema (support images do not
import the engine's packages); a test checks that both schemas give the same limit table.

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
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from quayside.core.instruments import InstrumentRegistry
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
_MS = 1_000_000
#: limits that are the length of a window, not a capacity to use up
WINDOW_LIMITS = frozenset({LimitId.MESSAGE_WINDOW_NS, LimitId.FILL_LATCH_WINDOW_NS, LimitId.DUPLICATE_WINDOW_NS})


class InstrumentLimits(BaseModel):
    """Per-instrument limits (the engine's schema: unset fields inherit ``defaults``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_order_qty: float | None = Field(default=None, gt=0)
    max_order_notional: float | None = Field(default=None, gt=0)
    price_collar_pct: float | None = Field(default=None, gt=0)
    price_collar_ticks: float | None = Field(default=None, gt=0)
    max_long_position: float | None = Field(default=None, ge=0)
    max_short_position: float | None = Field(default=None, ge=0)
    stale_quote_ms: float | None = Field(default=None, gt=0)


_DEFAULT_LIMITS = InstrumentLimits(
    max_order_qty=100.0,
    max_order_notional=1_000_000.0,
    price_collar_pct=5.0,
    price_collar_ticks=math.inf,
    max_long_position=500.0,
    max_short_position=500.0,
    stale_quote_ms=5_000.0,
)


class EngineRiskLimits(BaseModel):
    """The engine's ``[risk]`` table (same fields, defaults and bounds as the engine's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: InstrumentLimits = _DEFAULT_LIMITS
    instruments: dict[str, InstrumentLimits] = Field(default_factory=dict)
    allow: list[str] | None = None
    collar_reference: Literal["mid", "last"] = "mid"
    max_messages_per_window: int = Field(default=45, ge=1, le=512)
    message_window_ms: float = Field(default=1_000.0, gt=0)
    duplicate_window_ms: float = Field(default=20.0, ge=0)
    fill_latch_count: int = Field(default=100, ge=1, le=512)
    fill_latch_window_ms: float = Field(default=1_000.0, gt=0)
    initial_state: Literal["ACTIVE", "REDUCING", "HALTED"] = "ACTIVE"

    @field_validator("defaults")
    @classmethod
    def _complete(cls, v: InstrumentLimits) -> InstrumentLimits:
        merged = _DEFAULT_LIMITS.model_dump() | {k: x for k, x in v.model_dump().items() if x is not None}
        return InstrumentLimits(**merged)


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
        self.table = np.full((size, N_LIMITS), np.nan)
        _write_row(self.table[0], limits.defaults)
        row0 = self.table[0]
        row0[LimitId.MAX_MESSAGES_PER_WINDOW] = limits.max_messages_per_window
        row0[LimitId.MESSAGE_WINDOW_NS] = limits.message_window_ms * _MS
        row0[LimitId.DUPLICATE_WINDOW_NS] = limits.duplicate_window_ms * _MS
        row0[LimitId.FILL_LATCH_COUNT] = limits.fill_latch_count
        row0[LimitId.FILL_LATCH_WINDOW_NS] = limits.fill_latch_window_ms * _MS
        for symbol, lim in limits.instruments.items():
            _write_row(self.table[registry.by_symbol(symbol).id], lim)
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


def _write_row(row: np.ndarray, lim: InstrumentLimits) -> None:
    for field, limit_id, scale in [
        ("max_order_qty", LimitId.MAX_ORDER_QTY, 1.0),
        ("max_order_notional", LimitId.MAX_ORDER_NOTIONAL, 1.0),
        ("price_collar_pct", LimitId.PRICE_COLLAR_PCT, 1.0),
        ("price_collar_ticks", LimitId.PRICE_COLLAR_TICKS, 1.0),
        ("max_long_position", LimitId.MAX_LONG_POSITION, 1.0),
        ("max_short_position", LimitId.MAX_SHORT_POSITION, 1.0),
        ("stale_quote_ms", LimitId.STALE_QUOTE_NS, _MS),
    ]:
        value = getattr(lim, field)
        if value is not None:
            row[limit_id] = value * scale


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
