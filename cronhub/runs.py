"""Value types of runs: ``Run``, ``RunStatus``, ``Trigger``, ``Alert`` and claim requests."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cronhub.slots_init import stores_through_slots


class RunStatus(StrEnum):
    """Where a run stands. Terminal statuses never change again."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    SKIPPED = "skipped"
    MISSED = "missed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """``True`` for every status but ``queued`` and ``running``."""
        return self not in _ACTIVE

    @property
    def failure(self) -> bool:
        """``True`` for the statuses that count as a failed attempt (and may be retried)."""
        return self in _FAILURES


# Python 3.11 reads an enum's members through a ``__getattr__`` of its metaclass (dropped in
# 3.12), several times slower than reading a module-level name: the code that runs for every
# run (these properties, the claim, the outcome, its alerts) reads the members it compares
# with from module-level names such as these.
_ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
_FAILURES = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED)


class Trigger(StrEnum):
    """Why a run exists."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    CATCH_UP = "catch_up"
    STARTUP = "startup"


class Overlap(StrEnum):
    """What a new slot does while a run of the same job is still active."""

    SKIP = "skip"
    ALLOW = "allow"
    QUEUE = "queue"
    REPLACE = "replace"


@stores_through_slots
@dataclass(frozen=True, slots=True)
class Run:
    """One row of history: an attempt at a job's slot, or a record that a slot did not run.

    Times are aware datetimes in UTC. ``scheduled_for`` is the nominal slot (``None`` for a
    manual run); ``(job, schedule_id, scheduled_for, attempt)`` is unique in storage.
    """

    #: Storage-assigned identifier, increasing with creation order.
    id: int
    #: The job's name.
    job: str
    #: The nominal slot in UTC, ``None`` for manual runs.
    scheduled_for: datetime | None
    trigger: Trigger
    status: RunStatus
    #: 1 for the first attempt at a slot, 2 for the first retry, ...
    attempt: int = 1
    #: The runtime schedule this slot belongs to; ``""`` for the job's own schedule.
    schedule_id: str = ""
    #: The instance that owns (or owned) the run.
    instance: str | None = None
    created_at: datetime | None = None
    #: A queued run may not start before this time (retries with backoff).
    not_before: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    #: The lease: a running run whose lease expired belongs to a crashed owner.
    lease_expires_at: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    #: What the job logged through ``ctx.log``.
    log: str = ""
    #: For a ``missed`` summary record: how many slots it stands for.
    missed_count: int = 0
    #: ``True`` when the run failed its last attempt and is listed as a dead letter.
    dead_letter: bool = False
    #: JSON-serialisable parameters (runtime schedules, manual runs).
    params: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Run:
        """Return a copy with ``changes`` applied (``TypeError`` for an unknown field)."""
        # ``dataclasses.replace`` introspects the fields on every call: three copies per run
        # (claim, finish, the finished run) made it the largest single cost of a run.
        unknown = changes.keys() - _RUN_FIELD_SET
        if unknown:
            raise TypeError(f"Run has no field(s) {', '.join(sorted(unknown))}")
        values = [changes[n] if n in changes else getattr(self, n) for n in _RUN_FIELDS]
        return Run(*values)

    @property
    def error(self) -> dict[str, str] | None:
        """``{"type": ..., "message": ...}`` or ``None``."""
        if self.error_type is None and self.error_message is None:
            return None
        return {"type": self.error_type or "", "message": self.error_message or ""}

    def to_dict(self, *, detail: bool = False) -> dict[str, Any]:
        """The run object of the CLI and HTTP API; ``detail`` adds traceback and log."""
        data: dict[str, Any] = {
            "id": self.id,
            "job": self.job,
            "scheduled_for": _iso(self.scheduled_for),
            "trigger": str(self.trigger),
            "status": str(self.status),
            "attempt": self.attempt,
            "schedule_id": self.schedule_id or None,
            "instance": self.instance,
            "created_at": _iso(self.created_at),
            "not_before": _iso(self.not_before),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_ms": self.duration_ms,
            "error": self.error,
            "missed_count": self.missed_count,
            "dead_letter": self.dead_letter,
        }
        if detail:
            data["traceback"] = self.traceback
            data["log"] = self.log
            data["params"] = self.params
        return data


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


#: ``Run``'s fields in order (for :meth:`Run.replace`).
_RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Run))
_RUN_FIELD_SET = frozenset(_RUN_FIELDS)


