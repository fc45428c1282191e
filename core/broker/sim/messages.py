"""Messages the simulated gateway sends, field by field, as ib_insync 0.9.86 decodes them at
server version 176 (see :mod:`.protocol`).

Each function returns the message as a list of Python values (:func:`.protocol.encode` turns it
into bytes): ``int`` for integer fields, ``float`` for doubles, ``str`` for text, ``bool`` for
flags and ``None`` (an empty field) for "not set". ib_insync parses numeric fields by the type
of the default of the field it fills, so an integer field must never carry ``"1.0"`` and the
counts that steer its decoding (legs, parameters, conditions, the delta-neutral flag) must be
numbers, not empty.
"""

from __future__ import annotations

from quayside.core.broker.sim.contracts import ContractInfo
from quayside.core.broker.sim.protocol import Out

__all__ = [
    "tick_price",
    "tick_size",
    "tick_req_params",
    "market_data_type",
    "tick_snapshot_end",
    "tick_by_tick_bid_ask",
    "tick_by_tick_last",
    "tick_by_tick_mid",
    "order_status",
    "error",
    "open_order",
    "open_order_end",
    "completed_order",
    "completed_orders_end",
    "account_value",
    "portfolio_value",
    "account_update_time",
    "account_download_end",
    "next_valid_id",
    "contract_details",
    "contract_details_end",
    "exec_details",
    "exec_details_end",
    "commission_report",
    "managed_accounts",
    "current_time",
    "position",
    "position_end",
    "account_summary",
    "account_summary_end",
    "account_update_multi",
    "account_update_multi_end",
]

# --------------------------------------------------------------------------- market data


def tick_price(req_id: int, tick_type: int, price: float, size: float) -> list:
    return [Out.TICK_PRICE, 6, req_id, tick_type, float(price), float(size), 0]


def tick_size(req_id: int, tick_type: int, size: float) -> list:
    return [Out.TICK_SIZE, 6, req_id, tick_type, float(size)]


def tick_req_params(req_id: int, min_tick: float, bbo_exchange: str) -> list:
    return [Out.TICK_REQ_PARAMS, req_id, float(min_tick), bbo_exchange, 3]


def market_data_type(req_id: int, data_type: int = 1) -> list:
    return [Out.MARKET_DATA_TYPE, 1, req_id, data_type]


def tick_snapshot_end(req_id: int) -> list:
    return [Out.TICK_SNAPSHOT_END, 1, req_id]


def tick_by_tick_bid_ask(req_id: int, t_s: int, bid: float, ask: float, bid_size: float, ask_size: float) -> list:
    return [Out.TICK_BY_TICK, req_id, 3, t_s, float(bid), float(ask), float(bid_size), float(ask_size), 0]


def tick_by_tick_last(req_id: int, tick_type: int, t_s: int, price: float, size: float, exchange: str) -> list:
    return [Out.TICK_BY_TICK, req_id, tick_type, t_s, float(price), float(size), 0, exchange, ""]


def tick_by_tick_mid(req_id: int, t_s: int, mid: float) -> list:
    return [Out.TICK_BY_TICK, req_id, 4, t_s, float(mid)]


# --------------------------------------------------------------------------- orders


def order_status(o) -> list:
    """``o`` is a :class:`~.broker.SimOrder`."""
    return [
        Out.ORDER_STATUS,
        o.order_id,
        o.status,
        float(o.filled),
        float(o.remaining),
        float(o.avg_fill_price),
        o.perm_id,
        o.parent_id,
        float(o.last_fill_price),
        o.client_id,
        "",
        0.0,
    ]


def error(req_id: int, code: int, text: str) -> list:
    return [Out.ERROR, 2, req_id, code, text, ""]


def _price(value: float | None):
    return None if value is None else float(value)


