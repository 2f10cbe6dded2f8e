"""Runtime schedules: schedules of registered jobs, added, paused and removed while cronhub runs.

A runtime schedule is stored data, never code: the name of a job that a plugin or the
application registered, one of ``cron``/``every``/``at`` with its zone, an optional
``start``/``end`` window, JSON parameters for the job function, a paused flag, and who created
it when. Nothing in it is imported or unpickled, so adding one through the HTTP API or the CLI
cannot run anything but a job the code already defines, with parameters checked against the
job function's signature (:mod:`cronhub.params`).

Each schedule has its own slots, claimed and recorded like the job's own under the unique key
``(job, schedule id, scheduled_for, attempt)``: every instance sharing the storage runs each
slot once. Each schedule keeps its own high-water mark for catch-up; the job's options
(``overlap``, ``catch_up``, ``misfire_grace``, ``retries``, ``timeout``...) apply to its slots.

Schedule ids never start with ``@``: ids of that form name the engine's own slot families
(``@startup``). Every other non-empty ``schedule_id`` of a claim names a runtime schedule, and
storage answers ``PAUSED`` for one that is paused or no longer exists.

:class:`RuntimeSchedules` is the front door used by the CLI, the HTTP API and applications::

    schedules = RuntimeSchedules(hub)
    added = schedules.add("acme.report", cron="0 9 * * MON", tz="Europe/Berlin",
                          params={"region": "eu"})
    schedules.pause(added.id)
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cronhub.errors import ScheduleError, ScheduleInputError, UnknownScheduleError
from cronhub.params import check_params, signature_of
from cronhub.runs import Trigger
from cronhub.schedules import (
    AtSchedule,
    CronSchedule,
    EverySchedule,
    Schedule,
    get_zone,
    parse_expression,
)

if TYPE_CHECKING:
    from cronhub.hub import Hub
    from cronhub.jobs import Job
    from cronhub.runs import ClaimRequest

#: The kinds of runtime schedule, as in the job options.
KINDS: tuple[str, ...] = ("cron", "every", "at")
#: Schedule ids of this form are the engine's own (``@startup``), never a runtime schedule's.
RESERVED_PREFIX = "@"
#: Most next run times a preview lists.
MAX_PREVIEW = 100

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_UTC_ZONE = ZoneInfo("UTC")


def new_schedule_id() -> str:
    """A fresh random schedule id (12 hex digits)."""
    return secrets.token_hex(6)


def is_runtime_schedule_id(schedule_id: str) -> bool:
    """Whether a claim's ``schedule_id`` names a runtime schedule (non-empty, not ``@...``)."""
    return bool(schedule_id) and not schedule_id.startswith(RESERVED_PREFIX)


@dataclass(frozen=True, slots=True)
class RuntimeSchedule:
    """A schedule of a registered job, stored by the storage backend. Times are aware UTC."""

    #: Unique id (see :func:`new_schedule_id`); part of its slots' keys.
    id: str
    #: The job it runs.
    job: str
    #: ``cron``, ``every`` or ``at``.
    kind: str
    #: As written: a cron expression, a duration (``"90s"``, ``"300"``) or an ISO 8601 time.
    expression: str
    #: IANA zone of ``cron`` (and of a naive ``at`` time, ``start`` and ``end``).
    tz: str = "UTC"
    #: Keyword parameters for the job function (a JSON object).
    params: dict[str, Any] = field(default_factory=dict)
    #: The window outside which it does not fire (``every`` slots are anchored to ``start``).
    start: datetime | None = None
    end: datetime | None = None
    paused: bool = False
    created_at: datetime | None = None
    #: Who added it: ``cli:user@host``, ``api``, ``dashboard``, or what an application says.
    created_by: str | None = None
    updated_at: datetime | None = None
    #: The newest slot handled (run, skipped or missed); storage moves it in claims.
    high_water: datetime | None = None

    def replace(self, **changes: Any) -> RuntimeSchedule:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def timetable(self) -> Schedule:
        """The :class:`~cronhub.schedules.Schedule` that computes its slots."""
        return build_timetable(self.kind, self.expression, get_zone(self.tz), self.start)

    def next_run(self, after: datetime, timetable: Schedule | None = None) -> datetime | None:
        """The first slot strictly after ``after`` inside the ``start``/``end`` window."""
        timetable = timetable or self.timetable()
        if self.start is not None and after < self.start:
            after = self.start - timedelta(microseconds=1)
        slot = timetable.next_after(after)
        if slot is None or (self.end is not None and slot > self.end):
            return None
        return slot

    def to_dict(self, *, now: datetime | None = None) -> dict[str, Any]:
        """The schedule object of the CLI and HTTP API; ``now`` adds ``next_run``."""
        timetable = self.timetable()
        zone = get_zone(self.tz) if self.kind != "every" else UTC
        next_run = None
        if now is not None and not self.paused:
            next_run = self.next_run(now, timetable)
        return {
            "id": self.id,
            "job": self.job,
            "kind": self.kind,
            "schedule": self.expression,
            "schedule_text": timetable.describe(),
            "tz": self.tz,
            "params": self.params,
            "start": _iso(self.start, zone),
            "end": _iso(self.end, zone),
            "paused": self.paused,
            "next_run": _iso(next_run, zone),
            "created_at": _iso(self.created_at, zone),
            "created_by": self.created_by,
            "updated_at": _iso(self.updated_at, zone),
        }


