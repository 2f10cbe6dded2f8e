"""Batches of rows written in one statement each, around SQLAlchemy's per-row work.

SQLAlchemy builds a parameter dict and calls each column's bind processor for every value of
every row; for the few statements that write a whole batch of runs (a claim's inserts, a
batch of outcomes) that cost more than SQLite's work. Here the SQL is fixed text, each value
is converted by its column's own bind processor (so the stored text is exactly what
SQLAlchemy would store), and a value repeated across the batch (``now``, a lease, an
instance name) is converted once.

Two forms:

- :class:`DriverBatch`: the DB-API's ``executemany``, one execution of the statement per row;
- :class:`JsonBatch`: one execution for the whole batch, which arrives as a single JSON
  parameter (an array of rows) that the statement reads with ``json_each``. The driver lets
  go of the interpreter lock around every execution of a statement, and taking it back
  while the event loop's thread holds it can take a whole switch interval (5 ms): once per
  batch is far cheaper under load than once per row.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


class DriverBatch:
    """One statement with ``?`` placeholders, bound to the types of ``columns`` in order.

    :param sql: The statement (SQLite's ``qmark`` style).
    :param columns: The column whose type converts each placeholder's value, in order.
    :param keys: The key of each placeholder in the row mappings given to :meth:`run`.
    """

    def __init__(self, sql: str, columns: Sequence[sa.Column[Any]], keys: Sequence[str]) -> None:
        if len(columns) != len(keys):
            raise ValueError(f"batch {sql!r}: {len(columns)} columns for {len(keys)} keys")
        self._check(sql, len(keys))
        self.sql = sql
        self.columns = tuple(columns)
        self.keys = tuple(keys)
        self._get = operator.itemgetter(*self.keys)
        self._processors: tuple[Callable[[Any], Any] | None, ...] | None = None

    @staticmethod
    def _check(sql: str, count: int) -> None:
        if sql.count("?") != count:
            raise ValueError(f"batch {sql!r}: {sql.count('?')} placeholders for {count} keys")

    def _columns(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """Each column's values as the driver takes them, column by column.

        Each column's values are read in one pass and each value object is converted once
        (most columns of a batch hold one or two, see :func:`_converted`).
        """
        if self._processors is None:
            self._processors = tuple(c.type.bind_processor(conn.dialect) for c in self.columns)
        if len(self.keys) == 1:
            read = [[row[self.keys[0]] for row in rows]]
        else:  # the rows' values by key, then transposed: both in C
            read = [list(values) for values in zip(*map(self._get, rows), strict=True)]
        return [
            values if process is None else _converted(values, process)
            for values, process in zip(read, self._processors, strict=True)
        ]

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Execute the statement once per row, in one ``executemany``; rows it changed."""
        rows_values = list(zip(*self._columns(conn, rows), strict=True))
        return conn.exec_driver_sql(self.sql, rows_values).rowcount


class JsonBatch(DriverBatch):
    """One statement for a whole batch, which arrives as one JSON array of rows.

    :param template: The statement, with ``{0}``, ``{1}``... where the value of each column
        goes, and ``json_each(:rows)`` as the source of the rows, whose element is
        ``element`` (``value``, or ``b.value`` under an alias).

    A column that holds one value across the batch (an instance name, a status, ``NULL``:
    most columns of most batches) is bound once, as a parameter of its own. The others
    travel in the JSON array, each row's element an array of them (or the value itself
    where only one column varies), so that SQLite parses little per row. The statement's
    text depends on which columns vary; each text is made once.

    Needs SQLite's JSON functions (built in since 3.38). Values must be what JSON carries:
    text, integers, ``NULL`` (the bind processors of the runs' and jobs' columns give
    nothing else).
    """

    def __init__(
        self,
        template: str,
        columns: Sequence[sa.Column[Any]],
        keys: Sequence[str],
        *,
        element: str = "value",
    ) -> None:
        super().__init__(template, columns, keys)
        self.element = element
        self._texts: dict[tuple[bool, ...], str] = {}

    @staticmethod
    def _check(sql: str, count: int) -> None:
        if "json_each(:rows)" not in sql:
            raise ValueError(f"batch {sql!r}: no json_each(:rows) to read the rows from")

    def statement(self, varying: tuple[bool, ...]) -> str:
        """The statement's text where the columns flagged in ``varying`` come from the JSON
        rows and the others are the parameters ``:c0``, ``:c1``... (by column index)."""
        text = self._texts.get(varying)
        if text is None:
            count = sum(varying)
            values: list[str] = []
            for index, varies in enumerate(varying):
                if not varies:
                    values.append(f":c{index}")
                elif count == 1:
                    values.append(self.element)
                else:
                    values.append(f"{self.element} ->> {sum(varying[:index])}")
            text = self._texts[varying] = self.sql.format(*values)
        return text

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Execute the statement once for all ``rows``; rows it changed."""
        if not rows:
            return 0
        columns = self._columns(conn, rows)
        varying = tuple(values.count(values[0]) != len(values) for values in columns)
        params: dict[str, Any] = {
            f"c{index}": values[0]
            for index, (values, varies) in enumerate(zip(columns, varying, strict=True))
            if not varies
        }
        moving = [values for values, varies in zip(columns, varying, strict=True) if varies]
        if len(moving) == 1:
            elements: list[Any] = moving[0]
        elif moving:
            elements = list(zip(*moving, strict=True))
        else:
            elements = [0] * len(rows)  # one element per row; every value is bound once
        params["rows"] = json.dumps(elements, separators=(",", ":"))
        return conn.exec_driver_sql(self.statement(varying), params).rowcount


def json_insert_batch(table: sa.Table, names: Sequence[str]) -> JsonBatch:
    """``INSERT INTO table (names...)`` of a JSON array of rows, in the array's order (so
    that the rows get rising ids in that order)."""
    values = ", ".join(f"{{{index}}}" for index in range(len(names)))
    template = (
        f"INSERT INTO {table.name} ({', '.join(names)})"
        f" SELECT {values} FROM json_each(:rows) ORDER BY key"
    )
    return JsonBatch(template, [table.c[name] for name in names], names)


def bound_values(conn: Connection, column: sa.Column[Any], values: list[Any]) -> list[Any]:
    """``values`` as the driver gets them for ``column`` (each distinct value converted once)."""
    process = column.type.bind_processor(conn.dialect)
    return values if process is None else _converted(values, process)


def result_values(conn: Connection, column: sa.Column[Any], values: list[Any]) -> list[Any]:
    """``values`` read from the driver for ``column``, as SQLAlchemy would return them."""
    process = column.type.result_processor(conn.dialect, None)
    return values if process is None else _converted(values, process)


def _converted(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    """``values`` through ``process`` (``None`` stays ``None``), each value object once.

    Told apart by identity, not equality: hashing a value can cost more than converting it
    (an aware time's hash computes its UTC offset), and a value shared across a batch (``now``,
    a slot) is one object.
    """
    if values and values.count(values[0]) == len(values):  # one value: most columns
        value = values[0]
        return [None if value is None else process(value)] * len(values)
    objects = dict(zip(map(id, values), values, strict=True))
    if len(objects) == len(values):  # all distinct (finish times)
        return [None if value is None else process(value) for value in values]
    converted = {key: None if value is None else process(value) for key, value in objects.items()}
    return [converted[key] for key in map(id, values)]


def insert_batch(table: sa.Table, names: Sequence[str]) -> DriverBatch:
    """``INSERT INTO table (names...) VALUES (?, ...)`` taking the row keys ``names``."""
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
    return DriverBatch(sql, [table.c[name] for name in names], names)
