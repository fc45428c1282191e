"""The dashboard's settings: every default in one place.

Top-level (so their environment names are short, as compose sets them):

* ``audit_log`` (``QUAYSIDE_AUDIT_LOG``): the append-only JSON-lines audit file. Without it
  every control is refused: a control nobody can trace afterwards is not allowed.
* ``tokens_file`` (``QUAYSIDE_TOKENS_FILE``): operator tokens, one ``name:token`` a line.

The single-operator secret ``QUAYSIDE_DASHBOARD_TOKEN`` is read from the environment by
:mod:`.auth` and is deliberately not a setting: a secret must never sit in a settings file.
Everything else is under ``[dashboard]`` (``QUAYSIDE_DASHBOARD__<FIELD>``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from quayside.support.common.settings import ServiceSettings
from quayside.support.pnl.service import PnlConfig
from quayside.support.risk.limits import EngineRiskLimits

__all__ = ["DashboardConfig", "DashboardSettings", "ISSUER_ID"]

ISSUER_ID = 0x44415348  # "DASH": the issuer id of the dashboard's control records


class DashboardConfig(BaseModel):
    """``[dashboard]``: what the page shows and where controls go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    control_ring: str = Field(default="quayside-control", description="the engine's control ring (name or path)")
    issuer_id: int = Field(default=ISSUER_ID, ge=1, le=2**32 - 1, description="our id in the control records")
    engine_config: str | None = Field(default=None, description="the engine's TOML: its [risk] table is read")
    limits: EngineRiskLimits | None = Field(default=None, description="the engine's [risk] table, inline")
    blotter_rows: int = Field(default=2000, ge=10, le=100_000, description="blotter rows kept (newest)")
    equity_points: int = Field(default=20_000, ge=10, le=1_000_000, description="equity-curve points kept")
    equity_every_s: float = Field(default=1.0, gt=0, description="feed time between equity-curve points")
    summary_every_s: float = Field(default=1.0, gt=0, description="pushed summaries at least this often")
    summary_min_gap_s: float = Field(default=0.2, ge=0, description="pushed summaries at most this often")
    daily_reset: str = PnlConfig.model_fields["daily_reset"].default
    timezone: str = PnlConfig.model_fields["timezone"].default
    fx_max_age_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.engine_config is not None and self.limits is not None:
            raise ValueError("give the engine's limits once: engine_config (its file) or limits (inline), not both")
        PnlConfig(daily_reset=self.daily_reset, timezone=self.timezone)  # same checks as the P&L service
        return self


class DashboardSettings(ServiceSettings):
    dashboard: DashboardConfig = DashboardConfig()
    audit_log: str | None = Field(default=None, description="append-only audit file (JSON lines); None = no controls")
    tokens_file: str | None = Field(default=None, description="operator tokens file, lines name:token")
