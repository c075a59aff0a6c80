"""Units of work on stock drivers (bot/db.py): durable SQLite, read units that hold no write lock
and cannot write, write units that begin at their first statement and queue fairly, and no
network call inside a write transaction."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bot.billing.stripe_client import StripeClient
from bot.db import Database, NetworkInWriteTransaction, in_write_transaction
from bot.errors import UpstreamError

from tests.support.net import free_port


async def _database(url: str) -> Database:
    database = Database(url)
    key = "id INTEGER PRIMARY KEY" if database.dialect == "sqlite" else "id SERIAL PRIMARY KEY"
    async with database.engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE t ({key}, k VARCHAR(20) UNIQUE, v INTEGER)"))
    return database


@pytest.fixture
async def db(db_url):
    database = await _database(db_url)
    yield database
    await database.dispose()


@pytest.fixture
async def pg_db(pg_server):
    database = await _database(await pg_server.create_database())
    yield database
    await database.dispose()


@pytest.fixture
async def sqlite_db(tmp_path):
    database = await _database(f"sqlite+aiosqlite:///{tmp_path}/storage.db")
    yield database, tmp_path / "storage.db"
    await database.dispose()


async def _pragmas(session) -> dict:
    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "wal_autocheckpoint", "query_only")
    return {n: (await session.execute(text(f"PRAGMA {n}"))).scalar_one() for n in names}


async def test_sqlite_is_durable_by_default(sqlite_db):
    """WAL with synchronous=FULL (2): a commit is on disk before it returns; SQLite's own
    automatic checkpoint (every 1000 pages), no checkpointing of ours."""
    db, _ = sqlite_db
    async with db.transaction() as session:
        assert await _pragmas(session) == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                                           "busy_timeout": 30000, "wal_autocheckpoint": 1000, "query_only": 0}
    async with db.reading() as session:
        assert await _pragmas(session) == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                                           "busy_timeout": 30000, "wal_autocheckpoint": 1000, "query_only": 1}


async def test_a_sqlite_read_unit_cannot_write_and_reads_one_snapshot(sqlite_db):
    db, _ = sqlite_db
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))
    with pytest.raises(OperationalError, match="readonly"):
        async with db.reading() as session:
            await session.execute(text("INSERT INTO t (k, v) VALUES ('b', 2)"))
    async with db.reading() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
        async with db.transaction() as writer:  # not blocked by the open read
            await writer.execute(text("INSERT INTO t (k, v) VALUES ('c', 3)"))
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1  # its snapshot
        assert len((await reader.rows(text("SELECT k FROM t"))).all()) == 1  # Core rows: the same snapshot
    async with db.reading() as reader:
        assert [r.k for r in await reader.rows(text("SELECT k FROM t ORDER BY k"))] == ["a", "c"]


async def test_a_postgresql_read_unit_is_in_autocommit(pg_db):
    """Each statement of a read unit is its own transaction (now() moves); a write unit's is one."""
    db = pg_db

    async def two_nows(session):
        first = (await session.execute(text("SELECT now()"))).scalar_one()
        await asyncio.sleep(0.01)
        return first, (await session.execute(text("SELECT now()"))).scalar_one()

    async with db.reading() as session:
        first, second = await two_nows(session)
        assert second > first
    async with db.transaction() as session:
        first, second = await two_nows(session)
        assert second == first


async def test_an_open_read_unit_holds_up_no_writer(db):
    async with db.reading() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0

        async def write():
            async with db.transaction() as writer:
                await writer.execute(text("INSERT INTO t (k, v) VALUES ('w', 1)"))

        await asyncio.wait_for(write(), 1.0)
    async with db.reading() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1


async def test_a_write_unit_begins_at_its_first_statement_and_writers_queue(db):
    order: list[str] = []
    first_began = asyncio.Event()

    async def first():
        async with db.transaction() as session:
            # Opened, not begun: another writer goes through meanwhile (SQLite has one writer at a time).
            assert not in_write_transaction()
            async with db.transaction() as other:
                await other.execute(text("INSERT INTO t (k, v) VALUES ('before', 0)"))
            await session.execute(text("INSERT INTO t (k, v) VALUES ('first', 1)"))
            assert in_write_transaction()
            first_began.set()
            for _ in range(20):  # let the second writer try its luck while this one holds the lock
                await asyncio.sleep(0)
            order.append("first commits")
        assert not in_write_transaction()

    async def second():
        await first_began.wait()
        async with db.transaction() as session:
            await session.execute(text("UPDATE t SET v = v + 10 WHERE k = 'first'"))
            order.append("second wrote")

    await asyncio.wait_for(asyncio.gather(first(), second()), 10)
    async with db.reading() as session:
        rows = dict((await session.execute(text("SELECT k, v FROM t"))).all())
    assert rows == {"before": 0, "first": 11}
    if db.dialect == "sqlite":
        assert order == ["first commits", "second wrote"]  # the lock is taken at BEGIN and queues


