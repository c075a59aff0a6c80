"""The request id: taken from `X-Request-Id` (else a new one), carried by every log line of the
request, and echoed in the response's `X-Request-Id`."""

from __future__ import annotations

import uuid

from ..logs import request_id


class RequestIdMiddleware:
    """A plain ASGI middleware, on purpose: Starlette's `@app.middleware("http")`
    (BaseHTTPMiddleware) runs every request in an extra task with memory streams, which cost
    about 0.5 ms of CPU per request, a quarter of a whole bare FastAPI request
    (bench/webhook_ingest.py)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"x-request-id"), "")
        rid = rid or uuid.uuid4().hex[:12]
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": headers + [header]}
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
