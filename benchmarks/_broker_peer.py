"""The baselines of the broker benchmarks: plain ib_insync scripts against the same simulated IB
Gateway, the way a trader would write them without Quayside.

* :func:`round_trips` — ``placeOrder`` of a market order -> its ``orderStatus`` Submitted and its
  ``execDetails``, one order in flight at a time, paced like the gateway's orders;
* :func:`tick_rate` — a client subscribed to the same instruments as the gateway (streaming top of
  book and tick-by-tick BidAsk) counting, per second while the simulator streams as fast as it
  can, what the gateway would turn into records (each BidAsk tick a QUOTE, each last-trade tick
  a TRADE) and every tick it decodes.

Each runs in a forked child (:class:`benchmarks._common.Child`) on an event loop of its own and
sends its result back over the pipe. ib_insync's own client throttle (45 requests/s) is left
as it is: the orders are paced below it.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

__all__ = ["round_trips", "tick_rate"]


async def _connect(port: int, client_id: int):
    import ib_insync

    ib = ib_insync.IB()
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=30)
    return ib_insync, ib


async def _round_trips(port: int, client_id: int, symbol: str, qty: float, n: int, warmup: int, rate: float):
    lib, ib = await _connect(port, client_id)
    try:
        contract = lib.Forex(symbol)
        await ib.qualifyContractsAsync(contract)
        ack: dict[int, int] = {}
        fill: dict[int, int] = {}
        done: dict[int, asyncio.Future] = {}

        def on_status(trade) -> None:
            oid = trade.order.orderId
            if trade.orderStatus.status == "Submitted" and oid not in ack:
                ack[oid] = time.perf_counter_ns()

        def on_exec(trade, f) -> None:
            oid = trade.order.orderId
            if oid not in fill:
                fill[oid] = time.perf_counter_ns()
                fut = done.get(oid)
                if fut is not None and not fut.done():
                    fut.set_result(None)

        ib.orderStatusEvent += on_status
        ib.execDetailsEvent += on_exec
        to_ack, to_fill = [], []
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        for i in range(warmup + n):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            order = lib.MarketOrder("BUY" if i % 2 == 0 else "SELL", qty)
            t0 = time.perf_counter_ns()
            trade = ib.placeOrder(contract, order)
            oid = trade.order.orderId
            done[oid] = loop.create_future()
            if oid not in fill:
                await asyncio.wait_for(done[oid], 10.0)
            if i >= warmup:
                to_fill.append(fill[oid] - t0)
                if oid in ack:
                    to_ack.append(ack[oid] - t0)
        return {"order_to_fill_ns": np.array(to_fill), "order_to_ack_ns": np.array(to_ack)}
    finally:
        ib.disconnect()


def round_trips(conn, pinned, port, client_id, symbol, qty, n, warmup, rate) -> None:
    result = asyncio.run(_round_trips(port, client_id, symbol, qty, n, warmup, rate))
    conn.send({**result, "pinned": pinned})


async def _tick_rate(port: int, client_id: int, symbols: list[str], registry, conn) -> None:
    from quayside.core.broker.ib import IbLibrary
    from quayside.core.broker.marketdata import LAST_TICK_TYPES

    _, ib = await _connect(port, client_id)
    counts = {"quotes": 0, "trades": 0, "ticks": 0, "packets": 0}
    try:
        build = IbLibrary("ib_insync")
        contracts = [build.contract(registry.by_symbol(s)) for s in symbols]
        await ib.qualifyContractsAsync(*contracts)

        def on_pending(tickers) -> None:
            counts["packets"] += 1
            for t in tickers:
                counts["ticks"] += len(t.ticks) + len(t.tickByTicks)
                counts["quotes"] += sum(1 for x in t.tickByTicks if hasattr(x, "bidPrice"))
                counts["trades"] += sum(1 for x in t.ticks if x.tickType in LAST_TICK_TYPES and x.price > 0)

        ib.pendingTickersEvent += on_pending
        for c in contracts:
            ib.reqMktData(c, "", False, False)
            ib.reqTickByTickData(c, "BidAsk", 0, False)
        await asyncio.sleep(1.0)
        conn.send("subscribed")
        loop = asyncio.get_running_loop()
        while True:  # the parent asks for the counts at the start and end of its window
            msg = await loop.run_in_executor(None, conn.recv)
            if msg == "stop":
                break
            conn.send({**counts, "t": time.perf_counter(), "connected": ib.isConnected()})
    finally:
        ib.disconnect()


def tick_rate(conn, pinned, port, client_id, symbols) -> None:
    from quayside.core.instruments import default_registry

    asyncio.run(_tick_rate(port, client_id, symbols, default_registry(), conn))
    conn.send({"done": True, "pinned": pinned})
