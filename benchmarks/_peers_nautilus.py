"""The crossover as a NautilusTrader backtest, on the quotes Quayside replays.

A ``BacktestEngine`` with one simulated FX venue (netting, margin account in USD), the test
kit's EUR/USD instrument (0.2 bp maker and taker fees, as Quayside's venue charges), and the
quotes as ``QuoteTick`` objects built by nautilus's own ``QuoteTickDataWrangler`` (the quotes
carry no sizes: each side gets a size no order here comes near). The strategy is a ``Strategy``
subclass whose ``on_quote_tick`` is ``core/strategies/crossover.py``'s rule line for line: EMAs
of the mid by quote count, the threshold with hysteresis, warm-up, one market IOC order for the
gap between position and target while no order is working. Its position is its own running sum
of fills (as Quayside's strategy reads the engine's), not a portfolio query.

Fill model: nautilus's default, no latency model: a market order fills at the touch of the
quote being processed, at once. Quayside's venue fills its IOC limit at the touch 250 us later;
the data's quotes are at least 50 ms apart, so both fill against the same quote.

Timed: ``engine.run()`` only. Building the ticks, the engine, the venue and adding the data
(nautilus sorts it there) are set-up, untimed; logging is at ERROR so nothing is printed.
"""

from __future__ import annotations

import time
from decimal import Decimal

import numpy as np

__all__ = ["NautilusRunner"]

BOOK_SIZE = 1e9
STARTING_USD = 10_000_000
LEVERAGE = Decimal(50)


def _strategy_classes():
    """The config and strategy classes (built on first use: they need nautilus_trader)."""
    from nautilus_trader.config import StrategyConfig
    from nautilus_trader.model.enums import OrderSide, TimeInForce
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.objects import Quantity
    from nautilus_trader.trading.strategy import Strategy

    class CrossoverConfig(StrategyConfig, frozen=True):
        instrument_id: InstrumentId
        fast_alpha: float
        slow_alpha: float
        threshold: float
        warmup: int
        order_qty: float

    class Crossover(Strategy):
        def __init__(self, config: CrossoverConfig):
            super().__init__(config)
            self.iid = config.instrument_id
            self.fast_alpha, self.slow_alpha = config.fast_alpha, config.slow_alpha
            self.threshold, self.warmup, self.qty = config.threshold, config.warmup, config.order_qty
            self.fast = self.slow = 0.0
            self.seen = 0
            self.signal = 0.0
            self.position = 0.0
            self.working = False
            self.orders = 0
            self.fills = 0

        def on_start(self) -> None:
            self.subscribe_quote_ticks(self.iid)

        def on_quote_tick(self, tick) -> None:
            mid = 0.5 * (tick.bid_price.as_double() + tick.ask_price.as_double())
            if not mid > 0.0:
                return
            if self.seen == 0:
                self.fast = self.slow = mid
            else:
                self.fast += self.fast_alpha * (mid - self.fast)
                self.slow += self.slow_alpha * (mid - self.slow)
            self.seen += 1
            if self.seen < self.warmup:
                return
            gap = (self.fast - self.slow) / self.slow
            if gap > self.threshold:
                self.signal = 1.0
            elif gap < -self.threshold:
                self.signal = -1.0
            if self.signal == 0.0 or self.working:
                return
            delta = self.signal * self.qty - self.position
            if abs(delta) < 0.5:
                return
            side = OrderSide.BUY if delta > 0.0 else OrderSide.SELL
            order = self.order_factory.market(
                self.iid, side, Quantity.from_int(round(abs(delta))), time_in_force=TimeInForce.IOC
            )
            self.working = True
            self.orders += 1
            self.submit_order(order)

        def on_order_filled(self, event) -> None:
            q = event.last_qty.as_double()
            self.position += q if event.order_side == OrderSide.BUY else -q
            self.fills += 1
            self.working = not self.cache.order(event.client_order_id).is_closed

        def on_order_canceled(self, event) -> None:
            self.working = False

        def on_order_rejected(self, event) -> None:
            self.working = False

        def on_order_denied(self, event) -> None:
            self.working = False

        def on_order_expired(self, event) -> None:
            self.working = False

    return CrossoverConfig, Crossover


class NautilusRunner:
    """NautilusTrader prepared on ``records`` (ticks built here, untimed); ``run(n)`` backtests
    the first ``n`` quotes in a fresh engine and times ``engine.run()``."""

    def __init__(self, records: np.ndarray, params: dict):
        import nautilus_trader
        import pandas as pd
        from nautilus_trader.model.identifiers import Venue
        from nautilus_trader.persistence.wranglers import QuoteTickDataWrangler
        from nautilus_trader.test_kit.providers import TestInstrumentProvider

        from quayside.core import wire

        self.params = params
        self.venue = Venue("SIM")
        self.instrument = TestInstrumentProvider.default_fx_ccy("EUR/USD", self.venue)
        self.config_class, self.strategy_class = _strategy_classes()
        t0 = time.perf_counter()
        q = records.view(wire.quote_dtype)
        frame = pd.DataFrame(
            {"bid_price": q["bid_price"], "ask_price": q["ask_price"]},
            index=pd.to_datetime(q["ts_event"], utc=True),
        )
        self.ticks = QuoteTickDataWrangler(self.instrument).process(frame, default_volume=BOOK_SIZE)
        convert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.run(min(2_000, len(self.ticks)))
        self.info = {
            "version": nautilus_trader.__version__,
            "convert_s": round(convert_s, 3),
            "warm_s": round(time.perf_counter() - t0, 3),
        }

    def _engine(self, n: int):
        from nautilus_trader.backtest.config import BacktestEngineConfig
        from nautilus_trader.backtest.engine import BacktestEngine
        from nautilus_trader.config import LoggingConfig
        from nautilus_trader.model.currencies import USD
        from nautilus_trader.model.enums import AccountType, OmsType
        from nautilus_trader.model.objects import Money

        engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR"), run_analysis=False))
        engine.add_venue(
            self.venue,
            oms_type=OmsType.NETTING,
            account_type=AccountType.MARGIN,
            starting_balances=[Money(STARTING_USD, USD)],
            base_currency=USD,
            default_leverage=LEVERAGE,
        )
        engine.add_instrument(self.instrument)
        engine.add_data(self.ticks[:n])
        p = self.params
        strategy = self.strategy_class(
            self.config_class(
                instrument_id=self.instrument.id,
                fast_alpha=p["fast_alpha"],
                slow_alpha=p["slow_alpha"],
                threshold=p["threshold"],
                warmup=int(p["warmup"]),
                order_qty=p["order_qty"],
            )
        )
        engine.add_strategy(strategy)
        return engine, strategy

    def run(self, n: int) -> dict:
        engine, strategy = self._engine(n)
        c0, t0 = time.process_time(), time.perf_counter()
        engine.run()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        result = {
            "events": n,
            "cpu_s": cpu,
            "wall_s": wall,
            "quotes_seen": strategy.seen,
            "orders": strategy.orders,
            "fills": strategy.fills,
            "final_position": strategy.position,
        }
        engine.dispose()
        return result
