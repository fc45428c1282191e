"""Control records into the engine's control ring, as one of its several producers.

The operator CLI (``quayside control``), the risk monitor and the dashboard all send commands
this way: a CONTROL record with the command, the scope in the header (``instrument_id``,
``strategy_id``; 0 = all), the sender's issuer id, and for SET_LIMIT the ``limit_id`` and
``value``. The writer is ``CommandWriter(shared=True)`` (producers serialise on a lock file),
attached with the capacity the engine gave the ring, and re-attached when a restarted engine
has made a new ring under the same name. Command ids are wall-clock microseconds made strictly
increasing per sender, so the engine's CONTROL_APPLIED echo (which carries the id) names exactly
one request; microseconds stay below 2**53, exact as JavaScript numbers.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from quayside.core import wire
from quayside.core.feed.ring import CommandWriter, RingResult
from quayside.core.feed.segment import RingLayoutError, RingType, attach_segment, resolve

__all__ = ["ControlSender"]


class ControlSender:
    """Sends control records to the ring named ``ring`` (a name in the shm folder, or a path)."""

    def __init__(self, ring: str, issuer_id: int, *, wall_clock=time.time_ns):
        self.ring = ring
        self.issuer_id = issuer_id
        self.wall_clock = wall_clock
        self._writer: CommandWriter | None = None
        self._file: tuple[int, int] | None = None
        self._last_id = 0
        self._lock = threading.Lock()

    def next_id(self) -> int:
        self._last_id = max(self.wall_clock() // 1000, self._last_id + 1)
        return self._last_id

    def send(
        self,
        command: int,
        *,
        instrument_id: int = 0,
        strategy_id: int = 0,
        limit_id: int = 0,
        value: float = 0.0,
        command_id: int | None = None,
    ) -> tuple[bool, int, str]:
        """Offer one control record: ``(sent, command id, detail)``; never raises for a missing,
        foreign or full ring (the detail says which)."""
        with self._lock:
            command_id = self.next_id() if command_id is None else command_id
            rec = np.zeros(1, wire.control_dtype)
            rec["kind"], rec["version"] = wire.RecordKind.CONTROL, wire.VERSIONS[wire.RecordKind.CONTROL]
            rec["instrument_id"], rec["strategy_id"] = instrument_id, strategy_id
            rec["ts_event"], rec["command_id"], rec["issuer_id"] = self.wall_clock(), command_id, self.issuer_id
            rec["command"], rec["limit_id"], rec["value"] = command, limit_id, value
            problem = self._attach()
            if problem:
                return False, command_id, problem
            result = self._writer.offer(rec)
            if result == RingResult.BACK_PRESSURED:
                return False, command_id, "the control ring is full (is the engine consuming it?)"
            return True, command_id, f"control record at ring position {result}"

    def _attach(self) -> str | None:
        path = resolve(self.ring)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.close()
            return f"no control ring at {path} (is the engine running?)"
        if self._writer is not None and self._file == (st.st_dev, st.st_ino):
            return None
        self.close()  # none yet, or a restarted engine made a new ring under the same name
        try:  # attach first: the ring's capacity is the engine's, whatever it is
            seg = attach_segment(path, RingType.COMMAND, writable=False)
        except (RingLayoutError, OSError) as exc:
            return f"cannot attach to the control ring {path}: {exc}"
        capacity = seg.capacity
        seg.close()
        self._writer = CommandWriter(path, capacity, shared=True)
        self._file = (st.st_dev, st.st_ino)
        return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
