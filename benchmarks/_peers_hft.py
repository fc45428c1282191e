"""The crossover as an hftbacktest backtest, on the quotes Quayside replays.

hftbacktest keeps a market-by-price book and has no top-of-book event its local side applies
(``DEPTH_BBO_EVENT`` leaves the local book empty in 2.4), so each quote becomes L2 depth rows
that keep a one-level book per side: the new bid at a large size, then the old bid at size 0
when the bid moved (the same for the ask). A quote that changed nothing still gives its bid row,
so every quote is one feed for the strategy, as it is one event for Quayside: rows per quote
are between 1 and 4 (about 2.8 on the EURUSD-derived data).

The strategy is ``core/strategies/crossover.py``'s rule, line for line, in an ``njit`` loop
over ``wait_next_feed``: EMAs of the mid by quote count, the threshold with hysteresis, warm-up,
one order for the gap between position and target while no order is working, an IOC limit at
the touch. The venue matches Quayside's replay config: 250 us each way, 0.2 bp taker fee,
``no_partial_fill_exchange`` (a marketable order fills in full at the touch). The strategy
kernel cannot be cached (hftbacktest's objects are ctypes pointers), so ``prepare`` compiles it
on a small slice, untimed.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["HftRunner", "to_events", "DEPTHS"]

#: name -> hftbacktest's builder for that market depth
DEPTHS = {"hashmap": "HashMapMarketDepthBacktest", "roivec": "ROIVectorMarketDepthBacktest"}
BOOK_SIZE = 1e9  # the quotes carry no sizes: a size no order here comes near
LATENCY_NS = 250_000  # Quayside's VenueConfig order_latency_us and response_latency_us
TAKER_FEE = 0.2e-4  # Quayside's VenueConfig commission_bps, as a fraction of notional
ROI_MARGIN = 0.02  # ROIVector's price range: the data's, widened by 2 % each way


def to_events(quotes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """hftbacktest rows for ``quotes`` (``quote_dtype``), and for each quote the number of rows
    up to and including it (so the first ``n`` quotes are ``rows[:ends[n - 1]]``)."""
    from hftbacktest import BUY_EVENT, DEPTH_EVENT, EXCH_EVENT, LOCAL_EVENT, SELL_EVENT, event_dtype

    n = len(quotes)
    bid, ask = quotes["bid_price"], quotes["ask_price"]
    px, qty = np.empty((n, 4)), np.zeros((n, 4))
    side = np.empty((n, 4), dtype=np.uint64)
    keep = np.ones((n, 4), dtype=bool)
    px[:, 0], px[1:, 1], px[:, 2], px[1:, 3] = bid, bid[:-1], ask, ask[:-1]
    qty[:, 0] = qty[:, 2] = BOOK_SIZE
    side[:, :2], side[:, 2:] = BUY_EVENT, SELL_EVENT
    keep[1:, 1] = bid[1:] != bid[:-1]  # take the old level out only when the price moved
    keep[1:, 2] = ask[1:] != ask[:-1]
    keep[1:, 3] = keep[1:, 2]
    keep[0, 1] = keep[0, 3] = False
    mask = keep.ravel()
    rows = np.zeros(int(mask.sum()), dtype=event_dtype)
    rows["ev"] = np.uint64(EXCH_EVENT | LOCAL_EVENT | DEPTH_EVENT) | side.ravel()[mask]
    rows["exch_ts"] = np.repeat(quotes["ts_event"], 4)[mask]
    rows["local_ts"] = np.repeat(quotes["ts_recv"], 4)[mask]
    rows["px"] = px.ravel()[mask]
    rows["qty"] = qty.ravel()[mask]
    return rows, np.cumsum(keep.sum(axis=1))


def _strategy():
    """The crossover kernel (built on first use: importing hftbacktest is the peer's cost)."""
    from hftbacktest import LIMIT
    from hftbacktest.order import IOC
    from numba import njit

    @njit
    def crossover_nb(hbt, fast_alpha, slow_alpha, threshold, warmup, qty, out):
        fast = 0.0
        slow = 0.0
        seen = 0
        signal = 0.0
        order_id = 0
        while hbt.wait_next_feed(False, 1 << 62) == 2:
            depth = hbt.depth(0)
            bid = depth.best_bid
            ask = depth.best_ask
            mid = 0.5 * (bid + ask)
            if not (mid > 0.0):
                continue
            if seen == 0:
                fast = mid
                slow = mid
            else:
                fast += fast_alpha * (mid - fast)
                slow += slow_alpha * (mid - slow)
            seen += 1
            if seen < warmup:
                continue
            gap = (fast - slow) / slow
            if gap > threshold:
                signal = 1.0
            elif gap < -threshold:
                signal = -1.0
            if signal == 0.0:
                continue
            hbt.clear_inactive_orders(0)
            if len(hbt.orders(0)) > 0:  # an order is working (no answer yet)
                continue
            delta = signal * qty - hbt.position(0)
            if abs(delta) < 0.5:
                continue
            order_id += 1
            if delta > 0.0:
                hbt.submit_buy_order(0, order_id, ask, abs(delta), IOC, LIMIT, False)
            else:
                hbt.submit_sell_order(0, order_id, bid, abs(delta), IOC, LIMIT, False)
        values = hbt.state_values(0)
        out[0] = seen
        out[1] = order_id
        out[2] = values.num_trades
        out[3] = hbt.position(0)
        out[4] = values.balance
        out[5] = values.fee
        return 0

    return crossover_nb


class HftRunner:
    """One hftbacktest market-depth type, prepared on ``records`` (conversion and compile done
    here, untimed); ``run(n)`` backtests the first ``n`` quotes and times it."""

    def __init__(self, records: np.ndarray, params: dict, depth: str = "hashmap"):
        import hftbacktest

        from quayside.core import wire

        if depth not in DEPTHS:
            raise ValueError(f"hftbacktest depth {depth!r}: choose from {', '.join(DEPTHS)}")
        self.depth, self.params = depth, params
        self._build = getattr(hftbacktest, DEPTHS[depth])
        t0 = time.perf_counter()
        quotes = records.view(wire.quote_dtype)
        self.rows, self.ends = to_events(quotes)
        prices = np.concatenate([quotes["bid_price"], quotes["ask_price"]])
        self.roi = (float(prices.min()) * (1 - ROI_MARGIN), float(prices.max()) * (1 + ROI_MARGIN))
        convert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._kernel = _strategy()
        self.run(min(2_000, len(quotes)))
        self.info = {
            "version": hftbacktest.__version__,
            "depth": DEPTHS[depth],
            "convert_s": round(convert_s, 3),
            "compile_s": round(time.perf_counter() - t0, 3),
            "rows_per_quote": round(len(self.rows) / max(len(quotes), 1), 3),
        }

    def _backtest(self, rows: np.ndarray):
        from hftbacktest import BacktestAsset

        asset = (
            BacktestAsset()
            .data(rows)
            .linear_asset(1.0)
            .constant_order_latency(LATENCY_NS, LATENCY_NS)
            .risk_adverse_queue_model()
            .no_partial_fill_exchange()
            .trading_value_fee_model(0.0, TAKER_FEE)
            .tick_size(1e-5)
            .lot_size(1.0)
            .last_trades_capacity(0)
        )
        if self.depth == "roivec":
            asset = asset.roi_lb(self.roi[0]).roi_ub(self.roi[1])
        return self._build([asset])

    def run(self, n: int) -> dict:
        rows = self.rows[: int(self.ends[n - 1])]
        p = self.params
        out = np.zeros(6)
        c0, t0 = time.process_time(), time.perf_counter()
        hbt = self._backtest(rows)
        self._kernel(hbt, p["fast_alpha"], p["slow_alpha"], p["threshold"], p["warmup"], p["order_qty"], out)
        hbt.close()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        return {
            "events": n,
            "rows": len(rows),
            "cpu_s": cpu,
            "wall_s": wall,
            "quotes_seen": int(out[0]),
            "orders": int(out[1]),
            "fills": int(out[2]),
            "final_position": float(out[3]),
            "fees": float(out[5]),
        }
