"""FastScheduler (PyPI ``fastscheduler``): a polling thread (every 0.1 s) and worker threads.

Stores: "json" is its default (state kept in memory, snapshotted to a JSON file by a saver
thread after every change; it has no memory-only mode), "sqlite" its ``storage="sqlmodel"``
backend on a SQLite file, and "memory" a no-op ``StorageBackend`` subclass (its documented
extension point). "memory" is not in the default run: it was slower than "json" in W1 and W3,
because the saver thread, with nothing to write, then holds the scheduler's lock almost all the
time while it copies every job. ``history_retention_days=0``, as its README documents, turns
off the age filter that rescans the whole in-memory history on every event.
Job bodies are plain functions (it runs a coroutine with ``asyncio.run`` per call in a worker
thread, which is slower). Interval jobs are rescheduled from the end of each run, so they
drift: lateness is measured against the ``next_run`` the scheduler itself planned, and a job
that ran fewer than once per second counts the difference as missed.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

from _common import (
    Progress,
    cpu_seconds,
    idle_crons,
    idle_measure_end,
    idle_measure_start,
    lateness_summary,
    main,
    next_whole_second,
    rss_bytes,
    throughput,
    varied_crons,
)
from fastscheduler import FastScheduler
from fastscheduler.storage import StorageBackend

logging.basicConfig(level=logging.CRITICAL)


class MemoryBackend(StorageBackend):
    """Keeps nothing: FastScheduler's in-memory state is all there is."""

    def save_state(self, jobs: Any, history: Any, statistics: Any, **_: Any) -> None:
        return None

    def load_state(self) -> None:
        return None

    def save_dead_letters(self, dead_letters: Any, max_dead_letters: int) -> None:
        return None

    def load_dead_letters(self) -> list[Any]:
        return []

    def clear_dead_letters(self) -> int:
        return 0


def _scheduler(p: dict[str, Any], folder: str) -> FastScheduler:
    options: dict[str, Any] = {
        "state_file": os.path.join(folder, "fs_state.json"),
        "quiet": True,
        "history_retention_days": 0,
    }
    store = p.get("store", "json")
    if store == "memory":
        return FastScheduler(storage=MemoryBackend(), **options)
    if store == "json":
        return FastScheduler(**options)
    if store == "sqlite":
        url = f"sqlite:///{os.path.join(folder, 'fs.db')}"
        return FastScheduler(storage="sqlmodel", database_url=url, **options)
    raise ValueError(f"store {store!r}: expected json, sqlite or memory")


def _noop() -> None:
    return None


def w1(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` jobs ``every(1).seconds`` for ``duration`` s."""
    jobs, duration = int(p["jobs"]), int(p["duration"])
    lateness: list[float] = []
    by_id: dict[str, Any] = {}
    window: list[float] = []

    def body(job_id: str) -> None:
        now = time.time()
        if window and window[0] <= now < window[1]:
            # ``next_run`` still holds the time this run was planned for (it is moved on
            # after the body returns); list.append is atomic across worker threads.
            lateness.append(now - by_id[job_id].next_run)

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        scheduler = _scheduler(p, folder)
        for i in range(jobs):
            scheduler.every(1).seconds.do(body, f"job_{i}")
        by_id.update({job.job_id: job for job in scheduler.jobs})
        scheduler.start()
        first = next_whole_second(1.0)
        window[:] = [first, first + duration]
        time.sleep(first + duration + 2.0 - time.time())
        # No stop(): it takes the scheduler's lock for a last full save, which the saver
        # thread holds most of the time; the process ends right after the figures.
        return lateness_summary(lateness, jobs * duration)


def w2(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` one-off jobs all due at one instant: executions/s."""
    jobs = int(p["jobs"])
    lock = threading.Lock()
    state = {"count": 0, "finished": 0.0}
    done = threading.Event()

    def body() -> None:
        with lock:  # bodies run on several worker threads
            state["count"] += 1
            if state["count"] == jobs:
                state["finished"] = time.time()
                done.set()

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        scheduler = _scheduler(p, folder)
        due = next_whole_second(float(p.get("lead", 3.0)))
        # ``at`` takes a naive local time (it subtracts ``datetime.now()``).
        when = datetime.fromtimestamp(due, UTC).astimezone().replace(tzinfo=None)
        progress = Progress(1000)
        for _ in range(jobs):
            if time.time() < due:
                scheduler.at(when).do(body)
            else:  # registration outlasted the lead time: the job is due now
                scheduler.once(0).do(body)
            progress.tick()
        scheduler.start()
        started = time.time()
        done.wait()
        return throughput(state["count"], due, started, state["finished"])


def w3(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` cron jobs: time to add and start; RSS bytes per job."""
    exprs = varied_crons(int(p["jobs"]))
    progress = Progress(1000)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        scheduler = _scheduler(p, folder)
        rss0, t0, cpu0 = rss_bytes(), time.perf_counter(), cpu_seconds()
        for expr in exprs:
            scheduler.cron(expr).do(_noop)
            progress.tick()
        scheduler.start()
        seconds = time.perf_counter() - t0
        per_job = (rss_bytes() - rss0) / len(exprs)
        return {
            "seconds": seconds,
            "cpu_s": cpu_seconds() - cpu0,
            "bytes_per_job": per_job,
            "jobs": len(exprs),
        }


def w4(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` cron jobs none due for ``duration`` seconds: CPU and wake-ups."""
    exprs, duration = idle_crons(int(p["jobs"])), float(p["duration"])
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        scheduler = _scheduler(p, folder)
        for expr in exprs:
            scheduler.cron(expr).do(_noop)
        scheduler.start()
        time.sleep(float(p.get("settle", 2.0)))
        start = idle_measure_start()
        time.sleep(duration)
        return idle_measure_end(start, loop_iterations_per_s=None)


if __name__ == "__main__":
    main({"W1": w1, "W2": w2, "W3": w3, "W4": w4})