def open_order(o, info: ContractInfo, what_if_state: dict | None = None) -> list:
    """The openOrder message; ``what_if_state`` (margins, commission) answers a what-if order."""
    w = what_if_state or {}
    fields = [Out.OPEN_ORDER, o.order_id, *info.fields()]
    fields += [o.action, float(o.quantity), o.order_type, _price(o.lmt_price), None, o.tif]
    fields += [o.oca_group, o.account, "", 0, o.order_ref, o.client_id, o.perm_id, o.outside_rth, False, 0.0, ""]
    fields += [None]  # deprecated sharesAllocation
    # faGroup faMethod faPercentage faProfile modelCode goodTillDate rule80A percentOffset
    fields += ["", "", "", "", "", o.good_till_date, "", None]
    # settlingFirm shortSaleSlot designatedLocation exemptCode auctionStrategy startingPrice
    # stockRefPrice delta stockRangeLower stockRangeUpper
    fields += ["", 0, "", -1, 0, None, None, None, None, None]
    # displaySize blockOrder sweepToFill allOrNone minQty ocaType eTradeOnly firmQuoteOnly
    # nbboPriceCap parentId triggerMethod volatility volatilityType
    fields += [0, False, False, False, None, 0, False, False, None, o.parent_id, 0, None, None]
    fields += ["", None]  # deltaNeutralOrderType (empty: no delta-neutral block), deltaNeutralAuxPrice
    # continuousUpdate referencePriceType trailStopPrice trailingPercent basisPoints
    # basisPointsType comboLegsDescrip
    fields += [False, None, None, None, None, None, ""]
    fields += [0, 0, 0]  # combo legs, order combo legs, smart combo routing params
    fields += [None, None, None]  # scaleInitLevelSize scaleSubsLevelSize scalePriceIncrement (unset)
    fields += [""]  # hedgeType (none)
    fields += [False, "", "", False, 0]  # optOutSmartRouting clearingAccount clearingIntent notHeld dncPresent
    fields += [""]  # algoStrategy (none)
    fields += [False, bool(what_if_state), o.status]  # solicited whatIf status
    for key in (
        "initMarginBefore",
        "maintMarginBefore",
        "equityWithLoanBefore",
        "initMarginChange",
        "maintMarginChange",
        "equityWithLoanChange",
        "initMarginAfter",
        "maintMarginAfter",
        "equityWithLoanAfter",
    ):
        fields.append(w.get(key, ""))
    fields += [w.get("commission"), w.get("minCommission"), w.get("maxCommission"), w.get("commissionCurrency", "")]
    fields += [w.get("warningText", ""), False, False]  # warningText randomizeSize randomizePrice
    fields += [0]  # conditions
    # adjustedOrderType triggerPrice trailStopPrice lmtPriceOffset adjustedStopPrice
    # adjustedStopLimitPrice adjustedTrailingAmount adjustableTrailingUnit
    fields += ["", None, None, None, None, None, None, 0]
    fields += ["", "", ""]  # softDollarTier name, value, display name
    # cashQty dontUseAutoPriceForHedge isOmsContainer discretionaryUpToLimitPrice usePriceMgmtAlgo
    fields += [None, False, False, False, False]
    fields += [None, None, False]  # duration postToAts autoCancelParent
    fields += [None, None, None, None, None]  # minTradeQty minCompeteSize competeAgainstBestOffset midOffsets
    return fields


def open_order_end() -> list:
    return [Out.OPEN_ORDER_END, 1]


def completed_order(o, info: ContractInfo) -> list:
    fields = [Out.COMPLETED_ORDER, *info.fields()]
    fields += [o.action, float(o.quantity), o.order_type, _price(o.lmt_price), None, o.tif]
    fields += [o.oca_group, o.account, "", 0, o.order_ref, o.perm_id, o.outside_rth, False, 0.0, ""]
    # faGroup faMethod faPercentage faProfile modelCode goodTillDate rule80A percentOffset
    fields += ["", "", "", "", "", o.good_till_date, "", None]
    # settlingFirm shortSaleSlot designatedLocation exemptCode startingPrice stockRefPrice
    # delta stockRangeLower stockRangeUpper
    fields += ["", 0, "", -1, None, None, None, None, None]
    # displaySize sweepToFill allOrNone minQty ocaType triggerMethod volatility volatilityType
    fields += [0, False, False, None, 0, 0, None, None]
    fields += ["", None]  # deltaNeutralOrderType deltaNeutralAuxPrice
    fields += [False, None, None, None, ""]  # continuousUpdate referencePriceType trailStop trailing% legsDescrip
    fields += [0, 0, 0]  # combo legs, order combo legs, smart combo routing params
    fields += [None, None, None]  # scale sizes and increment (unset)
    fields += [""]  # hedgeType
    fields += ["", "", False, 0]  # clearingAccount clearingIntent notHeld dncPresent
    fields += [""]  # algoStrategy
    fields += [False, o.status, False, False]  # solicited status randomizeSize randomizePrice
    fields += [0]  # conditions
    # trailStopPrice lmtPriceOffset cashQty dontUseAutoPriceForHedge isOmsContainer autoCancelDate
    fields += [None, None, None, False, False, ""]
    # filledQuantity refFuturesConId autoCancelParent shareholder imbalanceOnly routeMarketableToBbo
    fields += [float(o.filled), 0, False, "", False, False]
    fields += [0, o.completed_time, o.completed_status]  # parentPermId completedTime completedStatus
    fields += [None, None, None, None, None]  # minTradeQty minCompeteSize competeAgainstBestOffset midOffsets
    return fields


