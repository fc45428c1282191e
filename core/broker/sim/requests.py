"""Requests the simulated gateway understands, decoded from their fields as ib_insync 0.9.86
sends them to a server of version 176.

Every decoder takes the message's fields (strings, message id first) and returns a frozen
dataclass, or raises :class:`RequestError` with a message that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from quayside.core.broker.sim.contracts import RequestContract
from quayside.core.broker.sim.protocol import UNSET_DOUBLE, to_bool, to_float, to_int

__all__ = [
    "RequestError",
    "contract_at",
    "OrderRequest",
    "parse_place_order",
    "MktDataRequest",
    "parse_mkt_data",
    "TickByTickRequest",
    "parse_tick_by_tick",
    "ExecutionFilter",
    "parse_exec_filter",
]


class RequestError(ValueError):
    """A request's fields do not follow the layout of its message id."""


def contract_at(fields: list[str], i: int) -> RequestContract:
    """The 12 contract fields starting at ``fields[i]``."""
    if len(fields) < i + 12:
        raise RequestError(f"message {fields[0]} is too short for a contract at field {i}")
    f = fields[i : i + 12]
    try:
        return RequestContract(
            con_id=to_int(f[0]),
            symbol=f[1],
            sec_type=f[2],
            last_trade_date=f[3],
            strike=to_float(f[4], 0.0),
            right=f[5],
            multiplier=f[6],
            exchange=f[7],
            primary_exchange=f[8],
            currency=f[9],
            local_symbol=f[10],
            trading_class=f[11],
        )
    except ValueError as exc:
        raise RequestError(f"bad contract fields {f}: {exc}") from None


class _Cursor:
    def __init__(self, fields: list[str], i: int):
        self.fields, self.i = fields, i

    def next(self) -> str:
        if self.i >= len(self.fields):
            raise RequestError(f"message {self.fields[0]} ended after {len(self.fields)} fields")
        v = self.fields[self.i]
        self.i += 1
        return v

    def skip(self, n: int) -> None:
        self.i += n


@dataclass(frozen=True)
class OrderRequest:
    order_id: int
    contract: RequestContract
    action: str
    quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    good_till_date: str
    what_if: bool


def _price_or_none(text: str) -> float | None:
    v = to_float(text)
    return None if v == UNSET_DOUBLE else v


def parse_place_order(fields: list[str]) -> OrderRequest:
    """placeOrder: id, order id, contract, then the order's fields in ib_insync's order."""
    try:
        order_id = to_int(fields[1])
        contract = contract_at(fields, 2)
        c = _Cursor(fields, 14)
        c.skip(2)  # secIdType, secId
        action = c.next().upper()
        quantity = to_float(c.next(), 0.0)
        order_type = c.next().upper()
        lmt = _price_or_none(c.next())
        aux = _price_or_none(c.next())
        tif = c.next().upper() or "DAY"
        oca_group = c.next()
        account = c.next()
        c.skip(2)  # openClose, origin
        order_ref = c.next()
        transmit = to_bool(c.next())
        parent_id = to_int(c.next())
        c.skip(4)  # blockOrder, sweepToFill, displaySize, triggerMethod
        outside_rth = to_bool(c.next())
        c.skip(1)  # hidden
        what_if, good_till = False, ""
        if contract.sec_type != "BAG":
            c.skip(3)  # sharesAllocation, discretionaryAmt, goodAfterTime
            good_till = c.next()
            c.skip(26)  # faGroup ... volatilityType
            if c.next():  # deltaNeutralOrderType
                c.skip(9)  # its aux price and the delta-neutral block
            else:
                c.skip(1)
            c.skip(6)  # continuousUpdate ... scaleSubsLevelSize
            increment = to_float(c.next())
            if 0 < increment < UNSET_DOUBLE:
                c.skip(7)
            c.skip(3)  # scaleTable, activeStartTime, activeStopTime
            if c.next():  # hedgeType
                c.skip(1)
            c.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
            if to_bool(c.next()):  # delta-neutral contract
                c.skip(3)
            if c.next():  # algoStrategy
                c.skip(2 * to_int(c.next()))
            c.skip(1)  # algoId
            what_if = to_bool(c.next())
    except (IndexError, ValueError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"placeOrder: {exc}") from None
    return OrderRequest(
        order_id=order_id,
        contract=contract,
        action=action,
        quantity=quantity,
        order_type=order_type,
        lmt_price=lmt,
        aux_price=aux,
        tif=tif,
        oca_group=oca_group,
        account=account,
        order_ref=order_ref,
        transmit=transmit,
        parent_id=parent_id,
        outside_rth=outside_rth,
        good_till_date=good_till,
        what_if=what_if,
    )


@dataclass(frozen=True)
class MktDataRequest:
    req_id: int
    contract: RequestContract
    generic_ticks: str
    snapshot: bool


def parse_mkt_data(fields: list[str]) -> MktDataRequest:
    try:
        req_id = to_int(fields[2])
        contract = contract_at(fields, 3)
        c = _Cursor(fields, 15)
        if contract.sec_type == "BAG":
            c.skip(4 * to_int(c.next()))
        if to_bool(c.next()):
            c.skip(3)
        generic = c.next()
        snapshot = to_bool(c.next())
    except (IndexError, ValueError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"reqMktData: {exc}") from None
    return MktDataRequest(req_id, contract, generic, snapshot)


@dataclass(frozen=True)
class TickByTickRequest:
    req_id: int
    contract: RequestContract
    tick_type: str
    number_of_ticks: int
    ignore_size: bool


def parse_tick_by_tick(fields: list[str]) -> TickByTickRequest:
    try:
        return TickByTickRequest(
            req_id=to_int(fields[1]),
            contract=contract_at(fields, 2),
            tick_type=fields[14],
            number_of_ticks=to_int(fields[15]),
            ignore_size=to_bool(fields[16]),
        )
    except (IndexError, ValueError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"reqTickByTickData: {exc}") from None


@dataclass(frozen=True)
class ExecutionFilter:
    req_id: int
    client_id: int
    account: str
    time: str
    symbol: str
    sec_type: str
    exchange: str
    side: str


def parse_exec_filter(fields: list[str]) -> ExecutionFilter:
    try:
        f = fields + [""] * max(0, 10 - len(fields))
        return ExecutionFilter(
            req_id=to_int(f[2]),
            client_id=to_int(f[3]),
            account=f[4],
            time=f[5],
            symbol=f[6],
            sec_type=f[7],
            exchange=f[8],
            side=f[9].upper(),
        )
    except ValueError as exc:
        raise RequestError(f"reqExecutions: {exc}") from None
