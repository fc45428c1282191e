"""An independent FIFO-lot book, for cross-checking the average-cost ledger in tests.

It shares no code with :mod:`quayside.support.pnl.position`: open quantity is kept as lots
(quantity, price, the lot's own commission), closed first in, first out. Realized P&L of the
two methods differs while a position is open, and must be identical whenever it is flat:
both are then the sum of every execution's cash flow. The same holds for fees, when each
lot carries the commission of its opening quantity and each close realizes its own share.

The book is given each execution's final state (after corrections, with its commission), so
a test rebuilds it from scratch whenever it wants to compare.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["FifoBook", "Lot"]


@dataclass
class Lot:
    quantity: float  # signed, open
    price: float
    fee: float  # commission still attached to the open quantity


class FifoBook:
    def __init__(self, multiplier: float = 1.0):
        self.multiplier = multiplier
        self.lots: deque[Lot] = deque()
        self.realized = 0.0  # gross, instrument currency
        self.fees_realized = 0.0

    @property
    def quantity(self) -> float:
        return sum(lot.quantity for lot in self.lots)

    def fill(self, quantity: float, price: float, commission: float = 0.0) -> None:
        if quantity == 0.0:
            self.fees_realized += commission
            return
        left = abs(quantity)
        buying = quantity > 0.0
        while left > 0.0 and self.lots and (self.lots[0].quantity > 0.0) != buying:
            lot = self.lots[0]
            size = abs(lot.quantity)
            take = min(left, size)
            direction = 1.0 if lot.quantity > 0.0 else -1.0
            self.realized += take * (price - lot.price) * direction * self.multiplier
            lot_fee = lot.fee * take / size
            self.fees_realized += lot_fee + commission * take / abs(quantity)
            lot.fee -= lot_fee
            left -= take
            if take >= size * (1.0 - 1e-12):
                self.lots.popleft()
            else:
                lot.quantity -= direction * take
        if left > 1e-12 * abs(quantity):
            self.lots.append(Lot((1.0 if buying else -1.0) * left, price, commission * left / abs(quantity)))

    @property
    def fees_open(self) -> float:
        return sum(lot.fee for lot in self.lots)
