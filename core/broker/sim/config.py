"""Configuration of the simulated gateway: one schema, every default here.

A TOML file holds any of these fields (unknown keys are errors that name the file and the
field); ``QUAYSIDE_SIMGATEWAY_<FIELD>`` environment variables override top-level scalar fields
and ``QUAYSIDE_SIMGATEWAY_DATA_<FIELD>`` those of ``[data]`` (for containers), and command-line
flags override both. Example::

    port = 4002
    account = "DU0000001"
    commission_delay_ms = 250       # commission reports arrive after their fills

    [data]
    path = "feed-20261005.qsf"      # omit for the built-in synthetic market
    speed = 10                      # 10x real time; inf = as fast as possible

    [commission.STK]
    per_unit = 0.005
    minimum = 1.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quayside.core.engine.config import ConfigError, load_toml_config, validate_config

__all__ = [
    "ConfigError",
    "validate_config",
    "CommissionRate",
    "DEFAULT_COMMISSION",
    "InitialPosition",
    "DataConfig",
    "SimGatewayConfig",
    "load_config",
    "apply_env",
    "ENV_PREFIX",
]

ENV_PREFIX = "QUAYSIDE_SIMGATEWAY_"


class CommissionRate(BaseModel):
    """Commission per fill: ``bps`` of notional + ``per_unit`` per unit, at least ``minimum``
    (account currency); the backtest venue's formula."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bps: float = Field(default=0.0, ge=0)
    per_unit: float = Field(default=0.0, ge=0)
    minimum: float = Field(default=0.0, ge=0)


#: Roughly IB's fixed rates: stocks $0.005/share (min $1), forex 0.2 bps (min $2), futures
#: $0.85/contract; anything else 0.2 bps.
DEFAULT_COMMISSION: dict[str, CommissionRate] = {
    "default": CommissionRate(bps=0.2),
    "STK": CommissionRate(per_unit=0.005, minimum=1.0),
    "CASH": CommissionRate(bps=0.2, minimum=2.0),
    "FUT": CommissionRate(per_unit=0.85),
}


class InitialPosition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str = Field(min_length=1, description="registry symbol, e.g. AAPL, EURUSD, ESZ6")
    quantity: float
    avg_price: float = Field(ge=0, description="average price paid (per unit, without multiplier)")


class DataConfig(BaseModel):
    """Where the market comes from, and how fast it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, description="recording or data file; None = built-in synthetic market")
    on_error: Literal["raise", "skip"] = Field(default="raise", description="malformed rows in a data file")
    seed: int = Field(default=7, description="synthetic market seed")
    symbols: list[str] | None = Field(default=None, description="synthetic instruments; None = all built-in ones")
    duration_s: float | None = Field(default=None, gt=0, description="synthetic market length; None = endless")
    start_ns: int | None = Field(default=None, description="synthetic market start; None = now")
    at_end: Literal["stop", "loop"] = Field(default="stop", description="when a data file runs out")
    speed: float = Field(default=1.0, gt=0, description="x real time; inf = as fast as possible")
    start_paused: bool = Field(default=False, description="clock stopped until 'resume' or 'step'")
    warmup_s: float = Field(default=60.0, ge=0, description="read ahead at start until books are two-sided")


class SimGatewayConfig(BaseModel):
    """The simulated IB gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="address of the API and admin ports")
    port: int = Field(default=4002, ge=0, le=65535, description="TWS API port (4002: IB Gateway paper); 0 = any")
    admin_port: int | None = Field(default=4003, ge=0, le=65535, description="admin port; None = no admin port")
    account: str = Field(default="DU0000001", min_length=1, description="the one managed account")
    registry: str | None = Field(default=None, description="instrument registry TOML; None = the data's / built-in")
    data: DataConfig = DataConfig()
    order_latency_ms: float = Field(default=0.0, ge=0, description="placeOrder/cancelOrder -> venue")
    commission_delay_ms: float = Field(default=0.0, ge=0, description="fill -> its commission report")
    commission: dict[str, CommissionRate] = Field(default_factory=lambda: dict(DEFAULT_COMMISSION))
    fill_on_quote_cross: bool = Field(default=True, description="resting orders fill when the quote crosses them")
    limit_to_displayed_size: bool = Field(default=False, description="marketable orders fill at most the touch size")
    check_tick_size: bool = Field(default=True, description="reject limit prices off the tick grid (error 110)")
    initial_cash: float = Field(default=1_000_000.0, description="cash in the account currency")
    positions: list[InitialPosition] = Field(default_factory=list)
    fx_rates: dict[str, float] = Field(default_factory=dict, description="currency -> account currency, fallback")
    margin_rate: float = Field(default=0.25, ge=0, le=1, description="margin as a share of gross position value")
    account_update_interval_s: float = Field(default=10.0, gt=0, description="account/portfolio refresh period")
    max_messages_per_s: int = Field(default=0, ge=0, description="error 100 beyond this rate; 0 = no limit")
    greeting_notices: bool = Field(default=True, description="send 2104/2106/2158 'farm OK' notices on connect")
    master_client_id: int | None = Field(
        default=None, description="this client id also gets every client's order events and executions"
    )
    first_perm_id: int = Field(default=1_000_000_000, ge=1, description="permIds count up from here")

    @property
    def speed(self) -> float:
        return self.data.speed

    @property
    def as_fast_as_possible(self) -> bool:
        return math.isinf(self.data.speed)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> SimGatewayConfig:
    """The configuration file (or the defaults), then the environment's overrides."""
    config = load_toml_config(path, SimGatewayConfig) if path else SimGatewayConfig()
    return apply_env(config, os.environ if environ is None else environ)


def apply_env(config: SimGatewayConfig, environ: Mapping[str, str]) -> SimGatewayConfig:
    """Override scalar fields from ``QUAYSIDE_SIMGATEWAY_*`` variables, validated."""
    top: dict = {}
    data: dict = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name.startswith("data_") and name[5:] in DataConfig.model_fields:
            v = _env_value(value)
            data[name[5:]] = v.split(",") if name == "data_symbols" and v is not None else v
        elif name in SimGatewayConfig.model_fields and name not in ("data", "commission", "positions", "fx_rates"):
            top[name] = _env_value(value)
        else:
            raise ConfigError(f"environment: {key} is not a setting of the simulated gateway")
    if not (top or data):
        return config
    merged = config.model_dump()
    merged.update(top)
    merged["data"].update(data)
    try:
        return SimGatewayConfig.model_validate(merged)
    except ValidationError:
        return validate_config(merged, SimGatewayConfig, "environment")


def _env_value(text: str):
    return None if text.lower() in ("", "none", "null") else text
