"""The database stopped for 20 s under load: the schedulers ride it out (issue 5, Build 3).

The test runs its own PostgreSQL server (``private_postgres``: ``initdb`` and ``pg_ctl`` in a
temporary directory, never the shared server), starts two scheduler processes on it, and stops
the server with ``pg_ctl stop -m fast`` for 20 s in the middle of the load. Then:

- no worker crashes: both keep their scheduler loop and exit 0 when told to stop;
- health: a third instance, a real ``cronhub serve``, answers ``/healthz`` 503 while the
  database is down and 200 again within seconds after it is back (and from then on); each
  worker's own storage ``ping()`` (what ``/healthz`` asks) says the same;
- 0 duplicates: no slot has two rows, no job body ran twice for one (slot, attempt);
- the run that was running when the database went away could not renew its lease: its owner
  cancelled it during the outage (``lease lost``), the reaper marked it ``crashed`` once the
  database was back, and its one retry ran once;
- the slots that fell in the outage follow each job's catch-up policy: with a 3 s
  ``misfire_grace``, ``catch_up="all"`` runs every one of them, ``"latest"`` and ``"none"``
  record the rest in one ``missed`` record, and every slot of the window is accounted for
  exactly once (a row, or inside the range of a ``missed`` record); jobs with the default
  60 s grace run their outage slots late as ordinary slots.

The workers are this file run as a script (``python test_postgres_outage.py worker ...``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve()
#: How long the database is down (the issue's 20 s).
OUTAGE = 20.0
#: Crash detection of the workers (seconds): short, so the lease is lost well inside the outage.
LEASE_TTL, HEARTBEAT, REAPER = 3.0, 1.0, 1.0
#: The late-slot grace of the catch-up jobs (seconds).
GRACE = 3.0
LOAD_JOBS = 30
CATCH_UP_JOBS = {"latest": 3, "all": 2, "none": 2}


# -- the worker (script mode) ----------------------------------------------------------------


def define_jobs(hub: Any, instance: str, log_path: str) -> None:
    """The jobs of every instance (workers and ``cronhub serve`` alike: instances sharing a
    database must know the same jobs, or a reaper that does not know one cannot retry it).

    Each execution appends ``job slot attempt run_id instance event time`` to ``log_path``.
    """

    def record(ctx: Any, event: str) -> None:
        slot = ctx.scheduled_for.isoformat() if ctx.scheduled_for else "-"
        line = f"{ctx.run.job} {slot} {ctx.attempt} {ctx.run.id} {instance} {event} {time.time()}\n"
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    async def tick(ctx: Any) -> None:
        record(ctx, "ran")

    async def long(ctx: Any) -> None:
        record(ctx, "start")
        try:
            await asyncio.sleep(600 if ctx.attempt == 1 else 0.5)
        except asyncio.CancelledError:
            record(ctx, "cancelled")
            raise
        record(ctx, "done")

    for n in range(LOAD_JOBS):
        hub.job(tick, name=f"load{n:02d}", every=1, executor="async")
    for policy, count in CATCH_UP_JOBS.items():
        for n in range(count):
            hub.job(
                tick,
                name=f"{policy}{n}",
                every=1,
                executor="async",
                misfire_grace=GRACE,
                catch_up=policy,
            )
    # Started by a manual run the test queues (a far-off ``at`` never fires by itself).
    hub.job(
        long,
        name="long",
        at="2099-01-01T00:00:00+00:00",
        retries=1,
        retry_delay=0,
        executor="async",
    )


def worker_main(argv: list[str]) -> None:
    """``worker URL INSTANCE SECONDS LOG``: schedule the jobs below, print health lines."""
    import logging

    from cronhub.config import load_settings
    from cronhub.engine import Engine
    from cronhub.hub import Hub

    url, instance, seconds, log_path = argv[0], argv[1], float(argv[2]), argv[3]
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    settings = {
        "storage": url,
        "instance_id": instance,
        "lease_ttl": LEASE_TTL,
        "heartbeat_interval": HEARTBEAT,
        "reaper_interval": REAPER,
        "shutdown_grace": 2.0,
    }
    hub = Hub(storage=url, settings=load_settings(settings, cwd="/"))

    define_jobs(hub, instance, log_path)

    async def main() -> None:
        engine = Engine(hub)
        await engine.start()
        storage = hub.storage
        print(json.dumps({"ready": instance, "pid": os.getpid()}), flush=True)

        async def report() -> None:
            while True:
                asked = time.time()
                ping = await asyncio.to_thread(storage.ping)
                health = {"asked": asked, "t": time.time(), "ping": ping, "loop": engine.running}
                print(json.dumps({"health": health}), flush=True)
                await asyncio.sleep(0.25)

        reporter = asyncio.create_task(report())
        try:
            await asyncio.sleep(seconds)
        finally:
            reporter.cancel()
            await engine.stop(grace=2.0)
            print(json.dumps({"stopped": instance, "loop_alive_at_end": True}), flush=True)

    asyncio.run(main())
    hub.close()


# -- the test --------------------------------------------------------------------------------

if __name__ != "__main__":
    import psycopg
    from cronhub_storage_postgres.testing import (  # noqa: F401 - fixture
        PrivateServer,
        private_postgres,
    )


class OutageWorker:
    """A worker process; a thread collects its JSON lines (ready, health, stopped)."""

    def __init__(self, url: str, instance: str, seconds: float, log: Path) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CRONHUB_")}
        environ["CRONHUB_DISABLE_PLUGINS"] = "acme"  # the demo jobs would add load
        self.instance = instance
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "worker", url, instance, str(seconds), str(log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=environ,
        )
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("ready" in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"worker {self.instance} did not start: {self.finish(5)}")

    @property
    def health(self) -> list[dict[str, Any]]:
        return [line["health"] for line in self.lines if "health" in line]

    def finish(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._out.join(10)
        self._err.join(10)
        return self.proc.returncode


#: The application of the ``cronhub serve`` instance: this module's jobs.
SERVE_APP = """
import os

