"""``SqlStorage``: the :class:`cronhub.storage.Storage` protocol on SQLAlchemy Core.

The SQLite and PostgreSQL plugins subclass :class:`SqlStorage` and override only what their
database does differently; everything else (claims, overlap, leases, retries, history, job
state, dead letters, the outbox) is written once, against :mod:`cronhub.sql_schema`:
claims and run ownership in :mod:`cronhub.sql_runs`, history, job state, dead letters and
the outbox in :mod:`cronhub.sql_history`, runtime schedules in :mod:`cronhub.sql_schedules`;
this module holds the connection handling, transactions (with retries), migrations and the
points a dialect overrides.

What a subclass provides or may override:

- :meth:`SqlStorage._create_engine` (required): the SQLAlchemy engine.
- :meth:`SqlStorage._write_options`: execution options of write transactions (SQLite uses them
  to emit ``BEGIN IMMEDIATE``).
- :meth:`SqlStorage._is_retryable`: which driver errors mean "try the transaction again"
  (SQLite: ``database is locked``; PostgreSQL: serialization failures, deadlocks).
- :meth:`SqlStorage._clock`: "now" as the database sees it (PostgreSQL: ``clock_timestamp()``).
- :meth:`SqlStorage._lock_jobs` / :meth:`SqlStorage._lock_schema`: serialise writers per job
  and during migrations. SQLite needs neither (``BEGIN IMMEDIATE`` already serialises every
  writer); PostgreSQL locks the jobs' rows (``SELECT ... FOR UPDATE`` in sorted order), so that
  two instances claiming different slots of one ``skip`` job cannot both see "nothing running".
- :meth:`SqlStorage._notify`: tell other instances about a change when the transaction commits
  (PostgreSQL: ``NOTIFY``; nothing by default).
- :meth:`SqlStorage._insert_if_absent`: the exactly-once insert (``ON CONFLICT DO NOTHING
  RETURNING id`` on both SQLite >= 3.35 and PostgreSQL), and :meth:`SqlStorage._insert_runs`,
  which inserts a claim batch with it, row by row, unless the dialect knows better.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url

from cronhub.errors import StorageError
from cronhub.sql_history import SqlHistory
from cronhub.sql_runs import SqlRuns
from cronhub.sql_schedules import SqlSchedules
from cronhub.sql_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    read_schema_version,
    runs,
    write_schema_version,
)

T = TypeVar("T")

#: How long history is kept when the URL or constructor does not say.
DEFAULT_RETENTION = timedelta(days=90)

_SECRET_QUERY_KEYS = re.compile(r"(password|passwd|secret|token|key)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password (and secret-looking query values) replaced by ``***``."""
    try:
        parsed = make_url(url)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    query = {k: ("***" if _SECRET_QUERY_KEYS.search(k) else v) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


@functools.lru_cache(maxsize=8)
def _insert_ignoring_conflicts(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` for ``dialect``, if it has one."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    return insert(runs).on_conflict_do_nothing().returning(runs.c.id)


class SqlStorage(SqlRuns, SqlHistory, SqlSchedules):
    """The generic SQL implementation of :class:`cronhub.storage.Storage`.

    :param url: The storage URL; kept in :attr:`url` with its password masked.
    :param retention: How long terminal runs are kept by :meth:`purge_expired`
        (``None``: forever).
    """

    #: Give up retrying a transaction that keeps failing with a retryable error after this.
    retry_deadline: float = 120.0
    #: Where the database admits one writer at a time (SQLite): this process's write
    #: transactions queue on a lock of its own. A thread waiting on it goes on the moment the
    #: writer before it ends, where the database's busy handler would poll in sleeps of 1 to
    #: 100 ms (other processes still meet the busy handler).
    one_writer_at_a_time: bool = False

    def __init__(self, url: str, *, retention: timedelta | None = DEFAULT_RETENTION) -> None:
        #: The URL, password masked: safe in logs, errors and the dashboard.
        self.url = mask_url(url)
        #: How long terminal runs are kept (:meth:`purge_expired`); ``None`` keeps them.
        self.retention = retention
        self._engine: Engine | None = None
        self._open_lock = threading.Lock()
        self._schedule_watchers: list[Callable[[], None]] = []
        self._watch_lock = threading.Lock()
        self._write_lock = threading.RLock() if self.one_writer_at_a_time else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- what subclasses provide --------------------------------------------------------------
    def _create_engine(self) -> Engine:
        """Build the engine (connections are opened lazily by the pool)."""
        raise NotImplementedError

    def _write_options(self) -> dict[str, Any]:
        """Execution options set on a connection before a write transaction begins."""
        return {}

    def _is_retryable(self, exc: sa.exc.DBAPIError) -> bool:
        """Whether the transaction that raised ``exc`` should simply be run again."""
        return False

    def _clock(self, conn: Connection, now: datetime) -> datetime:
        """The current time for this transaction; the caller's ``now`` by default."""
        return now

    def _lock_jobs(self, conn: Connection, names: Sequence[str]) -> None:
        """Serialise writers of these jobs until the transaction ends (sorted: no deadlock)."""

    def _lock_schema(self, conn: Connection) -> None:
        """Serialise migrations until the transaction ends."""

    def _notify(self, conn: Connection, payload: dict[str, Any]) -> None:
        """Tell other instances ``payload`` once this transaction commits (nothing by default)."""

    def _insert_if_absent(self, conn: Connection, values: dict[str, Any]) -> int | None:
        """Insert a run unless its slot key exists; return the new id, or ``None``."""
        statement = _insert_ignoring_conflicts(conn.dialect.name)
        if statement is not None:
            return conn.execute(statement, values).scalar_one_or_none()
        # Portable fallback, correct where writers are serialised (_lock_jobs).
        if values["scheduled_for"] is not None:
            key = [runs.c[k] == values[k] for k in ("job", "schedule_id", "attempt")]
            exists = sa.select(runs.c.id).where(runs.c.scheduled_for == values["scheduled_for"])
            if conn.execute(exists.where(*key)).first() is not None:
                return None
        return conn.execute(sa.insert(runs).returning(runs.c.id), values).scalar_one()

    def _insert_runs(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int | None]:
        """Insert claimed rows (keys already checked in this transaction); ids in order.

        ``None`` marks a row whose key turned out to exist: a writer that does not take the
        job locks (a retry queued by ``finish``) got there first. SQLite, which serialises
        every writer, overrides this with one multi-row insert.
        """
        return [self._insert_if_absent(conn, row) for row in rows]

    def _describe_error(self, exc: BaseException) -> str:
        """A one-line description of a driver error (without the SQL and its parameters)."""
        orig = getattr(exc, "orig", None)
        return f"{type(orig or exc).__name__}: {orig or exc}".splitlines()[0]

    # -- transactions -------------------------------------------------------------------------
    def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction, again from the start on a retryable error."""
        engine = self._engine
        if engine is None:
            raise StorageError(f"storage {self.url} is not open")
        deadline = time.monotonic() + self.retry_deadline
        delay = 0.002
        # Held for one attempt only: a retry's backoff below does not keep the others waiting.
        writing = self._write_lock if write and self._write_lock else contextlib.nullcontext()
        while True:
            try:
                with writing, engine.connect() as conn:
                    if write:
                        conn.execution_options(**self._write_options())
                    with conn.begin():
                        return fn(conn)
            except sa.exc.DBAPIError as exc:
                if self._is_retryable(exc) and time.monotonic() < deadline:
                    # Jittered exponential backoff, so competing processes do not retry in step.
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.25)
                    continue
                raise StorageError(f"storage {self.url}: {self._describe_error(exc)}") from exc
            except sa.exc.SQLAlchemyError as exc:
                raise StorageError(f"storage {self.url}: {self._describe_error(exc)}") from exc

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        """Create the engine, then create or migrate the schema."""
        with self._open_lock:
            if self._engine is not None:
                return
            self._engine = self._create_engine()
            try:
                self.migrate()
            except BaseException:
                self._engine.dispose()
                self._engine = None
                raise

    def close(self) -> None:
        """Dispose of the connection pool. Safe to call twice."""
        with self._open_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def ping(self) -> bool:
        """``True`` when the database answers a trivial query."""
        try:
            return self._run(lambda c: c.execute(sa.text("SELECT 1")).scalar() == 1, write=False)
        except StorageError:
            return False

    def migrate(self) -> int:
        """Apply pending migrations, one transaction each; return the schema version."""

        def step(conn: Connection) -> tuple[int, bool]:
            self._lock_schema(conn)
            version = read_schema_version(conn)
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"storage {self.url}: the database has schema version {version}, newer "
                    f"than this cronhub supports ({SCHEMA_VERSION}); upgrade cronhub"
                )
            if version == SCHEMA_VERSION:
                return version, False
            MIGRATIONS[version](conn)
            write_schema_version(conn, version + 1)
            return version + 1, True

        while True:
            version, changed = self._run(step, write=True)
            if not changed:
                return version

    def schema_version(self) -> int:
        """The schema version of the open database."""
        return self._run(read_schema_version, write=True)
