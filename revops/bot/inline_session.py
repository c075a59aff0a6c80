"""SQLite reads in the event loop's thread, on a connection first and an ORM Session only if asked.

A WAL reader never waits: SQLite reads a snapshot while a writer appends, so a read-only
statement takes microseconds and nothing is gained by handing it to another thread. What is
costly is the layers around it: SQLAlchemy's async session runs every call in a greenlet and
every statement through an adapter, and an ORM Session with its transaction, identity map and
instance loading costs several times the statements it runs. So `Database.reading()` on SQLite
hands out an `InlineSession`: the reading part of `AsyncSession`'s interface (the same awaitable
methods, giving the same `Result` objects), run where it is awaited, on a read-only
(`query_only`) connection whose deferred BEGIN gives the unit one snapshot.

It takes the connection at its first statement. Core statements through `rows()` run on that
connection directly; the ORM Session (for `execute`, `get`, …) is made at its first use, bound
to the same connection and so to the same snapshot.

Handlers do not know the difference; they `await session.execute(…)` either way. Writes do not
come here: the connections refuse them, and units of work that write use the async engine, whose
BEGIN IMMEDIATE may wait for another process.
"""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import Engine
from sqlalchemy.engine import Connection, Result
from sqlalchemy.orm import Session


class InlineConnection:
    """`AsyncConnection.execute` over a synchronous Connection (what `session.connection()` gives)."""

    def __init__(self, sync_connection: Connection):
        self.sync_connection = sync_connection

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Result:
        return self.sync_connection.execute(statement, parameters, **kwargs)


class InlineSession:
    """`AsyncSession`'s reading methods over a synchronous connection and Session, run where they are awaited."""

    def __init__(self, engine: Engine, sessions: Callable[..., Session]):
        self._engine = engine
        self._sessions = sessions
        self._connection: Connection | None = None
        self._session: Session | None = None

    def _connect(self) -> Connection:
        if self._connection is None:
            self._connection = self._engine.connect()
            self._connection.begin()  # deferred: the snapshot starts at the first statement
        return self._connection

    @property
    def sync_session(self) -> Session:
        if self._session is None:
            self._session = self._sessions(bind=self._connect())
        return self._session

    @property
    def bind(self):
        return self._engine

    def get_bind(self, *args: Any, **kwargs: Any):
        return self._engine

    def in_transaction(self) -> bool:
        return self._connection is not None

    async def rows(self, statement: Any, params: Any = None) -> Result:
        return self._connect().execute(statement, params)

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
        return InlineConnection(self._connect())

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.sync_session, *args, **kwargs)

    async def commit(self) -> None:
        self._end(commit=True)

    async def rollback(self) -> None:
        self._end(commit=False)

    async def close(self) -> None:
        self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        session, connection = self._session, self._connection
        self._session = self._connection = None
        try:
            if session is not None:
                session.close()
            if connection is not None and commit:
                connection.commit()
        finally:
            if connection is not None:
                connection.close()  # (rolls back what is still open)
