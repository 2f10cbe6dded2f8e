"""The engine's side of runtime schedules: one heap entry per active schedule, kept in sync.

:class:`RuntimeTimers` mirrors the storage's runtime schedules (:mod:`cronhub.runtime_schedules`)
into the engine's heap. Each active schedule of a job defined on this instance becomes a timer:
the registered :class:`~cronhub.jobs.Job` with the schedule's timetable and window, whose slots
the engine claims under ``schedule_id`` = the schedule's id, with its parameters.

It learns of changes three ways, and a refresh costs one indexed read when nothing changed
(``schedules_revision()``; the list is read only when the revision moved):

- at once for changes made through this process's storage object (``watch_schedules``);
- from other instances' ``schedule.changed`` events where the storage delivers them
  (PostgreSQL ``LISTEN``/``NOTIFY``), and after the listener reconnected;
- otherwise by reading the revision once a second (SQLite: the processes of one host share
  the file, not a channel). A ``process_local`` storage (``memory://``) needs neither.

A new schedule starts after its high-water mark, or after its creation time when no instance
has handled a slot of it yet, so slots that fell due while no instance ran are caught up under
the job's ``catch_up`` policy. A resumed schedule's mark was moved to the time of the resume by
storage, so paused time is not caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cronhub.errors import ScheduleError
from cronhub.schedules import get_zone

if TYPE_CHECKING:
    from collections.abc import Callable

    from cronhub.engine import Engine
    from cronhub.jobs import Job
    from cronhub.runtime_schedules import RuntimeSchedule

log = logging.getLogger("cronhub.engine")

#: Heap keys of runtime schedules start with this (a job name never holds a NUL character).
KEY_PREFIX = "\x00schedule:"
#: Seconds between two reads of the revision when the storage cannot tell of changes (one
#: primary-key read each): a change made by another process is seen within about a second.
POLL_INTERVAL = 1.0


@dataclass(frozen=True)
class Timer:
    """An active runtime schedule as the engine fires it."""

    #: The schedule as last read (its high-water mark is not kept up to date here).
    schedule: RuntimeSchedule
    #: The registered job with the schedule's timetable, zone and window.
    job: Job
    #: What a change of the schedule changes (see :func:`fingerprint`).
    fingerprint: tuple[object, ...]

    @property
    def key(self) -> str:
        """Its heap key."""
        return KEY_PREFIX + self.schedule.id


def fingerprint(schedule: RuntimeSchedule) -> tuple[object, ...]:
    """The fields whose change re-plans a schedule's timer.

    Every change storage makes (pause, resume) moves ``updated_at``; the high-water mark,
    which claims move, is left out. A tuple compares much faster than the dataclass, which
    matters with thousands of schedules.
    """
    return (
        schedule.job,
        schedule.kind,
        schedule.expression,
        schedule.tz,
        schedule.start,
        schedule.end,
        schedule.paused,
        schedule.updated_at,
    )


def timer_for(job: Job, schedule: RuntimeSchedule) -> Timer:
    """The :class:`Timer` of ``schedule`` for the registered ``job``; ``ScheduleError`` if bad."""
    timetable = schedule.timetable()
    derived = job.replace(
        schedule=timetable,
        tz=get_zone(schedule.tz),
        start=schedule.start,
        end=schedule.end,
        run_on_startup=False,
    )
    return Timer(schedule, derived, fingerprint(schedule))


class RuntimeTimers:
    """The runtime schedules an :class:`~cronhub.engine.Engine` fires, by heap key."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.timers: dict[str, Timer] = {}
        #: The storage revision the timers reflect (``None`` before the first refresh).
        self.revision: int | None = None
        self._lock = asyncio.Lock()
        self._wanted = False
        self._refresher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._unwatch: Callable[[], None] | None = None
        self._warned: set[str] = set()
        self._failing = False

    @property
    def supported(self) -> bool:
        """Whether the storage holds runtime schedules at all (third-party ones may not)."""
        storage = self.engine.hub.storage
        return callable(getattr(storage, "schedules_revision", None))

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, *, notified: bool) -> None:
        """Load the schedules, then follow changes.

        :param notified: Whether the storage's ``subscribe`` delivers other instances'
            events; without it (and unless the storage is process-local) the revision is
            read once a second.
        """
        storage = self.engine.hub.storage
        if not self.supported:
            log.info("storage %s has no runtime schedules; only code schedules run", storage.url)
            return
        try:
            await self.refresh()
        except Exception as exc:
            log.warning("cannot read runtime schedules yet: %s; retrying", exc)
            self._failing = True
        loop = asyncio.get_running_loop()
        watch = getattr(storage, "watch_schedules", None)
        if callable(watch):

            def changed() -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self.refresh_soon)

            self._unwatch = watch(changed)
        if self._failing or not (notified or getattr(storage, "process_local", False)):
            self._poller = asyncio.create_task(self._poll(notified), name="cronhub-schedules")

    async def stop(self) -> None:
        """Stop following changes."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        for task in (self._poller, self._refresher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._refresher = None

    async def _poll(self, notified: bool) -> None:
        # Real time, not the engine's clock: this bounds how late a change made by another
        # process is seen, and a fake clock in tests must not be woken every second. Reads
        # keep a fixed cadence (the time a read takes is not added to the wait).
        loop = asyncio.get_running_loop()
        next_read = loop.time()
        while True:
            next_read = max(next_read + POLL_INTERVAL, loop.time())
            await asyncio.sleep(next_read - loop.time())
            try:
                await self.refresh()
            except Exception as exc:
                if not self._failing:
                    log.warning("cannot read runtime schedules: %s; retrying", exc)
                self._failing = True
                continue
            if self._failing:
                log.info("runtime schedules readable again")
                self._failing = False
                if notified or getattr(self.engine.hub.storage, "process_local", False):
                    return  # events (or this process) tell of changes from now on

    @property
    def refreshing(self) -> bool:
        """Whether a refresh was asked for and has not finished."""
        return self._wanted or (self._refresher is not None and not self._refresher.done())

    def refresh_soon(self) -> None:
        """Ask for a refresh (from the event loop's thread); calls made meanwhile coalesce."""
        if not self.supported:
            return
        self._wanted = True
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_wanted(), name="cronhub-refresh")

    async def _refresh_wanted(self) -> None:
        while self._wanted and not self.engine._stopping:
            self._wanted = False
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("cannot read runtime schedules: %s", exc)

    # -- syncing ------------------------------------------------------------------------------
    async def refresh(self, *, force: bool = False) -> bool:
        """Bring the timers in line with storage; ``True`` when something changed.

        One revision read when nothing changed; the list of schedules otherwise.
        """
        engine = self.engine
        storage = engine.hub.storage
        async with self._lock:
            # The revision is read before the list: a change between the two reads shows in
            # the list and moves the revision again, so the next refresh reads it once more.
            revision = await engine.io(storage.schedules_revision)
            if revision == self.revision and not force:
                return False
            schedules = await engine.io(storage.list_schedules)
            self.revision = revision
            return self._apply(schedules)

    def _apply(self, schedules: list[RuntimeSchedule]) -> bool:
        engine = self.engine
        wanted: dict[str, RuntimeSchedule] = {}
        for schedule in schedules:
            job = engine.jobs.get(schedule.job)
            if job is None:
                if schedule.id not in self._warned:
                    self._warned.add(schedule.id)
                    log.warning(
                        "schedule %s: job %r is not defined on instance %s; not fired here",
                        schedule.id,
                        schedule.job,
                        engine.instance,
                    )
                continue
            if not schedule.paused:
                wanted[KEY_PREFIX + schedule.id] = schedule
        stale = [key for key in self.timers if key not in wanted]
        fresh: list[tuple[Timer, datetime]] = []
        for key, schedule in wanted.items():
            current = self.timers.get(key)
            if current is not None and current.fingerprint == fingerprint(schedule):
                continue
            try:
                timer = timer_for(engine.jobs[schedule.job], schedule)
            except ScheduleError as exc:  # stored by an older cronhub, or a zone gone
                if schedule.id not in self._warned:
                    self._warned.add(schedule.id)
                    log.error(
                        "schedule %s of job %r cannot fire: %s", schedule.id, schedule.job, exc
                    )
                stale.append(key)
                continue
            after = schedule.high_water or schedule.created_at or engine.clock.now()
            fresh.append((timer, after))
        if not stale and not fresh:
            return False
        engine._drop_entries({*stale, *(timer.key for timer, _ in fresh)})
        for key in stale:
            self.timers.pop(key, None)
        for timer, after in fresh:
            self.timers[timer.key] = timer
            engine._push_next(timer.job, after, timer.key)
        log.info(
            "runtime schedules: %d active on instance %s (revision %s)",
            len(self.timers),
            engine.instance,
            self.revision,
        )
        engine._wake()
        return True

    def target(self, key: str) -> Timer | None:
        """The timer of a heap key, or ``None`` (a job's own key, or a removed schedule)."""
        return self.timers.get(key)
