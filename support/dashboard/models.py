"""The dashboard's JSON API: one pydantic model per panel and per control (the OpenAPI schema).

Numbers the feed does not determine yet (no mark, unknown FX rate, no limit) are ``null``,
never NaN: JSON has no NaN. Times are ISO 8601 UTC (``at``) beside int64 ns (``ts_event``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from quayside.core.wire import LimitId

__all__ = [
    "Problem", "Scope", "SetLimit", "ControlResult", "Position", "Amounts", "Equity", "EquityPoint",
    "EquityCurve", "LimitRow", "BlotterRow", "Blotter", "LatencyStage", "Latency", "QuoteHealth",
    "FeedHealth", "EngineHealth", "BrokerHealth", "Health", "Trading", "Controls", "Summary",
]  # fmt: skip

LimitName = Literal[LimitId._fields]  # type: ignore[valid-type]


class Problem(BaseModel):
    """Every 4xx/5xx answer of the controls: what went wrong and what to do about it."""

    detail: str


# --------------------------------------------------------------------------- controls


class Scope(BaseModel):
    """Which part of the engine a control applies to (nothing given: everything)."""

    model_config = ConfigDict(extra="forbid")

    instrument: str | None = Field(default=None, max_length=64, description="instrument symbol; null = all")
    strategy_id: int = Field(default=0, ge=0, le=255, description="strategy id; 0 = all")
    note: str = Field(default="", max_length=500, description="why (kept in the audit log)")


class SetLimit(Scope):
    limit: LimitName = Field(description="the LimitId name, e.g. MAX_ORDER_QTY")
    value: float = Field(ge=0, allow_inf_nan=False, description="the new value, in the engine's units (times in ns)")


class ControlResult(BaseModel):
    result: Literal["sent"]
    action: str
    operator: str
    command_id: int = Field(description="echoed by the engine in its CONTROL_APPLIED log record")
    instrument: str | None
    strategy_id: int
    detail: str


# --------------------------------------------------------------------------- panels


class Amounts(BaseModel):
    """Account-currency amounts; null when unknown (``unknown`` says why)."""

    realized: float | None = None
    unrealized: float | None = None
    total: float | None = None
    fees: float | None = None
    realized_today: float | None = None
    daily: float | None = None
    complete: bool = True
    unknown: list[str] = []
    unknown_commissions: int = 0


class Position(Amounts):
    strategy_id: int
    instrument: str
    currency: str
    quantity: float
    avg_price: float | None
    mark: float | None = Field(description="the price the position would close at: bid if long, ask if short")
    mark_age_s: float | None
    fills: int


class Equity(BaseModel):
    equity: float | None
    high_water_mark: float | None
    drawdown: float | None
    daily_pnl: float | None


class EquityPoint(BaseModel):
    ts_event: int
    equity: float
    high_water_mark: float
    drawdown: float


class EquityCurve(BaseModel):
    account_currency: str
    every_s: float
    points: list[EquityPoint]


class LimitRow(BaseModel):
    limit: str
    instrument: str
    value: float | None = Field(description="null: no limit")
    used: float | None
    utilisation: float | None = Field(description="used / value; null for window lengths or when unknown")
    peak_today: float | None


class BlotterRow(BaseModel):
    seq: int = Field(description="row number; the event id on the stream")
    kind: Literal["order", "status", "fill", "commission", "cancel", "denial", "control", "engine"]
    ts_event: int
    at: str | None
    strategy_id: int
    instrument: str
    order_id: int | None
    side: Literal["BUY", "SELL"] | None
    quantity: float | None
    price: float | None
    status: str | None
    reason: str | None = Field(description="denial reason, cancel cause, broker error")
    fill_id: int | None = Field(description="the execution's id (fills and commission reports)")
    detail: str


class Blotter(BaseModel):
    newest: int = Field(description="seq of the newest row")
    rows: list[BlotterRow]


class LatencyStage(BaseModel):
    counts: list[int] = Field(description="per bucket; the last one is above every bound")
    count: int
    mean_s: float | None


class Latency(BaseModel):
    bounds_s: list[float] = Field(description="upper bounds of the buckets, seconds")
    tick_to_order: dict[str, LatencyStage] = Field(description="queue, decide, total")
    round_trip: LatencyStage


class QuoteHealth(BaseModel):
    instrument: str
    age_s: float | None = Field(description="since the last quote was received; null: never")
    stale_after_s: float | None
    stale: bool


class FeedHealth(BaseModel):
    source: str
    age_s: float | None
    records: int
    lost: int
    stale: bool


class EngineHealth(BaseModel):
    heartbeats: int
    heartbeat_age_s: float | None
    stale: bool
    starts: int


class BrokerHealth(BaseModel):
    connected: bool | None
    disconnects: int
    reconciliation_breaks_open: int


class Health(BaseModel):
    feed: FeedHealth
    engine: EngineHealth
    broker: BrokerHealth
    quotes: list[QuoteHealth]


class Trading(BaseModel):
    state: str | None = Field(description="ACTIVE, REDUCING, HALTED; null until a heartbeat")
    instrument_states: dict[str, str]
    fill_latch_engaged: bool
    working_orders: int
    denials: dict[str, int]


class Controls(BaseModel):
    enabled: bool
    detail: str


class Summary(BaseModel):
    account_currency: str
    feed_time: str | None
    trading: Trading
    totals: Amounts
    equity: Equity
    positions: list[Position]
    limits: list[LimitRow]
    health: Health
    latency: Latency
    blotter_newest: int
    fills: int
    controls: Controls
