"""The ``Storage`` protocol: what a storage plugin implements.

A storage backend holds runs (history), per-job state (paused, high-water mark), dead letters
and the alert outbox, and it is where exactly-once is decided: every claim is an
insert-if-absent under the unique key ``(job, schedule_id, scheduled_for, attempt)`` in the same
transaction as the run row. Methods are plain blocking calls; the engine runs them in a worker
thread. Every method that takes ``now`` uses it as "the current time" (a backend with a
trustworthy shared clock, such as PostgreSQL's ``clock_timestamp()``, may use its own instead).

Storage plugins return an object of this shape from :func:`cronhub.hookspecs.cronhub_storage`
and check themselves with the conformance suite in :mod:`cronhub.testing`.

Optional capabilities the engine uses when a backend has them:

- ``subscribe(callback, *, instance, version)`` / ``unsubscribe()``: events from every
  instance (PostgreSQL's ``LISTEN``/``NOTIFY``), among them ``{"event": "schedule.changed"}``
  after a runtime schedule was added, removed, paused or resumed anywhere;
- ``watch_schedules(callback) -> unwatch``: ``callback()`` after each schedule change made
  through this storage object (in this process), so a change made here is picked up at once;
- ``process_local = True``: nothing outside this process can change the data (``memory://``),
  so watching is enough and :meth:`Storage.schedules_revision` need not be polled;
- ``in_memory = True``: every call works on this process's memory and never blocks, so the
  engine calls it in the event loop's thread rather than in its storage thread pool.

Without events from other processes, each engine reads ``schedules_revision()`` once a second.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cronhub.runs import (
        Alert,
        ClaimRequest,
        ClaimResult,
        Completion,
        JobState,
        OutboxItem,
        Run,
        RunStatus,
    )
    from cronhub.runtime_schedules import RuntimeSchedule


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Filters of a history query. ``before`` is a run id cursor: only runs with a smaller id."""

    job: str | None = None
    status: RunStatus | None = None
    before: int | None = None
    limit: int = 50
    dead_letter: bool | None = None


#: Decides, inside the reaper's transaction, what follows a crashed run: a
#: :class:`~cronhub.runs.Completion` whose ``retry_at``/``dead_letter``/``alerts`` apply.
CrashPolicy = Callable[["Run"], "Completion"]


