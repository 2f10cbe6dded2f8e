"""History, job state, dead letters and the outbox of :class:`cronhub.sql.SqlStorage`.

A mixin: the queries that only read history or write outside the claim path, kept apart from
:mod:`cronhub.sql` (claims and run ownership) so that each module stays readable. It relies on
the transaction helpers that :class:`~cronhub.sql.SqlStorage` defines.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cronhub.runs import Alert, JobState, OutboxItem, Run, RunStatus
from cronhub.sql_schema import (
    ACTIVE_STATUSES,
    DEAD_LETTER_ROW,
    LIGHT_COLUMNS,
    chunks,
    jobs,
    outbox,
    row_to_run,
    runs,
)
from cronhub.storage import RunFilter

T = TypeVar("T")

#: Jobs per statement of :meth:`SqlHistory.recent_runs` (SQLite allows 500 compound terms).
RECENT_CHUNK = 200
#: Rows deleted per transaction, so that claims never wait long behind a purge.
_PURGE_CHUNK = 2000
#: Pause between purge chunks. SQLite's busy handler polls with sleeps of up to 100 ms, so
#: a writer that starts its next transaction at once would starve the other processes.
_PURGE_PAUSE = 0.05


class SqlHistory:
    """History queries, job state, dead letters, the outbox and retention."""

    #: How long terminal runs are kept (:meth:`purge_expired`); ``None`` keeps them.
    retention: timedelta | None

    if TYPE_CHECKING:  # provided by SqlStorage

        def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T: ...

        def _clock(self, conn: Connection, now: datetime) -> datetime: ...

        def _lock_jobs(self, conn: Connection, names: Sequence[str]) -> None: ...

        def _job_rows(  # provided by SqlRuns
            self, conn: Connection, names: Sequence[str]
        ) -> dict[str, tuple[bool, datetime | None]]: ...

    # -- history ------------------------------------------------------------------------------
    def get_run(self, run_id: int) -> Run | None:
        """One run with traceback and log, or ``None``."""
        query = sa.select(*runs.c).where(runs.c.id == run_id)
        row = self._run(lambda c: c.execute(query).mappings().first(), write=False)
        return row_to_run(row) if row is not None else None

    def list_runs(self, query: RunFilter) -> list[Run]:
        """Runs matching ``query``, newest first (without traceback and log)."""
        select = sa.select(*LIGHT_COLUMNS).order_by(runs.c.id.desc()).limit(max(0, query.limit))
        if query.job is not None:
            select = select.where(runs.c.job == query.job)
        if query.status is not None:
            select = select.where(runs.c.status == RunStatus(query.status).value)
        if query.before is not None:
            select = select.where(runs.c.id < query.before)
        if query.dead_letter is not None:
            select = select.where(_dead_letter_is(query.dead_letter))
        rows = self._run(lambda c: c.execute(select).mappings().all(), write=False)
        return [row_to_run(row) for row in rows]

    def active_runs(self, job: str | None = None) -> list[Run]:
        """``queued`` and ``running`` runs, oldest first, optionally of one job."""
        select = (
            sa.select(*LIGHT_COLUMNS).where(runs.c.status.in_(ACTIVE_STATUSES)).order_by(runs.c.id)
        )
        if job is not None:
            select = select.where(runs.c.job == job)
        rows = self._run(lambda c: c.execute(select).mappings().all(), write=False)
        return [row_to_run(row) for row in rows]

    def previous_outcomes(
        self, run_ids: Sequence[int], *, statuses: Iterable[RunStatus]
    ) -> dict[int, RunStatus | None]:
        """For each run, the status of its job's newest *other* run whose status is one of
        ``statuses`` (``None`` when there is none); unknown ids are left out.

        An optional capability the engine's alert streaks use when a storage has it: one
        statement per :data:`~cronhub.sql_schema.CHUNK` runs, each answer a backward scan of
        the ``(job, id)`` index that stops at the first match.
        """
        wanted = [RunStatus(s).value for s in statuses]
        prev = runs.alias("prev")
        newest = (
            sa.select(prev.c.status)
            .where(prev.c.job == runs.c.job, prev.c.id != runs.c.id, prev.c.status.in_(wanted))
            .order_by(prev.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        found: dict[int, RunStatus | None] = {}

        def read(conn: Connection) -> None:
            for chunk in chunks(list(dict.fromkeys(run_ids))):
                query = sa.select(runs.c.id, newest).where(runs.c.id.in_(chunk))
                for run_id, status in conn.execute(query):
                    found[run_id] = RunStatus(status) if status is not None else None

        self._run(read, write=False)
        return found

    def recent_runs(self, jobs: Iterable[str], *, per_job: int = 10) -> dict[str, list[Run]]:
        """The newest ``per_job`` runs of each named job, newest first (light).

        One ``UNION ALL`` statement per :data:`RECENT_CHUNK` names, each branch a backward
        range scan of the ``(job, id)`` index that stops after ``per_job`` rows, so neither
        the number of jobs nor the length of their histories multiplies the cost.
        """
        names = list(dict.fromkeys(jobs))
        found: dict[str, list[Run]] = {name: [] for name in names}
        if per_job <= 0 or not names:
            return found

        def read(conn: Connection) -> None:
            for chunk in chunks(names, RECENT_CHUNK):
                params: dict[str, Any] = {f"job{i}": name for i, name in enumerate(chunk)}
                params["per_job"] = per_job
                for row in conn.execute(_recent_query(len(chunk)), params).mappings():
                    found[row["job"]].append(row_to_run(row))

        self._run(read, write=False)
        for recent in found.values():
            recent.sort(key=lambda run: run.id, reverse=True)
        return found

    def count_runs(
        self, *, finished_after: datetime | None = None, dead_letter: bool | None = None
    ) -> dict[str, int]:
        """How many runs there are of each status, optionally finished after a time.

        ``finished_after`` is a range scan of the ``finished_at`` index; ``dead_letter`` one of
        the dead-letter index.
        """
        # Grouped by an expression, not the bare column: by the column, SQLite's planner
        # walks the whole status index to group and ignores the finished_at range (200 ms
        # instead of 1 ms at 100,000 runs, on every dashboard load).
        status = sa.func.coalesce(runs.c.status, "")
        query = sa.select(status, sa.func.count()).group_by(status)
        if finished_after is not None:
            query = query.where(runs.c.finished_at > finished_after)
        if dead_letter is not None:
            query = query.where(_dead_letter_is(dead_letter))
        rows = self._run(lambda c: c.execute(query).all(), write=False)
        return {str(status): int(count) for status, count in rows if count}

    def purge(self, *, older_than: datetime) -> int:
        """Delete terminal runs finished (or created) before ``older_than``, in chunks."""
        # Two index range scans on finished_at (NULL only for active rows, normally); "NOT IN
        # the active statuses" rather than "IN the terminal ones", which would lead SQLite's
        # planner to the status index and a scan of nearly every row.
        not_active = runs.c.status.not_in(ACTIVE_STATUSES)
        total = 0
        for old in (
            runs.c.finished_at < older_than,
            sa.and_(runs.c.finished_at.is_(None), runs.c.created_at < older_than),
        ):
            ids = sa.select(runs.c.id).where(old, not_active).limit(_PURGE_CHUNK)
            delete = sa.delete(runs).where(runs.c.id.in_(ids.scalar_subquery()))
            while True:
                # One short transaction per chunk, then a pause: claims never wait long.
                deleted = self._run(lambda c, d=delete: c.execute(d).rowcount, write=True)
                total += deleted
                if deleted < _PURGE_CHUNK:
                    break
                time.sleep(_PURGE_PAUSE)
        return total

    def purge_expired(self, *, now: datetime) -> int:
        """Apply :attr:`retention`: purge runs that ended before ``now - retention``."""
        if self.retention is None:
            return 0
        return self.purge(older_than=now - self.retention)

    # -- job state ----------------------------------------------------------------------------
    def job_states(self, jobs: Iterable[str] | None = None) -> dict[str, JobState]:
        """State of the named jobs (all known when ``None``), with ``last_run``."""
        names = None if jobs is None else list(dict.fromkeys(jobs))
        return self._run(lambda c: self._job_states(c, names), write=False)

    def _job_states(self, conn: Connection, names: list[str] | None) -> dict[str, JobState]:
        rows: dict[str, tuple[bool, datetime | None]]  # (paused, high_water) by job
        if names is None:
            query = sa.select(jobs.c.job, jobs.c.paused, jobs.c.high_water)
            rows = {job: (bool(paused), mark) for job, paused, mark in conn.execute(query)}
            names = sorted(set(rows) | set(self._run_job_names(conn)))
        else:
            # The claim path's read of job rows (one statement per batch where the backend
            # can: 100,000 jobs at start-up no longer render a hundred IN lists).
            rows = self._job_rows(conn, names)
        last_ids = self._last_run_ids(conn, names)
        last: dict[str, Run] = {}
        for chunk in chunks(list(last_ids.values())):
            query = sa.select(*LIGHT_COLUMNS).where(runs.c.id.in_(chunk))
            for row in conn.execute(query).mappings():
                last[row["job"]] = row_to_run(row)
        states: dict[str, JobState] = {}
        for name in names:
            paused, high_water = rows.get(name, (False, None))
            states[name] = JobState(
                job=name, paused=paused, high_water=high_water, last_run=last.get(name)
            )
        return states

    def _run_job_names(self, conn: Connection) -> list[str]:
        """Distinct job names in history, by a skip scan of the ``(job, id)`` index.

        ``SELECT DISTINCT job`` would read every row; this reads one index entry per job.
        """
        query = sa.text(
            "WITH RECURSIVE names(job) AS ("
            " SELECT min(job) FROM cronhub_runs"
            " UNION ALL"
            " SELECT (SELECT min(r.job) FROM cronhub_runs r WHERE r.job > names.job)"
            " FROM names WHERE names.job IS NOT NULL"
            ") SELECT job FROM names WHERE job IS NOT NULL"
        )
        return list(conn.execute(query).scalars())

    def _last_run_ids(self, conn: Connection, names: Sequence[str]) -> dict[str, int]:
        """The newest run id of each job: ``max(id)`` per job, an index lookup each.

        One query per chunk of names, listed in a ``VALUES`` CTE (SQLite and PostgreSQL both
        read ``WITH names(name) AS (VALUES ...)``): start-up asks for every job at once, and
        a query per job took seconds at 100,000 jobs. Not ``GROUP BY job``, which would read
        every run of those jobs.
        """
        found: dict[str, int] = {}
        for chunk in chunks(names):
            listed = (
                sa.values(sa.column("name", sa.String), name="names")
                .data([(name,) for name in chunk])
                .cte("names")
            )
            newest = sa.select(sa.func.max(runs.c.id)).where(runs.c.job == listed.c.name)
            query = sa.select(listed.c.name, newest.scalar_subquery())
            for name, run_id in conn.execute(query):
                if run_id is not None:
                    found[name] = run_id
        return found

    def set_paused(self, job: str, paused: bool, *, now: datetime) -> None:
        """Persist the paused flag of ``job``."""

        def write(conn: Connection) -> None:
            self._lock_jobs(conn, [job])
            values = {"paused": paused, "updated_at": self._clock(conn, now)}
            self._upsert_job(conn, job, values)

        self._run(write, write=True)

    def advance_high_water(self, job: str, slot: datetime) -> datetime:
        """Move the high-water mark of ``job`` forward to ``slot`` (never back)."""
        slot = slot.astimezone(UTC)

        def write(conn: Connection) -> datetime:
            self._lock_jobs(conn, [job])
            query = sa.select(jobs.c.high_water).where(jobs.c.job == job)
            current = conn.execute(query).scalar_one_or_none()
            if current is not None and current >= slot:
                return current
            self._upsert_job(conn, job, {"high_water": slot})
            return slot

        return self._run(write, write=True)

    def _upsert_job(self, conn: Connection, job: str, values: dict[str, Any]) -> None:
        updated = conn.execute(sa.update(jobs).where(jobs.c.job == job).values(values))
        if updated.rowcount == 0:
            conn.execute(sa.insert(jobs).values(job=job, **values))

    # -- dead letters -------------------------------------------------------------------------
    def dead_letters(self, *, job: str | None = None, limit: int = 100) -> list[Run]:
        """Runs that failed their last attempt and were not cleared, newest first."""
        return self.list_runs(RunFilter(job=job, dead_letter=True, limit=limit))

    def clear_dead_letters(self, *, job: str | None = None) -> int:
        """Clear dead letters (of one job, or all); the runs stay in history."""
        update = sa.update(runs).where(DEAD_LETTER_ROW).values(dead_letter=False)
        if job is not None:
            update = update.where(runs.c.job == job)
        return self._run(lambda c: c.execute(update).rowcount, write=True)

    # -- alert outbox -------------------------------------------------------------------------
    def add_alerts(self, alerts: Sequence[Alert], *, now: datetime) -> None:
        """Write alerts to the outbox."""
        if alerts:
            self._run(lambda c: self._add_alerts(c, alerts, self._clock(c, now)), write=True)

    def _add_alerts(self, conn: Connection, alerts: Sequence[Alert], now: datetime) -> None:
        rows = [
            {
                "payload": _alert_payload(alert, now),
                "created_at": now,
                "attempts": 0,
                "next_attempt_at": now,
                "last_error": None,
            }
            for alert in alerts
        ]
        conn.execute(sa.insert(outbox), rows)

    def pending_alerts(self, *, now: datetime, limit: int = 50) -> list[OutboxItem]:
        """Outbox items due for (re)delivery, oldest first."""

        def read(conn: Connection) -> list[OutboxItem]:
            query = (
                sa.select(outbox)
                .where(outbox.c.next_attempt_at <= self._clock(conn, now))
                .order_by(outbox.c.id)
                .limit(limit)
            )
            return [
                OutboxItem(
                    id=row["id"],
                    alert=Alert.from_dict(row["payload"]),
                    attempts=row["attempts"],
                    next_attempt_at=row["next_attempt_at"],
                )
                for row in conn.execute(query).mappings()
            ]

        return self._run(read, write=False)

    def claim_alerts(self, *, now: datetime, lease: float, limit: int = 50) -> list[OutboxItem]:
        """Due outbox items, each hidden from other claimers for ``lease`` seconds.

        Each row is taken with a compare-and-set on ``next_attempt_at``, so of two instances
        claiming at once exactly one gets a given row; a sender that dies lets it reappear
        when the lease ends.
        """

        def claim(conn: Connection) -> list[OutboxItem]:
            current = self._clock(conn, now)
            query = (
                sa.select(outbox)
                .where(outbox.c.next_attempt_at <= current)
                .order_by(outbox.c.id)
                .limit(limit)
            )
            until = current + timedelta(seconds=lease)
            taken = []
            for row in conn.execute(query).mappings().all():
                update = (
                    sa.update(outbox)
                    .where(outbox.c.id == row["id"])
                    .where(outbox.c.next_attempt_at == row["next_attempt_at"])
                    .values(next_attempt_at=until)
                )
                if conn.execute(update).rowcount == 1:
                    taken.append(
                        OutboxItem(
                            id=row["id"],
                            alert=Alert.from_dict(row["payload"]),
                            attempts=row["attempts"],
                            next_attempt_at=until,
                        )
                    )
            return taken

        return self._run(claim, write=True)

    def alert_delivered(self, item_id: int) -> None:
        """Remove a delivered outbox item."""
        delete = sa.delete(outbox).where(outbox.c.id == item_id)
        self._run(lambda c: c.execute(delete), write=True)

    def alert_failed(self, item_id: int, *, retry_at: datetime, error: str) -> None:
        """Record a failed delivery and when to try again."""
        update = (
            sa.update(outbox)
            .where(outbox.c.id == item_id)
            .values(attempts=outbox.c.attempts + 1, next_attempt_at=retry_at, last_error=error)
        )
        self._run(lambda c: c.execute(update), write=True)


def _dead_letter_is(value: bool) -> sa.ColumnElement[bool]:
    """Rows that are (or are not) dead letters; the first as the partial index spells it."""
    return DEAD_LETTER_ROW if value else runs.c.dead_letter.is_(False)


@functools.lru_cache(maxsize=32)
def _recent_query(count: int) -> sa.TextClause:
    """The ``UNION ALL`` of :meth:`SqlHistory.recent_runs` for ``count`` names.

    Written as text and kept per ``count``: building and compiling a union of hundreds of
    SQLAlchemy selects for every call cost more than running it.
    """
    columns = ", ".join(column.name for column in LIGHT_COLUMNS)
    branch = (
        "SELECT * FROM (SELECT {columns} FROM cronhub_runs WHERE job = :job{i} "
        "ORDER BY id DESC LIMIT :per_job) AS recent{i}"
    )
    sql = " UNION ALL ".join(branch.format(columns=columns, i=i) for i in range(count))
    return sa.text(sql).columns(*LIGHT_COLUMNS)


def _alert_payload(alert: Alert, now: datetime) -> dict[str, Any]:
    """The outbox form of ``alert``; ``created_at`` defaults to the time it was written."""
    payload = alert.to_dict()
    if payload["created_at"] is None:
        payload["created_at"] = now.astimezone(UTC).isoformat()
    return payload
