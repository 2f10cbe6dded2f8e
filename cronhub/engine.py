"""The scheduler loop: a heap of next fire times and one timer; claim, run, record.

The loop sleeps until the earliest of: the next due slot, the next housekeeping round
(queued runs, leases, the reaper, retention), or a wake-up (run-now, pause, resume, stop).
It never polls every second. All storage calls run in a small thread pool and are retried
on failure; exactly-once is decided by the storage's unique slot key, never by this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from cronhub import gc_hold
from cronhub.alerting import AlertRouter, Streak, streak_of
from cronhub.catchup import plan_late_slots
from cronhub.errors import HookError, JobDefinitionError
from cronhub.outbox import AlertDelivery
from cronhub.runner import RunManager, StartGate
from cronhub.runs import (
    Alert,
    ClaimOutcome,
    ClaimRequest,
    Completion,
    Overlap,
    Run,
    RunStatus,
    Trigger,
)
from cronhub.runtime_schedules import validate_params
from cronhub.runtime_timers import KEY_PREFIX, RuntimeTimers
from cronhub.schedules import jitter_delay
from cronhub.storage import RunFilter, Storage

if TYPE_CHECKING:
    from cronhub.executors import Executor
    from cronhub.hub import Hub
    from cronhub.jobs import Job
    from cronhub.locking import Lock

log = logging.getLogger("cronhub.engine")
T = TypeVar("T")

#: Most slots claimed in one storage transaction.
CLAIM_BATCH = 500
# The members compared with for every due slot (module-level: see cronhub.runs).
_ALLOW, _SCHEDULE = Overlap.ALLOW, Trigger.SCHEDULE
_CLAIMED, _RECORDED = ClaimOutcome.CLAIMED, ClaimOutcome.RECORDED
#: Seconds :meth:`Engine.stop` waits for the loop to finish the step it is in.
STOP_TIMEOUT = 10.0
#: Slots of ``run_on_startup`` use this schedule id, so they never collide with a cron slot.
STARTUP_SCHEDULE = "@startup"


class Engine:
    """Runs a hub's jobs on time, once per slot across every instance sharing its storage.

    :param hub: The hub (jobs, storage, plugins, clock, settings).
    :param instance: This instance's name; default ``hub.instance_id``.
    """

    def __init__(self, hub: Hub, *, instance: str | None = None) -> None:
        settings = hub.settings
        self.hub = hub
        self.clock = hub.clock
        self.pm = hub.plugin_manager
        self.instance = instance or hub.instance_id
        self.lease_ttl = float(settings.get("lease_ttl"))
        self.heartbeat_interval = float(settings.get("heartbeat_interval"))
        self.reaper_interval = float(settings.get("reaper_interval"))
        self.shutdown_grace = float(settings.get("shutdown_grace"))
        self.retention = timedelta(days=float(settings.get("retention_days")))
        #: Slots are claimed this long before they are due and started on time, so that the
        #: storage's round trip is not part of a run's lateness.
        self.claim_ahead = timedelta(seconds=max(0.0, float(settings.get("claim_ahead"))))
        #: Freeze what is alive at start for the garbage collector (see :mod:`cronhub.gc_hold`).
        self.gc_freeze = bool(settings.get("gc_freeze"))
        self._frozen = False
        self._reaper_step = timedelta(seconds=self.reaper_interval)
        self.jobs: dict[str, Job] = {}
        self.executors: dict[str, Executor] = {}
        self.lock: Lock | None = None
        self._heap: list[tuple[datetime, datetime, str]] = []
        #: Slots taken from the heap ahead of time but claimed only when due: their job has a
        #: run active here and an overlap policy that the claim decides (skip, queue, replace).
        self._hold: list[tuple[datetime, datetime, str]] = []
        #: Runs claimed ahead of their slot, waiting to start: ``(due, run id, run)``.
        #: Runs claimed ahead of their slot wait at a gate per start time (launched, their
        #: start-up done); ``_starts`` is the heap of those times.
        self._starts: list[datetime] = []
        self._gates: dict[datetime, StartGate] = {}
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="cronhub-storage")
        self._inline_io = False  # set at start, from the storage's ``in_memory``
        self._wakeup: asyncio.Event | None = None
        self._stopping = False
        self._started = False
        self._loop_task: asyncio.Task[None] | None = None
        self._next_housekeeping: datetime | None = None
        self._next_reap: datetime | None = None
        self._next_purge: datetime | None = None
        self._retry_claims_at: datetime | None = None
        #: Time of the loop's last iteration (``/healthz`` checks it is recent).
        self.last_tick: float | None = None
        #: Called with every event the storage's ``subscribe`` delivers, in the loop's thread
        #: (the web app forwards other instances' run and job events to its clients).
        self.event_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._run_now_lock = asyncio.Lock()
        #: Set when a ``take_queued`` answer was lost: look for runs taken but not started.
        self._check_orphans = False
        self.runs = RunManager(self)
        #: The runtime schedules fired here (added, paused and removed while running).
        self.timers = RuntimeTimers(self)
        self.alerts = AlertRouter()
        #: Delivers the alert outbox (started with the scheduler).
        self.delivery = AlertDelivery(hub, instance=self.instance, io=self.io)

    # -- storage access ------------------------------------------------------------------
    async def io(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call a blocking storage function in the storage thread pool.

        A storage whose data lives in this process's memory (``in_memory = True``) is called
        in the loop's thread: its calls take microseconds, less than handing them to a thread
        (whose Python code would then compete with the loop for the GIL).
        """
        if self._inline_io:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    async def io_retry(
        self, what: str, fn: Callable[..., T], /, *args: Any, attempts: int = 5, **kwargs: Any
    ) -> T:
        """:meth:`io` retried with backoff; the last failure is raised."""
        delay = 0.05
        for attempt in range(1, attempts + 1):
            try:
                return await self.io(fn, *args, **kwargs)
            except Exception as exc:
                if attempt == attempts or (self._stopping and what != "finish"):
                    raise
                log.warning("storage %s failed (attempt %d): %s; retrying", what, attempt, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open storage, collect jobs, call ``cronhub_startup`` and start the loop."""
        if self._started:
            return
        self._wakeup = asyncio.Event()
        await self.io(lambda: self.hub.storage)
        self._inline_io = getattr(self.hub.storage, "in_memory", False) is True
        self.jobs = dict(self.hub.jobs)
        self.lock = self.pm.call_provider("cronhub_lock", hub=self.hub)
        if self.lock is None:
            raise HookError("cronhub_lock", None, RuntimeError("no lock provider answered"))
        for job in self.jobs.values():
            executor = self.pm.call_provider("cronhub_executor", job=job)
            if executor is None:
                raise JobDefinitionError(
                    job.name, "executor", job.executor, "no plugin provides this executor"
                )
            self.executors[job.name] = executor
        await self.pm.call_each("cronhub_startup", hub=self.hub)
        await self._seed_heap()
        self._started = True
        self._loop_task = asyncio.create_task(self._loop(), name="cronhub-engine")
        notified = await self._subscribe()
        await self.timers.start(notified=notified)
        self.runs.start()
        self.delivery.start()
        if self.gc_freeze:
            # The jobs, schedules, plugins and modules live as long as the engine: later full
            # collections need not walk them again (100,000 jobs: a collection's pause drops
            # from hundreds of milliseconds to a few).
            self._frozen = gc_hold.freeze_long_lived()
        log.info(
            "scheduler started: instance %s, %d job(s), storage %s",
            self.instance,
            len(self.jobs),
            self.hub.storage.url,
        )

    async def _seed_heap(self) -> None:
        now = self.clock.now()
        states = await self.io_retry("job states", self.hub.storage.job_states, list(self.jobs))
        startup: list[ClaimRequest] = []
        for job in self.jobs.values():
            state = states.get(job.name)
            # Resume after the high-water mark: the loop finds late slots and catches up.
            after = state.high_water if state and state.high_water else now
            self._push_next(job, after)
            if job.run_on_startup:
                minute = now.replace(second=0, microsecond=0)
                startup.append(
                    ClaimRequest(
                        job=job.name,
                        scheduled_for=minute,
                        trigger=Trigger.STARTUP,
                        schedule_id=STARTUP_SCHEDULE,
                        overlap=job.overlap,
                    )
                )
        if startup:
            await self._claim(startup)

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let running jobs finish within ``grace`` seconds, cancel the rest."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        self._wake()
        if self._loop_task is not None:
            # The loop ends at its next step: a claim in flight is finished and its runs
            # started, never cut off between the storage's commit and this process hearing
            # of it (such runs would stay ``running`` under this instance).
            done, _ = await asyncio.wait({self._loop_task}, timeout=STOP_TIMEOUT)
            if not done:
                self._loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._loop_task
        await self.timers.stop()
        await self._start_claimed_on_stop()
        await self.runs.shutdown(self.shutdown_grace if grace is None else grace)
        await self.delivery.stop()
        unsubscribe = getattr(self.hub.storage, "unsubscribe", None)
        if callable(unsubscribe):
            with contextlib.suppress(Exception):
                await self.io(unsubscribe)
        await self.pm.call_each("cronhub_shutdown", hub=self.hub)
        self._pool.shutdown(wait=True)
        if self._frozen:
            self._frozen = False
            gc_hold.thaw()
        self._started = False
        log.info("scheduler stopped: instance %s", self.instance)

    async def _start_claimed_on_stop(self) -> None:
        """Start the runs claimed ahead of their slot (at most ``claim_ahead`` away).

        They are this instance's: no other instance may run those slots, so they start on
        time and the shutdown's grace covers them like any other run.
        """
        while self._starts:
            due = heapq.heappop(self._starts)
            delay = (due - self.clock.now()).total_seconds()
            if delay > 0:
                # Real time, bounded by claim_ahead (a test's fake clock may never get there).
                await asyncio.sleep(min(delay, self.claim_ahead.total_seconds()))
            self.runs.open(self._gates.pop(due))

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, run until ``stop`` is set, then stop gracefully."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    @property
    def running(self) -> bool:
        """``True`` while the loop is alive."""
        return bool(self._loop_task and not self._loop_task.done())

    async def _subscribe(self) -> bool:
        """Listen to other instances' events where the storage can (an optional capability).

        A storage with ``subscribe(callback, *, instance, version)`` (PostgreSQL's
        LISTEN/NOTIFY) calls ``callback(event)`` from its own thread with events such as
        ``{"event": "run.queued"}``, ``{"event": "job.resumed", "job": name}``; the engine then
        wakes at once instead of at its next timer. Returns whether events will arrive.
        """
        subscribe = getattr(self.hub.storage, "subscribe", None)
        if not callable(subscribe):
            return False
        from cronhub import __version__

        loop = asyncio.get_running_loop()

        def on_event(event: dict[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._on_storage_event, event)

        try:
            await self.io(subscribe, on_event, instance=self.instance, version=__version__)
        except Exception as exc:
            log.warning("storage events unavailable, timers only: %s", exc)
            return False
        return True

    def _on_storage_event(self, event: dict[str, Any]) -> None:
        """React to another instance's change: take queued runs, restart resumed jobs."""
        if self._stopping or not self._started:
            return
        for listener in list(self.event_listeners):
            try:
                listener(event)
            except Exception:
                log.exception("storage event listener %r failed", listener)
        kind = event.get("event")
        job = self.jobs.get(str(event.get("job")))
        if kind == "job.resumed" and job is not None:
            # As in set_paused: paused time is not caught up, the job's slots restart now.
            self._drop_entries({job.name})
            self._push_next(job, self.clock.now())
            self._wake()
        elif kind in ("run.queued", "reconnected"):
            self._schedule_housekeeping(self.clock.now())
        if kind in ("schedule.changed", "reconnected"):
            # A runtime schedule changed somewhere (or events may have been missed).
            self.timers.refresh_soon()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # -- the loop ------------------------------------------------------------------------
    def _push_next(self, job: Job, after: datetime, key: str | None = None) -> None:
        """Push ``job``'s first slot after ``after``; ``key`` names a runtime schedule's entry."""
        slot = job.next_run(after)
        if slot is None:
            return
        due = slot
        if job.jitter:
            schedule = job.schedule
            interval = getattr(schedule, "interval", None) or getattr(
                schedule, "min_interval", None
            )
            due = slot + timedelta(seconds=jitter_delay(job.name, slot, job.jitter, interval))
        heapq.heappush(self._heap, (due, slot, key or job.name))

    def _drop_entries(self, keys: set[str]) -> None:
        """Remove the heap entries of these keys (runtime schedules changed or removed)."""
        if keys:
            self._heap = [entry for entry in self._heap if entry[2] not in keys]
            heapq.heapify(self._heap)
            self._hold = [entry for entry in self._hold if entry[2] not in keys]

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while not self._stopping:
            self.last_tick = self.clock.monotonic()
            now = self.clock.now()
            try:
                await self._fire_due(now)
                if self._stopping:
                    break
                if self._next_housekeeping is None or now >= self._next_housekeeping:
                    await self._housekeeping(now)
            except Exception:
                # Nothing a job or a storage fault does may end the loop.
                log.exception("scheduler iteration failed; continuing")
                await asyncio.sleep(0.5)
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        assert self._wakeup is not None
        if self._stopping:
            return
        now = self.clock.now()
        deadlines = [d for d in (self._next_housekeeping, self._retry_claims_at) if d]
        if self._heap:
            deadlines.append(self._heap[0][0] - self.claim_ahead)
        if self._starts:
            deadlines.append(self._starts[0])
        if self._hold:
            deadlines.append(min(entry[0] for entry in self._hold))
        longest = float(getattr(self.clock, "max_sleep", 60.0))
        delay = (
            max(0.0, min((d - now).total_seconds() for d in deadlines)) if deadlines else longest
        )
        self._wakeup.clear()
        sleep = self.clock.sleep
        if self._starts and (self._starts[0] - now).total_seconds() <= delay:
            # Next is the start of runs claimed ahead: on time to the millisecond where the
            # clock can (``SystemClock.sleep_precise``).
            sleep = getattr(self.clock, "sleep_precise", sleep)
        sleeper = asyncio.ensure_future(sleep(min(delay, longest)))
        waker = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()

    def _start_claimed(self, now: datetime) -> None:
        """Start the runs claimed ahead whose slot has come (they wait at its gate)."""
        while self._starts and self._starts[0] <= now:
            self.runs.open(self._gates.pop(heapq.heappop(self._starts)))

    def _gate(self, when: datetime) -> StartGate:
        """The gate of the runs that start at ``when`` (made on first use)."""
        gate = self._gates.get(when)
        if gate is None:
            gate = self._gates[when] = StartGate()
            heapq.heappush(self._starts, when)
        return gate

    async def _fire_due(self, now: datetime) -> None:
        self._start_claimed(now)
        if self._retry_claims_at and now < self._retry_claims_at:
            return
        horizon = now + self.claim_ahead
        due, self._hold = self._hold, []
        while self._heap and self._heap[0][0] <= horizon and len(due) < CLAIM_BATCH:
            due.append(heapq.heappop(self._heap))
        if not due:
            return
        requests: list[ClaimRequest] = []
        #: When each slot claimed ahead starts: ``(job, schedule id, slot) -> due``.
        starts: dict[tuple[str, str, datetime], datetime] = {}
        taken: list[tuple[datetime, datetime, str]] = []  # the entries claimed now
        busy: set[str] | None = None  # jobs with a run active here (read when first needed)
        marks = await self._marks_of_late_jobs(due, now)
        # Late jobs whose plan covers slots past the newest one it claims: the mark goes there.
        beyond_claim: dict[str, datetime] = {}
        for entry in due:
            due_at, slot, key = entry
            schedule_id = ""
            params: dict[str, Any] = {}
            if key.startswith(KEY_PREFIX):
                timer = self.timers.target(key)
                if timer is None:
                    continue  # a runtime schedule removed while its entry was out of the heap
                job = timer.job
                schedule_id, params = timer.schedule.id, timer.schedule.params
            else:
                job = self.jobs[key]
            if due_at > now:
                if job.overlap is not _ALLOW:
                    busy = self.runs.active_jobs() if busy is None else busy
                    if job.name in busy:
                        # Whether it runs depends on that run ending before the slot: the
                        # claim decides at the slot's time.
                        self._hold.append(entry)
                        continue
                starts[(job.name, schedule_id, slot)] = due_at
            taken.append(entry)
            if _late(job, due_at, now):
                after = slot - timedelta(microseconds=1)
                mark = marks.get(key)
                if mark is not None and mark > after:
                    # Another instance handled these slots (ran them or counted them missed)
                    # while this one could not reach storage: plan only what comes after.
                    after = mark
                plan = plan_late_slots(job, after, now)
                slots = [r.scheduled_for for r in plan.requests if r.scheduled_for]
                if not schedule_id and plan.newest and (not slots or plan.newest > max(slots)):
                    # Only a ``missed`` record covers the newest slots (``catch_up="none"``):
                    # the claim moves the mark to its first slot only.
                    beyond_claim[job.name] = plan.newest
                late = plan.requests
                if schedule_id:
                    late = [
                        dataclasses.replace(r, schedule_id=schedule_id, params=params) for r in late
                    ]
                requests.extend(late)
                self._push_next(job, max(now, plan.newest or slot), key)
                if plan.missed:
                    where = f" (schedule {schedule_id})" if schedule_id else ""
                    log.warning("job %s%s: %d slot(s) missed", job.name, where, plan.missed)
            else:
                requests.append(
                    ClaimRequest(
                        job=job.name,
                        scheduled_for=slot,
                        trigger=_SCHEDULE,
                        overlap=job.overlap,
                        schedule_id=schedule_id,
                        params=params,
                        claim_ahead=max(0.0, (slot - now).total_seconds()),
                    )
                )
                self._push_next(job, slot, key)
        try:
            await self._claim(requests, starts)
        except Exception as exc:
            # Put the slots back: they are claimed when storage answers again, or found late
            # and caught up. Exactly-once does not depend on this process remembering them.
            log.error("cannot claim %d slot(s): %s; retrying", len(requests), exc)
            for entry in taken:
                heapq.heappush(self._heap, entry)
            self._drop_pushed_after(taken)
            self._retry_claims_at = now + timedelta(seconds=1)
            return
        self._retry_claims_at = None
        if beyond_claim:
            # So that an instance planning after this one starts after what this one covered.
            with contextlib.suppress(Exception):
                await self.io(_advance_marks, self.hub.storage, beyond_claim)
        if self._heap and self._heap[0][0] <= self.clock.now() + self.claim_ahead:
            self._wake()  # more than one batch was due

    async def _marks_of_late_jobs(
        self, due: Sequence[tuple[datetime, datetime, str]], now: datetime
    ) -> dict[str, datetime]:
        """The stored high-water marks of the jobs among ``due`` that are late (rare: after
        downtime or an outage), read just before they are planned.

        Late slots are planned from this instance's own next slot, which after an outage may
        lag behind what another instance handled meanwhile: its ``missed`` record would then
        count slots the other one already ran or recorded. Planning from the mark avoids it.
        """
        late = sorted(
            {
                key
                for due_at, _, key in due
                if not key.startswith(KEY_PREFIX)
                and key in self.jobs
                and _late(self.jobs[key], due_at, now)
            }
        )
        if not late:
            return {}
        try:
            states = await self.io(self.hub.storage.job_states, late)
        except Exception as exc:  # the claim that follows says whether storage answers
            log.debug("cannot read the high-water marks of %d late job(s): %s", len(late), exc)
            return {}
        return {name: s.high_water for name, s in states.items() if s.high_water is not None}

    def _drop_pushed_after(self, due: Sequence[tuple[datetime, datetime, str]]) -> None:
        # The next slots pushed for these jobs were pushed too early: remove them so that
        # each job has one entry again (the re-pushed due one).
        names = {name for _, _, name in due}
        kept: dict[str, tuple[datetime, datetime, str]] = {}
        rest = []
        for entry in self._heap:
            if entry[2] in names:
                current = kept.get(entry[2])
                if current is None or entry < current:
                    kept[entry[2]] = entry
            else:
                rest.append(entry)
        self._heap = rest + list(kept.values())
        heapq.heapify(self._heap)

    async def _claim(
        self,
        requests: Sequence[ClaimRequest],
        starts: dict[tuple[str, str, datetime], datetime] | None = None,
    ) -> None:
        """Claim ``requests``; start what was claimed, at its time in ``starts`` if given."""
        assert self.lock is not None
        for start in range(0, len(requests), CLAIM_BATCH):
            batch = list(requests[start : start + CLAIM_BATCH])
            results = await self.io_retry(
                "claim",
                self.lock.claim,
                batch,
                instance=self.instance,
                now=self.clock.now(),
                lease_ttl=self.lease_ttl,
            )
            launching: list[Run] = []
            ahead: dict[datetime, list[Run]] = {}  # runs claimed ahead, by start time
            claimed = False
            now = self.clock.now()
            # A storage that measures this host's clock against its own (PostgreSQL): when this
            # clock runs fast, a run claimed ahead waits for the slot by the storage's clock.
            offset = getattr(self.hub.storage, "clock_offset", None)
            fast = -offset if isinstance(offset, int | float) and offset < 0 else 0.0
            for result in results:
                if result.outcome is _CLAIMED and result.run is not None:
                    run = result.run
                    when = starts and starts.get((run.job, run.schedule_id, run.scheduled_for))
                    if when and fast:
                        when += timedelta(seconds=fast)
                    if when and when > now:
                        ahead.setdefault(when, []).append(run)
                    else:
                        launching.append(run)
                    claimed = True
                elif result.outcome is _RECORDED and result.run is not None:
                    if result.run.status is RunStatus.QUEUED:
                        self._schedule_housekeeping(self.clock.now())
                    await self.runs.recorded(result.run)
            if launching:
                self.runs.launch_all(launching)
            for when, group in ahead.items():
                # Launched now, so that each run's start-up is done before its slot: at the
                # slot, opening the gate is all that is left (a burst starts in a fraction
                # of the time).
                self.runs.launch_all(group, gate=self._gate(when))
            if claimed:
                # The reaper's rounds again (they rest while nothing is active, above).
                self._schedule_housekeeping(self.clock.now() + self._reaper_step)
            missed = [
                r.run
                for r in results
                if r.outcome is _RECORDED and r.run and r.run.status is RunStatus.MISSED
            ]
            if missed:
                await self._alert_missed(missed)
            if any(r.request.overlap == "replace" and r.run for r in results):
                for result in results:
                    if result.outcome is ClaimOutcome.CLAIMED and result.run is not None:
                        self.runs.cancel_local_others(result.run)

    def alerts_for(
        self,
        job: Job | None,
        run: Run,
        status: RunStatus,
        *,
        streak: Streak | None = None,
        error: str | None = None,
        duration_ms: int | None = None,
        dead_letter: bool = False,
    ) -> list[Alert]:
        """The alerts a run ending with ``status`` raises (written with its outcome)."""
        if job is None:
            return []
        return self.alerts.alerts_for(
            job,
            run,
            status,
            self.clock.now,
            streak=streak,
            error=error,
            duration_ms=duration_ms,
            dead_letter=dead_letter,
        )

    async def alert_streak(self, job: Job | None, run: Run) -> Streak | None:
        """The job's failure streak as storage records it, before ``run`` ends (or ``None``)."""
        if job is None or not job.alerts:
            return None
        try:
            return await self.io(streak_of, self.hub.storage, job.name, run.id)
        except Exception as exc:
            log.warning("job %s: cannot read its streak for alerts: %s", job.name, exc)
            return None

    async def _alert_missed(self, runs: Sequence[Run]) -> None:
        # The claim that wrote the ``missed`` record is unique (one instance wins it), so the
        # alert is raised once per job and outage. It is written right after that claim.
        alerts = []
        for run in runs:
            job = self.jobs.get(run.job)
            if job is not None:
                alerts.extend(self.alerts.missed(job, run, self.clock.now()))
        if not alerts:
            return
        try:
            await self.io_retry("alerts", self.hub.storage.add_alerts, alerts, now=self.clock.now())
        except Exception as exc:
            log.error("cannot write %d missed-slot alert(s): %s", len(alerts), exc)
            return
        self.delivery.wake()

    # -- housekeeping --------------------------------------------------------------------
    def _schedule_housekeeping(self, when: datetime) -> None:
        if self._next_housekeeping is None or when < self._next_housekeeping:
            self._next_housekeeping = when
            self._wake()

    async def _housekeeping(self, now: datetime) -> None:
        cadence = now + timedelta(seconds=self.reaper_interval)
        self._next_housekeeping = cadence
        storage = self.hub.storage
        if self._next_reap is None or now >= self._next_reap:
            self._next_reap = cadence
            await self.runs.reap(now)
        else:
            # Called early (a run ended: a queued run may start now): the queued runs only;
            # the reaper's round comes at its own time.
            self._next_housekeeping = self._next_reap
        try:
            taken = await self.io(
                storage.take_queued,
                instance=self.instance,
                now=now,
                lease_ttl=self.lease_ttl,
                jobs=self.jobs.keys(),
            )
        except Exception as exc:
            # The answer may be lost after the commit: runs then are ``running`` under this
            # instance that it never started. Retry, then adopt such runs (they are ours).
            log.warning("storage take queued failed: %s; retrying", exc)
            self._check_orphans = True
            taken = await self.io_retry(
                "take queued",
                storage.take_queued,
                instance=self.instance,
                now=now,
                lease_ttl=self.lease_ttl,
                jobs=self.jobs.keys(),
            )
        if self._check_orphans:
            taken = [*taken, *await self._orphans()]
            self._check_orphans = False
        self.runs.launch_all(taken)
        if taken:
            self._schedule_housekeeping(now)  # a job may have more queued runs behind it
        if self._next_purge is None or now >= self._next_purge:
            self._next_purge = now + timedelta(hours=1)
            removed = await self.io_retry("purge", storage.purge, older_than=now - self.retention)
            if removed:
                log.info("retention: removed %d run(s) older than %s", removed, self.retention)
        if self._next_housekeeping == cadence and getattr(storage, "process_local", False):
            await self._rest_if_idle(cadence)

    async def _rest_if_idle(self, cadence: datetime) -> None:
        """With process-local storage and no run queued or running, skip the reaper's rounds.

        Nothing outside this process writes such storage, so with no active run anywhere the
        reaper has nothing to find until a run starts (a claim brings the rounds back): an
        idle scheduler then wakes only for its next slot, or the hourly retention purge.
        """
        if not self.runs.idle or self._next_purge is None:
            return
        active = await self.io_retry("active runs", self.hub.storage.active_runs)
        if not active and self._next_housekeeping == cadence:
            self._next_housekeeping = max(cadence, self._next_purge)

    async def _orphans(self) -> list[Run]:
        """Runs storage holds as ``running`` under this instance that it never started."""
        active = await self.io_retry("active runs", self.hub.storage.active_runs)
        return [
            run
            for run in active
            if run.status is RunStatus.RUNNING
            and run.instance == self.instance
            and run.job in self.jobs
            and not self.runs.known(run.id)
        ]

    # -- actions -------------------------------------------------------------------------
    async def run_now(self, name: str, params: dict[str, Any] | None = None) -> Run:
        """Queue a manual run of ``name``; any instance may start it (this one is woken).

        :raises ParameterError: when ``params`` do not fit the job function (naming the one).
        """
        job = self.hub.get_job(name)
        params = validate_params(job, params)
        request = ClaimRequest(
            job=job.name,
            scheduled_for=None,
            trigger=Trigger.MANUAL,
            status=RunStatus.QUEUED,
            overlap=job.overlap,
            ignore_pause=True,
            params=params or {},
        )
        assert self.lock is not None
        # A manual run has no slot key, so a claim retried after a lost answer would queue a
        # second run: before each retry, look for the run the lost attempt may have queued.
        async with self._run_now_lock:
            newest = await self.io_retry(
                "run now", self.hub.storage.list_runs, RunFilter(job=job.name, limit=1)
            )
            after = newest[0].id if newest else 0
            now = self.clock.now()
            delay = 0.05
            for attempt in range(1, 6):
                try:
                    [result] = await self.io(
                        self.lock.claim,
                        [request],
                        instance=self.instance,
                        now=now,
                        lease_ttl=self.lease_ttl,
                    )
                    break
                except Exception as exc:
                    if attempt == 5:
                        raise
                    log.warning("storage run now failed (attempt %d): %s", attempt, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    lost = await self._lost_manual_run(job.name, after, request.params)
                    if lost is not None:
                        self._schedule_housekeeping(self.clock.now())
                        return lost
        assert result.run is not None
        self._schedule_housekeeping(self.clock.now())
        return result.run

    async def _lost_manual_run(self, name: str, after: int, params: dict[str, Any]) -> Run | None:
        """A manual run of ``name`` with ``params`` created after run ``after``, if any.

        Run-now calls of one engine are serialised, so such a run is the one a failed attempt
        queued, unless another process asked to run the same job with the same parameters in
        the same moment (then one of the two requests is answered with the other's run).
        """
        try:
            runs = await self.io(self.hub.storage.list_runs, RunFilter(job=name, limit=20))
        except Exception:
            return None
        found = [
            r
            for r in runs
            if r.id > after and r.trigger is Trigger.MANUAL and dict(r.params) == params
        ]
        return min(found, key=lambda r: r.id) if found else None

    async def refresh_schedules(self) -> bool:
        """Read the runtime schedules now (changes are otherwise seen within a second)."""
        return await self.timers.refresh()

    async def set_paused(self, name: str, paused: bool) -> None:
        """Pause or resume a job (persistent; every instance respects it at its next claim)."""
        job = self.hub.get_job(name)
        await self.io_retry(
            "pause", self.hub.storage.set_paused, job.name, paused, now=self.clock.now()
        )
        if not paused:
            # Paused time is not caught up: restart the job's slots from now.
            self._drop_entries({job.name})
            self._push_next(job, self.clock.now())
            self._wake()

    async def cancel(self, run_id: int) -> Run | None:
        """Cancel a queued or running run, wherever it runs (its owner loses the lease)."""
        run = await self.io_retry("cancel", self.hub.storage.cancel, run_id, now=self.clock.now())
        if run is not None:
            # A run claimed ahead and waiting for its slot ends without starting.
            self.runs.cancel_local(run_id, "cancelled")
        return run

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until nothing is due, claimed or running here (for tests and ``cronhub run``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(0.005)
            now = self.clock.now()
            due = bool(self._heap) and self._heap[0][0] <= now
            if not due and self.runs.idle and not self.timers.refreshing:
                await asyncio.sleep(0.005)
                if self.runs.idle and not (self._heap and self._heap[0][0] <= self.clock.now()):
                    return
        raise TimeoutError("the engine did not become idle")


def _late(job: Job, due_at: datetime, now: datetime) -> bool:
    """Whether a slot due at ``due_at`` is past the job's misfire grace at ``now``."""
    return (now - due_at).total_seconds() > job.misfire_grace


def _advance_marks(storage: Storage, marks: dict[str, datetime]) -> None:
    """Move each job's high-water mark forward to its slot (blocking: storage thread)."""
    for name, slot in marks.items():
        storage.advance_high_water(name, slot)


async def run_job_once(hub: Hub, name: str, *, params: dict[str, Any] | None = None) -> Run:
    """Run a job now in this process and record it (``cronhub run``); return the finished run."""
    engine = Engine(hub)
    job = hub.get_job(name)
    params = validate_params(job, params)
    engine.jobs = {job.name: job}
    executor = engine.pm.call_provider("cronhub_executor", job=job)
    if executor is None:
        raise JobDefinitionError(job.name, "executor", job.executor, "no plugin provides it")
    engine.executors[job.name] = executor
    storage = await engine.io(lambda: hub.storage)
    request = ClaimRequest(
        job=job.name,
        scheduled_for=None,
        trigger=Trigger.MANUAL,
        overlap=Overlap.ALLOW,
        ignore_pause=True,
        params=params or {},
    )
    [result] = await engine.io(
        storage.claim,
        [request],
        instance=engine.instance,
        now=hub.clock.now(),
        lease_ttl=engine.lease_ttl,
    )
    assert result.run is not None
    try:
        return await engine.runs.execute(result.run, direct=True)
    finally:
        engine._pool.shutdown(wait=True)


def completion_for_crash(job: Job | None, run: Run, now: datetime) -> Completion:
    """What follows a crashed run: a retry with backoff, or a dead letter."""
    retries = job.retries if job else 0
    if job is not None and run.attempt <= retries:
        delay = job.retry_delay_for(run.attempt)
        return Completion(RunStatus.CRASHED, now, retry_at=now + timedelta(seconds=delay))
    return Completion(RunStatus.CRASHED, now, dead_letter=True)
