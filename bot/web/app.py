"""The FastAPI app factory: the core's endpoints plus every family's routes."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..clock import Clock
from ..db import head_revision
from ..errors import DatabaseUnavailable
from ..family import Families
from ..flags import read_flags
from ..metrics import render
from ..outbox import Sender
from ..runtime import Runtime
from ..settings import Settings
from .auth import require_bearer
from .guard import ConnectionGuard, HttpLimits, RequestGuard
from .request_id import RequestIdMiddleware
from .direct import SLACK_EVENTS, DirectEndpoints


def create_app(settings: Settings, families: Families, *, clock: Clock | None = None,
               sender: Sender | None = None, with_worker: bool | None = None,
               delivers: bool | None = None) -> FastAPI:
    if with_worker is None:
        with_worker = settings.env.revops_worker_in_serve
    if delivers is None:  # `revops serve` passes settings.serve_delivers; an embedded app delivers unless told
        delivers = settings.env.revops_serve_delivers is not False

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = Runtime(settings, families, clock=clock, sender=sender, with_worker=with_worker,
                          delivers=delivers)
        await runtime.start()
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="revops", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    # Plain ASGI middlewares (BaseHTTPMiddleware costs ~0.5 ms a request); the last added is outermost.
    # POST /slack/events straight to bolt, POST /webhooks/stripe to billing's ingest (direct.py)
    app.add_middleware(DirectEndpoints, endpoints=(SLACK_EVENTS, *families.endpoints))
    # Body limits and deadline, malformed Slack requests, security headers; its ConnectionGuard is
    # also the protocol `serve` gives uvicorn (header timeouts, the connection bound): guard.py.
    connections = ConnectionGuard(HttpLimits.from_settings(settings.env))
    app.state.connection_guard = connections
    secret = settings.env.slack_signing_secret
    app.add_middleware(RequestGuard, guard=connections,
                       signing_secret=lambda: secret.get_secret_value() if secret is not None else None)
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(DatabaseUnavailable)
    async def database_unavailable(request: Request, exc: DatabaseUnavailable):
        # /flags, the pages, /alerts...: the database is down, in words, and a status a caller retries on.
        return JSONResponse({"error": "the database is unavailable; nothing was changed, try again shortly"},
                            status_code=503, headers={"Retry-After": "5"})

    for route in families.routes:  # the incident pages, POST /alerts, GET /exports/{id}.csv...
        app.include_router(route)

    @app.get("/flags")
    async def flags(request: Request):
        runtime: Runtime = request.app.state.runtime
        require_bearer(request, settings.env.revops_admin_api_key)
        async with runtime.services.db.transaction() as session:
            state = await read_flags(session)
        return state.as_json()

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    @app.get("/readyz")
    async def readyz(request: Request):
        runtime: Runtime = request.app.state.runtime
        head = head_revision()
        try:
            current = await runtime.services.db.current_revision()
        except Exception as exc:  # the database itself is unreachable
            return JSONResponse({"ready": False, "database": f"unreachable ({type(exc).__name__})",
                                 "error": "the database is unavailable"}, status_code=503)
        if current != head:
            return JSONResponse({"ready": False, "database": "reachable", "migrations": f"at {current}, head is {head}"},
                                status_code=503)
        return {"ready": True, "database": "reachable", "migrations": f"at head ({head})"}

    @app.get("/metrics")
    async def metrics():
        return Response(render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
