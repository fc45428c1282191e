"""The gateway process: IB (TWS / IB Gateway, through ib_insync or ib_async) on one side, the
engine's rings on the other, everything on one asyncio event loop in one thread.

Tasks on the loop:

* **connection** — connect (host, port, client id), qualify the contracts, subscribe market
  data, sync (positions, all open and completed orders, the client's executions), reconcile,
  publish the broker's positions (:mod:`.positions`: a snapshot, then every change), then
  wait for the socket to drop; reconnect with exponential back-off (seeded jitter). Error
  326 (client id in use) moves on to the next configured client id at once, or ends the gateway
  with exit code 3 when there is none; a refused connection (the gateway's daily restart window)
  is just another failed attempt.
* **outbound poll** — reads ORDER and CANCEL records from the outbound ring every
  ``poll_interval_ms`` (without pause for ``poll_spin_us`` after any traffic: an order follows
  the quote that triggered it within microseconds), hands them to the
  :class:`~.orders.OrderRouter`, sends what the rate limiter lets out, and retries records the
  full inbound ring refused.
* **housekeeping** — commission reports the library attached silently, and the reconciliation
  (:class:`~.reconcile.PositionCheck`) every ``reconcile_interval_s`` once synced.

The library's events (ticks, order status, executions, commission reports, errors, disconnect)
call straight into the market data and order code on the same loop, so there is no locking.

IB's messages that change what the engine may do: 1100 (IB lost), 2103 (a data farm lost) and
a lost connection mark the data stale in the engine; 1101 (restored, data lost) resubscribes
everything, 1102 (restored, data kept) and 2104 after a 2103 resubscribe too (cancelling
first), and each fresh quote clears staleness again (plus a MARK_FRESH per instrument); after
1101/1102 orders and executions are synced again. 2105 (the historical data farm) changes
nothing: live quotes do not come from it. Each of these codes also goes to the feed as a BROKER_ERROR log
record. Pacing violations (100, 420) halve the rate limiter for a while; the request they
answered is retried (sync requests, market data subscriptions) or checked with the broker
(orders).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from loguru import logger

from quayside.core import wire
from quayside.core.broker.config import GatewayConfig
from quayside.core.broker.ib import IbLibrary
from quayside.core.broker.inbound import InboundWriter, Records
from quayside.core.broker.ledger import Ledger
from quayside.core.broker.marketdata import MarketData
from quayside.core.broker.orders import PACING_CODES, OrderRouter
from quayside.core.broker.positions import BrokerPositions
from quayside.core.broker.ratelimit import Backoff, RateLimiter
from quayside.core.broker.reconcile import PositionCheck
from quayside.core.feed.ring import CommandReader
from quayside.core.instruments import InstrumentRegistry

__all__ = ["Gateway", "ClientIdRefused", "SyncError", "EXIT_CLIENT_ID"]

EXIT_CLIENT_ID = 3
DECODE_ERROR = "Error handling fields"


class ClientIdRefused(ConnectionError):
    """IB answered error 326: the client id is in use (or refused)."""


class SyncError(ConnectionError):
    """A sync request failed every attempt: the connection is not usable."""


class _LibraryLog(logging.Handler):
    """The client library's errors, into the gateway's log; ``decode_errors`` counts the
    messages it could not decode (it catches those and only logs them: an event is lost)."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.decode_errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if DECODE_ERROR in text or record.name.endswith(".Decoder"):
            self.decode_errors += 1
            logger.error("gateway: the client library could not decode a message: {}", text)
        else:
            logger.warning("gateway: {} says: {}", record.name, text)


