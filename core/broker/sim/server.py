"""The simulated gateway: an asyncio server on the TWS API port, its client sessions, the
replayed market, the broker, and an admin port for fault injection.

``SimGateway(config)`` wires them: market records update the books, reach subscribed sessions
as ticks and give resting orders their chance to fill; orders and cancels reach the broker after
``order_latency_ms``; broker events become messages to the client that owns the order. One
client per client id: a second connection with a client id in use gets error 326 and is closed.

Use it from asyncio (``await gw.start()`` ... ``await gw.stop()``), from a thread
(:class:`~quayside.core.broker.sim.background.BackgroundGateway`), or as ``quayside simgateway``.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from quayside.core.broker.sim import messages as m
from quayside.core.broker.sim.broker import SimBroker, SimExecution, SimOrder
from quayside.core.broker.sim.config import ConfigError, SimGatewayConfig
from quayside.core.broker.sim.contracts import ContractBook
from quayside.core.broker.sim.faults import ERROR_TEXTS, CommandError, Faults, help_text, parse_command
from quayside.core.broker.sim.market import ArraySource, Book, MarketReplay, SyntheticSource
from quayside.core.broker.sim.protocol import SERVER_VERSION
from quayside.core.broker.sim.session import ClientSession
from quayside.core.instruments import InstrumentRegistry, default_registry

__all__ = ["SimGateway", "open_market_data"]


def open_market_data(config: SimGatewayConfig):
    """(source, registry, description) for the configured data, or the synthetic market."""
    d = config.data
    registry = InstrumentRegistry.load(config.registry) if config.registry else None
    if d.path is None:
        start = d.start_ns if d.start_ns is not None else time.time_ns() // 1_000_000_000 * 1_000_000_000
        source = SyntheticSource(d.seed, d.symbols, start, d.duration_s)
        registry = registry or default_registry()
        missing = [i for i in source.instrument_ids if i not in registry]
        if missing:
            raise ConfigError(f"{registry.source}: no instruments with ids {missing} of the synthetic market")
        length = "endless" if d.duration_s is None else f"{d.duration_s:g} s"
        return source, registry, f"synthetic market (seed {d.seed}, {length})"
    from quayside.core.replay.loaders import load

    path = Path(d.path)
    options = {"on_error": d.on_error}
    if registry is not None:
        options["instruments"] = registry
    loaded = load(path, **options)
    if len(loaded.instruments) == 0:
        raise ConfigError(f"{path}: the data names no instruments (a recording holds ids only): give a registry file")
    return ArraySource(loaded.records, loop=d.at_end == "loop"), loaded.instruments, f"{path} ({loaded.format})"


class SimGateway:
    """The server. Attributes: ``config``, ``contracts``, ``market``, ``broker``, ``faults``,
    ``sessions`` (client id -> session), ``port`` and ``admin_port`` once started."""

    def __init__(self, config: SimGatewayConfig | None = None, *, source=None, registry=None, description=""):
        self.config = config = config or SimGatewayConfig()
        if source is None:
            source, registry, description = open_market_data(config)
        self.description = description or "records"
        self.contracts = ContractBook(registry)
        self.market = MarketReplay(source, [i.id for i in self.contracts], config.data.speed, config.data.start_paused)
        self.market.on_quote = self._on_quote
        self.market.on_trade = self._on_trade
        self.broker = SimBroker(config, self.contracts, self.market.books, lambda: self.market.now_ns, self)
        self.faults = Faults()
        self.commission_delay_s = config.commission_delay_ms / 1e3
        self.sessions: dict[int, ClientSession] = {}
        self._all: set[ClientSession] = set()
        self._venue: collections.deque[tuple[float, Callable[[], None]]] = collections.deque()
        self._venue_task: asyncio.Task | None = None
        self._server: asyncio.base_events.Server | None = None
        self._admin: asyncio.base_events.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self.port: int | None = None
        self.admin_port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.market.prime(self.config.data.warmup_s)
        await self._listen()
        if self.config.admin_port is not None:
            self._admin = await asyncio.start_server(self._admin_client, self.config.host, self.config.admin_port)
            self.admin_port = self._admin.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.market.run()), loop.create_task(self._refresh_accounts())]
        for t in self._tasks:
            t.add_done_callback(_log_failure)

    async def _listen(self) -> None:
        port = self.port if self.port is not None else self.config.port
        self._server = await asyncio.start_server(self._accept, self.config.host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.market.close()
        for server in (self._server, self._admin):
            if server is not None:
                server.close()
        for s in list(self._all):
            s.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def banner(self) -> list[str]:
        lines = [
            f"simulated IB gateway on {self.config.host}:{self.port} (server version {SERVER_VERSION})",
            f"account {self.broker.account_id}, {len(self.contracts)} instruments, data: {self.description}",
            f"speed {self.market.speed:g}x{' (paused)' if self.market.paused else ''}",
        ]
        if self.admin_port is not None:
            lines.append(f"admin port {self.config.host}:{self.admin_port} (one command per line; 'help')")
        return lines

    # ------------------------------------------------------------------ connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ClientSession(self, reader, writer)
        self._all.add(session)
        await session.run()

    async def register(self, session: ClientSession, client_id: int) -> bool:
        """Claim ``client_id`` for ``session``; False if refused or in use (after a grace period
        in which a previous connection of that id may still be closing)."""
        if client_id in self.faults.refused_client_ids:
            self.faults.count("refused-client-id")
            return False
        for _ in range(25):
            other = self.sessions.get(client_id)
            if other is None or other.closed:
                self.sessions[client_id] = session
                logger.info("simgateway: client {} connected from {}", client_id, session.peer)
                return True
            await asyncio.sleep(0.02)
        self.faults.count("client-id-in-use")
        return False

    def session_closed(self, session: ClientSession) -> None:
        self._all.discard(session)
        if session.client_id is not None and self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            logger.info("simgateway: client {} disconnected", session.client_id)

    def conn_time(self) -> str:
        return time.strftime("%Y%m%d %H:%M:%S", time.gmtime(self.market.now_ns // 1_000_000_000)) + " UTC"

    @staticmethod
    def error_text(code: int) -> str:
        return ERROR_TEXTS.get(code, f"Simulated error {code}")

    # ------------------------------------------------------------------ the venue queue

    def to_venue(self, action: Callable[[], None]) -> None:
        """Run ``action`` (an order or cancel reaching the broker) after the order latency, in
        arrival order."""
        latency = self.config.order_latency_ms / 1e3
        if latency <= 0 and not self._venue:
            action()
            return
        self._venue.append((time.monotonic() + latency, action))
        if self._venue_task is None or self._venue_task.done():
            self._venue_task = asyncio.get_running_loop().create_task(self._run_venue())

    async def _run_venue(self) -> None:
        while self._venue:
            due, action = self._venue[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._venue.popleft()
            try:
                action()
            except Exception:
                logger.exception("simgateway: order handling failed")

    # ------------------------------------------------------------------ broker events

    def _owner(self, client_id: int) -> ClientSession | None:
        s = self.sessions.get(client_id)
        return None if s is None or s.closed else s

    def _owner_and_master(self, client_id: int) -> list[ClientSession]:
        """Who hears of a client's orders and fills: that client, and the master client."""
        out = [self._owner(client_id)]
        master = self.config.master_client_id
        if master is not None and master != client_id:
            out.append(self._owner(master))
        return [s for s in out if s is not None]

    def order_accepted(self, order: SimOrder) -> None:
        for s in self._owner_and_master(order.client_id):
            s.send(m.open_order(order, order.info))
            s.send(m.order_status(order))

    def order_status(self, order: SimOrder) -> None:
        for s in self._owner_and_master(order.client_id):
            s.send(m.order_status(order))

    def order_error(self, client_id: int, order_id: int, code: int, text: str, status: SimOrder | None) -> None:
        s = self._owner(client_id)
        if s is not None:
            if status is not None:
                s.send(m.order_status(status))
            s.error(order_id, code, text)

    def what_if(self, order: SimOrder, state: dict) -> None:
        s = self._owner(order.client_id)
        if s is not None:
            s.send(m.open_order(order, order.info, what_if_state=state))

    def execution(self, e: SimExecution, order: SimOrder) -> None:
        for s in self._owner_and_master(e.client_id):
            s.send(m.exec_details(-1, e, order.info))
        if self.commission_delay_s > 0:
            asyncio.get_running_loop().call_later(self.commission_delay_s, self._report_commission, e)
        else:
            self._report_commission(e)

    def _report_commission(self, e: SimExecution) -> None:
        e.commission_reported = True
        for s in self._owner_and_master(e.client_id):
            s.send(m.commission_report(e, self.broker.currency))

    def position_changed(self, iid: int) -> None:
        for s in self._registered():
            if s.positions_sub:
                s.send_position(iid)
            if s.account_sub:
                s.send_account_update(iid=iid)
            for req_id in s.multi_subs:
                s.send_account_multi(req_id)

    def _registered(self) -> list[ClientSession]:
        return [s for s in self.sessions.values() if not s.closed]

    async def _refresh_accounts(self) -> None:
        while True:
            await asyncio.sleep(self.config.account_update_interval_s)
            for s in self._registered():
                if s.account_sub:
                    s.send_account_update()
                for req_id in s.multi_subs:
                    s.send_account_multi(req_id)

    # ------------------------------------------------------------------ market events

    def _on_quote(self, iid: int, ts: int, book: Book, pb: float, pa: float, pbs: float, pas: float) -> None:
        if not self.faults.data_halted:
            for s in self._all:
                subs = s.by_iid.get(iid)
                if subs:
                    _quote_ticks(s, subs, ts, book, pb, pa, pbs, pas)
        self.broker.on_quote(iid, book)

    def _on_trade(self, iid: int, ts: int, book: Book, price: float, size: float) -> None:
        if not self.faults.data_halted:
            for s in self._all:
                subs = s.by_iid.get(iid)
                if not subs:
                    continue
                for kind, req_id, _ in subs:
                    if kind == "mkt":
                        s.send(m.tick_price(req_id, 4, price, size))
                        s.send(m.tick_size(req_id, 8, book.volume))
                    elif kind in ("last", "alllast"):
                        exchange = self.contracts.by_id(iid).listing_exchange
                        tick_type = 1 if kind == "last" else 2
                        s.send(m.tick_by_tick_last(req_id, tick_type, ts // 1_000_000_000, price, size, exchange))
        self.broker.on_trade(iid, price)

    def _send_books(self) -> None:
        for s in self._registered():
            for req_id, (kind, iid, _) in list(s.subs.items()):
                s.send_book(kind, req_id, iid)

    # ------------------------------------------------------------------ admin

    async def _admin_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                text = line.decode(errors="replace").strip()
                if not text:
                    continue
                if text in ("quit", "exit"):
                    break
                writer.write((await self.command(text)).replace("\n", " ").encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def command(self, line: str) -> str:
        """Run one admin command (see :mod:`.faults`); the reply starts with ``ok`` or ``error:``."""
        try:
            name, args = parse_command(line)
            reply = await self._command(name, args)
        except CommandError as exc:
            return f"error: {exc}"
        logger.info("simgateway: admin {!r} -> {}", line.strip(), reply[:200])
        return reply

    async def _command(self, name: str, args: list) -> str:
        f = self.faults
        if name != "help" and name not in ("status", "executions"):
            f.count(name)
        if name == "drop":
            return self._drop(args[0])
        if name == "error":
            return self._broadcast_error(*args)
        if name == "delay":
            f.delay_s = args[0] / 1e3
            return f"ok outgoing messages delayed by {args[0]:g} ms"
        if name == "duplicate-exec":
            if not self.broker.executions:
                raise CommandError("there is no execution to duplicate yet")
            e = self.broker.executions[-1]
            s = self._owner(e.client_id)
            if s is None:
                raise CommandError(f"client {e.client_id}, which owns execution {e.exec_id}, is not connected")
            s.send(m.exec_details(-1, e, self.contracts.by_id(e.instrument_id)))
            return f"ok execId {e.exec_id} sent again to client {e.client_id}"
        if name == "refuse-client-id":
            f.refused_client_ids.add(args[0])
            return f"ok client id {args[0]} will be refused (326)"
        if name == "allow-client-id":
            f.refused_client_ids.discard(args[0])
            return f"ok client id {args[0]} accepted again"
        if name == "reject-next-order":
            f.reject_next = (args[0], args[1])
            return f"ok the next order will be rejected with {args[0]}"
        if name == "pacing":
            f.pacing_next = args[0]
            return f"ok the next request will get a pacing violation ({args[0]})"
        if name == "halt-data":
            f.data_halted = True
            return "ok market data halted"
        if name == "resume-data":
            f.data_halted = False
            self._send_books()
            return "ok market data resumed"
        if name == "commission-delay":
            self.commission_delay_s = args[0] / 1e3
            return f"ok commission reports delayed by {args[0]:g} ms"
        if name == "pause":
            self.market.pause()
            return f"ok clock paused at {self._clock_text()}"
        if name == "resume":
            self.market.resume()
            return f"ok clock running at {self.market.speed:g}x"
        if name == "step":
            n = await self.market.step(args[0])
            return f"ok {n} records, clock at {self._clock_text()}"
        if name == "speed":
            self.market.set_speed(args[0])
            return f"ok speed {args[0]:g}x"
        if name == "status":
            return "ok " + json.dumps(self.status())
        if name == "executions":
            return "ok " + json.dumps([self.execution_dict(e) for e in self.broker.executions])
        return "ok " + help_text()

    def _drop(self, seconds: float) -> str:
        sessions = list(self._all)
        self.sessions.clear()
        for s in sessions:
            s.close()
        reply = f"ok dropped {len(sessions)} connections"
        if seconds > 0 and self._server is not None:
            self._server.close()
            self._server = None
            self.faults.refuse_until = time.monotonic() + seconds
            asyncio.get_running_loop().call_later(seconds, self._reopen)
            reply += f"; API port closed for {seconds:g} s"
        return reply

    def _reopen(self) -> None:
        async def reopen():
            try:
                await self._listen()
                logger.info("simgateway: API port {} open again", self.port)
            except OSError as exc:
                logger.error("simgateway: cannot reopen port {}: {}", self.port, exc)

        if not self._stopped.is_set():
            self._tasks.append(asyncio.get_running_loop().create_task(reopen()))

    def _broadcast_error(self, code: int, req_id: int, text: str) -> str:
        targets = self._registered()
        for s in targets:
            s.error(req_id, code, text)
        if code == 1100:
            self.faults.data_halted = True
        elif code in (1101, 1102):
            self.faults.data_halted = False
            if code == 1101:
                for s in targets:
                    s.drop_market_data()
            else:
                self._send_books()
        return f"ok error {code} sent to {len(targets)} clients"

    def _clock_text(self) -> str:
        return dt.datetime.fromtimestamp(self.market.now_ns / 1e9, dt.UTC).isoformat()

    def execution_dict(self, e: SimExecution) -> dict:
        info = self.contracts.by_id(e.instrument_id)
        return {
            "exec_id": e.exec_id,
            "order_id": e.order_id,
            "client_id": e.client_id,
            "perm_id": e.perm_id,
            "symbol": info.instrument.symbol,
            "con_id": info.con_id,
            "side": e.side,
            "shares": e.shares,
            "price": e.price,
            "commission": e.commission,
            "commission_reported": e.commission_reported,
            "time": e.time_text,
            "order_ref": e.order_ref,
        }

    def status(self) -> dict:
        b = self.broker
        return {
            "server_version": SERVER_VERSION,
            "port": self.port,
            "api_port_open": self._server is not None,
            "clients": sorted(self.sessions),
            "connections": len(self._all),
            "clock": self._clock_text(),
            "clock_ns": self.market.now_ns,
            "speed": "inf" if math.isinf(self.market.speed) else self.market.speed,
            "paused": self.market.paused,
            "data": self.description,
            "data_ended": self.market.ended,
            "records": self.market.records_seen,
            "orders": b.counters.orders,
            "working_orders": len(b.working_orders()),
            "executions": len(b.executions),
            "rejects": b.counters.rejects,
            "cash": b.account.cash,
            "net_liquidation": b.account.summary()["NetLiquidation"],
            "positions": {self.contracts.by_id(i).instrument.symbol: p.quantity for i, p in b.positions.items()},
            "faults": self.faults.as_dict(),
        }


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.opt(exception=task.exception()).error("simgateway: task {} failed", task.get_coro())


def _quote_ticks(s: ClientSession, subs, ts: int, book: Book, pb: float, pa: float, pbs: float, pas: float) -> None:
    bid, ask = book.bid, book.ask
    for kind, req_id, option in subs:
        if kind == "mkt":
            if bid != pb and not math.isnan(bid):
                s.send(m.tick_price(req_id, 1, bid, book.bid_size))
            elif book.bid_size != pbs:
                s.send(m.tick_size(req_id, 0, book.bid_size))
            if ask != pa and not math.isnan(ask):
                s.send(m.tick_price(req_id, 2, ask, book.ask_size))
            elif book.ask_size != pas:
                s.send(m.tick_size(req_id, 3, book.ask_size))
        elif kind == "bidask":
            if (option and bid == pb and ask == pa) or not book.two_sided:
                continue
            s.send(m.tick_by_tick_bid_ask(req_id, ts // 1_000_000_000, bid, ask, book.bid_size, book.ask_size))
        elif kind == "mid" and (bid != pb or ask != pa):
            s.send(m.tick_by_tick_mid(req_id, ts // 1_000_000_000, 0.5 * (bid + ask)))
