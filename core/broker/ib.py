"""The one module that imports the TWS API client library.

``ib_insync`` (the user's choice; its last release is 0.9.86) or ``ib_async``, its maintained
fork with the same API, chosen by the configuration's ``library`` and imported here with
:mod:`importlib`. Everything else in the gateway goes through :class:`IbLibrary`: it makes the
client, builds contracts from registry instruments and orders from wire records, names the
library's status strings, and converts its times. Nothing outside this module names a class of
the library, so swapping it is one configuration value.

What the library does that the gateway relies on (ib_insync 0.9.86, checked against the
simulated gateway):

* ``IB.connectAsync`` syncs positions, open and completed orders and executions before it
  returns; on a lost socket it clears all of that and fires ``disconnectedEvent``;
* a live execution fires ``execDetailsEvent`` once per execId (a repeated execId is dropped with
  a log line); executions answered to ``reqExecutions`` fire nothing and come back as the
  request's result, with their commission reports attached when the broker sent them;
* error 201 (and any error on an order id that is not a warning) marks the trade Cancelled and
  fires ``orderStatusEvent`` with the code in ``trade.log[-1].errorCode``;
* ``pendingTickersEvent`` fires once per received packet with the tickers it changed.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
from types import ModuleType

from quayside.core.instruments import Instrument
from quayside.core.wire import OrderStatus, OrderType, Side, TimeInForce

__all__ = ["IbLibrary", "STATUS", "DONE_STATUSES", "LIBRARIES", "ns_of", "price_or_nan"]

LIBRARIES = ("ib_insync", "ib_async")

#: the library's order status strings -> OrderStatus (PARTIALLY_FILLED is decided by quantity)
STATUS = {
    "PendingSubmit": OrderStatus.PENDING_SUBMIT,
    "ApiPending": OrderStatus.PENDING_SUBMIT,
    "PreSubmitted": OrderStatus.SUBMITTED,
    "Submitted": OrderStatus.SUBMITTED,
    "Filled": OrderStatus.FILLED,
    "PendingCancel": OrderStatus.PENDING_CANCEL,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Cancelled": OrderStatus.CANCELLED,
    "Inactive": OrderStatus.INACTIVE,
}
DONE_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
_TIF = {TimeInForce.DAY: "DAY", TimeInForce.IOC: "IOC", TimeInForce.GTC: "GTC"}


def ns_of(t: dt.datetime | None, default: int) -> int:
    """A library timestamp (an aware datetime, or naive UTC) as int64 ns; ``default`` if unset."""
    if t is None or t.year < 1980:
        return default
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1_000


def price_or_nan(x: float | None) -> float:
    """IB's "no price" (-1, unset, NaN) as NaN."""
    if x is None or x == -1 or not math.isfinite(x) or abs(x) >= 1.7e308:
        return math.nan
    return float(x)


class IbLibrary:
    """The chosen client library, and what the gateway builds with it."""

    def __init__(self, name: str = "ib_insync"):
        if name not in LIBRARIES:
            raise ValueError(f"library must be one of {LIBRARIES}, got {name!r}")
        try:
            self.module: ModuleType = importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"the TWS API client {name!r} is not installed ({exc}); pip install {name}") from exc
        self.name = name
        self.logger_name = name  # both libraries log under their package name

    # ------------------------------------------------------------------ the client

    def new_client(self):
        """A fresh ``IB`` instance (one per connection: the library resets its state anyway)."""
        ib = self.module.IB()
        ib.RaiseRequestErrors = False  # a failed request returns what it has; the gateway checks
        return ib

    def execution_filter(self, client_id: int):
        return self.module.ExecutionFilter(clientId=client_id)

    # ------------------------------------------------------------------ contracts

    def contract(self, inst: Instrument):
        """The library's contract for a registry instrument (conId when the registry has one)."""
        m = self.module
        if inst.con_id:
            return m.Contract(conId=inst.con_id, exchange=inst.exchange, currency=inst.currency)
        if inst.sec_type == "CASH":
            if len(inst.symbol) == 6 and inst.symbol.endswith(inst.currency):
                return m.Forex(inst.symbol, exchange=inst.exchange)
            return m.Contract(secType="CASH", symbol=inst.symbol, exchange=inst.exchange, currency=inst.currency)
        if inst.sec_type == "STK":
            return m.Stock(inst.symbol, inst.exchange, inst.currency, primaryExchange=inst.primary_exchange)
        if inst.sec_type == "FUT":
            return m.Future(
                localSymbol=inst.symbol,
                lastTradeDateOrContractMonth=inst.last_trade_date,
                exchange=inst.exchange,
                currency=inst.currency,
            )
        if inst.sec_type == "CRYPTO":
            base = inst.symbol.removesuffix(inst.currency) or inst.symbol
            return m.Crypto(base, inst.exchange, inst.currency)
        if inst.sec_type == "IND":
            return m.Index(inst.symbol, inst.exchange, inst.currency)
        return m.CFD(inst.symbol, inst.exchange, inst.currency)

    def contract_key(self, contract) -> tuple:
        """What identifies an instrument in the broker's answers when the conId is unknown."""
        return (contract.secType, contract.localSymbol or contract.symbol, contract.currency)

    # ------------------------------------------------------------------ orders

    def order(
        self,
        *,
        side: int,
        order_type: int,
        tif: int,
        price: float,
        quantity: float,
        order_ref: str,
        account: str,
        tick_size: float,
    ):
        """A limit or market order from an ORDER record's fields. ValueError if they are not
        an order this gateway sends."""
        m = self.module
        if side not in (Side.BUY, Side.SELL):
            raise ValueError(f"side {side} is neither BUY nor SELL")
        if tif not in _TIF:
            raise ValueError(f"time in force {tif} is not DAY, IOC or GTC")
        if not (quantity > 0 and math.isfinite(quantity)):
            raise ValueError(f"quantity {quantity} is not positive")
        action = "BUY" if side == Side.BUY else "SELL"
        common = {"tif": _TIF[tif], "orderRef": order_ref, "account": account}
        if order_type == OrderType.LIMIT:
            if not (price > 0 and math.isfinite(price)):
                raise ValueError(f"limit price {price} is not a price")
            # the engine's prices come off quotes; drop float noise so IB sees the tick grid
            price = round(round(price / tick_size) * tick_size, 10) if tick_size > 0 else price
            return m.LimitOrder(action, quantity, price, **common)
        if order_type == OrderType.MARKET:
            return m.MarketOrder(action, quantity, **common)
        raise ValueError(f"order type {order_type} is not LIMIT or MARKET")

    def order_handle(self, client_id: int, order_id: int, perm_id: int):
        """An order object to cancel by id when the library's trade for it is gone."""
        return self.module.Order(orderId=order_id, clientId=client_id, permId=perm_id)
