"""`POST /webhooks/stripe` (SPEC §3): verified, stored once, applied; 5xx only when the database is unreachable.

The app's lifespan (this router's, merged into the app's by FastAPI) makes the one group commit
its deliveries share (billing/batch.py) on the runtime's database, and lets its last batch
finish at shutdown."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from .batch import WebhookGroupCommit
from .policy import EventPolicy
from .webhooks import ingest
from ..metrics import ACK_SECONDS, REGISTRY

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


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request):
    started = time.perf_counter()
    payload = await request.body()
    state = request.app.state
    answer = await ingest(state.runtime.services, payload, request.headers.get("stripe-signature"),
                          state.stripe_webhooks.submit, state.stripe_webhooks.policy)
    ACK_SECONDS.labels(kind="stripe").observe(time.perf_counter() - started)
    WEBHOOKS.labels(code=str(answer.status_code), status=str(answer.body.get("status", "refused"))).inc()
    return JSONResponse(answer.body, status_code=answer.status_code)
