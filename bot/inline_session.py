"""Read-only units of work: a connection first, and an ORM session on it only if asked.

An ORM session with its transaction, identity map and instance loading costs several times the
statements a quick read runs, and on PostgreSQL every call into SQLAlchemy's async session also
pays a greenlet switch. So `Database.reading()` hands out a `ReadUnit`: the reading part of
`AsyncSession`'s interface that handlers use (`execute`, `get`: awaitable, the same `Result`
objects) and `rows()`. It takes a connection at its first statement; Core statements through
`rows()` run on that connection directly, and the ORM session (for `execute`, `get`) is made at its
first use, bound to the same connection.

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
    """The reading part of `AsyncSession`'s interface that handlers use (`execute`, `get`) plus
    `rows()`; subclasses say how the connection and the ORM session are made and reached.
    `close()` ends the unit: nothing it did needs committing."""

    _connection: Any = None
    _session: Any = None

    async def rows(self, statement: Any, params: Any = None) -> Result:
        """A Core statement on the unit's connection: rows whose columns are attributes."""
        raise NotImplementedError

    async def _orm(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def execute(self, statement: Any, params: Any = None, **kwargs: Any) -> Result:
        return await self._orm("execute", statement, params, **kwargs)

    async def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        return await self._orm("get", entity, ident, **kwargs)

    async def close(self) -> None:
        raise NotImplementedError


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

    async def rows(self, statement: Any, params: Any = None) -> Result:
        return self._connect().execute(statement, params)

    async def _orm(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._session is None:
            self._session = self._sessions(bind=self._connect())
        return getattr(self._session, method)(*args, **kwargs)

    async def close(self) -> None:
        session, connection = self._session, self._connection
        self._session = self._connection = None
        try:
            if session is not None:
                session.close()
        finally:
            if connection is not None:
                connection.close()  # (ends the read transaction)


class AsyncReadUnit(ReadUnit):
    """PostgreSQL: an AsyncConnection in autocommit, and an AsyncSession on it if asked."""

    def __init__(self, engine: AsyncEngine, sessions: Callable[..., AsyncSession]):
        self._engine = engine
        self._sessions = sessions

    async def _connect(self) -> AsyncConnection:
        if self._connection is None:
            self._connection = await self._engine.connect()
        return self._connection

    async def rows(self, statement: Any, params: Any = None) -> Result:
        return await (await self._connect()).execute(statement, params)

    async def _orm(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._session is None:
            self._session = self._sessions(bind=await self._connect())
        return await getattr(self._session, method)(*args, **kwargs)

    async def close(self) -> None:
        session, connection = self._session, self._connection
        self._session = self._connection = None
        try:
            if session is not None:
                await session.close()
        finally:
            if connection is not None:
                await connection.close()  # autocommit: nothing is left to commit
