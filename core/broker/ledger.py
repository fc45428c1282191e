"""The gateway's memory: which engine order is which IB order, and which executions were sent.

* :class:`OrderEntry` / the order map: engine order id <-> IB ``orderId`` (with the client id
  that placed it) <-> ``permId``, plus what the engine was last told about the order. Engine
  order ids are unique per engine session; IB order ids grow forever per client id, so
  ``(client_id, ib_order_id)`` never means two orders.
* :class:`FillLedger`: one entry per execution, keyed by the execId *base* (the execId without
  its last component): IB corrects an execution by sending it again with a higher last
  component (``….01.01`` -> ``….01.02``). Each base gets a small stable ``fill_id`` (the
  wire's FILL key), the quantity already applied and whether its commission went out, so a
  repeated execId (a duplicated report, or the re-requested executions after a reconnect) is
  recognised and a correction becomes the *difference* to what was sent.

Both are journaled to an append-only JSON-lines file (:class:`StateJournal`), written before the
matching record goes to the engine, and compacted when the gateway starts. A restarted gateway
therefore still maps fills to engine orders and never sends an execution twice.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loguru import logger

__all__ = [
    "OrderEntry",
    "FillEntry",
    "Ledger",
    "StateJournal",
    "exec_base",
    "exec_version",
    "order_ref",
    "parse_order_ref",
]

REF_PREFIX = "qs"


def order_ref(strategy_id: int, engine_order_id: int) -> str:
    """The ``orderRef`` every order carries: ``qs:<strategy id>:<engine order id>``."""
    return f"{REF_PREFIX}:{strategy_id}:{engine_order_id}"


def parse_order_ref(ref: str) -> tuple[int, int] | None:
    """``(strategy_id, engine_order_id)`` of an orderRef this gateway wrote, else None."""
    parts = (ref or "").split(":")
    if len(parts) != 3 or parts[0] != REF_PREFIX:
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


def exec_base(exec_id: str) -> str:
    """``0000e0d5.6581c1ef.01.01`` -> ``0000e0d5.6581c1ef.01``."""
    head, sep, _ = exec_id.rpartition(".")
    return head if sep else exec_id


def exec_version(exec_id: str) -> int:
    """The correction counter: the last component of the execId (hex), 0 if there is none."""
    _, sep, tail = exec_id.rpartition(".")
    try:
        return int(tail, 16) if sep else 0
    except ValueError:
        return 0


@dataclass
class OrderEntry:
    """One engine order as the gateway knows it."""

    engine_id: int
    strategy_id: int
    instrument_id: int
    side: int
    quantity: float
    ts_created: int  # when the gateway read it (the gateway's clock)
    order_type: int = 0  # OrderType
    tif: int = 0  # TimeInForce
    price: float = float("nan")  # limit price
    client_id: int = 0
    ib_order_id: int = 0  # 0 until handed to the library
    perm_id: int = 0  # 0 until the broker acknowledged it
    status: int = 0  # OrderStatus last reported to the engine (0: none yet)
    error_code: int = 0  # last error the broker gave for the order
    filled: float = 0.0  # cumulative quantity of the fills sent for it
    reported_filled: float = -1.0  # filled_qty of the last ORDER_STATUS sent
    terminal: bool = False  # a final status went to the engine
    cancel_wanted: bool = False  # the engine asked to cancel it
    uncertain: bool = False  # a pacing error on its id: is it at the broker? (checked)

    @property
    def ref(self) -> str:
        return order_ref(self.strategy_id, self.engine_id)


@dataclass
class FillEntry:
    """One execution (all its corrections) as the engine was told."""

    fill_id: int
    exec_id: str  # the newest execId of this base
    engine_id: int
    instrument_id: int
    strategy_id: int
    quantity: float  # signed quantity the engine has applied in total
    price: float
    ts_event: int  # the broker's execution time
    ts_recv: int  # when the gateway first saw it (what compaction goes by)
    commission_sent: bool = False
    baseline: bool = False  # already at the broker when a gateway without state started: not sent


@dataclass
class Ledger:
    """The order map and the fill ledger, with the journal that makes them survive a restart."""

    orders: dict[int, OrderEntry] = field(default_factory=dict)  # engine id -> entry
    fills: dict[str, FillEntry] = field(default_factory=dict)  # exec base -> entry
    next_fill_id: int = 1
    blocked: set[int] = field(default_factory=set)  # instruments the engine was told to BLOCK
    displaced: dict[tuple[int, int], OrderEntry] = field(default_factory=dict)  # see add_order
    fresh: bool = True  # nothing was restored from a journal
    journal: StateJournal | None = None
    _by_ib: dict[tuple[int, int], OrderEntry] = field(default_factory=dict)
    _by_perm: dict[int, OrderEntry] = field(default_factory=dict)

    # ------------------------------------------------------------------ orders

    def add_order(self, entry: OrderEntry) -> OrderEntry | None:
        """Add an engine order; returns the working order it displaces, if the engine reused a
        working order's id (it restarted): that one is now unknown to the engine."""
        old = self.orders.get(entry.engine_id)
        displaced = old if old is not None and not old.terminal else None
        if displaced is not None:
            self.displaced[(displaced.client_id, displaced.ib_order_id)] = displaced
        self.orders[entry.engine_id] = entry
        self._index(entry)
        self._write("order", asdict(entry))
        return displaced

    def update_order(self, entry: OrderEntry) -> None:
        """Record a change of ``entry`` (ids, status) in the indexes and the journal."""
        self._index(entry)
        self._write("order", asdict(entry))

    def _index(self, e: OrderEntry) -> None:
        if e.ib_order_id:
            self._by_ib[(e.client_id, e.ib_order_id)] = e
        if e.perm_id:
            self._by_perm[e.perm_id] = e

    def find_order(self, client_id: int = 0, ib_order_id: int = 0, perm_id: int = 0) -> OrderEntry | None:
        """The entry for a broker order, by permId, else by (client id, IB order id); it may
        be a displaced one (check :meth:`is_current`)."""
        e = self._by_perm.get(perm_id) if perm_id else None
        if e is None and ib_order_id > 0:
            e = self._by_ib.get((client_id, ib_order_id))
        return e

    def is_current(self, e: OrderEntry) -> bool:
        """Whether the engine id of ``e`` still means ``e`` to the engine."""
        return self.orders.get(e.engine_id) is e

    def working(self) -> Iterator[OrderEntry]:
        """Orders the engine still counts as working."""
        return (e for e in list(self.orders.values()) if not e.terminal)

    # ------------------------------------------------------------------ fills

    def new_fill(self, base: str, **fields) -> FillEntry:
        entry = FillEntry(fill_id=self.next_fill_id, **fields)
        self.next_fill_id += 1
        self.fills[base] = entry
        self._write("fill", {"base": base, **asdict(entry)})
        return entry

    def update_fill(self, base: str, entry: FillEntry) -> None:
        self._write("fill", {"base": base, **asdict(entry)})

    def set_blocked(self, iid: int, blocked: bool) -> None:
        (self.blocked.add if blocked else self.blocked.discard)(iid)
        self._write("blocked", {"instruments": sorted(self.blocked)})

    # ------------------------------------------------------------------ persistence

    def _write(self, kind: str, data: dict) -> None:
        if self.journal is not None:
            self.journal.append(kind, data)

    @classmethod
    def open(cls, path: Path | None) -> Ledger:
        """The ledger from the journal at ``path`` (compacted), or a fresh one."""
        ledger = cls()
        if path is None:
            return ledger
        for kind, data in StateJournal.read(path):
            ledger.fresh = False
            if kind == "order":
                e = OrderEntry(**data)
                ledger.orders[e.engine_id] = e
                ledger._index(e)
            elif kind == "fill":
                base = data.pop("base")
                ledger.fills[base] = FillEntry(**data)
                ledger.next_fill_id = max(ledger.next_fill_id, data["fill_id"] + 1)
            elif kind == "blocked":
                ledger.blocked = set(data["instruments"])
            elif kind == "meta":
                ledger.next_fill_id = max(ledger.next_fill_id, data.get("next_fill_id", 1))
        # keep what today's executions and working orders still need; the fill-id counter goes on
        day_start = calendar.timegm((*time.gmtime()[:3], 0, 0, 0, 0, 0, 0)) * 1_000_000_000
        ledger.fills = {b: f for b, f in ledger.fills.items() if f.ts_recv >= day_start}
        ledger.orders = {i: e for i, e in ledger.orders.items() if not e.terminal or e.ts_created >= day_start}
        ledger._by_ib, ledger._by_perm = {}, {}
        for e in ledger.orders.values():
            ledger._index(e)
        ledger.journal = StateJournal.rewrite(path, ledger)
        return ledger

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None


