"""The simulated gateway's contracts: registry instruments as IB describes them, and matching
the contracts clients send (``Stock``, ``Forex``, ``Future`` as ib_insync builds them) to them.

An instrument's ``conId`` is the registry's ``con_id`` when it has one, else
``SIM_CON_ID_BASE + id``: stable for as long as the registry's ids are, and far above the
conIds IB hands out, so a simulated contract is never mistaken for a real one.

IB names contracts differently from the registry: a forex pair ``EURUSD`` is symbol ``EUR``,
currency ``USD``, local symbol ``EUR.USD``; a future ``ESZ6`` is symbol ``ES``, local symbol
``ESZ6``, trading class ``ES`` and contract month ``202612``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from quayside.core.instruments import Instrument, InstrumentRegistry

__all__ = ["SIM_CON_ID_BASE", "ContractInfo", "RequestContract", "ContractBook"]

SIM_CON_ID_BASE = 2_000_000_000
_FUTURE_CODE = re.compile(r"^([A-Z0-9]+?)([FGHJKMNQUVXZ])(\d{1,2})$")


@dataclass(frozen=True)
class RequestContract:
    """The 12 contract fields a request carries, as text (``strike`` parsed)."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""

    def describe(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.__dict__.items() if v not in ("", 0, 0.0)]
        return "Contract(" + ", ".join(parts) + ")"


@dataclass(frozen=True)
class ContractInfo:
    """One registry instrument in IB's terms."""

    instrument: Instrument
    con_id: int
    symbol: str
    sec_type: str
    last_trade_date: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    contract_month: str
    under_symbol: str

    @property
    def id(self) -> int:
        return self.instrument.id

    @property
    def listing_exchange(self) -> str:
        """Where it executes: the primary exchange of a SMART-routed stock, else its exchange."""
        return self.primary_exchange or self.exchange

    def fields(self, exchange: str | None = None) -> list:
        """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency,
        localSymbol, tradingClass: the 11-field block of execDetails, position, openOrder."""
        return [
            self.con_id,
            self.symbol,
            self.sec_type,
            self.last_trade_date,
            0,
            "",
            self.multiplier,
            self.exchange if exchange is None else exchange,
            self.currency,
            self.local_symbol,
            self.trading_class,
        ]

    def portfolio_fields(self) -> list:
        """The same block with the primary exchange in the exchange's place (updatePortfolio)."""
        return [
            self.con_id,
            self.symbol,
            self.sec_type,
            self.last_trade_date,
            0,
            "",
            self.multiplier,
            self.listing_exchange,
            self.currency,
            self.local_symbol,
            self.trading_class,
        ]

    def trading_hours(self, now_ns: int) -> str:
        """A week of 24-hour sessions from the (simulated) day ``now_ns`` falls on."""
        day = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).date()
        out = []
        for k in range(7):
            d0, d1 = day + dt.timedelta(days=k), day + dt.timedelta(days=k + 1)
            out.append(f"{d0:%Y%m%d}:0000-{d1:%Y%m%d}:0000")
        return ";".join(out)


def _multiplier_text(inst: Instrument) -> str:
    if inst.sec_type in ("STK", "CASH", "CRYPTO") and inst.multiplier == 1.0:
        return ""
    m = inst.multiplier
    return str(int(m)) if float(m).is_integer() else repr(m)


def describe_instrument(inst: Instrument) -> ContractInfo:
    con_id = inst.con_id or SIM_CON_ID_BASE + inst.id
    symbol, local, tclass, month, under = inst.symbol, inst.symbol, inst.symbol, "", ""
    last = inst.last_trade_date
    if inst.sec_type == "CASH":
        if len(inst.symbol) == 6 and inst.symbol.endswith(inst.currency):
            symbol = inst.symbol[:3]
        local = tclass = f"{symbol}.{inst.currency}"
    elif inst.sec_type == "FUT":
        m = _FUTURE_CODE.match(inst.symbol)
        if m:
            symbol = tclass = under = m.group(1)
        month = last[:6]
    elif inst.sec_type == "CRYPTO" and inst.symbol.endswith(inst.currency) and len(inst.symbol) > len(inst.currency):
        symbol = inst.symbol[: -len(inst.currency)]
        local = tclass = f"{symbol}.{inst.currency}"
    return ContractInfo(
        instrument=inst,
        con_id=con_id,
        symbol=symbol,
        sec_type=inst.sec_type,
        last_trade_date=last,
        multiplier=_multiplier_text(inst),
        exchange=inst.exchange,
        primary_exchange=inst.primary_exchange,
        currency=inst.currency,
        local_symbol=local,
        trading_class=tclass,
        contract_month=month,
        under_symbol=under,
    )


class ContractBook:
    """Every instrument of a registry as a :class:`ContractInfo`, by id and conId."""

    def __init__(self, registry: InstrumentRegistry):
        self.registry = registry
        self._by_id = {inst.id: describe_instrument(inst) for inst in registry}
        self._by_con_id = {info.con_id: info for info in self._by_id.values()}
        if len(self._by_con_id) != len(self._by_id):
            raise ValueError(f"{registry.source}: two instruments share a conId")

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def by_id(self, instrument_id: int) -> ContractInfo:
        return self._by_id[instrument_id]

    def get(self, instrument_id: int) -> ContractInfo | None:
        return self._by_id.get(instrument_id)

    def by_con_id(self, con_id: int) -> ContractInfo | None:
        return self._by_con_id.get(con_id)

    def resolve(self, c: RequestContract) -> list[ContractInfo]:
        """Every instrument the request's contract could mean (IB's contract-details matching,
        simplified): conId decides alone; otherwise each non-empty field must agree."""
        if c.con_id:
            info = self._by_con_id.get(c.con_id)
            return [info] if info else []
        if not (c.symbol or c.local_symbol):
            return []
        return [info for info in self._by_id.values() if _matches(info, c)]

    def resolve_one(self, c: RequestContract) -> tuple[ContractInfo | None, str]:
        """(the instrument, "") or (None, why not)."""
        found = self.resolve(c)
        if len(found) == 1:
            return found[0], ""
        if not found:
            return None, f"No security definition has been found for the request: {c.describe()}"
        names = ", ".join(i.local_symbol for i in found)
        return None, f"The contract description specified is ambiguous ({names}): {c.describe()}"


def _matches(info: ContractInfo, c: RequestContract) -> bool:
    inst = info.instrument
    if c.sec_type and c.sec_type != info.sec_type:
        return False
    if c.symbol and c.symbol not in (info.symbol, inst.symbol):
        return False
    if c.local_symbol and c.local_symbol not in (info.local_symbol, inst.symbol):
        return False
    if c.currency and c.currency != info.currency:
        return False
    smart_stock = c.exchange == "SMART" and info.sec_type in ("STK", "CFD")
    if c.exchange and c.exchange not in (info.exchange, info.primary_exchange) and not smart_stock:
        return False
    if c.primary_exchange and c.primary_exchange not in (info.primary_exchange, info.exchange):
        return False
    if c.last_trade_date and not info.last_trade_date.startswith(c.last_trade_date):
        return False
    if c.trading_class and c.trading_class != info.trading_class:
        return False
    if c.multiplier:
        try:
            if float(c.multiplier) != inst.multiplier:
                return False
        except ValueError:
            return False
    return True
