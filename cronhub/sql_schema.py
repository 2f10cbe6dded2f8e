"""The SQL schema of cronhub's relational storage backends, and its forward migrations.

Shared by the SQLite and PostgreSQL plugins through :mod:`cronhub.sql`. Tables:

- ``cronhub_runs``: history, one row per run, unique on ``(job, schedule_id, scheduled_for,
  attempt)`` -- the exactly-once key. Manual runs have a NULL ``scheduled_for`` and are never
  deduplicated (NULLs are distinct in unique indexes in both SQLite and PostgreSQL).
- ``cronhub_jobs``: persistent per-job state (paused flag, high-water mark).
- ``cronhub_outbox``: alerts written with the state change that caused them.
- ``cronhub_schedules``: runtime schedules (v3), each with its own high-water mark.
- ``cronhub_meta``: ``schema_version``, and ``schedules_revision`` once a schedule changed.

It also holds the conversions between rows and :class:`cronhub.runs.Run`.

Datetimes are stored as UTC. On PostgreSQL they are ``timestamptz``; on SQLite (which has no
date type) they are fixed-width ISO 8601 text in naive UTC, ``YYYY-MM-DD HH:MM:SS.ffffff``, so
that string order is time order and SQL comparisons (``lease_expires_at < :now``) are correct.
Both come back as aware UTC datetimes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, RowMapping
from sqlalchemy.types import TypeDecorator, TypeEngine

from cronhub.runs import ClaimRequest, Overlap, Run, RunStatus, Trigger
from cronhub.runtime_schedules import RuntimeSchedule

T = TypeVar("T")

#: The schema version this code writes; older databases are migrated forward on open.
SCHEMA_VERSION = 4


#: How SQLite stores a time (UTC): sortable, fixed-width text.
_STORED_TIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC (``timestamptz``, or sortable ISO text on SQLite)."""

    impl = sa.String(26)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.DateTime(timezone=True))
        return dialect.type_descriptor(sa.String(26))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is not UTC:  # most values are UTC already (the engine's clock)
            if value.tzinfo is None or value.utcoffset() is None:
                # A naive datetime is ambiguous (local time? UTC?); refuse it, not guess.
                raise ValueError(
                    f"naive datetime {value.isoformat()}: storage needs aware datetimes"
                )
            value = value.astimezone(UTC)
        if dialect.name == "postgresql":
            return value
        # Fixed width, as isoformat(sep=" ", timespec="microseconds") of the naive time writes
        # it (a test checks they agree), in a third of the time.
        return _STORED_TIME % (
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONText(TypeDecorator[Any]):
    """A JSON document stored as text (portable; PostgreSQL could use ``jsonb`` later)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, sort_keys=True, default=str)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


def _dead_letter_row(table: sa.Table) -> sa.ColumnElement[bool]:
    return table.c.dead_letter.is_(True)


def build_metadata(version: int = SCHEMA_VERSION) -> sa.MetaData:
    """The tables and indexes as of schema ``version`` (the current one by default)."""
    metadata = sa.MetaData()
    run_columns: list[sa.Column[Any]] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("schedule_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("scheduled_for", UTCDateTime, nullable=True),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("instance", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=True),
        sa.Column("not_before", UTCDateTime, nullable=True),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("lease_expires_at", UTCDateTime, nullable=True),
        sa.Column("error_type", sa.String(200), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("log", sa.Text, nullable=False, server_default=""),
        sa.Column("missed_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("dead_letter", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("params", JSONText, nullable=True),
    ]
    # AUTOINCREMENT on SQLite: ids are never reused after a purge, so the ``before`` cursor
    # and "highest id is newest" stay true.
    runs = sa.Table("cronhub_runs", metadata, *run_columns, sqlite_autoincrement=True)
    sa.Index(
        "uq_cronhub_runs_slot",
        runs.c.job,
        runs.c.schedule_id,
        runs.c.scheduled_for,
        runs.c.attempt,
        unique=True,
    )
    sa.Index("ix_cronhub_runs_job_id", runs.c.job, runs.c.id)
    sa.Index("ix_cronhub_runs_status_id", runs.c.status, runs.c.id)
    if version < 4:
        sa.Index("ix_cronhub_runs_status_lease", runs.c.status, runs.c.lease_expires_at)
        sa.Index("ix_cronhub_runs_status_not_before", runs.c.status, runs.c.not_before)
        sa.Index("ix_cronhub_runs_dead_letter", runs.c.dead_letter, runs.c.id)
    sa.Index("ix_cronhub_runs_finished_at", runs.c.finished_at)
    if version >= 2:
        # v2: one job's history by status (``cronhub history NAME --status failed``, the
        # dashboard's failures of a job) without reading the job's whole history.
        sa.Index("ix_cronhub_runs_job_status_id", runs.c.job, runs.c.status, runs.c.id)
    if version >= 4:
        # v4: fewer index entries to keep up at each of a run's two writes (claimed, then its
        # outcome). Dead letters, which most rows never are, get a partial index of their own
        # (queries spell its predicate, DEAD_LETTER_ROW, as SQLite's planner matches it term
        # for term). Running runs' leases are read through ``(status, id)``: it holds the
        # running rows together, and they are few (the runs executing now).
        dead = _dead_letter_row(runs)
        where = {"sqlite_where": dead, "postgresql_where": dead}
        sa.Index("ix_cronhub_runs_dead_letters", runs.c.id, **where)

    sa.Table(
        "cronhub_jobs",
        metadata,
        sa.Column("job", sa.String(200), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("high_water", UTCDateTime, nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=True),
    )
    outbox = sa.Table(
        "cronhub_outbox",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("payload", JSONText, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sqlite_autoincrement=True,
    )
    sa.Index("ix_cronhub_outbox_due", outbox.c.next_attempt_at, outbox.c.id)
    if version >= 3:
        # v3: runtime schedules (cronhub.runtime_schedules). ``start``/``end`` are SQL words,
        # hence ``start_at``/``end_at``.
        schedules = sa.Table(
            "cronhub_schedules",
            metadata,
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("job", sa.String(200), nullable=False),
            sa.Column("kind", sa.String(8), nullable=False),
            sa.Column("expression", sa.Text, nullable=False),
            sa.Column("tz", sa.String(64), nullable=False, server_default="UTC"),
            sa.Column("params", JSONText, nullable=True),
            sa.Column("start_at", UTCDateTime, nullable=True),
            sa.Column("end_at", UTCDateTime, nullable=True),
            sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
            sa.Column("created_at", UTCDateTime, nullable=False),
            sa.Column("created_by", sa.String(200), nullable=True),
            sa.Column("updated_at", UTCDateTime, nullable=False),
            sa.Column("high_water", UTCDateTime, nullable=True),
        )
        sa.Index("ix_cronhub_schedules_job", schedules.c.job, schedules.c.created_at)
    sa.Table(
        "cronhub_meta",
        metadata,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    return metadata


#: The current schema; queries are built against these tables.
metadata = build_metadata()
runs = metadata.tables["cronhub_runs"]
#: ``dead_letter IS true``, as the partial dead-letter index spells it (SQLite uses a partial
#: index only for a query whose WHERE clause holds the index's own terms).
DEAD_LETTER_ROW = _dead_letter_row(runs)
jobs = metadata.tables["cronhub_jobs"]
outbox = metadata.tables["cronhub_outbox"]
schedules = metadata.tables["cronhub_schedules"]
meta = metadata.tables["cronhub_meta"]

# -- migrations -------------------------------------------------------------------------------
#
# MIGRATIONS[n - 1] brings a database from version n - 1 to version n. Each runs in its own
# write transaction, under the backend's schema lock, and the version is bumped in that same
# transaction, so two processes opening a database at once apply each step exactly once.
# Append new steps; never edit a released one.

Migration = Callable[[Connection], None]


def _v1_create_tables(conn: Connection) -> None:
    """Version 1: the tables and indexes as first released."""
    build_metadata(1).create_all(conn, checkfirst=True)


def _v2_job_status_index(conn: Connection) -> None:
    """Version 2: the ``(job, status, id)`` index of per-job history by status."""
    index = next(
        i
        for i in build_metadata(2).tables["cronhub_runs"].indexes
        if i.name == "ix_cronhub_runs_job_status_id"
    )
    index.create(conn, checkfirst=True)


def _v3_runtime_schedules(conn: Connection) -> None:
    """Version 3: the ``cronhub_schedules`` table of runtime schedules."""
    build_metadata(3).tables["cronhub_schedules"].create(conn, checkfirst=True)


#: The indexes version 4 drops. ``status_not_before`` served no query (queued runs are read
#: through ``(status, id)``), nor, once the running rows are few, did ``status_lease``.
_V4_DROPPED = (
    "ix_cronhub_runs_status_lease",
    "ix_cronhub_runs_status_not_before",
    "ix_cronhub_runs_dead_letter",
)


def _v4_fewer_indexes(conn: Connection) -> None:
    """Version 4: a partial index of dead letters; three indexes every run's writes kept go."""
    for name in _V4_DROPPED:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    for index in build_metadata(4).tables["cronhub_runs"].indexes:
        if index.name == "ix_cronhub_runs_dead_letters":
            index.create(conn, checkfirst=True)


MIGRATIONS: list[Migration] = [
    _v1_create_tables,
    _v2_job_status_index,
    _v3_runtime_schedules,
    _v4_fewer_indexes,
]
assert len(MIGRATIONS) == SCHEMA_VERSION


def read_schema_version(conn: Connection) -> int:
    """The database's schema version (0 for an empty database)."""
    meta.create(conn, checkfirst=True)
    value = conn.execute(
        sa.select(meta.c.value).where(meta.c.key == "schema_version")
    ).scalar_one_or_none()
    return int(value) if value is not None else 0


def write_schema_version(conn: Connection, version: int) -> None:
    """Record ``version`` in ``cronhub_meta``."""
    updated = conn.execute(
        sa.update(meta).where(meta.c.key == "schema_version").values(value=str(version))
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(meta).values(key="schema_version", value=str(version)))


# -- rows -------------------------------------------------------------------------------------

#: Statuses of runs that are not over yet.
ACTIVE_STATUSES = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
#: Statuses that never change again.
TERMINAL_STATUSES = tuple(s.value for s in RunStatus if s.terminal)
#: Columns of list queries: everything but the potentially large traceback and log.
LIGHT_COLUMNS = [c for c in runs.c if c.name not in ("traceback", "log")]
#: Ids or names per ``IN (...)`` list, well below every driver's parameter limit.
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def utc(value: datetime | None) -> datetime | None:
    """``value`` converted to UTC (``None`` stays ``None``)."""
    return value.astimezone(UTC) if value is not None else None


def duration_ms(start: datetime | None, end: datetime | None) -> int | None:
    """Milliseconds from ``start`` to ``end``, or ``None`` when either is unknown."""
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds() * 1000))


