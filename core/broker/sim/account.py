"""The simulated account: cash, positions, commissions, and what IB reports about them.

Accounting follows IB's conventions: a position's ``avgCost`` is per unit *including* the
contract multiplier and the commissions paid to open it; a fill that reduces a position realizes
``proceeds - cost of the closed part - its share of the commission`` (IB's ``realizedPNL``).
Cash is one balance in the account currency (as in the backtest venue): a fill moves
``quantity * price * multiplier`` converted at the current rate, plus the commission.
Positions are marked at the mid (else the last trade, else their cost). Margin is a flat
``margin_rate`` of the gross position value: enough for the account values IB sends, not a
margin model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from quayside.core.broker.sim.config import CommissionRate, SimGatewayConfig
from quayside.core.broker.sim.contracts import ContractBook, ContractInfo
from quayside.core.broker.sim.market import Book

__all__ = ["SimPosition", "Account"]


@dataclass
class SimPosition:
    quantity: float = 0.0
    cost: float = 0.0  # of the open quantity, in the instrument currency, commissions included
    realized: float = 0.0  # in the account currency

    def avg_cost(self) -> float:
        return self.cost / self.quantity if self.quantity else 0.0


class Account:
    """One account; ``books`` are the market's, read for marks and exchange rates."""

    def __init__(self, config: SimGatewayConfig, contracts: ContractBook, books: dict[int, Book]):
        self.config = config
        self.account_id = config.account
        self.currency = contracts.registry.account_currency
        self.contracts = contracts
        self.books = books
        self.cash = float(config.initial_cash)
        self.positions: dict[int, SimPosition] = {}
        for p in config.positions:
            info = self._info_by_symbol(p.symbol)
            mult = info.instrument.multiplier
            self.positions[info.id] = SimPosition(p.quantity, p.quantity * p.avg_price * mult)

    def _info_by_symbol(self, symbol: str) -> ContractInfo:
        for info in self.contracts:
            if symbol in (info.instrument.symbol, info.local_symbol):
                return info
        raise KeyError(f"initial position in {symbol!r}: no such instrument in {self.contracts.registry.source}")

    # ------------------------------------------------------------------ money

    def commission_rate(self, sec_type: str) -> CommissionRate:
        rates = self.config.commission
        return rates.get(sec_type) or rates.get("default") or CommissionRate()

    def fx_rate(self, currency: str) -> float:
        """Units of account currency per unit of ``currency``: the mid of the forex pair in
        the registry, else ``fx_rates``, else 1."""
        if currency == self.currency:
            return 1.0
        for info in self.contracts:
            inst = info.instrument
            if inst.sec_type != "CASH" or info.id not in self.books:
                continue
            mid = self.books[info.id].mark()
            if math.isnan(mid) or mid <= 0:
                continue
            if info.symbol == currency and inst.currency == self.currency:
                return mid
            if info.symbol == self.currency and inst.currency == currency:
                return 1.0 / mid
        return self.config.fx_rates.get(currency, 1.0)

    def commission(self, info: ContractInfo, qty: float, price: float) -> float:
        """The backtest venue's formula, with the rates of the instrument's security type."""
        inst = info.instrument
        rate = self.commission_rate(inst.sec_type)
        notional = qty * price * inst.multiplier * self.fx_rate(inst.currency)
        return max(notional * rate.bps * 1e-4 + qty * rate.per_unit, rate.minimum)

    def book_fill(self, info: ContractInfo, signed: float, price: float, commission: float) -> float | None:
        """Book a fill of ``signed`` units; the realized P&L (account currency) of its closing
        part, or None if it only opened or added."""
        inst = info.instrument
        fx = self.fx_rate(inst.currency)
        self.cash -= signed * price * inst.multiplier * fx + commission
        pos = self.positions.setdefault(info.id, SimPosition())
        return _apply(pos, signed, price, inst.multiplier, commission / fx if fx > 0 else commission, fx)

    # ------------------------------------------------------------------ valuations

    def mark(self, iid: int) -> float:
        book = self.books.get(iid)
        m = book.mark() if book is not None else math.nan
        if math.isnan(m):
            pos = self.positions.get(iid)
            mult = self.contracts.by_id(iid).instrument.multiplier
            m = pos.avg_cost() / mult if pos is not None and pos.quantity else 0.0
        return m

    def portfolio_item(self, iid: int) -> dict:
        pos = self.positions.get(iid, SimPosition())
        inst = self.contracts.by_id(iid).instrument
        price = self.mark(iid)
        value = pos.quantity * price * inst.multiplier
        return {
            "position": pos.quantity,
            "market_price": price,
            "market_value": value,
            "average_cost": pos.avg_cost(),
            "unrealized_pnl": value - pos.cost,
            "realized_pnl": pos.realized,
        }

    def summary(self) -> dict[str, float]:
        gross = unrealized = value = realized = 0.0
        for iid, pos in self.positions.items():
            realized += pos.realized
            if not pos.quantity:
                continue
            inst = self.contracts.by_id(iid).instrument
            fx = self.fx_rate(inst.currency)
            v = pos.quantity * self.mark(iid) * inst.multiplier * fx
            value += v
            gross += abs(v)
            unrealized += v - pos.cost * fx
        net = self.cash + value
        margin = gross * self.config.margin_rate
        return {
            "NetLiquidation": net,
            "TotalCashValue": self.cash,
            "SettledCash": self.cash,
            "CashBalance": self.cash,
            "GrossPositionValue": gross,
            "EquityWithLoanValue": net,
            "InitMarginReq": margin,
            "MaintMarginReq": margin,
            "AvailableFunds": net - margin,
            "ExcessLiquidity": net - margin,
            "BuyingPower": 4.0 * (net - margin),
            "UnrealizedPnL": unrealized,
            "RealizedPnL": realized,
        }

    def account_values(self) -> list[tuple[str, str, str]]:
        """(tag, value, currency) as updateAccountValue carries them."""
        out = [("AccountCode", self.account_id, ""), ("AccountType", "INDIVIDUAL", ""), ("AccountReady", "true", "")]
        out.append(("Currency", self.currency, self.currency))
        s = self.summary()
        for tag, v in s.items():
            out.append((tag, f"{v:.2f}", self.currency))
        out.append(("CashBalance", f"{s['CashBalance']:.2f}", "BASE"))
        out.append(("NetLiquidationByCurrency", f"{s['NetLiquidation']:.2f}", "BASE"))
        cushion = s["ExcessLiquidity"] / s["NetLiquidation"] if s["NetLiquidation"] else 0.0
        out.append(("Cushion", f"{cushion:.4f}", ""))
        return out

    def what_if(self, info: ContractInfo, qty: float, price: float) -> dict:
        """The margin and commission fields of a what-if order's OrderState."""
        price = price if math.isfinite(price) else 0.0
        inst = info.instrument
        notional = qty * price * inst.multiplier * self.fx_rate(inst.currency)
        s = self.summary()
        margin = notional * self.config.margin_rate
        commission = self.commission(info, qty, price)
        return {
            "initMarginBefore": f"{s['InitMarginReq']:.2f}",
            "maintMarginBefore": f"{s['MaintMarginReq']:.2f}",
            "equityWithLoanBefore": f"{s['EquityWithLoanValue']:.2f}",
            "initMarginChange": f"{margin:.2f}",
            "maintMarginChange": f"{margin:.2f}",
            "equityWithLoanChange": f"{-commission:.2f}",
            "initMarginAfter": f"{s['InitMarginReq'] + margin:.2f}",
            "maintMarginAfter": f"{s['MaintMarginReq'] + margin:.2f}",
            "equityWithLoanAfter": f"{s['EquityWithLoanValue'] - commission:.2f}",
            "commission": commission,
            "minCommission": commission,
            "maxCommission": commission,
            "commissionCurrency": self.currency,
        }


def _apply(pos: SimPosition, signed: float, price: float, mult: float, commission_ccy: float, fx: float):
    q = pos.quantity
    if q == 0 or (q > 0) == (signed > 0):
        pos.cost += signed * price * mult + commission_ccy
        pos.quantity = q + signed
        return None
    closed = min(abs(signed), abs(q))
    share = closed / abs(signed)
    s_close = math.copysign(closed, signed)
    cost_removed = pos.cost * closed / abs(q)
    pnl = -s_close * price * mult - cost_removed - commission_ccy * share
    pos.cost -= cost_removed
    pos.quantity = q + s_close
    rest = signed - s_close
    if abs(pos.quantity) < 1e-12:
        pos.quantity, pos.cost = 0.0, 0.0
    if rest:
        pos.quantity = rest
        pos.cost = rest * price * mult + commission_ccy * (1.0 - share)
    pos.realized += pnl * fx
    return pnl * fx
