"""Feed batches into a :class:`~quayside.support.pnl.accounting.Ledger`: the part of batch
handling the P&L service and the risk monitor share.

* **Checked, never fatal.** Records of a kind or version this build does not read, records of
  instruments the registry does not know, fills and positions whose numbers are not numbers,
  and records without a time are skipped and counted by reason (:attr:`LedgerFeed.skipped`).
* **Vectorised quotes.** The quotes of a batch update the marks in one numpy pass: the last
  quote of each instrument wins. Fills (rare) are applied one by one, in feed order.
* **Batch-size independent.** Feed-time events (the daily reset, and whatever
  :meth:`LedgerFeed.next_boundary` adds) split a batch where they fall; the one-by-one records
  of a stretch are handled before its quotes are applied, and a handler that needs the market
  as of its own record asks :meth:`LedgerFeed.marks_at` (the last quote before it in the
  stretch, else the marks before the stretch). So any split of the same history into batches
  gives the same state.
* **Replayable.** Nothing here reads a clock or depends on where a batch starts, so the
  frame's rebuild (the recorder's files through :meth:`LedgerFeed.handle`, then the ring from
  the first record they do not hold: :mod:`quayside.support.common.rebuild`) gives exactly the
  state the live service had.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from quayside.core import wire
from quayside.core.wire import Flag, RecordKind
from quayside.support.pnl.accounting import Ledger
from quayside.support.pnl.clock import first_at_or_after

__all__ = ["LedgerFeed"]

_F = wire.fill_dtype
_Q = wire.quote_dtype


class LedgerFeed:
    """Applies feed batches to ``ledger``; subclasses handle the kinds in :attr:`rare_kinds`
    (other than FILL) in :meth:`on_record`."""

    #: kinds handled one record at a time, in feed order (FILL always)
    rare_kinds: tuple[int, ...] = (RecordKind.FILL, RecordKind.POSITION, RecordKind.LOG)

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.skipped: Counter[str] = Counter()
        self.records = 0  # applied
        self.max_ts = 0
        self._rare = np.zeros(256, dtype=bool)
        self._rare[[*self.rare_kinds, RecordKind.FILL]] = True
        self._seg: np.ndarray | None = None  # the stretch being handled (for marks_at)
        self._seg_kinds: np.ndarray | None = None
        self._seg_rows: dict | None = None  # kind -> (rows, instrument ids); (kind, iid) -> rows
        known = ledger.known
        self._known = np.zeros(max(len(known), 1), dtype=bool)
        self._known[: len(known)] = known

    # ------------------------------------------------------------------ hooks

    def on_record(self, kind: int, batch: np.ndarray, i: int) -> None:
        """One record of a rare kind other than FILL (``batch[i]``, ``record_dtype``)."""

    def on_quotes(self, ids: np.ndarray, rows: np.ndarray, q: np.ndarray) -> None:
        """After the marks of ``ids`` were set from ``q[rows]`` (the last quote of each)."""

    def on_segment(self, seg: np.ndarray, kinds: np.ndarray) -> None:
        """After a stretch of records (between feed-time boundaries) was applied."""

    def next_boundary(self) -> int:
        """The next feed time at which :meth:`on_boundary` must run (0 = none)."""
        return self.ledger.next_reset_ns

    def on_boundary(self, ts: int) -> None:
        """Feed time reached a boundary; the default advances the ledger (daily reset)."""
        self.ledger.advance(ts)

    # ------------------------------------------------------------------ batches

    def handle(self, batch: np.ndarray) -> None:
        if not len(batch):
            return
        valid = wire.validate(batch)
        ts = np.ascontiguousarray(batch["ts_event"])  # a field of 64-byte records: gather it once
        ok = valid & (ts > 0)
        if not ok.all():
            for reason, n in (("foreign", int((~valid).sum())), ("bad_timestamp", int((valid & ~ok).sum()))):
                if n:
                    self.skipped[reason] += n
            batch, ts = batch[ok], ts[ok]
        if not len(batch):
            return
        kinds = np.ascontiguousarray(batch["kind"])
        self.records += len(batch)
        if self.ledger.clock_ns == 0:
            self.ledger.advance(int(ts[0]))
        start = 0
        while start < len(batch):
            boundary = self.next_boundary()
            k = first_at_or_after(ts[start:], boundary) if boundary else -1
            end = len(batch) if k < 0 else start + k
            if end > start:
                self._segment(batch[start:end], kinds[start:end])
            if k < 0:
                break
            self.on_boundary(int(ts[end]))
            if self.next_boundary() and self.next_boundary() <= int(ts[end]):
                raise AssertionError(f"{type(self).__name__}.on_boundary did not move the next boundary past {ts[end]}")
            start = end
        self.max_ts = max(self.max_ts, int(ts.max()))
        self.ledger.advance(int(self.max_ts))

    def _segment(self, seg: np.ndarray, kinds: np.ndarray) -> None:
        quotes = np.flatnonzero(kinds == RecordKind.QUOTE)
        quote_ids = seg["instrument_id"][quotes]  # gathered once: for the marks and for marks_at
        rare = np.flatnonzero(self._rare[kinds])
        if len(rare):
            self._seg, self._seg_kinds = seg, kinds
            self._seg_rows = {RecordKind.QUOTE: (quotes, quote_ids)}
            self._rare_records(seg, kinds, rare)
            self._seg = self._seg_kinds = self._seg_rows = None
        self._quotes(seg, quotes, quote_ids)
        self.on_segment(seg, kinds)

    def latest_before(self, i: int, kind: int, iid: int) -> int:
        """Row of the last record of ``kind`` for ``iid`` before row ``i`` of the stretch being
        handled, or -1 (then the state from before the stretch applies)."""
        cache = self._seg_rows
        rows = cache.get((kind, iid))
        if rows is None:  # once per kind and instrument in a stretch: a stretch has many orders
            of_kind = cache.get(kind)
            if of_kind is None:
                at = np.flatnonzero(self._seg_kinds == kind)
                of_kind = cache[kind] = (at, self._seg["instrument_id"][at])
            rows = cache[(kind, iid)] = of_kind[0][of_kind[1] == iid]
        k = int(rows.searchsorted(i))
        return int(rows[k - 1]) if k else -1

    def marks_at(self, i: int, iid: int) -> tuple[float, float]:
        """``(bid, ask)`` of ``iid`` as of row ``i`` of the stretch (for :meth:`on_record`)."""
        j = self.latest_before(i, RecordKind.QUOTE, iid) if self._seg is not None else -1
        if j < 0:
            return float(self.ledger.bid[iid]), float(self.ledger.ask[iid])
        q = self._seg.view(_Q)
        return float(q["bid_price"][j]), float(q["ask_price"][j])

    def _quotes(self, seg: np.ndarray, rows: np.ndarray, iid: np.ndarray) -> None:
        """The marks from the quotes at ``rows`` of ``seg`` (``iid``: their instruments)."""
        if not len(rows):
            return
        q = seg.view(_Q)
        known = self._known[np.minimum(iid, len(self._known) - 1)] & (iid < len(self._known))
        if not known.all():
            self.skipped["unknown_instrument"] += int((~known).sum())
            rows, iid = rows[known], iid[known]
            if not len(rows):
                return
        last = np.full(len(self._known), -1, dtype=np.int64)
        np.maximum.at(last, iid, rows)
        ids = np.flatnonzero(last >= 0)
        at = last[ids]
        self.ledger.set_quotes(ids, q["bid_price"][at], q["ask_price"][at], q["ts_event"][at])
        self.on_quotes(ids, at, q)

    def _rare_records(self, seg: np.ndarray, kinds: np.ndarray, idx: np.ndarray) -> None:
        for i, kind in zip(idx.tolist(), kinds[idx].tolist(), strict=True):
            if kind == RecordKind.FILL:
                self._fill(seg.view(_F)[i])
            else:
                self.on_record(kind, seg, i)

    # ------------------------------------------------------------------ fills

    def instrument_ok(self, iid: int) -> bool:
        return 0 < iid < len(self._known) and bool(self._known[iid])

    def _fill(self, f: np.void) -> None:
        """FILL semantics of the gateway: a new execution; its commission report (quantity 0,
        COMMISSION_KNOWN, same fill id); or a CORRECTION (quantity delta, corrected price)."""
        iid, flags = int(f["instrument_id"]), int(f["flags"])
        qty, price, commission = float(f["quantity"]), float(f["price"]), float(f["commission"])
        fill_id, ts = int(f["fill_id"]), int(f["ts_event"])
        has_commission = bool(flags & Flag.COMMISSION_KNOWN)
        if has_commission and not math.isfinite(commission):
            self.skipped["bad_fill"] += 1
            return
        if not self.instrument_ok(iid):
            self.skipped["unknown_instrument"] += 1
            return
        ledger = self.ledger
        if flags & Flag.CORRECTION:
            if qty != 0.0 or not has_commission:  # a restated quantity and/or price
                if not (math.isfinite(qty) and 0.0 < price < math.inf):
                    self.skipped["bad_fill"] += 1
                    return
                ledger.apply_correction(fill_id, qty, price, int(f["strategy_id"]), iid, ts)
            if has_commission:
                ledger.attach_commission(fill_id, commission)
            return
        if qty == 0.0:
            if has_commission:
                ledger.attach_commission(fill_id, commission)
            else:
                self.skipped["bad_fill"] += 1
            return
        if not (math.isfinite(qty) and 0.0 < price < math.inf):
            self.skipped["bad_fill"] += 1
            return
        ledger.apply_fill(int(f["strategy_id"]), iid, fill_id, qty, price, commission if has_commission else None, ts)
