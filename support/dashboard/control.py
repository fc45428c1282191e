"""Control records into the engine's control ring, as one of its several producers.

The encoding is the operator CLI's (``quayside control``, :mod:`quayside.core.engine.commands`):
a CONTROL record with the command, the scope in the header (``instrument_id``, ``strategy_id``;
0 = all), our issuer id, and for SET_LIMIT the ``limit_id`` and ``value``. The writer is
``CommandWriter(shared=True)``, attached with the capacity the engine gave the ring. Command
ids are wall-clock microseconds, made strictly increasing, so the engine's CONTROL_APPLIED echo
(which carries the id) names exactly one request; microseconds keep them below 2**53, exact as
JavaScript numbers in the page.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from quayside.core import wire
from quayside.core.feed.ring import CommandWriter, RingResult

__all__ = ["ControlSender"]


class ControlSender:
    def __init__(self, ring: str, issuer_id: int):
        self.ring = ring
        self.issuer_id = issuer_id
        self._writer: CommandWriter | None = None
        self._file: tuple[int, int] | None = None
        self._last_id = 0
        self._lock = threading.Lock()

    def next_id(self) -> int:
        self._last_id = max(time.time_ns() // 1000, self._last_id + 1)
        return self._last_id

    def send(
        self, command: int, *, instrument_id: int = 0, strategy_id: int = 0, limit_id: int = 0, value: float = 0.0
    ) -> tuple[bool, int, str]:
        """Offer one control record: ``(sent, command id, detail)``."""
        with self._lock:
            command_id = self.next_id()
            rec = np.zeros(1, wire.control_dtype)
            rec["kind"], rec["version"] = wire.RecordKind.CONTROL, wire.VERSIONS[wire.RecordKind.CONTROL]
            rec["instrument_id"], rec["strategy_id"] = instrument_id, strategy_id
            rec["ts_event"], rec["command_id"], rec["issuer_id"] = time.time_ns(), command_id, self.issuer_id
            rec["command"], rec["limit_id"], rec["value"] = command, limit_id, value
            problem = self._attach()
            if problem:
                return False, command_id, problem
            result = self._writer.offer(rec)
            if result == RingResult.BACK_PRESSURED:
                return False, command_id, "the control ring is full (is the engine consuming it?)"
            return True, command_id, f"control record at ring position {result}"

    def _attach(self) -> str | None:
        from quayside.core.feed.segment import RingLayoutError, RingType, attach_segment, resolve

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
