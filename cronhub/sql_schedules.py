"""Runtime schedules of :class:`cronhub.sql.SqlStorage`: the table, its revision, the claim checks.

A mixin. Every change (add, delete, pause, resume) bumps ``schedules_revision`` in
``cronhub_meta`` and calls the backend's ``_notify`` (PostgreSQL: ``NOTIFY`` on commit) in the
same transaction, then, once committed, the callbacks of :meth:`SqlSchedules.watch_schedules`.
Claims read the schedules they name in their own transaction (:meth:`_schedule_rows`), so a
paused or removed schedule's slot is never claimed once the change is committed, and move
each schedule's high-water mark (:meth:`_advance_schedule_marks`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cronhub.runtime_schedules import RuntimeSchedule, is_runtime_schedule_id, schedule_marks
from cronhub.sql_schema import chunks, meta, row_to_schedule, schedule_values, schedules, utc

if TYPE_CHECKING:
    from cronhub.runs import ClaimRequest

T = TypeVar("T")
log = logging.getLogger("cronhub.storage")

#: The ``cronhub_meta`` key of the schedules' revision (absent until the first change: 0).
REVISION_KEY = "schedules_revision"

_BY_ID = sa.select(*schedules.c).where(schedules.c.id == sa.bindparam("b_id"))
_REVISION = sa.select(meta.c.value).where(meta.c.key == REVISION_KEY)
_CLAIM_ROWS = sa.select(
    schedules.c.id, schedules.c.job, schedules.c.paused, schedules.c.high_water
).where(schedules.c.id.in_(sa.bindparam("ids", expanding=True)))
_RAISE_MARK = (
    sa.update(schedules)
    .where(schedules.c.id == sa.bindparam("b_id"))
    .values(high_water=sa.bindparam("b_mark"))
)


class ScheduleRow(NamedTuple):
    """What a claim needs to know of a runtime schedule."""

    job: str
    paused: bool
    high_water: datetime | None


def _bump_statement(dialect: str) -> Any:
    """An upsert that adds one to the revision and returns it, or ``None`` (no upsert)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    statement = insert(meta).values(key=REVISION_KEY, value="1")
    # The increment reads the row it updates, so concurrent changes never lose a step.
    bumped = sa.cast(sa.cast(meta.c.value, sa.Integer) + 1, sa.Text)
    return statement.on_conflict_do_update(
        index_elements=[meta.c.key], set_={"value": bumped}
    ).returning(meta.c.value)


