"""The database: an async SQLAlchemy engine for SQLite or PostgreSQL, and migrations.

SQLite has one writer at a time. Its transactions start with BEGIN IMMEDIATE (so a
writer never fails on a stale snapshot) and, inside one process, queue on an asyncio
lock taken when the transaction really begins — its first statement — and given back
when it ends: fair and immediate, where SQLite's busy handler polls with sleeps. A
unit of work that talks to Stripe or probes services before its first statement does
not hold the lock while it waits on the network.

Read-only units of work (`Database.reading()`) take no lock at all, and take a connection at their
first statement and an ORM session only if asked (inline_session.py). On SQLite they run on
connections of their own that refuse writes, in a deferred transaction (WAL readers see a
consistent snapshot and never wait on the writer), in the event loop's own thread; on PostgreSQL
on a pooled connection in autocommit.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Iterator

from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, QueuePool, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker,
                                    create_async_engine)
from sqlalchemy.orm import sessionmaker
from sqlalchemy.util import await_only

from . import sqlite_driver
from .inline_session import AsyncReadUnit, InlineSession, ReadUnit
from .errors import DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SqliteWriteLock:
    """One transaction at a time in this process; the owning task may nest."""

    def __init__(self):
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task | None = None
        self._depth = 0

    async def acquire(self) -> None:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            self._depth += 1
            return
        await self._lock.acquire()
        self._owner, self._depth = task, 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth <= 0:
            self._owner, self._depth = None, 0
            self._lock.release()


def _sqlite_engine(url: str, pragmas: tuple[str, ...], **kwargs) -> AsyncEngine:
    """aiosqlite, one trip to its thread per statement at most (sqlite_driver.py)."""
    engine: AsyncEngine

    def _connect():
        args, params = engine.dialect.create_connect_args(engine.url)
        return sqlite_driver.connect(*args, **{**params, "timeout": sqlite_driver.BUSY_TIMEOUT_S})

    engine = create_async_engine(url, async_creator=_connect, **kwargs)
    _on_sqlite_connect(engine.sync_engine, pragmas)
    return engine


def _on_sqlite_connect(engine: Engine, pragmas: tuple[str, ...]) -> None:
    """`pragmas` run on every new connection, after the ones every connection needs."""

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in (f"busy_timeout={sqlite_driver.BUSY_TIMEOUT_S * 1000}", "foreign_keys=ON", *pragmas):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()


def make_read_engine(url: str) -> Engine:
    """SQLite: a synchronous engine (inline_session.py) on connections that only read, each
    transaction a deferred BEGIN (a snapshot). Its pool never makes anyone wait: a connection
    beyond the kept ones is opened, and closed when given back."""
    engine = create_engine(make_url(url).set(drivername="sqlite"), poolclass=QueuePool, pool_size=8,
                           max_overflow=-1, connect_args={"check_same_thread": False})
    _on_sqlite_connect(engine, ("query_only=ON",))

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn):
        # Straight to the driver: through `exec_driver_sql` this BEGIN cost more than a read's statements.
        conn.connection.driver_connection.execute("BEGIN")

    return engine


def make_engine(url: str, **kwargs) -> AsyncEngine:
    if url.startswith("sqlite"):
        # Checkpoints run off the loop (sqlite_driver.py), not inside commits.
        engine = _sqlite_engine(url, pragmas=("journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0"), **kwargs)
        lock = SqliteWriteLock()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn):
            await_only(lock.acquire())
            conn.info["revops_lock"] = True
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                conn.info.pop("revops_lock", None)
                lock.release()
                raise

        def _release(conn):
            if conn.info.pop("revops_lock", False):
                lock.release()

        event.listen(engine.sync_engine, "commit", _release)
        event.listen(engine.sync_engine, "rollback", _release)
        return engine
    # Kept connections (opened as needed, kept once opened): enough for a busy web process's
    # concurrent requests, each of which holds one across its statements. Past pool_size an overflow
    # connection is closed when given back, and a new one costs a PostgreSQL backend: with 20 kept,
    # 32 concurrent requests churned connections and their p99 doubled (bench/ack_latency.py).
    # A serve process takes at most 40 of PostgreSQL's default 100; a worker a few.
    kwargs.setdefault("pool_size", 32)
    kwargs.setdefault("max_overflow", 8)
    engine = create_async_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


IDLE_PING_S = 1.0  # a pooled PostgreSQL connection unused this long is pinged before it is handed out


def _ping_when_idle(engine: AsyncEngine) -> None:
    """SQLAlchemy's `pool_pre_ping` pings every connection at every checkout: a round trip to the
    server that cost more than the statements of a quick command. Here only a connection that has
    sat in the pool for `IDLE_PING_S` is pinged (the ones a restart of the server or a dropped
    network could have broken unseen); a dead one is replaced before anyone gets it. A connection
    in steady use is not: if the server goes away under it, its statement fails, the unit of work
    answers "database unavailable", and SQLAlchemy throws away every connection of the pool made
    before the failure, so the next request starts on fresh ones."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        record.info["revops_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy):
        since = record.info.get("revops_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return  # new, or in steady use
        try:
            dbapi_conn.ping()
        except Exception as exc:  # the pool discards this connection and tries another
            raise DisconnectionError(f"pooled connection failed its ping: {type(exc).__name__}") from exc


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class UnitSession(AsyncSession):
    """The session of a unit of work that writes, with `rows()` for the hot reads (as the read units have)."""

    async def rows(self, statement, params=None):
        """A Core statement on the unit's connection: rows whose columns are attributes, without
        the ORM's identity map and instance loading (several times the cost of the statement).
        It does not flush: use it for reads, not after changes made through the ORM."""
        return await (await self.connection()).execute(statement, params)


class Database:
    """Engine plus session factory; `transaction()` is the unit of work."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=UnitSession)
        self.read_engine: Engine | AsyncEngine
        if url.startswith("sqlite"):
            read_engine = self.read_engine = make_read_engine(url)
            inline = sessionmaker(expire_on_commit=False)
            self.read_sessions = lambda: InlineSession(read_engine, inline)
        else:
            # PostgreSQL: the same pool, in autocommit. Under READ COMMITTED every statement takes its
            # own snapshot anyway, so a read-only unit of work loses nothing and saves BEGIN and COMMIT.
            read_engine = self.read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            orm = async_sessionmaker(expire_on_commit=False, class_=AsyncSession)
            self.read_sessions = lambda: AsyncReadUnit(read_engine, orm)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def transaction(self, connection: AsyncConnection | None = None):
        """One unit of work: commits once at the end, rolls back on any error. On `connection`
        when given (one the caller keeps across several units of work), else on one of the pool."""
        return self._unit(self.sessions(bind=connection) if connection is not None else self.sessions())

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[ReadUnit]:
        """A unit of work that only reads: no write lock, and on SQLite it cannot write. It takes a
        connection at its first statement, if any (a command that answers without the database,
        such as `help`, costs nothing here), and gives it back at the end."""
        unit = self.read_sessions()
        with _unavailable_as_error():
            try:
                yield unit
            finally:
                await unit.close()  # a read leaves nothing to commit

    @staticmethod
    @asynccontextmanager
    async def _unit(new_session: AsyncSession) -> AsyncIterator[AsyncSession]:
        with _unavailable_as_error():
            async with new_session as session:
                async with session.begin():
                    yield session

    async def upgrade(self) -> None:
        """Create or migrate the schema to head (idempotent)."""
        if self.url.startswith("sqlite"):
            _ensure_sqlite_dir(self.url)

        def _run(sync_conn):
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_conn
            alembic_command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            await conn.run_sync(_run)

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if isinstance(self.read_engine, Engine):
            self.read_engine.dispose()


_UNAVAILABLE = {
    # asyncpg: the server is down, restarting, or the database is gone
    "InvalidCatalogNameError", "CannotConnectNowError", "ConnectionDoesNotExistError", "ConnectionFailureError",
    "TooManyConnectionsError", "AdminShutdownError", "CrashShutdownError", "InterfaceError",
    "ConnectionRefusedError", "TimeoutError",
}


@contextmanager
def _unavailable_as_error() -> Iterator[None]:
    """A lost or unreachable database becomes `DatabaseUnavailable` (the words a user gets)."""
    try:
        yield
    except (OperationalError, DBAPIError, OSError, ConnectionError) as exc:
        if isinstance(exc, DBAPIError) and not _is_connection_error(exc):
            raise
        raise DatabaseUnavailable("the database is unavailable; nothing was changed") from exc


def _is_connection_error(exc: DBAPIError) -> bool:
    """Whether a database error means "the database is unavailable" rather than a bug or bad data."""
    if "readonly database" in str(exc):
        return False  # a write in a read-only unit of work is a bug, not an outage
    if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
        return True
    chain, cause = [], exc.orig
    while cause is not None and len(chain) < 5:  # the driver's own error hides behind an adapter's
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for err in chain:
        if {cls.__name__ for cls in type(err).__mro__} & _UNAVAILABLE or isinstance(err, (OSError, ConnectionError)):
            return True
    msg = " ".join(str(err) for err in chain).lower() or str(exc).lower()
    return any(word in msg for word in ("connection", "could not connect", "terminating", "unable to open",
                                        "server closed", "shutting down"))


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def run_upgrade(url: str) -> None:
    async def _go():
        db = Database(url)
        try:
            await db.upgrade()
        finally:
            await db.dispose()

    asyncio.run(_go())
