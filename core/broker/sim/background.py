"""Run a :class:`~quayside.core.broker.sim.server.SimGateway` on its own event loop in a thread:
the Python API that tests and notebooks use next to a synchronous ib_insync client.

::

    with BackgroundGateway(SimGatewayConfig(port=0, admin_port=None)) as gw:
        ib = IB()
        ib.connect("127.0.0.1", gw.port, clientId=1)
        gw.command("error 1100")                 # any admin command (see faults.py)
        fills = gw.call(lambda g: list(g.broker.executions))

Everything that touches the gateway runs on the gateway's loop: :meth:`call` hands a function
over and waits for its result, so the caller never races the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from quayside.core.broker.sim.config import SimGatewayConfig
from quayside.core.broker.sim.server import SimGateway

__all__ = ["BackgroundGateway"]

T = TypeVar("T")


class BackgroundGateway:
    """A simulated gateway serving from a daemon thread. ``timeout`` bounds every call,
    ``start_timeout`` the start (which compiles the synthetic market's kernels on a fresh
    machine: tens of seconds)."""

    def __init__(
        self,
        config: SimGatewayConfig | None = None,
        timeout: float = 30.0,
        start_timeout: float = 300.0,
        **gateway_options,
    ):
        self.config = config or SimGatewayConfig()
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._options = gateway_options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.gateway: SimGateway | None = None

    def start(self) -> BackgroundGateway:
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.gateway = SimGateway(self.config, **self._options)
                loop.run_until_complete(self.gateway.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self.gateway.wait_stopped())
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="simgateway", daemon=True)
        self._thread.start()
        if not ready.wait(self.start_timeout):
            raise TimeoutError(f"the simulated gateway did not start within {self.start_timeout} s")
        if failure:
            raise failure[0]
        return self

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def admin_port(self) -> int | None:
        return self.gateway.admin_port

    def call(self, fn: Callable[[SimGateway], T]) -> T:
        """``fn(gateway)`` on the gateway's loop; its result (awaited if a coroutine)."""

        async def run():
            result = fn(self.gateway)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self.timeout)

    def command(self, line: str) -> str:
        """An admin command (``"drop 5"``, ``"error 1100"``...); the reply line."""
        return self.call(lambda g: g.command(line))

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.gateway.stop(), self._loop).result(self.timeout)
            self._thread.join(self.timeout)
        self._thread = None

    def __enter__(self) -> BackgroundGateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
