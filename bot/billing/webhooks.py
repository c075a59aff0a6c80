"""Stripe webhook ingest: verify `Stripe-Signature`, then store each event once by id and apply
it in the same transaction (events.py), and say what happened.

    bad or stale signature, malformed body -> 400, nothing stored
    a duplicate delivery                    -> 200, nothing done
    stored (processed, failed or ignored)   -> 200
    could not store (database down)         -> 503, so Stripe retries

A handler that raises does not lose the event: it is stored as `failed` with the error and
answered 200, ready for `replay failed`. Concurrent deliveries share one transaction (group
commit, batch.py): bench/webhook_ingest.py measures why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from sqlalchemy.exc import DBAPIError

from bot.errors import DatabaseUnavailable

from .events import Result

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


def parse_event(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body is not JSON") from None
    if not isinstance(event, dict):
        raise ValueError("body is not a JSON object")
    if not isinstance(event.get("id"), str) or not event["id"].startswith("evt_"):
        raise ValueError("event has no evt_ id")
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise ValueError("event has no type")
    if not isinstance(event.get("created"), int):
        raise ValueError("event has no created timestamp")
    if not isinstance(event.get("data"), dict):
        raise ValueError("event has no data")
    return event


@dataclass
class Answer:
    status_code: int
    body: dict[str, Any]


async def ingest(services, payload: bytes, signature: str | None, store: Store) -> Answer:
    """The whole of `POST /webhooks/stripe`, without the HTTP framework. `store(event, now)`
    stores and applies a verified event (bot/billing/routes.py passes the app's group commit)."""
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
        event = parse_event(payload)
    except ValueError as exc:
        return Answer(400, {"error": f"malformed event: {exc}"})
    try:
        result = await store(event, now)
    except (DatabaseUnavailable, DBAPIError, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ else exc
        log.error("stripe event %s not stored: database unavailable (%s)", event["id"], type(cause).__name__)
        return Answer(503, {"error": "could not store the event; retry later"})
    except Exception:
        log.exception("stripe event %s not stored", event["id"])
        return Answer(500, {"error": "could not store the event; retry later"})
    return Answer(200, {"received": True, "id": result.event_id, "status": result.status})
