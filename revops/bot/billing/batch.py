"""Group commit for `POST /webhooks/stripe`: concurrent deliveries share one transaction.

A transaction and its statements cost far more than applying a typical event (on SQLite one
writer at a time besides), so a webhook request does not open its own: it hands its event to
the database's `GroupCommit` and awaits the result. One task at a time takes the events waiting
(those that arrived while the previous batch was committing, never waiting more than ~1 ms for
more) and, in ONE transaction:

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

The batches of one burst run on one connection the task keeps until nothing waits: a batch
does not pay the pool's checkout and return (nor, on PostgreSQL, its pre-ping).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, AsyncIterator, Callable

from sqlalchemy import bindparam, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from revops.bot.errors import DatabaseUnavailable

from . import handlers, mirror
from .handlers import Applied
from .models import StripeEvent
from .sqlutil import insert_new
from .webhooks import Result, event_row, ingest_event

log = logging.getLogger("revops.webhooks")

MAX_BATCH = 32  # on PostgreSQL a batch holds its rows' locks until it commits: keep it short
GATHER_SECONDS = 0.001  # the longest a batch waits for deliveries already being received
IDLE_TURNS = 3  # a request read in one turn of the event loop reaches `submit` two turns later

Transaction = Callable[[], Any]  # () -> async context manager giving an AsyncSession
Item = tuple[dict[str, Any], datetime]  # an event and when it was received


@dataclass
class _Delivery:
    event: dict[str, Any]
    now: datetime
    answer: asyncio.Future


class GroupCommit:
    """The webhook deliveries waiting to be stored, and the one task storing them batch by batch.

    The task exists only while there is work: started by the first delivery that finds none
    running, it gives its connection back and ends when nothing is waiting."""

    def __init__(self, db, max_batch: int = MAX_BATCH):
        self.db = db
        self.max_batch = max_batch
        self.loop = asyncio.get_running_loop()
        self._waiting: list[_Delivery] = []
        self._task: asyncio.Task | None = None
        self._connection: AsyncConnection | None = None

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
                await self._gather()
                batch = self._waiting[:self.max_batch]
                del self._waiting[:self.max_batch]
                outcomes = await self._store(batch)
                if not self._waiting:
                    await self._release()  # end of the burst: the connection is back before anyone answers
                for delivery, outcome in zip(batch, outcomes):
                    _settle(delivery.answer, outcome)
        finally:
            self._task = None
            for delivery in batch + self._waiting:  # only when cancelled (shutdown) mid-batch
                if not delivery.answer.done():
                    delivery.answer.cancel()
            self._waiting.clear()
            await self._release()

    async def _gather(self) -> None:
        """Let deliveries already on their way join the batch: yield to the event loop, where
        requests whose bytes have arrived are parsed and verified, for as long as that brings new
        ones, and at most GATHER_SECONDS. Nothing waits on a quiet server: a few idle turns of the
        loop and the batch goes."""
        deadline = self.loop.time() + GATHER_SECONDS
        idle = 0
        while idle < IDLE_TURNS and len(self._waiting) < self.max_batch and self.loop.time() < deadline:
            before = len(self._waiting)
            await asyncio.sleep(0)
            idle = idle + 1 if len(self._waiting) == before else 0

    async def _store(self, batch: list[_Delivery]) -> list[Result | BaseException]:
        """Each delivery's Result, or the error that kept it from being stored."""
        try:
            return list(await ingest_batch(self._transaction, [(d.event, d.now) for d in batch]))
        except Exception as exc:
            if _database_down(exc):
                return [exc] * len(batch)
            log.info("stripe webhook batch of %d rolled back (%s); storing its events one by one",
                     len(batch), type(exc).__name__)
            return [await _one(self.db, d) for d in batch]

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        """A transaction on the connection this burst of batches keeps (the first batch opens it)."""
        if self._connection is None:
            try:
                self._connection = await self.db.engine.connect()
            except Exception as exc:
                raise DatabaseUnavailable("the database is unavailable; nothing was changed") from exc
        try:
            async with self.db.transaction(connection=self._connection) as session:
                yield session
        except (DatabaseUnavailable, DBAPIError, OSError):
            await self._release()  # it may be broken: the next batch opens another
            raise

    async def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


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


_GROUP_COMMITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def group_commit(db) -> GroupCommit:
    """The database's group commit in the running event loop (one per Database and loop)."""
    batcher = _GROUP_COMMITS.get(db)
    if batcher is None or batcher.loop is not asyncio.get_running_loop():
        batcher = _GROUP_COMMITS[db] = GroupCommit(db)
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
