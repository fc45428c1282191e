"""Benchmark hooks for the P&L and risk services (``benchmarks/`` times these; they are not
tests): ``handle_rate(service, feed)`` is the records per second of ``service.handle`` on a
feed cut into batches, the way the feed thread hands them over.

``python -m quayside.support.pnl.bench`` prints a table for both services on a realistic feed
(:func:`~quayside.support.pnl.records.synthetic_feed`: quotes of four instruments, a fill and
an order every 1,000 records, half the commissions arriving later, a heartbeat every 10,000).
"""

from __future__ import annotations

import time

import numpy as np

from quayside.support.pnl.records import synthetic_feed

__all__ = ["handle_rate", "pnl_service", "risk_service", "main"]


def pnl_service():
    from quayside.support.pnl.service import PnlService, PnlSettings

    return PnlService(PnlSettings())


def risk_service():
    from quayside.support.risk.service import RiskService, RiskSettings

    svc = RiskService(RiskSettings())
    svc.monitor.go_live()
    return svc


def handle_rate(make_service, feed: np.ndarray, batch: int = 8192, repeat: int = 3) -> float:
    """Best of ``repeat`` runs (a fresh service each): records per second through ``handle``."""
    best = 0.0
    for _ in range(repeat):
        svc = make_service()
        started = time.perf_counter()
        for lo in range(0, len(feed), batch):
            svc.handle(feed[lo : lo + batch])
        best = max(best, len(feed) / (time.perf_counter() - started))
    return best


def main(n: int = 2_000_000) -> list[dict]:
    from loguru import logger

    logger.remove()  # the risk monitor's default rules warn about the synthetic order rate
    feed = synthetic_feed(n)
    rows = []
    for name, make in (("pnl", pnl_service), ("risk", risk_service)):
        for batch in (256, 8192):
            rate = handle_rate(make, feed, batch)
            rows.append({"service": name, "batch": batch, "records_per_s": rate})
            print(f"{name:5} batch {batch:5}: {rate / 1e6:6.2f} M records/s")
    return rows


if __name__ == "__main__":
    main()
