"""SQLite's hot statements in one trip to aiosqlite's thread.

SQLAlchemy's aiosqlite adapter makes four trips per statement (cursor, execute, fetchall,
close); at concurrency 32 the event loop's time per request set the acknowledgement's p99
(bench/ack_latency.py), and a webhook batch's three INSERTs were twelve of its sixteen trips
(bench/webhook_ingest.py). A built-once SELECT, the multi-row INSERT … ON CONFLICT DO NOTHING
RETURNING id of `sqlutil.insert_new`, a plain multi-row INSERT (`UnitSession.insert_rows`: a
delivery's claims) and a built-once INSERT or INSERT … SELECT without RETURNING
(`UnitSession.write`: a timeline entry) are compiled here once (an INSERT of rows once per shape
and row count) and run with aiosqlite's public `execute_fetchall`; the values go through the
same bind and result processors, so rows read and write the same either way
(tests/test_storage.py compares them). Only public APIs: `compile()`, `construct_params()`,
`insert_prefetch`, `effective_returning`,
`positiontup`, `TypeEngine.dialect_impl()` and its processors,
`AsyncConnection.get_raw_connection()`, `DBAPIError.instance()`.
"""

from __future__ import annotations

import keyword
import weakref
from collections import namedtuple
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection


def _positional_binds(compiled, dialect) -> list:
    """A compiled statement's binds in positional order, each with its type's bind processor."""
    return [(name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup]


def _positional_values(compiled, binds, params) -> tuple:
    values = compiled.construct_params(params)
    return tuple(value if process is None or value is None else process(value)
                 for value, process in ((values[name], process) for name, process in binds))


class _Compiled:
    """A built-once SELECT compiled for the SQLite dialect: its SQL, its positional bind order with
    each bind's processor, and a row type with each column's result processor (public APIs:
    `compile()`, `construct_params()`, `positiontup`, `TypeEngine.dialect_impl()` and its
    bind/result processors)."""

    __slots__ = ("sql", "compiled", "binds", "row", "processors", "usable")

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql, self.compiled = compiled.string, compiled
        columns = list(statement.selected_columns)
        keys = [c.key for c in columns]
        # What this simple path does not cover (expanding IN, rows whose keys a namedtuple cannot
        # carry) stays on SQLAlchemy's path.
        self.usable = ("POSTCOMPILE" not in compiled.string and len(set(keys)) == len(keys)
                       and all(k.isidentifier() and not keyword.iskeyword(k) and not k.startswith("_") for k in keys))
        if not self.usable:
            return
        self.binds = _positional_binds(compiled, dialect)
        self.row = namedtuple("Row", keys)
        self.processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]

    def parameters(self, params) -> tuple:
        return _positional_values(self.compiled, self.binds, params)

    def result(self, raw) -> "_Rows":
        processors, row = self.processors, self.row
        return _Rows([row(*[value if process is None else process(value)
                            for value, process in zip(values, processors)]) for values in raw])


class _Rows(list):
    """The part of SQLAlchemy's `Result` that the hot reads use."""

    def all(self) -> list:
        return list(self)

    def first(self):
        return self[0] if self else None

    def one_or_none(self):
        if len(self) > 1:
            raise MultipleResultsFound("Multiple rows were found when one or none was required")
        return self[0] if self else None

    def one(self):
        if len(self) != 1:
            raise (NoResultFound("No row was found when one was required") if not self else
                   MultipleResultsFound("Multiple rows were found when exactly one is required"))
        return self[0]


# Statements compiled for the SQLite fast path, per statement object (the hot reads' are built once,
# at import). Weak keys: a statement built per call is compiled per call and goes with it.
_DRIVER = "revops_driver_connection"
_compiled_sqlite: "weakref.WeakKeyDictionary[Any, _Compiled]" = weakref.WeakKeyDictionary()


async def select(connection: AsyncConnection, statement, params=None) -> "_Rows | None":
    """The rows of a SELECT on this SQLite connection, or None when the statement is not one this
    path covers (the caller then runs it through SQLAlchemy)."""
    if not getattr(statement, "is_select", False):
        return None
    dialect = connection.dialect
    compiled = _compiled_sqlite.get(statement)
    if compiled is None:
        compiled = _compiled_sqlite[statement] = _Compiled(statement, dialect)
    if not compiled.usable:
        return None
    return compiled.result(await _fetchall(connection, compiled.sql, compiled.parameters(params)))


