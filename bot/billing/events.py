"""Stripe events stored once by id and applied: the ONE way every path does it.

`store_and_apply(session, events, source=, now=)` runs inside the caller's transaction and is
what the webhook (one delivery, or a group commit's batch of concurrent ones, batch.py),
`replay`, `replay failed` and reconcile's replay of missed events call. For its events, in one
go:

    1. claims the ids: one multi-row INSERT … ON CONFLICT DO NOTHING RETURNING id. An id not
       returned was stored before, and a second delivery of an id among `events` is not applied
       either: both answer "duplicate". With `again=True` (a replay) a stored event is applied
       again all the same — handlers are idempotent, so that changes nothing twice — its
       stored payload refreshed from this copy and its attempts counted;
    2. applies them in order, as if each were under a SAVEPOINT of its own: a handler that
       raises rolls back only what it did, and its event is stored as `failed` with the error
       (answered 200: Stripe would only send it again to fail again; `replay failed` is the
       way back);
    3. records each outcome (status, detail, error) where it differs from the row claimed.

Nobody sees an event's row before the transaction commits, and then with its outcome. When the
database is unavailable it raises (the webhook answers 503, so Stripe retries).

Cheaper than it reads, because a transaction's statements are what a delivery costs (on SQLite
each is several trips to aiosqlite's thread, behind the one writer; on PostgreSQL a round
trip): several events share one SAVEPOINT first, and only if a handler raises is it rolled back
and each event applied again under its own (the group commit, whose transaction holds nothing
else, skips even that one: `isolate=False`). The `*.created` events at the head of `events` insert
their objects together (`mirror.create_all`: one INSERT per table), and their rows are claimed
with the outcome they will have ("added to the mirror"), so nothing is updated afterwards; when
one of those objects exists already, the shared savepoint is rolled back and every event goes
through its handler.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.groupcommit import database_down

from . import fetch, handlers, lineage, mirror, payments
from .handlers import Applied
from .intake import REVOPS, created_time, plausible, safe_id
from .models import StripeEvent
from .policy import ACCEPT_ALL, EventPolicy, event_account, is_thin
from .sqlutil import insert_new

log = logging.getLogger("revops.webhooks")


@dataclass
class Result:
    event_id: str
    stored: bool  # False: it was stored before (a duplicate)
    status: str  # processed | failed | ignored | duplicate
    detail: str
    changed: bool = False


def event_row(event: dict[str, Any], *, source: str, now: datetime) -> dict[str, Any]:
    """The event's row as stored when it is first received (its outcome recorded afterwards).
    Every column fits whatever the payload holds (intake.py made the payload storable)."""
    obj = fetch.snapshot(event)
    created = created_time(event.get("created"))
    if is_thin(event):
        related = event.get("related_object") if isinstance(event.get("related_object"), dict) else {}
        object_id = related.get("id")
    else:
        object_id = obj.get("id")
    version = event.get("api_version")
    return dict(
        id=safe_id(str(event["id"])), type=str(event["type"])[:100],
        created=created if plausible(created, now) else now,
        livemode=bool(event.get("livemode")), object_id=str(object_id)[:255] if object_id else None,
        customer_id=handlers.customer_of(event), api_version=str(version)[:64] if version else None,
        account=event_account(event), payload=event, status="processed", detail=None, error=None,
        source=source, attempts=1, received_at=now, processed_at=now,
    )


async def store_and_apply(session: AsyncSession, events: list[dict[str, Any]], *, source: str, now: datetime,
                          again: bool = False, isolate: bool = True,
                          policy: EventPolicy = ACCEPT_ALL) -> list[Result]:
    """Store each event once by id and apply it (see the module docstring); one Result per
    event, in order. Raises, for the caller to roll back, when the database is unavailable or
    refuses a statement outside a handler.

    `isolate=False` is for a caller whose transaction holds nothing else and which stores the
    events again one at a time when it fails (the webhook's group commit, batch.py): its
    transaction then stands in for the shared savepoint, and a handler that raises (or a
    creation whose object exists already) raises here.

    `policy` (policy.py: the key's mode, the connected accounts, the pinned version) decides
    which events the mirror takes; every caller passes `EventPolicy.from_settings(settings)`."""
    rows: dict[str, dict[str, Any]] = {}  # event id -> its claimed row, as first delivered
    for event in events:
        if event["id"] not in rows:
            rows[event["id"]] = _claim_row(event, source, now, policy)
    claimed = await insert_new(session, StripeEvent, list(rows.values()), ["id"]) if rows else set()
    to_apply = [row["payload"] for event_id, row in rows.items() if event_id in claimed or again]
    outcomes: dict[str, Result] = {}
    fresh, stored = [], []
    for event, (applied, error) in zip(to_apply, await _apply_all(session, to_apply, now, isolate, policy)):
        event_id, row = event["id"], rows[event["id"]]
        outcomes[event_id] = Result(event_id, True, applied.status, applied.detail, applied.changed)
        error = error or applied.error
        outcome = dict(b_id=event_id, b_status=applied.status, b_detail=applied.detail[:2000],
                       b_error=error[:1000] if error else None)
        if event_id not in claimed:
            stored.append({**outcome, "b_payload": event, "b_now": now})
        elif (outcome["b_status"], outcome["b_detail"], error) != (row["status"], row["detail"], row["error"]):
            fresh.append(outcome)
    if fresh:
        await session.execute(_record_statement(again=False), fresh)
    if stored:
        await session.execute(_record_statement(again=True), stored)
    if policy.invariants:  # finance lineage: every applied event checked, in this transaction
        await lineage.check_applied(session, [event for event in to_apply if outcomes[event["id"]].status == "processed"],
                                    now=now, policy=policy)
    results, answered = [], set()
    for event in events:
        outcome = outcomes.get(event["id"]) if event["id"] not in answered else None
        answered.add(event["id"])
        results.append(outcome or Result(event["id"], False, "duplicate", "already received"))
    return results


def _claim_row(event: dict[str, Any], source: str, now: datetime, policy: EventPolicy) -> dict[str, Any]:
    """The event's row; a creation's with the outcome it will have when its object is new."""
    row = event_row(event, source=source, now=now)
    creation = handlers.creation(event, now, policy)
    if creation is not None:
        outcome = handlers.created(creation)
        row.update(status=outcome.status, detail=outcome.detail[:2000])
    return row


async def _apply_all(session: AsyncSession, events: list[dict[str, Any]], now: datetime,
                     isolate: bool, policy: EventPolicy) -> list[tuple[Applied, str | None]]:
    """Each event's outcome and error, applied in order as if each were under its own SAVEPOINT
    (or, not isolated, all together: anything that raises is the caller's to undo)."""
    if not isolate:
        return [(outcome, None) for outcome in await _apply_together(session, events, now, policy)]
    if len(events) > 1:
        savepoint = await session.begin_nested()
        try:
            applied = await _apply_together(session, events, now, policy)
        except Exception as exc:  # a handler raised, or a creation's object exists already
            if database_down(exc):
                raise
            await savepoint.rollback()
        else:
            await savepoint.commit()
            return [(outcome, None) for outcome in applied]
    return [await _apply_one(session, event, now, policy) for event in events]


async def _apply_together(session: AsyncSession, events: list[dict[str, Any]], now: datetime,
                          policy: EventPolicy) -> list[Applied]:
    """The leading creations inserted together, then the others through their handlers; raises
    (mirror.NotNew, or whatever a handler raises) for the caller to roll back."""
    leading = _leading_creations(events, now, policy)
    if len(leading) > 1:
        await mirror.create_all(session, leading)
        for row in leading:
            if row.kind == "invoice":  # refunds of its payments that arrived before it
                await payments.refresh_invoice(session, row.object_id, now)
    else:
        leading = []
    return [handlers.created(row) for row in leading] + [
        await handlers.apply(session, event, now, policy) for event in events[len(leading):]]


def _leading_creations(events: list[dict[str, Any]], now: datetime, policy: EventPolicy) -> list[mirror.MirrorRow]:
    """The `*.created` events before any other, each about a different object. Only those: an
    event before them could touch what they create, and would then see it created too early."""
    leading, objects = [], set()
    for event in events:
        row = handlers.creation(event, now, policy)
        if row is None or (row.kind, row.object_id) in objects:
            break
        objects.add((row.kind, row.object_id))
        leading.append(row)
    return leading


async def _apply_one(session: AsyncSession, event: dict[str, Any], now: datetime,
                     policy: EventPolicy) -> tuple[Applied, str | None]:
    """Apply one event under a SAVEPOINT; a handler's failure is its outcome, never lost."""
    savepoint = await session.begin_nested()
    try:
        applied = await handlers.apply(session, event, now, policy)
    except Exception as exc:
        if database_down(exc):
            raise
        await savepoint.rollback()
        error = f"{type(exc).__name__}: {exc}"[:1000].replace("\x00", "\ufffd")
        log.warning("stripe event %s (%s) failed: %s", event["id"], event["type"], error)
        return Applied("failed", error), error
    await savepoint.commit()
    return applied, None


@lru_cache(maxsize=2)
def _record_statement(*, again: bool):
    table = StripeEvent.__table__
    values: dict[str, Any] = dict(status=bindparam("b_status"), detail=bindparam("b_detail"),
                                  error=bindparam("b_error"))
    if again:
        values.update(payload=bindparam("b_payload", type_=table.c.payload.type), attempts=table.c.attempts + 1,
                      processed_at=bindparam("b_now", type_=table.c.processed_at.type))
    return update(table).where(table.c.id == bindparam("b_id")).values(**values)


async def store_alone(db, event: dict[str, Any], now: datetime, policy: EventPolicy | None = ACCEPT_ALL) -> Result:
    """One webhook delivery in a transaction of its own."""
    async with db.transaction() as session:
        [result] = await store_and_apply(session, [event], source="webhook", now=now, policy=policy or ACCEPT_ALL)
    return result


async def store_refused(db, event: dict[str, Any], now: datetime, reason: str) -> Result:
    """The last resort for a delivery the database refused to store as it is (and not because it
    is down): a row with the event's id, type and times and the reason, its payload only the
    essentials, stored as `failed` so Stripe stops retrying and `replay` can try again."""
    essentials = {key: event.get(key) for key in ("id", "object", "type", "created", "livemode", "api_version")
                  if isinstance(event.get(key), (str, int, bool))}
    essentials = {key: value.encode("ascii", "replace").decode()[:255] if isinstance(value, str) else value
                  for key, value in essentials.items()}
    essentials["id"] = safe_id(str(event.get("id") or "evt_unidentified"))
    essentials["type"] = str(essentials.get("type") or "unknown")[:100]
    essentials[REVOPS] = {"problem": reason}
    row = event_row(essentials, source="webhook", now=now)
    row.update(status="failed", detail=reason[:2000], error=reason[:1000])
    async with db.transaction() as session:
        claimed = await insert_new(session, StripeEvent, [row], ["id"])
    if not claimed:
        return Result(row["id"], False, "duplicate", "already received")
    return Result(row["id"], True, "failed", reason)
