"""Several real scheduler processes on one PostgreSQL database.

- 4 workers x 200 jobs every second x 60 s: every slot exactly once (0 duplicates, 0 missed);
  the claim lag (``started_at - scheduled_for``, both by database time) is reported, not
  asserted: this machine is shared and small. A negative control with the exactly-once
  protection removed shows the harness does detect duplicates.
- ``kill -9`` of the instance running a job: its run is reaped as ``crashed`` within the lease
  and retried once, on the survivor.
- One instance's clock 1 s fast: no run starts before its slot by database time.

The workers are this file run as a script (``python test_postgres_cluster.py worker ...``):
a ``Hub`` with N ``every=1`` jobs, its clock shifted by ``CRONHUB_TEST_CLOCK_SHIFT`` seconds.
``CRONHUB_CLUSTER_SECONDS`` shortens (or lengthens) the load test (default 60).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve()
LOAD_SECONDS = float(os.environ.get("CRONHUB_CLUSTER_SECONDS", "60"))


# -- the worker (script mode) ----------------------------------------------------------------


class ShiftedClock:
    """The system clock plus ``shift`` seconds (a host whose clock is wrong)."""

    max_sleep = 60.0

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.shift)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def worker_main(argv: list[str]) -> None:
    """``worker URL INSTANCE SECONDS JOBS KIND``: run a scheduler, print ``ready``, then stop."""
    import logging

    import cronhub_storage_postgres.storage as pg

    from cronhub.config import load_settings
    from cronhub.engine import Engine
    from cronhub.hub import Hub

    url, instance, seconds, count, kind = argv[0], argv[1], float(argv[2]), int(argv[3]), argv[4]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    shift = float(os.environ.get("CRONHUB_TEST_CLOCK_SHIFT", "0"))
    if shift:
        pg.local_time = lambda: time.time() + shift  # the storage's view of this host's clock
    if os.environ.get("CRONHUB_TEST_NO_EXACTLY_ONCE") == "1":
        # Negative control: no per-job locks, no in-transaction check of existing rows (and
        # the test drops the unique index): nothing stops two instances claiming one slot.
        pg.PostgresStorage._lock_jobs = lambda self, conn, names: None  # type: ignore[method-assign]
        pg.PostgresStorage._existing_rows = lambda self, conn, requests: {}  # type: ignore[method-assign]
    settings = {
        "storage": url,
        "instance_id": instance,
        "lease_ttl": 3.0 if kind == "crash" else 30.0,
        "heartbeat_interval": 1.0 if kind == "crash" else 10.0,
        "reaper_interval": 0.5 if kind == "crash" else 5.0,
        "shutdown_grace": 1.0,
    }
    hub = Hub(storage=url, clock=ShiftedClock(shift), settings=load_settings(settings, cwd="/"))
    if kind == "crash":

        @hub.job(name="slow", every=3600, run_on_startup=True, retries=1, retry_delay=0.2)
        async def slow() -> None:
            await asyncio.sleep(30)
    else:
        for n in range(count):

            async def noop() -> None:
                return None

            hub.job(name=f"j{n:03d}", every=1)(noop)

    async def main() -> None:
        engine = Engine(hub)
        await engine.start()
        offset = getattr(hub.storage, "clock_offset", None)
        print(json.dumps({"ready": instance, "pid": os.getpid(), "offset": offset}), flush=True)
        try:
            await asyncio.sleep(seconds)
        finally:
            await engine.stop(grace=1.0)

    asyncio.run(main())
    hub.close()


# -- the tests -----------------------------------------------------------------------------------

if __name__ != "__main__":
    import psycopg
    from cronhub_storage_postgres.testing import (  # noqa: F401 - fixtures
        postgres_database,
        postgres_server,
    )
    from sqlalchemy.engine import make_url


class Worker:
    """A worker process and what it printed."""

    def __init__(
        self, url: str, instance: str, seconds: float, jobs: int, kind: str, env: dict[str, str]
    ) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CRONHUB_")}
        environ.update(env)
        environ["CRONHUB_DISABLE_PLUGINS"] = "acme"  # the demo jobs would add load
        self.instance = instance
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "worker", url, instance, str(seconds), str(jobs), kind],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )
        self.ready: dict[str, Any] = {}

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("{"):
                self.ready = json.loads(line)
                return self.ready
        raise AssertionError(f"worker {self.instance} did not start: {self.finish(5)[1]}")

    def finish(self, timeout: float) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database
    ) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def show(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Put a measured figure in the test run's output, past pytest's capturing."""
    with capsys.disabled():
        print(text)


