"""The SQLite driver (bot/sqlite_driver.py): one trip to aiosqlite's thread per statement,
with the results SQLAlchemy expects (rows, rowcount, lastrowid, RETURNING, errors)."""

import asyncio
import sqlite3

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from bot import sqlite_driver
from bot.db import Database


@pytest.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/driver.db")
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT UNIQUE, v INTEGER)"))
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch):
    """What went to the connections' threads, by function name."""
    seen = []
    real = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    return seen


async def test_only_what_can_wait_goes_to_the_connection_thread(db, trips):
    async with db.transaction() as session:
        # The transaction begins: nobody else holds the write lock, so BEGIN IMMEDIATE runs in place;
        # inside the write transaction this connection holds the lock: nothing waits either.
        await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))
        rows = (await session.execute(text("SELECT k, v FROM t"))).all()
        assert trips == [] and rows == [("a", 1)]
    assert trips == []  # the commit syncs nothing (WAL, synchronous=NORMAL): in place too


async def test_checkpoints_run_off_the_loop_every_few_hundred_commits(db, trips, tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_EVERY", 10)
    sqlite_driver._commits.clear()
    wal = tmp_path / "driver.db-wal"
    other = sqlite3.connect(f"{tmp_path}/driver.db")  # (the fixture's CREATE TABLE, checkpointed)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    other.close()
    for i in range(9):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (k, v) VALUES (:k, 1)"), {"k": f"k{i}"})
    database = tmp_path / "driver.db"
    # The rows are in the WAL only: no automatic checkpoint copied them into the database file.
    assert trips == [] and wal.stat().st_size > 0 and b"k5" not in database.read_bytes()
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (k, v) VALUES ('k9', 1)"))
    assert trips == []  # not on the connection's thread either: in a worker thread of its own
    for _ in range(100):
        if b"k9" in database.read_bytes():
            break
        await asyncio.sleep(0.05)
    assert b"k5" in database.read_bytes() and b"k9" in database.read_bytes()
    assert not sqlite_driver._checkpointing


async def test_a_writer_in_another_process_is_waited_for_on_the_thread(db, trips, tmp_path):
    other = sqlite3.connect(f"{tmp_path}/driver.db", isolation_level=None)  # as another process would
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (k, v) VALUES ('other', 0)")

    async def write():
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))

    task = asyncio.ensure_future(write())
    await asyncio.sleep(0.3)
    assert not task.done() and trips == ["_run"]  # BEGIN IMMEDIATE waits in the thread, the loop runs on
    other.execute("COMMIT")
    await asyncio.wait_for(task, 10)
    async with db.reading() as session:
        assert (await session.execute(text("SELECT k FROM t ORDER BY id"))).scalars().all() == ["other", "a"]
    other.close()


async def test_reads_never_leave_the_loop_and_cannot_write(db, trips):
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))
    async with db.reading() as session:
        rows = (await session.execute(text("SELECT k, v FROM t"))).all()
    assert rows == [("a", 1)]
    trips.clear()
    async with db.reading() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    assert trips == []
    with pytest.raises(OperationalError, match="readonly"):
        async with db.reading() as session:
            await session.execute(text("INSERT INTO t (k, v) VALUES ('b', 2)"))
    async with db.reading() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1


async def test_a_read_sees_one_snapshot_while_a_writer_commits(db):
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))
    async with db.reading() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
        async with db.transaction() as writer:  # not blocked by the open read
            await writer.execute(text("INSERT INTO t (k, v) VALUES ('b', 2)"))
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    async with db.reading() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 2


async def test_core_rows_and_orm_statements_of_one_read_share_its_snapshot(db):
    from sqlalchemy import column, select, table

    t = table("t", column("k"), column("v"))
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))
    async with db.reading() as reader:
        assert [r.k for r in (await reader.rows(select(t.c.k)))] == ["a"]  # the connection, no ORM Session
        assert reader._session is None
        async with db.transaction() as writer:
            await writer.execute(text("INSERT INTO t (k, v) VALUES ('b', 2)"))
        # the ORM Session, made now, reads on the same connection: the snapshot of the first statement
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
        assert len((await reader.rows(select(t.c.k))).all()) == 1
    async with db.reading() as reader:
        assert len((await reader.rows(select(t.c.k))).all()) == 2


async def test_rows_counts_ids_and_returning(db):
    async with db.transaction() as session:
        first = await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))
        second = await session.execute(text("INSERT INTO t (k, v) VALUES ('b', 2)"))
        assert (first.lastrowid, second.lastrowid) == (1, 2)
        many = await session.execute(text("INSERT INTO t (k, v) VALUES (:k, :v) ON CONFLICT DO NOTHING"),
                                     [{"k": "b", "v": 9}, {"k": "c", "v": 3}, {"k": "d", "v": 4}])
        assert many.rowcount == 2  # executemany: "b" existed
        updated = await session.execute(text("UPDATE t SET v = v + 10 WHERE v < 3"))
        assert updated.rowcount == 2
        returned = await session.execute(text("INSERT INTO t (k, v) VALUES ('e', 5), ('a', 0) "
                                              "ON CONFLICT DO NOTHING RETURNING k"))
        assert returned.scalars().all() == ["e"]
        result = await session.execute(text("SELECT k FROM t ORDER BY id"))
        assert result.fetchmany(2) == [("a",), ("b",)] and result.fetchone() == ("c",)
        assert result.fetchall() == [("d",), ("e",)] and result.fetchone() is None
        empty = await session.execute(text("SELECT k FROM t WHERE v > 100"))
        assert empty.all() == []


async def test_errors_are_sqlalchemy_errors_and_roll_back(db):
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))
            await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 2)"))
    async with db.transaction() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0
