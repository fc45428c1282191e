"""What the gateway writes into the engine's inbound ring, and how it copes with a full ring.

:class:`Records` builds the wire records (QUOTE, TRADE, ORDER_STATUS, FILL, POSITION, CONTROL, LOG) in
preallocated scratch arrays. :class:`InboundWriter` offers them to the ring; when the ring is
full (``BACK_PRESSURED``) it keeps them, in order, and retries on every :meth:`flush`:

* order statuses, fills, positions, controls and logs are never dropped: they wait for as long as it takes;
* quotes are conflated per instrument (a waiting quote is replaced by the newer one, in place),
  so a slow engine gets the latest book rather than a backlog;
* trades wait in a bounded queue (``capacity``); beyond it they are dropped and counted.

Nothing is ever written out of order: once anything waits, every new record queues behind it.
"""

from __future__ import annotations

import collections
import itertools
import math
import time

import numpy as np
from loguru import logger

from quayside.core import wire
from quayside.core.feed.ring import CommandWriter, RingResult
from quayside.core.wire import RecordKind

__all__ = ["Records", "InboundWriter", "ISSUER_GATEWAY"]

#: ``issuer_id`` of the CONTROL records the gateway sends (the audit log names it).
ISSUER_GATEWAY = 0x6A7E


def _scratch(dtype: np.dtype, kind: int) -> np.ndarray:
    rec = np.zeros(1, dtype=dtype)
    rec["kind"], rec["version"] = kind, wire.VERSIONS[kind]
    return rec


class Records:
    """Builders of the records the gateway sends; each returns a fresh 1-record array."""

    def __init__(self):
        self._command_ids = itertools.count(time.time_ns())
        self._quote = _scratch(wire.quote_dtype, RecordKind.QUOTE)
        self._trade = _scratch(wire.trade_dtype, RecordKind.TRADE)
        self._status = _scratch(wire.order_status_dtype, RecordKind.ORDER_STATUS)
        self._fill = _scratch(wire.fill_dtype, RecordKind.FILL)
        self._position = _scratch(wire.position_dtype, RecordKind.POSITION)
        self._position["origin"] = wire.PositionOrigin.BROKER
        self._control = _scratch(wire.control_dtype, RecordKind.CONTROL)
        self._log = _scratch(wire.log_dtype, RecordKind.LOG)

    def quote(self, iid: int, ts_event: int, ts_recv: int, bid: float, ask: float, bid_size, ask_size, flags=0):
        r = self._quote
        r["instrument_id"], r["ts_event"], r["ts_recv"], r["flags"] = iid, ts_event, ts_recv, flags
        r["bid_price"], r["ask_price"] = bid, ask
        r["bid_size"] = bid_size if bid_size is not None and math.isfinite(bid_size) else math.nan
        r["ask_size"] = ask_size if ask_size is not None and math.isfinite(ask_size) else math.nan
        return r.copy()

    def trade(self, iid: int, ts_event: int, ts_recv: int, price: float, size: float):
        r = self._trade
        r["instrument_id"], r["ts_event"], r["ts_recv"] = iid, ts_event, ts_recv
        r["price"], r["size"] = price, size if size is not None and math.isfinite(size) else math.nan
        return r.copy()

    def order_status(
        self,
        *,
        strategy_id: int,
        iid: int,
        order_id: int,
        status: int,
        ts_event: int,
        error_code: int = 0,
        broker_order_id: int = 0,
        perm_id: int = 0,
        filled: float = 0.0,
        avg_price: float = math.nan,
    ):
        r = self._status
        r["strategy_id"], r["instrument_id"], r["ts_event"], r["ts_recv"] = strategy_id, iid, ts_event, time.time_ns()
        r["order_id"], r["status"], r["error_code"] = order_id, status, max(min(error_code, 32767), -32768)
        r["broker_order_id"], r["perm_id"] = broker_order_id & 0x7FFFFFFF, perm_id & 0x7FFFFFFF
        r["filled_qty"], r["avg_fill_price"] = filled, avg_price if filled > 0 else math.nan
        return r.copy()

    def fill(
        self,
        *,
        strategy_id: int,
        iid: int,
        order_id: int,
        fill_id: int,
        price: float,
        quantity: float,
        commission: float,
        ts_event: int,
        flags: int = 0,
    ):
        r = self._fill
        r["strategy_id"], r["instrument_id"], r["flags"] = strategy_id, iid, flags
        r["ts_event"], r["ts_recv"] = ts_event, time.time_ns()
        r["order_id"], r["fill_id"], r["price"], r["quantity"], r["commission"] = (
            order_id,
            fill_id,
            price,
            quantity,
            commission,
        )
        return r.copy()

    def position(self, iid: int, ts_event: int, quantity, avg_price, working_buy, working_sell, flags: int = 0):
        """The broker's position (origin BROKER, the account's: strategy 0)."""
        r = self._position
        r["instrument_id"], r["ts_event"], r["flags"] = iid, ts_event, flags
        r["quantity"], r["avg_price"] = quantity, avg_price
        r["working_buy_qty"], r["working_sell_qty"] = working_buy, working_sell
        return r.copy()

    def control(self, command: int, iid: int = 0):
        r = self._control
        r["instrument_id"], r["strategy_id"], r["ts_event"] = iid, 0, time.time_ns()
        r["command_id"], r["command"], r["issuer_id"] = next(self._command_ids), command, ISSUER_GATEWAY
        return r.copy()

    def log(self, code: int, level: int, iid: int = 0, i0: int = 0, i1: int = 0, a0: float = 0.0, a1: float = 0.0):
        r = self._log
        r["instrument_id"], r["ts_event"], r["code"], r["level"] = iid, time.time_ns(), code, level
        r["i0"], r["i1"], r["a0"], r["a1"] = i0, i1, a0, a1
        return r.copy()


