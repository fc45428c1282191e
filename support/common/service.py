"""The frame of a support service: feed thread, state lock, HTTP face, graceful shutdown.

A service subclasses :class:`Service` and implements :meth:`Service.handle` (called with a batch
of feed records, under ``self.lock``) and, if it has any, :meth:`Service.routes` (extra HTTP
routes). The frame gives it:

* a feed thread that reads the engine's feed (shm or UDP) in batches and never blocks it;
* state rebuilt at start from the recorder's files before the live feed (:meth:`rebuild`);
* ``GET /metrics`` on an explicit route (Prometheus text format, the service's own registry)
  and ``GET /health`` (JSON; 503 when the feed has gone quiet for ``stale_after_s``);
* loguru logging; SIGTERM/SIGINT stop the feed thread and the HTTP server cleanly.

Every service also runs as a plain process: ``quayside support <name>``.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import numpy as np
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from quayside.core.instruments import InstrumentRegistry, default_registry
from quayside.support.common.feed import FeedSource, open_feed
from quayside.support.common.logs import configure_logging, logger
from quayside.support.common.settings import ServiceSettings

__all__ = ["Service"]


class Service:
    name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 9100
    settings_cls: ClassVar[type[ServiceSettings]] = ServiceSettings
    stale_after_s: ClassVar[float] = 30.0

    def __init__(self, settings: ServiceSettings, registry: InstrumentRegistry | None = None):
        self.settings = settings
        self.registry = registry or (
            InstrumentRegistry.load(settings.registry) if settings.registry else default_registry()
        )
        self.lock = threading.RLock()
        self.metrics = CollectorRegistry()
        self._m_records = Counter(
            "quayside_feed_records", "Feed records this service handled", ["service"], registry=self.metrics
        )
        self._m_lost = Gauge(
            "quayside_feed_lost_records",
            "Feed records lost to this reader (lapped or UDP gaps)",
            ["service"],
            registry=self.metrics,
        )
        self._m_foreign = Gauge(
            "quayside_feed_foreign_records",
            "Feed records dropped as unknown kind or version",
            ["service"],
            registry=self.metrics,
        )
        self._m_age = Gauge(
            "quayside_feed_age_seconds",
            "Seconds since this service last received a feed record",
            ["service"],
            registry=self.metrics,
        )
        self.feed: FeedSource | None = None
        self.started_ns = time.time_ns()
        self.rebuilt_records = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ to implement

    def handle(self, batch: np.ndarray) -> None:
        """Apply a batch of feed records (``record_dtype``) to the service's state."""
        raise NotImplementedError

    def routes(self, app: FastAPI) -> None:
        """Add service-specific routes."""

    def health(self) -> dict:
        """Extra fields for ``/health``."""
        return {}

    # ------------------------------------------------------------------ the frame

    def rebuild(self) -> int:
        """Replay the recorder's files (if configured) through :meth:`handle`; returns records."""
        folder = self.settings.recordings
        if not folder:
            return 0
        from quayside.support.common.rebuild import rebuild_from_recordings

        self.rebuilt_records = rebuild_from_recordings(self, folder)
        return self.rebuilt_records

    def poll_once(self) -> int:
        """Read and handle one batch; returns its size (0 when the feed had nothing)."""
        batch = self.feed.read()
        if len(batch):
            with self.lock:
                self.handle(batch)
            self._m_records.labels(self.name).inc(len(batch))
        self._m_lost.labels(self.name).set(self.feed.stats.lost)
        self._m_foreign.labels(self.name).set(self.feed.stats.foreign)
        return len(batch)

    def _feed_loop(self) -> None:
        idle = self.settings.feed.idle_sleep_ms / 1000.0
        while not self._stop.is_set():
            try:
                n = self.poll_once()
            except Exception:  # a bug in a handler must not kill the feed thread silently
                logger.exception("feed handler failed; continuing with the next batch")
                n = 0
            if n == 0:
                time.sleep(idle)

    def start(self, feed_timeout: float = 30.0) -> None:
        """Open the feed, rebuild state, start the feed thread."""
        self.rebuild()
        self.feed = open_feed(self.settings.feed, timeout=feed_timeout)
        self._thread = threading.Thread(target=self._feed_loop, name=f"{self.name}-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.feed is not None:
            self.feed.close()
        self.close()

    def close(self) -> None:
        """Release what the service holds (files, sockets); called once on stop."""

    def feed_age_s(self) -> float | None:
        if self.feed is None or not self.feed.stats.last_record_ns:
            return None
        return (time.time_ns() - self.feed.stats.last_record_ns) / 1e9

    def app(self) -> FastAPI:
        app = FastAPI(title=f"quayside {self.name}", version="1")

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:  # an explicit route: scrapers do not follow a mount's 307
            age = self.feed_age_s()
            if age is not None:
                self._m_age.labels(self.name).set(age)
            return Response(generate_latest(self.metrics), media_type=CONTENT_TYPE_LATEST)

        @app.get("/health")
        def health() -> JSONResponse:
            age = self.feed_age_s()
            alive = self._thread is not None and self._thread.is_alive()
            ok = alive and (age is None or age < self.stale_after_s)
            with self.lock:
                extra = self.health()
            body = {
                "service": self.name,
                "status": "ok" if ok else "degraded",
                "feed_thread_alive": alive,
                "feed_age_s": age,
                "feed": vars(self.feed.stats) if self.feed else None,
                "rebuilt_records": self.rebuilt_records,
                **extra,
            }
            return JSONResponse(body, status_code=200 if ok else 503)

        self.routes(app)
        return app

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT: feed thread plus HTTP server."""
        import uvicorn

        configure_logging(self.name, self.settings.log_format, self.settings.log_level)
        self.start()
        port = self.settings.http.port or self.default_port
        logger.info(
            "{} serving on http://{}:{} (feed: {})", self.name, self.settings.http.host, port, self.settings.feed.source
        )
        config = uvicorn.Config(
            self.app(), host=self.settings.http.host, port=port, log_level="warning", access_log=False
        )
        try:
            uvicorn.Server(config).run()  # handles SIGTERM/SIGINT: returns after a graceful shutdown
        finally:
            self.stop()
            logger.info("{} stopped", self.name)
        return 0
