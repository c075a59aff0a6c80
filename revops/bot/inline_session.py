"""SQLite reads in the event loop's thread, through a synchronous SQLAlchemy Session.

A WAL reader never waits: SQLite reads a snapshot while a writer appends, so a read-only
statement takes microseconds and nothing is gained by handing it to another thread. What is
costly is the asyncio layer around it: SQLAlchemy's async session runs every call in a greenlet
and every statement through an adapter, about three times the cost of the same unit of work in a
plain Session (bench/ack_latency.py). So `Database.reading()` on SQLite hands out an
`InlineSession`: the reading part of `AsyncSession`'s interface (the same awaitable methods,
giving the same `Result` objects) over a synchronous Session on read-only connections.

Handlers do not know the difference; they `await session.execute(…)` either way. Writes do not
come here: the connections refuse them (`PRAGMA query_only`), and units of work that write use
the async engine, whose BEGIN IMMEDIATE may wait for another process.
"""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy.engine import Connection, Result
from sqlalchemy.orm import Session


class InlineConnection:
    """`AsyncConnection.execute` over a synchronous Connection (what `session.connection()` gives)."""

    def __init__(self, sync_connection: Connection):
        self.sync_connection = sync_connection

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Result:
        return self.sync_connection.execute(statement, parameters, **kwargs)


class InlineSession:
    """`AsyncSession`'s reading methods over a synchronous Session, run where they are awaited."""

    def __init__(self, sync_session: Session):
        self.sync_session = sync_session

    @property
    def bind(self):
        return self.sync_session.bind

    def get_bind(self, *args: Any, **kwargs: Any):
        return self.sync_session.get_bind(*args, **kwargs)

    def in_transaction(self) -> bool:
        return self.sync_session.in_transaction()

    async def execute(self, statement: Any, params: Any = None, **kwargs: Any) -> Result:
        return self.sync_session.execute(statement, params, **kwargs)

    async def scalar(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        return self.sync_session.scalar(statement, params, **kwargs)

    async def scalars(self, statement: Any, params: Any = None, **kwargs: Any):
        return self.sync_session.scalars(statement, params, **kwargs)

    async def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        return self.sync_session.get(entity, ident, **kwargs)

    async def refresh(self, instance: Any, **kwargs: Any) -> None:
        self.sync_session.refresh(instance, **kwargs)

    def expire(self, instance: Any, attribute_names: Any = None) -> None:
        self.sync_session.expire(instance, attribute_names)

    async def connection(self, **kwargs: Any) -> InlineConnection:
        return InlineConnection(self.sync_session.connection(**kwargs))

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.sync_session, *args, **kwargs)

    async def commit(self) -> None:
        self.sync_session.commit()

    async def rollback(self) -> None:
        self.sync_session.rollback()

    async def close(self) -> None:
        self.sync_session.close()
