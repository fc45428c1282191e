"""The broker's positions onto the feed: POSITION records of origin BROKER.

The gateway's own reconciliation (:mod:`.reconcile`) compares the engine with the broker and
blocks instruments; the support services reconcile too (the P&L service compares its ledger,
built from the feed's fills, with the broker), and they can only see what is on the feed. So
the broker's view of every position goes there, through the inbound ring (the engine passes
the records on unchanged):

* **a snapshot after every sync** — on start, after every reconnection and after 1101/1102 —
  one record per instrument the gateway streams, the broker holds, or the gateway has sent
  fills for, flagged ``Flag.SNAPSHOT``; a flat position is a record with quantity 0, so a
  position the engine or a ledger still holds but the broker does not shows as a difference;
* **each change** the broker reports afterwards (the library's ``positionEvent``, which IB
  sends after every execution and any other change), unflagged; a report that repeats the
  last published quantity and average price is not sent again.

Each record carries ``strategy_id`` 0 (the account's position: IB does not know strategies),
the quantity summed over the configured account (every managed account when none is
configured), the average price per unit (IB's ``avgCost`` divided by the contract multiplier;
NaN when flat), the broker's working buy and sell quantities as the library knows them, and
``ts_event`` = when the gateway received the report (IB gives no time for positions).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from quayside.core import wire

if TYPE_CHECKING:
    from quayside.core.broker.gateway import Gateway

__all__ = ["BrokerPositions", "BrokerPosition"]

BrokerPosition = tuple[float, float, float, float]  # quantity, avg price, working buy, working sell


class BrokerPositions:
    """Publishes the broker's positions; ``published`` counts the records sent."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.last: dict[int, BrokerPosition] = {}
        self.published = 0

    def position_of(self, ib, iid: int) -> BrokerPosition:
        """The broker's position in instrument ``iid`` as the library holds it now."""
        gw, account = self.gw, self.gw.config.account
        qty = cost = 0.0
        for p in ib.positions():
            if (account and p.account != account) or gw.market.iid_of(p.contract) != iid:
                continue
            qty += float(p.position)
            cost += float(p.position) * float(p.avgCost)
        multiplier = gw.registry.by_id(iid).multiplier
        avg = cost / qty / multiplier if qty else math.nan
        buy = sell = 0.0
        for t in ib.openTrades():
            o = t.order
            if (account and o.account and o.account != account) or gw.market.iid_of(t.contract) != iid:
                continue
            s = t.orderStatus  # all zero until the broker's first status: then the whole order works
            remaining = float(s.remaining) if (s.remaining or s.filled) else float(o.totalQuantity)
            if o.action == "BUY":
                buy += max(remaining, 0.0)
            else:
                sell += max(remaining, 0.0)
        return qty, avg, buy, sell

    def snapshot(self, ib) -> None:
        """Every instrument's position, after a sync."""
        gw = self.gw
        held = {gw.market.iid_of(p.contract) for p in ib.positions()}
        traded = {iid for iid, q in gw.router.positions.items() if q}
        for iid in sorted({*gw.market.iids, *traded, *(i for i in held if i is not None)}):
            self._send(iid, self.position_of(ib, iid), wire.Flag.SNAPSHOT)

    def on_position(self, ib, position) -> None:
        """The library's ``positionEvent``: a change, published once the gateway has synced
        (during a sync the snapshot that ends it covers every report)."""
        gw = self.gw
        if not gw.ready or (gw.config.account and position.account != gw.config.account):
            return
        iid = gw.market.iid_of(position.contract)
        if iid is None:
            return
        now = self.position_of(ib, iid)
        last = self.last.get(iid)
        if last is not None and all(a == b or (a != a and b != b) for a, b in zip(now, last, strict=True)):
            return
        self._send(iid, now, 0)

    def _send(self, iid: int, pos: BrokerPosition, flags: int) -> None:
        gw = self.gw
        self.last[iid] = pos
        self.published += 1
        gw.inbound.send(gw.records.position(iid, time.time_ns(), *pos, flags=flags))
