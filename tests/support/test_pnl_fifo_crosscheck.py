"""The average-cost ledger against an independent FIFO-lot book, on random fill sequences with
late commissions and corrections: whenever the position is flat, realized P&L and realized fees
agree; at any time, realized + unrealized (total P&L) agrees, whatever the lot method."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from quayside.core.instruments import default_registry
from quayside.support.pnl.accounting import Ledger
from quayside.support.pnl.fifo import FifoBook

T0 = 1_723_212_000 * 10**9
AAPL, ES = 3, 4

fill_event = st.tuples(
    st.just("fill"),
    st.integers(-6, 6).filter(bool),
    st.integers(4000, 16000).map(lambda p: p / 100.0),
    st.one_of(st.none(), st.integers(0, 300).map(lambda c: c / 100.0)),
)
commission_event = st.tuples(st.just("commission"), st.integers(0, 10**6), st.integers(0, 300).map(lambda c: c / 100))
correction_event = st.tuples(
    st.just("correct"),
    st.integers(0, 10**6),
    st.integers(-3, 3),
    st.integers(4000, 16000).map(lambda p: p / 100.0),
)
flatten_event = st.tuples(  # a fill that closes the whole position: flat states are what is compared
    st.just("flatten"),
    st.integers(4000, 16000).map(lambda p: p / 100.0),
    st.one_of(st.none(), st.integers(0, 300).map(lambda c: c / 100.0)),
)
events = st.lists(
    st.one_of(fill_event, fill_event, fill_event, commission_event, commission_event, correction_event, flatten_event),
    max_size=60,
)


def close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b), scale)


@settings(max_examples=300, deadline=None)
@given(events, st.sampled_from([AAPL, ES]))
def test_average_cost_agrees_with_fifo(evs, iid):
    led = Ledger(default_registry())
    mult = 50.0 if iid == ES else 1.0
    fills: list[list] = []  # [fill_id, quantity, price, commission or None]: the truth so far
    for ts, ev in enumerate(evs, start=T0):
        if ev[0] == "flatten":
            held = sum(f[1] for f in fills)
            if held == 0:
                continue
            ev = ("fill", -held, ev[1], ev[2])
        if ev[0] == "fill":
            _, qty, price, commission = ev
            fills.append([len(fills) + 1, float(qty), price, commission])
            led.apply_fill(1, iid, len(fills), qty, price, commission, ts)
        elif ev[0] == "commission":
            pending = [f for f in fills if f[3] is None]
            if not pending:
                continue
            f = pending[ev[1] % len(pending)]
            f[3] = ev[2]
            led.attach_commission(f[0], ev[2])
        else:
            if not fills:
                continue
            f = fills[ev[1] % len(fills)]
            f[1] += ev[2]
            f[2] = ev[3]
            f[3] = 0.0 if f[1] == 0 else None  # a bust costs nothing; else the new report is awaited
            led.apply_correction(f[0], float(ev[2]), ev[3])
        book = FifoBook(mult)
        for _, qty, price, commission in fills:
            book.fill(qty, price, commission or 0.0)
        p = led.positions.get((1, iid))
        if p is None:
            continue
        turnover = sum(abs(q) * pr for _, q, pr, _ in fills) * mult
        assert math.isclose(p.quantity, book.quantity, abs_tol=1e-9)
        mark = 100.0
        fifo_unreal = sum((mark - lot.price) * lot.quantity for lot in book.lots) * mult
        assert close(p.realized + p.unrealized(mark, mark), book.realized + fifo_unreal, turnover)
        if p.quantity == 0.0:
            assert close(p.realized, book.realized, turnover)
            if all(f[3] is not None for f in fills):
                assert close(p.fees_realized, book.fees_realized, 1.0)
                assert close(p.fees_realized, sum(f[3] for f in fills), 1.0)
                assert p.fee_pool == 0.0
        if all(f[3] is not None for f in fills):  # fees: pooled + realized is every commission
            assert close(p.fees_known, sum(f[3] for f in fills), 1.0)
            assert close(p.fees_realized + p.fee_pool, book.fees_realized + book.fees_open, 1.0)


def test_fifo_book_by_hand():
    book = FifoBook()
    book.fill(10, 100.0, 1.0)
    book.fill(10, 110.0, 1.0)
    book.fill(-15, 120.0, 1.5)  # FIFO: 10 x 20 + 5 x 10
    assert book.realized == 250.0
    assert book.quantity == 5.0 and book.lots[0].price == 110.0
    assert math.isclose(book.fees_realized, 1.0 + 0.5 + 1.5)