async def _fetchall(connection: AsyncConnection, sql: str, values: tuple) -> list:
    dialect = connection.dialect
    # The aiosqlite connection, kept in the pooled connection's `info` (SQLAlchemy clears it when
    # it reconnects): a second greenlet switch per statement saved.
    driver = connection.info.get(_DRIVER)
    if driver is None:
        driver = connection.info[_DRIVER] = (await connection.get_raw_connection()).driver_connection
    try:
        return await driver.execute_fetchall(sql, values)
    except dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy's own path raises it
        raise DBAPIError.instance(sql, values, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc


MAX_INSERT_ROWS = 64  # a bigger INSERT (a reconcile's replay) takes SQLAlchemy's insertmanyvalues

NO_CONFLICT_CLAUSE = ("",)  # `conflict`: a plain INSERT (a duplicate key raises IntegrityError)


class _CompiledInsert:
    """`INSERT INTO t (columns) VALUES (…), …` for `count` rows [`ON CONFLICT DO NOTHING`]
    [`RETURNING id`], compiled for the SQLite dialect: its SQL and, in bind order, each value's
    row, column and the column type's bind processor. Not usable (SQLAlchemy's path then) when a
    column left out has a Python-side default, which SQLAlchemy's execution, not its compilation,
    would fill in. `conflict`: NO_CONFLICT_CLAUSE, None (do nothing on any conflict) or the
    conflict's columns."""

    __slots__ = ("sql", "binds", "usable")

    def __init__(self, table, columns: tuple[str, ...], count: int, conflict, returning: bool, dialect):
        where = {f"r{n}_{column}": (n, column) for n in range(count) for column in columns}
        statement = sqlite.insert(table).values([
            {column: bindparam(f"r{n}_{column}", type_=table.c[column].type) for column in columns}
            for n in range(count)])
        if conflict != NO_CONFLICT_CLAUSE:
            statement = statement.on_conflict_do_nothing() if conflict is None else \
                statement.on_conflict_do_nothing(index_elements=list(conflict))
        compiled = (statement.returning(table.c.id) if returning else statement).compile(dialect=dialect)
        self.sql = compiled.string
        self.usable = (all(c.key in columns for c in table.columns if c.default is not None)
                       and "POSTCOMPILE" not in self.sql and all(name in where for name in compiled.positiontup))
        if self.usable:
            self.binds = [(*where[name], compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                          for name in compiled.positiontup]

    def parameters(self, rows: list[dict[str, Any]]) -> tuple:
        return tuple(value if process is None or value is None else process(value)
                     for value, process in ((rows[n][column], process) for n, column, process in self.binds))


@lru_cache(maxsize=512)
def _compiled_insert(dialect, table, columns: tuple[str, ...], count: int, conflict,
                     returning: bool) -> _CompiledInsert:
    return _CompiledInsert(table, columns, count, conflict, returning, dialect)


async def _insert(connection: AsyncConnection, table, rows: list[dict[str, Any]], conflict,
                  returning: bool) -> "list | None":
    if not rows or len(rows) > MAX_INSERT_ROWS:
        return None
    columns = tuple(sorted(rows[0]))
    if any(len(row) != len(columns) for row in rows):
        return None
    compiled = _compiled_insert(connection.dialect, table, columns, len(rows), conflict, returning)
    if not compiled.usable:
        return None
    try:
        values = compiled.parameters(rows)
    except KeyError:  # rows whose keys differ: SQLAlchemy's path says so
        return None
    return await _fetchall(connection, compiled.sql, values)


async def insert_new_ids(connection: AsyncConnection, table, rows: list[dict[str, Any]],
                         conflict_on: tuple[str, ...] | None) -> "set[Any] | None":
    """The ids of the rows inserted by one multi-row INSERT … ON CONFLICT DO NOTHING RETURNING id on
    this SQLite connection (rows with the same keys), or None when this path does not cover it
    (the caller then runs it through SQLAlchemy)."""
    raw = await _insert(connection, table, rows, conflict_on, True)
    return None if raw is None else {values[0] for values in raw}


async def insert_rows(connection: AsyncConnection, table, rows: list[dict[str, Any]]) -> bool:
    """Rows (with the same keys) inserted by one multi-row INSERT on this SQLite connection; False
    when this path does not cover them (the caller then runs them through SQLAlchemy)."""
    return await _insert(connection, table, rows, NO_CONFLICT_CLAUSE, False) is not None


class _CompiledWrite:
    """A built-once INSERT … SELECT or INSERT (no RETURNING) compiled for the SQLite dialect with
    the keys of its parameters: its SQL and its positional binds with their processors."""

    __slots__ = ("sql", "compiled", "binds", "usable")

    def __init__(self, statement, keys: tuple[str, ...], dialect):
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        self.sql, self.compiled = compiled.string, compiled
        self.usable = (getattr(statement, "is_insert", False) and not compiled.insert_prefetch
                       and not compiled.effective_returning and "POSTCOMPILE" not in compiled.string)
        if self.usable:
            self.binds = _positional_binds(compiled, dialect)

    def parameters(self, params) -> tuple:
        return _positional_values(self.compiled, self.binds, params)


_compiled_writes: "weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], _CompiledWrite]]" = weakref.WeakKeyDictionary()


async def write(connection: AsyncConnection, statement, rows: list[dict[str, Any]]) -> bool:
    """A built-once INSERT (or INSERT … SELECT), without RETURNING, run once per row's parameters
    on this SQLite connection, each in one trip; False, with nothing run, when this path does not
    cover it (the caller then runs it through SQLAlchemy)."""
    by_keys = _compiled_writes.get(statement)
    if by_keys is None:
        by_keys = _compiled_writes[statement] = {}
    compiled = []
    for row in rows:
        keys = tuple(sorted(row))
        one = by_keys.get(keys)
        if one is None:
            one = by_keys[keys] = _CompiledWrite(statement, keys, connection.dialect)
        if not one.usable:
            return False
        compiled.append(one)
    for one, row in zip(compiled, rows):
        await _fetchall(connection, one.sql, one.parameters(row))
    return True