async def test_a_sqlite_writer_in_another_process_is_waited_for_off_the_loop(sqlite_db):
    db, path = sqlite_db
    other = sqlite3.connect(path, isolation_level=None)  # as another process would
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (k, v) VALUES ('other', 0)")
    waiting = asyncio.Event()

    async def write():
        async with db.transaction() as session:
            waiting.set()
            await session.execute(text("INSERT INTO t (k, v) VALUES ('ours', 1)"))  # BEGIN IMMEDIATE: busy

    task = asyncio.ensure_future(write())
    await waiting.wait()
    # The event loop is not blocked while the writer waits in aiosqlite's thread: a read completes.
    async with db.reading() as session:
        assert (await asyncio.wait_for(session.execute(text("SELECT count(*) FROM t")), 1.0)).scalar_one() == 0
    assert not task.done()  # (the other process still holds the write lock)
    other.execute("COMMIT")
    await asyncio.wait_for(task, 10)
    other.close()
    async with db.reading() as session:
        assert (await session.execute(text("SELECT k FROM t ORDER BY id"))).scalars().all() == ["other", "ours"]


async def test_a_network_call_inside_a_write_transaction_fails_loudly(db):
    stripe = StripeClient("sk_test_x", api_base=f"http://127.0.0.1:{free_port()}")
    try:
        async with db.transaction() as session:
            with pytest.raises(UpstreamError):  # not begun yet: Stripe is called (and is unreachable)
                await stripe.retrieve("customer", "cus_1")
            await session.execute(text("INSERT INTO t (k, v) VALUES ('a', 1)"))
            with pytest.raises(NetworkInWriteTransaction, match="Stripe call"):
                await stripe.retrieve("customer", "cus_1")
        async with db.reading() as session:  # a read unit may wait on the network
            await session.execute(text("SELECT 1"))
            with pytest.raises(UpstreamError):
                await stripe.retrieve("customer", "cus_1")
    finally:
        await stripe.aclose()


