"""Injected storage faults on a real SQLite file: every slot still runs exactly once.

:class:`cronhub.faults.FaultyStorage` fails 20 % of the SQLite storage's transactions (seeded):
before they start, after their statements but before the commit (rolled back), or after the
commit (the write happened, the caller sees an error). The engine runs on the real clock for a
window of slots; the test counts rows in the database and executions of the job bodies.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cronhub import Hub, RunContext
from cronhub.config import load_settings
from cronhub.engine import Engine
from cronhub.errors import StorageError
from cronhub.faults import FAULT_POINTS, FaultPlugin, FaultyStorage, InjectedFault
from cronhub.plugins import get_plugin_manager, hookimpl
from cronhub.runs import Run, RunStatus
from cronhub.storage import RunFilter


def _hub(db: Path, plugin: FaultPlugin, **settings: Any) -> Hub:
    # Built-ins and the SQLite plugin only: no installed job package adds its jobs.
    import cronhub_storage_sqlite.plugin

    pm = get_plugin_manager(entrypoints=False)
    pm.register(cronhub_storage_sqlite.plugin, name="storage_sqlite")
    pm.register(plugin, name="faults")
    url = f"faulty+sqlite:///{db}"
    values = {"storage": url, "instance_id": "faulty-1", **settings}
    return Hub(storage=url, plugin_manager=pm, settings=load_settings(values, cwd="/"))


def test_faulty_storage_rejects_bad_arguments(tmp_path: Path) -> None:
    from cronhub_storage_sqlite.storage import SqliteStorage

    inner = SqliteStorage(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError, match=r"p=1\.5"):
        FaultyStorage(inner, p=1.5)
    with pytest.raises(ValueError, match="unknown fault point"):
        FaultyStorage(inner, points=["on_tuesday"])


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_each_fault_point_does_what_it_says(tmp_path: Path, point: str) -> None:
    """``connect`` and ``before_commit`` write nothing; ``after_commit`` writes, then raises."""
    from cronhub_storage_sqlite.storage import SqliteStorage

    storage = FaultyStorage(
        SqliteStorage(f"sqlite:///{tmp_path / 'x.db'}"), p=1.0, seed=3, points=[point]
    )
    storage.open()
    try:
        now = datetime(2026, 1, 5, tzinfo=UTC)
        with pytest.raises(InjectedFault, match=point):
            storage.set_paused("job", True, now=now)
        storage.armed = False
        paused = storage.job_states(["job"]).get("job")
        assert bool(paused and paused.paused) is (point == "after_commit")
        assert storage.injected == Counter({point: 1})
    finally:
        storage.close()


def test_engine_runs_every_slot_exactly_once_under_storage_faults(tmp_path: Path) -> None:
    """p = 0.2 over connect / before commit / after commit, seeded; 20 s of slots."""
    plugin = FaultPlugin(p=0.2, seed=20261123)
    hub = _hub(
        tmp_path / "faults.db",
        plugin,
        lease_ttl=5,
        heartbeat_interval=1,
        reaper_interval=1,
        shutdown_grace=5,
    )
    executions: Counter[tuple[str, str, int]] = Counter()

    def body(fail_first: bool) -> Any:
        async def run(ctx: RunContext) -> None:
            assert ctx.scheduled_for is not None
            executions[(ctx.run.job, ctx.scheduled_for.isoformat(), ctx.attempt)] += 1
            if fail_first and ctx.attempt == 1:
                raise RuntimeError("first attempt fails")

        return run

    ticks = [f"tick{n:02d}" for n in range(20)]
    flaky = [f"flaky{n}" for n in range(4)]
    for name in ticks:
        hub.job(body(False), name=name, every="1s", executor="async", misfire_grace=30)
    for name in flaky:
        hub.job(
            body(True),
            name=name,
            every="4s",
            executor="async",
            retries=1,
            retry_delay=0,
            misfire_grace=30,
        )

    async def scenario() -> tuple[datetime, datetime]:
        engine = Engine(hub)
        await engine.start()
        try:
            now = datetime.now(UTC)
            first = now.replace(microsecond=0) + timedelta(seconds=2)
            last = first + timedelta(seconds=19)
            while datetime.now(UTC) < last + timedelta(seconds=6):
                await asyncio.sleep(0.25)
                assert engine.running, "the scheduler loop ended"
        finally:
            await engine.stop()
        return first, last

    first, last = asyncio.run(scenario())
    storage = plugin.storage
    assert storage is not None
    storage.armed = False
    # Faults really happened, at every point.
    assert set(storage.injected) == set(FAULT_POINTS), storage.injected
    assert sum(storage.injected.values()) >= 20
    rows = storage.list_runs(RunFilter(limit=100_000))
    try:
        by_key = Counter((r.job, r.scheduled_for, r.attempt) for r in rows if r.scheduled_for)
        assert [k for k, n in by_key.items() if n > 1] == []
        assert [k for k, n in executions.items() if n > 1] == []
        assert [r for r in rows if r.status is RunStatus.RUNNING] == []
        status = {(r.job, r.scheduled_for, r.attempt): r.status for r in rows if r.scheduled_for}
        slot = first
        problems = []
        while slot <= last:
            for name in ticks:
                got = status.get((name, slot, 1))
                if got is not RunStatus.SUCCEEDED or executions[(name, slot.isoformat(), 1)] != 1:
                    problems.append((name, slot.isoformat(), got))
            if slot.timestamp() % 4 == 0:
                for name in flaky:
                    got1, got2 = status.get((name, slot, 1)), status.get((name, slot, 2))
                    ran = (
                        executions[(name, slot.isoformat(), 1)],
                        executions[(name, slot.isoformat(), 2)],
                    )
                    if (got1, got2, ran) != (RunStatus.FAILED, RunStatus.SUCCEEDED, (1, 1)):
                        problems.append((name, slot.isoformat(), (got1, got2, ran)))
            slot += timedelta(seconds=1)
        assert problems == [], problems[:10]
    finally:
        hub.close()


def test_injected_fault_is_a_storage_error() -> None:
    assert issubclass(InjectedFault, StorageError)
    assert "after_commit" in str(InjectedFault("after_commit", "claim"))


@pytest.mark.parametrize(
    ("method", "listener"),
    [
        ("take_queued", True),
        ("finish", True),
        ("finish", False),
        ("claim", True),
        ("heartbeat", True),
        ("reap", True),
    ],
)
def test_lost_answers_of_one_storage_call_lose_no_run(
    tmp_path: Path, method: str, listener: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Half the ``method`` transactions commit and then fail: queued runs still run once.

    A lost answer to ``take_queued`` leaves rows ``running`` under this instance that it never
    started; a lost answer to ``finish`` makes the retried write find its own run finished.
    Each queued run must still run once, end ``succeeded``, and be reported once. Without a
    ``cronhub_run_finished`` listener the writer ends each run itself, and must recognise the
    outcomes whose first write committed.
    """
    plugin = FaultPlugin(p=0.5, seed=11, points=["after_commit"], only=[method])
    hub = _hub(
        tmp_path / "lost.db",
        plugin,
        lease_ttl=3,
        heartbeat_interval=0.5,
        reaper_interval=0.5,
        shutdown_grace=5,
    )
    executions: Counter[int] = Counter()
    finished: Counter[int] = Counter()

    async def body(ctx: RunContext) -> None:
        executions[ctx.run.id] += 1
        await asyncio.sleep(1.5)  # a few heartbeats

    names = [f"manual{n}" for n in range(10)]
    for name in names:
        hub.job(body, name=name, at="2099-01-01T00:00:00+00:00", executor="async")

    class Recorder:
        @hookimpl
        def cronhub_run_finished(self, run: Run) -> None:
            finished[run.id] += 1

    if listener:
        hub.plugin_manager.register(Recorder(), name="recorder")

    async def scenario() -> list[int]:
        engine = Engine(hub)
        await engine.start()
        try:
            ids = [(await engine.run_now(name)).id for name in names]
            for _ in range(200):
                await asyncio.sleep(0.1)
                active = await engine.io(hub.storage.active_runs)
                if not active and engine.runs.idle:
                    break
        finally:
            await engine.stop()
        return ids

    ids = asyncio.run(scenario())
    storage = plugin.storage
    assert storage is not None
    storage.armed = False
    try:
        assert storage.injected["after_commit"] >= 1, "no fault was injected"
        rows = storage.list_runs(RunFilter(limit=1000))
        outcome = {r.id: (r.job, r.status, r.attempt) for r in rows}
        assert sorted(outcome) == sorted(ids), outcome
        assert {i: s for i, (_, s, _) in outcome.items() if s is not RunStatus.SUCCEEDED} == {}
        assert executions == Counter(dict.fromkeys(ids, 1))
        assert finished == Counter(dict.fromkeys(ids, 1) if listener else {})
        assert "outcome dropped" not in caplog.text
    finally:
        hub.close()
