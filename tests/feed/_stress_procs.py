"""Worker processes for the ring stress tests: spawn, talk over a pipe, clean up.

A worker is a module-level function whose first argument is the sending end of a pipe; it
sends ``{"event": ...}`` messages, or ``{"event": "error", "traceback": ...}`` if it raised.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback

__all__ = ["Workers", "send_error"]


def send_error(conn) -> None:
    """From inside a worker's ``except`` block: report the exception to the test."""
    with contextlib.suppress(OSError, ValueError):  # the test may have gone away
        conn.send({"event": "error", "pid": os.getpid(), "traceback": traceback.format_exc()})


class Workers:
    """The worker processes of one test, started with the ``spawn`` context (a fresh
    interpreter each, as a service started on its own would be)."""

    def __init__(self):
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list = []

    def start(self, name: str, target, *args):
        """Start ``target(conn, *args)`` in a new process; returns ``(process, receiving end)``."""
        receiver, sender = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=target, name=name, args=(sender, *args), daemon=True)
        proc.start()
        sender.close()
        proc.conn = receiver
        self.procs.append(proc)
        return proc

    @staticmethod
    def receive(proc, expect: str, timeout: float) -> dict:
        """The next message from ``proc``, which must be the event ``expect``; fails the test
        with the worker's traceback if it raised, or clearly if it died or said nothing."""
        import pytest  # here, not at the top: workers import this module and need no pytest

        if not proc.conn.poll(timeout):
            pytest.fail(f"{proc.name}: no {expect!r} within {timeout} s (alive={proc.is_alive()})")
        try:
            msg = proc.conn.recv()
        except EOFError:
            proc.join(10)
            pytest.fail(f"{proc.name}: exited with code {proc.exitcode} before sending {expect!r}")
        if msg["event"] == "error":
            pytest.fail(f"{proc.name} raised:\n{msg['traceback']}")
        assert msg["event"] == expect, (proc.name, msg)
        return msg

    @staticmethod
    def join(proc, timeout: float) -> int:
        proc.join(timeout)
        assert not proc.is_alive(), f"{proc.name} still running after {timeout} s"
        return proc.exitcode

    def close(self) -> None:
        """Kill (by pid, only our own) whatever is still running, and reap everything."""
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)
            proc.conn.close()