def prepare(url: str) -> None:
    """Create the schema once, before the workers race for it."""
    from cronhub_storage_postgres import PostgresStorage

    storage = PostgresStorage(url)
    storage.open()
    storage.close()


def run_cluster(
    url: str, workers: int, seconds: float, jobs: int, env: dict[str, str] | None = None
) -> tuple[datetime, datetime, list[str]]:
    """Run ``workers`` processes for ``seconds``; the window all of them were up, and stderrs."""
    procs = [Worker(url, f"w{i}", seconds, jobs, "load", env or {}) for i in range(workers)]
    for proc in procs:
        proc.wait_ready()
    start = query(url, "SELECT clock_timestamp()")[0][0]
    errors = []
    for proc in procs:
        code, err = proc.finish(seconds + 90)
        assert code == 0, f"worker {proc.instance} exited {code}: {err[-3000:]}"
        errors.append(err)
    end = start + timedelta(seconds=seconds - 3)
    return start + timedelta(seconds=2), end, errors


def slot_counts(url: str, start: datetime, end: datetime) -> Counter[tuple[str, datetime]]:
    rows = query(
        url,
        "SELECT job, scheduled_for, count(*) FROM cronhub_runs"
        " WHERE scheduled_for >= %s AND scheduled_for < %s AND attempt = 1"
        " GROUP BY job, scheduled_for",
        start,
        end,
    )
    return Counter({(job, slot): n for job, slot, n in rows})