def _iso(value: datetime | None, zone: Any) -> str | None:
    return value.astimezone(zone).isoformat() if value is not None else None


def build_timetable(kind: str, expression: str, tz: ZoneInfo, start: datetime | None) -> Schedule:
    """The schedule of ``kind`` for ``expression``; ``ScheduleError`` when it cannot be used."""
    if kind == "cron":
        return CronSchedule(expression, tz)
    if kind == "every":
        return EverySchedule(expression, anchor=start)
    if kind == "at":
        return AtSchedule(expression, tz=tz)
    raise ScheduleError(kind, f"unknown kind of schedule; use one of {', '.join(KINDS)}")


def schedule_marks(requests: Iterable[ClaimRequest]) -> dict[str, datetime]:
    """Per runtime schedule id, the newest slot among ``requests`` (``Storage.claim``).

    Only ``schedule`` and ``catch_up`` triggers count, as for the job's own mark.
    """
    marks: dict[str, datetime] = {}
    for request in requests:
        if request.scheduled_for is None or not is_runtime_schedule_id(request.schedule_id):
            continue
        if Trigger(request.trigger) not in (Trigger.SCHEDULE, Trigger.CATCH_UP):
            continue
        slot = request.scheduled_for.astimezone(UTC)
        if request.schedule_id not in marks or slot > marks[request.schedule_id]:
            marks[request.schedule_id] = slot
    return marks


# -- input ------------------------------------------------------------------------------------


def _zone(tz: str | ZoneInfo | None) -> ZoneInfo:
    try:
        return get_zone(tz or "UTC")
    except ScheduleError as exc:
        raise ScheduleInputError("tz", str(exc)) from None


def _instant(name: str, value: datetime | str | None, zone: ZoneInfo) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ScheduleInputError(
                name, f"{value!r} is not an ISO 8601 date and time (e.g. 2026-03-01T09:00)"
            ) from None
    if not isinstance(value, datetime):
        raise ScheduleInputError(name, f"{value!r} must be an ISO 8601 date and time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _expression(kind: str, value: Any) -> str:
    if kind == "every" and isinstance(value, timedelta):
        value = value.total_seconds()
    if kind == "every" and isinstance(value, int | float) and not isinstance(value, bool):
        value = f"{value:g}"
    if kind == "at" and isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str) or not value.strip():
        raise ScheduleInputError(kind, f"{value!r}: must be a non-empty string")
    return value.strip()


def validate_params(job: Job, params: Any) -> dict[str, Any]:
    """``params`` checked against ``job``'s function (see :func:`cronhub.params.check_params`)."""
    return check_params(job.name, signature_of(job.func), params)


@dataclass(frozen=True)
class Preview:
    """The next run times of an expression, and how to show them."""

    times: list[datetime]
    #: The schedule in words (``at 09:00 on Monday``).
    text: str
    #: The zone the times are shown in: the expression's, UTC for ``every``.
    zone: ZoneInfo

    def isoformat(self) -> list[str]:
        """The times as ISO 8601 text with the zone's offset (as ``cronhub next --json``)."""
        return [t.astimezone(self.zone).isoformat() for t in self.times]


def preview(
    expression: str,
    *,
    tz: str | ZoneInfo | None = None,
    after: datetime | None = None,
    count: int = 5,
    kind: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
) -> Preview:
    """The next ``count`` slots of an expression, as ``cronhub next`` computes them.

    Without ``kind``, ``expression`` is read like ``cronhub next`` reads it (a cron
    expression, ``every:5m``, ``at:ISO``); with it, like a runtime schedule's fields.

    :raises ScheduleInputError: With the same reason as ``cronhub next`` gives.
    """
    zone = _zone(tz)
    if not 1 <= count <= MAX_PREVIEW:
        raise ScheduleInputError("count", f"{count!r}: must be between 1 and {MAX_PREVIEW}")
    start_at, end_at = _instant("start", start, zone), _instant("end", end, zone)
    field_name = kind or "expr"
    try:
        if kind is None:
            timetable = parse_expression(expression, tz=zone)
        else:
            timetable = build_timetable(kind, _expression(kind, expression), zone, start_at)
    except ScheduleError as exc:
        raise ScheduleInputError(field_name, str(exc)) from None
    probe = RuntimeSchedule("preview", "", timetable.kind, expression, start=start_at, end=end_at)
    current = after or datetime.now(UTC)
    times: list[datetime] = []
    while len(times) < count:
        slot = probe.next_run(current, timetable)
        if slot is None:
            break
        times.append(slot)
        current = slot
    shown = _UTC_ZONE if timetable.kind == "every" else timetable.tz
    return Preview(times, timetable.describe(), shown)