async def test_rows_read_the_same_as_sqlalchemy(db_url):
    """`UnitSession.rows()` (on SQLite one trip to aiosqlite's thread, its own compilation and
    processors) gives the hot reads the same rows, keys and Python values as SQLAlchemy's path."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, bindparam, insert, select

    from bot.billing import ledger
    from bot.incidents import service
    from commands import incident as incident_command

    database = Database(db_url)
    await database.upgrade()
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)

    def value(column, n):
        t = column.type
        kind = getattr(t, "impl", t)
        if column.nullable and n == 2:
            return None
        if isinstance(t, JSON) or isinstance(kind, JSON):
            return {"text": f"update {n}", "list": [n, "é"]}
        if isinstance(kind, DateTime):
            return at + timedelta(seconds=n)
        if isinstance(kind, Boolean):
            return bool(n % 2)
        if isinstance(kind, Float):
            return n + 0.5
        if isinstance(kind, Integer):
            return n
        if isinstance(kind, (String, Text)):
            if column.table.name == "scheduled_jobs" and column.name == "kind":
                return "escalation"  # a kind the status row reads (its next_escalation)
            if column.table.name == "ledger_entries" and column.name in ("kind", "account_id"):
                return {"kind": "grant", "account_id": "ref1"}[column.name]  # (three entries, newest first)
            return {"kind": "update", "status": "active", "email": "a@example.com"}.get(column.name, f"ref{n}")
        raise AssertionError(f"no test value for {column.type!r}")

    checks = [
        (ledger._ACCOUNT_BY["id"], {"ref": "ref1"}), (ledger._ACCOUNT_BY["customer"], {"ref": "ref2"}),
        (ledger._ACCOUNT_BY["email"], {"ref": "a@example.com"}),
        (ledger._RECENT, {"account_id": "ref1", "limit": 10}), (ledger._RECENT, {"account_id": "ref1", "limit": 1}),
        (service._BY_ID_ROW, {"incident_id": 1}), (service._OPEN_IN_ROW, {"channel": "ref1"}),
        (service._LATEST_UPDATE, {"incident_id": 1}), (incident_command._ACTIVE_JOBS, {"incident_id": 1}),
        (service._BY_ID_ROW, {"incident_id": 99}),
        (service._BY_ID_WITH_LATEST, {"incident_id": 1}), (service._OPEN_IN_WITH_LATEST, {"channel": "ref1"}),
        (service._BY_ID_WITH_LATEST, {"incident_id": 2}), (service._BY_ID_WITH_LATEST, {"incident_id": 3}),
        # (expanding IN is left to SQLAlchemy's path)
        (select(ledger._ACCOUNTS.c.id).where(ledger._ACCOUNTS.c.id.in_(bindparam("ids", expanding=True)))
         .order_by(ledger._ACCOUNTS.c.id), {"ids": ["ref1", "ref3"]}),
    ]
    try:
        async with database.transaction() as session:
            tables = {table for stmt, _ in checks for table in stmt.get_final_froms()}
            for table in [t for t in next(iter(tables)).metadata.sorted_tables if t in tables]:
                for n in (1, 2, 3):
                    row = {c.name: value(c, n) for c in table.columns if not (c.primary_key and c.autoincrement is True)}
                    if "id" in table.c and not table.c.id.autoincrement is True:
                        row["id"] = f"ref{n}" if isinstance(table.c.id.type, String) else n
                    await session.execute(insert(table).values(row))
        for statement, params in checks:
            async with database.reading() as session:
                fast = (await session.rows(statement, params)).all()
                stock = (await (await session.connection()).execute(statement, params)).all()
            assert [tuple(r) for r in fast] == [tuple(r) for r in stock], statement
            assert [type(v) for r in fast for v in r] == [type(v) for r in stock for v in r]
            for f, s in zip(fast, stock):
                assert {k: getattr(f, k) for k in s._fields} == dict(s._mapping)
        assert len(await _rows(database, ledger._RECENT, {"account_id": "ref1", "limit": 10})) == 3
    finally:
        await database.dispose()


async def _rows(database, statement, params):
    async with database.reading() as session:
        return (await session.rows(statement, params)).all()


async def test_insert_new_writes_the_same_rows_as_sqlalchemy(db_url):
    """`sqlutil.insert_new` (on SQLite one trip to aiosqlite's thread, its own compilation and bind
    processors: sqlite_rows.insert_new_ids) writes what SQLAlchemy's insertmanyvalues writes, JSON,
    times, booleans and NULLs alike, and returns the ids of the rows it inserted, not of those whose
    key was there; what it does not cover takes SQLAlchemy's path, which fills in Python defaults and
    flushes the session's own changes first."""
    from datetime import datetime, timezone

    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from bot.billing import sqlutil
    from bot.billing.events import event_row
    from bot.billing.models import Account, StripeCustomer, StripeEvent

    database = Database(db_url)
    await database.upgrade()
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)

    def events(prefix: str) -> list[dict]:
        return [event_row({"id": f"evt_{prefix}{n}", "object": "event", "type": "customer.created", "created": 1772600000,
                           "livemode": n == 1, "api_version": None if n == 2 else "2025-03-31.basil",
                           "data": {"object": {"id": f"cus_{n}", "object": "customer", "name": "Zoë «x»",
                                               "metadata": {"n": n, "list": [1, None, "é"]}}}},
                          source="webhook", now=at) for n in range(3)]

    def stored(rows, prefix):  # every column of every row, the ids' prefix taken out
        return sorted(repr(sorted(row._mapping.items())).replace(prefix, "") for row in rows)

    try:
        async with database.transaction() as session:
            fast_ids = await sqlutil.insert_new(session, StripeEvent, events("fast"), ["id"])
            stock = events("stock")
            stock_ids = set((await session.execute(sqlutil._returning_ids(database.dialect, StripeEvent, ("id",)),
                                                   stock)).scalars())
            assert fast_ids == {"evt_fast0", "evt_fast1", "evt_fast2"} and len(stock_ids) == 3
            # Again, with one new row among rows already there (and one twice): only the new one's id.
            again = events("fast") + [events("new")[0], events("new")[0]]
            assert await sqlutil.insert_new(session, StripeEvent, again, ["id"]) == {"evt_new0"}
        async with database.reading() as session:
            table = StripeEvent.__table__
            fast = (await session.execute(select(table).where(table.c.id.like("evt_fast%")))).all()
            stock = (await session.execute(select(table).where(table.c.id.like("evt_stock%")))).all()
        assert len(fast) == 3 and stored(fast, "fast") == stored(stock, "stock")
        assert {row.id: (row.payload["data"]["object"]["metadata"], row.created, row.livemode, row.api_version)
                for row in fast}["evt_fast2"] == ({"n": 2, "list": [1, None, "é"]},
                                                 datetime.fromtimestamp(1772600000, timezone.utc), False, None)

        async with database.transaction() as session:
            # A column with a Python-side default left out: SQLAlchemy's path, default filled in.
            assert await sqlutil.insert_new(session, StripeCustomer, [{"id": "cus_d", "updated_at": at}], ["id"]) == {
                "cus_d"}
            # The session's own change first: the ORM's pending account is flushed, so the INSERT finds it.
            session.add(Account(id="acct_orm", balance=5, created_at=at, updated_at=at))
            row = dict(id="acct_orm", stripe_customer_id=None, email=None, balance=0, created_at=at, updated_at=at)
            assert await sqlutil.insert_new(session, Account, [row], None) == set()
        async with database.reading() as session:
            customer = (await session.execute(select(StripeCustomer.__table__).where(StripeCustomer.id == "cus_d"))).one()
            balance = (await session.execute(select(Account.balance).where(Account.id == "acct_orm"))).scalar_one()
        assert (customer.version, customer.deleted, balance) == (0, False, 5)

        # A row the database refuses: SQLAlchemy's error, as its own path raises it, and nothing written.
        bad = [dict(row, id="acct_bad", created_at=None)]
        with pytest.raises(IntegrityError):
            async with database.transaction() as session:
                await sqlutil.insert_new(session, Account, bad, None)
        async with database.reading() as session:
            assert (await session.execute(select(Account.id).where(Account.id == "acct_bad"))).first() is None
    finally:
        await database.dispose()


