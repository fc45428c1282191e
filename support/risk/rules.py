"""Risk rules and the actions they take.

A rule watches one metric against a threshold and, when it is breached, responds once:
``warn`` (a log line and an action record), ``reduce`` (the engine to REDUCING: a REDUCE_ONLY
control record) or ``halt`` (a HALT control record). A breach is one episode: the response
fires when the value first reaches the threshold and the rule re-arms only once the value has
fallen below ``rearm_below`` (default: the threshold), so a breach that lasts fires once, not
on every batch. Per-instrument metrics keep one episode per instrument (and limit).

Metrics (amounts in the account currency, ages in seconds):

=================  ===================================================================
``drawdown``       high-water mark of equity minus equity (equity: total P&L since the
                   history began, with the commissions known so far)
``daily_loss``     minus the change in total P&L since the daily reset (0 if a gain)
``gross_exposure`` sum over instruments of abs(position x mid x multiplier x FX);
                   per instrument with ``per_instrument = true``
``net_exposure``   abs of the signed sum (per instrument: abs of its own)
``utilisation``    used / limit for the engine limits (``limit`` = one LimitId name, or
                   every limit), per instrument
``heartbeat_age``  seconds since the engine's last HEARTBEAT (watchdog, wall clock)
``quote_age``      seconds since an instrument's last quote (watchdog, wall clock)
=================  ===================================================================
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quayside.core.wire import LimitId
from quayside.support.pnl.clock import iso

__all__ = ["Rule", "Action", "BreachTracker", "DEFAULT_RULES", "METRICS", "command_id_for"]

Metric = Literal[
    "drawdown", "daily_loss", "gross_exposure", "net_exposure", "utilisation", "heartbeat_age", "quote_age"
]
METRICS: tuple[str, ...] = Metric.__args__
WATCHDOG_METRICS = frozenset({"heartbeat_age", "quote_age"})


class Rule(BaseModel):
    """One rule of ``[[risk.rules]]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    metric: Metric
    threshold: float = Field(description="breached when the metric is >= this")
    response: Literal["warn", "reduce", "halt"] = "warn"
    rearm_below: float | None = Field(default=None, description="re-armed when the metric is < this")
    limit: str | None = Field(default=None, description="utilisation: one LimitId name; None = every limit")
    per_instrument: bool = Field(default=False, description="exposures: per instrument instead of in total")
    instruments: list[str] | None = Field(default=None, description="only these symbols (per-instrument metrics)")
    scope: Literal["all", "instrument"] = Field(
        default="all", description="reduce/halt everything, or only the instrument in breach"
    )

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: str | None) -> str | None:
        if v is not None and v not in LimitId._fields:
            raise ValueError(f"unknown limit {v!r}; one of {', '.join(LimitId._fields)}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.rearm_below is not None and self.rearm_below > self.threshold:
            raise ValueError(f"rule {self.name}: rearm_below {self.rearm_below} is above threshold {self.threshold}")
        if self.limit is not None and self.metric != "utilisation":
            raise ValueError(f"rule {self.name}: 'limit' applies to the utilisation metric only")
        return self

    @property
    def per_key(self) -> bool:
        return self.metric in ("utilisation", "quote_age") or self.per_instrument


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(name="engine_heartbeat", metric="heartbeat_age", threshold=5.0),
    Rule(name="quote_staleness", metric="quote_age", threshold=30.0),
    Rule(name="limit_utilisation", metric="utilisation", threshold=0.9),
)

_COMMANDS = {"reduce": "REDUCE_ONLY", "halt": "HALT"}


def command_id_for(*parts) -> int:
    """A command id derived from what caused it (63 bits): a replay of the same history finds
    the same id, and recognises the engine's echo of a command sent before a restart."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class Action:
    """What the monitor did about one breach."""

    id: int
    rule: str
    metric: str
    key: str  # "all", or the instrument symbol (and limit)
    value: float
    threshold: float
    response: str
    command: str | None  # HALT / REDUCE_ONLY, None for a warning
    instrument_id: int  # the command's scope (0 = everything)
    ts_breach: int  # feed time (wall time for watchdogs) of the breach
    ts_decided: int  # wall time
    state: str = "logged"  # logged | pending | replayed | sent | acknowledged | applied | skipped | failed
    detail: str = ""
    history: list[str] = field(default_factory=list)

    def set(self, state: str, detail: str = "") -> None:
        self.state, self.detail = state, detail or self.detail
        self.history.append(state)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["breach_at"], d["decided_at"] = iso(self.ts_breach), iso(self.ts_decided)
        return d


class BreachTracker:
    """Breach episodes per ``(rule, key)``: ``update`` says when a response is due."""

    def __init__(self):
        self.breached: dict[tuple[str, str], float] = {}  # -> value that opened the episode
        self.episodes = 0

    def update(self, rule: Rule, key: str, value: float | None) -> bool:
        """True when ``value`` opens a new breach of ``rule`` for ``key``. None (unknown)
        changes nothing."""
        if value is None:
            return False
        k = (rule.name, key)
        if k in self.breached:
            if value < (rule.threshold if rule.rearm_below is None else rule.rearm_below):
                del self.breached[k]
            return False
        if value >= rule.threshold:
            self.breached[k] = value
            self.episodes += 1
            return True
        return False

    def keys_of(self, rule: Rule) -> list[str]:
        return sorted(k for r, k in self.breached if r == rule.name)


def command_of(response: str) -> str | None:
    return _COMMANDS.get(response)