class StateJournal:
    """An append-only JSON-lines file: ``{"k": kind, "d": data}`` per line, last one wins.

    Each line is written with one ``write`` and flushed before the record it describes goes to
    the engine, so a crash of the gateway loses at most the line being written (a torn last
    line is skipped when the journal is read).
    """

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 -- kept open for appends

    def append(self, kind: str, data: dict) -> None:
        self._file.write(json.dumps({"k": kind, "d": data}, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()

    @staticmethod
    def read(path: Path) -> Iterator[tuple[str, dict]]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for n, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
                yield item["k"], item["d"]
            except (ValueError, KeyError, TypeError):
                logger.warning("gateway state {}: line {} is not readable; skipped", path, n)

    @classmethod
    def rewrite(cls, path: Path, ledger: Ledger) -> StateJournal:
        """Write the ledger compactly to a new file and swap it in atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"k": "meta", "d": {"next_fill_id": ledger.next_fill_id}}) + "\n")
            for e in ledger.orders.values():
                f.write(json.dumps({"k": "order", "d": asdict(e)}) + "\n")
            for base, fe in ledger.fills.items():
                f.write(json.dumps({"k": "fill", "d": {"base": base, **asdict(fe)}}) + "\n")
            f.write(json.dumps({"k": "blocked", "d": {"instruments": sorted(ledger.blocked)}}) + "\n")
        os.replace(tmp, path)
        return cls(path)
