"""Read-only units of work: a connection first, and an ORM session on it only if asked.

An ORM session with its transaction, identity map and instance loading costs several times the
statements a quick read runs, and on PostgreSQL every call into SQLAlchemy's async session also
pays a greenlet switch. So `Database.reading()` hands out a `ReadUnit`: the reading part of
`AsyncSession`'s interface (the same awaitable methods, giving the same `Result` objects). It takes
a connection at its first statement; Core statements through `rows()` run on that connection
directly, and the ORM session (for `execute`, `get`, …) is made at its first use, bound to the same
connection.

- SQLite (`InlineSession`): everything runs where it is awaited, in the event loop's thread, through
  a synchronous connection and Session. A WAL reader never waits (SQLite reads a snapshot while a
  writer appends), so a read-only statement takes microseconds and nothing is gained by handing it
  to another thread. The connection refuses writes (`query_only`) and its deferred BEGIN gives the
  unit one snapshot.
- PostgreSQL (`AsyncReadUnit`): an `AsyncConnection` in autocommit (under READ COMMITTED every
  statement takes its own snapshot anyway) and, if asked, an `AsyncSession` bound to it.

Handlers do not know the difference; they `await session.execute(…)` either way. Units of work
that write use `Database.transaction()`.
"""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import Engine
from sqlalchemy.engine import Connection, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session


class ReadUnit:
    """The awaitable reading interface; subclasses say how the connection and the ORM session are
    made and how a call reaches them."""

    _engine: Any
    _connection: Any = None
    _session: Any = None

    @property
    def bind(self):
        return self._engine

    def get_bind(self, *args: Any, **kwargs: Any):
        return self._engine

    def in_transaction(self) -> bool:
        return self._connection is not None

    async def rows(self, statement: Any, params: Any = None) -> Result:
        """A Core statement on the unit's connection: rows whose columns are attributes."""
        raise NotImplementedError

    async def _orm(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def execute(self, statement: Any, params: Any = None, **kwargs: Any) -> Result:
        return await self._orm("execute", statement, params, **kwargs)

    async def scalar(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        return await self._orm("scalar", statement, params, **kwargs)

    async def scalars(self, statement: Any, params: Any = None, **kwargs: Any):
        return await self._orm("scalars", statement, params, **kwargs)

    async def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        return await self._orm("get", entity, ident, **kwargs)

    async def refresh(self, instance: Any, **kwargs: Any) -> None:
        await self._orm("refresh", instance, **kwargs)

    async def commit(self) -> None:
        await self._end(commit=True)

    async def rollback(self) -> None:
        await self._end(commit=False)

    async def close(self) -> None:
        await self._end(commit=False)

    async def _end(self, *, commit: bool) -> None:
        raise NotImplementedError


class InlineConnection:
    """`AsyncConnection.execute` over a synchronous Connection (what `session.connection()` gives)."""

    def __init__(self, sync_connection: Connection):
        self.sync_connection = sync_connection

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Result:
        return self.sync_connection.execute(statement, parameters, **kwargs)


class InlineSession(ReadUnit):
    """SQLite: a synchronous connection and Session, run where they are awaited."""

    def __init__(self, engine: Engine, sessions: Callable[..., Session]):
        self._engine = engine
        self._sessions = sessions

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

    async def rows(self, statement: Any, params: Any = None) -> Result:
        return self._connect().execute(statement, params)

    async def _orm(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.sync_session, method)(*args, **kwargs)

    async def connection(self, **kwargs: Any) -> InlineConnection:
        return InlineConnection(self._connect())

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.sync_session, *args, **kwargs)

    async def _end(self, *, commit: bool) -> None:
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


class AsyncReadUnit(ReadUnit):
    """PostgreSQL: an AsyncConnection in autocommit, and an AsyncSession on it if asked."""

    def __init__(self, engine: AsyncEngine, sessions: Callable[..., AsyncSession]):
        self._engine = engine
        self._sessions = sessions

    async def connection(self, **kwargs: Any) -> AsyncConnection:
        if self._connection is None:
            self._connection = await self._engine.connect()
        return self._connection

    async def rows(self, statement: Any, params: Any = None) -> Result:
        return await (await self.connection()).execute(statement, params)

    async def _orm(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._session is None:
            self._session = self._sessions(bind=await self.connection())
        return await getattr(self._session, method)(*args, **kwargs)

    async def run_sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self._orm("run_sync", fn, *args, **kwargs)

    async def _end(self, *, commit: bool) -> None:
        session, connection = self._session, self._connection
        self._session = self._connection = None
        try:
            if session is not None:
                await session.close()
        finally:
            if connection is not None:
                await connection.close()  # autocommit: nothing is left to commit
