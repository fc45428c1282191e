"""The built-in strategies, called directly: their ``on_quote_nb`` kernels on small hand-built
engine state (``core.engine.state.allocate``), and their parameter validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quayside.core.engine.config import ConfigError, StrategyConfig
from quayside.core.engine.setup import prepare_engine
from quayside.core.engine.state import IntentAction, SlotStatus, allocate
from quayside.core.instruments import default_registry
from quayside.core.risk.config import RiskConfig
from quayside.core.strategies import crossover, market_maker
from quayside.core.strategies.base import StrategyError, load_strategy_module, validate_params
from quayside.core.wire import OrderType, Side, TimeInForce

REGISTRY = default_registry()
EURUSD, TICK = 1, 0.00005
MS = 1_000_000
T0 = 1_700_000_000 * 10**9


def state(module, **params):
    p = validate_params(module, params)
    return allocate(REGISTRY, params=module.params_array(p, REGISTRY, ["EURUSD"]), state_width=module.STATE_WIDTH)


def on_quote(module, a, bid: float, ask: float, now: int = T0) -> list[dict]:
    """Set the top of book, call the strategy, return its intents as dicts."""
    a.inst["bid"][EURUSD], a.inst["ask"][EURUSD] = bid, ask
    n = module.on_quote_nb(a.params, a.sstate, a.inst, a.static, a.orders, EURUSD, now, a.intents)
    names = a.intents.dtype.names
    return [dict(zip(names, a.intents[k].tolist(), strict=True)) for k in range(n)]


def at_mid(module, a, mid: float, now: int = T0) -> list[dict]:
    return on_quote(module, a, mid - TICK, mid + TICK, now)


def on_grid(price: float) -> bool:
    return abs(price / TICK - round(price / TICK)) < 1e-6


# --------------------------------------------------------------------------- crossover


def test_crossover_warms_up_then_takes_the_ask_when_the_fast_average_crosses_up():
    a = state(crossover, fast_span=2, slow_span=4, threshold_bps=0.0, order_qty=1000.0)
    for mid in (1.1000, 1.1001, 1.1002):  # warm-up: slow_span quotes
        assert at_mid(crossover, a, mid) == []
    (it,) = at_mid(crossover, a, 1.1003)
    assert (it["action"], it["instrument_id"], it["side"]) == (IntentAction.NEW, EURUSD, Side.BUY)
    assert (it["order_type"], it["tif"], it["quantity"]) == (OrderType.LIMIT, TimeInForce.IOC, 1000.0)
    assert it["price"] == a.inst["ask"][EURUSD]
    assert a.sstate[EURUSD, 3] == 1.0


def test_crossover_market_orders_and_per_symbol_size():
    a = state(crossover, fast_span=2, slow_span=4, order_type="market", order_qty={"EURUSD": 25_000.0}, warmup=0)
    at_mid(crossover, a, 1.1000)
    (it,) = at_mid(crossover, a, 1.0990)
    assert (it["side"], it["order_type"], it["quantity"]) == (Side.SELL, OrderType.MARKET, 25_000.0)
    assert math.isnan(it["price"])


def test_crossover_hysteresis_holds_the_signal_inside_the_threshold():
    # fast_span 1 makes the fast EMA the mid itself, slow_span 3 halves the gap each quote
    a = state(crossover, fast_span=1, slow_span=3, threshold_bps=1.0, order_qty=100.0, warmup=0)
    a.sstate[EURUSD] = [1.0, 1.0, 10.0, -1.0]  # short signal, averages together at 1.0
    (it,) = at_mid(crossover, a, 1.0001)  # gap +0.5 bp: inside the threshold, stays short
    assert (it["side"], it["quantity"], a.sstate[EURUSD, 3]) == (Side.SELL, 100.0, -1.0)
    a.inst["position"][EURUSD] = -100.0
    assert at_mid(crossover, a, 1.0001) == []  # +0.25 bp, on target: nothing
    (it,) = at_mid(crossover, a, 1.0005)  # +2.1 bp: flips long, buys the difference
    assert (it["side"], it["quantity"], a.sstate[EURUSD, 3]) == (Side.BUY, 200.0, 1.0)
    assert it["price"] == a.inst["ask"][EURUSD]


@pytest.mark.parametrize(
    "position, side, qty", [(300.0, Side.SELL, 1300.0), (-1000.0, None, 0.0), (-400.0, Side.SELL, 600.0)]
)
def test_crossover_sends_the_difference_to_its_target(position, side, qty):
    a = state(crossover, fast_span=1, slow_span=3, threshold_bps=1.0, order_qty=1000.0, warmup=0)
    a.sstate[EURUSD] = [1.0, 1.0, 10.0, -1.0]
    a.inst["position"][EURUSD] = position
    intents = at_mid(crossover, a, 1.0)
    assert [(i["side"], i["quantity"]) for i in intents] == ([] if side is None else [(side, qty)])


def test_crossover_waits_while_an_order_is_working():
    a = state(crossover, fast_span=1, slow_span=3, threshold_bps=1.0, order_qty=100.0, warmup=0)
    a.sstate[EURUSD] = [1.0, 1.0, 10.0, 1.0]
    for working in ("working_buy", "working_sell"):
        a.inst[working][EURUSD] = 50.0
        assert at_mid(crossover, a, 1.0) == []
        a.inst[working][EURUSD] = 0.0
    assert [i["side"] for i in at_mid(crossover, a, 1.0)] == [Side.BUY]


# --------------------------------------------------------------------------- market maker

MM = {"half_spread_ticks": 1.0, "skew_ticks": 4.0, "quote_qty": 1000.0, "max_inventory": 5000.0}
BID, ASK = 1.1000, 1.10005  # a one-tick market, mid half a tick off the grid


def quotes(intents: list[dict]) -> dict[int, float]:
    """side -> price of the NEW intents (at most one per side)."""
    new = [i for i in intents if i["action"] == IntentAction.NEW]
    assert all(i["order_type"] == OrderType.LIMIT and i["tif"] == TimeInForce.DAY for i in new)
    out = {i["side"]: i["price"] for i in new}
    assert len(out) == len(new)
    return out


def test_market_maker_quotes_both_sides_around_mid_on_the_tick_grid():
    a = state(market_maker, **MM)
    intents = on_quote(market_maker, a, BID, ASK)
    q = quotes(intents)  # mid 1.100025 -/+ a tick, rounded away onto the grid
    assert q[Side.BUY] == pytest.approx(1.09995, abs=1e-12) and q[Side.SELL] == pytest.approx(1.10010, abs=1e-12)
    assert all(on_grid(p) for p in q.values())
    assert all(i["quantity"] == 1000.0 and i["instrument_id"] == EURUSD for i in intents)


def test_market_maker_joins_a_wide_market_at_the_touch_but_never_improves_it():
    q = quotes(on_quote(market_maker, state(market_maker, **MM), 1.1000, 1.1002))  # 4 ticks wide
    assert (q[Side.BUY], q[Side.SELL]) == (1.1000, 1.1002)


def test_market_maker_never_crosses_the_touch():
    rng = np.random.default_rng(5)
    for _ in range(300):
        params = {**MM, "half_spread_ticks": rng.uniform(0.5, 3.0), "skew_ticks": rng.uniform(0.0, 12.0)}
        a = state(market_maker, **params)
        bid = round(1.1 + rng.integers(-100, 100) * TICK, 5)
        ask = round(bid + rng.integers(1, 6) * TICK, 5)
        a.inst["position"][EURUSD] = rng.uniform(-4999.0, 4999.0)
        q = quotes(on_quote(market_maker, a, bid, ask))
        assert set(q) == {Side.BUY, Side.SELL}
        assert q[Side.BUY] <= bid + 1e-12 and q[Side.SELL] >= ask - 1e-12  # passive: join at most
        assert q[Side.BUY] < q[Side.SELL]
        assert on_grid(q[Side.BUY]) and on_grid(q[Side.SELL])


@pytest.mark.parametrize("position, shift_ticks", [(2500.0, -2), (-2500.0, 2), (5000.0 * 0.75, -3)])
def test_market_maker_skews_its_quotes_with_inventory(position, shift_ticks):
    params = {**MM, "half_spread_ticks": 5.0}  # behind the touch, so that it does not clamp them
    flat = quotes(on_quote(market_maker, state(market_maker, **params), BID, ASK))
    a = state(market_maker, **params)
    a.inst["position"][EURUSD] = position
    skewed = quotes(on_quote(market_maker, a, BID, ASK))
    for side in (Side.BUY, Side.SELL):  # 4 ticks at max inventory, pro rata below it
        assert skewed[side] - flat[side] == pytest.approx(shift_ticks * TICK, abs=1e-12)


@pytest.mark.parametrize("position, sides", [(5000.0, {Side.SELL}), (-5000.0, {Side.BUY}), (4999.0, {1, -1})])
def test_market_maker_pulls_the_side_that_would_add_at_max_inventory(position, sides):
    a = state(market_maker, **MM)
    a.inst["position"][EURUSD] = position
    assert set(quotes(on_quote(market_maker, a, 1.0990, 1.1010))) == sides


def working(a, order_id: int, side: int, price: float, status: int = SlotStatus.WORKING) -> None:
    """What the engine records when it sends a quote (and the broker acknowledges it)."""
    slot = a.orders[order_id % len(a.orders)]
    slot["order_id"], slot["instrument_id"], slot["status"] = order_id, EURUSD, status
    slot["side"], slot["price"], slot["quantity"] = side, price, 1000.0
    a.inst["buy_order_id" if side == Side.BUY else "sell_order_id"][EURUSD] = order_id


def cancelled(a, order_id: int, side: int) -> None:
    a.orders[order_id % len(a.orders)]["status"] = SlotStatus.FREE
    a.inst["buy_order_id" if side == Side.BUY else "sell_order_id"][EURUSD] = 0


def test_market_maker_cancels_a_stale_quote_and_requotes_after_the_cancel_and_the_pause():
    a = state(market_maker, **MM, min_requote_ms=50.0)
    q = quotes(on_quote(market_maker, a, BID, ASK, now=T0))
    working(a, 1, Side.BUY, q[Side.BUY])
    working(a, 2, Side.SELL, q[Side.SELL])
    assert on_quote(market_maker, a, BID, ASK, now=T0 + MS) == []  # still where they should be

    # the market moves up a tick: both quotes are a tick off, both are cancelled, nothing new yet
    up = (BID + TICK, ASK + TICK)
    intents = on_quote(market_maker, a, *up, now=T0 + 2 * MS)
    assert sorted((i["action"], i["order_id"]) for i in intents) == [(IntentAction.CANCEL, 1), (IntentAction.CANCEL, 2)]
    for oid in (1, 2):
        a.orders[oid]["status"] = SlotStatus.PENDING_CANCEL
    assert on_quote(market_maker, a, *up, now=T0 + 3 * MS) == []  # cancels in flight: wait

    cancelled(a, 1, Side.BUY)
    cancelled(a, 2, Side.SELL)
    assert on_quote(market_maker, a, *up, now=T0 + 49 * MS) == []  # confirmed, but within min_requote_ms
    q2 = quotes(on_quote(market_maker, a, *up, now=T0 + 51 * MS))  # (the state keeps times as float64)
    assert q2[Side.BUY] == pytest.approx(q[Side.BUY] + TICK, abs=1e-12)
    assert q2[Side.SELL] == pytest.approx(q[Side.SELL] + TICK, abs=1e-12)
    assert a.sstate[EURUSD].tolist() == [float(T0 + 51 * MS)] * 2  # when each side last went out


def test_market_maker_leaves_a_quote_within_the_requote_distance():
    a = state(market_maker, **MM, requote_ticks=3.0)
    q = quotes(on_quote(market_maker, a, BID, ASK))
    working(a, 1, Side.BUY, q[Side.BUY])
    working(a, 2, Side.SELL, q[Side.SELL], status=SlotStatus.PENDING_NEW)
    assert on_quote(market_maker, a, BID + 2 * TICK, ASK + 2 * TICK, now=T0 + 100 * MS) == []  # 2 ticks off: kept
    cancels = on_quote(market_maker, a, BID + 3 * TICK, ASK + 3 * TICK, now=T0 + 200 * MS)  # 3 ticks off: stale
    assert sorted(i["order_id"] for i in cancels if i["action"] == IntentAction.CANCEL) == [1, 2]


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "module, params, words",
    [
        (crossover, {"fast_span": 20, "slow_span": 20}, "fast_span (20) must be shorter than slow_span (20)"),
        (crossover, {"slow_span": 1}, "slow_span: Input should be greater than or equal to 2"),
        (crossover, {"order_qty": 0.0}, "order_qty must be positive"),
        (crossover, {"order_qty": {"EURUSD": -1.0}}, "order_qty must be positive"),
        (crossover, {"order_type": "stop"}, "order_type"),
        (crossover, {"threshold_bps": -1.0}, "threshold_bps"),
        (crossover, {"fast_spam": 3}, "fast_spam: Extra inputs are not permitted"),
        (market_maker, {"half_spread_ticks": 0.25}, "half_spread_ticks"),
        (market_maker, {"requote_ticks": 0.5}, "requote_ticks"),
        (market_maker, {"min_requote_ms": -1.0}, "min_requote_ms"),
        (market_maker, {"spread": 2}, "spread: Extra inputs are not permitted"),
    ],
)
def test_bad_parameters_are_errors_naming_the_field(module, params, words):
    with pytest.raises(StrategyError, match=f"strategy '{module.NAME}' parameters") as err:
        validate_params(module, params)
    assert words in str(err.value)


@pytest.mark.parametrize(
    "name, params, words",
    [
        ("crossover", {"order_qty": {"AAPL": 5.0}}, "order_qty has no entry for EURUSD"),
        ("market_maker", {"max_inventory": {"AAPL": 5.0}}, "max_inventory for EURUSD must be given"),
        ("crossover", {"fast_span": 9, "slow_span": 3}, "fast_span (9) must be shorter than slow_span (3)"),
        ("no_such_strategy", {}, "cannot import strategy 'no_such_strategy'"),
        ("/nowhere/strategy.py", {}, "strategy file /nowhere/strategy.py does not exist"),
        ("quayside.core.wire", {}, "lacks NAME, Params, STATE_WIDTH"),
    ],
)
def test_strategy_configuration_errors_surface_before_anything_runs(name, params, words):
    config = StrategyConfig(name=name, instruments=["EURUSD"], params=params)
    with pytest.raises(ConfigError) as err:
        prepare_engine(REGISTRY, config, RiskConfig())
    assert words in str(err.value)


def test_builtin_strategies_load_by_name():
    assert load_strategy_module("crossover") is crossover
    assert load_strategy_module("quayside.core.strategies.market_maker") is market_maker
