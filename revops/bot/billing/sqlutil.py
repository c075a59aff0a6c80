"""INSERT … ON CONFLICT DO NOTHING on both databases."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


@lru_cache(maxsize=256)
def _statement(dialect: str, model, columns: tuple[str, ...], conflict_on: tuple[str, ...]):  # noqa: ARG001
    # Built once per shape and executed with parameters: constructing `.values(...)` on every
    # call costs more than the insert itself on the webhook path.
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(model.__table__).on_conflict_do_nothing(index_elements=list(conflict_on))


async def insert_ignore(session: AsyncSession, model, values: dict[str, Any], conflict_on: list[str]) -> bool:
    """Insert a row unless one with the same key exists; True when it was inserted.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction and then
    does nothing, so exactly one writer wins without an error."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    stmt = _statement(dialect, model, tuple(sorted(values)), tuple(conflict_on))
    result = await session.execute(stmt, values)
    return bool(result.rowcount)