@runtime_checkable
class Storage(Protocol):
    """A storage backend. See the module docstring for the guarantees each method must keep."""

    #: The URL it was opened with, with any password masked (safe to print).
    url: str

    # -- lifecycle ----------------------------------------------------------------------
    def open(self) -> None:
        """Connect, create or migrate the schema. Called once before any other method."""
        ...

    def close(self) -> None:
        """Release connections. Safe to call twice."""
        ...

    def ping(self) -> bool:
        """``True`` when the backend answers (used by ``/healthz``)."""
        ...

    # -- claims and run ownership ---------------------------------------------------------
    def claim(
        self,
        requests: Sequence[ClaimRequest],
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
    ) -> list[ClaimResult]:
        """Claim slots, in one transaction, answering one result per request, in order.

        A request whose key exists answers ``TAKEN`` and writes nothing, unless that row is
        ``running`` under ``instance`` (a retried claim whose first commit succeeded but whose
        answer was lost): then it answers ``CLAIMED`` with that row again, and the engine,
        which remembers the runs it started, does not start it twice. A paused job answers
        ``PAUSED``. Rows inserted as ``running`` belong to ``instance`` with
        ``started_at=now`` and ``lease_expires_at = now + lease_ttl``. Overlap is applied per
        :class:`~cronhub.runs.ClaimRequest`, counting rows inserted earlier in the same batch.

        A request whose ``schedule_id`` names a runtime schedule (non-empty, not starting
        with ``@``; see :mod:`cronhub.runtime_schedules`) answers ``PAUSED`` and writes nothing
        when that schedule is paused, does not exist (it was removed) or belongs to another job.

        In the same transaction, each job's high-water mark moves forward to the newest
        ``scheduled_for`` among its requests with ``schedule_id == ""`` and a trigger of
        ``schedule`` or ``catch_up`` (whatever their outcome, ``TAKEN`` and ``PAUSED``
        included), so that paused time is never caught up. Each existing runtime schedule's
        own mark moves the same way with the requests that name it.
        """
        ...

    def take_queued(
        self,
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
        jobs: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Atomically start queued runs whose ``not_before`` has passed (or is unset).

        Each taken run becomes ``running``, owned by ``instance``, with ``started_at=now``,
        leased until ``now + lease_ttl``, oldest first, at most one per job per call. Only
        runs of ``jobs`` are taken (all jobs when ``None``). A queued run waits while its job
        has a ``running`` run; runs of paused jobs wait too, except manual ones.
        """
        ...

    def heartbeat(
        self, run_ids: Iterable[int], *, instance: str, now: datetime, lease_ttl: float
    ) -> set[int]:
        """Extend the leases of runs still ``running`` and owned by ``instance``.

        Fenced: a run owned by someone else, or no longer running (reaped, cancelled),
        is not touched. Returns the ids whose lease was extended; the owner must cancel the
        others and write nothing more for them.
        """
        ...

    def finish(self, run_id: int, completion: Completion, *, instance: str) -> bool:
        """End a run owned by ``instance`` and apply what follows, in one transaction.

        Fenced like :meth:`heartbeat`: returns ``False`` and writes nothing when the run is
        not ``running`` under ``instance``. Otherwise records the completion, queues the
        retry (attempt + 1, trigger ``retry``, ``not_before=completion.retry_at``), marks the
        dead letter and writes ``completion.alerts`` to the outbox.
        """
        ...

    def finish_many(
        self, completions: Sequence[tuple[int, Completion]], *, instance: str
    ) -> list[bool]:
        """:meth:`finish` for several runs in one transaction; one answer per run, in order."""
        ...

    def cancel(self, run_id: int, *, now: datetime, reason: str = "cancelled") -> Run | None:
        """Set a ``queued`` or ``running`` run to ``cancelled`` (its owner loses the lease).

        Returns the updated run, or ``None`` when it is unknown or already terminal.
        """
        ...

    def reap(self, *, now: datetime, policy: CrashPolicy, limit: int = 100) -> list[Run]:
        """Mark running runs whose lease expired before ``now`` as ``crashed``.

        Atomic per run: only one instance's reaper wins a given run. For each, ``policy``
        decides the follow-up (retry, dead letter, alerts), applied in the same transaction.
        Returns the crashed runs.
        """
        ...

    def release(self, *, instance: str, now: datetime, status: RunStatus) -> list[Run]:
        """End every run still ``running`` under ``instance`` with ``status`` (shutdown)."""
        ...

    # -- history -------------------------------------------------------------------------
    def get_run(self, run_id: int) -> Run | None:
        """One run with traceback and log, or ``None``."""
        ...

    def list_runs(self, query: RunFilter) -> list[Run]:
        """Runs matching ``query``, newest (highest id) first, at most ``query.limit``."""
        ...

    def active_runs(self, job: str | None = None) -> list[Run]:
        """``queued`` and ``running`` runs, optionally of one job."""
        ...

    def recent_runs(self, jobs: Iterable[str], *, per_job: int = 10) -> dict[str, list[Run]]:
        """The newest ``per_job`` runs of each named job, newest first, without traceback and log.

        Every name is a key of the answer (``[]`` for a job without runs). Used by the
        dashboard's jobs table, so it must not cost a round trip per job, nor read a job's
        whole history: one query, or a few for very many names, each an index range scan.
        """
        ...

    def count_runs(
        self, *, finished_after: datetime | None = None, dead_letter: bool | None = None
    ) -> dict[str, int]:
        """How many runs there are of each status (a status without runs is left out).

        With ``finished_after``, only runs whose ``finished_at`` is later (active runs have
        none and are not counted); with ``dead_letter``, only runs with that flag. Used by
        ``/api/stats`` for the last hour and day, so it must be an index range scan (on
        ``finished_at``, or on the dead-letter flag), never a read of the whole history.
        """
        ...

    def purge(self, *, older_than: datetime) -> int:
        """Delete terminal runs finished (or created) before ``older_than``; return how many."""
        ...

    # -- job state -----------------------------------------------------------------------
    def job_states(self, jobs: Iterable[str] | None = None) -> dict[str, JobState]:
        """State of the named jobs (all known jobs when ``None``), with ``last_run``.

        A job storage has never seen answers a default :class:`~cronhub.runs.JobState`.
        """
        ...

    def set_paused(self, job: str, paused: bool, *, now: datetime) -> None:
        """Persist the paused flag of ``job``."""
        ...

    def advance_high_water(self, job: str, slot: datetime) -> datetime:
        """Move the job's high-water mark forward to ``slot`` (never back); return the mark."""
        ...

    # -- runtime schedules ---------------------------------------------------------------
    def add_schedule(self, schedule: RuntimeSchedule) -> RuntimeSchedule:
        """Store a new runtime schedule; return it as stored.

        Insert-if-absent by id: when the id exists (a retried call whose first answer was
        lost), nothing changes and the stored schedule is returned. Bumps the revision.
        """
        ...

    def get_schedule(self, schedule_id: str) -> RuntimeSchedule | None:
        """One runtime schedule, with its high-water mark, or ``None``."""
        ...

    def list_schedules(self, job: str | None = None) -> list[RuntimeSchedule]:
        """Runtime schedules (of one job), oldest first (by ``created_at``, then id)."""
        ...

    def delete_schedule(self, schedule_id: str) -> RuntimeSchedule | None:
        """Delete a runtime schedule (its runs stay in history); return it, or ``None``.

        Bumps the revision when something was deleted.
        """
        ...

    def set_schedule_paused(
        self, schedule_id: str, paused: bool, *, now: datetime
    ) -> RuntimeSchedule | None:
        """Pause or resume a runtime schedule; return it, or ``None`` when it does not exist.

        Sets ``updated_at=now`` and bumps the revision. Resuming moves the schedule's mark
        forward to ``now``, so that no instance catches up the paused time.
        """
        ...

    def schedules_revision(self) -> int:
        """A number that grows with every add, delete, pause and resume of a schedule.

        Claims (which move marks) leave it alone. It must be cheap (one indexed read): an
        instance whose storage cannot notify reads it once a second to learn of changes
        made by other processes.
        """
        ...

    # -- dead letters --------------------------------------------------------------------
    def dead_letters(self, *, job: str | None = None, limit: int = 100) -> list[Run]:
        """Runs that failed their last attempt and were not cleared, newest first."""
        ...

    def clear_dead_letters(self, *, job: str | None = None) -> int:
        """Clear dead letters (of one job, or all); return how many."""
        ...

    # -- alert outbox --------------------------------------------------------------------
    def add_alerts(self, alerts: Sequence[Alert], *, now: datetime) -> None:
        """Write alerts to the outbox outside any other state change."""
        ...

    def pending_alerts(self, *, now: datetime, limit: int = 50) -> list[OutboxItem]:
        """Outbox items due for (re)delivery, oldest first."""
        ...

    def alert_delivered(self, item_id: int) -> None:
        """Remove a delivered outbox item."""
        ...

    def alert_failed(self, item_id: int, *, retry_at: datetime, error: str) -> None:
        """Record a failed delivery and when to try again."""
        ...


def job_set(jobs: Collection[str] | None) -> AbstractSet[str] | None:
    """``take_queued``'s ``jobs`` as a set to test names against (``None``: every job).

    A set already (the engine passes its jobs' keys) is used as it is: copying 100,000 names
    at every call cost more than the call.
    """
    return None if jobs is None else jobs if isinstance(jobs, AbstractSet) else frozenset(jobs)