def completed_orders_end() -> list:
    return [Out.COMPLETED_ORDERS_END]


# --------------------------------------------------------------------------- executions


def exec_details(req_id: int, e, info: ContractInfo) -> list:
    """``e`` is a :class:`~.broker.SimExecution`; ``req_id`` is -1 for a live execution."""
    return [
        Out.EXECUTION_DATA,
        req_id,
        e.order_id,
        *info.fields(exchange=e.exchange),
        e.exec_id,
        e.time_text,
        e.account,
        e.exchange,
        e.side,
        float(e.shares),
        float(e.price),
        e.perm_id,
        e.client_id,
        0,
        float(e.cum_qty),
        float(e.avg_price),
        e.order_ref,
        "",
        None,
        "",
        e.liquidity,
    ]


def exec_details_end(req_id: int) -> list:
    return [Out.EXECUTION_DATA_END, 1, req_id]


def commission_report(e, currency: str) -> list:
    return [Out.COMMISSION_REPORT, 1, e.exec_id, float(e.commission), currency, e.realized_pnl, None, None]


# --------------------------------------------------------------------------- account


def managed_accounts(accounts: list[str]) -> list:
    return [Out.MANAGED_ACCOUNTS, 1, ",".join(accounts)]


def next_valid_id(order_id: int) -> list:
    return [Out.NEXT_VALID_ID, 1, order_id]


def current_time(t_s: int) -> list:
    return [Out.CURRENT_TIME, 1, t_s]


def account_value(key: str, value: str, currency: str, account: str) -> list:
    return [Out.ACCOUNT_VALUE, 2, key, value, currency, account]


def portfolio_value(info: ContractInfo, p: dict, account: str) -> list:
    """``p``: position, market_price, market_value, average_cost, unrealized_pnl, realized_pnl."""
    return [
        Out.PORTFOLIO_VALUE,
        8,
        *info.portfolio_fields(),
        float(p["position"]),
        float(p["market_price"]),
        float(p["market_value"]),
        float(p["average_cost"]),
        float(p["unrealized_pnl"]),
        float(p["realized_pnl"]),
        account,
    ]


def account_update_time(hhmm: str) -> list:
    return [Out.ACCOUNT_UPDATE_TIME, 1, hhmm]


def account_download_end(account: str) -> list:
    return [Out.ACCOUNT_DOWNLOAD_END, 1, account]


def position(account: str, info: ContractInfo, quantity: float, avg_cost: float) -> list:
    return [Out.POSITION, 3, account, *info.fields(exchange=info.listing_exchange), float(quantity), float(avg_cost)]


def position_end() -> list:
    return [Out.POSITION_END, 1]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> list:
    return [Out.ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> list:
    return [Out.ACCOUNT_SUMMARY_END, 1, req_id]


def account_update_multi(req_id: int, account: str, key: str, value: str, currency: str) -> list:
    return [Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, "", key, value, currency]


def account_update_multi_end(req_id: int) -> list:
    return [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id]


# --------------------------------------------------------------------------- contracts


def contract_details(req_id: int, info: ContractInfo, now_ns: int) -> list:
    inst = info.instrument
    exchanges = ",".join(dict.fromkeys(x for x in (info.exchange, info.primary_exchange) if x))
    hours = info.trading_hours(now_ns)
    lot = float(inst.lot_size)
    return [
        Out.CONTRACT_DETAILS,
        req_id,
        info.symbol,
        info.sec_type,
        info.last_trade_date,
        0,
        "",
        info.exchange,
        info.currency,
        info.local_symbol,
        info.trading_class,  # marketName
        info.trading_class,
        info.con_id,
        float(inst.tick_size),
        info.multiplier,
        "LMT,MKT",  # orderTypes
        exchanges,
        1,  # priceMagnifier
        0,  # underConId
        f"{inst.symbol} (simulated)",  # longName
        info.primary_exchange,
        info.contract_month,
        "",  # industry
        "",  # category
        "",  # subcategory
        "UTC",  # timeZoneId
        hours,
        hours,
        "",  # evRule
        None,  # evMultiplier
        0,  # secIdList count
        1,  # aggGroup
        info.under_symbol,
        "IND" if info.sec_type == "FUT" else "",
        "",  # marketRuleIds
        info.last_trade_date,  # realExpirationDate
        "COMMON" if info.sec_type == "STK" else "",
        lot,  # minSize
        lot,  # sizeIncrement
        lot,  # suggestedSizeIncrement
    ]


def contract_details_end(req_id: int) -> list:
    return [Out.CONTRACT_DETAILS_END, 1, req_id]
