"""Group commit: concurrent requests that each have a little to write share one transaction.

A transaction costs far more than the few rows a typical request writes (a connection from the
pool, BEGIN, COMMIT; on SQLite one writer at a time besides), so a request with only a little to
write hands it to a `GroupCommit` and awaits the outcome. One task at a time takes what is
waiting (what arrived while the previous batch was committing, never waiting more than ~1 ms for
more) and writes it in ONE transaction (`store_batch`), then each request goes on. Alone, a
request is a batch of one.

When the batch fails for any reason other than the database being down, it is rolled back and
its items are written one at a time (`store_one`), each in its own transaction, so one bad item
does not fail the others. When the database is down, every request of the batch gets the error.

The batches of one burst run on one connection the task keeps until nothing waits: a batch does
not pay the pool's checkout and return.

Used by Stripe webhook deliveries (billing/batch.py) and by the router's recording point after a
quick read (router.py), each owning its instance (the app's lifespan, the router).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Generic, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .errors import DatabaseUnavailable

log = logging.getLogger("revops.db")

Item = TypeVar("Item")
Transaction = Callable[[], Any]  # () -> async context manager giving an AsyncSession

GATHER_SECONDS = 0.001  # the longest a batch waits for requests already being received
IDLE_TURNS = 3  # a request read in one turn of the event loop reaches `submit` two turns later


@dataclass
class _Waiting(Generic[Item]):
    item: Item
    answer: asyncio.Future


class GroupCommit(Generic[Item]):
    """The items waiting to be written, and the one task writing them batch by batch.

    Subclasses say how a batch is written in one transaction (`store_batch`, one outcome per
    item, in order) and how one item is written alone (`store_one`). The task exists only while
    there is work: started by the first item that finds none running, it gives its connection
    back and ends when nothing is waiting."""

    name = "group-commit"
    max_batch = 32  # on PostgreSQL a batch holds its rows' locks until it commits: keep it short

    def __init__(self, db, max_batch: int | None = None):
        self.db = db
        if max_batch is not None:
            self.max_batch = max_batch
        self._waiting: list[_Waiting[Item]] = []
        self._task: asyncio.Task | None = None
        self._connection: AsyncConnection | None = None

    async def aclose(self) -> None:
        """Let the batch being written finish (the app's shutdown, after its last request)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)

    async def store_batch(self, transaction: Transaction, items: list[Item]) -> list[Any]:
        raise NotImplementedError

    async def store_one(self, item: Item) -> Any:
        raise NotImplementedError

    async def submit(self, item: Item) -> Any:
        """Write `item` with whatever else is waiting; its outcome once committed (or its error)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.get_loop() is not loop:
            # The loop that ran the last batch is gone (a console or a test runs one loop per call):
            # nothing of it can be waited for any more, and its connection belonged to it.
            self._waiting, self._task, self._connection = [], None, None
        waiting = _Waiting(item, loop.create_future())
        self._waiting.append(waiting)
        if self._task is None:
            self._task = loop.create_task(self._drain(), name=self.name)
        return await waiting.answer

    async def _drain(self) -> None:
        batch: list[_Waiting[Item]] = []
        try:
            while self._waiting:
                await self._gather()
                batch = self._waiting[:self.max_batch]
                del self._waiting[:self.max_batch]
                outcomes = await self._store(batch)
                if not self._waiting:
                    await self._release()  # end of the burst: the connection is back before anyone goes on
                for waiting, outcome in zip(batch, outcomes):
                    _settle(waiting.answer, outcome)
        finally:
            self._task = None
            for waiting in batch + self._waiting:  # only when cancelled (shutdown) mid-batch
                if not waiting.answer.done():
                    waiting.answer.cancel()
            self._waiting.clear()
            await self._release()

    async def _gather(self) -> None:
        """Let requests already on their way join the batch: yield to the event loop, where
        requests whose bytes have arrived are parsed and run, for as long as that brings new
        ones, and at most GATHER_SECONDS. Nothing waits on a quiet server: a few idle turns of the
        loop and the batch goes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SECONDS
        idle = 0
        while idle < IDLE_TURNS and len(self._waiting) < self.max_batch and loop.time() < deadline:
            before = len(self._waiting)
            await asyncio.sleep(0)
            idle = idle + 1 if len(self._waiting) == before else 0

    async def _store(self, batch: list[_Waiting[Item]]) -> list[Any]:
        """Each item's outcome, or the error that kept it from being written."""
        try:
            return list(await self.store_batch(self._transaction, [w.item for w in batch]))
        except Exception as exc:
            if database_down(exc):
                return [exc] * len(batch)
            log.info("%s: a batch of %d rolled back (%s); writing its items one by one",
                     self.name, len(batch), type(exc).__name__)
            return [await self._one(w.item) for w in batch]

    async def _one(self, item: Item) -> Any:
        try:
            return await self.store_one(item)
        except Exception as exc:
            return exc

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


def database_down(exc: BaseException) -> bool:
    """The database is unreachable or lost the connection (not a bug, not bad data)."""
    return isinstance(exc, (DatabaseUnavailable, OSError, ConnectionError)) or (
        isinstance(exc, DBAPIError) and (exc.connection_invalidated or isinstance(exc, (OperationalError,
                                                                                         InterfaceError))))


def _settle(answer: asyncio.Future, outcome: Any) -> None:
    if answer.done():  # the request went away (client gone, server stopping)
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)
