"""`POST /webhooks/stripe` (SPEC §3): verified, stored once, applied; 5xx only when not stored."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from .webhooks import ingest
from ..metrics import ACK_SECONDS, REGISTRY

router = APIRouter()

WEBHOOKS = Counter("revops_stripe_webhooks", "Stripe webhook deliveries, by HTTP status and event status",
                   ["code", "status"], registry=REGISTRY)


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request):
    started = time.perf_counter()
    payload = await request.body()
    answer = await ingest(request.app.state.runtime.services, payload, request.headers.get("stripe-signature"))
    ACK_SECONDS.labels(kind="stripe").observe(time.perf_counter() - started)
    WEBHOOKS.labels(code=str(answer.status_code), status=str(answer.body.get("status", "refused"))).inc()
    return JSONResponse(answer.body, status_code=answer.status_code)
