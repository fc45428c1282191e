"""Configuration of the broker gateway process: one schema, every default here.

A TOML file holds any of these fields; unknown keys are errors that name the file and the
field. ``QUAYSIDE_GATEWAY_<FIELD>`` environment variables override top-level scalar fields (for
containers and systemd units). Example::

    host = "127.0.0.1"
    port = 4002                         # IB Gateway paper; 4001 live, 7497/7496 TWS
    client_id = 11
    client_id_fallbacks = [12, 13]      # tried in turn when IB answers 326 (id in use)
    account = "DU0000001"
    library = "ib_insync"               # or "ib_async", the maintained fork (same API)
    instruments = ["EURUSD", "AAPL"]
    state_file = "auto"                 # quayside-gateway-11.jsonl in the shm directory

    [rings]                             # the engine's names and capacities (RingsConfig)
    inbound = "quayside-inbound"
    outbound = "quayside-outbound"
    feed = "quayside-feed"

Ring names and ``state_file`` follow the ring convention: a bare name lives in the shm
directory (``$QUAYSIDE_SHM_DIR`` or ``/dev/shm``), anything with a slash is a path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quayside.core.engine.config import ConfigError, RingsConfig, load_toml_config, validate_config

__all__ = ["ConfigError", "GatewayConfig", "load_config", "apply_env", "ENV_PREFIX"]

ENV_PREFIX = "QUAYSIDE_GATEWAY_"


class GatewayConfig(BaseModel):
    """The gateway between IB (TWS / IB Gateway, through ib_insync) and the engine's rings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- the broker connection
    host: str = Field(default="127.0.0.1", description="TWS / IB Gateway host")
    port: int = Field(default=4002, ge=1, le=65535, description="TWS API port (4002: IB Gateway paper)")
    client_id: int = Field(default=11, ge=0, description="API client id")
    client_id_fallbacks: list[int] = Field(default_factory=list, description="tried in turn after error 326")
    account: str = Field(default="", description="account to trade and reconcile; '' = the only managed one")
    library: Literal["ib_insync", "ib_async"] = Field(default="ib_insync", description="TWS API client library")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="one connection attempt, sync included")
    request_timeout_s: float = Field(default=10.0, gt=0, description="one sync request (positions, orders...)")
    request_attempts: int = Field(default=5, ge=1, description="tries of a sync request before reconnecting")
    # --- reconnecting
    reconnect_initial_s: float = Field(default=0.5, gt=0, description="first wait after a lost connection")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="longest wait between attempts")
    reconnect_factor: float = Field(default=2.0, ge=1.0, description="wait multiplier per failed attempt")
    reconnect_jitter: float = Field(default=0.2, ge=0, le=1, description="+- this share of each wait, random")
    reconnect_seed: int | None = Field(default=None, description="seed of the jitter; None = from the OS")
    # --- pacing
    max_messages_per_s: float = Field(default=40.0, gt=0, le=50, description="central rate limit (IB: 50/s)")
    burst: int = Field(default=5, ge=1, description="messages the limiter lets out at once")
    pacing_backoff_s: float = Field(default=5.0, gt=0, description="rate halved this long after error 100/420")
    # --- market data
    registry: str | None = Field(default=None, description="instrument registry TOML; None = built-in")
    instruments: list[str] = Field(default_factory=lambda: ["EURUSD"], description="symbols to stream")
    tick_by_tick: bool = Field(default=True, description="also subscribe tick-by-tick BidAsk")
    # --- the engine side
    rings: RingsConfig = RingsConfig()
    poll_interval_ms: float = Field(
        default=0.5, ge=0, description="outbound ring poll period when idle; 0 = busy-poll (a core of its own)"
    )
    poll_spin_us: float = Field(default=300.0, ge=0, description="poll without pause this long after any traffic")
    max_order_age_ms: float = Field(default=2_000.0, gt=0, description="older ORDER records are rejected")
    inbound_queue: int = Field(default=4096, ge=16, description="quotes/trades held while the inbound ring is full")
    # --- reconciliation and state
    reconcile_interval_s: float = Field(default=2.0, gt=0, description="positions compared this often")
    reconcile_confirmations: int = Field(default=3, ge=2, description="checks that must see a break alike")
    engine_positions: Literal["auto", "feed", "gateway"] = Field(
        default="auto", description="the engine's view: its POSITION records on the feed, or the gateway's fills"
    )
    state_file: str | None = Field(
        default="auto",
        description="order map and fill ledger; auto = quayside-gateway-<client_id>.jsonl; None = memory only",
    )

    @model_validator(mode="after")
    def _checks(self):
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        ids = [self.client_id, *self.client_id_fallbacks]
        if len(set(ids)) != len(ids):
            raise ValueError("client_id_fallbacks must differ from client_id and from each other")
        if not self.instruments:
            raise ValueError("instruments: give at least one symbol to stream")
        return self

    @property
    def client_ids(self) -> list[int]:
        return [self.client_id, *self.client_id_fallbacks]

    def load_registry(self):
        from quayside.core.instruments import InstrumentRegistry, default_registry

        registry = InstrumentRegistry.load(self.registry) if self.registry else default_registry()
        missing = [s for s in self.instruments if s not in registry]
        if missing:
            raise ConfigError(f"instruments {missing} are not in the registry {registry.source}")
        return registry

    def state_path(self) -> Path | None:
        if self.state_file is None:
            return None
        from quayside.core.feed.segment import resolve

        name = f"quayside-gateway-{self.client_id}.jsonl" if self.state_file == "auto" else self.state_file
        return resolve(name)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """The configuration file (or the defaults), then the environment's overrides."""
    config = load_toml_config(path, GatewayConfig) if path else GatewayConfig()
    return apply_env(config, os.environ if environ is None else environ)


_NOT_SCALAR = {"rings", "instruments", "client_id_fallbacks"}


def apply_env(config: GatewayConfig, environ: Mapping[str, str]) -> GatewayConfig:
    """Override top-level scalar fields from ``QUAYSIDE_GATEWAY_*`` variables, validated."""
    update: dict = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in GatewayConfig.model_fields or name in _NOT_SCALAR:
            raise ConfigError(f"environment: {key} is not a scalar setting of the gateway")
        update[name] = None if value.lower() in ("", "none", "null") else value
    if not update:
        return config
    merged = {**config.model_dump(), **update}
    try:
        return GatewayConfig.model_validate(merged)
    except ValidationError:
        return validate_config(merged, GatewayConfig, "environment")
