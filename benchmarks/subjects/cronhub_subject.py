"""cronhub: the real engine on ``memory://`` or the SQLite plugin, async job bodies.

Every slot is claimed in storage and every run's outcome is recorded (SQLite: a row in
``cronhub_runs``, checked after the run), exactly as in production: default job options (overlap
``skip``, alerts on, 60 s misfire grace), the system clock, a fresh database file per run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

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

from cronhub.engine import Engine
from cronhub.hub import Hub
from cronhub.jobs import make_job
from cronhub.plugins import get_plugin_manager

logging.basicConfig(level=logging.ERROR)


def _hub(p: dict[str, Any], folder: str, **settings: Any) -> Hub:
    store = p.get("store", "memory")
    if store not in ("memory", "sqlite"):
        raise ValueError(f"store {store!r}: expected memory or sqlite")
    url = "memory://" if store == "memory" else f"sqlite:///{os.path.join(folder, 'bench.db')}"
    # The storage plugins only: the demo job package and the Slack plugin would add their
    # own jobs and hooks to every run.
    pm = get_plugin_manager(disabled=["acme", "notify_slack"])
    return Hub(storage=url, plugin_manager=pm, instance_id="bench", **settings)


def _recorded(folder: str, window: list[float] | None = None) -> dict[str, int] | None:
    """Rows per status in the SQLite file (of slots inside ``window`` if given)."""
    path = os.path.join(folder, "bench.db")
    if not os.path.exists(path):
        return None
    counts: dict[str, int] = {}
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT status, scheduled_for FROM cronhub_runs")
        if window is not None:
            lo, hi = (datetime.fromtimestamp(w, UTC).replace(tzinfo=None) for w in window)
        for status, slot in rows:
            if window is not None and not lo <= datetime.fromisoformat(slot) < hi:
                continue
            counts[status] = counts.get(status, 0) + 1
    return counts


def w1(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` jobs ``every=1`` for ``duration`` seconds: lateness of each body's start."""
    jobs, duration = int(p["jobs"]), int(p["duration"])
    lateness: dict[tuple[str, float], float] = {}
    window: list[float] = []

    async def body(ctx: Any) -> None:
        now = time.time()
        slot = ctx.scheduled_for.timestamp()
        if window and window[0] <= slot < window[1]:
            lateness[(ctx.job.name, slot)] = now - slot

    async def go(folder: str) -> dict[str, Any]:
        hub = _hub(p, folder)
        for i in range(jobs):
            hub.add_job(make_job(body, name=f"j{i}", every=1, executor="async"))
        engine = Engine(hub)
        await engine.start()
        first = next_whole_second(1.0)
        window[:] = [first, first + duration]
        await sleep_until(first + duration + 2.0)
        await engine.stop()
        hub.close()
        result = lateness_summary(lateness.values(), jobs * duration)
        recorded = _recorded(folder, window)
        if recorded is not None:
            result["recorded"] = recorded
        return result

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(go(folder))


def w2(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` one-off jobs all due at one instant: executions/s until all are recorded."""
    jobs = int(p["jobs"])
    count = 0

    async def body() -> None:
        nonlocal count
        count += 1

    async def go(folder: str) -> dict[str, Any]:
        # W2's clock starts at the due instant: slots claimed ahead of it (``claim_ahead``,
        # 0.5 s by default) would do their storage work off that clock, so none are here.
        hub = _hub(p, folder, claim_ahead=0)
        due = next_whole_second(float(p.get("lead", 3.0)))
        when = datetime.fromtimestamp(due, UTC)
        for i in range(jobs):
            hub.add_job(make_job(body, name=f"o{i}", at=when, executor="async"))
        engine = Engine(hub)
        await engine.start()
        started = time.time()
        await sleep_until(due)
        # Done when every body ran and every outcome is written (the writer is idle).
        while count < jobs or not engine.runs.idle:
            await asyncio.sleep(0.002)
        finished = time.time()
        await engine.stop()
        hub.close()
        result = throughput(count, due, started, finished)
        recorded = _recorded(folder)
        if recorded is not None:
            result["recorded"] = recorded
        return result

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(go(folder))


def w3(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` cron jobs: time to define, register and start; RSS bytes per job."""
    exprs = varied_crons(int(p["jobs"]))
    progress = Progress(1000)

    async def body() -> None:
        return None

    async def go(folder: str) -> dict[str, Any]:
        hub = _hub(p, folder)
        _ = hub.plugin_manager, hub.settings  # plugin loading is not a per-job cost
        rss0, t0, cpu0 = rss_bytes(), time.perf_counter(), cpu_seconds()
        for i, expr in enumerate(exprs):
            hub.add_job(make_job(body, name=f"c{i}", cron=expr, executor="async"))
            progress.tick()
        engine = Engine(hub)
        await engine.start()
        seconds = time.perf_counter() - t0
        per_job = (rss_bytes() - rss0) / len(exprs)
        await engine.stop()
        hub.close()
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

    async def body() -> None:
        return None

    async def go(folder: str) -> dict[str, Any]:
        hub = _hub(p, folder)
        for i, expr in enumerate(exprs):
            hub.add_job(make_job(body, name=f"i{i}", cron=expr, executor="async"))
        engine = Engine(hub)
        await engine.start()
        await asyncio.sleep(float(p.get("settle", 2.0)))  # let start-up work finish
        counter = LoopCounter(asyncio.get_running_loop())
        start = idle_measure_start()
        await asyncio.sleep(duration)
        result = idle_measure_end(start, loop_iterations_per_s=counter.count / duration)
        await engine.stop()
        hub.close()
        return result

    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(go(folder))


def w5(p: dict[str, Any]) -> dict[str, Any]:
    """cronhub ``CronSchedule.next_after``: µs per call, walking forward from each slot."""
    from cronhub.schedules import CronSchedule

    def walk_one(expr: str, zone: ZoneInfo, start: datetime, horizon: datetime, n: int) -> float:
        # One schedule per expression, as the engine keeps one per job.
        return w5_walk(CronSchedule(expr, zone).next_after, start, horizon, n)

    return w5_zones(p, walk_one)


if __name__ == "__main__":
    main({"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5})