class RuntimeSchedules:
    """Add, list, pause, resume and remove the runtime schedules of a hub's storage.

    Every method is a blocking storage call (call it from a thread in async code). Errors are
    :class:`~cronhub.errors.UsageError` subclasses naming the culprit: the job
    (:class:`~cronhub.errors.UnknownJobError`), a parameter
    (:class:`~cronhub.errors.ParameterError`), a field of the schedule
    (:class:`~cronhub.errors.ScheduleInputError`) or the schedule id
    (:class:`~cronhub.errors.UnknownScheduleError`).
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def add(
        self,
        job: str,
        *,
        cron: str | None = None,
        every: str | float | timedelta | None = None,
        at: str | datetime | None = None,
        tz: str | ZoneInfo | None = None,
        params: dict[str, Any] | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        paused: bool = False,
        created_by: str | None = None,
    ) -> RuntimeSchedule:
        """Validate and store a new schedule of ``job``; return it as stored.

        Exactly one of ``cron``, ``every`` and ``at`` is required. Every instance sharing the
        storage picks it up within a second.
        """
        target = self.hub.get_job(job)
        given = [(k, v) for k, v in (("cron", cron), ("every", every), ("at", at)) if v is not None]
        if len(given) != 1:
            names = ", ".join(k for k, _ in given) or "none"
            raise ScheduleInputError(
                "schedule", f"exactly one of cron, every, at is required (given: {names})"
            )
        kind, raw = given[0]
        expression = _expression(kind, raw)
        zone = _zone(tz)
        start_at, end_at = _instant("start", start, zone), _instant("end", end, zone)
        if start_at and end_at and end_at <= start_at:
            raise ScheduleInputError("end", f"{end_at.isoformat()} must be after start")
        try:
            timetable = build_timetable(kind, expression, zone, start_at)
        except ScheduleError as exc:
            raise ScheduleInputError(kind, str(exc)) from None
        checked = validate_params(target, params)
        now = self.hub.clock.now()
        schedule = RuntimeSchedule(
            id=new_schedule_id(),
            job=target.name,
            kind=kind,
            expression=expression,
            tz=zone.key,
            params=checked,
            start=start_at,
            end=end_at,
            paused=bool(paused),
            created_at=now,
            created_by=created_by,
            updated_at=now,
        )
        if schedule.next_run(now, timetable) is None:
            raise ScheduleInputError(
                kind, f"{expression!r}: never fires after {now.isoformat(timespec='seconds')}"
            )
        return self.hub.storage.add_schedule(schedule)

    def get(self, schedule_id: str) -> RuntimeSchedule:
        """The schedule ``schedule_id``; :class:`UnknownScheduleError` when there is none."""
        found = self.hub.storage.get_schedule(schedule_id) if _ID.fullmatch(schedule_id) else None
        if found is None:
            raise UnknownScheduleError(schedule_id)
        return found

    def all(self, job: str | None = None) -> list[RuntimeSchedule]:
        """Every schedule (of one job), oldest first.

        A job no longer defined still lists the schedules storage holds for it; a name that
        is neither defined nor in storage is an :class:`~cronhub.errors.UnknownJobError`.
        """
        found = self.hub.storage.list_schedules(job)
        if job is not None and not found and job not in self.hub.jobs:
            self.hub.get_job(job)
        return found

    def remove(self, schedule_id: str) -> RuntimeSchedule:
        """Delete a schedule (its runs stay in history); return what was deleted."""
        self.get(schedule_id)
        removed = self.hub.storage.delete_schedule(schedule_id)
        if removed is None:
            raise UnknownScheduleError(schedule_id)
        return removed

    def pause(self, schedule_id: str) -> RuntimeSchedule:
        """Pause a schedule: none of its slots runs, or is caught up later."""
        return self._set_paused(schedule_id, True)

    def resume(self, schedule_id: str) -> RuntimeSchedule:
        """Resume a paused schedule; its slots restart from now (paused time is not caught up)."""
        return self._set_paused(schedule_id, False)

    def _set_paused(self, schedule_id: str, paused: bool) -> RuntimeSchedule:
        self.get(schedule_id)
        changed = self.hub.storage.set_schedule_paused(
            schedule_id, paused, now=self.hub.clock.now()
        )
        if changed is None:
            raise UnknownScheduleError(schedule_id)
        return changed

    def describe(self, schedules: Sequence[RuntimeSchedule]) -> list[dict[str, Any]]:
        """Schedule objects (with ``next_run`` from now) for the CLI and the API."""
        now = self.hub.clock.now()
        return [schedule.to_dict(now=now) for schedule in schedules]
