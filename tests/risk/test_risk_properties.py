"""Property: no sequence of inputs ever gets an order outside the limits onto the outbound ring.

A hypothesis state machine drives the real engine kernels with arbitrary quotes (any prices,
stale flags), trades, strategy intents (any instrument, side, type, price, quantity, including
NaN, negative, zero and off-lot), fills of working orders and foreign fills, order status
updates, control commands (halt, resume, reduce-only, cancel-all, set-limit with any value,
per instrument or global, valid or not) and time steps. After every step each record that
reached the outbound ring is checked against a small pure-Python model of the limits as they
stood at that moment. The model is not the kernel: it asks only "is this order inside every
limit" (in exact arithmetic, with a small tolerance), not "would the kernel have sent it".
Each step also checks that every refused order became a denial on the feed, and that a cancel
asked for (by a strategy, HALT or CANCEL_ALL) went out whatever the limits said.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

from _builders import AAPL, ESZ6, EURUSD, MS, T0, TOYOTA, USDJPY, Bench, registry
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from quayside.core.engine.state import IntentAction
from quayside.core.risk.config import InstrumentLimits, RiskConfig
from quayside.core.wire import (
    ControlCommand,
    DenyReason,
    Flag,
    LimitId,
    OrderStatus,
    OrderType,
    RecordKind,
    Side,
    TimeInForce,
    TradingState,
    denial_dtype,
    dtype_for,
    enum_name,
)

REG = registry()
INST = {i.id: i for i in REG}
SIZE = max(INST) + 1
IIDS = sorted(INST)
BASE = {EURUSD: 1.1, USDJPY: 150.0, AAPL: 200.0, ESZ6: 5000.0, TOYOTA: 2500.0}
ALLOWED = {EURUSD, AAPL, ESZ6, TOYOTA}
STRATEGY_ID = 1
MODELLED_COMMANDS = [  # the operator's commands, which the model follows (not the gateway's block / mark-stale)
    ControlCommand.HALT,
    ControlCommand.RESUME,
    ControlCommand.REDUCE_ONLY,
    ControlCommand.SET_LIMIT,
    ControlCommand.CANCEL_ALL,
]
WILD = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 5e-324, 1e-300, 1e-9, 1e300, 1.7e308]

RISK = dict(
    defaults=InstrumentLimits(
        max_order_qty=50.0,
        max_order_notional=1_000_000.0,
        price_collar_pct=5.0,
        max_long_position=30.0,
        max_short_position=25.0,
        stale_quote_ms=500.0,
    ),
    instruments={
        "ESZ6": InstrumentLimits(max_order_qty=5.0, price_collar_ticks=8.0),
        "7203": InstrumentLimits(max_order_notional=50_000.0),
    },
    allow=sorted(INST[i].symbol for i in ALLOWED),
    max_messages_per_window=6,
    message_window_ms=1_000.0,
    duplicate_window_ms=20.0,
    fill_latch_count=10,
    fill_latch_window_ms=1_000.0,
)
_ROW_FIELDS = {  # LimitId -> (InstrumentLimits field, scale to the engine's unit)
    LimitId.MAX_ORDER_QTY: ("max_order_qty", 1.0),
    LimitId.MAX_ORDER_NOTIONAL: ("max_order_notional", 1.0),
    LimitId.PRICE_COLLAR_PCT: ("price_collar_pct", 1.0),
    LimitId.PRICE_COLLAR_TICKS: ("price_collar_ticks", 1.0),
    LimitId.MAX_LONG_POSITION: ("max_long_position", 1.0),
    LimitId.MAX_SHORT_POSITION: ("max_short_position", 1.0),
    LimitId.STALE_QUOTE_NS: ("stale_quote_ms", MS),
}

STATS: Counter = Counter()


def exact(x: float) -> Fraction | None:
    """``x`` as an exact fraction, or None if it is not a finite number."""
    return Fraction(x) if math.isfinite(x) else None


def within(value: Fraction, limit: float, rel: float = 1e-9, abs_: float = 0.0) -> bool:
    """``value <= limit`` up to a relative (and absolute) tolerance; an infinite limit is none."""
    if limit == math.inf:
        return True
    if limit == -math.inf:
        return False
    lim = Fraction(limit)
    return value <= lim + abs(lim) * Fraction(rel) + Fraction(abs_)


@dataclass
class Order:
    iid: int
    side: int
    qty: Fraction
    filled: Fraction = Fraction(0)
    cancel_sent: bool = False


class Model:
    """What the limits are and what is known (quotes, fills, working orders) at each moment."""

    def __init__(self, risk: RiskConfig, fx_fallback: float | None, collar_last: bool):
        self.rows: dict[int, dict[int, float]] = {i: {} for i in range(SIZE)}
        for lid, (field, scale) in _ROW_FIELDS.items():
            self.rows[0][lid] = getattr(risk.defaults, field) * scale
            for symbol, lim in risk.instruments.items():
                if getattr(lim, field) is not None:
                    self.rows[REG.by_symbol(symbol).id][lid] = getattr(lim, field) * scale
        self.rows[0] |= {
            LimitId.MAX_MESSAGES_PER_WINDOW: float(risk.max_messages_per_window),
            LimitId.MESSAGE_WINDOW_NS: risk.message_window_ms * MS,
            LimitId.DUPLICATE_WINDOW_NS: risk.duplicate_window_ms * MS,
            LimitId.FILL_LATCH_COUNT: float(risk.fill_latch_count),
            LimitId.FILL_LATCH_WINDOW_NS: risk.fill_latch_window_ms * MS,
        }
        self.fx_fallback = fx_fallback
        self.collar_last = collar_last
        self.state = dict.fromkeys(range(SIZE), TradingState.ACTIVE)  # 0: global
        self.latched = False
        self.quotes: dict[int, tuple[float, float, int, bool]] = {}  # bid, ask, ts, stale
        self.last: dict[int, float] = {}
        self.position = dict.fromkeys(range(SIZE), Fraction(0))
        self.orders: dict[int, Order] = {}  # open orders by id
        self.messages: list[int] = []
        self.fills: list[int] = []

    def limit(self, iid: int, lid: int) -> float:
        return self.rows[iid].get(lid, self.rows[0][lid])

    def working(self, iid: int, side: int) -> Fraction:
        return sum((o.qty - o.filled for o in self.orders.values() if o.iid == iid and o.side == side), Fraction(0))

    def mid(self, iid: int) -> Fraction | None:
        if iid not in self.quotes:
            return None
        bid, ask = exact(self.quotes[iid][0]), exact(self.quotes[iid][1])
        return None if bid is None or ask is None else (bid + ask) / 2

    def fx(self, iid: int) -> Fraction | None:
        if INST[iid].currency == "USD":
            return Fraction(1)
        mid = self.mid(USDJPY)  # the only foreign currency here is JPY
        if mid is not None and mid > 0:
            return 1 / mid
        return None if self.fx_fallback is None else Fraction(self.fx_fallback)

    def breaches(self, o, now: int) -> list[str]:
        """Every limit that order record ``o`` (sent at ``now``) is outside of."""
        iid, side, otype = int(o["instrument_id"]), int(o["side"]), int(o["order_type"])
        price, qty_f = float(o["price"]), float(o["quantity"])
        out = []
        if iid not in ALLOWED:
            return [f"instrument {iid} is not allowed"]
        state = max(self.state[0], self.state[iid])
        if state == TradingState.HALTED:
            out.append("trading is halted")
        if self.latched:
            out.append("the fill latch is engaged")
        lot = Fraction(INST[iid].lot_size)
        qty = exact(qty_f)
        if qty is None or qty <= 0 or round(qty / lot) < 1 or abs(qty / lot - round(qty / lot)) > Fraction(1, 10**6):
            return [*out, f"quantity {qty_f} is not a positive whole number of lots"]
        if side not in (Side.BUY, Side.SELL) or otype not in (OrderType.LIMIT, OrderType.MARKET):
            return [*out, f"side {side} / type {otype} is not an order"]
        if otype == OrderType.LIMIT and (exact(price) is None or price <= 0):
            return [*out, f"limit price {price} is not a price"]
        if iid not in self.quotes:
            return [*out, "no quote was ever seen"]
        _, _, ts_quote, stale_flag = self.quotes[iid]
        if stale_flag or now - ts_quote > self.limit(iid, LimitId.STALE_QUOTE_NS):
            out.append(f"quote is stale (flag {stale_flag}, age {now - ts_quote} ns)")
        if not within(qty, self.limit(iid, LimitId.MAX_ORDER_QTY)):
            out.append(f"quantity {qty_f} > max {self.limit(iid, LimitId.MAX_ORDER_QTY)}")
        last = self.last.get(iid, math.nan)
        ref = exact(last) if self.collar_last and not math.isnan(last) else self.mid(iid)
        if ref is None or ref <= 0:
            out.append("no valid collar reference")
        elif otype == OrderType.LIMIT:
            dist = abs(Fraction(price) - ref)
            pct, ticks = self.limit(iid, LimitId.PRICE_COLLAR_PCT), self.limit(iid, LimitId.PRICE_COLLAR_TICKS)
            if pct != math.inf and not within(dist, pct * 0.01 * float(ref), rel=1e-6):
                out.append(f"price {price} outside {pct} % of {float(ref)}")
            if ticks != math.inf and not within(dist / Fraction(INST[iid].tick_size), ticks, rel=1e-6):
                out.append(f"price {price} outside {ticks} ticks of {float(ref)}")
        max_notional = self.limit(iid, LimitId.MAX_ORDER_NOTIONAL)
        if max_notional != math.inf:
            bid, ask = self.quotes[iid][0], self.quotes[iid][1]
            value_price = exact(price if otype == OrderType.LIMIT else (ask if side == Side.BUY else bid))
            fx = self.fx(iid)
            if value_price is None or value_price <= 0:
                out.append("no price to value the order at")
            elif fx is None:
                out.append("no FX rate")
            elif not within(qty * value_price * Fraction(INST[iid].multiplier) * fx, max_notional, rel=1e-6):
                out.append(f"notional above {max_notional}")
        pos = self.position[iid]
        exposure = pos + self.working(iid, side) * side + qty * side  # signed, counting working orders
        tol = 1e-6 + 1e-9 * float(abs(pos) + qty)
        if side == Side.BUY and not within(exposure, self.limit(iid, LimitId.MAX_LONG_POSITION), abs_=tol):
            out.append(f"long {float(exposure)} > {self.limit(iid, LimitId.MAX_LONG_POSITION)}")
        if side == Side.SELL and not within(-exposure, self.limit(iid, LimitId.MAX_SHORT_POSITION), abs_=tol):
            out.append(f"short {float(-exposure)} > {self.limit(iid, LimitId.MAX_SHORT_POSITION)}")
        if state == TradingState.REDUCING and not within(exposure * side, 0.0, abs_=tol):
            out.append(f"REDUCING, but position {float(pos)} would go to {float(exposure)}")
        window, max_msgs = self.limit(0, LimitId.MESSAGE_WINDOW_NS), self.limit(0, LimitId.MAX_MESSAGES_PER_WINDOW)
        in_window = sum(1 for t in self.messages if now - t < window)
        if in_window + 1 > max_msgs:
            out.append(f"{in_window + 1} messages in {window} ns > {max_msgs}")
        return out

    def fill(self, iid: int, oid: int, qty: float, now: int) -> None:
        self.position[iid] += Fraction(qty)
        if oid in self.orders:
            o = self.orders[oid]
            o.filled += abs(Fraction(qty))
            if o.filled >= o.qty:
                del self.orders[oid]
        self.fills.append(now)
        if not self.latched:
            window, count = self.limit(0, LimitId.FILL_LATCH_WINDOW_NS), self.limit(0, LimitId.FILL_LATCH_COUNT)
            self.latched = sum(1 for t in self.fills if now - t < window) >= count


def mostly(data, normal, odd, label: str, one_in: int = 16):
    """A draw from ``normal``, but one time in ``one_in`` from ``odd``."""
    is_odd = data.draw(st.integers(0, one_in - 1), label=f"{label} odd?") == 0
    return data.draw(odd if is_odd else normal, label=label)


def price_near(ref: float, tick: float):
    """Within a few percent or a few ticks of ``ref``: where the collar is decided."""
    pct = st.floats(-0.06, 0.06).map(lambda u: ref * (1.0 + u))
    ticks = st.integers(-12, 12).map(lambda k: ref + k * tick)
    return st.one_of(pct, ticks)


ODD_PRICES = st.one_of(st.sampled_from(WILD), st.floats())
ODD_QTY = st.sampled_from([*WILD, 0.5, 2.5, 1e-10, 1e9, 1e17])


class RiskMachine(RuleBasedStateMachine):
    @initialize(collar_last=st.booleans(), fallback=st.sampled_from([None, 1 / 150]))
    def start(self, collar_last, fallback):
        risk = RiskConfig(**RISK, collar_reference="last" if collar_last else "mid")
        self.b = Bench(risk, fx_fallback=None if fallback is None else {"JPY": fallback}, out_capacity=1024)
        self.m = Model(risk, fallback, collar_last)
        self.now = T0
        for iid in IIDS:
            bid, ask = BASE[iid], BASE[iid] + INST[iid].tick_size
            self.b.quote(iid, bid, ask, self.now)
            self.m.quotes[iid] = (bid, ask, self.now, False)
        self.check()

    # ----------------------------------------------------------------- inputs

    @rule(data=st.data(), iids=st.lists(st.sampled_from([*IIDS, *IIDS, 0, SIZE]), min_size=1, max_size=4))
    def quotes(self, data, iids):
        for iid in iids:
            self.quote(data, iid, data.draw(st.sampled_from([0, 0, 0, 0, 0, Flag.STALE]), label="flags"))
        self.check()

    def quote(self, data, iid, stale):
        base = BASE.get(iid, 1.0)
        tick = INST[iid].tick_size if iid in INST else 0.01
        bid = mostly(data, price_near(base, tick), ODD_PRICES, "bid")
        ask = mostly(
            data, st.integers(0, 4).map(lambda k: bid + k * tick), st.one_of(ODD_PRICES, st.just(bid - tick)), "ask"
        )
        self.b.quote(iid, bid, ask, self.now, flags=stale)
        if iid in INST:
            self.m.quotes[iid] = (bid, ask, self.now, bool(stale))

    @rule(iid=st.sampled_from(IIDS), data=st.data())
    def trade(self, iid, data):
        price = mostly(data, price_near(BASE[iid], INST[iid].tick_size), ODD_PRICES, "price")
        self.b.trade(iid, price, self.now)
        self.m.last[iid] = price
        self.check()

    @rule(data=st.data())
    def intents(self, data):
        rows, cancels, new = [], [], 0
        for _ in range(data.draw(st.integers(1, 3), label="intents")):
            if self.m.orders and data.draw(st.integers(0, 9), label="cancel?") == 0:
                oid = data.draw(st.sampled_from(sorted(self.m.orders)), label="cancel")
                rows.append((IntentAction.CANCEL, oid))
                cancels.append(oid)
                continue
            iid = mostly(
                data, st.sampled_from(sorted(ALLOWED)), st.sampled_from([USDJPY, 0, SIZE, 99, -1, 10**8]), "iid"
            )
            ref = self.m.mid(iid) if iid in INST else None
            ref = float(ref) if ref is not None and 0 < ref < 1e300 else BASE.get(iid, 1.0)
            side = mostly(data, st.sampled_from([Side.BUY, Side.SELL]), st.sampled_from([0, 2, -2]), "side")
            otype = mostly(
                data,
                st.sampled_from([OrderType.LIMIT, OrderType.LIMIT, OrderType.MARKET]),
                st.sampled_from([0, 9]),
                "type",
            )
            tif = data.draw(st.sampled_from([TimeInForce.DAY, TimeInForce.IOC, TimeInForce.GTC]), label="tif")
            tick = INST[iid].tick_size if iid in INST else 0.01
            price = mostly(data, price_near(ref, tick), ODD_PRICES, "price")
            if otype == OrderType.MARKET:
                price = math.nan
            qty = mostly(data, st.one_of(st.integers(1, 6), st.integers(1, 60)).map(float), ODD_QTY, "qty")
            rows.append((IntentAction.NEW, iid, side, otype, tif, price, qty))
            new += 1
        self.b.intents(rows, self.now)
        self.check(new=new, cancels=[o for o in dict.fromkeys(cancels) if not self.m.orders[o].cancel_sent])

    @rule(data=st.data())
    def more_intents(self, data):  # orders are what the property is about: give them more steps
        self.intents(data)

    @rule(data=st.data())
    def fill(self, data):
        if self.m.orders and data.draw(st.integers(0, 4), label="foreign?") > 0:
            oid = data.draw(st.sampled_from(sorted(self.m.orders)), label="order")
            o = self.m.orders[oid]
            remaining = o.qty - o.filled
            part = st.integers(1, int(remaining)).map(float) if remaining >= 1 else st.just(float(remaining))
            over = st.integers(1, 10).map(lambda k: float(remaining) + k)  # a duplicated execution report
            qty = o.side * mostly(data, part, over, "qty")
            iid = o.iid
        else:  # a fill of no order of ours (a manual trade in TWS): moves the position only
            oid, iid = 0, data.draw(st.sampled_from(IIDS), label="iid")
            qty = data.draw(st.sampled_from([1.0, -1.0, 3.0, -7.0, 0.5, -0.25, 0.0]), label="qty")
        self.b.fill(oid, iid, qty, BASE[iid], self.now)
        if qty != 0.0:
            self.m.fill(iid, oid, qty, self.now)
        self.check()

    @rule(data=st.data(), status=st.sampled_from(list(OrderStatus)))
    def status(self, data, status):
        if not self.m.orders:
            return
        oid = data.draw(st.sampled_from(sorted(self.m.orders)), label="order")
        self.b.status(oid, self.m.orders[oid].iid, status, self.now)
        if status in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.INACTIVE):
            del self.m.orders[oid]
        self.check()

    @rule(
        data=st.data(),
        command=st.sampled_from([*MODELLED_COMMANDS, ControlCommand.RESUME, ControlCommand.SET_LIMIT, 0, 200]),
        iid=st.sampled_from([0] * 6 + [*IIDS, SIZE, 200]),
        strategy_id=st.sampled_from([0, 0, STRATEGY_ID, 2]),
    )
    def control(self, data, command, iid, strategy_id):
        limit_id = data.draw(st.sampled_from([*LimitId, *LimitId, 0, max(LimitId) + 1, 255]), label="limit_id")
        current = self.m.limit(min(iid, SIZE - 1), limit_id) if limit_id in LimitId else 1.0
        scaled = st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.1, 2.0, 1e6]).map(lambda k: k * current)
        value = data.draw(st.one_of(scaled, scaled, st.sampled_from(WILD), st.floats()), label="value")
        self.b.control(command, self.now, iid=iid, limit_id=limit_id, value=value, strategy_id=strategy_id)
        m, scope = self.m, []
        if strategy_id in (0, STRATEGY_ID) and iid < SIZE:
            if command == ControlCommand.HALT:
                m.state[iid] = TradingState.HALTED
            elif command == ControlCommand.RESUME:
                m.state[iid] = TradingState.ACTIVE
                m.latched = m.latched and iid != 0
            elif command == ControlCommand.REDUCE_ONLY:
                m.state[iid] = TradingState.REDUCING
            elif command == ControlCommand.SET_LIMIT and limit_id in LimitId and not math.isnan(value):
                m.rows[iid][limit_id] = value
            if command in (ControlCommand.HALT, ControlCommand.CANCEL_ALL):
                scope = [k for k, o in m.orders.items() if (iid == 0 or o.iid == iid) and not o.cancel_sent]
        self.check(cancels=scope)

    @rule(dt=st.sampled_from([0, 1, 1_000, MS, 10 * MS, 50 * MS, 100 * MS, 200 * MS, 499 * MS, 501 * MS, 5_000 * MS]))
    def advance(self, dt):
        self.now += dt

    # ----------------------------------------------------------------- the property

    def check(self, new: int = 0, cancels: tuple = ()) -> None:
        out, feed = self.b.drain_out(), self.b.drain_feed()
        sent, cancelled = 0, set()
        for k in range(len(out)):
            kind = int(out["kind"][k])
            assert kind in (RecordKind.ORDER, RecordKind.CANCEL), f"record of kind {kind} on the outbound ring"
            rec = out[k : k + 1].view(dtype_for(kind))[0]
            t = int(rec["ts_event"])
            if kind == RecordKind.ORDER:
                o = rec
                breaches = self.m.breaches(o, t)
                assert not breaches, f"order {o} went out at {t} outside the limits: {breaches}"
                oid = int(o["order_id"])
                self.m.orders[oid] = Order(int(o["instrument_id"]), int(o["side"]), Fraction(float(o["quantity"])))
                sent += 1
            else:
                oid = int(rec["order_id"])
                if oid in self.m.orders:
                    self.m.orders[oid].cancel_sent = True
                cancelled.add(oid)
            self.m.messages.append(t)
        denials = feed[feed["kind"] == RecordKind.DENIAL].view(denial_dtype)
        assert sent + len(denials) == new, f"{new} new orders became {sent} orders and {len(denials)} denials"
        missing = set(cancels) - cancelled
        assert not missing, f"cancels always pass, but none went out for {sorted(missing)}"
        STATS["orders"] += sent
        STATS.update(enum_name(DenyReason, r) for r in denials["reason"].tolist())


def test_no_order_outside_the_limits():
    STATS.clear()
    run_state_machine_as_test(
        RiskMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    # the property is not vacuous: orders went out, and the controls were seen denying some
    assert STATS["orders"] >= 100, STATS
    must = {"INVALID_ORDER", "STALE_MARKET_DATA", "MAX_ORDER_QTY", "PRICE_COLLAR", "INSTRUMENT_NOT_ALLOWED"}
    seen = {r for r in DenyReason._fields if STATS[r]}
    assert must <= seen and len(seen) >= 8, (sorted(must - seen), STATS)
