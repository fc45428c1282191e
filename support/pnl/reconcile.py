"""Reconciliation of the ledger's positions against the broker's (POSITION records of origin
BROKER, which the gateway publishes from its reconciliation with IB).

A broker position with ``strategy_id`` 0 is the account's position in the instrument and is
compared with the ledger's position summed over strategies; one with a strategy id is compared
with that strategy's position. A difference above ``tolerance`` is a **break**: reported in
``/pnl``, counted in the metrics and logged once when it opens, and again when it closes. A
break opens when a broker position disagrees and closes when a later broker position, or a
fill that brings the ledger to the last broker position, agrees; a fill still in flight on one
side shows as a break that closes again soon after (``reports`` counts the broker positions
that confirmed it). The gateway's own verdicts (RECONCILIATION_BREAK / RESOLVED log records,
engine against broker) are kept beside them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from quayside.support.common.logs import logger
from quayside.support.pnl.clock import iso

__all__ = ["Break", "Reconciler"]


@dataclass
class Break:
    strategy_id: int
    instrument_id: int
    symbol: str
    ledger: float
    broker: float
    since_ns: int
    reports: int = 1

    def as_dict(self) -> dict:
        d = asdict(self)
        d["difference"] = self.ledger - self.broker
        d["since"] = iso(d.pop("since_ns"))
        return d


class Reconciler:
    def __init__(self, symbol_of, tolerance: float = 1e-6):
        self.symbol_of = symbol_of
        self.tolerance = tolerance
        self.broker: dict[tuple[int, int], tuple[float, int]] = {}  # key -> (quantity, ts)
        self.breaks: dict[tuple[int, int], Break] = {}
        self.opened = 0  # breaks ever opened
        self.checks = 0
        self.gateway: dict[int, dict] = {}  # instrument -> the gateway's latest verdict

    def on_broker(self, strategy_id: int, instrument_id: int, quantity: float, ours: float, ts: int) -> None:
        key = (strategy_id, instrument_id)
        self.broker[key] = (quantity, ts)
        self.checks += 1
        self._compare(key, ours, ts, report=True)

    def on_fill(self, strategy_id: int, instrument_id: int, ours_strategy: float, ours_total: float, ts: int):
        """After a fill: an open break may have closed (never opens one: the broker's position
        is older than this fill)."""
        for key, ours in (((0, instrument_id), ours_total), ((strategy_id, instrument_id), ours_strategy)):
            if key in self.breaks:
                self._compare(key, ours, ts, report=False)

    def _compare(self, key, ours: float, ts: int, *, report: bool) -> None:
        broker = self.broker[key][0]
        brk = self.breaks.get(key)
        if abs(ours - broker) <= self.tolerance * max(1.0, abs(broker)):
            if brk is not None:
                del self.breaks[key]
                logger.info(
                    "reconciliation: {} (strategy {}) agrees again with the broker at {:g}",
                    brk.symbol, key[0], broker,
                )  # fmt: skip
            return
        if brk is None:
            self.opened += 1
            brk = self.breaks[key] = Break(key[0], key[1], self.symbol_of(key[1]), ours, broker, ts)
            logger.warning(
                "reconciliation break: {} (strategy {}): ledger {:g}, broker {:g}",
                brk.symbol, key[0], ours, broker,
            )  # fmt: skip
        else:
            brk.ledger = ours
            brk.broker = broker
            brk.reports += int(report)

    def on_gateway_log(self, instrument_id: int, resolved: bool, engine: float, broker: float, ts: int) -> None:
        self.gateway[instrument_id] = {
            "symbol": self.symbol_of(instrument_id),
            "state": "resolved" if resolved else "break",
            "engine": engine,
            "broker": broker,
            "at": iso(ts),
        }

    def report(self) -> dict:
        return {
            "breaks": [b.as_dict() for _, b in sorted(self.breaks.items())],
            "breaks_opened": self.opened,
            "broker_positions_checked": self.checks,
            "tolerance": self.tolerance,
            "gateway": {str(k): v for k, v in sorted(self.gateway.items())},
        }
