"""The database: an async SQLAlchemy engine for SQLite or PostgreSQL, and migrations.

Two kinds of unit of work, both stock `AsyncSession`s (`UnitSession`, with `rows()` for hot reads):

- `Database.transaction()` writes. It begins at its first statement, not when it is opened, so a
  handler that calls Stripe or probes services before touching the session holds nothing while it
  waits on the network. On SQLite it is `BEGIN IMMEDIATE` (a writer never fails on a stale
  snapshot) and, inside one process, queues on an asyncio lock taken at that BEGIN and given back
  at COMMIT or ROLLBACK: fair and immediate, where SQLite's busy handler polls with sleeps
  (`busy_timeout` still covers other processes). No network call may run while the current task
  holds one: `assert_no_write_transaction()` (the Stripe gateway and the health probes call it)
  fails loudly when one does.
- `Database.reading()` only reads, takes no write lock and cannot write. On SQLite it runs on a
  second stock aiosqlite engine whose connections are `query_only`, each unit one deferred BEGIN
  (a WAL snapshot: readers never wait on the writer, nor it on them); on PostgreSQL on the same
  pool in autocommit (under READ COMMITTED each statement takes its own snapshot anyway).

SQLite is durable by default: WAL with `synchronous=FULL` (a commit is on disk before it returns,
so what was answered 200 survives a power cut) and SQLite's own automatic checkpoints.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, insert, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from . import sqlite_rows
from .errors import DatabaseUnavailable, exception_chain

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

BUSY_TIMEOUT_MS = 30_000  # how long a SQLite writer waits for another process's write lock
MIGRATION_LOCK_KEY = 0x7265766F7073  # "revops": the PostgreSQL advisory lock migrations run under
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", f"busy_timeout={BUSY_TIMEOUT_MS}")
READ_ONLY = "revops_read_only"  # execution option of the PostgreSQL read units' engine
# SQLite connections kept per engine (each is an aiosqlite thread, idle when unused), as many as a
# busy web process's concurrent requests: past them an overflow connection is opened and closed
# again for each unit of work, and at concurrency 32 that churn doubled the reads' p99.
SQLITE_POOL = dict(pool_size=32, max_overflow=8)


class NetworkInWriteTransaction(RuntimeError):
    """A programming error: a network call while this task holds a write transaction open."""


# Tasks that hold a write transaction of a `Database` of this process open, with how many.
_writing: "weakref.WeakKeyDictionary[asyncio.Task, int]" = weakref.WeakKeyDictionary()


def in_write_transaction() -> bool:
    task = asyncio.current_task()
    return task is not None and _writing.get(task, 0) > 0


def assert_no_write_transaction(what: str) -> None:
    """Called before a network call: the unit of work that writes must not wait on the network
    (on SQLite every other writer of the process would wait behind it)."""
    if in_write_transaction():
        raise NetworkInWriteTransaction(
            f"{what} inside a write transaction: do the network call before the unit of work's first "
            "statement (or in a read unit), then write")


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


def _sqlite_connections(engine: AsyncEngine, *pragmas: str) -> None:
    """Every new connection: SQLAlchemy, not the driver, emits BEGIN (SQLAlchemy's documented
    recipe for pysqlite/aiosqlite), then the pragmas."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (*SQLITE_PRAGMAS, *pragmas):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()


def _track_writes(engine: AsyncEngine, lock: SqliteWriteLock | None) -> None:
    """At a write transaction's BEGIN: take the process's SQLite write lock (through the driver
    connection's public `run_async`) and `BEGIN IMMEDIATE`; note the task as writing. At its
    COMMIT or ROLLBACK: give both back. Units of the read-only engine options are left alone."""

    held: "weakref.WeakKeyDictionary[Connection, asyncio.Task | None]" = weakref.WeakKeyDictionary()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn):
        if conn.get_execution_options().get(READ_ONLY):
            return
        if lock is not None:
            conn.connection.dbapi_connection.run_async(lambda _driver: lock.acquire())
            try:
                _begin_sqlite(conn, "BEGIN IMMEDIATE")
            except BaseException:
                lock.release()
                raise
        task = asyncio.current_task()
        held[conn] = task
        if task is not None:
            _writing[task] = _writing.get(task, 0) + 1

    def _end(conn):
        if conn not in held:
            return
        task = held.pop(conn)
        if task is not None:
            left = _writing.get(task, 1) - 1
            if left > 0:
                _writing[task] = left
            else:
                _writing.pop(task, None)
        if lock is not None:
            lock.release()

    if lock is None:
        event.listen(engine.sync_engine, "commit", _end)
        event.listen(engine.sync_engine, "rollback", _end)
        return

    # SQLAlchemy's `commit` and `rollback` events come BEFORE the driver's COMMIT or ROLLBACK. Given
    # back there, the lock would let the next writer's BEGIN IMMEDIATE race the COMMIT still running
    # in aiosqlite's thread and poll in SQLite's busy handler. So the listener ends the transaction
    # itself, through the DBAPI connection, then gives the lock back; SQLAlchemy's own COMMIT or
    # ROLLBACK that follows finds no transaction open and does nothing (sqlite3's documented behaviour).
    @event.listens_for(engine.sync_engine, "commit")
    def _commit(conn):
        if conn not in held:
            return
        try:
            conn.connection.dbapi_connection.commit()
        except Exception:
            return  # SQLAlchemy's COMMIT raises it, wrapped; the ROLLBACK that follows gives the lock back
        _end(conn)

    @event.listens_for(engine.sync_engine, "rollback")
    def _rollback(conn):
        if conn not in held:
            return
        try:
            if not conn.invalidated:
                conn.connection.dbapi_connection.rollback()
        except Exception:
            pass  # (SQLAlchemy's ROLLBACK reports it)
        finally:
            _end(conn)


