"""The P&L ledger: average-cost positions per (strategy, instrument), marks, FX and the day.

Pure numpy and Python, no I/O: the P&L service and the risk monitor feed it, tests call it
directly. Position arithmetic (fees, late commissions, corrections) is described in
:mod:`quayside.support.pnl.position`; this module adds:

* **Marks** from the feed's quotes: a long is marked at the bid, a short at the ask; a side with
  no price (NaN, or IB's -1) makes that position's unrealized P&L unknown.
* **Currencies.** Realized and unrealized P&L are kept in the instrument's currency and
  converted to the account currency when reported, at the *current* mid of the FX instrument of
  the registry (``<CCY><ACCOUNT>`` multiplied, or ``<ACCOUNT><CCY>`` divided, as the engine
  does), like a broker's base-currency view of balances held in other currencies. A rate older
  than ``fx_max_age_s`` of feed time is used but flagged stale; no rate (no FX instrument, or
  no two-sided quote yet) makes the converted numbers unknown: never a rate of 1.0.
* **The day.** At the configured reset time (feed time, see :mod:`quayside.support.pnl.clock`)
  each position snapshots its realized P&L, unrealized P&L and known fees; "today" is the change
  since then, so a late commission or a correction is booked on the day it arrives.
* **Unknowns.** Every reported amount is a float or ``None`` (unknown), with the reasons
  (``commission``, ``fx``, ``mark``) listed; a total is unknown when any part of it is.
"""

from __future__ import annotations

import math

import numpy as np

from quayside.core.instruments import InstrumentRegistry
from quayside.support.pnl.clock import DailySchedule, iso
from quayside.support.pnl.position import Execution, Position

__all__ = ["Ledger", "Amounts", "json_safe"]

_NS = 1_000_000_000
_AMOUNTS = ("realized", "unrealized", "total", "fees", "realized_today", "daily")


class Amounts:
    """A group's amounts in the account currency; ``None`` = unknown (``reasons`` says why)."""

    __slots__ = ("fx_stale", "reasons", "unknown_commissions", "values")

    def __init__(self):
        self.values: dict[str, float | None] = dict.fromkeys(_AMOUNTS, 0.0)
        self.reasons: set[str] = set()
        self.unknown_commissions = 0
        self.fx_stale = False

    def add(self, other: Amounts) -> None:
        for k in _AMOUNTS:
            a, b = self.values[k], other.values[k]
            self.values[k] = None if a is None or b is None else a + b
        self.reasons |= other.reasons
        self.unknown_commissions += other.unknown_commissions
        self.fx_stale |= other.fx_stale

    def as_dict(self) -> dict:
        return {
            **self.values,
            "complete": not self.reasons,
            "unknown": sorted(self.reasons),
            "unknown_commissions": self.unknown_commissions,
            "fx_stale": self.fx_stale,
        }


