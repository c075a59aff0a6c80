"""Group commit for `POST /webhooks/stripe`: concurrent deliveries share one transaction.

A transaction and its statements cost far more than applying a typical event (on SQLite one
writer at a time besides), so a webhook request does not open its own: it hands its event to
the database's `WebhookGroupCommit` (the batching itself is bot/groupcommit.py) and
awaits the result. One task at a time takes the events waiting and, in ONE transaction:

    1. claims the event ids: one multi-row INSERT … ON CONFLICT DO NOTHING RETURNING id of the
       batch's event rows. An id not returned was stored before (a duplicate delivery), and so
       is a second delivery of an id within the batch: neither is applied;
    2. applies the claimed events in arrival order. The `*.created` events at the head of the
       batch are inserted together (`mirror.create_all`: one INSERT per table), the others go
       through their handler one by one;
    3. records each outcome (status, detail) that differs from the one its row was claimed with
       (a creation's row is claimed as "added to the mirror"), in one executemany UPDATE;

then commits, and each request answers. Each event is thus stored once and applied in the same
transaction in which it is stored; nobody sees its row before the commit.

Exceptions: when one of those `*.created` objects exists already, the batch is rolled back and
done again with every event through its handler. When a handler raises (or the database refuses
a statement), the batch is rolled back and its events go one at a time through the single-event
path (`webhooks.ingest_event`), which stores a failing event as `failed` and the others as
usual. When the database is down, every request of the batch gets the error and answers 503, so
Stripe retries.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.groupcommit import GroupCommit, Transaction

from . import handlers, mirror
from .handlers import Applied
from .models import StripeEvent
from .sqlutil import insert_new
from .webhooks import Result, event_row, ingest_event


Item = tuple[dict[str, Any], datetime]  # an event and when it was received


class WebhookGroupCommit(GroupCommit[Item]):
    """The webhook deliveries waiting to be stored, and the one task storing them batch by batch."""

    name = "stripe-webhook-batches"

    async def submit(self, event: dict[str, Any], now: datetime) -> Result:  # type: ignore[override]
        """Store and apply one event with whatever else is waiting; its Result once committed."""
        return await super().submit((event, now))

    async def store_batch(self, transaction: Transaction, items: list[Item]) -> list[Result]:
        return await ingest_batch(transaction, items)

    async def store_one(self, item: Item) -> Result:
        event, now = item
        return await ingest_event(self.db, event, now=now)


_GROUP_COMMITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def group_commit(db) -> WebhookGroupCommit:
    """The database's webhook group commit in the running event loop (one per Database and loop)."""
    batcher = _GROUP_COMMITS.get(db)
    if batcher is None or batcher.loop is not asyncio.get_running_loop():
        batcher = _GROUP_COMMITS[db] = WebhookGroupCommit(db)
    return batcher


# -- one batch, one transaction ------------------------------------------------------------------------


async def ingest_batch(transaction: Transaction, items: list[Item], *, together: bool = True) -> list[Result]:
    """Store and apply several webhook events in ONE transaction (see the module docstring);
    `transaction()` opens it. One Result per item, in order.

    Raises, everything rolled back, when a handler raises or a statement fails."""
    rows: dict[str, dict[str, Any]] = {}  # event id -> its row, as first delivered in the batch
    for event, now in items:
        rows.setdefault(event["id"], _claim_row(event, now))
    try:
        async with transaction() as session:
            claimed = await insert_new(session, StripeEvent, list(rows.values()), ["id"])
            fresh = [(event, now) for event, now in _first_deliveries(items) if event["id"] in claimed]
            applied = await _apply(session, fresh, together)
            await _record(session, rows, applied)
    except mirror.NotNew:
        return await ingest_batch(transaction, items, together=False)
    results, answered = [], set()
    for event, _ in items:
        outcome = applied.get(event["id"]) if event["id"] not in answered else None
        answered.add(event["id"])
        results.append(Result(event["id"], False, "duplicate", "already received") if outcome is None else
                       Result(event["id"], True, outcome.status, outcome.detail, outcome.changed))
    return results


def _claim_row(event: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The event's row; a creation's with the outcome it will have, so it need not be updated."""
    row = event_row(event, source="webhook", now=now)
    creation = handlers.creation(event, now)
    if creation is not None:
        outcome = handlers.created(creation)
        row.update(status=outcome.status, detail=outcome.detail)
    return row


def _first_deliveries(items: list[Item]) -> list[Item]:
    seen: set[str] = set()
    firsts = []
    for event, now in items:
        if event["id"] not in seen:
            seen.add(event["id"])
            firsts.append((event, now))
    return firsts


async def _apply(session: AsyncSession, fresh: list[Item], together: bool) -> dict[str, Applied]:
    """Apply the claimed events in order: the leading creations together, the others one by one."""
    applied: dict[str, Applied] = {}
    leading = _leading_creations(fresh) if together else []
    if len(leading) > 1:
        await mirror.create_all(session, [row for _, row in leading])
        applied.update((event["id"], handlers.created(row)) for event, row in leading)
    for event, now in fresh:
        if event["id"] not in applied:
            applied[event["id"]] = await handlers.apply(session, event, now)
    return applied


def _leading_creations(fresh: list[Item]) -> list[tuple[dict[str, Any], mirror.MirrorRow]]:
    """The `*.created` events before any other, each about a different object. Only those: an
    event before them could touch what they create, and would then see it created too early."""
    leading, objects = [], set()
    for event, now in fresh:
        row = handlers.creation(event, now)
        if row is None or (row.kind, row.object_id) in objects:
            break
        objects.add((row.kind, row.object_id))
        leading.append((event, row))
    return leading


async def _record(session: AsyncSession, rows: dict[str, dict[str, Any]], applied: dict[str, Applied]) -> None:
    """Set each applied event's status and detail where they differ from its claimed row."""
    changed = [{"b_id": event_id, "b_status": outcome.status, "b_detail": outcome.detail[:2000]}
               for event_id, outcome in applied.items()
               if (outcome.status, outcome.detail[:2000]) != (rows[event_id]["status"], rows[event_id]["detail"])]
    if changed:
        await session.execute(_record_statement(), changed)


@lru_cache(maxsize=1)
def _record_statement():
    table = StripeEvent.__table__
    return (update(table).where(table.c.id == bindparam("b_id"))
            .values(status=bindparam("b_status"), detail=bindparam("b_detail")))
