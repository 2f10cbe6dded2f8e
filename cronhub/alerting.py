"""When to alert: the core's rules. How to alert is the ``cronhub_alert`` plugins' business.

One alert when a failure streak begins (not one per failed run), one when the job recovers,
one per crash, timeout and dead letter, one per job and outage for missed slots. Alerts are
attached to the storage write of the state change (the outbox), and delivered by a loop.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from cronhub.runs import Alert, Run, RunStatus

if TYPE_CHECKING:
    from cronhub.jobs import Job


class AlertRouter:
    """Decides which alerts a state change raises, remembering each job's streak."""

    def __init__(self) -> None:
        #: Whether each job's latest finished attempt failed.
        self._failing: dict[str, bool] = {}

    def seed(self, job: str, last_status: RunStatus | None) -> None:
        """Start from the job's last recorded status (after a restart)."""
        if last_status is not None and last_status.terminal:
            self._failing[job] = last_status.failure

    def alerts_for(self, job: Job, run: Run, status: RunStatus, now: datetime) -> list[Alert]:
        """Alerts raised by ``run`` of ``job`` ending with ``status``."""
        alerts: list[Alert] = []
        base = {
            "job": job.name,
            "run_id": run.id,
            "status": str(status),
            "attempt": run.attempt,
            "scheduled_for": run.scheduled_for,
            "created_at": now,
            "details": {"tz": str(job.tz)},
        }
        was_failing = self._failing.get(job.name, False)
        if status.failure:
            self._failing[job.name] = True
            if status is RunStatus.CRASHED:
                alerts.append(Alert(kind="crash", message="the run crashed", **base))
            elif status is RunStatus.TIMED_OUT:
                alerts.append(Alert(kind="timeout", message="the run timed out", **base))
            elif not was_failing:
                alerts.append(Alert(kind="failure", message="the job started failing", **base))
            if run.attempt > job.retries:
                alerts.append(Alert(kind="dead_letter", message="the last attempt failed", **base))
        elif status is RunStatus.SUCCEEDED:
            self._failing[job.name] = False
            if was_failing:
                alerts.append(Alert(kind="recovery", message="the job succeeded again", **base))
        return alerts
