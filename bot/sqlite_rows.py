"""SQLite's hot reads in one trip to aiosqlite's thread.

SQLAlchemy's aiosqlite adapter makes four trips per statement (cursor, execute, fetchall,
close); at concurrency 32 the event loop's time per request set the acknowledgement's p99
(bench/ack_latency.py). A built-once SELECT is compiled here once and run with aiosqlite's
public `execute_fetchall`; its values go through the same bind and result processors, so rows
read the same either way (tests/test_storage.py compares them). Only public APIs: `compile()`,
`construct_params()`, `positiontup`, `TypeEngine.dialect_impl()` and its processors,
`AsyncConnection.get_raw_connection()`, `DBAPIError.instance()`.
"""

from __future__ import annotations

import keyword
import weakref
from collections import namedtuple
from typing import Any

from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection


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
        self.binds = [(name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                      for name in compiled.positiontup]
        self.row = namedtuple("Row", keys)
        self.processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]

    def parameters(self, params) -> tuple:
        values = self.compiled.construct_params(params)
        return tuple(value if process is None or value is None else process(value)
                     for value, process in ((values[name], process) for name, process in self.binds))

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
    values = compiled.parameters(params)
    # The aiosqlite connection, kept in the pooled connection's `info` (SQLAlchemy clears it when
    # it reconnects): a second greenlet switch per statement saved.
    driver = connection.info.get(_DRIVER)
    if driver is None:
        driver = connection.info[_DRIVER] = (await connection.get_raw_connection()).driver_connection
    try:
        raw = await driver.execute_fetchall(compiled.sql, values)
    except dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy's own path raises it
        raise DBAPIError.instance(compiled.sql, values, exc, dialect.loaded_dbapi.Error,
                                  dialect=dialect) from exc
    return compiled.result(raw)
