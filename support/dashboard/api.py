"""The dashboard's routes: the page, its files, the JSON panels, the event stream, the controls.

=========================================  ==================================================
``GET /``                                  the page (``static/index.html``)
``GET /static/{file}``                     the page's script and style
``GET /vendor/plotly.min.js``              plotly's bundle, from the installed package
``GET /api/summary``                       every panel at once (what the stream pushes)
``GET /api/positions``                     positions: quantity, average price, mark, P&L
``GET /api/equity``                        the equity curve with high-water mark and drawdown
``GET /api/limits``                        every engine limit, its use and utilisation
``GET /api/blotter``                       orders, statuses, fills, cancels, denials, controls
``GET /api/latency``                       tick-to-order and round-trip histograms
``GET /api/status``                        feed, engine, broker and quote health
``GET /api/trading``                       trading state, fill latch, working orders, denials
``GET /api/events``                        server-sent events: ``summary``, ``row``, ``resync``
``POST /api/control/{action}``             halt, resume, reduce-only, cancel-all (a Scope)
``POST /api/control/set-limit``            one limit, one value (SetLimit)
=========================================  ==================================================
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles

from quayside.core import wire
from quayside.core.wire import ControlCommand
from quayside.support.dashboard.audit import AuditUnavailable
from quayside.support.dashboard.auth import HOW_TO_CONFIGURE, load_tokens
from quayside.support.dashboard.models import (
    Blotter,
    ControlResult,
    EquityCurve,
    Health,
    Latency,
    LimitRow,
    Position,
    Problem,
    Scope,
    SetLimit,
    Summary,
    Trading,
)

if TYPE_CHECKING:
    from quayside.support.dashboard.service import DashboardService

__all__ = ["STATIC", "add_routes", "plotly_bundle"]

STATIC = Path(__file__).with_name("static")
_bearer = HTTPBearer(auto_error=False, description="an operator token (QUAYSIDE_DASHBOARD_TOKEN or tokens file)")
Auth = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_ACTIONS = {
    "halt": ControlCommand.HALT,
    "resume": ControlCommand.RESUME,
    "reduce-only": ControlCommand.REDUCE_ONLY,
    "cancel-all": ControlCommand.CANCEL_ALL,
}
_BAD_REQUEST = {422: {"model": Problem, "description": "the request is not valid (the message names the field)"}}
_CONTROL_RESPONSES = {
    **_BAD_REQUEST,
    400: {"model": Problem, "description": "the body is not JSON"},
    401: {"model": Problem, "description": "no token, or not a valid one"},
    403: {"model": Problem, "description": "controls are disabled: no token or no audit log configured"},
    503: {"model": Problem, "description": "the engine's control ring is missing or full"},
}


def plotly_bundle() -> Path:
    """plotly's own minified bundle in the installed package (never copied into the repo)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def add_routes(svc: DashboardService, app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(plotly_bundle(), media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(RequestValidationError, _invalid_request)

    # ------------------------------------------------------------------ panels

    @app.get("/api/summary", response_model=Summary, tags=["panels"])
    def summary() -> dict:
        with svc.lock:
            return svc.summary()

    @app.get("/api/positions", response_model=list[Position], tags=["panels"])
    def positions() -> list:
        with svc.lock:
            return svc.summary()["positions"]

    @app.get("/api/equity", response_model=EquityCurve, tags=["panels"], responses=_BAD_REQUEST)
    def equity(
        max_points: int | None = Query(
            default=None, ge=2, le=1_000_000, description="thin the curve to this many points"
        ),
    ) -> dict:
        with svc.lock:
            return svc.equity_curve(max_points)

    @app.get("/api/limits", response_model=list[LimitRow], tags=["panels"])
    def limits() -> list:
        with svc.lock:
            return svc.summary()["limits"]

    @app.get("/api/blotter", response_model=Blotter, tags=["panels"], responses=_BAD_REQUEST)
    def blotter(
        since: Annotated[int, Query(ge=0, le=2**62, description="rows after this seq")] = 0,
        limit: Annotated[int, Query(ge=1, le=100_000, description="newest rows at most")] = 500,
    ) -> dict:
        with svc.lock:
            rows = [r for r in svc.state.blotter if r["seq"] > since][-limit:]
            return {"newest": svc.state.seq, "rows": rows}

    @app.get("/api/latency", response_model=Latency, tags=["panels"])
    def latency() -> dict:
        with svc.lock:
            return svc.latency()

    @app.get("/api/status", response_model=Health, tags=["panels"])
    def status() -> dict:
        with svc.lock:
            return svc.summary()["health"]

    @app.get("/api/trading", response_model=Trading, tags=["panels"])
    def trading() -> dict:
        with svc.lock:
            return svc.trading()

    # ------------------------------------------------------------------ the stream

    def locked_summary() -> dict:
        with svc.lock:
            return svc.summary()

    @app.get("/api/events", response_class=EventSourceResponse, tags=["stream"], responses=_BAD_REQUEST)
    async def events(
        since: Annotated[int | None, Query(ge=0, le=2**62, description="send the rows after this seq first")] = None,
        last_event_id: Annotated[str | None, Header(max_length=32)] = None,
    ) -> AsyncIterable[ServerSentEvent]:
        """``summary`` (every panel, JSON as ``/api/summary``) at once, then at least every
        ``summary_every_s`` and at most every ``summary_min_gap_s``; ``row`` (a blotter row,
        id = its seq) the moment the feed has it; ``resync`` when rows were missed (reload the
        blotter). A reconnecting browser sends ``Last-Event-ID`` and gets what it missed."""
        sub = svc.hub.subscribe()
        cfg = svc.config
        try:
            yield ServerSentEvent(event="summary", data=await anyio.to_thread.run_sync(locked_summary), retry=1000)
            start = since if since is not None else _int_or_none(last_event_id)
            if start is not None:
                with svc.lock:
                    missed = svc.state.since(start)
                if missed is None:
                    yield ServerSentEvent(event="resync", data={"newest": svc.state.seq})
                for row in missed or ():
                    yield ServerSentEvent(event="row", data=row, id=str(row["seq"]))
            last, dirty = time.monotonic(), False
            while True:
                wait = (cfg.summary_min_gap_s if dirty else cfg.summary_every_s) - (time.monotonic() - last)
                try:
                    rows = await asyncio.wait_for(sub.queue.get(), max(wait, 0.0))
                except TimeoutError:
                    rows = None
                if sub.lapped:
                    sub.lapped = False
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    yield ServerSentEvent(event="resync", data={"newest": svc.state.seq})
                    rows = None
                for row in rows or ():
                    yield ServerSentEvent(event="row", data=row, id=str(row["seq"]))
                dirty = dirty or bool(rows)
                if time.monotonic() - last >= (cfg.summary_min_gap_s if dirty else cfg.summary_every_s):
                    yield ServerSentEvent(event="summary", data=await anyio.to_thread.run_sync(locked_summary))
                    last, dirty = time.monotonic(), False
        finally:
            svc.hub.unsubscribe(sub)

    # ------------------------------------------------------------------ controls

    def control(action: str, command: int, scope: Scope, request: Request, creds, limit_id=0, value=0.0) -> dict:
        entry = svc.audit.entry(
            action=action, operator=None, address=request.client.host if request.client else None,
            instrument=scope.instrument, strategy_id=scope.strategy_id, note=scope.note,
            **({"limit": wire.enum_name(wire.LimitId, limit_id), "value": value} if limit_id else {}),
        )  # fmt: skip

        def refuse(status: int, result: str, detail: str, fd: int | None = None):
            entry.update(result=result, detail=detail)
            with svc.lock:
                svc.count_control(action, result)
            svc.audit.write(entry, fd)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            raise HTTPException(status, detail, headers=headers)

        try:
            fd = svc.audit.open()
        except AuditUnavailable as exc:
            refuse(403, "refused", str(exc))
        try:
            tokens = load_tokens(svc.settings.tokens_file)
            if not tokens:
                refuse(403, "refused", HOW_TO_CONFIGURE + "".join(f" ({p})" for p in tokens.problems), fd)
            if creds is None or creds.scheme.lower() != "bearer":
                refuse(401, "refused", "this control needs an operator token: send 'Authorization: Bearer <token>'", fd)
            operator = tokens.operator_for(creds.credentials)
            if operator is None:
                refuse(401, "refused", "the token is not valid", fd)
            entry["operator"] = operator
            iid = 0
            if scope.instrument is not None:
                if scope.instrument not in svc.registry:
                    known = ", ".join(i.symbol for i in svc.registry)
                    refuse(422, "invalid", f"instrument: {scope.instrument!r} is not in the registry ({known})", fd)
                iid = svc.registry.by_symbol(scope.instrument).id
            sent, command_id, detail = svc.sender.send(
                command, instrument_id=iid, strategy_id=scope.strategy_id, limit_id=limit_id, value=value
            )
            entry["command_id"] = command_id
            if not sent:
                refuse(503, "failed", detail, fd)
            entry.update(result="sent", detail=detail)
            with svc.lock:
                svc.count_control(action, "sent")
            svc.audit.write(entry, fd)
        finally:
            os.close(fd)
        return {"result": "sent", "action": action, "operator": operator, "command_id": command_id,
                "instrument": scope.instrument, "strategy_id": scope.strategy_id, "detail": detail}  # fmt: skip

    def add_control(action: str, command: int) -> None:
        def endpoint(scope: Scope, request: Request, creds: Auth) -> dict:
            return control(action, command, scope, request, creds)

        endpoint.__name__ = f"control_{action.replace('-', '_')}"
        endpoint.__doc__ = f"{wire.enum_name(ControlCommand, command)} through the engine's control ring."
        app.post(
            f"/api/control/{action}", response_model=ControlResult, status_code=202, responses=_CONTROL_RESPONSES,
            tags=["controls"],
        )(endpoint)  # fmt: skip

    for action, command in _ACTIONS.items():
        add_control(action, command)

    @app.post(
        "/api/control/set-limit", response_model=ControlResult, status_code=202, responses=_CONTROL_RESPONSES,
        tags=["controls"],
    )  # fmt: skip
    def control_set_limit(body: SetLimit, request: Request, creds: Auth) -> dict:
        """SET_LIMIT: one engine limit (for one instrument, or the global row) := value."""
        limit_id = getattr(wire.LimitId, body.limit)
        return control("set-limit", ControlCommand.SET_LIMIT, body, request, creds, limit_id, body.value)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence naming each bad field (``body.value: ...``)."""
    problems = "; ".join(
        f"{'.'.join(str(x) for x in e.get('loc', ())) or 'request'}: {e.get('msg', 'invalid')}" for e in exc.errors()
    )
    return JSONResponse({"detail": problems or "invalid request"}, status_code=422)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
