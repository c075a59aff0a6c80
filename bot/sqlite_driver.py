"""aiosqlite with one trip to its thread per statement, for SQLAlchemy's aiosqlite dialect.

aiosqlite runs the sqlite3 connection in a thread of its own; every call is a round trip to
that thread (a queue, a wake-up, a reply through the event loop's self-pipe), which costs far
more than SQLite executing a small statement. SQLAlchemy's adapter makes three or four such
trips per statement: create the cursor, execute, fetch the rows, close the cursor. Here the
cursor does all of it in ONE trip: the sqlite3 cursor is created, executed, read and closed in
the connection's thread, and the adapter is served the rows, description, rowcount and
lastrowid it already has. Results are the same; a statement costs about half as much
(bench/webhook_ingest.py).

Statements that cannot wait on a lock skip the trip altogether and run in the event loop's
thread, where they take microseconds: every statement inside a write transaction, which
already holds SQLite's write lock. (Reads do not come here at all: they run in the loop's
thread on synchronous connections, inline_session.py.) `BEGIN IMMEDIATE` is tried in place
without waiting; only when another process holds the write lock does it go to the connection's
thread to wait there (busy timeout).
Commits run in place too (WAL, `synchronous=NORMAL`: nothing is synced); the checkpoints that
do sync are taken out of them and run in a worker thread every few hundred commits.

Used by `bot.db.make_engine` through SQLAlchemy's `async_creator` hook, with the
connection arguments the aiosqlite dialect makes from the URL.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
from typing import Any

import aiosqlite


class OneTripCursor:
    """The aiosqlite cursor interface SQLAlchemy's adapter uses, one thread trip per execute."""

    arraysize = 1

    def __init__(self, connection: "OneTripConnection"):
        self._connection = connection
        self.description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: collections.deque = collections.deque()

    async def __aenter__(self) -> "OneTripCursor":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _run(self, method: str, sql: str, parameters: Any) -> tuple:
        """In the connection's thread: the whole life of a sqlite3 cursor."""
        cursor = self._connection._conn.cursor()
        try:
            getattr(cursor, method)(sql, parameters)
            rows = cursor.fetchall() if cursor.description else ()
            return cursor.description, cursor.rowcount, cursor.lastrowid, rows
        finally:
            cursor.close()

    async def _trip(self, method: str, sql: str, parameters: Any) -> "OneTripCursor":
        connection = self._connection
        if connection._conn.in_transaction:
            self.description, self.rowcount, self.lastrowid, rows = self._run(method, sql, parameters)
        elif sql == "BEGIN IMMEDIATE" and connection.try_begin_immediate():
            self.description, self.rowcount, self.lastrowid, rows = None, -1, None, ()
        else:
            self.description, self.rowcount, self.lastrowid, rows = await connection._execute(
                self._run, method, sql, parameters)
        self._rows = collections.deque(rows)
        return self

    async def execute(self, sql: str, parameters: Any = None) -> "OneTripCursor":
        return await self._trip("execute", sql, () if parameters is None else parameters)

    async def executemany(self, sql: str, parameters: Any) -> "OneTripCursor":
        return await self._trip("executemany", sql, parameters)

    async def fetchone(self):
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list:
        size = self.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(size, len(self._rows)))]

    async def fetchall(self) -> list:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()


BUSY_TIMEOUT_S = 30  # how long a writer waits for another process's write lock
CHECKPOINT_EVERY = 200  # commits of small transactions: a few MB of WAL
_commits: dict[str, int] = {}
_checkpointing: set[str] = set()
log = logging.getLogger("revops.db")


def checkpoint_file(database: str) -> None:
    """PASSIVE: copies what no reader still needs into the database file; never waits for
    readers or writers, and they do not wait for it."""
    conn = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        conn.close()


def _checkpointed(database: str, future) -> None:
    _checkpointing.discard(database)
    if not future.cancelled() and future.exception() is not None:
        log.warning("SQLite checkpoint of the WAL failed (%s); the next one will catch up",
                    type(future.exception()).__name__)


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors are `OneTripCursor`s (no trip to create one)."""

    database = ""

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    def try_begin_immediate(self) -> bool:
        """Take the write lock in place when nobody holds it (the usual case: one process); False
        when another process does, and the caller waits for it on the connection's thread."""
        conn = self._conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")

    async def commit(self) -> None:
        """In place: in WAL mode with `synchronous=NORMAL` a commit appends to the WAL and syncs
        nothing. What can take long — the checkpoint that copies the WAL back into the database
        and syncs it — is not left to SQLite's automatic checkpoint (turned off on these
        connections, which would run it inside a commit, on the loop's thread, with the write
        lock held): every `CHECKPOINT_EVERY` commits of this process to a file, a PASSIVE
        checkpoint runs in a worker thread on a connection of its own, while writers go on."""
        conn = self._conn
        wrote = conn.in_transaction
        conn.commit()
        if not wrote or not self.database or self.database == ":memory:":
            return
        count = _commits[self.database] = _commits.get(self.database, 0) + 1
        if count % CHECKPOINT_EVERY == 0 and self.database not in _checkpointing:
            _checkpointing.add(self.database)
            future = asyncio.get_running_loop().run_in_executor(None, checkpoint_file, self.database)
            future.add_done_callback(lambda f, database=self.database: _checkpointed(database, f))

    async def rollback(self) -> None:
        if not self._conn.in_transaction:
            self._conn.rollback()  # nothing to undo (the pool's reset of a connection it gets back)
        else:
            await super().rollback()


def connect(database: str, **kwargs: Any) -> OneTripConnection:
    """Like `aiosqlite.connect` (same arguments, those SQLAlchemy's dialect makes from the URL)."""

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(database, **kwargs)

    connection = OneTripConnection(connector, iter_chunk_size=64)
    connection.database = database
    connection._thread.daemon = True  # as SQLAlchemy does for the aiosqlite connections it opens
    return connection
