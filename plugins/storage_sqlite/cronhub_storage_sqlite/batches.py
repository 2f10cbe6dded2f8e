"""Batches of rows written with the DB-API's own ``executemany``.

SQLAlchemy builds a parameter dict and calls each column's bind processor for every value of
every row; for the few statements that write a whole batch of runs (a claim's inserts, a
batch of outcomes) that cost more than SQLite's work. Here the SQL is fixed text, each value
is converted by its column's own bind processor (so the stored text is exactly what
SQLAlchemy would store), and a value repeated across the batch (``now``, a lease, an
instance name) is converted once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: Stands for ``{}`` in the memo of converted values (a dict cannot be a key).
_NO_PARAMETERS = ("{}",)


class DriverBatch:
    """One statement with ``?`` placeholders, bound to the types of ``columns`` in order.

    :param sql: The statement (SQLite's ``qmark`` style).
    :param columns: The column whose type converts each placeholder's value, in order.
    :param keys: The key of each placeholder in the row mappings given to :meth:`run`.
    """

    def __init__(self, sql: str, columns: Sequence[sa.Column[Any]], keys: Sequence[str]) -> None:
        if len(columns) != len(keys) or sql.count("?") != len(keys):
            raise ValueError("one column and one key per placeholder")
        self.sql = sql
        self.columns = tuple(columns)
        self.keys = tuple(keys)
        self._processors: tuple[Callable[[Any], Any] | None, ...] | None = None

    def _bound(self, conn: Connection) -> tuple[Callable[[Any], Any] | None, ...]:
        if self._processors is None:
            dialect = conn.dialect
            self._processors = tuple(c.type.bind_processor(dialect) for c in self.columns)
        return self._processors

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Execute the statement once per row, in one ``executemany``; rows it changed.

        Column by column: each column's values are read in one pass and each distinct value
        is converted once (most columns of a batch hold one or two distinct values).
        """
        columns = []
        for key, process in zip(self.keys, self._bound(conn), strict=True):
            values = [row[key] for row in rows]
            columns.append(values if process is None else _converted(values, process))
        return conn.exec_driver_sql(self.sql, list(zip(*columns, strict=True))).rowcount


def bound_values(conn: Connection, column: sa.Column[Any], values: list[Any]) -> list[Any]:
    """``values`` as the driver gets them for ``column`` (each distinct value converted once)."""
    process = column.type.bind_processor(conn.dialect)
    return values if process is None else _converted(values, process)


def result_values(conn: Connection, column: sa.Column[Any], values: list[Any]) -> list[Any]:
    """``values`` read from the driver for ``column``, as SQLAlchemy would return them."""
    process = column.type.result_processor(conn.dialect, None)
    return values if process is None else _converted(values, process)


def _converted(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """``values`` through ``process`` (``None`` stays ``None``), each distinct value once."""
    try:
        distinct = dict.fromkeys(values)
    except TypeError:  # parameters (dicts): unhashable, and mostly empty
        memo: dict[Any, Any] = {}
        out = []
        for value in values:
            if value is None:
                out.append(None)
            elif type(value) is dict and not value:
                if _NO_PARAMETERS not in memo:
                    memo[_NO_PARAMETERS] = process(value)
                out.append(memo[_NO_PARAMETERS])
            else:
                out.append(process(value))
        return out
    for value in distinct:
        distinct[value] = None if value is None else process(value)
    return [distinct[value] for value in values]


def insert_batch(table: sa.Table, names: Sequence[str]) -> DriverBatch:
    """``INSERT INTO table (names...) VALUES (?, ...)`` taking the row keys ``names``."""
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
    return DriverBatch(sql, [table.c[name] for name in names], names)