def test_four_workers_run_every_slot_exactly_once(postgres_database, capsys):
    jobs, workers = 200, 4
    prepare(postgres_database)
    start, end, _ = run_cluster(postgres_database, workers, LOAD_SECONDS, jobs)
    start = start.replace(microsecond=0) + timedelta(seconds=1)
    end = end.replace(microsecond=0)
    counts = slot_counts(postgres_database, start, end)
    expected = {
        (f"j{n:03d}", start + timedelta(seconds=s))
        for n in range(jobs)
        for s in range(int((end - start).total_seconds()))
    }
    duplicates = sum(1 for n in counts.values() if n > 1)
    missed = len(expected - set(counts))
    lags = sorted(
        lag
        for (lag,) in query(
            postgres_database,
            "SELECT extract(epoch FROM started_at - scheduled_for) * 1000 FROM cronhub_runs"
            " WHERE scheduled_for >= %s AND scheduled_for < %s AND started_at IS NOT NULL",
            start,
            end,
        )
    )
    statuses = dict(
        query(
            postgres_database,
            "SELECT status, count(*) FROM cronhub_runs WHERE scheduled_for >= %s"
            " AND scheduled_for < %s GROUP BY status",
            start,
            end,
        )
    )
    by_instance = dict(
        query(
            postgres_database,
            "SELECT instance, count(*) FROM cronhub_runs WHERE scheduled_for >= %s"
            " AND scheduled_for < %s GROUP BY instance",
            start,
            end,
        )
    )
    p50, p99 = float(lags[len(lags) // 2]), float(lags[int(len(lags) * 0.99)])
    report = (
        f"\n[postgres cluster] {workers} workers x {jobs} jobs/s, {len(expected)} slots checked:"
        f" {duplicates} duplicates, {missed} missed; statuses {statuses};"
        f" per instance {by_instance}; claim lag ms p50 {p50:.1f} p99 {p99:.1f}"
        f" max {float(lags[-1]):.1f}"
    )
    show(capsys, report)
    assert len(expected) >= jobs * (LOAD_SECONDS - 10)
    assert duplicates == 0
    assert missed == 0, sorted(expected - set(counts))[:10]
    if LOAD_SECONDS >= 30:
        # A claim batch locks all its jobs, so one worker tends to win a whole second; over a
        # minute the slots still spread across instances.
        assert len(by_instance) >= 2, by_instance


def test_the_harness_detects_duplicates_without_the_exactly_once_protection(
    postgres_database, capsys
):
    # The negative control: same harness, unique index dropped, claims unguarded.
    prepare(postgres_database)
    query(postgres_database, "DROP INDEX uq_cronhub_runs_slot")
    start, end, _ = run_cluster(
        postgres_database, 2, 8, 20, env={"CRONHUB_TEST_NO_EXACTLY_ONCE": "1"}
    )
    counts = slot_counts(postgres_database, start.replace(microsecond=0), end)
    duplicates = sum(1 for n in counts.values() if n > 1)
    show(
        capsys,
        f"\n[postgres control] without the unique key: {duplicates} of {len(counts)} slots"
        " claimed twice",
    )
    assert duplicates > 0


def test_kill_9_mid_run_is_reaped_within_the_lease_and_retried_once_on_the_survivor(
    postgres_database, capsys
):
    prepare(postgres_database)
    procs = {name: Worker(postgres_database, name, 120, 1, "crash", {}) for name in ("a", "b")}
    try:
        for proc in procs.values():
            proc.wait_ready()
        deadline = time.monotonic() + 30
        owner = None
        while owner is None and time.monotonic() < deadline:
            rows = query(
                postgres_database,
                "SELECT instance, id FROM cronhub_runs WHERE status = 'running' ORDER BY id",
            )
            owner = rows[0] if rows else None
            time.sleep(0.1)
        assert owner is not None, "no run started"
        victim, run_id = owner
        survivor = "b" if victim == "a" else "a"
        procs[victim].proc.send_signal(signal.SIGKILL)
        procs[victim].proc.wait(10)
        killed_at = query(postgres_database, "SELECT clock_timestamp()")[0][0]
        lease_ttl, reaper = 3.0, 0.5
        deadline = time.monotonic() + 30
        retry: list[tuple[Any, ...]] = []
        while not retry and time.monotonic() < deadline:
            time.sleep(0.1)
            retry = query(
                postgres_database,
                "SELECT instance, status FROM cronhub_runs WHERE attempt = 2 AND job = 'slow'"
                " AND status = 'running'",
            )
        ((status, finished, error),) = query(
            postgres_database,
            "SELECT status, finished_at, error_type FROM cronhub_runs WHERE id = %s",
            run_id,
        )
        assert status == "crashed", (status, error)
        detected = (finished - killed_at).total_seconds()
        show(
            capsys,
            f"\n[postgres kill -9] run {run_id} on {victim} crashed {detected:.2f} s after the"
            f" kill (lease {lease_ttl} s); retry on {retry}",
        )
        assert detected <= lease_ttl + reaper + 2
        everything = query(
            postgres_database,
            "SELECT id, attempt, trigger, status, instance, scheduled_for, not_before"
            " FROM cronhub_runs ORDER BY id",
        )
        assert retry == [(survivor, "running")], everything
        attempts = query(postgres_database, "SELECT count(*) FROM cronhub_runs WHERE attempt = 2")[
            0
        ][0]
        assert attempts == 1
    finally:
        for proc in procs.values():
            if proc.proc.poll() is None:
                proc.proc.terminate()
            proc.finish(30)


def test_a_worker_with_a_fast_clock_starts_nothing_before_its_slot(postgres_database, capsys):
    prepare(postgres_database)
    fast = Worker(postgres_database, "fast", 12, 20, "load", {"CRONHUB_TEST_CLOCK_SHIFT": "1"})
    normal = Worker(postgres_database, "normal", 12, 20, "load", {})
    ready = fast.wait_ready()
    normal.wait_ready()
    for proc in (fast, normal):
        code, err = proc.finish(100)
        assert code == 0, err[-3000:]
        if proc is fast:
            fast_err = err
    early = query(
        postgres_database,
        "SELECT count(*) FROM cronhub_runs WHERE started_at < scheduled_for",
    )[0][0]
    by_instance = dict(
        query(
            postgres_database,
            "SELECT instance, count(*) FROM cronhub_runs WHERE started_at IS NOT NULL"
            " GROUP BY instance",
        )
    )
    show(
        capsys,
        f"\n[postgres skew] fast instance measured offset {ready['offset']:.3f} s; runs per"
        f" instance {by_instance}; started before their slot: {early}",
    )
    assert early == 0
    assert by_instance.get("fast", 0) > 0  # the fast instance did claim slots
    assert ready["offset"] == pytest.approx(-1.0, abs=0.3)
    assert "ahead of the database's" in fast_err


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker_main(sys.argv[2:])
