"""Feed time: the clock a support service keeps from the records it reads, and the daily reset.

A service's state must be a function of the feed alone, so that replaying the same history
(the recorder's files, then the ring) rebuilds exactly the same state. So every time-driven
event — the daily P&L reset, the risk monitor's equity samples — happens at a *feed* time: the
running maximum of ``ts_event`` over the records seen so far, never the wall clock. A batch
that crosses such a boundary is split there (:func:`first_at_or_after`): the records before
it are applied, the event fires, then the rest follows, whatever the batch sizes were.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["DailySchedule", "first_at_or_after", "parse_hhmm", "iso"]

_NS = 1_000_000_000


def parse_hhmm(text: str) -> dt.time:
    """``"17:00"`` (or ``"17:00:30"``) as a time of day; ValueError with the text otherwise."""
    try:
        parts = [int(p) for p in text.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        return dt.time(*parts)
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not a time of day as HH:MM or HH:MM:SS") from None


class DailySchedule:
    """A reset at ``at`` (local time of day) in time zone ``tz``, every day.

    ``next_after(ts)`` is the first reset instant strictly after ``ts`` (ns since the epoch);
    ``last_at_or_before(ts)`` the one that began the current day. Daylight-saving changes are
    the time zone database's: a reset time that does not exist on a given day (a spring-forward
    gap) happens at the same wall time shifted by the gap, as :mod:`zoneinfo` resolves it.
    """

    def __init__(self, at: str | dt.time = "17:00", tz: str = "America/New_York"):
        self.at = parse_hhmm(at) if isinstance(at, str) else at
        self.tz_name = tz
        self.tz = ZoneInfo(tz)

    def _instant(self, day: dt.date) -> int:
        local = dt.datetime.combine(day, self.at, tzinfo=self.tz)
        return int(local.timestamp()) * _NS + local.microsecond * 1000

    def next_after(self, ts_ns: int) -> int:
        day = dt.datetime.fromtimestamp(ts_ns // _NS, tz=self.tz).date()
        for k in (-1, 0, 1, 2):  # DST shifts move an instant by at most a few hours
            t = self._instant(day + dt.timedelta(days=k))
            if t > ts_ns:
                return t
        raise AssertionError("unreachable: a reset happens every day")

    def last_at_or_before(self, ts_ns: int) -> int:
        day = dt.datetime.fromtimestamp(ts_ns // _NS, tz=self.tz).date()
        for k in (1, 0, -1, -2):
            t = self._instant(day + dt.timedelta(days=k))
            if t <= ts_ns:
                return t
        raise AssertionError("unreachable: a reset happens every day")

    def describe(self) -> str:
        return f"{self.at.isoformat(timespec='seconds')} {self.tz_name}"


def first_at_or_after(ts: np.ndarray, boundary: int) -> int:
    """Index of the first record whose ``ts_event`` is at or past ``boundary``, or -1.

    With the clock below ``boundary`` before the batch, this is exactly where the running
    maximum of the batch's timestamps crosses it.
    """
    if not len(ts):
        return -1
    hit = ts >= boundary
    i = int(np.argmax(hit))
    return i if hit[i] else -1


def iso(ts_ns: int | None) -> str | None:
    """An ns timestamp as ISO 8601 UTC (None stays None)."""
    if not ts_ns:
        return None
    return dt.datetime.fromtimestamp(ts_ns / _NS, tz=dt.UTC).isoformat()
