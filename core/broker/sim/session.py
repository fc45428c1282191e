"""One API client connection: the handshake, its requests, its subscriptions and its outbox.

A session is created per accepted socket. It reads ``API\\0`` and the version range, answers
with :data:`~.protocol.SERVER_VERSION`, waits for startApi (the client id), and then serves
requests in the order they arrive. What it sends goes through :meth:`ClientSession.send`,
which honours the ``delay`` fault while keeping messages in order.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from typing import TYPE_CHECKING

from loguru import logger

from quayside.core.broker.sim import messages as m
from quayside.core.broker.sim.protocol import (
    REQ_ID_INDEX,
    SERVER_VERSION,
    FrameDecoder,
    In,
    ProtocolError,
    encode,
    parse_version_range,
    to_bool,
    to_int,
)
from quayside.core.broker.sim.requests import (
    RequestError,
    contract_at,
    parse_exec_filter,
    parse_mkt_data,
    parse_place_order,
    parse_tick_by_tick,
)

if TYPE_CHECKING:
    from quayside.core.broker.sim.server import SimGateway

__all__ = ["ClientSession", "TICK_BY_TICK_TYPES"]

#: reqTickByTickData tick types -> the subscription kind
TICK_BY_TICK_TYPES = {"Last": "last", "AllLast": "alllast", "BidAsk": "bidask", "MidPoint": "mid"}
#: A client whose unsent output grows past this is too slow and is disconnected.
MAX_BACKLOG = 64 * 1024 * 1024


class ClientSession:
    """Subscriptions are kept per instrument: ``by_iid[iid]`` lists ``(kind, req_id, option)``
    with kind ``mkt`` (reqMktData), ``bidask``, ``mid``, ``last`` or ``alllast``."""

    def __init__(self, gw: SimGateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.gw = gw
        self.reader, self.writer = reader, writer
        self.client_id: int | None = None
        self.peer = writer.get_extra_info("peername")
        self.subs: dict[int, tuple[str, int, bool]] = {}  # req_id -> (kind, iid, option)
        self.by_iid: dict[int, list[tuple[str, int, bool]]] = {}
        self.positions_sub = False
        self.account_sub = False
        self.multi_subs: set[int] = set()
        self.closed = False
        self.messages_in = 0
        self.messages_out = 0
        self._outbox: collections.deque[tuple[float, bytes]] = collections.deque()
        self._flusher: asyncio.Task | None = None
        self._recent: collections.deque[float] = collections.deque()

    def __repr__(self) -> str:
        return f"ClientSession(client_id={self.client_id}, peer={self.peer})"

    # ------------------------------------------------------------------ output

    def send(self, fields: list) -> None:
        if self.closed:
            return
        if self.writer.transport.is_closing():  # the peer went away; run() will notice
            self.closed = True
            return
        data = encode(fields)
        self.messages_out += 1
        delay = self.gw.faults.delay_s
        if delay > 0 or self._outbox:
            self._outbox.append((time.monotonic() + delay, data))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
            return
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            logger.warning("simgateway: client {} reads too slowly; disconnecting it", self.client_id)
            self.close()

    async def _flush(self) -> None:
        while self._outbox and not self.closed:
            due, data = self._outbox[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._outbox.popleft()
            self.writer.write(data)

    def error(self, req_id: int, code: int, text: str) -> None:
        self.send(m.error(req_id, code, text))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._outbox.clear()
        if self._flusher is not None:
            self._flusher.cancel()
        self.writer.close()

    # ------------------------------------------------------------------ input

    async def run(self) -> None:
        try:
            await self._handshake()
            decoder = FrameDecoder()
            while not self.closed:
                data = await self.reader.read(65536)
                if not data:
                    break
                for fields in decoder.feed(data):
                    if fields:
                        await self._handle(fields)
                    if self.closed:
                        break
        except (ProtocolError, asyncio.IncompleteReadError, ConnectionError) as exc:
            if not self.closed:
                logger.info("simgateway: connection {} ends: {}", self.peer, exc)
        except Exception:
            logger.exception("simgateway: session of client {} failed", self.client_id)
        finally:
            self.close()
            self.gw.session_closed(self)

    async def _handshake(self) -> None:
        prefix = await self.reader.readexactly(4)
        if prefix != b"API\0":
            raise ProtocolError(f"expected b'API\\0', got {prefix!r}")
        size = int.from_bytes(await self.reader.readexactly(4), "big")
        if size > 4096:
            raise ProtocolError(f"version message of {size} bytes")
        low, high, _options = parse_version_range((await self.reader.readexactly(size)).decode(errors="replace"))
        if not low <= SERVER_VERSION <= high:
            raise ProtocolError(f"client speaks versions {low}..{high}; this gateway speaks {SERVER_VERSION} only")
        self.writer.write(encode([SERVER_VERSION, self.gw.conn_time()]))

    async def _handle(self, fields: list[str]) -> None:
        try:
            msg_id = int(fields[0])
        except ValueError:
            raise ProtocolError(f"message id {fields[0]!r} is not a number") from None
        self.messages_in += 1
        if msg_id == In.START_API:
            await self._start_api(fields)
            return
        if self.client_id is None:
            logger.warning("simgateway: message {} before startApi from {}; ignored", msg_id, self.peer)
            return
        req_id = (
            to_int(fields[REQ_ID_INDEX[msg_id]], -1)
            if msg_id in REQ_ID_INDEX and len(fields) > REQ_ID_INDEX[msg_id]
            else -1
        )
        pacing = self.gw.faults.take_pacing()
        if pacing is None and self._over_rate():
            pacing = 100
        if pacing is not None:
            self.gw.faults.count("pacing")
            self.error(req_id, pacing, self.gw.error_text(pacing))
            return
        handler = _HANDLERS.get(msg_id)
        if handler is None:
            if msg_id in REQ_ID_INDEX:
                self.error(
                    req_id, 321, f"Error validating request:message {msg_id} is not supported by the simulated gateway"
                )
            else:
                logger.info("simgateway: ignoring message {} from client {}", msg_id, self.client_id)
            return
        try:
            handler(self, fields)
        except RequestError as exc:
            logger.warning("simgateway: bad request from client {}: {}", self.client_id, exc)
            self.error(req_id, 321, f"Error validating request:{exc}")
        except (IndexError, ValueError, KeyError) as exc:
            logger.exception("simgateway: cannot serve message {} from client {}", msg_id, self.client_id)
            self.error(req_id, 321, f"Error validating request:{type(exc).__name__}: {exc}")

    def _over_rate(self) -> bool:
        limit = self.gw.config.max_messages_per_s
        if not limit:
            return False
        now = time.monotonic()
        recent = self._recent
        recent.append(now)
        while recent and now - recent[0] > 1.0:
            recent.popleft()
        return len(recent) > limit

    async def _start_api(self, fields: list[str]) -> None:
        if self.client_id is not None:
            return
        client_id = to_int(fields[2]) if len(fields) > 2 else 0
        if not await self.gw.register(self, client_id):
            self.error(-1, 326, self.gw.error_text(326))
            await self.writer.drain()
            self.close()
            return
        self.client_id = client_id
        self.send(m.managed_accounts([self.gw.broker.account_id]))
        self.send(m.next_valid_id(self.gw.broker.next_valid_id(client_id)))
        if self.gw.config.greeting_notices:
            for code in (2104, 2106, 2158):
                self.error(-1, code, self.gw.error_text(code))

    # ------------------------------------------------------------------ subscriptions

    def _subscribe(self, req_id: int, kind: str, iid: int, option: bool = False) -> None:
        self._unsubscribe(req_id)
        self.subs[req_id] = (kind, iid, option)
        self.by_iid.setdefault(iid, []).append((kind, req_id, option))

    def _unsubscribe(self, req_id: int) -> None:
        sub = self.subs.pop(req_id, None)
        if sub is not None:
            kind, iid, option = sub
            entries = self.by_iid[iid]
            entries.remove((kind, req_id, option))
            if not entries:
                del self.by_iid[iid]

    def drop_market_data(self) -> None:
        self.subs.clear()
        self.by_iid.clear()

    def send_book(self, kind: str, req_id: int, iid: int) -> None:
        """The current state for a new (or resumed) subscription."""
        book = self.gw.market.books[iid]
        t_s = self.gw.market.now_ns // 1_000_000_000
        if kind == "mkt":
            if not math.isnan(book.bid):
                self.send(m.tick_price(req_id, 1, book.bid, book.bid_size))
            if not math.isnan(book.ask):
                self.send(m.tick_price(req_id, 2, book.ask, book.ask_size))
            if not math.isnan(book.last):
                self.send(m.tick_price(req_id, 4, book.last, book.last_size))
                self.send(m.tick_size(req_id, 8, book.volume))
        elif kind == "bidask" and book.two_sided:
            self.send(m.tick_by_tick_bid_ask(req_id, t_s, book.bid, book.ask, book.bid_size, book.ask_size))
        elif kind == "mid" and book.two_sided:
            self.send(m.tick_by_tick_mid(req_id, t_s, book.mark()))

    def _resolve_one(self, req_id: int, fields: list[str], at: int):
        info, why = self.gw.contracts.resolve_one(contract_at(fields, at))
        if info is None:
            self.error(req_id, 200, why)
        return info

    # ------------------------------------------------------------------ request handlers

    def req_mkt_data(self, fields: list[str]) -> None:
        r = parse_mkt_data(fields)
        info = self._resolve_one(r.req_id, fields, 3)
        if info is None:
            return
        if r.req_id in self.subs and not r.snapshot:
            self.error(r.req_id, 322, f"Error processing request:Duplicate ticker id {r.req_id}")
            return
        self.send(m.market_data_type(r.req_id, 1))
        self.send(m.tick_req_params(r.req_id, info.instrument.tick_size, info.listing_exchange))
        if not self.gw.faults.data_halted:
            self.send_book("mkt", r.req_id, info.id)
        if r.snapshot:
            self.send(m.tick_snapshot_end(r.req_id))
        else:
            self._subscribe(r.req_id, "mkt", info.id)

    def cancel_mkt_data(self, fields: list[str]) -> None:
        self._unsubscribe(to_int(fields[2]))

    def req_tick_by_tick(self, fields: list[str]) -> None:
        r = parse_tick_by_tick(fields)
        kind = TICK_BY_TICK_TYPES.get(r.tick_type)
        if kind is None:
            self.error(r.req_id, 10189, f"Failed to request tick-by-tick data:unknown tick type {r.tick_type!r}")
            return
        info = self._resolve_one(r.req_id, fields, 2)
        if info is None:
            return
        self._subscribe(r.req_id, kind, info.id, r.ignore_size)
        if not self.gw.faults.data_halted:
            self.send_book(kind, r.req_id, info.id)

    def cancel_tick_by_tick(self, fields: list[str]) -> None:
        self._unsubscribe(to_int(fields[1]))

    def place_order(self, fields: list[str]) -> None:
        r = parse_place_order(fields)
        if r.contract.sec_type == "BAG":
            self.error(
                r.order_id, 201, "Order rejected - reason:combo orders are not supported by the simulated gateway"
            )
            return
        info = self._resolve_one(r.order_id, fields, 2)
        if info is None:
            return
        client_id = self.client_id
        self.gw.to_venue(lambda: self.gw.broker.place(client_id, r, info, self.gw.faults.take_reject()))

    def cancel_order(self, fields: list[str]) -> None:
        client_id, order_id = self.client_id, to_int(fields[2])
        self.gw.to_venue(lambda: self.gw.broker.cancel(client_id, order_id))

    def global_cancel(self, fields: list[str]) -> None:
        self.gw.to_venue(self.gw.broker.cancel_all)

    def _send_orders(self, orders) -> None:
        for o in orders:
            self.send(m.open_order(o, o.info))
            self.send(m.order_status(o))
        self.send(m.open_order_end())

    def req_open_orders(self, fields: list[str]) -> None:
        self._send_orders(self.gw.broker.working_orders(self.client_id))

    def req_all_open_orders(self, fields: list[str]) -> None:
        self._send_orders(self.gw.broker.working_orders())

    def req_completed_orders(self, fields: list[str]) -> None:
        for o in self.gw.broker.completed_orders():
            self.send(m.completed_order(o, o.info))
        self.send(m.completed_orders_end())

    def req_executions(self, fields: list[str]) -> None:
        f = parse_exec_filter(fields)
        broker = self.gw.broker
        try:
            found = broker.find_executions(f)
            if self.client_id != self.gw.config.master_client_id:  # IB: a client sees its own
                found = [e for e in found if e.client_id == self.client_id]
        except (ValueError, KeyError) as exc:
            self.error(f.req_id, 321, f"Error validating request:execution filter time {f.time!r}: {exc}")
            return
        for e in found:
            self.send(m.exec_details(f.req_id, e, self.gw.contracts.by_id(e.instrument_id)))
        for e in found:
            if e.commission_reported:
                self.send(m.commission_report(e, broker.currency))
        self.send(m.exec_details_end(f.req_id))

    def req_ids(self, fields: list[str]) -> None:
        self.send(m.next_valid_id(self.gw.broker.next_valid_id(self.client_id)))

    def req_contract_details(self, fields: list[str]) -> None:
        req_id = to_int(fields[2])
        found = self.gw.contracts.resolve(contract_at(fields, 3))
        if not found:
            _, why = self.gw.contracts.resolve_one(contract_at(fields, 3))
            self.error(req_id, 200, why)
            return
        for info in found:
            self.send(m.contract_details(req_id, info, self.gw.market.now_ns))
        self.send(m.contract_details_end(req_id))

    def req_managed_accounts(self, fields: list[str]) -> None:
        self.send(m.managed_accounts([self.gw.broker.account_id]))

    def req_current_time(self, fields: list[str]) -> None:
        self.send(m.current_time(self.gw.market.now_ns // 1_000_000_000))

    def req_positions(self, fields: list[str]) -> None:
        self.positions_sub = True
        for iid in self.gw.broker.positions:
            self.send_position(iid)
        self.send(m.position_end())

    def send_position(self, iid: int) -> None:
        pos = self.gw.broker.positions[iid]
        self.send(m.position(self.gw.broker.account_id, self.gw.contracts.by_id(iid), pos.quantity, pos.avg_cost()))

    def cancel_positions(self, fields: list[str]) -> None:
        self.positions_sub = False

    def req_account_updates(self, fields: list[str]) -> None:
        subscribe = to_bool(fields[2]) if len(fields) > 2 else True
        self.account_sub = subscribe
        if subscribe:
            self.send_account_update(full=True)
            self.send(m.account_download_end(self.gw.broker.account_id))

    def send_account_update(self, full: bool = False, iid: int | None = None) -> None:
        broker, account = self.gw.broker, self.gw.broker.account
        for tag, value, currency in account.account_values():
            self.send(m.account_value(tag, value, currency, account.account_id))
        ids = [iid] if iid is not None else [i for i, p in broker.positions.items() if p.quantity or full]
        for i in ids:
            self.send(m.portfolio_value(self.gw.contracts.by_id(i), account.portfolio_item(i), account.account_id))
        self.send(m.account_update_time(time.strftime("%H:%M", time.gmtime(self.gw.market.now_ns // 1_000_000_000))))

    def req_account_summary(self, fields: list[str]) -> None:
        req_id = to_int(fields[2])
        tags = set(fields[4].split(",")) if len(fields) > 4 else set()
        account = self.gw.broker.account
        for tag, value, currency in account.account_values():
            if currency == "BASE" or (tag not in tags and "$LEDGER:ALL" not in tags):
                continue
            self.send(m.account_summary(req_id, account.account_id, tag, value, currency))
        self.send(m.account_summary_end(req_id))

    def req_account_updates_multi(self, fields: list[str]) -> None:
        req_id = to_int(fields[2])
        self.multi_subs.add(req_id)
        self.send_account_multi(req_id)
        self.send(m.account_update_multi_end(req_id))

    def send_account_multi(self, req_id: int) -> None:
        account = self.gw.broker.account
        for tag, value, currency in account.account_values():
            self.send(m.account_update_multi(req_id, account.account_id, tag, value, currency))

    def cancel_account_updates_multi(self, fields: list[str]) -> None:
        self.multi_subs.discard(to_int(fields[2]))

    def ignore(self, fields: list[str]) -> None:
        pass


_HANDLERS = {
    In.REQ_MKT_DATA: ClientSession.req_mkt_data,
    In.CANCEL_MKT_DATA: ClientSession.cancel_mkt_data,
    In.PLACE_ORDER: ClientSession.place_order,
    In.CANCEL_ORDER: ClientSession.cancel_order,
    In.REQ_OPEN_ORDERS: ClientSession.req_open_orders,
    In.REQ_ACCOUNT_UPDATES: ClientSession.req_account_updates,
    In.REQ_EXECUTIONS: ClientSession.req_executions,
    In.REQ_IDS: ClientSession.req_ids,
    In.REQ_CONTRACT_DETAILS: ClientSession.req_contract_details,
    In.REQ_AUTO_OPEN_ORDERS: ClientSession.ignore,
    In.REQ_ALL_OPEN_ORDERS: ClientSession.req_all_open_orders,
    In.REQ_MANAGED_ACCOUNTS: ClientSession.req_managed_accounts,
    In.REQ_CURRENT_TIME: ClientSession.req_current_time,
    In.REQ_GLOBAL_CANCEL: ClientSession.global_cancel,
    In.REQ_MARKET_DATA_TYPE: ClientSession.ignore,
    In.REQ_POSITIONS: ClientSession.req_positions,
    In.REQ_ACCOUNT_SUMMARY: ClientSession.req_account_summary,
    In.CANCEL_ACCOUNT_SUMMARY: ClientSession.ignore,
    In.CANCEL_POSITIONS: ClientSession.cancel_positions,
    In.REQ_ACCOUNT_UPDATES_MULTI: ClientSession.req_account_updates_multi,
    In.CANCEL_ACCOUNT_UPDATES_MULTI: ClientSession.cancel_account_updates_multi,
    In.REQ_TICK_BY_TICK_DATA: ClientSession.req_tick_by_tick,
    In.CANCEL_TICK_BY_TICK_DATA: ClientSession.cancel_tick_by_tick,
    In.REQ_COMPLETED_ORDERS: ClientSession.req_completed_orders,
}