def row_to_run(row: RowMapping) -> Run:
    """A :class:`Run` from a ``cronhub_runs`` row (traceback and log may be absent)."""
    return Run(
        id=row["id"],
        job=row["job"],
        scheduled_for=row["scheduled_for"],
        trigger=as_trigger(row["trigger"]),
        status=as_status(row["status"]),
        attempt=row["attempt"],
        schedule_id=row["schedule_id"] or "",
        instance=row["instance"],
        created_at=row["created_at"],
        not_before=row["not_before"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration_ms=row["duration_ms"],
        lease_expires_at=row["lease_expires_at"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        traceback=row.get("traceback"),
        log=row.get("log") or "",
        missed_count=row["missed_count"] or 0,
        dead_letter=bool(row["dead_letter"]),
        params=row["params"] or {},
    )


_STATUSES = {status.value: status for status in RunStatus}
_TRIGGERS = {trigger.value: trigger for trigger in Trigger}
_OVERLAPS = {overlap.value: overlap for overlap in Overlap}


def as_status(value: str) -> RunStatus:
    """``RunStatus(value)``, by a dict lookup for the known ones (once per row of a batch)."""
    return _STATUSES.get(value) or RunStatus(value)


def as_trigger(value: str) -> Trigger:
    """``Trigger(value)``, by a dict lookup for the known ones (once per row of a batch)."""
    return _TRIGGERS.get(value) or Trigger(value)


def as_overlap(value: str) -> Overlap:
    """``Overlap(value)``, by a dict lookup for the known ones (once per row of a batch)."""
    return _OVERLAPS.get(value) or Overlap(value)


# The members compared with for every claimed run (module-level: see cronhub.runs).
_RUNNING, _QUEUED = RunStatus.RUNNING, RunStatus.QUEUED


def claim_values(
    request: ClaimRequest, status: RunStatus, instance: str, now: datetime, lease: datetime
) -> dict[str, Any]:
    """The ``cronhub_runs`` row a claim inserts for ``request`` with ``status``."""
    running = status is _RUNNING
    queued = status is _QUEUED
    return {
        "job": request.job,
        "schedule_id": request.schedule_id,
        "scheduled_for": utc(request.scheduled_for),
        "attempt": request.attempt,
        "trigger": str(as_trigger(request.trigger)),  # the value (faster than .value)
        "status": str(status),
        "instance": None if queued else instance,
        "created_at": now,
        "not_before": utc(request.not_before) if queued else None,
        "started_at": now if running else None,
        "finished_at": now if status.terminal else None,
        "duration_ms": None,
        "lease_expires_at": lease if running else None,
        "error_type": None,
        "error_message": None,
        "traceback": None,
        "log": "",
        "missed_count": request.missed_count,
        "dead_letter": False,
        "params": dict(request.params),
    }


def values_to_run(run_id: int, values: dict[str, Any]) -> Run:
    """The :class:`Run` of a row just inserted with ``values`` under ``run_id``."""
    # Positional, in the order of Run's fields (``test_values_to_run_keeps_every_field``):
    # once per claimed run, a copy of the dict unpacked as keywords cost twice as much.
    v = values
    return Run(
        run_id,
        v["job"],
        v["scheduled_for"],
        as_trigger(v["trigger"]),
        as_status(v["status"]),
        v["attempt"],
        v["schedule_id"],
        v["instance"],
        v["created_at"],
        v["not_before"],
        v["started_at"],
        v["finished_at"],
        v["duration_ms"],
        v["lease_expires_at"],
        v["error_type"],
        v["error_message"],
        v["traceback"],
        v["log"],
        v["missed_count"],
        v["dead_letter"],
        v["params"],
    )


def row_to_schedule(row: RowMapping) -> RuntimeSchedule:
    """A :class:`RuntimeSchedule` from a ``cronhub_schedules`` row."""
    return RuntimeSchedule(
        id=row["id"],
        job=row["job"],
        kind=row["kind"],
        expression=row["expression"],
        tz=row["tz"],
        params=row["params"] or {},
        start=row["start_at"],
        end=row["end_at"],
        paused=bool(row["paused"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        updated_at=row["updated_at"],
        high_water=row["high_water"],
    )


def schedule_values(schedule: RuntimeSchedule) -> dict[str, Any]:
    """The ``cronhub_schedules`` row of ``schedule``."""
    return {
        "id": schedule.id,
        "job": schedule.job,
        "kind": schedule.kind,
        "expression": schedule.expression,
        "tz": schedule.tz,
        "params": dict(schedule.params),
        "start_at": utc(schedule.start),
        "end_at": utc(schedule.end),
        "paused": schedule.paused,
        "created_at": utc(schedule.created_at),
        "created_by": schedule.created_by,
        "updated_at": utc(schedule.updated_at or schedule.created_at),
        "high_water": utc(schedule.high_water),
    }
