"""Misfires and catch-up: what to do with slots found late (downtime, clock jumps, a busy loop).

Pure functions of a job, the late slots' range and the current time, so every instance that
looks at the same outage (from the same high-water mark) plans the same claims and the storage's
unique key makes them count once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cronhub.runs import ClaimRequest, RunStatus, Trigger

if TYPE_CHECKING:
    from cronhub.jobs import Job

#: Most slots enumerated one by one to plan an outage; beyond, they are only counted.
ENUMERATION_CAP = 100_000


@dataclass(frozen=True)
class LatePlan:
    """The claims for an outage: runs to start, and at most one ``missed`` record."""

    requests: list[ClaimRequest]
    #: How many slots the ``missed`` record stands for (0 when nothing was missed).
    missed: int
    #: The newest slot considered: the job's next slot comes after it.
    newest: datetime | None


def _enumerate(job: Job, after: datetime, until: datetime, cap: int) -> tuple[list[datetime], int]:
    """Slots in ``(after, until]``: the first ``cap`` listed, and how many there are in all."""
    interval = getattr(job.schedule, "interval", None)
    slots: list[datetime] = []
    current = after
    while len(slots) < cap:
        slot = job.next_run(current)
        if slot is None or slot > until:
            return slots, len(slots)
        slots.append(slot)
        current = slot
    # Beyond the cap: count arithmetically where the schedule allows it.
    if interval is not None and isinstance(interval, timedelta):
        extra = int((until - current) / interval)
        return slots, len(slots) + extra
    count = len(slots)
    while True:
        slot = job.next_run(current)
        if slot is None or slot > until:
            return slots, count
        count += 1
        current = slot


def plan_late_slots(job: Job, after: datetime, now: datetime) -> LatePlan:
    """Plan the slots of ``job`` in ``(after, now]``, some of them later than the grace.

    Slots within ``misfire_grace`` of ``now`` run normally (trigger ``schedule``). Late ones
    follow ``catch_up``: ``latest`` runs the newest once (none if a slot is on time),
    ``all`` runs the newest ``catch_up_limit`` (oldest first), ``none`` runs none. The
    rest, and everything older than ``catch_up_window``, become one ``missed`` record with a
    count, keyed on the oldest missed slot.
    """
    grace = timedelta(seconds=job.misfire_grace)
    window_start = now - timedelta(seconds=job.catch_up_window)
    old_count = 0
    oldest_missed: datetime | None = None
    if after < window_start:
        old_slots, old_count = _enumerate(job, after, window_start, 1)
        if old_slots:
            oldest_missed = old_slots[0]
        after = window_start
    recent, _ = _enumerate(job, after, now, ENUMERATION_CAP)
    on_time = [slot for slot in recent if now - slot <= grace]
    late = [slot for slot in recent if now - slot > grace]
    if job.catch_up == "latest":
        # A slot on time already covers "the newest"; otherwise run the newest late one.
        run, skip = ([], late) if on_time else (late[-1:], late[:-1])
    elif job.catch_up == "all":
        limit = job.catch_up_limit
        run, skip = (late[-limit:], late[:-limit]) if limit else ([], late)
    else:
        run, skip = [], late
    # One job's catch-up runs go one after another: the first starts now, the rest wait as
    # queued runs (oldest first), so the overlap policy never skips a slot caught up on purpose.
    requests = [
        _request(job, slot, Trigger.CATCH_UP, queued=index > 0) for index, slot in enumerate(run)
    ]
    requests += [
        _request(job, slot, Trigger.SCHEDULE, queued=bool(run) or index > 0)
        for index, slot in enumerate(on_time)
    ]
    missed = old_count + len(skip)
    if missed:
        first = oldest_missed or skip[0]
        requests.insert(
            0,
            ClaimRequest(
                job=job.name,
                scheduled_for=first,
                trigger=Trigger.SCHEDULE,
                status=RunStatus.MISSED,
                missed_count=missed,
                overlap=job.overlap,
            ),
        )
    newest = recent[-1] if recent else None
    return LatePlan(requests=requests, missed=missed, newest=newest)


def _request(job: Job, slot: datetime, trigger: Trigger, *, queued: bool) -> ClaimRequest:
    status = RunStatus.QUEUED if queued else RunStatus.RUNNING
    return ClaimRequest(
        job=job.name, scheduled_for=slot, trigger=trigger, overlap=job.overlap, status=status
    )
