"""When to alert: the core's rules. How to alert is the ``cronhub_alert`` plugins' business.

One alert when a failure streak begins (not one per failed run), one when the job recovers,
one per crash and timeout, one per dead letter streak, one per job and outage for missed
slots. The streak is read from storage (the job's previous finished runs), never from process
memory, so every instance and every restart agrees on it. Alerts ride on the storage write of
the state change (the outbox) and :mod:`cronhub.outbox` delivers them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cronhub.runs import Alert, Run, RunStatus
from cronhub.slots_init import stores_through_slots
from cronhub.storage import RunFilter

if TYPE_CHECKING:
    from cronhub.jobs import Job
    from cronhub.storage import Storage

#: Every alert kind, in the order the docs list them.
ALERT_KINDS: tuple[str, ...] = ("failure", "recovery", "crash", "timeout", "dead_letter", "missed")

#: Statuses that end a run and count for the streak (skipped, missed, cancelled do not).
OUTCOME_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CRASHED}
)

#: How far back :func:`streak_of` reads a job's history.
HISTORY_WINDOW = 50
#: How many of each job's newest runs :func:`streaks_of` reads before it falls back.
RECENT_WINDOW = 4


@stores_through_slots
@dataclass(frozen=True, slots=True)
class Streak:
    """What storage says about a job just before one of its runs ends."""

    #: The job's previous run that ended with an outcome failed (or crashed, timed out).
    failing: bool = False
    #: A dead letter was already written since the job last succeeded.
    dead_letter: bool = False


#: The streak of a job whose last outcome succeeded (or that has none).
_NOT_FAILING = Streak()
# The members compared with for every run's outcome (module-level: see cronhub.runs).
_SUCCEEDED, _CRASHED, _TIMED_OUT = RunStatus.SUCCEEDED, RunStatus.CRASHED, RunStatus.TIMED_OUT


def streak_of(storage: Storage, job: str, run_id: int) -> Streak:
    """Read ``job``'s streak from storage, ignoring run ``run_id`` (the one ending now).

    Blocking: call it in the storage thread pool.
    """
    previous: Run | None = None
    dead_letter = False
    for run in storage.list_runs(RunFilter(job=job, limit=HISTORY_WINDOW)):
        if run.id == run_id or run.status not in OUTCOME_STATUSES:
            continue
        if previous is None:
            previous = run
        if run.status is RunStatus.SUCCEEDED:
            break
        dead_letter = dead_letter or run.dead_letter
    failing = previous is not None and previous.status is not RunStatus.SUCCEEDED
    return Streak(failing=failing, dead_letter=dead_letter)


def streaks_of(storage: Storage, pairs: Sequence[tuple[str, int]]) -> dict[int, Streak]:
    """:func:`streak_of` for many ``(job, run_id)`` pairs at once, by run id.

    One query covers every run: when a job's newest outcome (other than the run ending now)
    succeeded, or it has none, there is no streak. Only a job whose newest outcome failed has
    its history read by :func:`streak_of`. The query is the storage's optional
    ``previous_outcomes(run_ids, statuses=...)`` where it has one, else ``recent_runs``.
    Blocking: call it in the storage thread pool.
    """
    found: dict[int, Streak] = {}
    if not pairs:
        return found
    previous: dict[int, RunStatus | None] = {}
    answer = getattr(storage, "previous_outcomes", None)
    if callable(answer):
        previous = answer([run_id for _, run_id in pairs], statuses=OUTCOME_STATUSES)
    else:
        recent = storage.recent_runs([job for job, _ in pairs], per_job=RECENT_WINDOW)
        for job, run_id in pairs:
            runs = recent.get(job, [])
            outcomes = (r for r in runs if r.id != run_id and r.status in OUTCOME_STATUSES)
            newest = next(outcomes, None)
            # (Left out when a few newest runs hold no outcome: streak_of reads further.)
            if newest is not None or len(runs) < RECENT_WINDOW:
                previous[run_id] = newest.status if newest is not None else None
    for job, run_id in pairs:
        if run_id in previous and previous[run_id] in (None, _SUCCEEDED):
            found[run_id] = _NOT_FAILING
        else:
            found[run_id] = streak_of(storage, job, run_id)
    return found


def _base(job: Job, run: Run, status: RunStatus, now: datetime) -> dict[str, Any]:
    return {
        "job": job.name,
        "run_id": run.id,
        "status": str(status),
        "attempt": run.attempt,
        "scheduled_for": run.scheduled_for,
        "created_at": now,
        "details": {"tz": str(job.tz), "trigger": str(run.trigger)},
    }


class AlertRouter:
    """Decides which alerts a state change raises, from the streak storage reports."""

    def alerts_for(
        self,
        job: Job,
        run: Run,
        status: RunStatus,
        now: Callable[[], datetime],
        *,
        streak: Streak | None = None,
        error: str | None = None,
        duration_ms: int | None = None,
        dead_letter: bool = False,
    ) -> list[Alert]:
        """Alerts raised by ``run`` of ``job`` ending with ``status``.

        :param now: Reads the time the alerts are raised at (only when there are some).
        :param streak: The job's state before this run ended (:func:`streak_of`); ``None``
            when it could not be read, which is treated as "not failing" (an extra alert
            rather than a lost one).
        :param dead_letter: This run failed its last attempt.
        """
        if status is _SUCCEEDED and (streak is None or not streak.failing):
            return []  # most runs: a success after a success (or a first run)
        streak = streak or _NOT_FAILING
        raised: list[tuple[str, str]] = []  # (kind, message)
        if status.failure:
            if status is _CRASHED:
                raised.append(("crash", "the run crashed"))
            elif status is _TIMED_OUT:
                raised.append(("timeout", "the run timed out"))
            elif not streak.failing:
                raised.append(("failure", "the job started failing"))
            # With retries=0 every failed run is a dead letter and the failure alert says it
            # already; a dead letter alert is for retries exhausted, once per streak.
            if dead_letter and job.retries > 0 and not streak.dead_letter:
                message = f"all {job.retries + 1} attempts failed: the run is a dead letter"
                raised.append(("dead_letter", message))
        elif status is _SUCCEEDED and streak.failing:
            raised.append(("recovery", "the job succeeded again"))
        raised = [(kind, message) for kind, message in raised if kind in job.alerts]
        if not raised:  # most runs: nothing to build
            return []
        base = {**_base(job, run, status, now()), "error": error, "duration_ms": duration_ms}
        return [Alert(kind=kind, message=message, **base) for kind, message in raised]

    def missed(self, job: Job, run: Run, now: datetime) -> list[Alert]:
        """The one alert of an outage: ``run`` is the ``missed`` record the claim wrote."""
        if "missed" not in job.alerts:
            return []
        count = max(1, run.missed_count)
        base = _base(job, run, RunStatus.MISSED, now)
        base["details"] = {**base["details"], "missed_count": count}
        message = f"{count} slot(s) missed (scheduler down or late)"
        return [Alert(kind="missed", message=message, **base)]
