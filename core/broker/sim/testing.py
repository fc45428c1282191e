"""Helpers for tests that drive the real ib_insync client against the simulated gateway.

* :class:`DecodeErrorWatch` collects what ib_insync logs when it cannot decode a message
  (``Error handling fields``, or any error from its decoder): ib_insync catches those and only
  logs them, so a malformed message would otherwise just lose an event silently;
  :func:`no_decode_errors` is the watch as a test's autouse fixture wants it.
* :func:`wait_until` runs ib_insync's event loop until a condition holds, or fails saying what
  it waited for.
* :class:`IbEventLoop` gives the main thread the event loop ib_insync's synchronous API runs
  on, and closes it afterwards (``asyncio.run`` elsewhere in a test session leaves the main
  thread without one, and ib_insync then fails with "There is no current event loop").
* :class:`Harness` starts gateways (in threads) and connects clients, and stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

__all__ = ["DecodeErrorWatch", "no_decode_errors", "IbEventLoop", "wait_until", "wait_disconnected", "Harness"]

DECODE_ERROR = "Error handling fields"


class DecodeErrorWatch(logging.Handler):
    """A handler on the ``ib_insync`` logger (level INFO while attached) that keeps every
    record; ``problems`` are the decode failures among them."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._logger = logging.getLogger("ib_insync")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> DecodeErrorWatch:
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)

    @property
    def problems(self) -> list[str]:
        out = []
        for r in self.records:
            text = r.getMessage()
            if DECODE_ERROR in text or (r.name == "ib_insync.Decoder" and r.levelno >= logging.ERROR):
                out.append(f"{r.name}: {text}")
        return out

    def messages(self, logger_name: str | None = None, contains: str = "") -> list[str]:
        return [
            r.getMessage()
            for r in self.records
            if (logger_name is None or r.name == logger_name) and contains in r.getMessage()
        ]


@contextlib.contextmanager
def no_decode_errors() -> Iterator[DecodeErrorWatch]:
    """A :class:`DecodeErrorWatch` over the block, which then fails (AssertionError listing them)
    if ib_insync could not decode anything during it."""
    with DecodeErrorWatch() as watch:
        yield watch
    assert not watch.problems, "ib_insync could not decode:\n" + "\n".join(watch.problems)


class IbEventLoop:
    """A fresh event loop for the calling thread while in use; the previous one restored after."""

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self._previous: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> asyncio.AbstractEventLoop:
        policy = asyncio.get_event_loop_policy()
        try:
            self._previous = policy.get_event_loop()
        except RuntimeError:
            self._previous = None
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        return self.loop

    def __exit__(self, *exc) -> None:
        loop = self.loop
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(asyncio.sleep(0.01))  # let closing transports finish closing
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        previous = self._previous if self._previous is not None and not self._previous.is_closed() else None
        asyncio.set_event_loop(previous)


def wait_until(ib, condition: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Run ``ib``'s event loop until ``condition()`` is true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        ib.sleep(0.02)


def wait_disconnected(ib, timeout: float = 10.0) -> None:
    """Run ``ib``'s loop until it has seen its connection drop. ib_insync raises
    ``ConnectionError("Socket disconnect")`` out of whatever blocking call is running when the
    socket closes (``ib.sleep`` included): that is expected here."""
    deadline = time.monotonic() + timeout
    while ib.isConnected():
        if time.monotonic() > deadline:
            raise AssertionError(f"ib_insync did not see the disconnect within {timeout} s")
        with contextlib.suppress(ConnectionError):
            ib.sleep(0.02)


class Harness:
    """The gateways and ib_insync clients a test starts, all stopped by :meth:`close`.

    ``gateway(**config)`` starts a gateway on OS-assigned ports (no admin port unless asked)
    serving from a thread; ``connect(gw, client_id)`` connects a (new or given) ``IB``.
    """

    def __init__(self, connect_timeout: float = 20.0):
        self.connect_timeout = connect_timeout
        self.gateways: list = []
        self.clients: list = []
        self._loop = IbEventLoop()
        self._loop.__enter__()

    def gateway(self, data=None, gateway_options: dict | None = None, **config):
        from quayside.core.broker.sim.background import BackgroundGateway
        from quayside.core.broker.sim.config import DataConfig, SimGatewayConfig

        config.setdefault("admin_port", None)
        cfg = SimGatewayConfig(port=0, data=data or DataConfig(speed=20.0), **config)
        gw = BackgroundGateway(cfg, **(gateway_options or {})).start()
        self.gateways.append(gw)
        return gw

    def connect(self, gw, client_id: int = 1, ib=None, timeout: float | None = None):
        from ib_insync import IB

        ib = ib or IB()
        if ib not in self.clients:
            self.clients.append(ib)
        ib.connect("127.0.0.1", gw.port, clientId=client_id, timeout=timeout or self.connect_timeout)
        return ib

    def close(self) -> None:
        try:
            for ib in self.clients:
                ib.disconnect()
            for gw in self.gateways:
                gw.stop()
        finally:
            self._loop.__exit__(None, None, None)
