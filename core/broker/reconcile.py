"""Reconciliation: the broker's positions and working orders against the engine's.

**The engine's positions** come from the engine itself: its POSITION records on the feed ring
(read from the oldest record still there, the latest per instrument kept). That is the view the
engine's risk checks use, so it is the one that must agree with the broker; it also catches an
engine that restarted flat while the broker still holds positions, which the gateway's own
bookkeeping could not see. The comparison waits until the engine has applied every FILL the
gateway sent (the inbound ring's consumer position has passed the last one). When there is no
feed ring (``engine_positions = "gateway"``, or ``"auto"`` with no feed file), the gateway's
own sum of the fills it sent stands in: every fill the engine applies comes through the gateway.

**A break** is a position that differs, or a working order at the broker that the engine does not
know (an orphan). It is confirmed only when ``confirmations`` consecutive checks (one every
``reconcile_interval_s``) see the very same difference: a fill in flight (a position update
that arrives a moment before or after its execution report) shows up as a difference that
comes and goes, a lost or foreign fill as one that stays, however busy the instrument is. A
confirmed break is reported on the feed (a RECONCILIATION_BREAK log record through the inbound
ring: engine position, broker position) and the engine is told to BLOCK the instrument; once
two consecutive checks find the two in agreement the engine gets UNBLOCK and a
RECONCILIATION_RESOLVED log record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loguru import logger

from quayside.core import wire
from quayside.core.feed.ring import FeedReader
from quayside.core.feed.segment import RingLayoutError, resolve

if TYPE_CHECKING:
    from quayside.core.broker.gateway import Gateway

__all__ = ["EngineView", "Reconciler", "PositionCheck", "broker_positions", "TOLERANCE"]

TOLERANCE = 1e-6


class EngineView:
    """The engine's latest POSITION per instrument, from its feed ring (reattached when the
    engine restarts and makes a new one)."""

    def __init__(self, feed: str):
        self.path = resolve(feed)
        self.reader: FeedReader | None = None
        self._inode: int | None = None
        self.positions: dict[int, float] = {}
        self.restarts = 0  # times a new feed (a restarted engine) was found

    def available(self) -> bool:
        return self.path.exists()

    def refresh(self) -> bool:
        """Read what is new; False if there is no usable feed. A new feed file means a new
        engine, which starts flat: the positions are forgotten (``restarts`` goes up)."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False
        if inode != self._inode:
            if self.reader is not None:
                self.reader.close()
                self.restarts += 1
            try:
                self.reader = FeedReader(self.path, start="oldest")
            except (RingLayoutError, OSError, ValueError) as exc:
                logger.warning("gateway: cannot read the engine's feed {}: {}", self.path, exc)
                self.reader = None
                return False
            self._inode = inode
            self.positions = {}
        lost = self.reader.lost
        while len(batch := self.reader.read()):
            pos = batch[batch["kind"] == wire.RecordKind.POSITION].view(wire.position_dtype)
            pos = pos[pos["origin"] == wire.PositionOrigin.ENGINE]
            for iid, qty in zip(pos["instrument_id"].tolist(), pos["quantity"].tolist(), strict=True):
                self.positions[iid] = qty
        if self.reader.lost != lost:
            logger.warning("gateway: the feed lapped the reconciliation reader ({} records lost)", self.reader.lost)
        return True

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


