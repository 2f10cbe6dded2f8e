"""W6: several cronhub instances on one PostgreSQL database (claims/s, lateness, fairness).

Usage (from the repository root, with the project's virtual environment)::

    python benchmarks/postgres_instances.py                          # 1, 2, 4 instances
    python benchmarks/postgres_instances.py --instances 2 --jobs 1000 --duration 20
    python benchmarks/postgres_instances.py --url postgresql://postgres@127.0.0.1:5432/test

For each instance count N it creates a fresh database on the server (``--url`` names the
server and the database to connect to for ``CREATE DATABASE``; default
``CRONHUB_BENCH_POSTGRES_URL``, else ``postgresql://postgres@127.0.0.1:5432/test``), starts N
scheduler processes (this file in ``worker`` mode: a ``Hub`` with ``--jobs`` no-op async jobs
``every=1`` with default options, on the real clock), lets ``--duration`` seconds of slots
pass with all of them up, waits (at most ``--drain`` seconds) until every slot of that window
has a finished row, stops them and drops the database.

It prints one JSON object per instance count, one per line (the last line is the last count's),
with the figures of the window, all measured from the database's rows, times by the database
clock (``clock_timestamp()``):

- ``slots``: jobs x window seconds; ``rows``: attempt-1 rows for them; ``missing``: slots without
  a row when the instances stopped; ``duplicates``: slots with more than one (must be 0);
- ``claims_per_s``: rows written per second of the window (every slot's claim, whoever won it);
- ``lateness_p50_ms``, ``lateness_p99_ms``, ``lateness_max_ms``: ``started_at - scheduled_for``
  of the runs that started;
- ``claim_lag_p50_ms``, ``claim_lag_p99_ms``: ``created_at - scheduled_for`` of every row
  (skipped ones included: when the slot was decided);
- ``succeeded``, ``skipped``: rows by status (``skipped``: the job's previous run had not
  recorded its end when the slot was claimed: the default ``overlap="skip"``);
- ``per_instance``: rows each instance claimed; ``instance_share_min_pct`` and
  ``instance_share_max_pct``: the smallest and largest share;
- ``load_1m_start``, ``load_1m_end``: the machine's load average around the run.

The benchmark runner (``benchmarks/run.py``, workload W6) calls it once per instance count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


# -- the worker --------------------------------------------------------------------------------


def worker_main(url: str, instance: str, jobs: int, stop_file: str, lifetime: float) -> None:
    """Run one scheduler with ``jobs`` no-op jobs every second until ``stop_file`` exists."""
    import logging

    from cronhub.config import load_settings
    from cronhub.engine import Engine
    from cronhub.hub import Hub

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = load_settings({"storage": url, "instance_id": instance}, cwd="/")
    hub = Hub(storage=url, settings=settings)

    async def noop() -> None:
        return None

    for n in range(jobs):
        hub.job(noop, name=f"job{n:05d}", every=1, executor="async")

    async def main() -> None:
        engine = Engine(hub)
        await engine.start()
        print(json.dumps({"ready": instance}), flush=True)
        deadline = time.monotonic() + lifetime
        try:
            while time.monotonic() < deadline and not os.path.exists(stop_file):
                await asyncio.sleep(0.2)
        finally:
            await engine.stop(grace=5.0)

    asyncio.run(main())
    hub.close()


# -- the driver --------------------------------------------------------------------------------


def _connect(url: str, **options: Any) -> Any:
    import psycopg

    return psycopg.connect(url, connect_timeout=10, **options)


def _database_url(server_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with _connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * fraction))], 1)


def measure(
    server_url: str, instances: int, jobs: int, duration: int, drain: float
) -> dict[str, Any]:
    """Run ``instances`` schedulers on a fresh database; the figures of one window."""
    name = f"cronhub_bench_{uuid.uuid4().hex[:10]}"
    with _connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(server_url, name)
    workdir = Path(tempfile.mkdtemp(prefix="cronhub-w6-"))
    stop_file = workdir / "stop"
    procs: list[subprocess.Popen[str]] = []
    load_start = os.getloadavg()[0]
    try:
        from cronhub_storage_postgres import PostgresStorage

        storage = PostgresStorage(url)
        storage.open()  # the schema, before the instances race for it
        storage.close()
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("CRONHUB_", "PYTHONPATH"))
        }
        environ["CRONHUB_DISABLE_PLUGINS"] = "acme"  # an installed demo package adds no jobs
        lifetime = duration + drain + 300
        for n in range(instances):
            with open(workdir / f"i{n}.err", "w") as err:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(HERE),
                            "worker",
                            url,
                            f"i{n}",
                            str(jobs),
                            str(stop_file),
                            str(lifetime),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        env=environ,
                    )
                )
        for n, proc in enumerate(procs):
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("{"):
                tail = (workdir / f"i{n}.err").read_text()[-2000:]
                raise RuntimeError(f"instance i{n} did not start: {tail}")
        [(start,)] = _query(url, "SELECT clock_timestamp()")
        first: datetime = start.replace(microsecond=0) + timedelta(seconds=2)
        last = first + timedelta(seconds=duration - 1)
        window = "scheduled_for >= %s AND scheduled_for <= %s AND attempt = 1"
        slots = jobs * duration
        deadline = time.monotonic() + duration + 3 + drain
        while time.monotonic() < deadline:
            time.sleep(0.5)
            for n, proc in enumerate(procs):
                if proc.poll() is not None:
                    tail = (workdir / f"i{n}.err").read_text()[-2000:]
                    raise RuntimeError(f"instance i{n} exited {proc.returncode}: {tail}")
            [(now, done)] = _query(
                url,
                "SELECT clock_timestamp(), count(*) FROM cronhub_runs WHERE "
                f"{window} AND status NOT IN ('running', 'queued')",
                first,
                last,
            )
            if now > last + timedelta(seconds=2) and done >= slots:
                break
        load_end = os.getloadavg()[0]
        stop_file.touch()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        rows = _query(
            url,
            "SELECT job, scheduled_for, status, instance,"
            " extract(epoch FROM started_at - scheduled_for) * 1000,"
            " extract(epoch FROM created_at - scheduled_for) * 1000"
            f" FROM cronhub_runs WHERE {window}",
            first,
            last,
        )
    finally:
        stop_file.touch()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        with _connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    keys: dict[tuple[str, datetime], int] = {}
    statuses: dict[str, int] = {}
    per_instance: dict[str, int] = {f"i{n}": 0 for n in range(instances)}
    lateness: list[float] = []
    claim_lag: list[float] = []
    for job, slot, status, instance, late, lag in rows:
        keys[(job, slot)] = keys.get((job, slot), 0) + 1
        statuses[status] = statuses.get(status, 0) + 1
        if instance is not None:
            per_instance[instance] = per_instance.get(instance, 0) + 1
        if late is not None:
            lateness.append(float(late))
        claim_lag.append(float(lag))
    lateness.sort()
    claim_lag.sort()
    shares = [100.0 * count / max(1, len(rows)) for count in per_instance.values()]
    return {
        "instances": instances,
        "jobs": jobs,
        "duration_s": duration,
        "slots": slots,
        "rows": len(rows),
        "missing": slots - len(keys),
        "duplicates": sum(1 for count in keys.values() if count > 1),
        "claims_per_s": round(len(rows) / duration, 1),
        "lateness_p50_ms": _percentile(lateness, 0.50),
        "lateness_p99_ms": _percentile(lateness, 0.99),
        "lateness_max_ms": round(lateness[-1], 1) if lateness else None,
        "claim_lag_p50_ms": _percentile(claim_lag, 0.50),
        "claim_lag_p99_ms": _percentile(claim_lag, 0.99),
        "succeeded": statuses.get("succeeded", 0),
        "skipped": statuses.get("skipped", 0),
        "other_statuses": {k: v for k, v in statuses.items() if k not in ("succeeded", "skipped")},
        "per_instance": per_instance,
        "instance_share_min_pct": round(min(shares), 1),
        "instance_share_max_pct": round(max(shares), 1),
        "load_1m_start": round(load_start, 2),
        "load_1m_end": round(load_end, 2),
    }


def _instance_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"--instances {text!r}: give positive whole numbers separated by commas, e.g. 1,2,4"
        )
    return counts


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and print the figures of each instance count (one JSON line each)."""
    parser = argparse.ArgumentParser(
        description="cronhub instances sharing one PostgreSQL database: claims/s and lateness"
    )
    parser.add_argument("--instances", type=_instance_counts, default=[1, 2, 4])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs every second (1000)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of slots (20)")
    parser.add_argument(
        "--drain",
        type=float,
        default=45.0,
        help="seconds to wait after the window for late slots to finish (45)",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("CRONHUB_BENCH_POSTGRES_URL", DEFAULT_URL),
        help="the server (and a database on it to connect to for CREATE DATABASE)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.duration < 1:
        parser.error("--jobs and --duration must be at least 1")
    try:
        _query(args.url, "SELECT 1")
    except Exception as exc:
        print(f"postgres_instances: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 2
    for count in args.instances:
        figures = measure(args.url, count, args.jobs, args.duration, args.drain)
        print(json.dumps(figures, sort_keys=False), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        url, instance, jobs, stop_file, lifetime = sys.argv[2:7]
        worker_main(url, instance, int(jobs), stop_file, float(lifetime))
    else:
        sys.exit(main())
