"""Stripe webhook ingest: verify `Stripe-Signature`, then store each event once by id and apply
it in the same transaction (events.py), and say what happened.

    bad or stale signature                  -> 400, nothing stored
    a body that is not JSON (not an object) -> 400, nothing stored
    a duplicate delivery                    -> 200, nothing done
    stored (processed, failed or ignored)   -> 200
    could not store (database unreachable)  -> 503, so Stripe retries

Nothing else gets an error: a signed event that cannot be taken as it is (intake.py: NUL
characters, an id over 255 characters, a `created` no clock can hold, JSON nested too deep, no
id or type), one whose handler raises, one the database refuses to store as it is, is stored as
`failed` with the reason and answered 200 — Stripe would only retry a poison event for three
days; `replay` tries again after a fix. Thin events (`v2.core.event`, Stripe's ping) are stored
and applied or ignored with the reason like any other. What a handler needs from Stripe
(fetch.py) is fetched before the transaction. Concurrent deliveries share one transaction
(group commit, batch.py): bench/webhook_ingest.py measures why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from bot.errors import DatabaseUnavailable
from bot.groupcommit import database_down

from .events import Result, store_refused
from .fetch import prepare
from .intake import read_event
from .policy import ACCEPT_ALL, EventPolicy

log = logging.getLogger("revops.webhooks")

Store = Callable[[dict[str, Any], datetime], Awaitable[Result]]

TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """The request is not provably from Stripe (missing, malformed, wrong or stale signature)."""


def sign_payload(secret: str, payload: bytes | str, timestamp: int) -> str:
    """A `Stripe-Signature` header value, made as Stripe makes it (tests, benchmarks, synthetic events)."""
    body = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(payload: bytes, header: str | None, secret: str, *, now: float,
                     tolerance: int = TOLERANCE_SECONDS) -> None:
    if not header:
        raise SignatureError("no Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed timestamp in Stripe-Signature") from None
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("Stripe-Signature has no timestamp or no v1 signature")
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise SignatureError("signature does not match")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"timestamp outside the {tolerance} s tolerance")


@dataclass
class Answer:
    status_code: int
    body: dict[str, Any]


async def ingest(services, payload: bytes, signature: str | None, store: Store,
                 policy: EventPolicy = ACCEPT_ALL) -> Answer:
    """The whole of `POST /webhooks/stripe`, without the HTTP framework. `store(event, now)`
    stores and applies a verified event (bot/billing/routes.py passes the app's group commit,
    and the policy it applies events under)."""
    secret = services.settings.env.stripe_webhook_secret
    if secret is None:
        return Answer(503, {"error": "STRIPE_WEBHOOK_SECRET is not set; the bot cannot verify Stripe webhooks"})
    now = services.clock.now()
    try:
        verify_signature(payload, signature, secret.get_secret_value(), now=now.timestamp())
    except SignatureError as exc:
        log.info("stripe webhook refused: %s", exc)
        return Answer(400, {"error": f"bad signature: {exc}"})
    try:
        event = read_event(payload, now)  # ValueError only when the body is not JSON
    except ValueError as exc:
        return Answer(400, {"error": f"malformed event: {exc}"})
    event = await prepare(services.stripe, event, policy)  # before the transaction: no network inside it
    try:
        result = await store(event, now)
    except Exception as exc:
        if database_down(exc):
            cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ else exc
            log.error("stripe event %s not stored: database unavailable (%s)", event["id"], type(cause).__name__)
            return Answer(503, {"error": "could not store the event; retry later"})
        result = await _store_refused(services, event, now, exc)
        if result is None:
            return Answer(503, {"error": "could not store the event; retry later"})
    return Answer(200, {"received": True, "id": result.event_id, "status": result.status})


async def _store_refused(services, event: dict[str, Any], now: datetime, exc: Exception) -> Result | None:
    """The database refused the event as it is: its essentials stored as failed (None if even that fails)."""
    reason = f"the database refused to store the event as it is ({type(exc).__name__}); stored as failed, not applied"
    log.warning("stripe event %s: %s", str(event.get("id"))[:80], reason)
    try:
        return await store_refused(services.db, event, now, reason)
    except Exception:
        log.exception("stripe event %s could not be stored even as failed", str(event.get("id"))[:80])
        return None
