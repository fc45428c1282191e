"""The frame of a support service: feed thread, state lock, HTTP face, graceful shutdown.

A service subclasses :class:`Service` and implements :meth:`Service.handle` (called with a batch
of feed records, under ``self.lock``) and, if it has any, :meth:`Service.routes` (extra HTTP
routes). The frame gives it:

* a feed thread that reads the engine's feed (shm or UDP) in batches and never blocks it;
* state rebuilt at start from the recorder's files, then the live feed from the first record
  the files do not have (:meth:`rebuild`, :mod:`quayside.support.common.rebuild`);
* a new ring under the same name (a restarted engine) attached to when the old one is drained;
* ``GET /metrics`` on an explicit route (Prometheus text format, the service's own registry)
  and ``GET /health`` (JSON; 503 when the feed has gone quiet for ``stale_after_s``);
* loguru logging; SIGTERM/SIGINT stop the feed thread and the HTTP server cleanly.

Every service also runs as a plain process: ``quayside support <name>``.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import ClassVar

import numpy as np
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
    graceful_shutdown_s: ClassVar[float | None] = None  # None: wait for every open request to finish

    def __init__(self, settings: ServiceSettings, registry: InstrumentRegistry | None = None):
        self.settings = settings
        self.registry = registry or (
            InstrumentRegistry.load(settings.registry) if settings.registry else default_registry()
        )
        self.lock = threading.RLock()
        self.metrics = CollectorRegistry()
        self.metrics.register(_FeedCollector(self))
        self.feed: FeedSource | None = None
        self.started_ns = time.time_ns()
        self.rebuilt_records = 0
        self.rebuilt = None  # a rebuild.Rebuilt once rebuild() has read recordings
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

    def attached(self) -> None:
        """Called (under ``self.lock``) once the feed is open and joined, and again after every
        attach to a new ring (a restarted engine); ``self.feed`` is the new source."""

    # ------------------------------------------------------------------ the frame

    def rebuild(self) -> int:
        """Replay the recorder's files (if configured) through :meth:`handle`, then move the live
        feed (already open) past the last record they hold of its ring; returns records applied."""
        folder = self.settings.recordings
        if not folder:
            return 0
        from quayside.support.common.rebuild import rebuild_from_recordings, resume_feed

        self.rebuilt = rebuild_from_recordings(self, folder, since=self.settings.recordings_since)
        self.rebuilt_records = self.rebuilt.records
        skipped = resume_feed(self.feed, self.rebuilt) if self.feed is not None else 0
        logger.info(
            "{}: rebuilt from {} recorded records in {} files ({:.2f} s); live feed joined at seq {} ({} skipped)",
            self.name,
            self.rebuilt.records,
            len(self.rebuilt.files),
            self.rebuilt.seconds,
            self.feed.position if self.feed is not None else None,
            skipped,
        )
        return self.rebuilt_records

    def poll_once(self) -> int:
        """Read and handle one batch; returns its size (0 when the feed had nothing)."""
        batch = self.feed.read()
        if len(batch):
            with self.lock:
                self.handle(batch)
        return len(batch)

    def reattach_if_replaced(self) -> bool:
        """If the engine has started a new ring under the same name, attach to it (the old one
        must be drained: call this when a read came back empty)."""
        if not self.feed.replaced():
            return False
        try:
            self.feed.reattach()
        except (FileNotFoundError, ValueError) as exc:  # half-created, or not a ring we can read
            logger.warning("{}: cannot attach to the new feed ring yet: {}", self.name, exc)
            return False
        logger.info("{}: attached to a new feed ring (epoch {})", self.name, self.feed.epoch)
        with self.lock:
            self.attached()
        return True

    def _feed_loop(self) -> None:
        idle = self.settings.feed.idle_sleep_ms / 1000.0
        next_check = 0.0
        while not self._stop.is_set():
            try:
                n = self.poll_once()
                if n == 0 and time.monotonic() >= next_check:
                    next_check = time.monotonic() + 1.0
                    self.reattach_if_replaced()
            except Exception:  # a bug in a handler must not kill the feed thread silently
                logger.exception("feed handler failed; continuing with the next batch")
                n = 0
            if n == 0:
                time.sleep(idle)

    def open(self, feed_timeout: float = 30.0) -> None:
        """Open the feed, rebuild state from the recordings and join the feed after them. The
        feed is opened first, so nothing published during the rebuild can fall between the
        files and the ring. (:meth:`start` does this, then starts the feed thread; tests call
        it and then :meth:`poll_once` themselves.)"""
        self.feed = open_feed(self.settings.feed, timeout=feed_timeout)
        self.rebuild()
        with self.lock:
            self.attached()

    def start(self, feed_timeout: float = 30.0) -> None:
        """:meth:`open`, then start the feed thread."""
        self.open(feed_timeout)
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
            self.app(),
            host=self.settings.http.host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=self.graceful_shutdown_s,
        )
        # uvicorn handles SIGTERM/SIGINT with a graceful shutdown, then restores the handlers it
        # found and raises the signal again: with the default SIGTERM handler the process would
        # die there, before stop() and close() (files flushed and synced) could run.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_quietly)
        try:
            uvicorn.Server(config).run()
        except SystemExit:
            pass
        finally:
            self.stop()
            logger.info("{} stopped", self.name)
        return 0


def _exit_quietly(signum, frame) -> None:
    raise SystemExit(0)


class _FeedCollector:
    """The frame's own metrics, read from the feed's counters at scrape time."""

    def __init__(self, service: Service):
        self.service = service

    def collect(self):
        svc, name = self.service, self.service.name
        stats = svc.feed.stats if svc.feed is not None else None
        counters = [
            ("quayside_feed_records", "Feed records this service handled from the live feed", "records"),
            ("quayside_feed_lost_records", "Feed records lost to this reader (lapped, UDP gaps, not recorded)", "lost"),
            ("quayside_feed_foreign_records", "Feed records dropped as unknown kind or version", "foreign"),
            (
                "quayside_feed_skipped_records",
                "Ring records skipped at start: already applied from recordings",
                "skipped",
            ),
        ]
        for metric, doc, attr in counters:
            family = CounterMetricFamily(metric, doc, labels=["service"])
            family.add_metric([name], getattr(stats, attr) if stats else 0)
            yield family
        rebuilt = GaugeMetricFamily(
            "quayside_rebuild_records", "Recorded records applied at start (state rebuild)", labels=["service"]
        )
        rebuilt.add_metric([name], svc.rebuilt_records)
        yield rebuilt
        age = svc.feed_age_s()
        if age is not None:
            family = GaugeMetricFamily(
                "quayside_feed_age_seconds",
                "Seconds since this service last received a feed record",
                labels=["service"],
            )
            family.add_metric([name], age)
            yield family