@stores_through_slots
@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A request to create a run for a slot, if no instance has claimed that slot yet.

    Storage inserts the row only if ``(job, schedule_id, scheduled_for, attempt)`` is absent
    (manual runs, ``scheduled_for=None``, are never deduplicated), and applies ``overlap``
    against the job's active runs in the same transaction:

    - ``skip``: an active run exists -> the row is inserted as ``skipped``;
    - ``allow``: the row is inserted as ``running``;
    - ``queue``: an active run exists -> the row is inserted as ``queued`` (at most one queued
      run per job waits; a further one is ``skipped``);
    - ``replace``: active runs are set to ``cancelled`` (their owners lose their lease) and the
      row is inserted as ``running``.

    ``status=QUEUED`` asks for a queued row whatever the overlap (retries, run-now for another
    instance); ``status=MISSED`` or ``SKIPPED`` records a slot that will not run.
    A job that is paused gets no row at all (the claim answers ``ClaimOutcome.PAUSED``),
    unless ``ignore_pause`` is set (run-now of a paused job).
    ``claim_ahead`` says the claim is made that many seconds before ``scheduled_for`` on
    purpose (the engine starts the run at its time): a storage that holds claims back until its
    own clock reaches the slot holds them back until ``scheduled_for - claim_ahead`` instead.
    """

    job: str
    scheduled_for: datetime | None
    trigger: Trigger = Trigger.SCHEDULE
    attempt: int = 1
    schedule_id: str = ""
    overlap: Overlap = Overlap.SKIP
    status: RunStatus = RunStatus.RUNNING
    not_before: datetime | None = None
    missed_count: int = 0
    ignore_pause: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    claim_ahead: float = 0.0


class ClaimOutcome(StrEnum):
    """What became of a :class:`ClaimRequest`."""

    #: A ``running`` row owned by the claiming instance: start the job now.
    CLAIMED = "claimed"
    #: A row was inserted with another status (``skipped``, ``queued``, ``missed``).
    RECORDED = "recorded"
    #: Another instance (or an earlier tick) already holds this slot: nothing was written.
    TAKEN = "taken"
    #: The job is paused: nothing was written.
    PAUSED = "paused"


@stores_through_slots
@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The answer to one :class:`ClaimRequest`: the outcome and the row written, if any."""

    request: ClaimRequest
    outcome: ClaimOutcome
    run: Run | None = None


@stores_through_slots
@dataclass(frozen=True, slots=True)
class Completion:
    """How an owner ends a run, and what follows from it in the same transaction.

    ``retry_at`` queues attempt ``attempt + 1`` of the same slot with ``not_before=retry_at``;
    ``dead_letter`` marks the run as a dead letter; ``alerts`` are written to the outbox.
    ``started_at``, when given, replaces the run's start time: a run claimed ahead of its slot
    is recorded as started when it was claimed, and really starts at its slot.
    """

    status: RunStatus
    finished_at: datetime
    duration_ms: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    log: str = ""
    retry_at: datetime | None = None
    dead_letter: bool = False
    alerts: tuple[Alert, ...] = ()
    started_at: datetime | None = None


@stores_through_slots
@dataclass(frozen=True, slots=True)
class Alert:
    """Something a person should hear about. The core decides when; plugins decide how.

    ``kind`` is one of ``failure`` (a failure streak begins), ``recovery``, ``crash``,
    ``timeout``, ``dead_letter``, ``missed``.
    """

    kind: str
    job: str
    message: str
    run_id: int | None = None
    status: str | None = None
    attempt: int | None = None
    scheduled_for: datetime | None = None
    error: str | None = None
    duration_ms: int | None = None
    created_at: datetime | None = None
    #: Extra data for the alert plugins (``missed_count``, ``tz``...).
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, as stored in the outbox."""
        return {
            "kind": self.kind,
            "job": self.job,
            "message": self.message,
            "run_id": self.run_id,
            "status": self.status,
            "attempt": self.attempt,
            "scheduled_for": _iso(self.scheduled_for),
            "error": self.error,
            "duration_ms": self.duration_ms,
            "created_at": _iso(self.created_at),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        for key in ("scheduled_for", "created_at"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """An alert waiting in the outbox for delivery."""

    id: int
    alert: Alert
    attempts: int = 0
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobState:
    """Persistent per-job state kept by storage."""

    job: str
    paused: bool = False
    #: The newest slot this job has handled (run, skipped or missed), or ``None``.
    high_water: datetime | None = None
    last_run: Run | None = None
