"""Monitored services on loopback (fast, slow, failing, redirecting, two environments
of one service at different versions), a Stripe stand-in for the reachability check,
and a log capture with no redaction (so a leak would show)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route

from tests.support.harness import SECRETS, STRIPE_KEY
from tests.support.logcapture import root_records
from tests.support.net import free_port
from tests.support.server import LiveServer


async def fast(request: Request):
    return JSONResponse({"status": "ok", "version": "2.0.0"})


async def hanging(request: Request):
    # Hangs well past any probe timeout, but lets go as soon as the prober has.
    for _ in range(100):
        if await request.is_disconnected():
            break
        await asyncio.sleep(0.05)
    return JSONResponse({"status": "late"})


async def sluggish(request: Request):
    await asyncio.sleep(0.25)
    return JSONResponse({"status": "ok"})


async def error(request: Request):
    return JSONResponse({"status": "broken", "version": "2.0.0"}, status_code=500)


async def missing(request: Request):
    return PlainTextResponse("not here", status_code=404)


async def moved(request: Request):
    return RedirectResponse("/fast", status_code=302)


async def nested(request: Request):
    return JSONResponse({"status": "ok", "build": {"commit": "abc1234"}})


async def production(request: Request):
    return JSONResponse({"status": "ok", "version": "1.4.2"})


async def staging(request: Request):
    return JSONResponse({"status": "ok", "version": "1.5.0"})


async def stripe_customers(request: Request):
    if request.headers.get("authorization") != f"Bearer {STRIPE_KEY}":
        return JSONResponse({"error": {"message": "Invalid API Key provided"}}, status_code=401)
    return JSONResponse({"object": "list", "data": [], "has_more": False})


class Services:
    def __init__(self):
        app = Starlette(routes=[
            Route("/fast", fast), Route("/hang", hanging), Route("/sluggish", sluggish), Route("/error", error),
            Route("/missing", missing), Route("/moved", moved), Route("/nested", nested),
            Route("/prod/health", production), Route("/staging/health", staging),
            Route("/v1/customers", stripe_customers),
        ])
        self.live = LiveServer(app)
        self.url = self.live.url
        self.closed = f"http://127.0.0.1:{free_port()}/health"  # nothing listens there

    def toml(self) -> str:
        """A [[services]] list covering every case, for make_settings(extra_toml=...)."""
        u = self.url
        return f"""
[health]
probe_every = "1s"

[[services]]
name = "checkout"
env = "production"
url = "{u}/fast"
timeout = "2s"
p95_slo = "1s"

[[services]]
name = "search"
env = "production"
url = "{u}/hang"
timeout = "1s"

[[services]]
name = "billing-api"
env = "production"
url = "{u}/error"
timeout = "2s"

[[services]]
name = "ledger"
env = "production"
url = "{self.closed}"
timeout = "1s"

[[services]]
name = "provider-register"
env = "production"
url = "{u}/prod/health"
timeout = "2s"
p95_slo = "1s"

[[services]]
name = "provider-register"
env = "staging"
url = "{u}/staging/health"
timeout = "2s"
p95_slo = "1s"
"""


@pytest.fixture(scope="session")
def monitored():
    server = Services()
    server.live.start()
    yield server
    server.live.stop()


@pytest.fixture
def raw_logs():
    """Every log record (any logger, DEBUG and up) exactly as written, before any redaction."""

    def raw(record: logging.LogRecord) -> str:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        return text

    with root_records(raw) as lines:
        yield lines


def assert_no_secrets(*texts: str, secrets=SECRETS) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, "a secret value leaked"
