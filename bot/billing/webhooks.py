"""Stripe webhook ingest: verify `Stripe-Signature`, store each event once by id, apply it in
the same transaction, record its status.

    bad or stale signature, malformed body -> 400, nothing stored
    a duplicate delivery                    -> 200, nothing done
    stored (processed, failed or ignored)   -> 200
    could not store (database down)         -> 503, so Stripe retries

The webhook path stores the event and applies it in ONE transaction, shared with the
deliveries arriving at the same time (group commit, batch.py); alone, or when a batch has to be
undone, an event goes through `ingest_event`. A handler that raises does not lose the event:
its transaction rolls back and the event is stored as `failed` with the error, ready for
`replay failed`. Inside a command's transaction (replays, reconcile) the same is done with a
SAVEPOINT (`store_and_apply`, `reapply`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import DatabaseUnavailable

from . import handlers
from .handlers import Applied
from .models import StripeEvent
from .sqlutil import insert_ignore

log = logging.getLogger("revops.webhooks")

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
class Result:
    event_id: str
    stored: bool  # False: it was stored before (a duplicate)
    status: str  # processed | failed | ignored | duplicate
    detail: str
    changed: bool = False


def event_row(event: dict[str, Any], *, source: str, now: datetime) -> dict[str, Any]:
    obj = (event.get("data") or {}).get("object") or {}
    return dict(
        id=event["id"], type=event["type"][:100],
        created=datetime.fromtimestamp(int(event.get("created") or 0), tz=timezone.utc),
        livemode=bool(event.get("livemode")), object_id=str(obj.get("id"))[:255] if obj.get("id") else None,
        customer_id=handlers.customer_of(event), payload=event, status="processed", detail=None, error=None,
        source=source, attempts=1, received_at=now, processed_at=now,
    )


async def _apply_and_record(session: AsyncSession, event: dict[str, Any], now: datetime, *,
                            attempts_bump: bool) -> Result:
    savepoint = await session.begin_nested()
    error = None
    try:
        applied = await handlers.apply(session, event, now)
    except Exception as exc:  # a handler failure is recorded, never lost
        await savepoint.rollback()
        error = f"{type(exc).__name__}: {exc}"[:1000]
        log.warning("stripe event %s (%s) failed: %s", event["id"], event["type"], error)
        applied = Applied("failed", error)
    else:
        await savepoint.commit()
    values: dict[str, Any] = dict(status=applied.status, detail=applied.detail[:2000], error=error, processed_at=now)
    if attempts_bump:
        values["attempts"] = StripeEvent.attempts + 1
    await session.execute(update(StripeEvent).where(StripeEvent.id == event["id"]).values(**values)
                          .execution_options(synchronize_session=False))
    return Result(event["id"], True, applied.status, applied.detail, applied.changed)


async def store_and_apply(session: AsyncSession, event: dict[str, Any], *, source: str, now: datetime) -> Result:
    """Store an event unless its id is already stored, and apply it; a stored id does nothing."""
    if not await insert_ignore(session, StripeEvent, event_row(event, source=source, now=now), ["id"]):
        return Result(event["id"], False, "duplicate", "already received")
    return await _apply_and_record(session, event, now, attempts_bump=False)


async def reapply(session: AsyncSession, event: dict[str, Any], *, source: str, now: datetime) -> Result:
    """Apply an event again (replay): stores it first when it was never received."""
    if await insert_ignore(session, StripeEvent, event_row(event, source=source, now=now), ["id"]):
        return await _apply_and_record(session, event, now, attempts_bump=False)
    # Refresh the stored copy from the fetched one (same event, possibly richer), then re-apply.
    await session.execute(update(StripeEvent).where(StripeEvent.id == event["id"]).values(payload=event)
                          .execution_options(synchronize_session=False))
    return await _apply_and_record(session, event, now, attempts_bump=True)


class _Duplicate(Exception):
    """Raised inside the transaction to roll back what applying a duplicate delivery did."""


async def ingest_event(db, event: dict[str, Any], *, now: datetime) -> Result:
    """One webhook event's own unit of work (the group commit's way out when a batch fails), in as
    few round trips as possible: apply the event, then insert it with its outcome (ON CONFLICT DO
    NOTHING on the id). An id already stored means a duplicate delivery: the transaction is
    rolled back, so nothing it did stays. A handler that raises rolls the transaction back and
    the event is stored as `failed` in a second one."""
    row = event_row(event, source="webhook", now=now)
    try:
        async with db.transaction() as session:
            applied = await handlers.apply(session, event, now)
            row.update(status=applied.status, detail=applied.detail[:2000])
            if not await insert_ignore(session, StripeEvent, row, ["id"]):
                raise _Duplicate()
        return Result(event["id"], True, applied.status, applied.detail, applied.changed)
    except _Duplicate:
        return Result(event["id"], False, "duplicate", "already received")
    except (DatabaseUnavailable, OSError):
        raise
    except DBAPIError as exc:
        if not isinstance(exc, IntegrityError):
            raise
        error = f"{type(exc.orig).__name__ if exc.orig is not None else 'IntegrityError'}: {str(exc.orig)[:500]}"
    except Exception as exc:  # a handler failure is recorded, never lost
        error = f"{type(exc).__name__}: {exc}"[:1000]
    log.warning("stripe event %s (%s) failed: %s", event["id"], event["type"], error)
    row.update(status="failed", detail=error, error=error)
    async with db.transaction() as session:
        if not await insert_ignore(session, StripeEvent, row, ["id"]):
            return Result(event["id"], False, "duplicate", "already received")
    return Result(event["id"], True, "failed", error)


@dataclass
class Answer:
    status_code: int
    body: dict[str, Any]


async def ingest(services, payload: bytes, signature: str | None) -> Answer:
    """The whole of `POST /webhooks/stripe`, without the HTTP framework."""
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
    from .batch import group_commit  # the batch path builds on this module

    try:
        result = await group_commit(services.db).submit(event, now)
    except (DatabaseUnavailable, DBAPIError, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ else exc
        log.error("stripe event %s not stored: database unavailable (%s)", event["id"], type(cause).__name__)
        return Answer(503, {"error": "could not store the event; retry later"})
    except Exception:
        log.exception("stripe event %s not stored", event["id"])
        return Answer(500, {"error": "could not store the event; retry later"})
    return Answer(200, {"received": True, "id": result.event_id, "status": result.status})
