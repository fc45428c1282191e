"""What the page shows, built from the feed alone by the existing support state classes.

Nothing here re-implements accounting or risk: positions, P&L, equity, drawdown, exposure,
limit utilisation and the engine's trading state come from the risk monitor's state
(:class:`~quayside.support.risk.monitor.RiskMonitor`, which keeps the P&L service's average-cost
:class:`~quayside.support.pnl.accounting.Ledger`), run with no rules (the dashboard acts only
when a person asks it to); latencies, broker health and quote times from the metrics
exporter's :class:`~quayside.support.metrics.state.MetricsState`. This module adds what only
the page needs: the equity curve (one point per ``equity_every_s`` of feed time) and the
blotter (orders, statuses, fills, cancels, denials with their reasons, control records and
engine events), each row numbered so that a reconnecting page can ask for what it missed.
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

from quayside.core import wire
from quayside.core.instruments import InstrumentRegistry
from quayside.core.wire import ControlCommand, LogCode, OrderStatus, OrderType, RecordKind, TimeInForce, TradingState
from quayside.support.metrics.state import MetricsState
from quayside.support.pnl.clock import iso
from quayside.support.risk.limits import LimitTable
from quayside.support.risk.monitor import RiskMonitor

__all__ = ["BLOTTER_KINDS", "DashboardState", "EquityMonitor"]

_NS = 1_000_000_000
#: record kinds that make blotter rows (LOG records too, but only the codes in _LOG_ROWS)
BLOTTER_KINDS = (
    RecordKind.ORDER, RecordKind.CANCEL, RecordKind.ORDER_STATUS, RecordKind.FILL, RecordKind.DENIAL,
    RecordKind.CONTROL, RecordKind.LOG,
)  # fmt: skip
_ROW_KINDS = np.zeros(256, dtype=bool)
_ROW_KINDS[list(BLOTTER_KINDS)] = True
_LOG_ROWS = frozenset(LogCode) - {LogCode.OUTBOUND_BACKPRESSURE}
_SIDE = {1: "BUY", -1: "SELL"}


class EquityMonitor(RiskMonitor):
    """The risk monitor's state, keeping an equity curve: one point (feed time, equity,
    high-water mark, drawdown) per ``every_ns`` of feed time, the newest ``points``."""

    def __init__(self, *args, every_ns: int, points: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.every_ns = every_ns
        self.curve: deque[tuple[int, float, float, float]] = deque(maxlen=points)
        self._next_point = 0

    def sample(self) -> None:
        super().sample()
        ts = self.ledger.clock_ns
        if self.equity is None or ts < self._next_point:
            return
        self._next_point = (ts // self.every_ns + 1) * self.every_ns
        self.curve.append((ts, self.equity, self.hwm, self.drawdown))


class DashboardState:
    """Feed batches in; blotter rows (the page's live events) out."""

    def __init__(
        self,
        registry: InstrumentRegistry,
        limits: LimitTable,
        *,
        blotter_rows: int = 2000,
        equity_every_s: float = 1.0,
        equity_points: int = 20_000,
        fx_max_age_s: float = 60.0,
        reset_at: str = "17:00",
        timezone: str = "America/New_York",
        issuer_id: int = 0,
        wall_clock=time.time_ns,
    ):
        self.registry = registry
        self.wall_clock = wall_clock
        self.monitor = EquityMonitor(
            registry, limits, [], sample_ms=min(100.0, equity_every_s * 1000.0), fx_max_age_s=fx_max_age_s,
            reset_at=reset_at, timezone=timezone, issuer_id=issuer_id, wall_clock=wall_clock,
            every_ns=int(equity_every_s * _NS), points=equity_points,
        )  # fmt: skip
        self.metrics = MetricsState(max((i.id for i in registry), default=0))
        self.blotter: deque[dict] = deque(maxlen=blotter_rows)
        self.seq = 0  # number of the newest blotter row
        self.fills = 0

    # ------------------------------------------------------------------ batches

    def handle(self, batch: np.ndarray) -> list[dict]:
        """Apply a batch of feed records; returns the blotter rows it made, oldest first."""
        self.monitor.handle(batch)
        self.metrics.handle(batch)
        rows = np.flatnonzero(_ROW_KINDS[batch["kind"]])
        if not len(rows):
            return []
        valid = wire.validate(batch[rows])
        made = []
        for i in rows[valid].tolist():
            row = self._row(batch[i : i + 1])
            if row is not None:
                self.seq += 1
                row["seq"] = self.seq
                self.blotter.append(row)
                made.append(row)
        return made

    def since(self, seq: int) -> list[dict] | None:
        """Blotter rows after ``seq``, or None if some of them are no longer kept."""
        if seq >= self.seq:
            return []
        if not self.blotter or self.blotter[0]["seq"] > seq + 1:
            return None
        return [r for r in self.blotter if r["seq"] > seq]

    # ------------------------------------------------------------------ rows

    def symbol(self, iid: int) -> str:
        return self.registry.by_id(iid).symbol if iid in self.registry else ("all" if iid == 0 else f"#{iid}")

    def _row(self, rec: np.ndarray) -> dict | None:
        kind = int(rec["kind"][0])
        r = rec.view(wire.dtype_for(kind))[0]
        ts = int(r["ts_event"])
        row = {
            "seq": 0, "kind": "", "ts_event": ts, "at": iso(ts), "strategy_id": int(r["strategy_id"]),
            "instrument": self.symbol(int(r["instrument_id"])), "order_id": None, "side": None,
            "quantity": None, "price": None, "status": None, "reason": None, "fill_id": None, "detail": "",
        }  # fmt: skip
        if kind == RecordKind.ORDER:
            row |= {"kind": "order", "order_id": int(r["order_id"]), "side": _SIDE.get(int(r["side"]))}
            row |= {"quantity": _num(r["quantity"]), "price": _num(r["price"])}
            row["detail"] = (
                f"{wire.enum_name(OrderType, int(r['order_type']))} {wire.enum_name(TimeInForce, int(r['tif']))}"
            )
        elif kind == RecordKind.FILL:
            qty = float(r["quantity"])
            row |= {"order_id": int(r["order_id"]), "price": _num(r["price"]), "quantity": _num(abs(qty))}
            row["fill_id"] = int(r["fill_id"])
            row["side"] = "BUY" if qty > 0 else "SELL" if qty < 0 else None
            commission = _num(r["commission"])
            row["kind"] = "fill" if qty != 0.0 else "commission"
            row["detail"] = f"commission {commission:g}" if commission is not None else "commission not known yet"
            if r["flags"] & wire.Flag.CORRECTION:
                row["detail"] += ", correction"
            self.fills += row["kind"] == "fill"
        elif kind == RecordKind.ORDER_STATUS:
            row |= {"kind": "status", "order_id": int(r["order_id"])}
            row["status"] = wire.enum_name(OrderStatus, int(r["status"]))
            row |= {"quantity": _num(r["filled_qty"]), "price": _num(r["avg_fill_price"])}
            if int(r["error_code"]):
                row["reason"] = f"broker error {int(r['error_code'])}"
        elif kind == RecordKind.CANCEL:
            row |= {"kind": "cancel", "order_id": int(r["order_id"])}
            why = int(r["reason"])
            row["reason"] = "strategy" if why == 0 else wire.enum_name(ControlCommand, why)
        elif kind == RecordKind.DENIAL:
            row |= {"kind": "denial", "order_id": int(r["order_id"]), "side": _SIDE.get(int(r["side"]))}
            row |= {"quantity": _num(r["quantity"]), "price": _num(r["price"])}
            row["reason"] = wire.enum_name(wire.DenyReason, int(r["reason"]))
            limit = _num(r["limit"])
            row["detail"] = f"limit {limit:g}" if limit is not None else ""
        elif kind == RecordKind.CONTROL:
            command = wire.enum_name(ControlCommand, int(r["command"]))
            row |= {"kind": "control", "status": command}
            row["detail"] = f"command {int(r['command_id'])} from issuer {int(r['issuer_id'])}"
            if int(r["command"]) == ControlCommand.SET_LIMIT:
                row["detail"] += f": {wire.enum_name(wire.LimitId, int(r['limit_id']))} := {float(r['value']):g}"
        elif kind == RecordKind.LOG:
            code = int(r["code"])
            if code not in _LOG_ROWS:
                return None
            row |= {"kind": "engine", "status": wire.enum_name(LogCode, code), "detail": _log_text(r)}
        return row

    # ------------------------------------------------------------------ reports

    def quote_ages(self) -> dict[str, float | None]:
        """Seconds since each instrument's last quote was received (wall clock), None if never."""
        now = self.wall_clock()
        ts = self.metrics.quote_ts
        return {
            inst.symbol: (now - int(ts[inst.id])) / _NS if inst.id < len(ts) and ts[inst.id] else None
            for inst in self.registry
        }


def _log_text(r: np.void) -> str:
    code = int(r["code"])
    if code == LogCode.STATE_CHANGED:
        return f"trading state {_state(int(r['i0']))} -> {_state(int(r['i1']))}"
    if code == LogCode.LIMIT_CHANGED:
        return (
            f"limit {wire.enum_name(wire.LimitId, int(r['i0']))} changed from {float(r['a0']):g} to {float(r['a1']):g}"
        )
    if code in (LogCode.CONTROL_APPLIED, LogCode.CONTROL_REJECTED):
        verb = "applied" if code == LogCode.CONTROL_APPLIED else "rejected"
        return f"control {wire.enum_name(ControlCommand, int(r['i0']))} (id {int(r['i1'])}) {verb}"
    template = wire.LOG_TEMPLATES.get(code, "log code {code}")
    return template.format(code=code, i0=int(r["i0"]), i1=int(r["i1"]), a0=float(r["a0"]), a1=float(r["a1"]))


def _state(value: int) -> str:
    return wire.enum_name(TradingState, value)


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
