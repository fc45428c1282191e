"""Risk limits: one validated schema, applied to the engine's limit matrix.

Every default is here, in one place. Quantities are in the instrument's units (shares,
contracts, base currency), notionals in the account currency, times in milliseconds. A limit
may be ``inf`` ("no limit") only where that is written explicitly in the configuration.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from quayside.core.instruments import InstrumentRegistry
from quayside.core.wire import LimitId

__all__ = ["InstrumentLimits", "RiskConfig", "apply_risk"]

_MS = 1_000_000


class InstrumentLimits(BaseModel):
    """Per-instrument limits; in ``instruments`` overrides, unset fields inherit ``defaults``."""

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


class RiskConfig(BaseModel):
    """Pre-trade risk for one engine. See docs/ for what each control does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: InstrumentLimits = _DEFAULT_LIMITS
    instruments: dict[str, InstrumentLimits] = Field(default_factory=dict, description="overrides by symbol")
    allow: list[str] | None = Field(default=None, description="symbols allowed to trade; None = the strategy's")
    collar_reference: Literal["mid", "last"] = "mid"
    max_messages_per_window: int = Field(default=45, ge=1, le=512, description="IB allows 50 messages/s")
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


def apply_risk(a, risk: RiskConfig, registry: InstrumentRegistry, traded: list[str]) -> None:
    """Write ``risk`` into the engine arrays ``a`` (limits, allow-list, collar reference)."""
    from quayside.core.wire import TradingState

    unknown = [s for s in [*risk.instruments, *(risk.allow or [])] if s not in registry]
    if unknown:
        raise ValueError(f"risk configuration names instruments not in the registry: {', '.join(sorted(unknown))}")
    write_limit_table(a.limits, risk, registry)
    allowed = traded if risk.allow is None else risk.allow
    a.static["allowed"] = 0
    for symbol in allowed:
        a.static[registry.by_symbol(symbol).id]["allowed"] = 1
    a.engine[0]["collar_ref_last"] = int(risk.collar_reference == "last")
    a.engine[0]["trading_state"] = getattr(TradingState, risk.initial_state)


def write_limit_table(table: np.ndarray, risk: RiskConfig, registry: InstrumentRegistry) -> None:
    """The limit table as the engine holds it (instrument id x LimitId, engine units): row 0 the
    defaults and the account-wide limits, an instrument's row its overrides, NaN = inherit row 0.
    The risk monitor and the dashboard build theirs with this too."""
    table[:] = np.nan
    _write_row(table[0], risk.defaults)
    row0 = table[0]
    row0[LimitId.MAX_MESSAGES_PER_WINDOW] = risk.max_messages_per_window
    row0[LimitId.MESSAGE_WINDOW_NS] = risk.message_window_ms * _MS
    row0[LimitId.DUPLICATE_WINDOW_NS] = risk.duplicate_window_ms * _MS
    row0[LimitId.FILL_LATCH_COUNT] = risk.fill_latch_count
    row0[LimitId.FILL_LATCH_WINDOW_NS] = risk.fill_latch_window_ms * _MS
    for symbol, lim in risk.instruments.items():
        _write_row(table[registry.by_symbol(symbol).id], lim)


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
