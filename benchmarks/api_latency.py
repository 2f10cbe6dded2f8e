"""Latency of the HTTP API with a large history: 10,000 jobs and 1,000,000 runs on SQLite.

Usage (from the repository root, in the virtualenv where cronhub is installed)::

    python benchmarks/api_latency.py                       # build, serve, load, report
    python benchmarks/api_latency.py --jobs 2000 --runs 100000 --duration 10   # smaller
    python benchmarks/api_latency.py --scheduler           # the scheduler runs in serve too

What it does:

1. Writes an application module defining ``--jobs`` jobs (20 schedules: cron expressions in
   two zones and intervals; 50 tags) and creates the SQLite database through
   ``SqliteStorage`` (schema and indexes as cronhub makes them).
2. Loads ``--runs`` runs straight into ``cronhub_runs`` with ``sqlite3.executemany`` in one
   transaction: the columns and text formats are the ones ``cronhub.sql_schema`` writes
   (times as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC), spread evenly over the jobs and the last
   seven days: 90 % succeeded, 4 % failed (half of them dead letters), 3 % skipped, 2 %
   timed out, 1 % missed. Loading through the ORM would take minutes for no difference.
3. Starts ``cronhub serve`` on a free loopback port (``--no-scheduler`` unless
   ``--scheduler``), waits for ``/healthz``, and requests ``/api/jobs`` once to warm the
   job-object cache (that first, cold request is reported on its own).
4. Runs the load generator in a second process (this file with ``--load``): ``--concurrency``
   keep-alive connections of a small asyncio HTTP/1.1 client, for ``--duration`` seconds per
   endpoint, against ``GET /api/jobs`` (with ``Accept-Encoding: gzip`` as browsers and httpx
   send it, and without) and ``GET /api/runs?job=X&status=failed&limit=50`` (X drawn at
   random among the jobs). Latency is measured from sending the request to receiving the
   whole body.
5. Prints p50, p90, p99 and max for each endpoint, and the throughput; ``--json`` also
   writes them to a file.
6. With ``--floor``, measures the same way a bare uvicorn app that returns bodies of the same
   sizes from memory: what this machine allows at best (the rest is cronhub's own cost).

The database is kept in ``--workdir`` (default ``benchmarks/results/api_latency``) and reused
when it already has the asked-for size, so re-runs skip the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = ROOT / "benchmarks" / "results" / "api_latency"

SCHEDULES: list[dict[str, Any]] = [
    {"cron": "*/5 * * * *"},
    {"cron": "*/15 * * * *"},
    {"cron": "0 * * * *"},
    {"cron": "30 * * * *"},
    {"cron": "0 */2 * * *"},
    {"cron": "0 2 * * *", "tz": "Europe/Berlin"},
    {"cron": "30 3 * * *", "tz": "America/New_York"},
    {"cron": "0 9 * * 1-5", "tz": "Europe/Berlin"},
    {"cron": "15,45 8-18 * * 1-5", "tz": "America/New_York"},
    {"cron": "0 0 1 * *"},
    {"cron": "0 12 * * 0"},
    {"cron": "5 4 * * sun", "tz": "Asia/Tokyo"},
    {"every": "1m"},
    {"every": "5m"},
    {"every": "10m"},
    {"every": "30m"},
    {"every": "1h"},
    {"every": "6h"},
    {"every": "1d"},
    {"every": "90s"},
]

APP_MODULE = '''
"""{jobs} jobs for benchmarks/api_latency.py (generated)."""

import cronhub

from benchjobs_schedules import SCHEDULES

hub = cronhub.Hub()


def noop() -> None:
    """The benchmark's jobs do nothing."""


for n in range({jobs}):
    options = dict(SCHEDULES[n % len(SCHEDULES)])
    hub.add_job(cronhub.job(noop, name=f"job-{{n:05d}}", tags=[f"team-{{n % 50}}"], **options))
