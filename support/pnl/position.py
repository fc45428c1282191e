"""One average-cost position: executions in, realized P&L and fees out. Pure Python, no I/O.

Conventions (the P&L service's and the risk monitor's; the tests check each one by hand):

* **Average cost.** Buying into a long (or selling into a short) moves the average price to
  the quantity-weighted mean; reducing realizes ``closed × (price − average) × multiplier``
  (sign of the position) and leaves the average alone; a fill that goes *through* zero
  realizes on the closing part and opens the rest at the fill's price. Flat means no average.
  ``realized`` is in the instrument's currency, gross of fees.
* **Fees** (commissions, in the account currency, as the wire format says) are part of the
  cost of what they bought, as at IB: the part of a fill's commission that belongs to its
  *closing* quantity is realized at once, the part that belongs to its *opening* quantity joins
  the position's open-fee pool, and the pool is realized pro rata as the position is closed
  (all of it when flat). A fill through zero splits its commission pro rata by quantity between
  the two parts.
* **Late commissions.** A commission that arrives after its fill (IB's commission report) is
  attributed exactly as if it had come with the fill: its closing part realized, its opening
  part realized for the share of that opening quantity already closed since (``survival``, the
  product of ``1 − closed/position`` over the closes of the position's current run) and pooled
  for the rest. Until it arrives the commission is *unknown*: :meth:`Position.unknown_fees`
  says whether the realized side, the open side, or both are incomplete; totals that depend on
  it are reported as unknown, never as if it were zero. A report replaces an earlier one for
  the same execution (a corrected execution gets its own report).
* **Corrections** restate an execution: its quantity becomes ``quantity + delta``, its price the
  corrected price, its commission unknown again until the corrected execution's report arrives
  (a busted execution, corrected to nothing, costs nothing). The position is then recomputed
  from its executions in order, as if the execution had been right from the start: the
  average, the realized P&L and the fee attribution of every later execution follow. What this
  changes in P&L realized before the last daily reset is booked in the current day (the day's
  opening snapshot is not restated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Execution", "Position"]

_FLAT_TOL = 1e-10  # relative: a remainder this small against the quantities involved is zero


@dataclass(slots=True)
class Execution:
    """One fill as the ledger knows it (the latest version after corrections)."""

    fill_id: int
    quantity: float  # signed
    price: float
    commission: float | None  # account currency; None = not known yet
    ts_event: int
    # how it was applied, for commissions that arrive later (set by Position._apply)
    close_frac: float = 0.0  # share of |quantity| that closed an existing position
    run: int = 0  # the position's run (flat to flat) its opening part belongs to
    survival: float = 1.0  # the run's survival factor when the opening part was added


class Position:
    """Average-cost position of one (strategy, instrument) pair."""

    __slots__ = (
        "avg_price",
        "by_id",
        "executions",
        "fee_pool",
        "fees_at_reset",
        "fees_realized",
        "fees_realized_at_reset",
        "instrument_id",
        "multiplier",
        "pending_by_id",
        "quantity",
        "realized",
        "realized_at_reset",
        "run",
        "strategy_id",
        "survival",
        "ts_last_fill",
        "unrealized_at_reset",
    )

    def __init__(self, strategy_id: int, instrument_id: int, multiplier: float = 1.0):
        self.strategy_id = strategy_id
        self.instrument_id = instrument_id
        self.multiplier = float(multiplier)
        self.executions: list[Execution] = []
        self.by_id: dict[int, Execution] = {}
        self.pending_by_id: dict[int, Execution] = {}  # commission not known yet
        self._clear()
        # the day's opening snapshot (see Ledger.reset_day): local currency, fees in account ccy
        self.realized_at_reset = 0.0
        self.unrealized_at_reset: float | None = 0.0
        self.fees_at_reset = 0.0  # fees_known then
        self.fees_realized_at_reset = 0.0
        self.ts_last_fill = 0

    def _clear(self) -> None:
        self.quantity = 0.0
        self.avg_price = math.nan
        self.realized = 0.0  # instrument currency, gross of fees, multiplier applied
        self.fee_pool = 0.0  # known fees of the open quantity, account currency
        self.fees_realized = 0.0  # known fees realized, account currency
        self.run = 0
        self.survival = 1.0

    # ------------------------------------------------------------------ executions

    def add(self, ex: Execution) -> float:
        """Apply a new execution; returns the realized P&L it made (instrument currency)."""
        self.executions.append(ex)
        self.by_id[ex.fill_id] = ex
        if ex.commission is None:
            self.pending_by_id[ex.fill_id] = ex
        self.ts_last_fill = max(self.ts_last_fill, ex.ts_event)
        before = self.realized
        self._apply(ex)
        if ex.commission is not None:
            self._attribute(ex, ex.commission)
        return self.realized - before

    def attach(self, ex: Execution, commission: float) -> None:
        """The commission report of ``ex`` (replacing an earlier report for it)."""
        delta = commission - (ex.commission or 0.0)
        ex.commission = commission
        self.pending_by_id.pop(ex.fill_id, None)
        self._attribute(ex, delta)

    def correct(self, ex: Execution, quantity_delta: float, price: float) -> float:
        """Restate ``ex`` and recompute the position; returns the change in realized P&L."""
        before = self.realized
        ex.quantity += quantity_delta
        if abs(ex.quantity) <= _FLAT_TOL * max(abs(quantity_delta), 1.0):
            ex.quantity = 0.0
        ex.price = price
        ex.commission = 0.0 if ex.quantity == 0.0 else None  # a bust costs nothing
        if ex.commission is None:
            self.pending_by_id[ex.fill_id] = ex
        else:
            self.pending_by_id.pop(ex.fill_id, None)
        self.replay()
        return self.realized - before

    def replay(self) -> None:
        """Recompute quantity, average, realized P&L and fees from the executions in order."""
        self._clear()
        for ex in self.executions:
            self._apply(ex)
            if ex.commission is not None:
                self._attribute(ex, ex.commission)

    def _apply(self, ex: Execution) -> None:
        qty, price = ex.quantity, ex.price
        pos = self.quantity
        if qty == 0.0:
            ex.close_frac, ex.run, ex.survival = 0.0, self.run, self.survival
            return
        if pos == 0.0 or (pos > 0.0) == (qty > 0.0):  # opening or adding
            new = pos + qty
            self.avg_price = price if pos == 0.0 else (self.avg_price * abs(pos) + price * abs(qty)) / abs(new)
            self.quantity = new
            ex.close_frac, ex.run, ex.survival = 0.0, self.run, self.survival
            return
        closed = min(abs(qty), abs(pos))
        sign = 1.0 if pos > 0.0 else -1.0
        self.realized += closed * (price - self.avg_price) * sign * self.multiplier
        remainder = abs(qty) - closed
        tol = _FLAT_TOL * max(abs(pos), abs(qty))
        if closed >= abs(pos) - tol:  # the whole position closed: the run ends
            self.fees_realized += self.fee_pool
            self.fee_pool = 0.0
            self.run += 1
            self.survival = 1.0
            if remainder > tol:  # through zero: the rest opens a new position at this price
                self.quantity = math.copysign(remainder, qty)
                self.avg_price = price
            else:
                self.quantity = 0.0
                self.avg_price = math.nan
        else:
            share = closed / abs(pos)
            released = self.fee_pool * share
            self.fees_realized += released
            self.fee_pool -= released
            self.survival *= 1.0 - share
            self.quantity = pos + qty
        ex.close_frac = closed / abs(qty)
        ex.run, ex.survival = self.run, self.survival

    def _open_share(self, ex: Execution) -> float:
        """Share of ``ex``'s opening quantity still in the position."""
        if ex.run != self.run or ex.survival <= 0.0 or self.quantity == 0.0:
            return 0.0
        return min(self.survival / ex.survival, 1.0)

    def _attribute(self, ex: Execution, fee: float) -> None:
        if fee == 0.0:
            return
        closing = fee * ex.close_frac
        opening = fee - closing
        still_open = opening * self._open_share(ex)
        self.fees_realized += closing + (opening - still_open)
        self.fee_pool += still_open

    # ------------------------------------------------------------------ what is known

    def pending(self) -> list[Execution]:
        """Executions whose commission is not known yet."""
        return list(self.pending_by_id.values())

    def unknown_fees(self) -> tuple[bool, bool]:
        """``(realized side incomplete, open side incomplete)`` for the pending commissions."""
        realized = opened = False
        for ex in self.pending_by_id.values():
            share = (1.0 - ex.close_frac) * self._open_share(ex)
            opened |= share > 0.0
            realized |= share < 1.0
        return realized, opened

    def unrealized(self, bid: float, ask: float) -> float | None:
        """Unrealized P&L in the instrument's currency, gross of fees: longs marked at the bid,
        shorts at the ask; None when that side has no price. Flat is 0."""
        q = self.quantity
        if q == 0.0:
            return 0.0
        mark = bid if q > 0.0 else ask
        if not (0.0 < mark < math.inf):
            return None
        return (mark - self.avg_price) * q * self.multiplier

    @property
    def fees_known(self) -> float:
        """Every known commission of this position, realized or pooled."""
        return self.fees_realized + self.fee_pool
