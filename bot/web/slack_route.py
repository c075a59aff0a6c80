"""`POST /slack/events` straight from the ASGI stack to bolt.

Behind FastAPI's routing, its dependency solving and its exception middleware, a request pays
about as much again as bolt itself costs (py-spy of `bench/ack_latency.py`: a third of a bare
bolt app's CPU per request). Slack's endpoint needs none of it: bolt verifies the signature,
parses the body and answers. So this plain ASGI middleware, inside the request id's, hands that
one path to bolt's own Starlette adapter and lets everything else through to FastAPI.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..metrics import ACK_SECONDS

log = logging.getLogger("revops.web")

PATH = "/slack/events"


class SlackEventsRoute:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        runtime = scope["app"].state.runtime
        if runtime.slack_handler is None:
            response = JSONResponse(
                {"error": "Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"}, status_code=503)
        else:
            started = time.perf_counter()
            try:
                response = await runtime.slack_handler.handle(Request(scope, receive))
            except Exception:  # what FastAPI's error middleware would have answered, with the reason logged
                log.exception("Slack request failed")
                response = JSONResponse({"error": "internal error"}, status_code=500)
            ACK_SECONDS.labels(kind="slack").observe(time.perf_counter() - started)
        await response(scope, receive, send)