class InboundWriter:
    """The gateway's end of the inbound ring, with the waiting queue described above.

    ``written`` counts records published, ``conflated`` quotes replaced while waiting,
    ``dropped`` trades lost to a full queue, ``backpressured`` offers refused by the ring.
    ``last_fill_end`` is the ring position just after the newest FILL published: the engine has
    applied every fill once its consumer position reaches it.
    """

    def __init__(self, path, capacity: int, queue_capacity: int = 4096):
        self.writer = CommandWriter(path, capacity)
        self.queue_capacity = queue_capacity
        self._waiting: collections.deque[list] = collections.deque()  # [record, conflation key]
        self._quote_slot: dict[int, list] = {}
        self._droppable = 0  # trades and quotes waiting
        self.written = self.conflated = self.dropped = self.backpressured = 0
        self.last_fill_end = 0
        self.fills_waiting = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def send(self, rec: np.ndarray) -> None:
        """Publish one record now, or queue it behind what already waits."""
        kind = int(rec["kind"][0])
        if not self._waiting and self._offer(rec, kind):
            return
        if kind == RecordKind.QUOTE:
            iid = int(rec["instrument_id"][0])
            slot = self._quote_slot.get(iid)
            if slot is not None:
                slot[0] = rec
                self.conflated += 1
                return
            if self._droppable >= self.queue_capacity:
                self.dropped += 1
                return
            slot = [rec, iid]
            self._quote_slot[iid] = slot
            self._droppable += 1
        elif kind == RecordKind.TRADE:
            if self._droppable >= self.queue_capacity:
                self.dropped += 1
                return
            slot = [rec, None]
            self._droppable += 1
        else:
            slot = [rec, None]
            if kind == RecordKind.FILL:
                self.fills_waiting += 1
        self._waiting.append(slot)

    def flush(self) -> bool:
        """Offer what waits, oldest first, until the ring refuses; True when nothing waits."""
        waiting = self._waiting
        while waiting:
            rec, key = waiting[0]
            kind = int(rec["kind"][0])
            if not self._offer(rec, kind):
                return False
            waiting.popleft()
            if kind == RecordKind.QUOTE:
                self._quote_slot.pop(key, None)
                self._droppable -= 1
            elif kind == RecordKind.TRADE:
                self._droppable -= 1
            elif kind == RecordKind.FILL:
                self.fills_waiting -= 1
        return True

    def _offer(self, rec: np.ndarray, kind: int) -> bool:
        pos = self.writer.offer(rec)
        if pos == RingResult.BACK_PRESSURED:
            self.backpressured += 1
            if self.backpressured in (1, 10, 100, 1000) or self.backpressured % 10_000 == 0:
                logger.warning("gateway: the engine's inbound ring is full ({} times so far)", self.backpressured)
            return False
        self.written += 1
        if kind == RecordKind.FILL:
            self.last_fill_end = pos + 1
        return True

    def engine_caught_up(self) -> bool:
        """The engine has consumed every FILL the gateway decided to send."""
        from quayside.core.feed.segment import W_CONSUMER_POSITION

        return self.fills_waiting == 0 and int(self.writer.segment.words[W_CONSUMER_POSITION]) >= self.last_fill_end

    def close(self) -> None:
        self.writer.close()
