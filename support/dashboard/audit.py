"""The append-only audit log of every control attempt: who, when, what, from where, and the result.

One JSON object per line, appended with ``O_APPEND`` and synced before the request is answered,
so a crash never leaves half a line and nothing already written is ever rewritten. Refused
attempts are recorded too. Every entry also goes to the service's log (loguru, under
``extra.audit``). The file is opened *before* a command is sent: a command that could not be
recorded is not sent.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from quayside.support.common.logs import logger
from quayside.support.pnl.clock import iso

__all__ = ["AuditLog", "AuditUnavailable"]


class AuditUnavailable(RuntimeError):
    """The audit log is not configured or cannot be written; controls are refused."""


class AuditLog:
    def __init__(self, path: str | None):
        self.path = Path(path) if path else None

    def open(self) -> int:
        """A file descriptor to append one entry to (call :meth:`write`); raises
        :class:`AuditUnavailable` with a message a person can act on."""
        if self.path is None:
            raise AuditUnavailable(
                "controls are disabled: no audit log is configured (set QUAYSIDE_AUDIT_LOG to a writable file path)"
            )
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditUnavailable(
                f"controls are disabled: cannot write the audit log {self.path}: {exc.strerror}"
            ) from None

    @staticmethod
    def entry(**fields) -> dict:
        now = time.time_ns()
        return {"at": iso(now), "ts_ns": now, **fields}

    def write(self, entry: dict, fd: int | None = None) -> None:
        """Append ``entry`` (to ``fd`` from :meth:`open`, else a fresh one) and log it."""
        level = "WARNING" if entry.get("result") == "sent" else "ERROR"
        logger.bind(audit=entry).log(
            level,
            "control {} by {} from {}: {} ({})",
            entry.get("action"),
            entry.get("operator") or "(unauthenticated)",
            entry.get("address"),
            entry.get("result"),
            entry.get("detail"),
        )
        line = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()
        own = fd is None
        try:
            fd = self.open() if own else fd
        except AuditUnavailable as exc:
            logger.error("audit entry not written: {}", exc)
            return
        try:
            os.write(fd, line)
            os.fsync(fd)
        except OSError as exc:
            logger.error("audit entry not written to {}: {}", self.path, exc.strerror)
        finally:
            if own:
                os.close(fd)
