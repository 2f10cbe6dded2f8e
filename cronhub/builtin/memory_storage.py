"""The ``memory://`` storage backend: everything in this process, nothing persists.

It keeps every promise of :class:`cronhub.storage.Storage` within one process (the engine
calls storage from worker threads, so all state sits behind one lock), and it passes the same
conformance suite (:mod:`cronhub.storage_contract`) as the SQL backends. Use it for tests,
demos and single-process tools; ``serve`` warns that history is lost on exit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cronhub.plugins import hookimpl
from cronhub.runs import (
    Alert,
    ClaimOutcome,
    ClaimRequest,
    ClaimResult,
    Completion,
    JobState,
    OutboxItem,
    Overlap,
    Run,
    RunStatus,
    Trigger,
)
from cronhub.runtime_schedules import RuntimeSchedule, is_runtime_schedule_id, schedule_marks
from cronhub.storage import job_set

if TYPE_CHECKING:
    from cronhub.storage import CrashPolicy, RunFilter

_SlotKey = tuple[str, str, datetime, int]
log = logging.getLogger("cronhub.storage")


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _duration_ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, round((end - start).total_seconds() * 1000))


def _light(run: Run) -> Run:
    """A run as list queries return it: without traceback and log (as the SQL backends)."""
    return run.replace(traceback=None, log="") if run.traceback or run.log else run


@dataclass
class _JobRow:
    paused: bool = False
    high_water: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class _OutboxRow:
    alert: Alert
    created_at: datetime
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None


class MemoryStorage:
    """In-process implementation of :class:`cronhub.storage.Storage`.

    :param url: The URL it was asked for (``memory://``), kept in :attr:`url`.
    :param retention: How long :meth:`purge_expired` keeps terminal runs (``None``: forever).
    """

    #: Only this process can change the data: watching schedule changes is enough, the
    #: engine need not poll :meth:`schedules_revision`.
    process_local = True
    in_memory = True

    def __init__(self, url: str = "memory://", *, retention: timedelta | None = None) -> None:
        #: The URL it was created for (a memory URL carries no secret).
        self.url = url
        #: How long terminal runs are kept by :meth:`purge_expired`; ``None`` keeps them.
        self.retention = retention
        # RLock: policies called by reap() may call back into storage from the same thread.
        self._lock = threading.RLock()
        self._runs: dict[int, Run] = {}  # in id order: dicts keep insertion order
        self._keys: dict[_SlotKey, int] = {}
        self._by_job: dict[str, list[int]] = {}
        self._active: dict[int, None] = {}  # ordered set of queued and running run ids
        # The same ids by job: a claim checks its job's active runs without scanning all.
        self._active_by_job: dict[str, dict[int, None]] = {}
        self._jobs: dict[str, _JobRow] = {}
        self._outbox: dict[int, _OutboxRow] = {}
        self._next_run_id = 1
        self._next_item_id = 1
        self._schedules: dict[str, RuntimeSchedule] = {}
        self._revision = 0
        self._schedule_watchers: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"MemoryStorage({self.url!r})"

    # -- lifecycle ----------------------------------------------------------------------------
    def open(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    def ping(self) -> bool:
        """Always ``True``."""
        return True

    # -- internal bookkeeping -----------------------------------------------------------------
    def _put(self, run: Run) -> Run:
        self._runs[run.id] = run
        if run.status.terminal:
            self._active.pop(run.id, None)
            of_job = self._active_by_job.get(run.job)
            if of_job is not None:
                of_job.pop(run.id, None)
                if not of_job:
                    del self._active_by_job[run.job]
        else:
            self._active[run.id] = None
            self._active_by_job.setdefault(run.job, {})[run.id] = None
        return run

    def _insert(self, run: Run) -> Run | None:
        """Insert-if-absent under the slot key; ``None`` when the key exists."""
        key: _SlotKey | None = None
        if run.scheduled_for is not None:
            key = (run.job, run.schedule_id, run.scheduled_for, run.attempt)
            if key in self._keys:
                return None
        run = run.replace(id=self._next_run_id)
        self._next_run_id += 1
        if key is not None:
            self._keys[key] = run.id
        self._by_job.setdefault(run.job, []).append(run.id)
        return self._put(run)

    def _active_runs(self) -> Iterator[Run]:
        return (self._runs[i] for i in self._active)

    def _active_of(self, job: str, status: RunStatus) -> list[int]:
        return [i for i in self._active_by_job.get(job, ()) if self._runs[i].status == status]

    def _paused(self, job: str) -> bool:
        row = self._jobs.get(job)
        return row is not None and row.paused

    def _end(self, run: Run, status: RunStatus, now: datetime, reason: str | None) -> Run:
        changes: dict[str, object] = {
            "status": status,
            "finished_at": now,
            "lease_expires_at": None,
            "duration_ms": _duration_ms(run.started_at, now),
        }
        if reason is not None:
            changes["error_message"] = reason
        return self._put(run.replace(**changes))

    def _follow_up(self, run: Run, completion: Completion, now: datetime) -> None:
        if completion.retry_at is not None:
            retry = Run(
                id=0,
                job=run.job,
                scheduled_for=run.scheduled_for,
                trigger=Trigger.RETRY,
                status=RunStatus.QUEUED,
                attempt=run.attempt + 1,
                schedule_id=run.schedule_id,
                created_at=now,
                not_before=_utc(completion.retry_at),
                missed_count=run.missed_count,
                params=dict(run.params),
            )
            self._insert(retry)
        self._add_alerts(completion.alerts, now)

    # -- claims and run ownership -------------------------------------------------------------
    def claim(
        self,
        requests: Sequence[ClaimRequest],
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
    ) -> list[ClaimResult]:
        """Claim slots atomically; see :meth:`cronhub.storage.Storage.claim`."""
        now = now.astimezone(UTC)
        lease = now + timedelta(seconds=lease_ttl)
        with self._lock:
            # Decide everything first, so that a bad request changes nothing.
            for request in requests:
                _decide(request, 0, 0)
            results: list[ClaimResult] = []
            in_batch: dict[int, int] = {}
            for request in requests:
                if (self._paused(request.job) and not request.ignore_pause) or self._stopped(
                    request
                ):
                    results.append(ClaimResult(request, ClaimOutcome.PAUSED))
                    continue
                running = self._active_of(request.job, RunStatus.RUNNING)
                queued = self._active_of(request.job, RunStatus.QUEUED)
                status = _decide(request, len(running), len(queued))
                is_running = status is RunStatus.RUNNING
                row = Run(
                    id=0,
                    job=request.job,
                    scheduled_for=_utc(request.scheduled_for),
                    trigger=Trigger(request.trigger),
                    status=status,
                    attempt=request.attempt,
                    schedule_id=request.schedule_id,
                    instance=None if status is RunStatus.QUEUED else instance,
                    created_at=now,
                    not_before=_utc(request.not_before) if status is RunStatus.QUEUED else None,
                    started_at=now if is_running else None,
                    finished_at=now if status.terminal else None,
                    lease_expires_at=lease if is_running else None,
                    missed_count=request.missed_count,
                    params=dict(request.params),
                )
                run = self._insert(row)
                if run is None:
                    results.append(self._existing_claim(request, row, instance))
                    continue
                if is_running and request.overlap == Overlap.REPLACE:
                    for old_id in running:
                        old = self._end(
                            self._runs[old_id],
                            RunStatus.CANCELLED,
                            now,
                            f"replaced by run {run.id}",
                        )
                        if old_id in in_batch:
                            index = in_batch[old_id]
                            results[index] = ClaimResult(
                                results[index].request, ClaimOutcome.RECORDED, old
                            )
                in_batch[run.id] = len(results)
                outcome = ClaimOutcome.CLAIMED if is_running else ClaimOutcome.RECORDED
                results.append(ClaimResult(request, outcome, run))
            for job, mark in _high_water_marks(requests).items():
                self._advance(job, mark)
            for schedule_id, mark in schedule_marks(requests).items():
                schedule = self._schedules.get(schedule_id)
                if schedule is not None and (
                    schedule.high_water is None or mark > schedule.high_water
                ):
                    self._schedules[schedule_id] = schedule.replace(high_water=mark)
            return results

    def _stopped(self, request: ClaimRequest) -> bool:
        """A request of a runtime schedule that is paused, gone or another job's."""
        if not is_runtime_schedule_id(request.schedule_id):
            return False
        schedule = self._schedules.get(request.schedule_id)
        return schedule is None or schedule.paused or schedule.job != request.job

    def _existing_claim(self, request: ClaimRequest, row: Run, instance: str) -> ClaimResult:
        """``TAKEN``, or ``CLAIMED`` again when the slot's row runs under ``instance``."""
        assert row.scheduled_for is not None
        key = (row.job, row.schedule_id, row.scheduled_for, row.attempt)
        existing = self._runs[self._keys[key]]
        if existing.status is RunStatus.RUNNING and existing.instance == instance:
            return ClaimResult(request, ClaimOutcome.CLAIMED, existing)
        return ClaimResult(request, ClaimOutcome.TAKEN)

    def _advance(self, job: str, slot: datetime) -> datetime:
        row = self._jobs.setdefault(job, _JobRow())
        if row.high_water is None or slot > row.high_water:
            row.high_water = slot
        return row.high_water

    def take_queued(
        self,
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
        jobs: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Start due queued runs; see :meth:`cronhub.storage.Storage.take_queued`."""
        now = now.astimezone(UTC)
        lease = now + timedelta(seconds=lease_ttl)
        wanted = job_set(jobs)
        taken: list[Run] = []
        with self._lock:
            busy = {
                self._runs[i].job for i in self._active if self._runs[i].status is RunStatus.RUNNING
            }
            for run_id in sorted(self._active):
                if len(taken) >= limit:
                    break
                run = self._runs[run_id]
                if run.status is not RunStatus.QUEUED or run.job in busy:
                    continue
                if wanted is not None and run.job not in wanted:
                    continue
                if run.not_before is not None and run.not_before > now:
                    continue
                if run.trigger is not Trigger.MANUAL and self._paused(run.job):
                    continue
                started = run.replace(
                    status=RunStatus.RUNNING,
                    instance=instance,
                    started_at=now,
                    lease_expires_at=lease,
                )
                taken.append(self._put(started))
                busy.add(run.job)  # at most one per job per call
        return taken

    def heartbeat(
        self, run_ids: Iterable[int], *, instance: str, now: datetime, lease_ttl: float
    ) -> set[int]:
        """Extend owned leases (fenced); see :meth:`cronhub.storage.Storage.heartbeat`."""
        lease = now.astimezone(UTC) + timedelta(seconds=lease_ttl)
        renewed: set[int] = set()
        with self._lock:
            for run_id in set(run_ids):
                run = self._runs.get(run_id)
                if run is None or run.status is not RunStatus.RUNNING or run.instance != instance:
                    continue
                self._put(run.replace(lease_expires_at=lease))
                renewed.add(run_id)
        return renewed

    def finish(self, run_id: int, completion: Completion, *, instance: str) -> bool:
        """End an owned run and apply retry/dead letter/alerts atomically."""
        return self.finish_many([(run_id, completion)], instance=instance)[0]

    def finish_many(
        self, completions: Sequence[tuple[int, Completion]], *, instance: str
    ) -> list[bool]:
        """:meth:`finish` for several runs atomically; one answer per run, in order."""
        for run_id, completion in completions:
            if not completion.status.terminal:
                raise ValueError(
                    f"run {run_id}: finish needs a terminal status, not {completion.status.value}"
                )
        with self._lock:
            return [self._finish(run_id, done, instance) for run_id, done in completions]

    def _finish(self, run_id: int, completion: Completion, instance: str) -> bool:
        finished_at = completion.finished_at.astimezone(UTC)
        run = self._runs.get(run_id)
        if run is None or run.status is not RunStatus.RUNNING or run.instance != instance:
            return False
        started_at = run.started_at
        if completion.started_at is not None:
            started_at = completion.started_at.astimezone(UTC)
        duration = completion.duration_ms
        if duration is None:
            duration = _duration_ms(started_at, finished_at)
        ended = self._put(
            run.replace(
                started_at=started_at,
                status=completion.status,
                finished_at=finished_at,
                duration_ms=duration,
                lease_expires_at=None,
                error_type=completion.error_type,
                error_message=completion.error_message,
                traceback=completion.traceback,
                log=completion.log,
                dead_letter=completion.dead_letter,
            )
        )
        self._follow_up(ended, completion, finished_at)
        return True

    def cancel(self, run_id: int, *, now: datetime, reason: str = "cancelled") -> Run | None:
        """Cancel a queued or running run; ``None`` when unknown or already terminal."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.status.terminal:
                return None
            return self._end(run, RunStatus.CANCELLED, now.astimezone(UTC), reason)

    def reap(self, *, now: datetime, policy: CrashPolicy, limit: int = 100) -> list[Run]:
        """Mark runs with expired leases ``crashed`` and apply ``policy``, atomically."""
        now = now.astimezone(UTC)
        with self._lock:
            expired = [
                run
                for run in (self._runs[i] for i in self._active)
                if run.status is RunStatus.RUNNING
                and run.lease_expires_at is not None
                and run.lease_expires_at < now
            ]
            expired.sort(key=lambda run: (run.lease_expires_at, run.id))
            crashed: list[Run] = []
            for run in expired[:limit]:
                lease = run.lease_expires_at
                assert lease is not None
                dead = run.replace(
                    status=RunStatus.CRASHED,
                    finished_at=now,
                    lease_expires_at=None,
                    duration_ms=_duration_ms(run.started_at, now),
                    error_type="LeaseExpired",
                    error_message=(
                        f"lease expired at {lease.isoformat()}: instance {run.instance} "
                        "stopped renewing it (crashed or stalled)"
                    ),
                )
                completion = policy(dead)
                follow: dict[str, object] = {"dead_letter": completion.dead_letter}
                for name in ("error_type", "error_message", "traceback"):
                    if getattr(completion, name) is not None:
                        follow[name] = getattr(completion, name)
                dead = self._put(dead.replace(**follow))
                self._follow_up(dead, completion, now)
                crashed.append(dead)
            return crashed

    def release(self, *, instance: str, now: datetime, status: RunStatus) -> list[Run]:
        """End every run still ``running`` under ``instance`` with ``status``."""
        if not status.terminal:
            raise ValueError(f"release needs a terminal status, not {status.value}")
        now = now.astimezone(UTC)
        reason = f"released by instance {instance} at shutdown"
        with self._lock:
            owned = [
                self._runs[i]
                for i in self._active
                if self._runs[i].status is RunStatus.RUNNING and self._runs[i].instance == instance
            ]
            return [self._end(run, status, now, reason) for run in owned]

    # -- history ------------------------------------------------------------------------------
    def get_run(self, run_id: int) -> Run | None:
        """One run with traceback and log, or ``None``."""
        with self._lock:
            return self._runs.get(run_id)

    def _newest_first(self, job: str | None) -> Iterator[Run]:
        ids = reversed(self._by_job.get(job, [])) if job is not None else reversed(self._runs)
        return (self._runs[i] for i in ids)

    def list_runs(self, query: RunFilter) -> list[Run]:
        """Runs matching ``query``, newest first (without traceback and log)."""
        found: list[Run] = []
        with self._lock:
            for run in self._newest_first(query.job):
                if len(found) >= query.limit:
                    break
                if query.before is not None and run.id >= query.before:
                    continue
                if query.status is not None and run.status != query.status:
                    continue
                if query.dead_letter is not None and run.dead_letter != query.dead_letter:
                    continue
                found.append(_light(run))
        return found

    def active_runs(self, job: str | None = None) -> list[Run]:
        """``queued`` and ``running`` runs, oldest first, optionally of one job."""
        with self._lock:
            active = [self._runs[i] for i in sorted(self._active)]
        return [_light(run) for run in active if job is None or run.job == job]

    def recent_runs(self, jobs: Iterable[str], *, per_job: int = 10) -> dict[str, list[Run]]:
        """The newest ``per_job`` runs of each named job, newest first (light)."""
        with self._lock:
            return {
                name: [
                    _light(self._runs[i]) for i in reversed(self._by_job.get(name, [])[-per_job:])
                ]
                if per_job > 0
                else []
                for name in dict.fromkeys(jobs)
            }

    def count_runs(
        self, *, finished_after: datetime | None = None, dead_letter: bool | None = None
    ) -> dict[str, int]:
        """How many runs there are of each status, optionally finished after a time."""
        counts: dict[str, int] = {}
        with self._lock:
            for run in self._runs.values():
                if finished_after is not None and (
                    run.finished_at is None or run.finished_at <= finished_after
                ):
                    continue
                if dead_letter is not None and run.dead_letter != dead_letter:
                    continue
                counts[run.status.value] = counts.get(run.status.value, 0) + 1
        return counts

    def purge(self, *, older_than: datetime) -> int:
        """Delete terminal runs finished (or created) before ``older_than``."""
        with self._lock:
            doomed = set()
            for run in self._runs.values():
                ended = run.finished_at or run.created_at
                if run.status.terminal and ended is not None and ended < older_than:
                    doomed.add(run.id)
            for run_id in doomed:
                run = self._runs.pop(run_id)
                if run.scheduled_for is not None:
                    self._keys.pop((run.job, run.schedule_id, run.scheduled_for, run.attempt), None)
            if doomed:
                for job, ids in list(self._by_job.items()):
                    self._by_job[job] = [i for i in ids if i not in doomed]
            return len(doomed)

    def purge_expired(self, *, now: datetime) -> int:
        """Apply :attr:`retention`: purge runs that ended before ``now - retention``."""
        if self.retention is None:
            return 0
        return self.purge(older_than=now - self.retention)

    # -- job state ----------------------------------------------------------------------------
    def job_states(self, jobs: Iterable[str] | None = None) -> dict[str, JobState]:
        """State of the named jobs (all known when ``None``), with ``last_run``."""
        with self._lock:
            if jobs is None:
                known = set(self._jobs) | {j for j, ids in self._by_job.items() if ids}
                names = sorted(known)
            else:
                names = list(dict.fromkeys(jobs))
            states: dict[str, JobState] = {}
            rows, by_job, runs = self._jobs, self._by_job, self._runs
            for name in names:  # no default _JobRow per unknown job: start-up asks for all
                row = rows.get(name)
                ids = by_job.get(name)
                last = _light(runs[ids[-1]]) if ids else None
                if row is None:
                    states[name] = JobState(name, False, None, last)
                else:
                    states[name] = JobState(name, row.paused, row.high_water, last)
            return states

    def set_paused(self, job: str, paused: bool, *, now: datetime) -> None:
        """Persist the paused flag of ``job``."""
        with self._lock:
            row = self._jobs.setdefault(job, _JobRow())
            row.paused = paused
            row.updated_at = now.astimezone(UTC)

    def advance_high_water(self, job: str, slot: datetime) -> datetime:
        """Move the high-water mark of ``job`` forward to ``slot`` (never back)."""
        with self._lock:
            return self._advance(job, slot.astimezone(UTC))

    # -- runtime schedules --------------------------------------------------------------------
    def add_schedule(self, schedule: RuntimeSchedule) -> RuntimeSchedule:
        """Store ``schedule`` unless its id exists; return the stored schedule."""
        if schedule.created_at is None:
            raise ValueError(f"schedule {schedule.id}: created_at is required")
        with self._lock:
            existing = self._schedules.get(schedule.id)
            if existing is not None:
                return existing
            stored = schedule.replace(
                params=dict(schedule.params),
                start=_utc(schedule.start),
                end=_utc(schedule.end),
                created_at=_utc(schedule.created_at),
                updated_at=_utc(schedule.updated_at or schedule.created_at),
                high_water=_utc(schedule.high_water),
            )
            self._schedules[schedule.id] = stored
            self._revision += 1
        self._tell_watchers()
        return stored

    def get_schedule(self, schedule_id: str) -> RuntimeSchedule | None:
        """One runtime schedule, or ``None``."""
        with self._lock:
            return self._schedules.get(schedule_id)

    def list_schedules(self, job: str | None = None) -> list[RuntimeSchedule]:
        """Runtime schedules (of one job), oldest first."""
        with self._lock:
            found = [s for s in self._schedules.values() if job is None or s.job == job]
        return sorted(found, key=lambda s: (s.created_at or datetime.min.replace(tzinfo=UTC), s.id))

    def delete_schedule(self, schedule_id: str) -> RuntimeSchedule | None:
        """Delete a runtime schedule; return it, or ``None``."""
        with self._lock:
            removed = self._schedules.pop(schedule_id, None)
            if removed is not None:
                self._revision += 1
        if removed is not None:
            self._tell_watchers()
        return removed

    def set_schedule_paused(
        self, schedule_id: str, paused: bool, *, now: datetime
    ) -> RuntimeSchedule | None:
        """Pause or resume; resuming moves the mark to ``now``."""
        now = now.astimezone(UTC)
        with self._lock:
            schedule = self._schedules.get(schedule_id)
            if schedule is None or schedule.paused == paused:
                return schedule
            mark = schedule.high_water
            if not paused and (mark is None or mark < now):
                mark = now
            schedule = schedule.replace(paused=paused, updated_at=now, high_water=mark)
            self._schedules[schedule_id] = schedule
            self._revision += 1
        self._tell_watchers()
        return schedule

    def schedules_revision(self) -> int:
        """How many schedule changes there were."""
        with self._lock:
            return self._revision

    def watch_schedules(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each schedule change; returns the function that stops it."""
        with self._lock:
            self._schedule_watchers.append(callback)

        def unwatch() -> None:
            with self._lock:
                if callback in self._schedule_watchers:
                    self._schedule_watchers.remove(callback)

        return unwatch

    def _tell_watchers(self) -> None:
        with self._lock:
            watchers = list(self._schedule_watchers)
        for callback in watchers:
            try:
                callback()
            except Exception:
                log.exception("schedule watcher %r failed", callback)

    # -- dead letters -------------------------------------------------------------------------
    def dead_letters(self, *, job: str | None = None, limit: int = 100) -> list[Run]:
        """Runs that failed their last attempt and were not cleared, newest first."""
        found: list[Run] = []
        with self._lock:
            for run in self._newest_first(job):
                if len(found) >= limit:
                    break
                if run.dead_letter:
                    found.append(_light(run))
        return found

    def clear_dead_letters(self, *, job: str | None = None) -> int:
        """Clear dead letters (of one job, or all); the runs stay in history."""
        with self._lock:
            cleared = [r for r in self._newest_first(job) if r.dead_letter]
            for run in cleared:
                self._put(run.replace(dead_letter=False))
            return len(cleared)

    # -- alert outbox -------------------------------------------------------------------------
    def _add_alerts(self, alerts: Sequence[Alert], now: datetime) -> None:
        for alert in alerts:
            if alert.created_at is None:
                alert = Alert.from_dict({**alert.to_dict(), "created_at": now.isoformat()})
            self._outbox[self._next_item_id] = _OutboxRow(alert, now, next_attempt_at=now)
            self._next_item_id += 1

    def add_alerts(self, alerts: Sequence[Alert], *, now: datetime) -> None:
        """Write alerts to the outbox."""
        with self._lock:
            self._add_alerts(alerts, now.astimezone(UTC))

    def pending_alerts(self, *, now: datetime, limit: int = 50) -> list[OutboxItem]:
        """Outbox items due for (re)delivery, oldest first."""
        with self._lock:
            due = [
                OutboxItem(item_id, row.alert, row.attempts, row.next_attempt_at)
                for item_id, row in self._outbox.items()
                if row.next_attempt_at is None or row.next_attempt_at <= now
            ]
        return due[:limit]

    def claim_alerts(self, *, now: datetime, lease: float, limit: int = 50) -> list[OutboxItem]:
        """Due outbox items, each hidden from other claimers for ``lease`` seconds."""
        until = now.astimezone(UTC) + timedelta(seconds=lease)
        with self._lock:
            due = [
                (item_id, row)
                for item_id, row in self._outbox.items()
                if row.next_attempt_at is None or row.next_attempt_at <= now
            ][:limit]
            for _, row in due:
                row.next_attempt_at = until
            return [OutboxItem(item_id, row.alert, row.attempts, until) for item_id, row in due]

    def alert_delivered(self, item_id: int) -> None:
        """Remove a delivered outbox item."""
        with self._lock:
            self._outbox.pop(item_id, None)

    def alert_failed(self, item_id: int, *, retry_at: datetime, error: str) -> None:
        """Record a failed delivery and when to try again."""
        with self._lock:
            row = self._outbox.get(item_id)
            if row is not None:
                row.attempts += 1
                row.next_attempt_at = retry_at.astimezone(UTC)
                row.last_error = error


def _decide(request: ClaimRequest, running: int, queued: int) -> RunStatus:
    """The status a claimed row gets (the rules of :class:`cronhub.runs.ClaimRequest`).

    Overlap is judged against *running* runs; ``queue`` lets at most one run wait.
    """
    status = RunStatus(request.status)
    if status is not RunStatus.RUNNING:
        if status not in (RunStatus.QUEUED, RunStatus.SKIPPED, RunStatus.MISSED):
            raise ValueError(
                f"job {request.job!r}: a claim can insert running, queued, skipped or missed "
                f"rows, not {status.value}"
            )
        return status
    overlap = Overlap(request.overlap)
    if running == 0 or overlap in (Overlap.ALLOW, Overlap.REPLACE):
        return RunStatus.RUNNING
    if overlap is Overlap.QUEUE and queued == 0:
        return RunStatus.QUEUED
    return RunStatus.SKIPPED


def _high_water_marks(requests: Iterable[ClaimRequest]) -> dict[str, datetime]:
    """Per job, the newest slot of its own schedule among ``requests`` (``Storage.claim``)."""
    marks: dict[str, datetime] = {}
    for request in requests:
        if request.scheduled_for is None or request.schedule_id != "":
            continue
        if Trigger(request.trigger) not in (Trigger.SCHEDULE, Trigger.CATCH_UP):
            continue
        slot = request.scheduled_for.astimezone(UTC)
        if request.job not in marks or slot > marks[request.job]:
            marks[request.job] = slot
    return marks


@hookimpl(trylast=True)
def cronhub_storage(url: str) -> MemoryStorage | None:
    return MemoryStorage(url) if url.startswith("memory://") else None
