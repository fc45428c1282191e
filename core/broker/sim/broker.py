"""The simulated gateway's broker: orders, matching against the replayed market, executions;
the money side is :mod:`.account`. Matching follows the backtest venue's rules
(:mod:`quayside.core.replay.venue`):

* a marketable order (a market order, or a limit at or through the opposite touch) fills at
  the touch on arrival, in full, or up to the displayed size with ``limit_to_displayed_size``;
  what a market or IOC order cannot fill at once is cancelled, a DAY/GTC limit rests;
* a resting limit fills at its own price when the market trades through it (a trade strictly
  beyond its price), or, with ``fill_on_quote_cross``, when the opposite quote moves strictly
  beyond it;
* commission: ``bps`` of notional plus ``per_unit`` per unit, at least ``minimum`` per fill, in
  the account currency (rates per security type).

Prices within ``PRICE_EPS`` (relative) are equal, as in the venue. Every fill makes a
:class:`SimExecution` with an IB-like ``execId`` (``<run>.<sequence>.01.01``, hex: the run is
the start time in seconds, so ids stay unique across restarts) and a commission report; order
ids are the clients' own, ``permId`` s count up from ``first_perm_id``.

The broker knows nothing of sockets: it tells a listener what happened
(:class:`BrokerListener`), and the server turns that into messages.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from quayside.core.broker.sim.account import Account, SimPosition
from quayside.core.broker.sim.config import SimGatewayConfig
from quayside.core.broker.sim.contracts import ContractBook, ContractInfo
from quayside.core.broker.sim.market import Book
from quayside.core.broker.sim.protocol import UNSET_DOUBLE
from quayside.core.broker.sim.requests import ExecutionFilter, OrderRequest

__all__ = ["PRICE_EPS", "SimOrder", "SimExecution", "BrokerListener", "SimBroker", "ib_time"]

#: The venue's tolerance: prices closer than this (relative) are the same price.
PRICE_EPS = 1e-9
DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})


def _above(x: float, y: float) -> bool:
    return x - y > PRICE_EPS * abs(y)


def ib_time(ts_ns: int) -> str:
    """``YYYYMMDD HH:MM:SS UTC``, the form ib_insync parses with its time zone."""
    return time.strftime("%Y%m%d %H:%M:%S", time.gmtime(ts_ns // 1_000_000_000)) + " UTC"


@dataclass
class SimOrder:
    order_id: int
    client_id: int
    perm_id: int
    info: ContractInfo
    action: str
    quantity: float
    order_type: str
    lmt_price: float | None
    tif: str
    account: str
    order_ref: str = ""
    oca_group: str = ""
    outside_rth: bool = False
    good_till_date: str = ""
    parent_id: int = 0
    status: str = "PreSubmitted"
    filled: float = 0.0
    notional: float = 0.0
    last_fill_price: float = 0.0
    ts_submitted: int = 0
    completed_time: str = ""
    completed_status: str = ""

    @property
    def side(self) -> int:
        return 1 if self.action == "BUY" else -1

    @property
    def remaining(self) -> float:
        return max(self.quantity - self.filled, 0.0)

    @property
    def avg_fill_price(self) -> float:
        return self.notional / self.filled if self.filled > 0 else 0.0

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclass
class SimExecution:
    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    instrument_id: int
    account: str
    exchange: str
    side: str
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    ts_event: int
    order_ref: str
    liquidity: int  # 1 added (passive), 2 removed (marketable)
    commission: float
    realized_pnl: float = UNSET_DOUBLE
    commission_reported: bool = False  # set by the server once the report went out

    @property
    def time_text(self) -> str:
        return ib_time(self.ts_event)


class BrokerListener(Protocol):
    def order_accepted(self, order: SimOrder) -> None: ...
    def order_status(self, order: SimOrder) -> None: ...
    def order_error(self, client_id: int, order_id: int, code: int, text: str, status: SimOrder | None) -> None: ...
    def execution(self, execution: SimExecution, order: SimOrder) -> None: ...
    def position_changed(self, instrument_id: int) -> None: ...
    def what_if(self, order: SimOrder, state: dict) -> None: ...


@dataclass
class _Counters:
    perm_id: int
    exec_seq: int = 0
    orders: int = 0
    rejects: int = 0


class SimBroker:
    """One account at the simulated broker. ``clock()`` is the simulated time in ns."""

    def __init__(
        self,
        config: SimGatewayConfig,
        contracts: ContractBook,
        books: dict[int, Book],
        clock: Callable[[], int],
        listener: BrokerListener,
        run_id: int | None = None,
    ):
        self.config = config
        self.account = Account(config, contracts, books)
        self.account_id = config.account
        self.currency = self.account.currency
        self.contracts = contracts
        self.books = books
        self.clock = clock
        self.listener = listener
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.executions: list[SimExecution] = []
        self._resting: dict[int, list[SimOrder]] = {}
        self._max_order_id: dict[int, int] = {}
        self.run_id = int(time.time()) & 0xFFFFFFFF if run_id is None else run_id
        self.counters = _Counters(perm_id=config.first_perm_id)

    @property
    def positions(self) -> dict[int, SimPosition]:
        return self.account.positions

    # ------------------------------------------------------------------ ids

    def next_valid_id(self, client_id: int) -> int:
        return self._max_order_id.get(client_id, 0) + 1

    def _new_perm_id(self) -> int:
        self.counters.perm_id += 1
        return self.counters.perm_id

    def _new_exec_id(self) -> str:
        self.counters.exec_seq += 1
        return f"{self.run_id:08x}.{self.counters.exec_seq:08x}.01.01"

    # ------------------------------------------------------------------ orders

    def place(self, client_id: int, req: OrderRequest, info: ContractInfo, reject: tuple[int, str] | None = None):
        """A placeOrder that reached the venue. ``reject``: (code, text) forced by a fault."""
        oid = req.order_id
        self._max_order_id[client_id] = max(self._max_order_id.get(client_id, 0), oid)
        existing = self.orders.get((client_id, oid))
        if existing is not None and not req.what_if:
            if existing.done:
                self.listener.order_error(client_id, oid, 103, "Duplicate order id", None)
                return
            self._modify(existing, req, info)
            return
        order = SimOrder(
            order_id=oid,
            client_id=client_id,
            perm_id=0,
            info=info,
            action=req.action,
            quantity=req.quantity,
            order_type=req.order_type,
            lmt_price=req.lmt_price,
            tif=req.tif,
            account=req.account or self.account_id,
            order_ref=req.order_ref,
            oca_group=req.oca_group,
            outside_rth=req.outside_rth,
            good_till_date=req.good_till_date,
            parent_id=req.parent_id,
            ts_submitted=self.clock(),
        )
        problem = reject or self._check(order)
        if req.what_if:
            if problem:
                self.listener.order_error(client_id, oid, *problem, None)
            else:
                touch, _ = self._touch(order)
                order.status = "PreSubmitted"
                price = order.lmt_price if order.order_type == "LMT" else touch
                self.listener.what_if(order, self.account.what_if(info, order.quantity, price))
            return
        order.perm_id = self._new_perm_id()
        self.orders[(client_id, oid)] = order
        self.counters.orders += 1
        if problem:
            self._reject(order, *problem)
            return
        order.status = "Submitted"
        self.listener.order_accepted(order)
        self._on_arrival(order)

    def _check(self, o: SimOrder) -> tuple[int, str] | None:
        why = ""
        if o.action not in ("BUY", "SELL"):
            why = f"action {o.action!r} is not BUY or SELL"
        elif not o.quantity > 0:
            why = f"quantity {o.quantity} is not positive"
        elif o.order_type not in ("LMT", "MKT"):
            why = f"order type {o.order_type!r} is not supported by the simulated gateway (LMT, MKT)"
        elif o.order_type == "LMT" and (o.lmt_price is None or not math.isfinite(o.lmt_price)):
            why = "a limit order needs a limit price"
        elif o.account != self.account_id:
            why = f"account {o.account!r} is not managed here ({self.account_id})"
        elif o.order_type == "MKT" and math.isnan(self._touch(o)[0]):
            why = f"no market data for {o.info.local_symbol} yet"
        if why:
            return 201, f"Order rejected - reason:{why}"
        if o.order_type == "LMT" and self.config.check_tick_size:
            tick = o.info.instrument.tick_size
            steps = o.lmt_price / tick
            if abs(steps - round(steps)) > 1e-6:
                return 110, "The price does not conform to the minimum price variation for this contract."
        return None

    def _reject(self, order: SimOrder, code: int, text: str) -> None:
        self.counters.rejects += 1
        order.status = "Cancelled"
        self._complete(order, f"Rejected: {text}")
        # error 201 alone makes ib_insync cancel the trade; other codes (110 is only a
        # warning to it) need the status too
        self.listener.order_error(order.client_id, order.order_id, code, text, None if code == 201 else order)

    def _modify(self, o: SimOrder, req: OrderRequest, info: ContractInfo) -> None:
        if info.id != o.info.id or req.action != o.action:
            self.listener.order_error(
                o.client_id, o.order_id, 201, "Order rejected - reason:cannot change contract or side", None
            )
            return
        changed = SimOrder(**{**o.__dict__, "quantity": req.quantity, "order_type": req.order_type})
        changed.lmt_price, changed.tif = req.lmt_price, req.tif
        problem = self._check(changed)
        if problem is None and req.quantity <= o.filled:
            problem = (201, f"Order rejected - reason:quantity {req.quantity} is not above the filled {o.filled}")
        if problem:
            self.listener.order_error(o.client_id, o.order_id, *problem, None)
            return
        self._unrest(o)
        o.quantity, o.order_type, o.lmt_price, o.tif = req.quantity, req.order_type, req.lmt_price, req.tif
        self.listener.order_accepted(o)
        self._on_arrival(o)

    def _touch(self, o: SimOrder) -> tuple[float, float]:
        book = self.books.get(o.info.id)
        if book is None:
            return math.nan, 0.0
        return (book.ask, book.ask_size) if o.side > 0 else (book.bid, book.bid_size)

    def _on_arrival(self, o: SimOrder) -> None:
        touch, size = self._touch(o)
        marketable = not math.isnan(touch) and (
            o.order_type == "MKT"
            or (o.side > 0 and not _above(touch, o.lmt_price))
            or (o.side < 0 and not _above(o.lmt_price, touch))
        )
        if marketable:
            qty = o.remaining
            if self.config.limit_to_displayed_size and size > 0:
                qty = min(qty, size)
            self._fill(o, qty, touch, liquidity=2)
            if o.remaining <= 1e-12:
                return
        if o.tif in ("IOC", "FOK") or o.order_type == "MKT":
            self._finish(o, "Cancelled", "Cancelled")
            return
        self._resting.setdefault(o.info.id, []).append(o)

    def _unrest(self, o: SimOrder) -> None:
        resting = self._resting.get(o.info.id)
        if resting and o in resting:
            resting.remove(o)

    def _finish(self, o: SimOrder, status: str, completed: str) -> None:
        self._unrest(o)
        o.status = status
        self._complete(o, completed)
        self.listener.order_status(o)

    def _complete(self, o: SimOrder, completed: str) -> None:
        o.completed_time = ib_time(self.clock())
        o.completed_status = completed

    def cancel(self, client_id: int, order_id: int) -> None:
        o = self.orders.get((client_id, order_id))
        if o is None:
            self.listener.order_error(
                client_id, order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.", None
            )
        elif o.done:
            self.listener.order_error(
                client_id,
                order_id,
                161,
                f"Cancel attempted when order is not in a cancellable state. Order permId ={o.perm_id}",
                None,
            )
        else:
            self._finish(o, "Cancelled", "Cancelled by Trader")
            self.listener.order_error(client_id, order_id, 202, "Order Canceled - reason:", None)

    def cancel_all(self) -> int:
        working = [o for o in self.orders.values() if not o.done]
        for o in working:
            self.cancel(o.client_id, o.order_id)
        return len(working)

    # ------------------------------------------------------------------ market events

    def on_quote(self, iid: int, book: Book) -> None:
        resting = self._resting.get(iid)
        if not resting or not self.config.fill_on_quote_cross:
            return
        for o in list(resting):
            if (o.side > 0 and _above(o.lmt_price, book.ask)) or (o.side < 0 and _above(book.bid, o.lmt_price)):
                self._fill(o, o.remaining, o.lmt_price, liquidity=1)

    def on_trade(self, iid: int, price: float) -> None:
        resting = self._resting.get(iid)
        if not resting:
            return
        for o in list(resting):
            if (o.side > 0 and _above(o.lmt_price, price)) or (o.side < 0 and _above(price, o.lmt_price)):
                self._fill(o, o.remaining, o.lmt_price, liquidity=1)

    def _fill(self, o: SimOrder, qty: float, price: float, liquidity: int) -> None:
        info = o.info
        now = self.clock()
        commission = self.account.commission(info, qty, price)
        realized = self.account.book_fill(info, qty * o.side, price, commission)
        o.filled += qty
        o.notional += qty * price
        o.last_fill_price = price
        e = SimExecution(
            exec_id=self._new_exec_id(),
            order_id=o.order_id,
            client_id=o.client_id,
            perm_id=o.perm_id,
            instrument_id=info.id,
            account=o.account,
            exchange=info.listing_exchange,
            side="BOT" if o.side > 0 else "SLD",
            shares=qty,
            price=price,
            cum_qty=o.filled,
            avg_price=o.avg_fill_price,
            ts_event=now,
            order_ref=o.order_ref,
            liquidity=liquidity,
            commission=commission,
            realized_pnl=UNSET_DOUBLE if realized is None else realized,
        )
        self.executions.append(e)
        self.listener.execution(e, o)
        if o.remaining <= 1e-12:
            self._unrest(o)
            o.status = "Filled"
            self._complete(o, "Filled")
        self.listener.order_status(o)
        self.listener.position_changed(info.id)

    # ------------------------------------------------------------------ queries

    def working_orders(self, client_id: int | None = None) -> list[SimOrder]:
        return [o for o in self.orders.values() if not o.done and (client_id is None or o.client_id == client_id)]

    def completed_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.done]

    def find_executions(self, f: ExecutionFilter | None = None) -> list[SimExecution]:
        if f is None:
            return list(self.executions)
        since = _filter_time_ns(f.time)
        side = {"BUY": "BOT", "SELL": "SLD"}.get(f.side, f.side)
        out = []
        for e in self.executions:
            info = self.contracts.by_id(e.instrument_id)
            if f.client_id and e.client_id != f.client_id:
                continue
            if f.account and e.account != f.account:
                continue
            if since is not None and e.ts_event < since:
                continue
            if f.symbol and f.symbol not in (info.symbol, info.local_symbol, info.instrument.symbol):
                continue
            if f.sec_type and f.sec_type != info.sec_type:
                continue
            if f.exchange and f.exchange != e.exchange:
                continue
            if side and side != e.side:
                continue
            out.append(e)
        return out


def _filter_time_ns(text: str) -> int | None:
    """``yyyymmdd hh:mm:ss [zone]`` or ``yyyymmdd-hh:mm:ss`` (UTC) -> ns; None if empty."""
    text = text.strip()
    if not text:
        return None
    zone = dt.UTC
    if "-" in text[:9]:
        stamp = text.replace("-", " ", 1)
    else:
        parts = text.split()
        stamp = " ".join(parts[:2])
        if len(parts) > 2:
            from zoneinfo import ZoneInfo

            zone = ZoneInfo(parts[2])
    t = dt.datetime.strptime(stamp, "%Y%m%d %H:%M:%S").replace(tzinfo=zone)
    return int(t.timestamp()) * 1_000_000_000
