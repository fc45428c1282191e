"""Orders: ORDER and CANCEL records from the engine to IB, and IB's order statuses, executions
and commission reports back to the engine as ORDER_STATUS and FILL records.

**Out.** An ORDER becomes a limit or market order with the record's time in force, tagged
``orderRef = "qs:<strategy id>:<engine order id>"`` and sent through the central rate limiter
(cancels first: they only ever reduce risk). When the library takes it, the engine gets
ORDER_STATUS PENDING_SUBMIT with the IB order id and the send time as ``ts_event``. An ORDER
the gateway cannot send is REJECTED at once: not connected (504, IB's code), an instrument the
registry does not know (200), or older than ``max_order_age_ms`` (code -1: it waited in the ring
while the gateway was down). A CANCEL for an order still waiting for the limiter takes it out
of the queue (CANCELLED); one that arrives while disconnected waits for the reconnection.

**Back.** Each status change is one ORDER_STATUS (PARTIALLY_FILLED while some but not all is
filled; REJECTED with the broker's code when IB refused the order). Each execution is one FILL
at once, commission NaN and no COMMISSION_KNOWN; its commission report later becomes a FILL
with the same ``fill_id``, quantity 0, the commission and COMMISSION_KNOWN (when the report is
already there, as after a reconnect, the first FILL carries it). A corrected execution (same
execId base, higher last component) is a FILL with CORRECTION, the same ``fill_id`` and the
quantity difference. Executions are deduplicated by execId through the ledger, so neither a
duplicated report nor the executions re-requested after a reconnect make a second fill.

**Pacing on an order id** (error 100/420 answering a placeOrder or cancelOrder): the library
then marks the trade Cancelled, though IB may or may not have it. The gateway tells the engine
nothing yet, backs the rate limiter off and asks the broker for its open and completed orders;
the order is then working (and a wanted cancel is sent again), done, or was never placed
(REJECTED with the pacing code).
"""

from __future__ import annotations

import collections
import math
import time
from typing import TYPE_CHECKING

import numpy as np
from loguru import logger

from quayside.core import wire
from quayside.core.broker.ib import DONE_STATUSES, STATUS, ns_of
from quayside.core.broker.ledger import OrderEntry, exec_base, exec_version, parse_order_ref
from quayside.core.wire import Flag, OrderStatus, RecordKind

if TYPE_CHECKING:
    from quayside.core.broker.gateway import Gateway

__all__ = ["OrderRouter", "PACING_CODES", "NOT_CONNECTED", "UNKNOWN_INSTRUMENT", "TOO_OLD"]

PACING_CODES = frozenset({100, 420})
NOT_CONNECTED = 504  # IB: "Not connected"
UNKNOWN_INSTRUMENT = 200  # IB: "No security definition has been found"
TOO_OLD = -1  # the gateway's own: the ORDER waited longer than max_order_age_ms
#: errors on an order id that say a cancel failed, not that the order did
CANCEL_FAILED_CODES = frozenset({161, 10147, 10148, 10149})
#: errors on an order id that are notices (ib_insync's warnings, the cancel acknowledgement)
NOTICE_CODES = frozenset({110, 165, 202, 399, 404, 434, 492, 10167})
TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.INACTIVE})
_UNSET = 1e300