class Gateway:
    """One gateway. ``await run()`` until :meth:`stop`; returns the exit code."""

    def __init__(self, config: GatewayConfig, registry: InstrumentRegistry | None = None):
        self.config = config
        self.lib = IbLibrary(config.library)
        self.registry = registry or config.load_registry()
        self.ledger = Ledger.open(config.state_path())
        self.records = Records()
        rings = config.rings
        self.inbound = InboundWriter(rings.inbound, rings.inbound_capacity, config.inbound_queue)
        self.outbound = CommandReader(rings.outbound, rings.outbound_capacity, batch=256)
        self.limiter = RateLimiter(config.max_messages_per_s, config.burst, config.pacing_backoff_s)
        self.market = MarketData(self)
        self.router = OrderRouter(self)
        self.positions = PositionCheck(self)
        self.broker_positions = BrokerPositions(self)
        self.ib = None
        self.client_id = config.client_id
        self._client_index = 0
        self.connected = False  # the socket is up and the library synced
        self.ready = False  # ... and the gateway synced too: orders may go out
        self.pacing_errors = 0
        self.connections = 0
        self.disconnects = 0
        self.exit_code = 0
        self.fatal = ""
        self._synced_once = False
        self._farm_broken = False
        self._check_due = 0.0
        self.busy_until = 0.0  # poll the outbound ring without pause until then (monotonic)
        self._spin = config.poll_spin_us / 1e6
        self._order_check_pending = False
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._disconnected: asyncio.Event | None = None
        self._refused: asyncio.Future | None = None
        self._tasks: set[asyncio.Task] = set()
        self.library_log = _LibraryLog()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        self._stop = asyncio.Event()
        if self._stop_requested:  # stop() came before run()
            self._stop.set()
        self._disconnected = asyncio.Event()
        logging.getLogger(self.lib.logger_name).addHandler(self.library_log)
        main = [
            self.spawn(self._connection_loop(), "connection"),
            self.spawn(self._poll_loop(), "outbound poll"),
            self.spawn(self._housekeeping(), "housekeeping"),
        ]
        try:
            await self._stop.wait()
        finally:
            # Cancel until every task has ended: on Python 3.11 asyncio.wait_for can swallow a
            # cancellation that arrives as its inner request completes, and the task goes on.
            pending = {*main, *self._tasks}
            while pending:
                for t in pending:
                    t.cancel()
                _, pending = await asyncio.wait(pending, timeout=0.5)
            self._shutdown()
        return self.exit_code

    def stop(self, exit_code: int | None = None) -> None:
        if exit_code is not None:
            self.exit_code = exit_code
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    def _shutdown(self) -> None:
        ib, self.ib = self.ib, None
        if ib is not None:
            with contextlib.suppress(Exception):
                ib.disconnect()
        for _ in range(100):  # what the full inbound ring refused: a last chance
            if self.inbound.flush():
                break
            time.sleep(0.01)
        if self.inbound.waiting:
            logger.error("gateway: {} records for the engine were never accepted", self.inbound.waiting)
        logging.getLogger(self.lib.logger_name).removeHandler(self.library_log)
        self.inbound.close()
        self.outbound.close()
        self.positions.close()
        self.ledger.close()
        logger.info("gateway stopped: {}", self.stats())

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, ConnectionError | TimeoutError):
                logger.warning("gateway: {} ended: {!r}", task.get_name(), exc)
                if self.ib is not None and self.connected:
                    self.ib.disconnect()  # reconnect and sync from scratch
                return
            logger.opt(exception=exc).error("gateway: task {} failed; stopping", task.get_name())
            self.stop(1)

    def stats(self) -> dict:
        r, i = self.router, self.inbound
        return {
            "connections": self.connections,
            "disconnects": self.disconnects,
            "client_id": self.client_id,
            "orders_sent": r.sent,
            "cancels_sent": r.cancels_sent,
            "orders_rejected": r.rejected,
            "fills": r.fills,
            "corrections": r.corrections,
            "duplicate_executions": r.duplicates,
            "foreign_executions": r.foreign,
            "broker_positions_published": self.broker_positions.published,
            "quotes": self.market.quotes,
            "trades": self.market.trades,
            "inbound_written": i.written,
            "inbound_backpressured": i.backpressured,
            "quotes_conflated": i.conflated,
            "records_dropped": i.dropped,
            "messages_limited": self.limiter.sent,
            "pacing_errors": self.pacing_errors,
            "breaks": self.positions.reconciler.breaks,
            "resolutions": self.positions.reconciler.resolutions,
            "blocked": sorted(self.positions.reconciler.blocked),
            "decode_errors": self.library_log.decode_errors,
        }

    # ------------------------------------------------------------------ the connection

    async def _connection_loop(self) -> None:
        c = self.config
        backoff = Backoff(
            c.reconnect_initial_s, c.reconnect_max_s, c.reconnect_factor, c.reconnect_jitter, c.reconnect_seed
        )
        attempt = 0
        while True:
            try:
                await self._connect_once()
            except ClientIdRefused:
                self._client_index += 1
                if self._client_index < len(c.client_ids):
                    logger.warning(
                        "gateway: client id {} is in use; trying {}", self.client_id, c.client_ids[self._client_index]
                    )
                    continue
                self.fatal = f"every client id ({', '.join(map(str, c.client_ids))}) is in use at {c.host}:{c.port} (IB error 326)"
                logger.error("gateway: {}; stopping", self.fatal)
                self.stop(EXIT_CLIENT_ID)
                return
            except (OSError, TimeoutError, ConnectionError) as exc:
                self._drop_client()
                attempt += 1
                delay = backoff.next()
                logger.warning("gateway: connection attempt {} failed ({!r}); next in {:.2f} s", attempt, exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            attempt = 0
            await self._disconnected.wait()
            await asyncio.sleep(min(0.05, c.reconnect_initial_s))

    def _drop_client(self) -> None:
        ib, self.ib = self.ib, None
        self.connected = self.ready = False
        if ib is not None:
            with contextlib.suppress(Exception):
                ib.disconnect()

    async def _connect_once(self) -> None:
        c = self.config
        cid = c.client_ids[self._client_index]
        ib = self.lib.new_client()
        self.ib, self.client_id = ib, cid
        self._disconnected.clear()
        self._refused = asyncio.get_running_loop().create_future()
        ib.errorEvent += lambda req_id, code, text, contract: self._on_error(ib, req_id, code, text, contract)
        ib.disconnectedEvent += lambda: self._on_disconnected(ib)
        ib.pendingTickersEvent += lambda tickers: ib is self.ib and self.market.on_pending_tickers(tickers)
        ib.orderStatusEvent += lambda trade: ib is self.ib and self.router.on_order_status(trade)
        ib.execDetailsEvent += lambda trade, fill: ib is self.ib and self.router.on_execution(fill)
        ib.positionEvent += lambda position: ib is self.ib and self.broker_positions.on_position(ib, position)
        ib.commissionReportEvent += lambda trade, fill, report: (
            ib is self.ib and self.router.on_commission(report.execId, float(report.commission))
        )
        connect = asyncio.ensure_future(
            ib.connectAsync(c.host, c.port, clientId=cid, timeout=c.connect_timeout_s, account=c.account)
        )
        done, _ = await asyncio.wait(
            {connect, self._refused}, timeout=4 * c.connect_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if self._refused.done():
            connect.cancel()
            with contextlib.suppress(BaseException):
                await connect
            self._drop_client()
            raise ClientIdRefused(f"client id {cid} refused (326)")
        if connect not in done:
            connect.cancel()
            raise TimeoutError(f"no connection to {c.host}:{c.port} within {4 * c.connect_timeout_s:g} s")
        connect.result()
        self.connected = True
        self.connections += 1
        logger.info("gateway: connected to {}:{} as client {} (connection {})", c.host, c.port, cid, self.connections)
        self.inbound.send(self.records.log(wire.LogCode.BROKER_CONNECTED, wire.LogLevel.INFO, 0, cid, self.connections))
        await self.market.qualify(ib)
        await self.market.subscribe_all(ib, cancel_first=False)
        await self.sync(ib)

    def _on_disconnected(self, ib) -> None:
        if ib is not self.ib:
            return
        was_connected = self.connected
        self.connected = self.ready = False
        self.ib = None
        if was_connected:
            self.disconnects += 1
            logger.warning("gateway: disconnected from IB (disconnect {})", self.disconnects)
            self.inbound.send(
                self.records.log(wire.LogCode.BROKER_DISCONNECTED, wire.LogLevel.ERROR, 0, self.disconnects, 0)
            )
        self.market.connection_lost(was_connected)
        self.router.connection_lost()
        self._disconnected.set()

    # ------------------------------------------------------------------ requests and sync

    async def request(self, what: str, factory, *, accept_empty: bool = True):
        """Send one request through the limiter and await its answer; retried after a pacing
        error or a timeout (the library answers a paced request with what it has, or never)."""
        c = self.config
        for attempt in range(1, c.request_attempts + 1):
            await self.limiter.acquire()
            mark = self.pacing_errors
            try:
                result = await asyncio.wait_for(factory(), c.request_timeout_s)
            except TimeoutError:
                result = None
                logger.warning("gateway: {}: no answer within {:g} s (attempt {})", what, c.request_timeout_s, attempt)
            if result is not None and self.pacing_errors == mark and (accept_empty or result):
                return result
            if self.pacing_errors != mark:
                logger.warning("gateway: {}: pacing violation; again after a pause (attempt {})", what, attempt)
            await asyncio.sleep(min(1.0, c.pacing_backoff_s))
        raise SyncError(f"{what}: no usable answer after {c.request_attempts} attempts")

    async def sync(self, ib) -> None:
        """Positions, open and completed orders, executions; then the working orders are
        reconciled, orders may go out again and the broker's positions go to the feed."""
        self.ready = False
        lib = self.lib
        await self.request("positions", ib.reqPositionsAsync)
        open_trades = await self.request("open orders", ib.reqAllOpenOrdersAsync)
        completed = await self.request("completed orders", lambda: ib.reqCompletedOrdersAsync(False))
        fills = await self.request("executions", lambda: ib.reqExecutionsAsync(lib.execution_filter(self.client_id)))
        if ib is not self.ib:
            raise ConnectionError("the connection went during the sync")
        baseline = self.ledger.fresh and not self._synced_once
        if baseline and fills:
            logger.warning(
                "gateway: started without state: {} executions already at the broker are taken as known, not sent",
                len(fills),
            )
        # the library keeps one Fill per execId, the one later commission reports update; the
        # request's answer may hold fresh copies of executions it knew already
        kept = {f.execution.execId: f for f in ib.fills()}
        fills = [kept.get(f.execution.execId, f) for f in fills]
        for fill in sorted(fills, key=lambda f: (f.execution.time, f.execution.execId)):
            self.router.on_execution(fill, baseline=baseline)
        self.router.reconcile(open_trades, completed)
        self.positions.set_open_orders(open_trades)
        self._synced_once = True
        self.ready = True
        self.broker_positions.snapshot(ib)
        self._check_soon()
        logger.info(
            "gateway: synced: {} open orders, {} completed, {} executions; {} engine orders working",
            len(open_trades),
            len(completed),
            len(fills),
            sum(1 for _ in self.ledger.working()),
        )

    def schedule_order_check(self) -> None:
        """Ask the broker for its orders after a pause, to settle orders a pacing error left
        uncertain."""
        if not self._order_check_pending:
            self._order_check_pending = True
            self.spawn(self._order_check(min(1.0, self.config.pacing_backoff_s)), "order check")

    async def _order_check(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            ib = self.ib
            if ib is None or not self.connected:
                return  # the sync after the reconnection settles them
            open_trades = await self.request("open orders", ib.reqAllOpenOrdersAsync)
            completed = await self.request("completed orders", lambda: ib.reqCompletedOrdersAsync(False))
            if ib is self.ib:
                self.positions.set_open_orders(open_trades)
                self.router.reconcile(open_trades, completed, only_uncertain=True)
        finally:
            self._order_check_pending = False

    def pacing_violation(self, code: int) -> None:
        self.pacing_errors += 1
        self.limiter.back_off()
        self.inbound.send(self.records.log(wire.LogCode.BROKER_ERROR, wire.LogLevel.WARNING, 0, code, -1))

    # ------------------------------------------------------------------ IB's errors and notices

    def _on_error(self, ib, req_id: int, code: int, text: str, contract) -> None:
        if ib is not self.ib:
            return
        if code == 326:
            logger.error("gateway: IB 326: {}", text)
            if self._refused is not None and not self._refused.done():
                self._refused.set_result(code)
            return
        if code in PACING_CODES:
            logger.warning("gateway: IB pacing violation {} on request {}: {}", code, req_id, text)
            self.pacing_violation(code)
            iid = self.market.iid_of(contract) if contract is not None else None
            if iid is not None and iid in self.market.iids:
                self.spawn(self._resubscribe_later(ib, iid), f"resubscribe {iid}")
            return  # an order's pacing error reaches the router through its status
        if code in (1100, 1101, 1102, 2103, 2104, 2105, 2157, 2158, 1300):
            self._connectivity(ib, code, text)
            return
        if req_id > 0 and self.ledger.find_order(self.client_id, req_id) is not None:
            self.router.on_order_error(req_id, code, text)
            return
        if 2100 <= code < 2200:
            logger.info("gateway: IB notice {}: {}", code, text)
        else:
            logger.warning("gateway: IB error {} (request {}): {}", code, req_id, text)

    def _connectivity(self, ib, code: int, text: str) -> None:
        fine = code in (1102, 2104, 2158)
        logger.log("INFO" if fine else "WARNING", "gateway: IB {}: {}", code, text)
        if code not in (2104, 2158) or (code == 2104 and self._farm_broken):  # not the greeting's "OK"s
            level = wire.LogLevel.INFO if code in (1102, 2104) else wire.LogLevel.WARNING
            self.inbound.send(self.records.log(wire.LogCode.BROKER_ERROR, level, 0, code, -1))
        if code == 1100:  # IB <-> TWS lost: no data, orders in limbo
            self.market.mark_stale(code, link_down=True)
        elif code in (1101, 1102):  # restored; 1101: the subscriptions are gone
            self.market.link_restored()
            self.spawn(self._restored(ib, cancel_first=code == 1102), f"restore after {code}")
        elif code == 2103:  # market data farm lost
            self._farm_broken = True
            self.market.mark_stale(code)
        elif code == 2104 and self._farm_broken:
            self._farm_broken = False
            self.spawn(self._resubscribe(ib, cancel_first=True), "resubscribe after 2104")

    async def _restored(self, ib, cancel_first: bool) -> None:
        await self.market.subscribe_all(ib, cancel_first)
        if ib is self.ib:
            await self.sync(ib)

    async def _resubscribe(self, ib, cancel_first: bool) -> None:
        if ib is self.ib:
            await self.market.subscribe_all(ib, cancel_first)

    async def _resubscribe_later(self, ib, iid: int) -> None:
        await asyncio.sleep(min(1.0, self.config.pacing_backoff_s))
        if ib is self.ib:
            await self.market.subscribe(ib, iid, cancel_first=False)

    # ------------------------------------------------------------------ the engine side

    async def _poll_loop(self) -> None:
        interval = self.config.poll_interval_ms / 1e3
        spin = self.config.poll_spin_us / 1e6
        outbound, router, inbound = self.outbound, self.router, self.inbound
        while True:
            records = outbound.poll()
            now = time.monotonic()
            if len(records):
                router.on_outbound(records)
                self.busy_until = now + spin
            router.pump()
            if inbound.waiting:
                inbound.flush()
            await asyncio.sleep(0 if now < self.busy_until or not interval else interval)

    def expect_orders(self) -> None:
        """Market data just went to the engine: its orders, if any, follow within microseconds,
        so poll the outbound ring without pause for a moment."""
        self.busy_until = time.monotonic() + self._spin

    def _check_soon(self) -> None:
        self._check_due = min(self._check_due, time.monotonic() + 0.05)

    async def _housekeeping(self) -> None:
        interval = self.config.reconcile_interval_s
        self._check_due = time.monotonic() + interval
        while True:
            await asyncio.sleep(min(0.05, interval))
            self.router.sweep_commissions()
            if time.monotonic() >= self._check_due:
                self._check_due = time.monotonic() + interval
                if self.ready:
                    self.positions.check()
