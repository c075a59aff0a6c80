"""INSERT … ON CONFLICT DO NOTHING on both databases, built once per shape.

Constructing `insert(...).values(...)` on every call costs more than the insert itself on the
webhook path, so each statement shape is built once, cached, and executed with parameters.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot import sqlite_rows


def dialect_of(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


@lru_cache(maxsize=256)
def _statement(dialect: str, model, columns: tuple[str, ...], conflict_on: tuple[str, ...] | None):  # noqa: ARG001
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(model.__table__)
    # None: do nothing on any unique conflict (e.g. an account id, or its already-linked customer).
    return stmt.on_conflict_do_nothing() if conflict_on is None else stmt.on_conflict_do_nothing(
        index_elements=list(conflict_on))


async def insert_ignore(session: AsyncSession, model, values: dict[str, Any], conflict_on: list[str] | None) -> bool:
    """Insert a row unless one with the same key exists; True when it was inserted.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction and then
    does nothing, so exactly one writer wins without an error."""
    stmt = _statement(dialect_of(session), model, tuple(sorted(values)),
                      None if conflict_on is None else tuple(conflict_on))
    result = await session.execute(stmt, values)
    return bool(result.rowcount)


@lru_cache(maxsize=64)
def _returning_ids(dialect: str, model, conflict_on: tuple[str, ...] | None):
    return _statement(dialect, model, (), conflict_on).returning(model.__table__.c.id)


async def insert_new(session: AsyncSession, model, rows: list[dict[str, Any]],
                     conflict_on: list[str] | None) -> set[Any]:
    """Insert several rows (same columns) in ONE statement, skipping those whose key exists, in
    their order; the ids of the rows inserted. SQLAlchemy sends them as one multi-row INSERT …
    ON CONFLICT DO NOTHING RETURNING id ("insertmanyvalues"); on SQLite, when the session has no
    change of its own to flush first, in one trip to aiosqlite's thread (bot/sqlite_rows.py)."""
    conflict = None if conflict_on is None else tuple(conflict_on)
    if dialect_of(session) == "sqlite" and not (session.new or session.dirty or session.deleted):
        ids = await sqlite_rows.insert_new_ids(await session.connection(), model.__table__, rows, conflict)
        if ids is not None:
            return ids
    stmt = _returning_ids(dialect_of(session), model, conflict)
    return set((await session.execute(stmt, rows)).scalars())
