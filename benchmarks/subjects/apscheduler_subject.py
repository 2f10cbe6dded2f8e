"""APScheduler 3.11: ``AsyncIOScheduler``, ``AsyncIOExecutor``, async job bodies.

Job stores: ``MemoryJobStore`` or ``SQLAlchemyJobStore`` on a SQLite file. APScheduler keeps
no run history; with the SQLite store, what it persists per run is the job row's update (or
its removal for a one-off job). Jobs are referenced as ``module:function`` text, which the
SQLite store needs (it pickles jobs) and the memory store accepts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Any

from _common import (
    LoopCounter,
    Progress,
    cpu_seconds,
    idle_crons,
    idle_measure_end,
    idle_measure_start,
    lateness_summary,
    main,
    next_whole_second,
    rss_bytes,
    sleep_until,
    throughput,
    varied_crons,
    w5_walk,
    w5_zones,
)
from apscheduler.events import EVENT_JOB_SUBMITTED
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

logging.basicConfig(level=logging.CRITICAL)


def _scheduler(p: dict[str, Any], folder: str) -> AsyncIOScheduler:
    if p.get("store", "memory") == "memory":
        store: Any = MemoryJobStore()
    else:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        store = SQLAlchemyJobStore(url=f"sqlite:///{os.path.join(folder, 'aps.db')}")
    return AsyncIOScheduler(
        jobstores={"default": store},
        executors={"default": AsyncIOExecutor()},
        # Same misfire grace as cronhub's default (60 s); no coalescing (every slot runs).
        job_defaults={"coalesce": False, "max_instances": 1, "misfire_grace_time": 60},
        timezone="UTC",
    )


async def _noop() -> None:
    return None


# Module-level state and bodies: the SQLite store needs textual references (``__main__:x``).
_SLOTS: dict[str, deque[float]] = defaultdict(deque)
_LATENESS: list[float] = []
_WINDOW: list[float] = []
_DONE: dict[str, Any] = {"count": 0, "target": 0, "finished": 0.0}


async def tick(job_id: str) -> None:
    """W1 body: lateness of this start against the slot APScheduler submitted it for."""
    now = time.time()
    queue = _SLOTS[job_id]
    slot = queue.popleft() if queue else now
    if _WINDOW[0] <= slot < _WINDOW[1]:
        _LATENESS.append(now - slot)


async def once() -> None:
    """W2 body: count executions, note when the last one ran."""
    _DONE["count"] += 1
    if _DONE["count"] == _DONE["target"]:
        _DONE["finished"] = time.time()


def _ref(fn: Any) -> Any:
    return f"__main__:{fn.__name__}"


def w1(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` interval jobs every second for ``duration`` s: lateness of each body's start."""
    jobs, duration = int(p["jobs"]), int(p["duration"])
    slots, lateness, window = _SLOTS, _LATENESS, _WINDOW

    def submitted(event: Any) -> None:
        # Called synchronously when the job is handed to the executor, before its body runs.
        slots[event.job_id].extend(t.timestamp() for t in event.scheduled_run_times)

    async def go(folder: str) -> dict[str, Any]:
        scheduler = _scheduler(p, folder)
        scheduler.add_listener(submitted, EVENT_JOB_SUBMITTED)
        start = datetime.fromtimestamp(next_whole_second(3.0), UTC)
        for i in range(jobs):
            trigger = IntervalTrigger(seconds=1, start_date=start)
            scheduler.add_job(_ref(tick), trigger, args=[f"j{i}"], id=f"j{i}")
        scheduler.start()
        first = max(start.timestamp(), next_whole_second(1.0))
        window[:] = [first, first + duration]
        await sleep_until(first + duration + 2.0)
        scheduler.shutdown(wait=False)
        return lateness_summary(lateness, jobs * duration)

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(go(folder))


def w2(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` one-off jobs all due at one instant: executions/s."""
    jobs = int(p["jobs"])
    _DONE["target"] = jobs

    async def go(folder: str) -> dict[str, Any]:
        scheduler = _scheduler(p, folder)
        _count_adds(scheduler, Progress(1000))
        due = next_whole_second(float(p.get("lead", 3.0)))
        when = datetime.fromtimestamp(due, UTC)
        for i in range(jobs):
            scheduler.add_job(_ref(once), DateTrigger(run_date=when), id=f"o{i}")
        scheduler.start()
        started = time.time()
        while not _DONE["finished"]:
            await asyncio.sleep(0.002)
        scheduler.shutdown(wait=False)
        return throughput(_DONE["count"], due, started, _DONE["finished"])

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(go(folder))


def _count_adds(scheduler: AsyncIOScheduler, progress: Progress) -> None:
    # Jobs added before start() go into the store at start(): count them as they do, so a
    # run stopped at its time limit says how far the registration got.
    store = scheduler._jobstores["default"]
    add = store.add_job

    def counted(job: Any) -> None:
        add(job)
        progress.tick()

    store.add_job = counted


def w3(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` cron jobs: time to add and start; RSS bytes per job."""
    exprs = varied_crons(int(p["jobs"]))
    progress = Progress(1000)

    async def go(folder: str) -> dict[str, Any]:
        scheduler = _scheduler(p, folder)
        _count_adds(scheduler, progress)
        rss0, t0, cpu0 = rss_bytes(), time.perf_counter(), cpu_seconds()
        for i, expr in enumerate(exprs):
            trigger = CronTrigger.from_crontab(expr, timezone="UTC")
            scheduler.add_job(_ref(_noop), trigger, id=f"c{i}")
        scheduler.start()
        seconds = time.perf_counter() - t0
        per_job = (rss_bytes() - rss0) / len(exprs)
        scheduler.shutdown(wait=False)
        return {
            "seconds": seconds,
            "cpu_s": cpu_seconds() - cpu0,
            "bytes_per_job": per_job,
            "jobs": len(exprs),
        }

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(go(folder))


def w4(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` cron jobs none due for ``duration`` seconds: CPU and wake-ups."""
    exprs, duration = idle_crons(int(p["jobs"])), float(p["duration"])

    async def go(folder: str) -> dict[str, Any]:
        scheduler = _scheduler(p, folder)
        for i, expr in enumerate(exprs):
            trigger = CronTrigger.from_crontab(expr, timezone="UTC")
            scheduler.add_job(_ref(_noop), trigger, id=f"i{i}")
        scheduler.start()
        await asyncio.sleep(float(p.get("settle", 2.0)))
        counter = LoopCounter(asyncio.get_running_loop())
        start = idle_measure_start()
        await asyncio.sleep(duration)
        result = idle_measure_end(start, loop_iterations_per_s=counter.count / duration)
        scheduler.shutdown(wait=False)
        return result

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(go(folder))


def w5(p: dict[str, Any]) -> dict[str, Any]:
    """``CronTrigger.get_next_fire_time``: µs per call, walking forward from each slot."""

    def walk_one(expr: str, zone: Any, start: datetime, horizon: datetime, n: int) -> float:
        trigger = CronTrigger.from_crontab(expr, timezone=zone)

        def nxt(prev: datetime) -> datetime | None:
            # What the scheduler asks after a run: the next time after the previous one.
            return trigger.get_next_fire_time(prev, prev + _MICROSECOND)

        return w5_walk(nxt, start, horizon, n)

    return w5_zones(p, walk_one)


_MICROSECOND = timedelta(microseconds=1)


if __name__ == "__main__":
    main({"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5})