class SqlSchedules:
    """Runtime schedules for :class:`cronhub.sql.SqlStorage`."""

    _schedule_watchers: list[Callable[[], None]]
    _watch_lock: threading.Lock

    if TYPE_CHECKING:  # provided by SqlStorage

        def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T: ...

        def _clock(self, conn: Connection, now: datetime) -> datetime: ...

        def _notify(self, conn: Connection, payload: dict[str, Any]) -> None: ...

    # -- reads --------------------------------------------------------------------------------
    def get_schedule(self, schedule_id: str) -> RuntimeSchedule | None:
        """One runtime schedule, or ``None``."""
        row = self._run(
            lambda c: c.execute(_BY_ID, {"b_id": schedule_id}).mappings().first(), write=False
        )
        return row_to_schedule(row) if row is not None else None

    def list_schedules(self, job: str | None = None) -> list[RuntimeSchedule]:
        """Runtime schedules (of one job), oldest first."""
        query = sa.select(*schedules.c).order_by(schedules.c.created_at, schedules.c.id)
        if job is not None:
            query = query.where(schedules.c.job == job)
        rows = self._run(lambda c: c.execute(query).mappings().all(), write=False)
        return [row_to_schedule(row) for row in rows]

    def schedules_revision(self) -> int:
        """The revision: one primary-key read."""
        value = self._run(lambda c: c.execute(_REVISION).scalar_one_or_none(), write=False)
        return int(value) if value is not None else 0

    # -- changes ------------------------------------------------------------------------------
    def add_schedule(self, schedule: RuntimeSchedule) -> RuntimeSchedule:
        """Insert ``schedule`` unless its id exists; return the stored schedule."""
        if schedule.created_at is None:
            raise ValueError(f"schedule {schedule.id}: created_at is required")
        values = schedule_values(schedule)

        def write(conn: Connection) -> tuple[RuntimeSchedule, bool]:
            existing = conn.execute(_BY_ID, {"b_id": schedule.id}).mappings().first()
            if existing is not None:
                return row_to_schedule(existing), False
            conn.execute(sa.insert(schedules).values(values))
            self._changed(conn, schedule.id)
            stored = conn.execute(_BY_ID, {"b_id": schedule.id}).mappings().one()
            return row_to_schedule(stored), True

        stored, changed = self._run(write, write=True)
        if changed:
            self._tell_watchers()
        return stored

    def delete_schedule(self, schedule_id: str) -> RuntimeSchedule | None:
        """Delete a runtime schedule; return it, or ``None`` when there was none."""

        def write(conn: Connection) -> RuntimeSchedule | None:
            row = conn.execute(_BY_ID, {"b_id": schedule_id}).mappings().first()
            if row is None:
                return None
            conn.execute(sa.delete(schedules).where(schedules.c.id == schedule_id))
            self._changed(conn, schedule_id)
            return row_to_schedule(row)

        removed = self._run(write, write=True)
        if removed is not None:
            self._tell_watchers()
        return removed

    def set_schedule_paused(
        self, schedule_id: str, paused: bool, *, now: datetime
    ) -> RuntimeSchedule | None:
        """Pause or resume; resuming moves the mark to ``now`` (paused time is not caught up)."""

        def write(conn: Connection) -> tuple[RuntimeSchedule | None, bool]:
            row = conn.execute(_BY_ID, {"b_id": schedule_id}).mappings().first()
            if row is None:
                return None, False
            if bool(row["paused"]) == paused:
                return row_to_schedule(row), False
            current = self._clock(conn, now)
            values: dict[str, Any] = {"paused": paused, "updated_at": current}
            mark = row["high_water"]
            if not paused and (mark is None or mark < current):
                values["high_water"] = current
            conn.execute(sa.update(schedules).where(schedules.c.id == schedule_id).values(values))
            self._changed(conn, schedule_id)
            updated = conn.execute(_BY_ID, {"b_id": schedule_id}).mappings().one()
            return row_to_schedule(updated), True

        schedule, changed = self._run(write, write=True)
        if changed:
            self._tell_watchers()
        return schedule

    def watch_schedules(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each schedule change committed through this storage.

        Returns a function that stops the calls. Callbacks run in the thread that made the
        change and must be quick (the engine only schedules a refresh).
        """
        with self._watch_lock:
            self._schedule_watchers.append(callback)

        def unwatch() -> None:
            with self._watch_lock:
                if callback in self._schedule_watchers:
                    self._schedule_watchers.remove(callback)

        return unwatch

    def _changed(self, conn: Connection, schedule_id: str) -> None:
        """Bump the revision and notify other instances, in the change's transaction."""
        statement = _bump_statement(conn.dialect.name)
        if statement is not None:
            revision = int(conn.execute(statement).scalar_one())
        else:  # a dialect without upserts: correct where writers are serialised
            current = conn.execute(_REVISION).scalar_one_or_none()
            revision = int(current or 0) + 1
            if current is None:
                conn.execute(sa.insert(meta).values(key=REVISION_KEY, value=str(revision)))
            else:
                update = sa.update(meta).where(meta.c.key == REVISION_KEY)
                conn.execute(update.values(value=str(revision)))
        self._notify(
            conn, {"event": "schedule.changed", "schedule": schedule_id, "revision": revision}
        )

    def _tell_watchers(self) -> None:
        with self._watch_lock:
            watchers = list(self._schedule_watchers)
        for callback in watchers:
            try:
                callback()
            except Exception:
                log.exception("schedule watcher %r failed", callback)

    # -- claims -------------------------------------------------------------------------------
    def _schedule_rows(
        self, conn: Connection, requests: Sequence[ClaimRequest]
    ) -> dict[str, ScheduleRow]:
        """The runtime schedules ``requests`` name (no query when they name none)."""
        ids = sorted({r.schedule_id for r in requests if is_runtime_schedule_id(r.schedule_id)})
        found: dict[str, ScheduleRow] = {}
        for chunk in chunks(ids):
            for schedule_id, job, paused, mark in conn.execute(_CLAIM_ROWS, {"ids": chunk}):
                found[schedule_id] = ScheduleRow(job, bool(paused), mark)
        return found

    def _advance_schedule_marks(
        self,
        conn: Connection,
        requests: Sequence[ClaimRequest],
        rows: dict[str, ScheduleRow],
    ) -> None:
        """Move the marks of the existing schedules ``requests`` name (never back)."""
        updates = []
        for schedule_id, mark in schedule_marks(requests).items():
            row = rows.get(schedule_id)
            if row is not None and (row.high_water is None or mark > row.high_water):
                updates.append({"b_id": schedule_id, "b_mark": utc(mark)})
        if updates:
            conn.execute(_RAISE_MARK, updates)


def schedule_stopped(request: ClaimRequest, rows: dict[str, ScheduleRow]) -> bool:
    """Whether ``request`` names a runtime schedule that is paused, gone or another job's."""
    if not is_runtime_schedule_id(request.schedule_id):
        return False
    row = rows.get(request.schedule_id)
    return row is None or row.paused or row.job != request.job