class OrderRouter:
    """The order side of the gateway. ``sent``/``cancels_sent``/``rejected`` count orders;
    ``fills``, ``corrections``, ``duplicates``, ``foreign`` count executions."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.ledger = gw.ledger
        self._new: collections.deque[OrderEntry] = collections.deque()
        self._cancels: collections.deque[OrderEntry] = collections.deque()
        self._trades: dict[int, object] = {}  # id(entry) -> the library's Trade, this connection
        self.pending_commission: dict[str, object] = {}  # execId -> the library's Fill
        self.positions: dict[int, float] = collections.defaultdict(float)  # from the fills sent
        self.sent = self.cancels_sent = self.rejected = 0
        self.fills = self.corrections = self.duplicates = self.foreign = 0
        for fe in self.ledger.fills.values():
            if not fe.baseline and fe.engine_id:
                self.positions[fe.instrument_id] += fe.quantity

    # ------------------------------------------------------------------ engine -> IB

    def on_outbound(self, records: np.ndarray) -> None:
        """Handle records polled from the outbound ring (copied out)."""
        for rec in records:
            kind = int(rec["kind"])
            if kind == RecordKind.ORDER:
                self._on_order(np.asarray(rec).reshape(1).view(wire.order_dtype)[0])
            elif kind == RecordKind.CANCEL:
                self._on_cancel(np.asarray(rec).reshape(1).view(wire.cancel_dtype)[0])
            else:
                logger.warning("gateway: ignoring a {} record on the outbound ring", wire.enum_name(RecordKind, kind))

    def _on_order(self, o) -> None:
        gw = self.gw
        now = time.time_ns()
        entry = OrderEntry(
            engine_id=int(o["order_id"]),
            strategy_id=int(o["strategy_id"]),
            instrument_id=int(o["instrument_id"]),
            side=int(o["side"]),
            quantity=float(o["quantity"]),
            ts_created=now,
            order_type=int(o["order_type"]),
            tif=int(o["tif"]),
            price=float(o["price"]),
        )
        displaced = self.ledger.add_order(entry)
        if displaced is not None:
            logger.error(
                "gateway: engine order id {} reused while IB order {} still works: the engine restarted",
                entry.engine_id,
                displaced.ib_order_id,
            )
        age_ms = (now - int(o["ts_event"])) / 1e6
        if entry.instrument_id not in gw.market.contracts:
            self._reject(entry, UNKNOWN_INSTRUMENT, "instrument not in the registry")
        elif age_ms > gw.config.max_order_age_ms:
            self._reject(entry, TOO_OLD, f"{age_ms:.0f} ms old")
        elif not gw.connected:
            self._reject(entry, NOT_CONNECTED, "not connected to IB")
        else:
            self._new.append(entry)

    def _on_cancel(self, c) -> None:
        entry = self.ledger.orders.get(int(c["order_id"]))
        if entry is None or entry.terminal:
            return  # unknown (sent before this gateway's memory) or already done: nothing to cancel
        if entry.cancel_wanted:
            return
        entry.cancel_wanted = True
        if entry.ib_order_id == 0:  # still waiting for the limiter: it never leaves the gateway
            self._new = collections.deque(e for e in self._new if e is not entry)
            self.report(entry, OrderStatus.CANCELLED)
            return
        self._cancels.append(entry)

    def pump(self) -> None:
        """Send what the rate limiter lets out now (cancels first)."""
        gw = self.gw
        if not gw.ready:
            return
        while self._cancels or self._new:
            if not gw.limiter.try_acquire():
                return
            if self._cancels:
                self._send_cancel(self._cancels.popleft())
            else:
                self._place(self._new.popleft())

    def _place(self, entry: OrderEntry) -> None:
        gw = self.gw
        waited_ms = (time.time_ns() - entry.ts_created) / 1e6
        if waited_ms > gw.config.max_order_age_ms:  # held up by a sync or the limiter
            self._reject(entry, TOO_OLD, f"waited {waited_ms:.0f} ms in the gateway")
            return
        inst = gw.registry.by_id(entry.instrument_id)
        try:
            order = gw.lib.order(
                side=entry.side,
                order_type=entry.order_type,
                tif=entry.tif,
                price=entry.price,
                quantity=entry.quantity,
                order_ref=entry.ref,
                account=gw.config.account,
                tick_size=inst.tick_size,
            )
        except ValueError as exc:
            self._reject(entry, -2, str(exc))
            return
        ib = gw.ib
        try:
            trade = ib.placeOrder(gw.market.contracts[entry.instrument_id], order)
        except ConnectionError:
            self._reject(entry, NOT_CONNECTED, "connection lost while sending")
            return
        self.sent += 1
        entry.client_id, entry.ib_order_id = gw.client_id, trade.order.orderId
        self._trades[id(entry)] = trade
        self.ledger.update_order(entry)
        self.report(entry, OrderStatus.PENDING_SUBMIT, ts=time.time_ns())

    def _send_cancel(self, entry: OrderEntry) -> None:
        if entry.terminal:
            return
        gw = self.gw
        trade = self._trades.get(id(entry))
        order = (
            trade.order if trade is not None else gw.lib.order_handle(entry.client_id, entry.ib_order_id, entry.perm_id)
        )
        try:
            gw.ib.cancelOrder(order)
            self.cancels_sent += 1
        except ConnectionError:
            self._cancels.appendleft(entry)  # sent again after the reconnection

    def _reject(self, entry: OrderEntry, code: int, why: str) -> None:
        self.rejected += 1
        logger.warning("gateway: engine order {} rejected ({}): {}", entry.engine_id, code, why)
        self.report(entry, OrderStatus.REJECTED, error_code=code)

    def connection_lost(self) -> None:
        """Orders not yet handed to the library are rejected (the engine decides again once data
        is fresh); cancels stay queued for the reconnection."""
        while self._new:
            self._reject(self._new.popleft(), NOT_CONNECTED, "connection lost before it was sent")
        self._trades.clear()

    # ------------------------------------------------------------------ status

    def report(self, entry: OrderEntry, status: int, *, filled=None, avg=math.nan, error_code=0, ts=None) -> None:
        """Tell the engine about ``entry`` if anything changed (nothing after a final status)."""
        if entry.terminal or not self.ledger.is_current(entry):
            if status in TERMINAL:
                self.ledger.displaced.pop((entry.client_id, entry.ib_order_id), None)
            return
        filled = entry.filled if filled is None else filled
        if status == entry.status and filled == entry.reported_filled and not error_code:
            return
        entry.status, entry.reported_filled = status, filled
        entry.error_code = error_code or entry.error_code
        entry.terminal = status in TERMINAL
        self.ledger.update_order(entry)
        gw = self.gw
        gw.inbound.send(
            gw.records.order_status(
                strategy_id=entry.strategy_id,
                iid=entry.instrument_id,
                order_id=entry.engine_id,
                status=status,
                ts_event=ts or time.time_ns(),
                error_code=error_code,
                broker_order_id=entry.ib_order_id,
                perm_id=entry.perm_id,
                filled=filled,
                avg_price=avg,
            )
        )

    def entry_of(self, order) -> OrderEntry | None:
        return self.ledger.find_order(order.clientId, order.orderId, order.permId)

    def on_order_status(self, trade) -> None:
        entry = self.entry_of(trade.order)
        if entry is None:
            return
        self._trades[id(entry)] = trade
        if trade.order.permId and trade.order.permId != entry.perm_id:
            entry.perm_id = trade.order.permId
            self.ledger.update_order(entry)
        s = trade.orderStatus
        code = trade.log[-1].errorCode if trade.log else 0
        status = STATUS.get(s.status)
        if status is None:
            return
        if status == OrderStatus.CANCELLED and code in PACING_CODES:
            entry.uncertain, entry.error_code = True, code  # IB may not have it at all: ask before telling the engine
            self.gw.schedule_order_check()  # (the error itself slows the limiter down)
            return
        if status == OrderStatus.CANCELLED and code and code not in NOTICE_CODES:
            status = OrderStatus.REJECTED
        self.report_trade_status(entry, trade, status, code if status == OrderStatus.REJECTED else 0)

    def report_trade_status(self, entry: OrderEntry, trade, status: int, code: int = 0) -> None:
        s = trade.orderStatus
        filled = float(s.filled) if 0 <= s.filled < _UNSET else entry.filled
        if status == OrderStatus.SUBMITTED and 0 < filled < entry.quantity:
            status = OrderStatus.PARTIALLY_FILLED
        avg = float(s.avgFillPrice) if filled > 0 and 0 < s.avgFillPrice < _UNSET else math.nan
        self.report(entry, status, filled=filled, avg=avg, error_code=code)

    def on_order_error(self, req_id: int, code: int, text: str) -> None:
        """An error whose request id is one of our IB order ids."""
        entry = self.ledger.find_order(self.gw.client_id, req_id)
        if entry is None or code in CANCEL_FAILED_CODES or code in PACING_CODES or code in (202,):
            return
        entry.error_code = code
        if entry.terminal and entry.status == OrderStatus.CANCELLED and (code == 110 or code not in NOTICE_CODES):
            # the broker cancelled it and only then said why (110: off the tick grid): the reason
            # follows as REJECTED with the code; the engine freed the order on CANCELLED already
            entry.terminal = False
            self.report(entry, OrderStatus.REJECTED, error_code=code)
        logger.warning("gateway: IB error {} on engine order {}: {}", code, entry.engine_id, text)

    # ------------------------------------------------------------------ executions

    def on_execution(self, fill, baseline: bool = False) -> None:
        """A live execution, or one from reqExecutions (then possibly known already)."""
        ex = fill.execution
        base, version = exec_base(ex.execId), exec_version(ex.execId)
        signed = float(ex.shares) * (1.0 if ex.side == "BOT" else -1.0)
        now = time.time_ns()
        known = self.ledger.fills.get(base)
        gw = self.gw
        if known is not None:
            if known.exec_id == ex.execId or version <= exec_version(known.exec_id):
                self.duplicates += 1
                self._commission_of(fill)
                return
            delta = signed - known.quantity
            logger.warning("gateway: execution {} corrected by {}: {:+g}", known.exec_id, ex.execId, delta)
            known.exec_id, known.quantity, known.price, known.commission_sent = ex.execId, signed, ex.price, False
            self.ledger.update_fill(base, known)
            if known.baseline or not known.engine_id:
                return
            self.corrections += 1
            self._send_fill(known, delta, math.nan, Flag.CORRECTION, ns_of(ex.time, now))
            self.positions[known.instrument_id] += delta
            self.pending_commission[ex.execId] = fill
            self._commission_of(fill)
            return
        entry = self.ledger.find_order(ex.clientId, ex.orderId, ex.permId)
        current = entry is not None and self.ledger.is_current(entry)
        iid = entry.instrument_id if entry is not None else gw.market.iid_of(fill.contract) or 0
        report = fill.commissionReport
        commission = _commission(report, ex.execId)
        fe = self.ledger.new_fill(
            base,
            exec_id=ex.execId,
            engine_id=entry.engine_id if current else 0,
            instrument_id=iid,
            strategy_id=entry.strategy_id if current else 0,
            quantity=signed,
            price=float(ex.price),
            ts_event=ns_of(ex.time, now),
            ts_recv=now,
            commission_sent=not math.isnan(commission),
            baseline=baseline or not current,
        )
        if fe.baseline:
            if not baseline:
                self.foreign += 1
                ref = parse_order_ref(ex.orderRef)
                logger.error(
                    "gateway: execution {} ({:+g} of instrument {}) is of no order this engine has working "
                    "(IB order {}, orderRef {!r}{}): not sent",
                    ex.execId,
                    signed,
                    iid,
                    ex.orderId,
                    ex.orderRef,
                    ", of an earlier engine session" if ref else "",
                )
            return
        self.fills += 1
        entry.filled += abs(signed)
        self.ledger.update_order(entry)
        self.positions[iid] += signed
        flags = Flag.COMMISSION_KNOWN if fe.commission_sent else 0
        self._send_fill(fe, signed, commission, flags, fe.ts_event)
        if not fe.commission_sent:
            self.pending_commission[ex.execId] = fill

    def _send_fill(self, fe, quantity: float, commission: float, flags: int, ts_event: int) -> None:
        gw = self.gw
        gw.inbound.send(
            gw.records.fill(
                strategy_id=fe.strategy_id,
                iid=fe.instrument_id,
                order_id=fe.engine_id,
                fill_id=fe.fill_id,
                price=fe.price,
                quantity=quantity,
                commission=commission,
                ts_event=ts_event,
                flags=flags,
            )
        )

    def on_commission(self, exec_id: str, commission: float) -> None:
        fe = self.ledger.fills.get(exec_base(exec_id))
        if fe is None or fe.exec_id != exec_id or fe.commission_sent or not abs(commission) < _UNSET:
            return  # unknown, superseded, done already, or not a commission (NaN, IB's unset)
        self.pending_commission.pop(exec_id, None)
        fe.commission_sent = True
        self.ledger.update_fill(exec_base(exec_id), fe)
        if fe.baseline or not fe.engine_id:
            return
        flags = Flag.COMMISSION_KNOWN | (Flag.CORRECTION if exec_version(exec_id) > 1 else 0)
        self._send_fill(fe, 0.0, commission, flags, time.time_ns())

    def _commission_of(self, fill) -> None:
        c = _commission(fill.commissionReport, fill.execution.execId)
        if not math.isnan(c):
            self.on_commission(fill.execution.execId, c)

    def sweep_commissions(self) -> None:
        """Commission reports the library attached without an event (executions it learnt from
        reqExecutions before it knew their order)."""
        for fill in list(self.pending_commission.values()):
            self._commission_of(fill)

    # ------------------------------------------------------------------ after a (re)connection

    def reconcile(self, open_trades, completed_trades, only_uncertain: bool = False) -> None:
        """The orders the engine counts as working against the broker's open and completed
        orders: each is working (status refreshed, a wanted cancel sent again), done (its final
        status), or unknown at the broker (INACTIVE, and an ORDER_NOT_AT_BROKER log record)."""
        gw = self.gw
        by_perm = {t.order.permId: t for t in open_trades if t.order.permId}
        by_ib = {(t.order.clientId, t.order.orderId): t for t in open_trades if t.order.orderId > 0}
        done_by_perm = {t.order.permId: t for t in completed_trades if t.order.permId}
        done_by_ref: dict[str, list] = collections.defaultdict(list)
        for t in completed_trades:
            done_by_ref[t.order.orderRef].append(t)
        for entry in list(self.ledger.working()):
            if only_uncertain and not entry.uncertain:
                continue
            if entry.ib_order_id == 0:
                continue  # still waiting for the limiter
            t = by_perm.get(entry.perm_id) or by_ib.get((entry.client_id, entry.ib_order_id))
            if t is not None:
                entry.uncertain = False
                self._trades[id(entry)] = t
                if t.order.permId and not entry.perm_id:
                    entry.perm_id = t.order.permId
                    self.ledger.update_order(entry)
                self.report_trade_status(entry, t, STATUS.get(t.orderStatus.status, OrderStatus.SUBMITTED))
                if entry.cancel_wanted and not any(e is entry for e in self._cancels):
                    self._cancels.append(entry)
                continue
            t = done_by_perm.get(entry.perm_id) if entry.perm_id else None
            if t is None:  # never acknowledged before the connection went: find it by orderRef
                candidates = [
                    c for c in done_by_ref.get(entry.ref, ()) if not self.ledger.find_order(perm_id=c.order.permId)
                ]
                t = max(candidates, key=lambda c: c.order.permId) if candidates else None
            if t is not None:
                entry.uncertain = False
                if t.order.permId:
                    entry.perm_id = t.order.permId
                    self.ledger.update_order(entry)
                status = STATUS.get(t.orderStatus.status, OrderStatus.CANCELLED)
                self.report(entry, status if status in TERMINAL else OrderStatus.CANCELLED)
                continue
            if entry.uncertain:  # a pacing error answered its placeOrder: IB never had it
                entry.uncertain = False
                self.report(entry, OrderStatus.REJECTED, error_code=entry.error_code or 100)
                continue
            logger.error(
                "gateway: engine order {} (IB order {}) is not at the broker: lost on the way; reported inactive",
                entry.engine_id,
                entry.ib_order_id,
            )
            gw.inbound.send(
                gw.records.log(
                    wire.LogCode.ORDER_NOT_AT_BROKER,
                    wire.LogLevel.ERROR,
                    entry.instrument_id,
                    entry.engine_id,
                    entry.ib_order_id,
                )
            )
            self.report(entry, OrderStatus.INACTIVE)

    def orphans(self, open_trades) -> dict[int, int]:
        """``{instrument id: count}`` of working orders at the broker placed by this client (or
        tagged by a gateway) that no order of the running engine owns."""
        gw = self.gw
        out: dict[int, int] = collections.defaultdict(int)
        for t in open_trades:
            if t.orderStatus.status in DONE_STATUSES:
                continue
            if t.order.clientId != gw.client_id and parse_order_ref(t.order.orderRef) is None:
                continue
            entry = self.entry_of(t.order)
            if entry is not None and self.ledger.is_current(entry) and not entry.terminal:
                continue
            iid = gw.market.iid_of(t.contract)
            if iid:
                out[iid] += 1
        return dict(out)


def _commission(report, exec_id: str) -> float:
    if report is None or report.execId != exec_id:
        return math.nan
    c = float(report.commission)
    return c if math.isfinite(c) and abs(c) < _UNSET else math.nan
