"""Real worker processes on one real SQLite file, with real signals (design section 4).

Every test starts ``cronhub --app chapp:hub worker`` processes (the installed executable, as a
user runs it) on a database in ``tmp_path``. The application module ``chapp`` is written next
to it; its jobs append one line per execution to a side log (``O_APPEND``, one ``write`` per
line), so the tests count both the rows in storage and the job bodies that actually ran.
Settings come from ``CRONHUB_*`` variables with short leases, so crash detection takes seconds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from cronhub.runs import ClaimRequest, RunStatus, Trigger

CRONHUB = str(Path(sys.executable).parent / "cronhub")

#: The application every worker loads. ``CH_MODE`` picks the jobs of one test.
APP = '''
"""Jobs of the multi-process tests; each execution appends a line to $CH_LOG."""

import asyncio
import os
import signal
import time

from cronhub import Hub

hub = Hub()
MODE = os.environ.get("CH_MODE", "")
LOG = os.environ.get("CH_LOG", os.devnull)
INSTANCE = os.environ.get("CRONHUB_INSTANCE_ID", "?")
NEVER = "2099-01-01T00:00:00+00:00"


def record(ctx, event):
    slot = ctx.scheduled_for.isoformat() if ctx.scheduled_for else "-"
    name = ctx.run.job
    line = f"{name} {slot} {ctx.attempt} {ctx.run.id} {INSTANCE} {event}\\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def tick(ctx):
    record(ctx, "ran")


async def long_healthy(ctx):
    record(ctx, "start")
    await asyncio.sleep(float(os.environ.get("CH_DURATION", "8")))
    record(ctx, "done")


async def crash_me(ctx):
    record(ctx, "start")
    if ctx.attempt == 1:
        await asyncio.sleep(120)
    record(ctx, "done")


async def fenced(ctx):
    record(ctx, "start")
    if ctx.attempt == 1:
        await asyncio.sleep(30)
    record(ctx, "done")


def fails():
    raise RuntimeError("this job always fails")


def exits(ctx):
    raise SystemExit(3)


def process_hangs():
    time.sleep(3600)


def process_exits():
    os._exit(7)


def process_kills_itself():
    os.kill(os.getpid(), signal.SIGKILL)


def thread_hangs(ctx):
    while not ctx.cancelled:
        time.sleep(0.05)


if MODE == "load":
    # overlap="allow": a stall of the loaded machine longer than a second would otherwise record
    # the next slot as ``skipped`` (the run before it still active). This test is about claims;
    # overlap policies have their own tests.
    for n in range(int(os.environ.get("CH_JOBS", "200"))):
        hub.job(tick, name=f"tick{n:03d}", every="1s", executor="async", misfire_grace=30,
                overlap="allow")
elif MODE == "long":
    for n in range(int(os.environ.get("CH_JOBS", "100"))):
        hub.job(long_healthy, name=f"long{n:03d}", at=os.environ["CH_AT"], executor="async",
                jitter=float(os.environ.get("CH_JITTER", "3")), misfire_grace=120)
elif MODE == "manual":
    hub.job(crash_me, name="retry_once", at=NEVER, executor="async", retries=1, retry_delay=0)
    hub.job(crash_me, name="no_retry", at=NEVER, executor="async", retries=0)
    hub.job(fenced, name="fenced", at=NEVER, executor="async", retries=1, retry_delay=0)
elif MODE == "chaos":
    hub.job(tick, name="heartbeat", every="1s", executor="async")
    hub.job(fails, name="fails", every="1s")
    hub.job(exits, name="exits", every="1s")
    hub.job(thread_hangs, name="thread_hangs", every="2s", timeout=1)
    hub.job(process_hangs, name="process_hangs", every="3s", executor="process", timeout=1)
    hub.job(process_exits, name="process_exits", every="3s", executor="process")
    hub.job(process_kills_itself, name="process_kills", every="3s", executor="process")
'''

#: Short crash-detection settings (seconds) for every worker unless a test says otherwise.
FAST = {
    "CRONHUB_LEASE_TTL": "3",
    "CRONHUB_HEARTBEAT_INTERVAL": "1",
    "CRONHUB_REAPER_INTERVAL": "1",
    "CRONHUB_SHUTDOWN_GRACE": "1",
}


@dataclass
class Cluster:
    """Worker processes sharing one SQLite file, and what they wrote."""

    root: Path
    mode: str
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.root / "cronhub.db"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def log(self) -> Path:
        return self.root / "executions.log"

    def start(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``cronhub worker`` as instance ``name``; its stderr goes to ``<name>.err``."""
        full = {k: v for k, v in os.environ.items() if not k.startswith(("CRONHUB_", "PYTHONPATH"))}
        full.update(FAST)
        # Only this test's jobs: other installed plugins (job packages, notifiers) stay off.
        others = {e.name for e in entry_points(group="cronhub")} - {"storage_sqlite"}
        if others:
            full["CRONHUB_DISABLE_PLUGINS"] = ",".join(sorted(others))
        full.update(
            CRONHUB_STORAGE=self.url,
            CRONHUB_INSTANCE_ID=name,
            PYTHONPATH=str(self.root),
            CH_MODE=self.mode,
            CH_LOG=str(self.log),
        )
        full.update(self.env)
        full.update(env)
        with open(self.root / f"{name}.err", "wb") as err:
            proc = subprocess.Popen(
                [CRONHUB, "--app", "chapp:hub", "worker"],
                cwd=self.root,
                env=full,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def stderr(self, name: str) -> str:
        return (self.root / f"{name}.err").read_text(errors="replace")

    def wait_started(self, name: str, timeout: float = 60) -> None:
        """Wait until the worker's engine logged that it started."""
        wait_for(
            lambda: "scheduler started" in self.stderr(name), timeout, f"{name} to start", self
        )

    def send(self, name: str, signum: int) -> None:
        os.kill(self.procs[name].pid, signum)

    def stop(self, name: str, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``signum`` and wait for the exit code."""
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, signum)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(
                f"{name} did not exit within {timeout}s of signal {signum}"
            ) from None

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait(10)

    def rows(self, where: str = "1=1") -> list[dict[str, object]]:
        """Rows of ``cronhub_runs`` read with plain ``sqlite3`` (not through cronhub)."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            query = f"SELECT * FROM cronhub_runs WHERE {where} ORDER BY id"
            return [dict(r) for r in conn.execute(query)]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def executions(self) -> list[tuple[str, ...]]:
        """``(job, slot, attempt, run id, instance, event)`` lines of the side log."""
        if not self.log.exists():
            return []
        return [tuple(line.split()) for line in self.log.read_text().splitlines() if line]

    def queue_manual(self, job: str) -> int:
        """Queue a manual run of ``job`` through the storage API (any worker may take it)."""
        from cronhub_storage_sqlite.storage import SqliteStorage

        storage = SqliteStorage(self.url)
        storage.open()
        try:
            request = ClaimRequest(
                job=job,
                scheduled_for=None,
                trigger=Trigger.MANUAL,
                status=RunStatus.QUEUED,
                ignore_pause=True,
            )
            [result] = storage.claim([request], instance="test", now=datetime.now(UTC), lease_ttl=3)
            assert result.run is not None
            return result.run.id
        finally:
            storage.close()

    def describe(self) -> str:
        parts = []
        for name in self.procs:
            parts.append(f"--- {name} stderr (tail) ---\n{self.stderr(name)[-3000:]}")
        return "\n".join(parts)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, cluster: Cluster | None = None
) -> None:
    """Poll ``predicate`` every 0.1 s; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    detail = cluster.describe() if cluster else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(mode: str, sub: str = "c", **env: str) -> Cluster:
        root = tmp_path / sub
        root.mkdir()
        (root / "chapp.py").write_text(textwrap.dedent(APP))
        cluster = Cluster(root, mode, dict(env))
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.kill_all()


def parse_time(value: object) -> datetime:
    """A datetime column as stored (ISO text), aware in UTC."""
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- the duplicate / missed-slot detector -------------------------------------------------------


@dataclass
class SlotReport:
    """What a run of many workers did with the slots of a window."""

    expected: int
    duplicate_rows: list[tuple[str, str, int]]
    duplicate_executions: list[tuple[str, str]]
    missing: list[tuple[str, str]]
    not_succeeded: Counter[str]


def check_slots(
    rows: list[dict[str, object]],
    executions: list[tuple[str, ...]],
    jobs: list[str],
    first: datetime,
    last: datetime,
) -> SlotReport:
    """Count duplicates and holes among the 1-second slots ``first..last`` of ``jobs``.

    A duplicate is a second row for one ``(job, scheduled_for, attempt)`` or a second
    execution of one ``(job, slot)`` in the side log; a hole is a slot without a row.
    """
    keys = Counter(
        (str(r["job"]), parse_time(r["scheduled_for"]).isoformat(), int(r["attempt"]))  # type: ignore[call-overload]
        for r in rows
        if r["scheduled_for"] is not None
    )
    ran = Counter((e[0], parse_time(e[1]).isoformat()) for e in executions if e[5] == "ran")
    slots = []
    t = first
    while t <= last:
        slots.append(t.isoformat())
        t += timedelta(seconds=1)
    status = {
        (str(r["job"]), parse_time(r["scheduled_for"]).isoformat()): str(r["status"])
        for r in rows
        if r["scheduled_for"] is not None
    }
    missing = [(j, s) for j in jobs for s in slots if (j, s, 1) not in keys]
    not_ok: Counter[str] = Counter(
        status[(j, s)]
        for j in jobs
        for s in slots
        if status.get((j, s), "succeeded") != "succeeded"
    )
    return SlotReport(
        expected=len(jobs) * len(slots),
        duplicate_rows=[k for k, n in keys.items() if n > 1],
        duplicate_executions=[k for k, n in ran.items() if n > 1],
        missing=missing,
        not_succeeded=not_ok,
    )


def whole_second(t: datetime) -> datetime:
    return t.replace(microsecond=0) + timedelta(seconds=1)


LOCKED = "database is locked"


def test_four_workers_200_jobs_every_second_for_60s(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """4 processes, one SQLite file, 200 jobs x 60 s: every slot exactly once, none missed."""
    cluster = cluster_factory("load", CH_JOBS="200")
    names = [f"w{n}" for n in range(4)]
    for name in names:
        cluster.start(name)
    for name in names:
        cluster.wait_started(name)
    # The window starts once every worker is up and lasts the 60 seconds.
    first = whole_second(datetime.now(UTC)) + timedelta(seconds=1)
    last = first + timedelta(seconds=59)
    while datetime.now(UTC) < last + timedelta(seconds=3):
        time.sleep(0.5)
        for name in names:
            assert cluster.procs[name].poll() is None, f"{name} died\n{cluster.describe()}"
    codes = {name: cluster.stop(name) for name in names}
    jobs = [f"tick{n:03d}" for n in range(200)]
    report = check_slots(cluster.rows(), cluster.executions(), jobs, first, last)
    assert report.expected == 12_000
    assert report.duplicate_rows == []
    assert report.duplicate_executions == []
    assert report.missing == [], f"{len(report.missing)} missed, e.g. {report.missing[:5]}"
    assert report.not_succeeded == Counter()
    # Every worker took a share of the slots (the claim race is real, not one winner).
    owners = Counter(str(r["instance"]) for r in cluster.rows("status = 'succeeded'"))
    assert set(owners) <= set(names)
    for name in names:
        assert LOCKED not in cluster.stderr(name).lower(), cluster.stderr(name)[-2000:]
        assert "Traceback" not in cluster.stderr(name), cluster.stderr(name)[-3000:]
    assert codes == dict.fromkeys(names, 0)


def test_negative_control_separate_storages_report_duplicates(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """The detector fails when workers do not share a claim key (each on memory://)."""
    cluster = cluster_factory("load", CH_JOBS="5")
    names = ["m0", "m1"]
    for name in names:
        cluster.start(name, CRONHUB_STORAGE="memory://")
    for name in names:
        cluster.wait_started(name)
    first = whole_second(datetime.now(UTC)) + timedelta(seconds=1)
    last = first + timedelta(seconds=3)
    wait_for(lambda: datetime.now(UTC) > last + timedelta(seconds=2), 30, "the window to pass")
    for name in names:
        assert cluster.stop(name) == 0
    jobs = [f"tick{n:03d}" for n in range(5)]
    report = check_slots([], cluster.executions(), jobs, first, last)
    # Every slot of the window ran on both workers; with no shared rows every slot is a hole.
    window = {(j, (first + timedelta(seconds=n)).isoformat()) for j in jobs for n in range(4)}
    assert report.expected == len(window) == 20
    assert window <= set(report.duplicate_executions)
    assert len(report.missing) == 20


def test_kill_9_crashed_then_one_retry_elsewhere_or_dead_letter(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """SIGKILL the owner: crashed within lease TTL + reaper interval; one retry on the other."""
    cluster = cluster_factory("manual")
    cluster.start("a")
    cluster.wait_started("a")
    cluster.queue_manual("retry_once")
    cluster.queue_manual("no_retry")
    wait_for(
        lambda: len(cluster.rows("status = 'running' AND instance = 'a'")) == 2,
        30,
        "both runs to start on a",
        cluster,
    )
    cluster.start("b")
    cluster.wait_started("b")
    killed_at = datetime.now(UTC)
    cluster.send("a", signal.SIGKILL)
    cluster.procs["a"].wait(10)
    wait_for(lambda: len(cluster.rows("status = 'crashed'")) == 2, 30, "the reaper on b", cluster)
    wait_for(
        lambda: cluster.rows("job = 'retry_once' AND attempt = 2 AND status = 'succeeded'"),
        30,
        "the retry on b",
        cluster,
    )
    time.sleep(2)  # time for a wrong second retry or a duplicate to show up
    ttl, reaper = float(FAST["CRONHUB_LEASE_TTL"]), float(FAST["CRONHUB_REAPER_INTERVAL"])
    for row in cluster.rows("status = 'crashed'"):
        assert row["instance"] == "a" and row["attempt"] == 1
        # The lease was last renewed before the kill, so it ended at most TTL after it;
        # the reaper runs every `reaper` seconds. One second of slack for a loaded machine.
        delay = (parse_time(row["finished_at"]) - killed_at).total_seconds()
        assert delay <= ttl + reaper + 1.0, f"crashed {delay:.2f}s after the kill"
    retry = cluster.rows("job = 'retry_once' AND attempt > 1")
    assert [(r["attempt"], r["status"], r["instance"], r["trigger"]) for r in retry] == [
        (2, "succeeded", "b", "retry")
    ]
    assert cluster.rows("job = 'no_retry' AND attempt > 1") == []
    [dead] = cluster.rows("job = 'no_retry'")
    assert dead["status"] == "crashed" and dead["dead_letter"] == 1
    [first] = cluster.rows("job = 'retry_once' AND attempt = 1")
    assert first["dead_letter"] == 0
    done = [e for e in cluster.executions() if e[5] == "done"]
    assert [(e[0], e[2], e[4]) for e in done] == [("retry_once", "2", "b")]
    assert cluster.stop("b") == 0


def test_sigstop_past_lease_is_fenced_and_self_cancels(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """A frozen owner loses its slot to a retry; on SIGCONT it cancels and writes nothing."""
    cluster = cluster_factory("manual")
    cluster.start("a")
    cluster.wait_started("a")
    run_id = cluster.queue_manual("fenced")
    wait_for(
        lambda: cluster.rows(f"id = {run_id} AND status = 'running' AND instance = 'a'"),
        30,
        "the run to start on a",
        cluster,
    )
    cluster.start("b")
    cluster.wait_started("b")
    cluster.send("a", signal.SIGSTOP)
    try:
        wait_for(
            lambda: cluster.rows("job = 'fenced' AND attempt = 2 AND status = 'succeeded'"),
            30,
            "b to reap the frozen run and retry it",
            cluster,
        )
        [before] = cluster.rows(f"id = {run_id}")
    finally:
        cluster.send("a", signal.SIGCONT)
    wait_for(lambda: "lease lost" in cluster.stderr("a"), 20, "a to notice its lost lease", cluster)
    time.sleep(2)
    [after] = cluster.rows(f"id = {run_id}")
    assert before["status"] == "crashed"
    assert after == before, "the fenced owner wrote to its old run"
    succeeded = cluster.rows("job = 'fenced' AND status = 'succeeded'")
    assert [(r["attempt"], r["instance"]) for r in succeeded] == [(2, "b")]
    assert cluster.rows("job = 'fenced' AND status = 'running'") == []
    done = [e for e in cluster.executions() if e[0] == "fenced" and e[5] == "done"]
    assert [(e[2], e[4]) for e in done] == [("2", "b")], "the frozen run finished its body"
    assert cluster.procs["a"].poll() is None, "a must keep running after losing a lease"
    assert cluster.stop("a") == 0
    assert cluster.stop("b") == 0


def test_100_long_healthy_runs_never_crash(cluster_factory: Callable[..., Cluster]) -> None:
    """100 runs of 4 lease TTLs each, spread over 2 workers: heartbeats keep every lease."""
    at = whole_second(datetime.now(UTC)) + timedelta(seconds=8)
    cluster = cluster_factory(
        "long",
        CH_AT=at.isoformat(),
        CH_JOBS="100",
        CH_DURATION="8",
        CH_JITTER="3",
        CRONHUB_LEASE_TTL="2",
        CRONHUB_HEARTBEAT_INTERVAL="0.5",
    )
    for name in ("a", "b"):
        cluster.start(name)
    for name in ("a", "b"):
        cluster.wait_started(name)
    wait_for(
        lambda: len(cluster.rows("status NOT IN ('running', 'queued')")) >= 100,
        90,
        "100 long runs to finish",
        cluster,
    )
    time.sleep(1)
    rows = cluster.rows()
    per_job = Counter(str(r["job"]) for r in rows)
    twice = [r for r in rows if per_job[str(r["job"])] > 1]
    assert twice == []
    assert Counter(str(r["status"]) for r in rows) == Counter(succeeded=100)
    assert all(int(r["duration_ms"]) >= 7_500 for r in rows)  # type: ignore[call-overload]
    owners = Counter(str(r["instance"]) for r in rows)
    assert set(owners) <= {"a", "b"}
    for name in ("a", "b"):
        assert cluster.stop(name) == 0
        assert "lease lost" not in cluster.stderr(name)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_running_jobs_exits_cleanly(
    cluster_factory: Callable[..., Cluster], signum: int
) -> None:
    """A stop signal: exit 0, no `running` row, cancelled runs retried where retries remain."""
    cluster = cluster_factory("manual")
    cluster.start("a")
    cluster.wait_started("a")
    cluster.queue_manual("retry_once")
    cluster.queue_manual("no_retry")
    wait_for(
        lambda: len(cluster.rows("status = 'running'")) == 2, 30, "both runs to start", cluster
    )
    assert cluster.stop("a", signum) == 0, cluster.describe()
    assert cluster.rows("status = 'running'") == []
    first = {str(r["job"]): r for r in cluster.rows("attempt = 1")}
    assert first["retry_once"]["status"] == "cancelled"
    assert first["no_retry"]["status"] == "cancelled"
    queued = cluster.rows("status = 'queued'")
    assert [(r["job"], r["attempt"], r["trigger"]) for r in queued] == [("retry_once", 2, "retry")]
    # The next worker picks the retry up.
    cluster.start("b")
    wait_for(
        lambda: cluster.rows("job = 'retry_once' AND attempt = 2 AND status = 'succeeded'"),
        30,
        "b to run the queued retry",
        cluster,
    )
    assert cluster.stop("b", signum) == 0


def test_failing_hanging_and_crashing_jobs_never_stop_the_scheduler(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """Jobs that raise, exit, hang past a timeout, ``os._exit`` or SIGKILL themselves."""
    cluster = cluster_factory("chaos")
    cluster.start("a")
    cluster.wait_started("a")
    first = whole_second(datetime.now(UTC)) + timedelta(seconds=1)
    last = first + timedelta(seconds=11)
    wait_for(lambda: datetime.now(UTC) > last + timedelta(seconds=3), 40, "the window", cluster)
    assert cluster.procs["a"].poll() is None, cluster.describe()
    report = check_slots(cluster.rows(), cluster.executions(), ["heartbeat"], first, last)
    assert report.missing == [] and report.duplicate_rows == []
    assert report.not_succeeded == Counter()
    by_job: dict[str, Counter[str]] = {}
    for row in cluster.rows("job != 'heartbeat'"):
        by_job.setdefault(str(row["job"]), Counter())[str(row["status"])] += 1
    assert by_job["fails"]["failed"] >= 8
    assert by_job["exits"]["failed"] >= 8
    assert by_job["thread_hangs"]["timed_out"] >= 3
    assert by_job["process_hangs"]["timed_out"] >= 2
    assert by_job["process_exits"]["failed"] >= 2
    assert by_job["process_kills"]["failed"] >= 2
    assert not any(c["crashed"] for c in by_job.values())
    assert cluster.stop("a") == 0, cluster.describe()
    assert cluster.rows("status = 'running'") == []