async def test_unit_writes_store_the_same_rows_as_sqlalchemy(db_url):
    """`UnitSession.write()` (an INSERT, or INSERT … SELECT, with one row's parameters or several)
    and `insert_rows()` (a plain multi-row INSERT) store what SQLAlchemy's own execution stores —
    on SQLite one trip to aiosqlite's thread each (sqlite_rows.py); a duplicate key is SQLAlchemy's
    IntegrityError, and the transaction it was in writes nothing."""
    from datetime import datetime, timezone

    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from bot.incidents import service
    from bot.incidents.models import TimelineEntry
    from bot.models import SlackRequestClaim

    database = Database(db_url)
    await database.upgrade()
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)
    entries = service._ENTRIES

    def entry(n: int, channel: str | None = None) -> dict:
        row = {"at": at, "kind": "action", "actor": f"U{n}", "text": f"*look* <!channel> {n}",
               "data": {"n": n, "list": ["é", None]} if n % 2 else None}
        return {**row, "channel": channel} if channel else {**row, "incident_id": 1}

    try:
        async with database.transaction() as session:
            incident = service.Incident(channel="C0STORE", open_channel="C0STORE", severity="P2", stage="checkout",
                                        summary="storage", status="open", declared_by="U1", detected_at=at,
                                        declared_at=at)
            session.add(incident)
        incident_id = incident.id
        async with database.transaction() as session:
            fast = [dict(entry(n), incident_id=incident_id) for n in (1, 2)]
            await session.write(service._INSERT_ENTRY, fast[0])  # one row
            await session.write(service._INSERT_ENTRY_IN_CHANNEL, [entry(3, "C0STORE"), entry(4, "C0STORE")])
            await session.write(service._INSERT_ENTRY_IN_CHANNEL, [entry(5, "C0NONE")])  # no open incident there
            connection = await session.connection()  # SQLAlchemy's own path, the same rows
            await connection.execute(service._INSERT_ENTRY, dict(fast[0], actor="S1"))
            await connection.execute(service._INSERT_ENTRY_IN_CHANNEL, [dict(entry(3, "C0STORE"), actor="S3"),
                                                                          dict(entry(4, "C0STORE"), actor="S4")])
            await session.insert_rows(SlackRequestClaim, [{"key": "k1", "claimed_at": at}, {"key": "k2", "claimed_at": at}])
        async with database.reading() as session:
            rows = (await session.execute(select(entries).where(entries.c.incident_id == incident_id)
                                          .where(entries.c.actor.in_(["U1", "U3", "U4", "S1", "S3", "S4"])))).all()
            claims = (await session.execute(select(SlackRequestClaim.__table__))).all()
        by_actor = {row.actor: {k: v for k, v in row._mapping.items() if k not in ("id", "actor")} for row in rows}
        assert sorted(by_actor) == ["S1", "S3", "S4", "U1", "U3", "U4"]
        for n in (1, 3, 4):
            assert by_actor[f"U{n}"] == by_actor[f"S{n}"], n
        assert by_actor["U3"]["data"] == {"n": 3, "list": ["é", None]} and by_actor["U4"]["data"] is None
        assert by_actor["U1"]["at"] == at and by_actor["U1"]["text"] == "*look* <!channel> 1"
        assert sorted((c.key, c.claimed_at) for c in claims) == [("k1", at), ("k2", at)]

        with pytest.raises(IntegrityError):
            async with database.transaction() as session:
                await session.write(service._INSERT_ENTRY, dict(entry(6), incident_id=incident_id))
                await session.insert_rows(SlackRequestClaim, [{"key": "k3", "claimed_at": at},
                                                              {"key": "k1", "claimed_at": at}])
        async with database.reading() as session:
            assert (await session.execute(select(SlackRequestClaim.key).where(SlackRequestClaim.key == "k3"))).first() is None
            assert (await session.execute(select(entries.c.id).where(entries.c.actor == "U6"))).first() is None
    finally:
        await database.dispose()