from cronhub import Hub

import test_postgres_outage

hub = Hub()
test_postgres_outage.define_jobs(hub, "web", os.environ["CH_LOG"])
"""


class Serve:
    """``cronhub serve`` on the private server; a thread polls its ``/healthz``."""

    def __init__(self, root: Path, url: str, log: Path) -> None:
        from importlib.metadata import entry_points

        (root / "outageapp.py").write_text(SERVE_APP)
        self.port = _free_port()
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("CRONHUB_", "PYTHON"))}
        others = {e.name for e in entry_points(group="cronhub")} - {"storage_postgres"}
        environ.update(
            CRONHUB_DISABLE_PLUGINS=",".join(sorted(others)),
            CRONHUB_INSTANCE_ID="web",
            CRONHUB_LEASE_TTL=str(LEASE_TTL),
            CRONHUB_HEARTBEAT_INTERVAL=str(HEARTBEAT),
            CRONHUB_REAPER_INTERVAL=str(REAPER),
            CRONHUB_SHUTDOWN_GRACE="2",
            PYTHONPATH=os.pathsep.join([str(root), str(HERE.parent)]),
            CH_LOG=str(log),
        )
        self.err_path = root / "serve.err"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "cronhub"),
                    "--storage",
                    url,
                    "--app",
                    "outageapp:hub",
                    "serve",
                    "--port",
                    str(self.port),
                ],
                cwd=root,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        #: ``(asked, answered, status code or None, body)`` of every ``/healthz`` call.
        self.polls: list[tuple[float, float, int | None, str]] = []
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def _get(self) -> tuple[int | None, str]:
        import httpx

        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return response.status_code, response.text

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited: {self.stderr[-3000:]}"
            if self._get()[0] == 200:
                self._poller.start()
                return
            time.sleep(0.2)
        raise AssertionError(f"serve never answered /healthz 200: {self.stderr[-3000:]}")

    def _poll(self) -> None:
        while not self._stop.is_set():
            asked = time.time()
            status, body = self._get()
            self.polls.append((asked, time.time(), status, body))
            self._stop.wait(0.25)

    def stop(self, timeout: float = 60) -> int:
        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(10)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"serve ignored SIGTERM: {self.stderr[-3000:]}") from None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def queue_manual(url: str, job: str) -> None:
    """Queue a manual run of ``job`` through the storage API; a worker takes it."""
    from cronhub_storage_postgres import PostgresStorage

    from cronhub.runs import ClaimRequest, RunStatus, Trigger

    storage = PostgresStorage(url)
    storage.open()
    try:
        request = ClaimRequest(
            job, None, trigger=Trigger.MANUAL, status=RunStatus.QUEUED, ignore_pause=True
        )
        storage.claim([request], instance="test", now=datetime.now(UTC), lease_ttl=LEASE_TTL)
    finally:
        storage.close()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def coverage(
    rows: list[tuple[Any, ...]], first: datetime, last: datetime
) -> tuple[list[datetime], list[datetime]]:
    """Slots of ``first..last`` (1 s apart) covered by no row, and by more than one.

    A row covers its own slot; a ``missed`` record with ``missed_count`` n covers the n slots
    from its own.
    """
    covered: Counter[datetime] = Counter()
    for slot, status, missed_count in rows:
        span = max(1, missed_count or 0) if status == "missed" else 1
        for n in range(span):
            covered[slot + timedelta(seconds=n)] += 1
    slots = [first + timedelta(seconds=n) for n in range(int((last - first).total_seconds()) + 1)]
    return [s for s in slots if covered[s] == 0], [s for s in slots if covered[s] > 1]


def show(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(text)


def test_a_20_s_database_outage_mid_load(private_postgres: PrivateServer, tmp_path, capsys):
    from cronhub_storage_postgres import PostgresStorage

    server = private_postgres
    url = server.create_database("cronhub")
    storage = PostgresStorage(url)
    storage.open()  # the schema, before the workers race for it
    storage.close()
    log = server.root / "executions.log"
    warmup, recovery = 6.0, 16.0
    lifetime = warmup + OUTAGE + recovery + 4
    workers = [OutageWorker(url, name, lifetime, log) for name in ("a", "b")]
    web = Serve(tmp_path, url, log)
    try:
        for worker in workers:
            worker.wait_ready()
        web.wait_healthy()
        started = time.time()
        queue_manual(url, "long")
        wait_for(
            lambda: query(
                url, "SELECT 1 FROM cronhub_runs WHERE job = 'long' AND status = 'running'"
            ),
            30,
            "the long run to start",
        )
        time.sleep(max(0.0, started + warmup - time.time()))
        [(owner, long_id)] = query(
            url, "SELECT instance, id FROM cronhub_runs WHERE job = 'long' AND status = 'running'"
        )
        down_at = time.time()
        server.stop("fast")
        stopped_at = time.time()
        time.sleep(max(0.0, down_at + OUTAGE - time.time()))
        for worker in workers:
            assert worker.proc.poll() is None, f"{worker.instance} died: {worker.stderr[-3000:]}"
        restart_at = time.time()
        server.start()
        up_at = time.time()
        codes = {w.instance: w.finish(lifetime + 60) for w in workers}
        codes["web"] = web.stop()
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.finish(10)
        if web.proc.poll() is None:
            web.proc.kill()
            web.proc.wait(10)
    errors = {w.instance: w.stderr for w in workers}
    errors["web"] = web.stderr
    assert codes == {"a": 0, "b": 0, "web": 0}, {k: v[-3000:] for k, v in errors.items()}

    # /healthz of the cronhub serve instance: 503 while the database is down, 200 again
    # within seconds of it coming back, and 200 from then on.
    during = [p for p in web.polls if p[0] > stopped_at and p[1] < restart_at]
    assert during and {p[2] for p in during} == {503}, during[:5]
    assert all(json.loads(p[3])["storage"] != "ok" for p in during), during[:3]
    healthy_again = [p[1] - up_at for p in web.polls if p[0] > up_at and p[2] == 200]
    assert healthy_again, f"/healthz never 200 again: {web.polls[-5:]}"
    assert healthy_again[0] < 15, f"/healthz 200 only {healthy_again[0]:.1f} s after"
    settled = [p for p in web.polls if p[0] > up_at + healthy_again[0] + 1]
    assert settled and {p[2] for p in settled} == {200}, [p for p in settled if p[2] != 200][:5]

    # Health: down while the database is, back within seconds of it.
    recovered_after: dict[str, float] = {}
    for worker in workers:
        health = worker.health
        assert all(h["loop"] for h in health), f"{worker.instance}: the scheduler loop ended"
        during = [h for h in health if stopped_at < h["asked"] and h["t"] < restart_at]
        assert during and not any(h["ping"] for h in during), (worker.instance, during[:5])
        after = [h["t"] - up_at for h in health if h["t"] > up_at and h["ping"]]
        assert after, f"{worker.instance}: storage never answered again"
        recovered_after[worker.instance] = after[0]
        # From then on it stays healthy.
        assert all(h["ping"] for h in health if h["t"] > up_at + after[0] + 1), worker.instance
        assert after[0] < 15, f"{worker.instance}: healthy again only {after[0]:.1f} s after"

    executions = [tuple(line.split()) for line in log.read_text().splitlines() if line]
    ran = Counter((e[0], e[1], e[2]) for e in executions if e[5] in ("ran", "start"))
    assert [k for k, n in ran.items() if n > 1] == [], "a job body ran twice for one slot"
    keys = query(
        url,
        "SELECT job, schedule_id, scheduled_for, attempt, count(*) FROM cronhub_runs"
        " WHERE scheduled_for IS NOT NULL GROUP BY 1, 2, 3, 4 HAVING count(*) > 1",
    )
    assert keys == []
    assert (
        query(url, "SELECT id, job FROM cronhub_runs WHERE status IN ('running', 'queued')") == []
    )

    # The run that was running when the database went away.
    long_rows = query(
        url,
        "SELECT id, attempt, status, instance, trigger, error_type FROM cronhub_runs"
        " WHERE job = 'long' ORDER BY attempt",
    )
    assert [(r[1], r[2]) for r in long_rows] == [(1, "crashed"), (2, "succeeded")], long_rows
    assert long_rows[0][0] == long_id and long_rows[0][5] == "Crashed"
    cancelled = [e for e in executions if e[0] == "long" and e[5] == "cancelled"]
    assert [(e[2], e[4]) for e in cancelled] == [("1", owner)]
    assert "lease lost" in errors[owner]
    long_events = [(e[2], e[5]) for e in executions if e[0] == "long"]
    assert long_events == [("1", "start"), ("1", "cancelled"), ("2", "start"), ("2", "done")]
    # The owner gave the run up while the database was still down (it could not know yet
    # whether the run had been reaped), not after.
    given_up = float(cancelled[0][6])
    assert stopped_at < given_up < up_at, (stopped_at, given_up, up_at)

    # Every slot of the window is accounted for exactly once, following the catch-up policy.
    first = at(started).replace(microsecond=0) + timedelta(seconds=2)
    last = at(up_at).replace(microsecond=0) + timedelta(seconds=recovery - 6)
    outage = (at(stopped_at + 1), at(up_at - 1))
    report: dict[str, Counter[str]] = {}
    for name in [f"load{n:02d}" for n in range(LOAD_JOBS)] + [
        f"{policy}{n}" for policy, count in CATCH_UP_JOBS.items() for n in range(count)
    ]:
        rows = query(
            url,
            "SELECT scheduled_for, status, missed_count, trigger FROM cronhub_runs"
            " WHERE job = %s AND scheduled_for IS NOT NULL AND attempt = 1"
            " ORDER BY scheduled_for",
            name,
        )
        in_window = [r for r in rows if first <= r[0] <= last or r[1] == "missed"]
        holes, doubles = coverage([r[:3] for r in in_window], first, last)
        assert holes == [] and doubles == [], (name, holes[:5], doubles[:5], in_window)
        statuses = Counter(r[1] for r in in_window)
        missed = [r for r in in_window if r[1] == "missed"]
        late_runs = [r for r in in_window if r[3] == "catch_up"]
        outage_rows = [r for r in in_window if outage[0] <= r[0] <= outage[1]]
        # A run in flight when the database went away may have been unable to record its end
        # before its lease expired: the reaper then marks it crashed (its lease contract).
        in_flight = [r for r in in_window if r[1] == "crashed"]
        assert all(at(stopped_at - 3) <= r[0] <= at(stopped_at + 1) for r in in_flight), (
            name,
            in_flight,
            at(stopped_at),
        )
        assert set(statuses) <= {"succeeded", "skipped", "missed", "crashed"}, (name, statuses)
        if name.startswith("load"):
            # The default grace (60 s) outlasts the outage: its slots run late, as usual.
            assert missed == [] and late_runs == []
            assert outage_rows and all(r[1] in ("succeeded", "skipped") for r in outage_rows)
        elif name.startswith("all"):
            assert missed == []
            assert len(late_runs) >= OUTAGE - GRACE - 4, (name, in_window)
            not_run = [r for r in late_runs if r[1] != "succeeded"]
            # Known engine limitation (cronhub.catchup): the first catch-up run is claimed as
            # running, so it is skipped (overlap) when a claim sent before the outage landed
            # just after it and its run is still active. Only that one slot may be skipped.
            assert len(not_run) <= 1 and all(r[1] == "skipped" for r in not_run), (name, not_run)
            if not_run:
                assert not_run[0] == late_runs[0], (name, late_runs)
                previous = [r for r in in_window if r[0] == not_run[0][0] - timedelta(seconds=1)]
                assert [r[3] for r in previous] == ["schedule"], (name, previous)
        else:  # latest, none: one missed record for the outage, at most the newest caught up
            assert len(missed) == 1, (name, missed)
            assert missed[0][2] >= OUTAGE - GRACE - 4, (name, missed)
            assert outage[0] - timedelta(seconds=2) <= missed[0][0] <= outage[1]
            assert len(late_runs) <= (1 if name.startswith("latest") else 0), (name, late_runs)
        kind = "load" if name.startswith("load") else name.rstrip("0123456789")
        report.setdefault(f"{kind} outage", Counter()).update(r[1] for r in outage_rows)
        report.setdefault(f"{kind} other", Counter()).update(
            r[1] for r in in_window if r not in outage_rows
        )
    show(
        capsys,
        f"\n[postgres outage] database down {up_at - stopped_at:.1f} s; /healthz {len(during)}"
        f" x 503 during it, 200 again {healthy_again[0]:.2f} s after; workers' storage healthy"
        f" again after {', '.join(f'{k} {v:.2f} s' for k, v in sorted(recovered_after.items()))};"
        f" long run on {owner} cancelled {given_up - stopped_at:.1f} s into the outage, crashed"
        f" then retried once; slots in the outage and outside it by policy:"
        f" { {k: dict(v) for k, v in report.items()} }",
    )


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker_main(sys.argv[2:])
