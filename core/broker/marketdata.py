"""Market data: the configured instruments' contracts, their subscriptions, and the QUOTE and
TRADE records made from the library's tickers.

Each instrument gets a streaming top-of-book subscription (``reqMktData``) and, with
``tick_by_tick``, a tick-by-tick BidAsk one on the same ticker. The library fires
``pendingTickersEvent`` once per received packet with the tickers it changed. With
tick-by-tick, each BidAsk tick becomes one QUOTE: IB sends bid and ask (and sizes) together
there, while ``reqMktData`` sends them as separate ticks, which a packet boundary can split into
a half-updated, even locked or crossed, book; without it, the ticker's top of book after each
packet becomes one QUOTE when it changed. Each last-trade tick becomes one TRADE. Records go to
the inbound ring with ``ts_recv`` = the gateway's clock when it handled the packet and
``ts_event`` = the packet's arrival as the library stamped it (ib_insync keeps no exchange time
for these ticks).

Staleness: :meth:`mark_stale` tells the engine (CONTROL MARK_STALE, all instruments) and
remembers every instrument; the first fresh quote of each afterwards is followed by a
MARK_FRESH for it (the quote itself already clears the engine's stale flag). Quotes that are
not fresh — received in the packet that brought the bad news, or while IB is unreachable —
carry ``Flag.STALE``, which keeps the engine's flag up.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from loguru import logger

from quayside.core import wire
from quayside.core.broker.ib import ns_of, price_or_nan

if TYPE_CHECKING:
    from quayside.core.broker.gateway import Gateway

__all__ = ["MarketData", "LAST_TICK_TYPES"]

#: tick types of a last trade (price with size): delayed or not
LAST_TICK_TYPES = (4, 68)


def _same(a: tuple, b: tuple | None) -> bool:
    if b is None:
        return False
    return all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))


class MarketData:
    """Contracts and subscriptions of the configured instruments."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        lib, registry = gw.lib, gw.registry
        self.iids = [registry.by_symbol(s).id for s in gw.config.instruments]
        self.contracts = {i.id: lib.contract(i) for i in registry}  # every instrument may be traded
        self.qualified: set[int] = set()
        self._by_con_id: dict[int, int] = {}
        self._by_key: dict[tuple, int] = {}
        self._by_object: dict[int, int] = {}
        self._index()
        self.subscribed: set[int] = set()
        self.last: dict[int, tuple] = {}
        self.awaiting_fresh: set[int] = set()
        self.stale_at = 0  # when data was last declared stale (ns): quotes received before are stale
        self.link_down = False  # between 1100 and 1101/1102
        self.quotes = self.trades = 0
        self.tick_by_tick = gw.config.tick_by_tick

    # ------------------------------------------------------------------ contracts

    def _index(self) -> None:
        for iid, c in self.contracts.items():
            self._by_object[id(c)] = iid
            if c.conId:
                self._by_con_id[c.conId] = iid
            self._by_key[self.gw.lib.contract_key(c)] = iid

    def iid_of(self, contract) -> int | None:
        """The instrument id of a contract from the broker (position, order, execution)."""
        if contract is None:
            return None
        iid = self._by_object.get(id(contract))
        if iid is None and contract.conId:
            iid = self._by_con_id.get(contract.conId)
        if iid is None:
            iid = self._by_key.get(self.gw.lib.contract_key(contract))
        return iid

    async def qualify(self, ib) -> None:
        """Ask the broker for the conIds of the contracts not yet qualified (retried on pacing;
        an instrument the broker does not know is logged and left unqualified)."""
        todo = [iid for iid in self.contracts if iid not in self.qualified]
        for iid in todo:
            contract = self.contracts[iid]
            got = await self.gw.request(
                f"contract details of {contract.symbol}",
                lambda c=contract: ib.qualifyContractsAsync(c),
                accept_empty=True,
            )
            if got:
                self.qualified.add(iid)
            elif iid in self.iids:
                logger.error("gateway: the broker does not know {} ({}); it is not streamed", contract, iid)
        self._index()

    # ------------------------------------------------------------------ subscriptions

    async def subscribe_all(self, ib, cancel_first: bool) -> None:
        """(Re)subscribe every configured instrument. ``cancel_first`` when the broker may still
        hold the old subscriptions (1102, a recovered data farm); after 1101 or a new connection
        it holds none."""
        for iid in self.iids:
            await self.subscribe(ib, iid, cancel_first)

    async def subscribe(self, ib, iid: int, cancel_first: bool = False) -> None:
        contract = self.contracts[iid]
        gw = self.gw
        if cancel_first and iid in self.subscribed:
            await gw.limiter.acquire()
            ib.cancelMktData(contract)
            if gw.config.tick_by_tick:
                await gw.limiter.acquire()
                ib.cancelTickByTickData(contract, "BidAsk")
        self.subscribed.discard(iid)
        await gw.limiter.acquire()
        ib.reqMktData(contract, "", False, False)
        if gw.config.tick_by_tick:
            await gw.limiter.acquire()
            ib.reqTickByTickData(contract, "BidAsk", 0, False)
        self.subscribed.add(iid)

    def connection_lost(self, was_connected: bool) -> None:
        self.subscribed.clear()
        if was_connected:
            self.mark_stale("the connection to IB was lost")

    # ------------------------------------------------------------------ staleness

    def mark_stale(self, why, link_down: bool = False) -> None:
        """Tell the engine its data is stale (all instruments) and wait for fresh quotes.
        ``link_down``: IB itself is unreachable (1100): nothing that arrives is live until 1101
        or 1102 says it is back (:meth:`link_restored`)."""
        gw = self.gw
        gw.inbound.send(gw.records.control(wire.ControlCommand.MARK_STALE, 0))
        self.stale_at = time.time_ns()
        self.link_down = self.link_down or link_down
        self.awaiting_fresh = set(self.iids)
        self.last.clear()  # the next quote of every instrument goes out, changed or not
        logger.warning("gateway: market data stale ({}); the engine was told", why)

    def link_restored(self) -> None:
        self.link_down = False

    # ------------------------------------------------------------------ tickers -> records

    def on_pending_tickers(self, tickers) -> None:
        now = time.time_ns()
        gw = self.gw
        gw.expect_orders()
        for t in tickers:
            iid = self.iid_of(t.contract)
            if iid is None:
                continue
            ts = ns_of(t.time, now)
            for tick in t.ticks:
                if tick.tickType in LAST_TICK_TYPES and tick.price > 0:
                    gw.inbound.send(gw.records.trade(iid, ns_of(tick.time, ts), now, tick.price, tick.size))
                    self.trades += 1
            pairs = []
            for tick in t.tickByTicks:
                if hasattr(tick, "bidPrice"):
                    pairs.append((price_or_nan(tick.bidPrice), price_or_nan(tick.askPrice), tick.bidSize, tick.askSize))
                elif hasattr(tick, "tickAttribLast") and tick.price > 0:  # Last / AllLast subscriptions
                    gw.inbound.send(gw.records.trade(iid, ns_of(tick.time, ts), now, tick.price, tick.size))
                    self.trades += 1
            if self.tick_by_tick:
                for bid, ask, bid_size, ask_size in pairs:
                    self._quote(iid, ts, now, (bid, ask, _size(bid_size), _size(ask_size)))
            else:
                self._quote(
                    iid, ts, now, (price_or_nan(t.bid), price_or_nan(t.ask), _size(t.bidSize), _size(t.askSize))
                )

    def _quote(self, iid: int, ts: int, now: int, q: tuple) -> None:
        if (math.isnan(q[0]) and math.isnan(q[1])) or _same(q, self.last.get(iid)):
            return
        gw = self.gw
        # a quote in the very packet that said "stale" (the library hands ticks over at the end
        # of each packet, after its errors) is older than that news; so is anything while IB
        # is unreachable: it goes out flagged STALE, which keeps the engine's flag up
        stale = self.link_down or ts <= self.stale_at
        gw.inbound.send(gw.records.quote(iid, ts, now, *q, flags=wire.Flag.STALE if stale else 0))
        self.quotes += 1
        if stale:
            return
        self.last[iid] = q
        if iid in self.awaiting_fresh:
            self.awaiting_fresh.discard(iid)
            gw.inbound.send(gw.records.control(wire.ControlCommand.MARK_FRESH, iid))


def _size(x) -> float:
    return float(x) if x is not None and math.isfinite(x) and x >= 0 else math.nan