@dataclass
class Reconciler:
    """The break state machine. ``send_control(command, iid)`` and ``send_log(code, level, iid,
    a0, a1)`` reach the engine; ``blocked`` is the set of instruments the engine was told to
    block (kept in the gateway's ledger, so a restarted gateway can still unblock them)."""

    send_control: Callable[[int, int], None]
    send_log: Callable[..., None]
    blocked: set[int]
    on_blocked_change: Callable[[int, bool], None] = lambda iid, on: None
    confirmations: int = 3
    seen: dict[int, tuple[tuple, int]] = field(default_factory=dict)  # iid -> (difference, times seen)
    breaks: int = 0
    resolutions: int = 0

    def check(self, engine: dict[int, float], broker: dict[int, float], orphans: dict[int, int]) -> None:
        """One comparison of the engine's positions, the broker's, and the orphan orders."""
        for iid in sorted(set(engine) | set(broker) | set(orphans) | self.blocked | set(self.seen)):
            e, b = engine.get(iid, 0.0), broker.get(iid, 0.0)
            n_orphans = orphans.get(iid, 0)
            bad = abs(e - b) > TOLERANCE * max(1.0, abs(b)) or n_orphans > 0
            key = (round(e - b, 9), n_orphans) if bad else (0.0, 0)
            last, times = self.seen.get(iid, (None, 0))
            times = times + 1 if last == key else 1
            self.seen[iid] = (key, times)
            if bad and iid not in self.blocked and times >= self.confirmations:
                self._break(iid, e, b, n_orphans)
            elif not bad:
                if iid in self.blocked and times >= 2:
                    self._resolve(iid, e, b)
                if iid not in self.blocked:
                    self.seen.pop(iid, None)

    def _break(self, iid: int, e: float, b: float, n_orphans: int) -> None:
        self.breaks += 1
        logger.error(
            "gateway: reconciliation break on instrument {}: engine {}, broker {}, {} unknown working orders",
            iid,
            e,
            b,
            n_orphans,
        )
        self.send_log(wire.LogCode.RECONCILIATION_BREAK, wire.LogLevel.ERROR, iid, e, b)
        self.send_control(wire.ControlCommand.BLOCK, iid)
        self.blocked.add(iid)
        self.on_blocked_change(iid, True)

    def _resolve(self, iid: int, e: float, b: float) -> None:
        self.resolutions += 1
        logger.warning("gateway: reconciliation break on instrument {} resolved: engine {}, broker {}", iid, e, b)
        self.send_control(wire.ControlCommand.UNBLOCK, iid)
        self.send_log(wire.LogCode.RECONCILIATION_RESOLVED, wire.LogLevel.WARNING, iid, e, b)
        self.blocked.discard(iid)
        self.on_blocked_change(iid, False)

    def engine_restarted(self) -> None:
        """A new engine knows nothing of earlier BLOCKs: find the breaks again."""
        self.seen.clear()
        for iid in list(self.blocked):
            self.blocked.discard(iid)
            self.on_blocked_change(iid, False)


def broker_positions(positions, account: str, iid_of: Callable[[object], int | None]) -> dict[int, float]:
    """``{instrument id: quantity}`` from the library's Position list (one account)."""
    out: dict[int, float] = {}
    for p in positions:
        if account and p.account != account:
            continue
        iid = iid_of(p.contract)
        if iid is None:
            continue
        out[iid] = out.get(iid, 0.0) + float(p.position)
    return out


class PositionCheck:
    """What the gateway runs every ``reconcile_interval_s`` while it is synced: the engine's
    positions (:class:`EngineView`, or the gateway's own fills), the broker's (the library keeps
    them current after ``reqPositions``) and the broker's working orders (looked at again once
    per interval) go through the :class:`Reconciler`."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        config = gw.config
        self.view = EngineView(config.rings.feed) if config.engine_positions != "gateway" else None
        self.reconciler = Reconciler(
            send_control=lambda cmd, iid: gw.inbound.send(gw.records.control(cmd, iid)),
            send_log=lambda code, level, iid, a0, a1: gw.inbound.send(gw.records.log(code, level, iid, a0=a0, a1=a1)),
            blocked=set(gw.ledger.blocked),
            on_blocked_change=gw.ledger.set_blocked,
            confirmations=config.reconcile_confirmations,
        )
        self.open_orders: list = []  # the broker's working orders at the last look ...
        self.open_orders_at = 0.0  # ... and when that was (monotonic)
        self._refreshing = False
        self._feed_restarts = 0

    def set_open_orders(self, trades: list) -> None:
        self.open_orders, self.open_orders_at = trades, time.monotonic()

    def engine_positions(self) -> dict[int, float] | None:
        """The engine's positions, or None while they cannot be known (fills in flight)."""
        gw = self.gw
        if self.view is not None and self.view.available():
            if not gw.inbound.engine_caught_up() or not self.view.refresh():
                return None
            if self.view.restarts != self._feed_restarts:
                self._feed_restarts = self.view.restarts
                logger.warning("gateway: the engine restarted (new feed ring): reconciling from scratch")
                self.reconciler.engine_restarted()
            return self.view.positions
        if gw.config.engine_positions == "feed":
            return None
        return gw.router.positions

    def check(self) -> None:
        gw, ib = self.gw, self.gw.ib
        engine = self.engine_positions()
        if engine is None or ib is None:
            return
        broker = broker_positions(ib.positions(), gw.config.account, gw.market.iid_of)
        self.reconciler.check(engine, broker, gw.router.orphans(self.open_orders))
        stale = time.monotonic() - self.open_orders_at >= gw.config.reconcile_interval_s
        if stale and not self._refreshing:  # the next check sees the broker's working orders as they are now
            self._refreshing = True
            gw.spawn(self._refresh(ib), "open orders")

    async def _refresh(self, ib) -> None:
        try:
            got = await self.gw.request("open orders", ib.reqAllOpenOrdersAsync)
            if ib is self.gw.ib:
                self.set_open_orders(got)
        finally:
            self._refreshing = False

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
