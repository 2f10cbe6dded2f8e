"""What the benchmark runs: subjects, workloads, their sizes and cronhub's targets.

A *subject* is one scheduler in one configuration, run by a script in ``subjects/`` with the
project's Python (cronhub, the floor, croniter) or the peers' virtual environment (APScheduler,
FastScheduler). A *workload* is one of W1-W6 of the benchmark issue; each names the metrics
the report shows and the subject the ratios are taken against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Where a subject's interpreter comes from.
PROJECT, PEERS = "project", "peers"


@dataclass(frozen=True)
class Subject:
    """One scheduler in one configuration."""

    name: str
    label: str
    script: str
    python: str
    params: dict[str, Any] = field(default_factory=dict)
    workloads: tuple[str, ...] = ("W1", "W2", "W3", "W4")
    #: Time limits (seconds) that differ from :func:`time_limit`'s, by workload.
    limits: dict[str, float] = field(default_factory=dict)


SUBJECTS: tuple[Subject, ...] = (
    Subject("floor", "bare asyncio floor", "floor.py", PROJECT),
    Subject("croniter", "croniter (raw)", "floor.py", PROJECT, workloads=("W5",)),
    Subject(
        "cronhub-memory",
        "cronhub (memory://)",
        "cronhub_subject.py",
        PROJECT,
        {"store": "memory"},
        ("W1", "W2", "W3", "W4", "W5"),
    ),
    Subject(
        "cronhub-sqlite", "cronhub (SQLite)", "cronhub_subject.py", PROJECT, {"store": "sqlite"}
    ),
    Subject(
        "apscheduler-memory",
        "APScheduler (memory)",
        "apscheduler_subject.py",
        PEERS,
        {"store": "memory"},
        ("W1", "W2", "W3", "W4", "W5"),
    ),
    Subject(
        "apscheduler-sqlite",
        "APScheduler (SQLite)",
        "apscheduler_subject.py",
        PEERS,
        {"store": "sqlite"},
        # Its store commits each job on its own at start(): 10,000 take a minute or more on
        # a busy machine before the first one runs, and W2's rate is its target's reference.
        limits={"W2": 240.0},
    ),
    Subject(
        "fastscheduler-json",
        "FastScheduler (JSON state)",
        "fastscheduler_subject.py",
        PEERS,
        {"store": "json"},
    ),
    Subject(
        "fastscheduler-sqlite",
        "FastScheduler (SQLite)",
        "fastscheduler_subject.py",
        PEERS,
        {"store": "sqlite"},
    ),
)

#: Subjects that exist but are not run unless asked for by name.
EXTRA_SUBJECTS: tuple[Subject, ...] = (
    Subject(
        "fastscheduler-memory",
        "FastScheduler (no-op backend)",
        "fastscheduler_subject.py",
        PEERS,
        {"store": "memory"},
    ),
)


@dataclass(frozen=True)
class Metric:
    """One column of a workload's table: a key of the subject's result."""

    key: str
    label: str
    #: ``True`` when a smaller value is better (lateness, seconds, bytes).
    lower_is_better: bool = True
    digits: int = 1


@dataclass(frozen=True)
class Workload:
    """One workload of the issue."""

    name: str
    title: str
    description: str
    metrics: tuple[Metric, ...]
    #: The metric ratios are computed on, and the subject they are taken against.
    ratio_metric: str
    baseline: str
    #: Run the subjects of one repeat at the same time (only for idle workloads).
    concurrent: bool = False


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "W1",
            "precision",
            "{jobs:,} interval jobs every second for {duration} s: how late each body starts "
            "after its slot, and slots whose body had not started when the subject stopped "
            "measuring (2 s after the window, or later if its event loop was kept busy).",
            (
                Metric("p50_ms", "p50 ms"),
                Metric("p90_ms", "p90 ms"),
                Metric("p99_ms", "p99 ms"),
                Metric("max_ms", "max ms"),
                Metric("missed", "missed", digits=0),
            ),
            "p99_ms",
            "floor",
        ),
        Workload(
            "W2",
            "throughput",
            "{jobs:,} one-off jobs all due at the same second: executions per second until the "
            "last one ran (cronhub: and every outcome is written).",
            (Metric("per_s", "executions/s", lower_is_better=False, digits=0),),
            "per_s",
            "apscheduler-sqlite",
        ),
        Workload(
            "W3",
            "scale",
            "{jobs:,} cron jobs of varied expressions: seconds to define, register and start "
            "them (and the CPU time they took), and resident memory added per job.",
            (
                Metric("seconds", "seconds", digits=2),
                Metric("cpu_s", "CPU s", digits=2),
                Metric("bytes_per_job", "bytes/job", digits=0),
            ),
            "seconds",
            "apscheduler-memory",
        ),
        Workload(
            "W4",
            "idle",
            "{jobs:,} cron jobs none of which is due for {duration} s: CPU used and wake-ups "
            "(voluntary context switches of the process) per second.",
            (
                Metric("cpu_pct", "CPU % of one core", digits=2),
                Metric("cpu_s", "CPU s", digits=3),
                Metric("wakeups_per_s", "wake-ups/s", digits=1),
            ),
            "wakeups_per_s",
            "floor",
            concurrent=True,
        ),
        Workload(
            "W5",
            "next fire time",
            "{iterations:,} next-fire-time computations over 12 common expressions, each asked "
            "for the slot after the previous one: µs of CPU time per computation, in UTC and "
            "in Europe/Berlin (DST rules).",
            (
                Metric("us_utc", "µs (UTC)", digits=1),
                Metric("us_dst", "µs (Europe/Berlin)", digits=1),
            ),
            "us_dst",
            "croniter",
        ),
    )
}

#: The sizes of the issue (``--quick`` divides them).
FULL_SIZES: dict[str, dict[str, Any]] = {
    "W1": {"jobs": 1000, "duration": 20},
    "W2": {"jobs": 10_000},
    "W3": {"jobs": 100_000},
    "W4": {"jobs": 10_000, "duration": 30},
    "W5": {"iterations": 60_000},
    "W6": {"jobs": 1000, "duration": 20, "instances": [1, 2, 4]},
}
QUICK_SIZES: dict[str, dict[str, Any]] = {
    "W1": {"jobs": 100, "duration": 3},
    "W2": {"jobs": 1000},
    "W3": {"jobs": 5000},
    "W4": {"jobs": 1000, "duration": 5},
    "W5": {"iterations": 6000},
    "W6": {"jobs": 100, "duration": 5, "instances": [1, 2]},
}


def time_limit(workload: str, params: dict[str, Any], subject: Subject | None = None) -> float:
    """Seconds one subject process may take before it is stopped and reported unfinished."""
    if subject is not None and workload in subject.limits:
        return subject.limits[workload]
    if workload == "W1":
        return float(params["duration"]) + 60.0
    if workload == "W4":
        # Registration comes first, and the peers' are slow (a commit or a full copy of
        # every job per job added), the more so with every W4 subject starting at once.
        return float(params["duration"]) + 180.0
    if workload == "W6":
        return (float(params["duration"]) + 60.0) * len(params.get("instances", [1]))
    return {"W2": 60.0, "W3": 60.0, "W5": 120.0}[workload]


#: Workloads whose cost grows with the subject's speed (not with a set duration): there, a run
#: longer than :data:`REPEAT_LIMIT` seconds is not repeated, to keep a full run near 15 min.
SIZE_BOUND = ("W2", "W3")
REPEAT_LIMIT = 30.0


@dataclass(frozen=True)
class Target:
    """One of cronhub's targets, checked on the median figures of one run."""

    workload: str
    text: str
    subject: str
    metric: str
    #: ``value <= factor * baseline`` (or ``>=`` when ``at_least``), or against ``limit``.
    factor: float | None = None
    baseline: str | None = None
    limit: float | None = None
    at_least: bool = False
    #: Also required: this result key is 0 in every repeat.
    zero: str | None = None