'''


# -- building the database ---------------------------------------------------------------------


def _ts(value: datetime) -> str:
    # cronhub.sql_schema.UTCDateTime's text form on SQLite: fixed width, sortable.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def write_app(workdir: Path, jobs: int) -> None:
    """The application module (``benchjobs:hub``) and its schedules."""
    (workdir / "benchjobs_schedules.py").write_text(f"SCHEDULES = {SCHEDULES!r}\n")
    (workdir / "benchjobs.py").write_text(textwrap.dedent(APP_MODULE.format(jobs=jobs)))


def build_database(db: Path, jobs: int, runs: int, seed: int = 1) -> None:
    """Create the schema through SqliteStorage, then bulk-load the runs and job states."""
    from cronhub_storage_sqlite import SqliteStorage

    storage = SqliteStorage(f"sqlite:///{db}")
    storage.open()  # creates and migrates the schema with every index
    storage.close()
    rng = random.Random(seed)
    now = datetime.now(UTC)
    span = timedelta(days=7).total_seconds()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    columns = (
        "job, schedule_id, scheduled_for, attempt, trigger, status, instance, created_at, "
        "started_at, finished_at, duration_ms, error_type, error_message, log, missed_count, "
        "dead_letter, params"
    )
    insert = f"INSERT INTO cronhub_runs ({columns}) VALUES ({', '.join('?' * 17)})"
    started = time.monotonic()
    batch: list[tuple[Any, ...]] = []
    with conn:
        for n in range(runs):
            job = f"job-{n % jobs:05d}"
            # Spread evenly in time; ids grow with time, as in real history.
            slot = now - timedelta(seconds=span * (1 - n / runs))
            slot = slot.replace(microsecond=0)
            roll = rng.random()
            duration = rng.randint(5, 5000)
            error_type = error_message = None
            dead = 0
            if roll < 0.90:
                status = "succeeded"
            elif roll < 0.94:
                status, error_type, error_message = "failed", "ValueError", "bad input row 42"
                dead = int(rng.random() < 0.5)
            elif roll < 0.97:
                status, duration = "skipped", 0
            elif roll < 0.99:
                status, error_type = "timed_out", "TimeoutError"
                error_message = "the run exceeded its timeout of 60 s"
            else:
                status, duration = "missed", 0
            begin = slot + timedelta(milliseconds=rng.randint(1, 400))
            end = begin + timedelta(milliseconds=duration)
            ran = status not in ("skipped", "missed")
            batch.append(
                (
                    job, "", _ts(slot), 1, "schedule", status, "bench:1:abcdef", _ts(slot),
                    _ts(begin) if ran else None, _ts(end if ran else slot),
                    duration if ran else None, error_type, error_message, "",
                    1 if status == "missed" else 0, dead, "{}",
                )
            )  # fmt: skip
            if len(batch) >= 20_000:
                conn.executemany(insert, batch)
                batch.clear()
                print(f"  {n + 1:,} runs loaded", end="\r", flush=True)
        conn.executemany(insert, batch)
        high_water = _ts(now.replace(microsecond=0))
        conn.executemany(
            "INSERT INTO cronhub_jobs (job, paused, high_water, updated_at) VALUES (?, ?, ?, ?)",
            [(f"job-{n:05d}", int(n % 100 == 0), high_water, high_water) for n in range(jobs)],
        )
    conn.execute("ANALYZE")
    conn.close()
    print(f"  {runs:,} runs loaded in {time.monotonic() - started:.1f} s")


def database_matches(db: Path, jobs: int, runs: int) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db) as conn:
            count = conn.execute("SELECT count(*) FROM cronhub_runs").fetchone()[0]
            states = conn.execute("SELECT count(*) FROM cronhub_jobs").fetchone()[0]
    except sqlite3.Error:
        return False
    return bool(count == runs and states == jobs)


# -- the load generator (the second process) ------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection: GET requests, Content-Length bodies."""

    def __init__(self, host: str, port: int, accept_encoding: str) -> None:
        self.host, self.port = host, port
        self.extra = f"Accept-Encoding: {accept_encoding}\r\n" if accept_encoding else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, int]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: */*\r\n"
            f"{self.extra}\r\n"
        )
        self.writer.write(request.encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status, length


async def _load(
    url: str, paths: list[str], concurrency: int, duration: float, accept_encoding: str
) -> dict[str, Any]:
    host, _, port = url.removeprefix("http://").partition(":")
    latencies: list[float] = []
    errors = 0
    size = 0
    deadline = time.perf_counter() + duration
    rng = random.Random(7)

    async def worker() -> None:
        nonlocal errors, size
        conn = Connection(host, int(port), accept_encoding)
        while time.perf_counter() < deadline:
            path = rng.choice(paths)
            begin = time.perf_counter()
            status, length = await conn.get(path)
            latencies.append(time.perf_counter() - begin)
            size = max(size, length)
            if status != 200:
                errors += 1

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - begin
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return {
        "requests": len(ordered),
        "errors": errors,
        "rps": len(ordered) / elapsed,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "body_bytes": size,
    }


def load_main(args: argparse.Namespace) -> None:
    paths = json.loads(args.paths)
    result = asyncio.run(
        _load(args.url, paths, args.concurrency, args.duration, args.accept_encoding)
    )
    print("RESULT " + json.dumps(result))


# -- the run -------------------------------------------------------------------------------------


def floor_main(port: int, sizes: dict[str, int]) -> None:
    """Serve bodies of the given sizes (by path) from memory: the floor of the measurement."""
    import uvicorn

    bodies = {path: b"x" * size for path, size in sizes.items()}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = bodies.get(scope["path"], b"{}")
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def measure_floor(results: dict[str, Any], run_paths: list[str], args: argparse.Namespace) -> None:
    """Run every phase against a bare app serving bodies of the measured sizes."""
    sizes = {
        "/floor/jobs-gzip": results["GET /api/jobs (gzip)"]["body_bytes"],
        "/floor/jobs": results["GET /api/jobs (identity)"]["body_bytes"],
        "/floor/runs": results["GET /api/runs (filtered)"]["body_bytes"],
    }
    port = free_port()
    command = [sys.executable, __file__, "--floor-server", str(port), "--paths", json.dumps(sizes)]
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, path="/floor/runs")
        for (name, _, _), path in zip(phases(run_paths), sizes, strict=True):
            print(f"floor of {name}: {args.concurrency} connections, {args.duration:g} s")
            results[f"floor: {name}"] = run_load(url, [path], args.concurrency, args.duration)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def phases(run_paths: list[str]) -> list[tuple[str, list[str], str]]:
    """(name, paths, Accept-Encoding) of each measured phase."""
    return [
        ("GET /api/jobs (gzip)", ["/api/jobs"], "gzip"),
        ("GET /api/jobs (identity)", ["/api/jobs"], ""),
        ("GET /api/runs (filtered)", run_paths, ""),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], timeout: float = 300, path: str = "/healthz"
) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("cronhub serve did not become healthy")


def run_load(
    url: str, paths: list[str], concurrency: int, duration: float, accept_encoding: str = ""
) -> dict[str, Any]:
    """Run the load generator as a separate process; return its result."""
    command = [
        sys.executable, __file__, "--load", "--url", url, "--paths", json.dumps(paths),
        "--concurrency", str(concurrency), "--duration", str(duration),
        "--accept-encoding", accept_encoding,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line.removeprefix("RESULT ")))
    raise SystemExit(f"load generator failed:\n{output.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per endpoint")
    parser.add_argument("--scheduler", action="store_true", help="run the scheduler in serve")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--floor", action="store_true", help="also measure a bare uvicorn app")
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--accept-encoding", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_main(args)
        return
    if args.floor_server:
        floor_main(args.floor_server, json.loads(args.paths))
        return

    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "bench.db"
    write_app(workdir, args.jobs)
    if database_matches(db, args.jobs, args.runs):
        print(f"reusing {db} ({args.jobs:,} jobs, {args.runs:,} runs)")
    else:
        for stale in workdir.glob("bench.db*"):
            stale.unlink()
        print(f"building {db}: {args.jobs:,} jobs, {args.runs:,} runs")
        build_database(db, args.jobs, args.runs)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CRONHUB_")}
    environ.update(
        {
            "PYTHONPATH": str(workdir),
            "CRONHUB_DISABLE_PLUGINS": "acme",  # the demo job package, if installed
            "CRONHUB_LOG_LEVEL": "WARNING",
        }
    )
    command = [
        str(Path(sys.executable).parent / "cronhub"), "--storage", f"sqlite:///{db}",
        "--app", "benchjobs:hub", "serve", "--port", str(port),
    ]  # fmt: skip
    if not args.scheduler:
        command.append("--no-scheduler")
    print(f"starting: {' '.join(command[1:])}")
    server = subprocess.Popen(command, cwd=workdir, env=environ)
    results: dict[str, Any] = {
        "jobs": args.jobs,
        "runs": args.runs,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "scheduler": args.scheduler,
        "cpus": os.cpu_count(),
    }
    try:
        wait_healthy(url, server)
        import httpx

        begin = time.perf_counter()
        first = httpx.get(f"{url}/api/jobs", timeout=300)
        results["cold_jobs_ms"] = (time.perf_counter() - begin) * 1000
        assert first.status_code == 200 and len(first.json()["jobs"]) == args.jobs
        rng = random.Random(3)
        run_paths = [
            f"/api/runs?job=job-{rng.randrange(args.jobs):05d}&status=failed&limit=50"
            for _ in range(500)
        ]
        check = httpx.get(url + run_paths[0], timeout=60).json()
        assert all(r["status"] == "failed" for r in check["runs"])
        for name, paths, encoding in phases(run_paths):
            print(f"loading {name}: {args.concurrency} connections, {args.duration:g} s")
            results[name] = run_load(url, paths, args.concurrency, args.duration, encoding)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    if args.floor:
        measure_floor(results, run_paths, args)

    print()
    print(
        f"{args.jobs:,} jobs, {args.runs:,} runs, SQLite; {args.concurrency} connections from a "
        f"second process; scheduler {'on' if args.scheduler else 'off'}; {os.cpu_count()} CPUs"
    )
    print(f"cold GET /api/jobs (builds the job-object cache): {results['cold_jobs_ms']:.0f} ms")
    header = f"{'endpoint':37} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    print(header + "  body")
    names = [name for name, _, _ in phases([])]
    if args.floor:
        names += [f"floor: {name}" for name in names]
    for name in names:
        r = results[name]
        print(
            f"{name:37} {r['rps']:7.1f} {r['p50_ms']:7.2f} {r['p90_ms']:7.2f} "
            f"{r['p99_ms']:7.2f} {r['max_ms']:7.1f}  {r['body_bytes'] / 1e3:,.0f} kB"
            + (f"   ({r['errors']} errors)" if r["errors"] else "")
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