class Ledger:
    """Positions keyed by ``(strategy_id, instrument_id)``, with the marks and FX rates of
    every registry instrument and a feed clock that drives the daily reset."""

    def __init__(
        self,
        registry: InstrumentRegistry,
        *,
        fx_max_age_s: float = 60.0,
        reset_at: str = "17:00",
        timezone: str = "America/New_York",
    ):
        self.registry = registry
        self.account_currency = registry.account_currency
        size = max((i.id for i in registry), default=0) + 1
        self.known = np.zeros(size, dtype=bool)
        self.multiplier = np.ones(size)
        self.currency: dict[int, str] = {}
        for inst in registry:
            self.known[inst.id] = True
            self.multiplier[inst.id] = inst.multiplier
            self.currency[inst.id] = inst.currency
        self.bid = np.full(size, np.nan)
        self.ask = np.full(size, np.nan)
        self.ts_quote = np.zeros(size, dtype=np.int64)
        self.fx_max_age_ns = int(fx_max_age_s * _NS)
        self.fx_route = {ccy: _fx_route(registry, ccy) for ccy in set(self.currency.values())}
        self.schedule = DailySchedule(reset_at, timezone)
        self.clock_ns = 0  # feed time: running max of ts_event
        self.next_reset_ns = 0  # 0 until the first record sets the clock
        self.day_started_ns = 0
        self.resets = 0
        self.positions: dict[tuple[int, int], Position] = {}
        self._owner: dict[int, Position] = {}  # fill_id -> position
        self._early: dict[int, float] = {}  # commissions of fills not seen (yet)
        self.anomalies = {"duplicate_fill": 0, "orphan_commission": 0, "orphan_correction": 0}

    # ------------------------------------------------------------------ time

    def advance(self, ts_ns: int) -> bool:
        """Move feed time to ``ts_ns`` if later; resets the day when it passes the reset time.
        Returns True if the day was reset. Callers split batches at :attr:`next_reset_ns`."""
        if ts_ns <= self.clock_ns:
            return False
        if self.clock_ns == 0:
            self.clock_ns = ts_ns
            self.day_started_ns = self.schedule.last_at_or_before(ts_ns)
            self.next_reset_ns = self.schedule.next_after(ts_ns)
            return False
        self.clock_ns = ts_ns
        if ts_ns < self.next_reset_ns:
            return False
        self.reset_day()
        return True

    def reset_day(self) -> None:
        """Start a new day at the current feed time: snapshot every position."""
        for p in self.positions.values():
            p.realized_at_reset = p.realized
            p.unrealized_at_reset = p.unrealized(self.bid[p.instrument_id], self.ask[p.instrument_id])
            p.fees_at_reset = p.fees_known
            p.fees_realized_at_reset = p.fees_realized
        self.resets += 1
        self.day_started_ns = self.schedule.last_at_or_before(self.clock_ns)
        self.next_reset_ns = self.schedule.next_after(self.clock_ns)

    # ------------------------------------------------------------------ market data

    def set_quote(self, instrument_id: int, bid: float, ask: float, ts_ns: int) -> None:
        self.bid[instrument_id], self.ask[instrument_id] = bid, ask
        self.ts_quote[instrument_id] = ts_ns

    def set_quotes(self, ids: np.ndarray, bid: np.ndarray, ask: np.ndarray, ts: np.ndarray) -> None:
        """The latest quote of each of ``ids`` (unique, known instruments), vectorised."""
        self.bid[ids], self.ask[ids], self.ts_quote[ids] = bid, ask, ts

    def fx(self, currency: str) -> tuple[float | None, bool, float | None, str | None]:
        """``(rate, stale, age_s, via)``: account-currency value of one unit of ``currency``."""
        if currency == self.account_currency:
            return 1.0, False, None, None
        route = self.fx_route.get(currency)
        if route is None:
            return None, False, None, None
        iid, invert, symbol = route
        bid, ask = self.bid[iid], self.ask[iid]
        if not (0.0 < bid < math.inf and 0.0 < ask < math.inf):
            return None, False, None, symbol
        mid = 0.5 * (bid + ask)
        age_ns = self.clock_ns - int(self.ts_quote[iid])
        return (1.0 / mid if invert else mid), age_ns > self.fx_max_age_ns, age_ns / _NS, symbol

    # ------------------------------------------------------------------ executions

    def position(self, strategy_id: int, instrument_id: int) -> Position:
        key = (int(strategy_id), int(instrument_id))
        p = self.positions.get(key)
        if p is None:
            if not (0 < key[1] < len(self.known) and self.known[key[1]]):
                raise KeyError(f"instrument id {key[1]} is not in the registry")
            p = self.positions[key] = Position(key[0], key[1], float(self.multiplier[key[1]]))
        return p

    def apply_fill(
        self,
        strategy_id: int,
        instrument_id: int,
        fill_id: int,
        quantity: float,
        price: float,
        commission: float | None = None,
        ts_ns: int = 0,
    ) -> float:
        """A new execution; returns the realized P&L it made (instrument currency). A fill id
        seen before is a duplicate report and changes nothing (counted)."""
        if fill_id in self._owner:
            self.anomalies["duplicate_fill"] += 1
            return 0.0
        p = self.position(strategy_id, instrument_id)
        if commission is not None and not math.isfinite(commission):
            commission = None
        if commission is None and fill_id in self._early:
            commission = self._early.pop(fill_id)
        self._owner[fill_id] = p
        self.advance(ts_ns)
        return p.add(Execution(fill_id, float(quantity), float(price), commission, int(ts_ns)))

    def attach_commission(self, fill_id: int, commission: float) -> bool:
        """The commission report of ``fill_id``; False if that fill is unknown (kept, in case
        it arrives later, and counted)."""
        p = self._owner.get(fill_id)
        if p is None:
            self.anomalies["orphan_commission"] += 1
            self._early[fill_id] = float(commission)
            return False
        p.attach(p.by_id[fill_id], float(commission))
        return True

    def apply_correction(
        self, fill_id: int, quantity_delta: float, price: float, strategy_id: int = 0, instrument_id: int = 0, ts_ns=0
    ) -> float:
        """Restate execution ``fill_id``: quantity += ``quantity_delta`` at the corrected
        ``price``. Returns the change in realized P&L. A correction of a fill never seen is
        applied as a new fill of ``quantity_delta`` (counted as an orphan)."""
        p = self._owner.get(fill_id)
        if p is None:
            self.anomalies["orphan_correction"] += 1
            if quantity_delta == 0.0 or not instrument_id:
                return 0.0
            return self.apply_fill(strategy_id, instrument_id, fill_id, quantity_delta, price, None, ts_ns)
        self.advance(ts_ns)
        return p.correct(p.by_id[fill_id], float(quantity_delta), float(price))

    # ------------------------------------------------------------------ reports

    def amounts(self, p: Position) -> Amounts:
        """One position's amounts in the account currency."""
        out = Amounts()
        v = out.values
        iid = p.instrument_id
        rate, stale, _, _ = self.fx(self.currency[iid])
        unreal = p.unrealized(self.bid[iid], self.ask[iid])
        realized_unknown, open_unknown = p.unknown_fees()
        out.unknown_commissions = len(p.pending_by_id)
        out.fx_stale = stale
        if rate is None:
            out.reasons.add("fx")
        if unreal is None or p.unrealized_at_reset is None:
            out.reasons.add("mark")
        if realized_unknown or open_unknown:
            out.reasons.add("commission")
        conv = (lambda x: None) if rate is None else (lambda x: x * rate)
        v["fees"] = None if out.unknown_commissions else p.fees_known
        v["realized"] = None if realized_unknown else _sub(conv(p.realized), p.fees_realized)
        today = _sub(conv(p.realized - p.realized_at_reset), p.fees_realized - p.fees_realized_at_reset)
        v["realized_today"] = None if realized_unknown else today
        v["unrealized"] = None if open_unknown or unreal is None else _sub(conv(unreal), p.fee_pool)
        v["total"] = None if v["realized"] is None or v["unrealized"] is None else v["realized"] + v["unrealized"]
        if out.unknown_commissions or unreal is None or p.unrealized_at_reset is None:
            v["daily"] = None
        else:
            moved = p.realized - p.realized_at_reset + unreal - p.unrealized_at_reset
            v["daily"] = _sub(conv(moved), p.fees_known - p.fees_at_reset)
        return out

    def position_report(self, p: Position) -> dict:
        iid = p.instrument_id
        inst = self.registry.by_id(iid)
        bid, ask = float(self.bid[iid]), float(self.ask[iid])
        mark = None if p.quantity == 0.0 else (bid if p.quantity > 0.0 else ask)
        rate, stale, _, _ = self.fx(inst.currency)
        unreal = p.unrealized(bid, ask)
        return {
            "strategy_id": p.strategy_id,
            "instrument_id": iid,
            "symbol": inst.symbol,
            "currency": inst.currency,
            "multiplier": p.multiplier,
            "quantity": p.quantity,
            "avg_price": _num(p.avg_price),
            "mark": _num(mark) if mark is not None and 0.0 < mark < math.inf else None,
            "mark_age_s": (self.clock_ns - int(self.ts_quote[iid])) / _NS if self.ts_quote[iid] else None,
            "realized_local": p.realized,
            "unrealized_local": unreal,
            "fees_open": p.fee_pool,
            "fees_realized": p.fees_realized,
            "fx_rate": rate,
            "fx_stale": stale,
            "fills": len(p.executions),
            "pending_commissions": [ex.fill_id for ex in p.pending()],
            **self.amounts(p).as_dict(),
        }

    def report(self) -> dict:
        """Everything: per position, per instrument, per strategy and in total."""
        total, by_strategy, by_instrument = Amounts(), {}, {}
        positions = []
        for key in sorted(self.positions):
            p = self.positions[key]
            a = self.amounts(p)
            total.add(a)
            by_strategy.setdefault(p.strategy_id, Amounts()).add(a)
            by_instrument.setdefault(p.instrument_id, Amounts()).add(a)
            positions.append(self.position_report(p))
        return {
            "account_currency": self.account_currency,
            "feed_time": iso(self.clock_ns),
            "day_started": iso(self.day_started_ns),
            "next_reset": iso(self.next_reset_ns),
            "daily_reset": self.schedule.describe(),
            "resets": self.resets,
            "totals": total.as_dict(),
            "strategies": {str(s): a.as_dict() for s, a in sorted(by_strategy.items())},
            "instruments": {
                self.registry.by_id(i).symbol: {"quantity": self.net_quantity(i), **a.as_dict()}
                for i, a in sorted(by_instrument.items())
            },
            "positions": positions,
            "fx": self.fx_report(),
            "anomalies": dict(self.anomalies),
        }

    def fx_report(self) -> dict:
        out = {}
        for ccy in sorted(self.fx_route):
            if ccy == self.account_currency:
                continue
            rate, stale, age, via = self.fx(ccy)
            out[ccy] = {"rate": rate, "known": rate is not None, "stale": stale, "age_s": age, "via": via}
        return out

    def totals(self) -> Amounts:
        total = Amounts()
        for p in self.positions.values():
            total.add(self.amounts(p))
        return total

    def equity(self) -> tuple[float | None, float | None, int]:
        """``(total P&L, change since the daily reset, pending commissions)`` in the account
        currency, counting the commissions known so far (the risk monitor's equity: a pending
        commission must not blind it; the count says how many are missing). The amounts are
        None when an FX rate or a needed mark is missing."""
        total: float | None = 0.0
        daily: float | None = 0.0
        pending = 0
        for p in self.positions.values():
            iid = p.instrument_id
            pending += len(p.pending_by_id)
            rate = self.fx(self.currency[iid])[0]
            unreal = p.unrealized(self.bid[iid], self.ask[iid])
            if rate is None or unreal is None:
                total = daily = None
                continue
            if total is not None:
                total += (p.realized + unreal) * rate - p.fees_known
            if daily is not None:
                if p.unrealized_at_reset is None:
                    daily = None
                else:
                    moved = p.realized - p.realized_at_reset + unreal - p.unrealized_at_reset
                    daily += moved * rate - (p.fees_known - p.fees_at_reset)
        return total, daily, pending

    def net_quantity(self, instrument_id: int) -> float:
        """Position in ``instrument_id`` summed over strategies."""
        return sum(p.quantity for (_, i), p in self.positions.items() if i == instrument_id)

    def instruments_held(self) -> set[int]:
        return {i for (_, i), p in self.positions.items() if p.quantity != 0.0}


def _sub(a: float | None, b: float) -> float | None:
    return None if a is None else a - b


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _fx_route(registry: InstrumentRegistry, currency: str) -> tuple[int, bool, str] | None:
    account = registry.account_currency
    if currency == account:
        return None
    for symbol, invert in ((f"{currency}{account}", False), (f"{account}{currency}", True)):
        if symbol in registry and registry.by_symbol(symbol).sec_type == "CASH":
            return registry.by_symbol(symbol).id, invert, symbol
    return None


def json_safe(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj
