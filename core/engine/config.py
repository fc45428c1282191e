"""Configuration of the engine and of backtests: one schema, validated before anything runs.

Files are TOML. Unknown keys are errors; every error names the file and the field. Every
default lives in these models.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quayside.core.risk.config import RiskConfig

__all__ = ["ConfigError", "StrategyConfig", "RingsConfig", "EngineConfig", "load_toml_config"]

T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message says where and why."""


class StrategyConfig(BaseModel):
    """Which strategy, on which instruments, with which parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="crossover", description="built-in name, module path, or .py file")
    strategy_id: int = Field(default=1, ge=1, le=255, description="tags its records and orders (orderRef)")
    instruments: list[str] = Field(default_factory=lambda: ["EURUSD"], min_length=1)
    params: dict = Field(default_factory=dict, description="the strategy's own Params")


class RingsConfig(BaseModel):
    """Names (in the shm directory) or paths of the engine's rings, and their capacities."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inbound: str = "quayside-inbound"
    outbound: str = "quayside-outbound"
    control: str = "quayside-control"
    feed: str = "quayside-feed"
    inbound_capacity: int = Field(default=1 << 14, ge=2)
    outbound_capacity: int = Field(default=1 << 12, ge=2)
    control_capacity: int = Field(default=1 << 8, ge=2)
    feed_capacity: int = Field(default=1 << 20, ge=2)


class EngineConfig(BaseModel):
    """The live engine process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: int | None = Field(default=None, ge=0, description="core to pin to; None = don't pin")
    wait_strategy: Literal["busy-spin", "spin-yield", "sleep", "auto"] = Field(
        default="auto", description="auto: busy-spin on an isolated core, else spin-yield"
    )
    realtime_priority: int = Field(default=0, ge=0, le=99, description="SCHED_FIFO priority; 0 = don't ask")
    lock_memory: bool = True
    heartbeat_ms: float = Field(default=1_000.0, gt=0)
    registry: str | None = Field(default=None, description="instrument registry TOML; None = built-in")
    first_order_id: int = Field(default=1, ge=1)
    rings: RingsConfig = RingsConfig()
    strategy: StrategyConfig = StrategyConfig()
    risk: RiskConfig = RiskConfig()
    fx_fallback: dict[str, float] = Field(default_factory=dict, description="currency -> account-currency rate")


def load_toml_config(path: str | Path, model: type[T]) -> T:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return validate_config(data, model, str(path))


def validate_config(data: dict, model: type[T], source: str) -> T:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
