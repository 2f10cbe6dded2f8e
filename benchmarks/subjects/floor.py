"""The bare-asyncio floor: one ``loop.call_at`` per due time and nothing else.

No storage, no history, no claims: the least any asyncio scheduler can do. W3 and W4 compute
next fire times with croniter (parsed once per expression); W5 is raw croniter.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from _common import (
    LoopCounter,
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


def w1(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` callbacks every second for ``duration`` seconds."""
    jobs, duration = int(p["jobs"]), int(p["duration"])

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        first = next_whole_second(1.0)
        end = first + duration
        lateness: list[float] = []

        def fire(slot: float) -> None:
            lateness.append(time.time() - slot)
            nxt = slot + 1.0
            if nxt < end:
                loop.call_at(loop.time() + (nxt - time.time()), fire, nxt)

        for _ in range(jobs):
            loop.call_at(loop.time() + (first - time.time()), fire, first)
        await sleep_until(end + 2.0)
        return lateness_summary(lateness, jobs * duration)

    return asyncio.run(go())


def w2(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` callbacks all due at one instant: how fast they all ran (nothing persisted)."""
    jobs = int(p["jobs"])

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        due = next_whole_second(float(p.get("lead", 3.0)))
        done = asyncio.Event()
        count = 0
        finished = 0.0

        def fire() -> None:
            nonlocal count, finished
            count += 1
            if count == jobs:
                finished = time.time()
                done.set()

        at = loop.time() + (due - time.time())
        for _ in range(jobs):
            loop.call_at(at, fire)
        started = time.time()
        await done.wait()
        return throughput(count, due, started, finished)

    return asyncio.run(go())


def _arm(loop: asyncio.AbstractEventLoop, exprs: list[str]) -> list[asyncio.TimerHandle]:
    from croniter import croniter

    parsed: dict[str, croniter] = {}
    now = datetime.now(UTC)
    wall = time.time()
    handles = []
    for expr in exprs:
        it = parsed.get(expr)
        if it is None:
            it = parsed[expr] = croniter(expr, now)
        nxt = it.get_next(float, now)
        handles.append(loop.call_at(loop.time() + (nxt - wall), lambda: None))
    return handles


def w3(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` cron expressions: next fire time and one timer each."""
    exprs = varied_crons(int(p["jobs"]))

    async def go() -> dict[str, Any]:
        rss0, t0, cpu0 = rss_bytes(), time.perf_counter(), cpu_seconds()
        handles = _arm(asyncio.get_running_loop(), exprs)
        seconds = time.perf_counter() - t0
        per_job = (rss_bytes() - rss0) / len(exprs)
        for h in handles:
            h.cancel()
        return {
            "seconds": seconds,
            "cpu_s": cpu_seconds() - cpu0,
            "bytes_per_job": per_job,
            "jobs": len(exprs),
        }

    return asyncio.run(go())


def w4(p: dict[str, Any]) -> dict[str, Any]:
    """``jobs`` timers none of which is due: CPU and wake-ups while idle."""
    exprs, duration = idle_crons(int(p["jobs"])), float(p["duration"])

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        _arm(loop, exprs)
        counter = LoopCounter(loop)
        start = idle_measure_start()
        await asyncio.sleep(duration)
        return idle_measure_end(start, loop_iterations_per_s=counter.count / duration)

    return asyncio.run(go())


def w5(p: dict[str, Any]) -> dict[str, Any]:
    """Raw croniter: µs per ``get_next`` on a parsed expression, walking forward."""
    from croniter import croniter

    def walk_one(expr: str, zone: ZoneInfo, start: datetime, horizon: datetime, n: int) -> float:
        it = croniter(expr, start)

        def nxt(prev: datetime) -> datetime:
            if prev is start:  # the walk starts (again): croniter keeps its own position
                it.set_current(start, force=True)
            return it.get_next(datetime)

        return w5_walk(nxt, start, horizon, n)

    return w5_zones(p, walk_one)


if __name__ == "__main__":
    main({"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5})