def _begin_sqlite(conn: Connection, sql: str) -> None:
    """BEGIN in one trip to aiosqlite's thread (its public `execute_fetchall`, through the adapted
    connection's public `run_async`), where `exec_driver_sql` makes three (cursor, execute, close):
    every unit of work pays it on the event loop. A driver error is raised as SQLAlchemy's."""
    dbapi_connection = conn.connection.dbapi_connection
    try:
        dbapi_connection.run_async(lambda driver: driver.execute_fetchall(sql))
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(sql, (), exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect) from exc


def make_engine(url: str, **kwargs) -> AsyncEngine:
    """The engine of the units of work that write."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **{**SQLITE_POOL, **kwargs})
        _sqlite_connections(engine)
        _track_writes(engine, SqliteWriteLock())
        return engine
    # Kept connections (opened as needed, kept once opened): enough for a busy web process's
    # concurrent requests, each of which holds one across its statements. Past pool_size an overflow
    # connection is closed when given back, and a new one costs a PostgreSQL backend: with 20 kept,
    # 32 concurrent requests churned connections and their p99 doubled (bench/ack_latency.py).
    # A serve process takes at most 40 of PostgreSQL's default 100 (and, warmed, keeps 32 from its
    # start: Database.warm); a worker a few. REVOPS_DB_POOL_SIZE sets the 32.
    kwargs.setdefault("pool_size", 32)
    kwargs.setdefault("max_overflow", 8)
    engine = create_async_engine(url, **kwargs)
    _ping_when_idle(engine)
    _track_writes(engine, None)
    return engine


def make_read_engine(url: str, engine: AsyncEngine) -> AsyncEngine:
    """The engine of the read units: on SQLite a second stock aiosqlite engine on the same file
    whose connections refuse writes, each transaction a deferred BEGIN (one snapshot); on
    PostgreSQL the writers' pool in autocommit."""
    if not url.startswith("sqlite"):
        return engine.execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY: True})
    read = create_async_engine(url, **SQLITE_POOL)
    _sqlite_connections(read, "query_only=ON")

    @event.listens_for(read.sync_engine, "begin")
    def _begin(conn):
        _begin_sqlite(conn, "BEGIN")

    return read


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
    def _checked_in(dbapi_connection, record):
        record.info["revops_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection, record, _proxy):
        since = record.info.get("revops_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return  # new, or in steady use
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the pool discards this connection and tries another
            raise DisconnectionError(f"pooled connection failed its ping: {type(exc).__name__}") from exc


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class UnitSession(AsyncSession):
    """A unit of work's session: a stock AsyncSession plus `rows()` for the hot reads."""

    async def rows(self, statement, params=None):
        """A Core statement on the unit's connection: rows whose columns are attributes, without
        the ORM's identity map and instance loading (several times the cost of the statement).
        It does not flush: use it for reads, not after changes made through the ORM.

        On SQLite a SELECT takes one trip to aiosqlite's thread instead of four (sqlite_rows.py);
        PostgreSQL keeps SQLAlchemy's path (asyncpg is one round trip already)."""
        connection = await self.connection()
        if connection.dialect.name == "sqlite":
            rows = await sqlite_rows.select(connection, statement, params)
            if rows is not None:
                return rows
        return await connection.execute(statement, params)

    async def write(self, statement, params: dict[str, Any] | list[dict[str, Any]]) -> None:
        """A built-once Core INSERT (or INSERT … SELECT) without RETURNING on the unit's connection,
        with one row's parameters or a list of them. Like `rows()` it does not flush the ORM.

        On SQLite each row takes one trip to aiosqlite's thread instead of three or four
        (sqlite_rows.py); PostgreSQL, and what that path does not cover, keep SQLAlchemy's path."""
        connection = await self.connection()
        if connection.dialect.name == "sqlite":
            rows = [params] if isinstance(params, dict) else params
            if len(rows) <= 8 and await sqlite_rows.write(connection, statement, rows):
                return
        await connection.execute(statement, params)

    async def insert_rows(self, model, rows: list[dict[str, Any]]) -> None:
        """Rows with the same keys inserted into `model`'s table by one plain INSERT (a duplicate key
        raises IntegrityError). Like `rows()` it does not flush the ORM. On SQLite one trip to
        aiosqlite's thread (sqlite_rows.py)."""
        if not rows:
            return
        connection = await self.connection()
        if connection.dialect.name == "sqlite" and await sqlite_rows.insert_rows(connection, model.__table__, rows):
            return
        await connection.execute(insert(model.__table__), rows)


class Database:
    """Engines plus session factories; `transaction()` writes, `reading()` reads."""

    def __init__(self, url: str, pool_size: int | None = None):
        """`pool_size`: the PostgreSQL connections kept (REVOPS_DB_POOL_SIZE; `make_engine`'s default)."""
        self.url = url
        self.engine = make_engine(url) if pool_size is None or url.startswith("sqlite") else \
            make_engine(url, pool_size=pool_size)
        self.read_engine = make_read_engine(url, self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=UnitSession)
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False, class_=UnitSession)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def transaction(self, connection: AsyncConnection | None = None):
        """One unit of work that writes: it begins at its first statement, commits once at the
        end, rolls back on any error. On `connection` when given (one the caller keeps across
        several units of work), else on one of the pool."""
        return self._unit(self.sessions(bind=connection) if connection is not None else self.sessions())

    @asynccontextmanager
    async def simulation(self) -> AsyncIterator[UnitSession]:
        """A unit of work that writes and is always rolled back (dry-run); it too begins at its
        first statement."""
        with _unavailable_as_error():
            async with self.sessions() as session:
                try:
                    yield session
                finally:
                    await session.rollback()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[UnitSession]:
        """A unit of work that only reads: no write lock, and on SQLite it cannot write. It takes a
        connection at its first statement, if any (a command that answers without the database,
        such as `help`, costs nothing here), and gives it back at the end."""
        with _unavailable_as_error():
            async with self.read_sessions() as session:
                yield session  # (closing it ends the read: nothing to commit)

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

        def _run(sync_connection):
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_connection
            alembic_command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            # Any number of processes may start at once on an empty database: one migrates, the others
            # wait for it and then find the schema at head. On SQLite the unit's BEGIN IMMEDIATE is that
            # lock; on PostgreSQL (where DDL takes no lock that `CREATE TABLE alembic_version` would wait
            # on) a transaction-level advisory lock, released at commit.
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.run_sync(_run)

    async def warm(self) -> int:
        """Open the PostgreSQL pool's kept connections now, all at once, and give them back to it;
        returns how many it holds. A serve process that opened them only as load came had the first
        burst of concurrent commands (an incident's start, when everyone types at once) wait on
        connection set-up: at 32 at once, the first 32 answered in ~110 ms against ~60 ms once the
        pool was open (bench/ack_latency.py). Kept connections cost an idle backend each, within the
        bound `make_engine` documents; SQLite's are threads and open fast: nothing to do there."""
        if self.dialect != "postgresql":
            return 0
        pool = self.engine.sync_engine.pool
        with _unavailable_as_error():
            connections = [self.engine.connect() for _ in range(pool.size())]
            opened = await asyncio.gather(*(c.start() for c in connections), return_exceptions=True)
            for connection, result in zip(connections, opened):
                if not isinstance(result, BaseException):
                    await connection.close()
            failed = [r for r in opened if isinstance(r, BaseException)]
            if failed and len(failed) == len(opened):
                raise failed[0]  # (some opened: the pool opens the rest when they are needed)
        return pool.checkedin()

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine.sync_engine.pool is not self.engine.sync_engine.pool:
            await self.read_engine.dispose()


_UNAVAILABLE = {
    # asyncpg: the server is down, restarting, or the database is gone
    "InvalidCatalogNameError", "CannotConnectNowError", "ConnectionDoesNotExistError", "ConnectionFailureError",
    "TooManyConnectionsError", "AdminShutdownError", "CrashShutdownError", "InterfaceError",
    "ConnectionRefusedError", "TimeoutError",
}


_CONFLICT_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
CONFLICT_RETRIES = 3


def is_transient_conflict(exc: BaseException) -> bool:
    """A deadlock or a serialisation failure (PostgreSQL): the transaction was rolled back whole and
    can simply run again. Read from the driver's `sqlstate`, behind SQLAlchemy's adapter."""
    return any(getattr(err, "sqlstate", None) in _CONFLICT_SQLSTATES for err in exception_chain(exc, limit=8))


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
    chain = exception_chain(exc.orig, limit=5)  # the driver's own error hides behind an adapter's
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
