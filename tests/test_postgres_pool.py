"""The PostgreSQL pool pings only connections that sat idle (bot/db.py `_ping_when_idle`):
a server restart while the bot is quiet costs nobody an error, and one during steady use costs
at most the statements that were running on the broken connections."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

from bot import db as db_module
from bot.db import Database
from bot.errors import DatabaseUnavailable
from bot.flags import read_flags


async def _kill_backends(pg_server, database: str) -> int:
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        rows = await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                                 database)
        return len(rows)
    finally:
        await admin.close()


@pytest.fixture
async def pg_db(pg_server):
    url = await pg_server.create_database()
    database = Database(url)
    await database.upgrade()
    yield database, url.rsplit("/", 1)[1]
    await database.dispose()


async def _read_once(database: Database) -> None:
    async with database.reading() as session:
        await read_flags(session)


async def test_a_connection_in_steady_use_is_not_pinged(pg_db, monkeypatch):
    database, _ = pg_db
    pings = []
    real_ping = AsyncAdapt_asyncpg_connection.ping

    def counting_ping(self):
        pings.append(1)
        return real_ping(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counting_ping)
    for _ in range(20):
        await _read_once(database)
    assert pings == []
    monkeypatch.setattr(db_module, "IDLE_PING_S", 0.05)
    await asyncio.sleep(0.1)
    await _read_once(database)
    assert pings == [1]  # idle long enough: pinged once before being handed out


async def test_connections_broken_while_idle_are_replaced_before_anyone_gets_them(pg_db, pg_server, monkeypatch):
    database, name = pg_db
    monkeypatch.setattr(db_module, "IDLE_PING_S", 0.2)
    await asyncio.gather(*(_read_once(database) for _ in range(5)))  # a few pooled connections
    assert await _kill_backends(pg_server, name) >= 1
    await asyncio.sleep(0.3)  # idle longer than IDLE_PING_S: pinged at checkout, found dead, replaced
    for _ in range(5):
        await _read_once(database)
    async with database.transaction() as session:
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_server_restart_under_steady_use_fails_only_what_was_running(pg_db, pg_server, monkeypatch):
    database, name = pg_db
    monkeypatch.setattr(db_module, "IDLE_PING_S", 3600)  # never idle long enough to be pinged
    await asyncio.gather(*(_read_once(database) for _ in range(5)))
    assert await _kill_backends(pg_server, name) >= 1
    with pytest.raises(DatabaseUnavailable):
        await _read_once(database)
    # SQLAlchemy dropped every connection made before the failure: the next ones are fresh.
    for _ in range(5):
        await _read_once(database)


async def _backends(pg_server, database: str) -> int:
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        return await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await admin.close()


async def test_warming_opens_the_kept_connections_and_keeps_them(pg_db, pg_server):
    database, name = pg_db
    await database.engine.dispose()  # (upgrade() left one open)
    deadline = asyncio.get_running_loop().time() + 10
    while await _backends(pg_server, name) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)  # (a closed backend leaves pg_stat_activity a moment later)
    assert await _backends(pg_server, name) == 0
    kept = database.engine.sync_engine.pool.size()
    assert await database.warm() == kept
    assert await _backends(pg_server, name) == kept
    for _ in range(kept):  # reads at the pool's size then open nothing new
        await _read_once(database)
    await asyncio.gather(*(_read_once(database) for _ in range(kept)))
    assert await _backends(pg_server, name) == kept


async def test_warming_a_sqlite_database_opens_nothing(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/warm.db")
    try:
        await database.upgrade()
        assert await database.warm() == 0
    finally:
        await database.dispose()


async def test_warming_an_unreachable_database_says_unavailable(pg_server):
    database = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(DatabaseUnavailable):
            await database.warm()
    finally:
        await database.dispose()


def test_serve_on_postgresql_starts_with_its_pool_open(pg_server, tmp_path, fake_slack):
    """The first burst of commands after start (an incident's start) waits on no connection set-up."""
    from tests.support.harness import Bot, make_settings

    url = asyncio.run(pg_server.create_database())
    running = Bot(make_settings(tmp_path, url, fake_slack.api_url), fake_slack).start()
    try:
        pool = running.runtime.services.db.engine.sync_engine.pool
        # Open from the start (one may be in use by a start-up task at this moment).
        assert pool.checkedin() + pool.checkedout() == pool.size() > 1
        assert asyncio.run(_backends(pg_server, url.rsplit("/", 1)[1])) >= pool.size()
    finally:
        running.stop()


def test_the_kept_connections_are_a_setting(pg_server, tmp_path, fake_slack):
    from tests.support.harness import Bot, make_settings

    url = asyncio.run(pg_server.create_database())
    running = Bot(make_settings(tmp_path, url, fake_slack.api_url, revops_db_pool_size=3), fake_slack).start()
    try:
        pool = running.runtime.services.db.engine.sync_engine.pool
        assert (pool.size(), pool.checkedin() + pool.checkedout()) == (3, 3)
        assert "no open incident in this channel" in running.answer_text("incident status", channel="C0QUIET")  # on them
    finally:
        running.stop()
