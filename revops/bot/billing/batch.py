"""Group commit for `POST /webhooks/stripe`: concurrent deliveries share one transaction.

A transaction costs more than applying a typical event (BEGIN, COMMIT, and on SQLite one
writer at a time), so a webhook request does not open its own: it hands its event to the
database's `GroupCommit` and awaits the result. One task at a time takes every event waiting
(those that arrived while the previous batch was committing; it never waits on purpose) and,
in ONE transaction:

    1. claims the event ids: one multi-row INSERT … ON CONFLICT DO NOTHING RETURNING id of the
       batch's event rows; an id not returned was stored before (a duplicate delivery), and a
       second delivery of an id within the batch is a duplicate too: neither is applied;
    2. applies each claimed event in arrival order (the handlers, order-safe by version);
    3. records each outcome (status and detail) on its row, in one executemany UPDATE;

then commits, and each request answers. So each event is still stored once and applied in the
same transaction in which it is stored; nobody sees the rows before the commit.

When a handler raises (or the database refuses a statement) the whole batch is rolled back and
its events go one at a time through the single-event path (`webhooks.ingest_event`), which
stores a failing event as `failed` and the others as usual. When the database is down, every
request of the batch gets the error, and answers 503 so Stripe retries.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from revops.bot.errors import DatabaseUnavailable

from . import handlers
from .models import StripeEvent
from .sqlutil import dialect_of
from .webhooks import Result, event_row, ingest_event

log = logging.getLogger("revops.webhooks")

MAX_BATCH = 32  # on PostgreSQL a batch holds its rows' locks until it commits: keep it short


@dataclass
class _Delivery:
    event: dict[str, Any]
    now: datetime
    answer: asyncio.Future


class GroupCommit:
    """The webhook deliveries waiting to be stored, and the one task storing them batch by batch.

    The task exists only while there is work: started by the first delivery that finds none
    running, it ends when nothing is waiting."""

    def __init__(self, db, max_batch: int = MAX_BATCH):
        self.db = db
        self.max_batch = max_batch
        self.loop = asyncio.get_running_loop()
        self._waiting: list[_Delivery] = []
        self._task: asyncio.Task | None = None

    async def submit(self, event: dict[str, Any], now: datetime) -> Result:
        """Store and apply one event with whatever else is waiting; its Result once committed."""
        delivery = _Delivery(event, now, self.loop.create_future())
        self._waiting.append(delivery)
        if self._task is None:
            self._task = self.loop.create_task(self._drain(), name="stripe-webhook-batches")
        return await delivery.answer

    async def _drain(self) -> None:
        batch: list[_Delivery] = []
        try:
            while self._waiting:
                batch = self._waiting[:self.max_batch]
                del self._waiting[:self.max_batch]
                await self._store(batch)
        finally:
            self._task = None
            for delivery in batch + self._waiting:  # only when cancelled (shutdown) mid-batch
                if not delivery.answer.done():
                    delivery.answer.cancel()
            self._waiting.clear()

    async def _store(self, batch: list[_Delivery]) -> None:
        if len(batch) == 1:  # nothing to share: the single-event path has fewer statements
            _settle(batch[0].answer, await _one(self.db, batch[0]))
            return
        try:
            outcomes: list[Result | BaseException] = await ingest_batch(self.db, [(d.event, d.now) for d in batch])
        except Exception as exc:
            if _database_down(exc):
                outcomes = [exc] * len(batch)
            else:
                log.info("stripe webhook batch of %d rolled back (%s); storing its events one by one",
                         len(batch), type(exc).__name__)
                outcomes = [await _one(self.db, d) for d in batch]
        for delivery, outcome in zip(batch, outcomes):
            _settle(delivery.answer, outcome)


def _database_down(exc: BaseException) -> bool:
    return isinstance(exc, (DatabaseUnavailable, OSError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


async def _one(db, delivery: _Delivery) -> Result | BaseException:
    try:
        return await ingest_event(db, delivery.event, now=delivery.now)
    except Exception as exc:
        return exc


def _settle(answer: asyncio.Future, outcome: Result | BaseException) -> None:
    if answer.done():  # the request went away (client gone, server stopping)
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


_BATCHERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def group_commit(db) -> GroupCommit:
    """The database's group commit in the running event loop (one per Database and loop)."""
    batcher = _BATCHERS.get(db)
    if batcher is None or batcher.loop is not asyncio.get_running_loop():
        batcher = _BATCHERS[db] = GroupCommit(db)
    return batcher


async def ingest_batch(db, items: list[tuple[dict[str, Any], datetime]]) -> list[Result]:
    """Store and apply several webhook events in one transaction (see the module docstring).

    Raises, with everything rolled back, when any event's handler raises or a statement fails."""
    rows: dict[str, dict[str, Any]] = {}
    for event, now in items:
        rows.setdefault(event["id"], event_row(event, source="webhook", now=now))
    results: list[Result] = []
    outcomes: list[dict[str, Any]] = []
    async with db.transaction() as session:
        claimed = await _claim(session, list(rows.values()))
        for event, now in items:
            if event["id"] not in claimed:
                results.append(Result(event["id"], False, "duplicate", "already received"))
                continue
            claimed.discard(event["id"])  # a second delivery within the batch is a duplicate
            applied = await handlers.apply(session, event, now)
            outcomes.append({"b_id": event["id"], "b_status": applied.status, "b_detail": applied.detail[:2000]})
            results.append(Result(event["id"], True, applied.status, applied.detail, applied.changed))
        if outcomes:
            await session.execute(_record_statement(), outcomes)
    return results


@lru_cache(maxsize=2)
def _claim_statement(dialect: str):
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = StripeEvent.__table__
    return insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)


async def _claim(session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the batch's event rows (one statement); the ids that were not stored before."""
    result = await session.execute(_claim_statement(dialect_of(session)), rows)
    return set(result.scalars())


@lru_cache(maxsize=1)
def _record_statement():
    table = StripeEvent.__table__
    return (update(table).where(table.c.id == bindparam("b_id"))
            .values(status=bindparam("b_status"), detail=bindparam("b_detail")))