TARGETS: tuple[Target, ...] = (
    Target("W1", "memory:// p99 within 2x the floor", "cronhub-memory", "p99_ms", 2.0, "floor"),
    Target(
        "W1",
        "SQLite p99 within 3x the floor, 0 missed",
        "cronhub-sqlite",
        "p99_ms",
        3.0,
        "floor",
        zero="missed",
    ),
    Target(
        "W2",
        "SQLite at least 15x APScheduler (SQLite)",
        "cronhub-sqlite",
        "per_s",
        15.0,
        "apscheduler-sqlite",
        at_least=True,
    ),
    Target("W3", "registered and started in under 3 s", "cronhub-memory", "seconds", limit=3.0),
    Target("W3", "at most 2 KB per job", "cronhub-memory", "bytes_per_job", limit=2048.0),
    Target(
        "W3", "SQLite: registered and started in under 3 s", "cronhub-sqlite", "seconds", limit=3.0
    ),
    Target(
        "W4",
        "wake-ups at the floor (at most floor + 1/s)",
        "cronhub-memory",
        "wakeups_per_s",
        limit=1.0,
        baseline="floor",
    ),
    Target("W4", "CPU under 2 % of one core (issue 3)", "cronhub-sqlite", "cpu_pct", limit=2.0),
    Target(
        "W5",
        "within 1.2x raw croniter (Europe/Berlin)",
        "cronhub-memory",
        "us_dst",
        1.2,
        "croniter",
    ),
    Target("W5", "within 1.2x raw croniter (UTC)", "cronhub-memory", "us_utc", 1.2, "croniter"),
)
