"""Helpers shared by every subject script (standard library only: peers import it too).

A subject script is run as ``python subjects/<name>.py <workload> '<json params>'`` and prints
one line ``RESULT {json}`` on stdout; ``run.py`` collects those lines. Long registrations also
print ``PROGRESS <n>`` lines, so a run stopped by the runner's time limit still says how far it
got.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

#: W5 walks each expression forward from here, and starts again here past :data:`W5_HORIZON`.
W5_START = (2026, 1, 5)
W5_HORIZON = (2028, 1, 1)

#: The cron expressions of W5 (next fire time): common shapes, a few day rules.
W5_EXPRESSIONS: tuple[str, ...] = (
    "* * * * *",
    "*/5 * * * *",
    "0 * * * *",
    "30 2 * * *",
    "0 9 * * 1-5",
    "15,45 8-18 * * 1-5",
    "0 0 1 * *",
    "0 12 * * 0",
    "0 0 1 1 *",
    "5 4 * * sun",
    "0 22 * * 1-5",
    "*/15 9-17 * * *",
)


class Unsupported(Exception):
    """The subject has no way to run this workload (reported as n/a)."""


def emit(result: dict[str, Any]) -> None:
    """Print the subject's result line and flush."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


class Progress:
    """Prints ``PROGRESS <n>`` every ``every`` ticks (read by the runner after a time-out)."""

    def __init__(self, every: int = 1000) -> None:
        self.count = 0
        self.every = every

    def tick(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        before = self.count // self.every
        self.count += n
        if self.count // self.every != before:
            sys.stdout.write(f"PROGRESS {self.count}\n")
            sys.stdout.flush()


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def voluntary_switches() -> int:
    """Voluntary context switches of this process: one per sleep that ends in a wake-up."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as fh:
                for line in fh:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank (``nan`` if empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def lateness_summary(lateness: Iterable[float], expected: int) -> dict[str, Any]:
    """p50/p90/p99/max lateness in ms and missed slots, from seconds late per run."""
    values = [x * 1000.0 for x in lateness]
    return {
        "runs": len(values),
        "expected": expected,
        "missed": max(0, expected - len(values)),
        "p50_ms": percentile(values, 0.50),
        "p90_ms": percentile(values, 0.90),
        "p99_ms": percentile(values, 0.99),
        "max_ms": max(values) if values else math.nan,
    }


def varied_crons(n: int, seed: int = 7) -> list[str]:
    """``n`` cron expressions of varied shapes (none more often than every minute)."""
    rng = random.Random(seed)
    shapes: list[Callable[[], str]] = [
        lambda: f"{rng.randrange(60)} {rng.randrange(24)} * * *",
        lambda: f"*/{rng.choice((2, 5, 10, 15, 20, 30))} * * * *",
        lambda: f"{rng.randrange(60)} {rng.randrange(24)} * * 1-5",
        lambda: f"{rng.randrange(60)} */{rng.choice((2, 3, 4, 6))} * * *",
        lambda: f"{rng.randrange(60)} {rng.randrange(24)} {rng.randrange(1, 29)} * *",
        lambda: f"{rng.randrange(60)} {rng.randrange(8, 18)} * * {rng.randrange(7)}",
    ]
    return [rng.choice(shapes)() for _ in range(n)]


def idle_crons(n: int, seed: int = 11) -> list[str]:
    """``n`` daily cron expressions none of which is due within the next 6 hours."""
    rng = random.Random(seed)
    hour = (datetime.now(UTC).hour + 12) % 24
    hours = [(hour + d) % 24 for d in (-3, -2, -1, 0, 1, 2, 3)]
    return [f"{rng.randrange(60)} {rng.choice(hours)} * * *" for _ in range(n)]


def throughput(executions: int, due: float, started: float, finished: float) -> dict[str, Any]:
    """Executions per second, counted from when the jobs were due and the scheduler started.

    A scheduler whose registration outlasted the lead time is timed from the end of its
    start-up (its jobs were all due by then), not charged for the registration twice.
    """
    t0 = max(due, started)
    seconds = max(finished - t0, 1e-6)
    return {
        "executions": executions,
        "seconds": seconds,
        "per_s": executions / seconds,
        "late_start_s": max(0.0, started - due),
    }


def w5_walk(next_after: Callable[[Any], Any], start: Any, horizon: Any, count: int) -> float:
    """CPU seconds taken by ``count`` calls of ``next_after(previous)``, from ``start``.

    Each call asks for the slot after the previous answer, as a scheduler does; past
    ``horizon`` (or when there is no next slot) the walk starts again at ``start``. The
    thread's CPU time, not the wall clock: other processes on a busy machine then change the
    figure far less.
    """
    after = start
    t0 = time.thread_time()
    for _ in range(count):
        after = next_after(after)
        if after is None or after > horizon:
            after = start
    return time.thread_time() - t0


#: The zones W5 runs in: one without DST, one with it.
W5_ZONES = ("UTC", "Europe/Berlin")


def w5_zones(
    p: dict[str, Any], walk_one: Callable[[str, ZoneInfo, datetime, datetime, int], float]
) -> dict[str, Any]:
    """W5 in each zone of :data:`W5_ZONES`: µs per next fire time, over every expression.

    ``walk_one(expression, zone, start, horizon, count)`` returns the seconds taken by
    ``count`` next-fire-time computations of one expression (see :func:`w5_walk`).
    """
    per = max(1, int(p["iterations"]) // len(W5_EXPRESSIONS))
    result: dict[str, Any] = {"per_expression": per}
    for name in W5_ZONES:
        zone = ZoneInfo(name)
        start = datetime(*W5_START, tzinfo=zone)
        horizon = datetime(*W5_HORIZON, tzinfo=zone)
        seconds = sum(walk_one(e, zone, start, horizon, per) for e in W5_EXPRESSIONS)
        key = "us_utc" if name == "UTC" else "us_dst"
        result[key] = seconds / (per * len(W5_EXPRESSIONS)) * 1e6
    return result


def next_whole_second(margin: float = 1.0) -> float:
    """The first whole Unix second at least ``margin`` seconds from now."""
    return float(math.ceil(time.time() + margin))


async def sleep_until(wall: float) -> None:
    """Sleep until the Unix time ``wall``."""
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


class LoopCounter:
    """Counts event-loop iterations by wrapping the selector's ``select``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        selector = loop._selector  # type: ignore[attr-defined]
        original = selector.select

        def select(timeout: float | None = None) -> Any:
            self.count += 1
            return original(timeout)

        selector.select = select


def idle_measure_start() -> tuple[float, int, float]:
    """CPU seconds, voluntary switches and the wall time, at the start of an idle window."""
    return cpu_seconds(), voluntary_switches(), time.perf_counter()


def idle_measure_end(start: tuple[float, int, float], **extra: Any) -> dict[str, Any]:
    """The idle window's CPU seconds, % of one core and wake-ups per second."""
    cpu0, switches0, wall0 = start
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds() - cpu0
    result = {
        "seconds": wall,
        "cpu_s": cpu,
        "cpu_pct": 100.0 * cpu / wall,
        "wakeups_per_s": (voluntary_switches() - switches0) / wall,
    }
    result.update(extra)
    return result


def main(workloads: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """Run the workload named on the command line with its JSON parameters, then exit.

    The exit skips interpreter shutdown (``os._exit``): a peer's leftover worker threads
    (FastScheduler's state saver drains one full copy of every job per change) would
    otherwise keep the process alive long after the figures were taken.
    """
    name, params = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    fn = workloads.get(name)
    if fn is None:
        emit({"unsupported": f"no {name} for this subject"})
    else:
        try:
            emit(fn(params))
        except Unsupported as exc:
            emit({"unsupported": str(exc)})
    sys.stderr.flush()
    os._exit(0)
