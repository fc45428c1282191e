"""The risk monitor's state, built from the feed alone (no I/O: the service sends and serves).

* **Exposure** per instrument (positions netted over strategies) and in total, in the account
  currency at the mid: net (signed) and gross (absolute).
* **Limit utilisation** for every engine limit, with the engine's own table
  (:mod:`quayside.support.risk.limits`): order quantity, notional and price collar from ORDER
  records (against the marks the order saw), long/short position counting working orders
  (the monitor keeps the order book from ORDER, FILL and ORDER_STATUS records), the message
  rate from ORDER and CANCEL records in the rolling window, the fill-count latch from FILL
  records (and the engine's FILL_LATCH_ENGAGED), quote age against the stale-quote limit. The
  window lengths are reported with their values (they are not capacities).
* **Equity** from its own P&L ledger (:mod:`quayside.support.pnl.accounting`), with its
  high-water mark, drawdown and the day's P&L, sampled every ``sample_ms`` of feed time.
* **Rules** (:mod:`quayside.support.risk.rules`) evaluated at each sample (feed rules) and by
  :meth:`RiskMonitor.check_watchdogs` (wall clock: engine heartbeat, quote staleness).

Everything but the watchdogs is a function of the feed, so a replay rebuilds it exactly.
Responses found while replaying are marked ``replayed``; the service decides what to send.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque

import numpy as np

from quayside.core import wire
from quayside.core.instruments import InstrumentRegistry
from quayside.core.wire import ControlCommand, LimitId, LogCode, OrderStatus, OrderType, RecordKind, Side
from quayside.support.common.logs import logger
from quayside.support.pnl.accounting import Ledger
from quayside.support.pnl.clock import iso
from quayside.support.pnl.feed import LedgerFeed
from quayside.support.risk.limits import WINDOW_LIMITS, LimitTable, finite_or_none, limit_row, ratio
from quayside.support.risk.rules import WATCHDOG_METRICS, Action, BreachTracker, Rule, command_id_for, command_of

__all__ = ["RiskMonitor"]

_NS = 1_000_000_000
_ORDER_LIMITS = (
    LimitId.MAX_ORDER_QTY,
    LimitId.MAX_ORDER_NOTIONAL,
    LimitId.PRICE_COLLAR_PCT,
    LimitId.PRICE_COLLAR_TICKS,
)
_ORDER_LIMITS_AT = np.array(_ORDER_LIMITS)
_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.INACTIVE})
_LEVEL = {"warn": "WARNING", "reduce": "ERROR", "halt": "CRITICAL"}
_DENY_NAMES = dict(zip(wire.DenyReason, wire.DenyReason._fields, strict=True))


class RiskMonitor(LedgerFeed):
    rare_kinds = (
        RecordKind.FILL, RecordKind.POSITION, RecordKind.LOG, RecordKind.ORDER, RecordKind.CANCEL,
        RecordKind.ORDER_STATUS, RecordKind.HEARTBEAT, RecordKind.CONTROL, RecordKind.DENIAL,
    )  # fmt: skip

    def __init__(
        self,
        registry: InstrumentRegistry,
        limits: LimitTable,
        rules: list[Rule],
        *,
        sample_ms: float = 100.0,
        fx_max_age_s: float = 60.0,
        reset_at: str = "17:00",
        timezone: str = "America/New_York",
        issuer_id: int = 0,
        max_actions: int = 1000,
        wall_clock=time.time_ns,
    ):
        super().__init__(Ledger(registry, fx_max_age_s=fx_max_age_s, reset_at=reset_at, timezone=timezone))
        self.registry = registry
        self.limits = limits
        self.rules = list(rules)
        self.issuer_id = issuer_id
        self.wall_clock = wall_clock
        self.sample_ns = int(sample_ms * 1e6)
        self.next_sample_ns = 0
        self.samples = 0
        n = len(self.ledger.known)
        self.working_buy = np.zeros(n)
        self.working_sell = np.zeros(n)
        self.orders: dict[int, list] = {}  # order id -> [iid, side, quantity, filled]
        self.order_last = np.full((n, len(LimitId) + 1), np.nan)  # last order's use of each limit
        self.order_peak = np.full((n, len(LimitId) + 1), np.nan)  # since the last sample
        self.order_peak_today = np.zeros((n, len(LimitId) + 1))
        self.last_trade = np.full(n, np.nan)
        self.messages: deque[int] = deque()
        self.fills: deque[int] = deque()
        self.latched = False
        self.trading_state = 0  # from heartbeats; 0 = not seen
        self.instrument_state: dict[int, int] = {}
        self.heartbeats = 0
        self.heartbeat_wall = 0  # wall time of the last heartbeat seen live
        self.heartbeat_ts = 0
        self.quote_wall = np.zeros(n, dtype=np.int64)
        self.quoted = np.zeros(n, dtype=bool)
        self.live = False
        self.live_since = 0
        self.equity: float | None = None
        self.daily: float | None = None
        self.pending_commissions = 0
        self.hwm = 0.0
        self.drawdown: float | None = None
        self.denials: Counter[str] = Counter()
        self.tracker = BreachTracker()
        self.actions: deque[Action] = deque(maxlen=max_actions)
        self.by_id: dict[int, Action] = {}
        self.outbox: list[Action] = []
        self.echoed: dict[int, str] = {}  # command id -> acknowledged | applied
        self.action_counts: Counter[tuple[str, str]] = Counter()
        self._resets_seen = 0

    # ------------------------------------------------------------------ going live

    def go_live(self) -> None:
        """From now on records arrive live: watchdogs run, responses may be sent."""
        self.live = True
        self.live_since = self.wall_clock()

    # ------------------------------------------------------------------ feed time

    def next_boundary(self) -> int:
        if not self.next_sample_ns and self.ledger.clock_ns:
            self.next_sample_ns = (self.ledger.clock_ns // self.sample_ns + 1) * self.sample_ns
        nxt = [t for t in (self.ledger.next_reset_ns, self.next_sample_ns) if t]
        return min(nxt) if nxt else 0

    def on_boundary(self, ts: int) -> None:
        self.ledger.advance(ts)
        if self.ledger.resets != self._resets_seen:
            self._resets_seen = self.ledger.resets
            self.order_peak_today[:] = 0.0
        if ts >= self.next_sample_ns:
            self.sample()
            self.next_sample_ns = (ts // self.sample_ns + 1) * self.sample_ns

    def sample(self) -> None:
        """Equity, high-water mark, drawdown; then every feed rule."""
        self.samples += 1
        self.equity, self.daily, self.pending_commissions = self.ledger.equity()
        if self.equity is not None:
            self.hwm = max(self.hwm, self.equity)
            self.drawdown = self.hwm - self.equity
        for rule in self.rules:
            if rule.metric not in WATCHDOG_METRICS:
                for key, value, iid in self._values(rule):
                    if self.tracker.update(rule, key, value):
                        self._act(rule, key, value, iid, self.ledger.clock_ns)
        self.order_peak[:] = np.nan

    # ------------------------------------------------------------------ metrics

    def exposures(self) -> tuple[dict[int, dict], dict]:
        led = self.ledger
        out, net, gross, known = {}, 0.0, 0.0, True
        for iid in sorted(led.instruments_held() | {i for (_, i) in led.positions}):
            q = led.net_quantity(iid)
            bid, ask = led.bid[iid], led.ask[iid]
            rate, stale, _, _ = led.fx(led.currency[iid])
            mid = 0.5 * (bid + ask) if 0.0 < bid < math.inf and 0.0 < ask < math.inf else None
            value = None
            if q == 0.0:
                value = 0.0
            elif mid is not None and rate is not None:
                value = q * mid * float(led.multiplier[iid]) * rate
            if value is None:
                known = False
            else:
                net += value
                gross += abs(value)
            out[iid] = {"position": q, "mid": mid, "net": value, "gross": None if value is None else abs(value),
                        "fx_stale": stale}  # fmt: skip
        return out, {"net": net if known else None, "gross": gross if known else None}

    def utilisation(self) -> list[dict]:
        """Every engine limit: its value, what is used, and used / limit (None for windows)."""
        lim, led = self.limits, self.ledger
        now = led.clock_ns
        rows = []
        msgs = self._in_window(self.messages, lim.value(0, LimitId.MESSAGE_WINDOW_NS), now)
        fills = self._in_window(self.fills, lim.value(0, LimitId.FILL_LATCH_WINDOW_NS), now)
        for lid, used in ((LimitId.MAX_MESSAGES_PER_WINDOW, msgs), (LimitId.FILL_LATCH_COUNT, fills)):
            value = lim.value(0, lid)
            util = 1.0 if lid == LimitId.FILL_LATCH_COUNT and self.latched else ratio(used, value)
            rows.append(limit_row(lid, 0, "all", value, used, util, None))
        for lid in sorted(WINDOW_LIMITS):
            rows.append(limit_row(lid, 0, "all", lim.value(0, lid), None, None, None))
        for inst in self.registry:
            iid = inst.id
            q = led.net_quantity(iid)
            for lid in _ORDER_LIMITS:
                used = self.order_last[iid, lid]
                value = lim.value(iid, lid)
                rows.append(limit_row(lid, iid, inst.symbol, value, finite_or_none(used), ratio(used, value),
                                 ratio(self.order_peak_today[iid, lid], value)))  # fmt: skip
            long_used = max(q + self.working_buy[iid], 0.0)
            short_used = max(-(q - self.working_sell[iid]), 0.0)
            for lid, used in ((LimitId.MAX_LONG_POSITION, long_used), (LimitId.MAX_SHORT_POSITION, short_used)):
                value = lim.value(iid, lid)
                rows.append(limit_row(lid, iid, inst.symbol, value, used, ratio(used, value), None))
            value = lim.value(iid, LimitId.STALE_QUOTE_NS)
            age = float(now - self.ledger.ts_quote[iid]) if self.quoted[iid] else None
            rows.append(limit_row(LimitId.STALE_QUOTE_NS, iid, inst.symbol, value, age, ratio(age, value), None))
        return rows

    def _values(self, rule: Rule):
        """``(key, value, instrument id)`` of a feed rule's metric."""
        if rule.metric == "drawdown":
            yield "all", self.drawdown, 0
        elif rule.metric == "daily_loss":
            yield "all", None if self.daily is None else max(-self.daily, 0.0), 0
        elif rule.metric in ("gross_exposure", "net_exposure"):
            per, total = self.exposures()
            field = "gross" if rule.metric == "gross_exposure" else "net"
            if not rule.per_instrument:
                v = total[field]
                yield "all", None if v is None else abs(v), 0
                return
            for iid, e in per.items():
                symbol = self.registry.by_id(iid).symbol
                if rule.instruments is None or symbol in rule.instruments:
                    yield symbol, None if e[field] is None else abs(e[field]), iid
        elif rule.metric == "utilisation":
            for row in self.utilisation():
                if rule.limit is not None and row["limit"] != rule.limit:
                    continue
                if rule.instruments is not None and row["instrument"] not in rule.instruments:
                    continue
                util = row["utilisation"]
                peak = ratio(self.order_peak[row["instrument_id"], row["limit_id"]], row["value"])
                if peak is not None and (util is None or peak > util):
                    util = peak  # an order since the last sample used more
                yield f"{row['instrument']}:{row['limit']}", util, row["instrument_id"]

    @staticmethod
    def _in_window(times: deque, window: float, now: int) -> int:
        while times and times[0] <= now - window:
            times.popleft()
        return len(times)

    # ------------------------------------------------------------------ watchdogs

    def check_watchdogs(self, now: int | None = None) -> list[Action]:
        """The wall-clock rules; only once live. Returns the actions taken."""
        if not self.live:
            return []
        now = self.wall_clock() if now is None else now
        before = len(self.actions)
        for rule in self.rules:
            if rule.metric == "heartbeat_age":
                age = (now - max(self.heartbeat_wall, self.live_since)) / _NS
                if self.tracker.update(rule, "engine", age):
                    self._act(rule, "engine", age, 0, now)
            elif rule.metric == "quote_age":
                for inst in self.registry:
                    watched = inst.symbol in rule.instruments if rule.instruments is not None else self.quoted[inst.id]
                    if not watched:
                        continue
                    age = (now - max(int(self.quote_wall[inst.id]), self.live_since)) / _NS
                    if self.tracker.update(rule, inst.symbol, age):
                        self._act(rule, inst.symbol, age, inst.id, now)
        return list(self.actions)[before:] if len(self.actions) > before else []

    # ------------------------------------------------------------------ actions

    def _act(self, rule: Rule, key: str, value: float, iid: int, ts_breach: int) -> Action:
        command = command_of(rule.response)
        scope = iid if rule.scope == "instrument" else 0
        action = Action(
            id=command_id_for(rule.name, key, ts_breach), rule=rule.name, metric=rule.metric, key=key,
            value=float(value), threshold=rule.threshold, response=rule.response, command=command,
            instrument_id=scope, ts_breach=ts_breach, ts_decided=self.wall_clock(),
        )  # fmt: skip
        if command is None:
            action.set("logged")
        elif action.id in self.echoed:
            action.set(self.echoed[action.id], "the engine had it already")
        else:
            action.set("pending" if self.live else "replayed")
            self.outbox.append(action)
        if len(self.actions) == self.actions.maxlen:  # the oldest leaves the list: and the index
            self.by_id.pop(self.actions[0].id, None)
        self.actions.append(action)
        self.by_id[action.id] = action
        self.action_counts[(rule.name, rule.response)] += 1
        logger.bind(risk_action=action.as_dict()).log(
            _LEVEL[rule.response],
            "risk rule {} breached: {} {} = {:.6g} >= {:g}; response {}{}",
            rule.name, rule.metric, key, value, rule.threshold, rule.response,
            "" if self.live else " (found while replaying history)",
        )  # fmt: skip
        return action

    def _echo(self, command_id: int, state: str) -> None:
        if self.echoed.get(command_id) == "applied":
            return
        self.echoed[command_id] = state
        action = self.by_id.get(command_id)
        if action is not None and action.state != "applied":
            action.set(state)

    # ------------------------------------------------------------------ records

    def on_quotes(self, ids: np.ndarray, rows: np.ndarray, q: np.ndarray) -> None:
        self.quoted[ids] = True
        if self.live:
            self.quote_wall[ids] = self.wall_clock()

    def _fill(self, f: np.void) -> None:
        super()._fill(f)
        qty = float(f["quantity"])
        if qty == 0.0 or not math.isfinite(qty):
            return
        ts = int(f["ts_event"])
        self.fills.append(ts)
        self._in_window(self.fills, self.limits.value(0, LimitId.FILL_LATCH_WINDOW_NS), ts)
        order = self.orders.get(int(f["order_id"]))
        if order is not None and not f["flags"] & wire.Flag.CORRECTION:
            before = max(order[2] - order[3], 0.0)
            order[3] += abs(qty)
            self._working(order, max(order[2] - order[3], 0.0) - before)
            if order[3] >= order[2] - 1e-12:
                del self.orders[int(f["order_id"])]

    def _working(self, order: list, change: float) -> None:
        """The open quantity of ``order``'s instrument and side changed by ``change``."""
        book = self.working_buy if order[1] == Side.BUY else self.working_sell
        v = book[order[0]] + change
        book[order[0]] = v if v > 1e-9 else 0.0

    def on_record(self, kind: int, batch: np.ndarray, i: int) -> None:
        if kind == RecordKind.ORDER:
            self._order(batch.view(wire.order_dtype)[i], i)
        elif kind == RecordKind.CANCEL:
            ts = int(batch["ts_event"][i])
            self.messages.append(ts)
        elif kind == RecordKind.ORDER_STATUS:
            s = batch.view(wire.order_status_dtype)[i]
            order = self.orders.get(int(s["order_id"]))
            if order is not None and int(s["status"]) in _TERMINAL:
                del self.orders[int(s["order_id"])]
                self._working(order, -max(order[2] - order[3], 0.0))
        elif kind == RecordKind.HEARTBEAT:
            h = batch.view(wire.heartbeat_dtype)[i]
            self.heartbeats += 1
            self.trading_state = int(h["trading_state"])
            self.heartbeat_ts = int(h["ts_event"])
            if self.live:
                self.heartbeat_wall = self.wall_clock()
        elif kind == RecordKind.LOG:
            self._log(batch.view(wire.log_dtype)[i])
        elif kind == RecordKind.CONTROL:
            c = batch.view(wire.control_dtype)[i]
            if int(c["issuer_id"]) == self.issuer_id:
                self._echo(int(c["command_id"]), "acknowledged")
        elif kind == RecordKind.DENIAL:
            reason = int(batch.view(wire.denial_dtype)[i]["reason"])
            self.denials[_DENY_NAMES.get(reason) or wire.enum_name(wire.DenyReason, reason)] += 1

    def _order(self, o: np.void, i: int) -> None:
        """Use of the per-order limits, against the market as of the order (marks_at)."""
        ts, iid = int(o["ts_event"]), int(o["instrument_id"])
        self.messages.append(ts)
        self._in_window(self.messages, self.limits.value(0, LimitId.MESSAGE_WINDOW_NS), ts)
        if not self.instrument_ok(iid):
            self.skipped["unknown_instrument"] += 1
            return
        side, qty, price = int(o["side"]), float(o["quantity"]), float(o["price"])
        if not (qty > 0.0 and math.isfinite(qty)):
            self.skipped["bad_order"] += 1
            return
        old = self.orders.get(int(o["order_id"]))
        if old is not None:  # an id used again: the earlier order is gone
            self._working(old, -max(old[2] - old[3], 0.0))
        self.orders[int(o["order_id"])] = order = [iid, side, qty, 0.0]
        self._working(order, qty)
        bid, ask = self.marks_at(i, iid)
        inst = self.registry.by_id(iid)
        if int(o["order_type"]) == OrderType.LIMIT:
            notional_price = price
            ref = self._last_trade_at(i, iid) if self.limits.config.collar_reference == "last" else math.nan
            if math.isnan(ref):
                ref = 0.5 * (bid + ask)
            ok = 0.0 < ref < math.inf and math.isfinite(price)
            off = abs(price - ref) if ok else math.nan
            pct = off / ref * 100.0 if ok else math.nan
            collar = (pct, off / inst.tick_size)
        else:
            notional_price = ask if side == Side.BUY else bid
            collar = (0.0, 0.0)
        rate = self._rate_at(i, inst.currency)
        notional = math.nan
        if rate is not None and 0.0 < notional_price < math.inf:
            notional = qty * notional_price * inst.multiplier * rate
        used = np.array([qty, notional, *collar])  # in the order of _ORDER_LIMITS
        known = ~np.isnan(used)
        self.order_last[iid, _ORDER_LIMITS_AT] = used
        lids = _ORDER_LIMITS_AT[known]  # a few array operations, not a dozen scalar ones: orders are many
        self.order_peak[iid, lids] = np.fmax(self.order_peak[iid, lids], used[known])
        self.order_peak_today[iid, lids] = np.maximum(self.order_peak_today[iid, lids], used[known])

    def _rate_at(self, i: int, currency: str) -> float | None:
        """The FX rate as the engine computes it, from the marks as of row ``i``."""
        led = self.ledger
        if currency == led.account_currency:
            return 1.0
        route = led.fx_route.get(currency)
        if route is None:
            return None
        bid, ask = self.marks_at(i, route[0])
        if not (0.0 < bid < math.inf and 0.0 < ask < math.inf):
            return None
        mid = 0.5 * (bid + ask)
        return 1.0 / mid if route[1] else mid

    def _last_trade_at(self, i: int, iid: int) -> float:
        j = self.latest_before(i, RecordKind.TRADE, iid) if self._seg is not None else -1
        return float(self.last_trade[iid]) if j < 0 else float(self._seg.view(wire.trade_dtype)["price"][j])

    def on_segment(self, seg: np.ndarray, kinds: np.ndarray) -> None:
        rows = np.flatnonzero(kinds == RecordKind.TRADE)
        if not len(rows):
            return
        t = seg.view(wire.trade_dtype)
        iid = t["instrument_id"][rows]
        ok = iid < len(self.last_trade)
        rows, iid = rows[ok], iid[ok]
        last = np.full(len(self.last_trade), -1, dtype=np.int64)
        np.maximum.at(last, iid, rows)
        ids = np.flatnonzero(last >= 0)
        self.last_trade[ids] = t["price"][last[ids]]

    def _log(self, r: np.void) -> None:
        code, iid = int(r["code"]), int(r["instrument_id"])
        if code == LogCode.LIMIT_CHANGED:
            lid, value = int(r["i0"]), float(r["a1"])
            if self.limits.on_limit_changed(iid, lid, value):
                logger.info("risk: engine limit {} of {} is now {:g}", self.limits.name(lid), iid or "all", value)
        elif code == LogCode.FILL_LATCH_ENGAGED:
            self.latched = True
        elif code == LogCode.STATE_CHANGED:
            self.instrument_state[iid] = int(r["i1"])
        elif code == LogCode.CONTROL_APPLIED:
            if int(r["i0"]) == ControlCommand.RESUME and iid == 0:
                self.latched = False
            self._echo(int(r["i1"]), "applied")

    # ------------------------------------------------------------------ report

    def report(self) -> dict:
        per, total = self.exposures()
        wall = self.wall_clock()
        return {
            "account_currency": self.ledger.account_currency,
            "feed_time": iso(self.ledger.clock_ns),
            "live": self.live,
            "engine": {
                "trading_state": wire.enum_name(wire.TradingState, self.trading_state) if self.trading_state else None,
                "instrument_states": {
                    self._symbol(i): wire.enum_name(wire.TradingState, s)
                    for i, s in sorted(self.instrument_state.items())
                },
                "heartbeats": self.heartbeats,
                "heartbeat_age_s": (wall - self.heartbeat_wall) / _NS if self.heartbeat_wall else None,
                "fill_latch_engaged": self.latched,
            },
            "exposure": {"instruments": {self._symbol(i): e for i, e in per.items()}, "total": total},
            "equity": {
                "equity": self.equity,
                "high_water_mark": self.hwm,
                "drawdown": self.drawdown,
                "daily_pnl": self.daily,
                "daily_loss": None if self.daily is None else max(-self.daily, 0.0),
                "pending_commissions": self.pending_commissions,
                "samples": self.samples,
            },
            "limits": self.utilisation(),
            "working_orders": len(self.orders),
            "denials": dict(self.denials),
            "rules": [{**rule.model_dump(), "breached": self.tracker.keys_of(rule)} for rule in self.rules],
            "actions": len(self.actions),
            "skipped": dict(self.skipped),
        }

    def _symbol(self, iid: int) -> str:
        return self.registry.by_id(iid).symbol if self.instrument_ok(iid) else "all" if iid == 0 else f"#{iid}"
