"""Settings shared by every support service (pydantic-settings).

Values come from, in order of precedence: environment variables (``QUAYSIDE_<FIELD>``, nested
with ``__``, e.g. ``QUAYSIDE_HTTP__PORT=9101``), then a TOML file named by ``--config`` or
``QUAYSIDE_CONFIG``, then these defaults. Unknown keys are errors.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["FeedSettings", "HttpSettings", "ServiceSettings", "SettingsError", "load_settings"]


class SettingsError(ValueError):
    """Invalid service settings; the message names the source and the field."""


class FeedSettings(BaseModel):
    """Where the service reads the engine's feed: the shared-memory ring, or UDP from the relay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["shm", "udp"] = "shm"
    ring: str = Field(default="quayside-feed", description="ring name in the shm directory, or a path")
    start: Literal["live", "oldest"] = Field(default="oldest", description="where a new reader starts")
    udp_bind: str = Field(default="127.0.0.1:7000", description="HOST:PORT to receive relayed datagrams on")
    udp_group: str | None = Field(default=None, description="multicast group to join; empty = none")
    udp_interface: str | None = Field(
        default=None, description="address of the interface to join the group on; empty = the default route's"
    )
    batch: int = Field(default=8192, ge=1, description="records per read")
    idle_sleep_ms: float = Field(default=0.5, ge=0, description="sleep when the feed has nothing new")

    @field_validator("udp_group", "udp_interface", mode="before")
    @classmethod
    def _empty_group_is_none(cls, value):
        # compose passes an unset ${VAR:-} as an empty string
        return None if value == "" else value


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="bind address; 127.0.0.1 unless configured")
    port: int = Field(default=0, ge=0, le=65535, description="0 = the service's default port")


class ServiceSettings(BaseSettings):
    """The settings every support service has; services extend this class."""

    model_config = SettingsConfigDict(env_prefix="QUAYSIDE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    feed: FeedSettings = FeedSettings()
    http: HttpSettings = HttpSettings()
    registry: str | None = Field(default=None, description="instrument registry TOML; None = built-in")
    recordings: str | None = Field(default=None, description="recorder folder to rebuild state from at start")
    recordings_since: dt.date | None = Field(
        default=None, description="rebuild from the recordings of this UTC day on (YYYY-MM-DD); None = today"
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    config_file: str | None = Field(default=None, exclude=True, description="set by load_settings")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment over the file (passed as init values), over the defaults
        return env_settings, init_settings


def load_settings(cls: type[ServiceSettings], path: str | Path | None = None) -> ServiceSettings:
    """Settings of ``cls`` from ``path`` (or ``$QUAYSIDE_CONFIG``) and the environment."""
    path = path or os.environ.get("QUAYSIDE_CONFIG")
    data: dict = {}
    source = "environment"
    if path:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise SettingsError(f"{path}: no such settings file") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    try:
        return cls(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"{source} (and QUAYSIDE_* environment): {problems}") from None
