"""`POST /webhooks/stripe` (SPEC §3): verified, stored once, applied; 5xx only when the database is unreachable.

A direct endpoint (bot/web/direct.py): past the request id and the request guard (the body
limit), straight to `ingest`, around FastAPI's routing, which would cost a sixth of a delivery's
CPU on the event loop (bench/webhook_ingest.py).

The router carries no route, only the lifespan (merged into the app's by FastAPI) that makes the
one group commit its deliveries share (billing/batch.py) on the runtime's database, and lets its
last batch finish at shutdown."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .batch import WebhookGroupCommit
from .policy import EventPolicy
from .webhooks import ingest
from ..metrics import ACK_SECONDS, REGISTRY
from ..web.direct import Endpoint

WEBHOOKS = Counter("revops_stripe_webhooks", "Stripe webhook deliveries, by HTTP status and event status",
                   ["code", "status"], registry=REGISTRY)


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Runs inside the app's own lifespan, once app.state.runtime is started.
    services = app.state.runtime.services
    app.state.stripe_webhooks = WebhookGroupCommit(services.db, EventPolicy.from_settings(services.settings))
    try:
        yield
    finally:
        await app.state.stripe_webhooks.aclose()


router = APIRouter(lifespan=lifespan)


async def stripe_webhook(request: Request) -> Response:
    started = time.perf_counter()
    payload = await request.body()
    state = request.app.state
    answer = await ingest(state.runtime.services, payload, request.headers.get("stripe-signature"),
                          state.stripe_webhooks.submit, state.stripe_webhooks.policy)
    ACK_SECONDS.labels(kind="stripe").observe(time.perf_counter() - started)
    WEBHOOKS.labels(code=str(answer.status_code), status=str(answer.body.get("status", "refused"))).inc()
    return JSONResponse(answer.body, status_code=answer.status_code)


STRIPE_WEBHOOK = Endpoint("POST", "/webhooks/stripe", stripe_webhook)
