"""Endpoints served straight from the ASGI stack, around FastAPI's routing.

Behind FastAPI's routing, its exception middlewares, its dependency solving and its request
and response adapters, a request pays about as much again as a bare Slack ack or a Stripe
webhook's own work (py-spy of `bench/ack_latency.py` and `bench/webhook_ingest.py`: a third of a
bare bolt app's CPU per request, a sixth of a webhook delivery's on the event loop). The two
endpoints that carry load need none of it: `POST /slack/events` (bolt verifies the signature,
parses the body and answers) and `POST /webhooks/stripe` (bot/billing/routes.py). So this plain
ASGI middleware, inside the request id's and the request guard's (body limits and deadline,
security headers), hands those to their handlers and lets everything else through to FastAPI.

An `Endpoint` is a method, a path and `handle(request) -> response` (Starlette's). The core
declares Slack's; a family declares its own (`Family.endpoints`). A handler that raises is
answered as FastAPI's error middleware would: 503 with `Retry-After` when the database is
unavailable, else 500, the reason logged and never sent. Another method on one of these paths
gets 405, as a FastAPI route would answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import DatabaseUnavailable
from ..metrics import ACK_SECONDS

log = logging.getLogger("revops.web")

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str  # "POST"
    path: str  # "/webhooks/stripe"
    handle: Handler


class DirectEndpoints:
    def __init__(self, app, endpoints: Iterable[Endpoint]):
        self.app = app
        self.paths: dict[str, dict[str, Handler]] = {}
        for endpoint in endpoints:
            methods = self.paths.setdefault(endpoint.path, {})
            if endpoint.method in methods:
                raise ValueError(f"{endpoint.method} {endpoint.path} is declared twice")
            methods[endpoint.method] = endpoint.handle

    async def __call__(self, scope, receive, send):
        methods = self.paths.get(scope["path"]) if scope["type"] == "http" else None
        if methods is None:
            await self.app(scope, receive, send)
            return
        handle = methods.get(scope["method"])
        if handle is None:
            response: Response = JSONResponse({"detail": "Method Not Allowed"}, status_code=405,
                                              headers={"Allow": ", ".join(methods)})
        else:
            try:
                response = await handle(Request(scope, receive))
            except DatabaseUnavailable:
                response = JSONResponse({"error": "the database is unavailable; nothing was changed, try again shortly"},
                                        status_code=503, headers={"Retry-After": "5"})
            except Exception:  # what FastAPI's error middleware would have answered, with the reason logged
                log.exception("%s %s failed", scope["method"], scope["path"][:60])
                response = JSONResponse({"error": "internal error"}, status_code=500)
        await response(scope, receive, send)


async def slack_events(request: Request) -> Response:
    """`POST /slack/events`, straight to bolt's own Starlette adapter."""
    runtime = request.app.state.runtime
    if runtime.slack_handler is None:
        return JSONResponse({"error": "Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"},
                            status_code=503)
    started = time.perf_counter()
    try:
        return await runtime.slack_handler.handle(request)
    finally:
        ACK_SECONDS.labels(kind="slack").observe(time.perf_counter() - started)


SLACK_EVENTS = Endpoint("POST", "/slack/events", slack_events)
