"""The PostgreSQL plugin against the real server: the conformance suite, claims under
concurrency, the database clock, migrations, LISTEN/NOTIFY, instances, lost connections and
injected faults (two engines, p = 0.2 on connect, before and after commit).

Every test uses its own database (created and dropped by the ``postgres_database`` fixture);
without a reachable server they skip, and ``CRONHUB_REQUIRE_POSTGRES=1`` makes that a failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import random
import re
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from cronhub_storage_postgres import PostgresStorage
from cronhub_storage_postgres import plugin as postgres_plugin
from cronhub_storage_postgres.testing import (  # noqa: F401 - fixtures
    postgres_database,
    postgres_server,
    server_url,
)
from sqlalchemy.engine import make_url

from cronhub.config import load_settings
from cronhub.engine import Engine
from cronhub.errors import StorageError
from cronhub.faults import FAULT_POINTS, FaultPlugin
from cronhub.hub import Hub
from cronhub.plugins import get_plugin_manager
from cronhub.runs import Alert, ClaimOutcome, ClaimRequest, Completion, Overlap, RunStatus, Trigger
from cronhub.sql_schema import SCHEMA_VERSION, build_metadata, write_schema_version
from cronhub.storage_contract import StorageContract


class TestPostgresContract(StorageContract):
    @pytest.fixture
    def storage(self, postgres_database):  # noqa: F811
        # The suite drives time with explicit ``now`` values in 2031: judge by them.
        storage = PostgresStorage(f"{postgres_database}?db_clock=0")
        storage.open()
        yield storage
        storage.close()


T0 = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)


@pytest.fixture
def storage(postgres_database):  # noqa: F811
    storage = PostgresStorage(postgres_database)
    storage.open()
    yield storage
    storage.close()


def open_storage(url: str, **options) -> PostgresStorage:
    storage = PostgresStorage(url, **options)
    storage.open()
    return storage


def admin(url: str):
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        dbname=parsed.database,
        autocommit=True,
    )


# -- URLs and the plugin -----------------------------------------------------------------------


def test_the_plugin_answers_postgresql_urls_only(postgres_database):  # noqa: F811
    pm = get_plugin_manager()
    for scheme in ("postgresql://", "postgresql+psycopg://", "postgres://"):
        url = postgres_database.replace("postgresql://", scheme)
        storage = pm.hook.cronhub_storage(url=url)
        assert isinstance(storage, PostgresStorage), scheme
        storage.open()
        try:
            assert storage.ping()
        finally:
            storage.close()
    assert postgres_plugin.cronhub_storage(url="sqlite:///x.db") is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@h/db?colour=red", "unknown option(s) colour"),
        ("postgresql://u@h/db?db_clock=maybe", "db_clock='maybe' is not a boolean"),
        ("postgresql://u@h/db?pool_size=-1", "pool_size='-1' is not a whole number"),
        ("postgresql+asyncpg://u@h/db", "driver 'asyncpg' is not supported"),
        ("mysql://u@h/db", "not a postgresql:// URL"),
    ],
)
def test_bad_urls_are_refused_naming_the_culprit(url, message):
    with pytest.raises(StorageError, match=re.escape(message)):
        PostgresStorage(url)


def test_the_password_never_appears_in_the_url_or_errors():
    storage = PostgresStorage("postgresql://cron:s3cret@127.0.0.1:1/db?connect_timeout=1")
    assert "s3cret" not in storage.url and "s3cret" not in repr(storage)
    with pytest.raises(StorageError) as caught:
        storage.open()
    assert "s3cret" not in str(caught.value)
    assert "cannot open PostgreSQL storage" in str(caught.value)


# -- schema ------------------------------------------------------------------------------------


def test_instances_opening_a_fresh_database_at_once_create_the_schema_once(postgres_database):  # noqa: F811
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []
    opened: list[PostgresStorage] = []

    def start() -> None:
        storage = PostgresStorage(postgres_database)
        barrier.wait()
        try:
            storage.open()
            opened.append(storage)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert {s.schema_version() for s in opened} == {SCHEMA_VERSION}
    finally:
        for storage in opened:
            storage.close()


def test_an_old_schema_is_migrated_forward(postgres_database):  # noqa: F811
    engine = sa.create_engine(postgres_database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        build_metadata(1).create_all(conn)
        write_schema_version(conn, 1)
    engine.dispose()
    storage = open_storage(postgres_database)
    try:
        assert storage.schema_version() == SCHEMA_VERSION
        with admin(postgres_database) as conn:
            names = {
                r[0]
                for r in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'cronhub_runs'"
                )
            }
        assert "ix_cronhub_runs_job_status_id" in names
        # v4: three indexes gone, a partial one of dead letters.
        expected = {i.name for i in build_metadata().tables["cronhub_runs"].indexes}
        assert names == expected | {"cronhub_runs_pkey"}
        assert "ix_cronhub_runs_dead_letters" in names
    finally:
        storage.close()


def test_an_instances_table_without_the_clock_offset_column_gets_it(postgres_database):  # noqa: F811
    # cronhub_instances as first released, with an instance in it.
    with admin(postgres_database) as conn:
        conn.execute(
            "CREATE TABLE cronhub_instances (id VARCHAR(200) PRIMARY KEY, host VARCHAR(255)"
            " NOT NULL, pid INTEGER NOT NULL, version VARCHAR(64) NOT NULL, started_at"
            " TIMESTAMPTZ NOT NULL, heartbeat_at TIMESTAMPTZ NOT NULL)"
        )
        conn.execute("INSERT INTO cronhub_instances VALUES ('old', 'h', 1, '0.1', now(), now())")
    storage = open_storage(postgres_database)
    try:
        [old] = storage.instances()
        assert old["id"] == "old" and old["clock_offset"] is None
        storage.register_instance("new")
        assert {i["id"]: i["clock_offset"] for i in storage.instances()}["new"] is not None
    finally:
        storage.close()


# -- claims ------------------------------------------------------------------------------------


def test_racing_instances_claim_each_slot_once(postgres_database):  # noqa: F811
    storages = [open_storage(postgres_database) for _ in range(4)]
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    slots = [now - timedelta(seconds=s) for s in range(5)]
    claimed: Counter[tuple[str, datetime]] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(len(storages))

    def worker(index: int, storage: PostgresStorage) -> None:
        barrier.wait()
        for when in slots:
            names = [f"job{n:03d}" for n in range(50)]
            random.Random(index).shuffle(names)
            requests = [ClaimRequest(name, when, overlap=Overlap.ALLOW) for name in names]
            results = storage.claim(requests, instance=f"i{index}", now=now, lease_ttl=30)
            with lock:
                for result in results:
                    if result.outcome is ClaimOutcome.CLAIMED:
                        claimed[(result.request.job, when)] += 1

    threads = [threading.Thread(target=worker, args=(i, s)) for i, s in enumerate(storages)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(claimed) == 50 * len(slots)
        assert set(claimed.values()) == {1}
    finally:
        for storage in storages:
            storage.close()


def test_a_claim_batch_stores_every_field_it_answers(storage):
    # A batch is inserted from column arrays (unnest): what is stored is what the claim said.
    slot = storage.database_now().replace(microsecond=0) - timedelta(seconds=30)
    requests = [
        ClaimRequest("a", slot, params={"region": "eu", "n": 3}),
        ClaimRequest("b", slot, status=RunStatus.QUEUED, not_before=slot + timedelta(hours=1)),
        ClaimRequest("c", slot, status=RunStatus.MISSED, missed_count=12),
        ClaimRequest("d", slot, trigger=Trigger.CATCH_UP, attempt=2),
        ClaimRequest("e", None, trigger=Trigger.MANUAL, status=RunStatus.QUEUED),
    ]
    results = storage.claim(requests, instance="i1", now=T0, lease_ttl=30)
    assert [r.outcome for r in results] == [
        ClaimOutcome.CLAIMED,
        ClaimOutcome.RECORDED,
        ClaimOutcome.RECORDED,
        ClaimOutcome.CLAIMED,
        ClaimOutcome.RECORDED,
    ]
    for result in results:
        stored = storage.get_run(result.run.id)
        assert stored == result.run, (stored, result.run)
    again = storage.claim(requests[:4], instance="i2", now=T0, lease_ttl=30)
    assert [r.outcome for r in again] == [ClaimOutcome.TAKEN] * 4


def test_overlap_skip_holds_across_instances_claiming_different_slots(postgres_database):  # noqa: F811
    # Two instances, two different slots of one skip job, at once, many times: never two
    # running runs. The per-job row lock is what makes the second one see the first.
    a, b = open_storage(postgres_database), open_storage(postgres_database)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    try:
        for round_ in range(15):
            job = f"skip{round_}"
            barrier = threading.Barrier(2)
            outcomes: list[RunStatus] = []

            def go(
                storage: PostgresStorage,
                offset: int,
                job: str = job,
                barrier: threading.Barrier = barrier,
                outcomes: list[RunStatus] = outcomes,
            ) -> None:
                barrier.wait()
                (result,) = storage.claim(
                    [ClaimRequest(job, base + timedelta(seconds=offset), overlap=Overlap.SKIP)],
                    instance=f"i{offset}",
                    now=base,
                    lease_ttl=30,
                )
                assert result.run is not None
                outcomes.append(result.run.status)

            threads = [
                threading.Thread(target=go, args=(a, 0)),
                threading.Thread(target=go, args=(b, 1)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sorted(s.value for s in outcomes) == ["running", "skipped"]
    finally:
        a.close()
        b.close()


def test_claims_wait_on_the_jobs_row_lock_not_on_advisory_locks(storage, postgres_database):  # noqa: F811
    slot = storage.database_now().replace(microsecond=0) - timedelta(seconds=1)
    storage.set_paused("a", False, now=T0)  # the job's state row exists
    done: list[ClaimOutcome] = []
    with admin(postgres_database) as holder, admin(postgres_database) as observer:
        holder.execute("BEGIN")
        holder.execute("SELECT job FROM cronhub_jobs WHERE job = 'a' FOR UPDATE")
        claimer = threading.Thread(
            target=lambda: done.extend(
                r.outcome
                for r in storage.claim(
                    [ClaimRequest("a", slot)], instance="i1", now=T0, lease_ttl=30
                )
            )
        )
        claimer.start()
        deadline = time.monotonic() + 10
        waiting: list[tuple] = []
        while not waiting and time.monotonic() < deadline:
            time.sleep(0.05)
            waiting = observer.execute(
                "SELECT l.locktype FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.application_name = 'cronhub'"
            ).fetchall()
        advisory = observer.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        ).fetchone()[0]
        assert waiting and {row[0] for row in waiting} <= {"transactionid", "tuple"}
        assert advisory == 0
        assert done == []  # blocked behind the row lock
        holder.execute("COMMIT")
        claimer.join(30)
    assert done == [ClaimOutcome.CLAIMED]


def test_a_batch_of_outcomes_ends_runs_as_one_at_a_time_would(storage):
    # finish_many of several runs takes the batch path (one UPDATE ... FROM unnest); finish of
    # one run the row-by-row one. Each kind of completion, both ways: the same rows result.
    def completions(run_id: int, started: datetime) -> list[Completion]:
        later = started + timedelta(seconds=2.25)
        alert = Alert(kind="failure", job="x", message="failed", run_id=run_id)
        return [
            Completion(RunStatus.SUCCEEDED, later, log="line 1\nline 2\n"),
            Completion(RunStatus.SUCCEEDED, later, duration_ms=1234),
            Completion(
                RunStatus.FAILED,
                later,
                error_type="ValueError",
                error_message="bad input",
                traceback="Traceback ...",
                retry_at=later + timedelta(seconds=30),
                alerts=(alert,),
            ),
            Completion(RunStatus.TIMED_OUT, later, dead_letter=True, alerts=(alert, alert)),
            Completion(RunStatus.CANCELLED, later, error_message="shutdown"),
        ]

    slot = storage.database_now().replace(microsecond=0) - timedelta(minutes=5)
    kinds = len(completions(0, slot))
    claimed = storage.claim(
        [ClaimRequest(f"{way}{n}", slot, params={"n": n}) for way in "sb" for n in range(kinds)],
        instance="i1",
        now=T0,
        lease_ttl=30,
    )
    runs = {r.run.job: r.run for r in claimed}
    for n in range(kinds):
        run = runs[f"s{n}"]
        assert storage.finish(run.id, completions(run.id, run.started_at)[n], instance="i1")
    batch = [
        (runs[f"b{n}"].id, completions(runs[f"b{n}"].id, runs[f"b{n}"].started_at)[n])
        for n in range(kinds)
    ]
    assert storage.finish_many(batch, instance="i1") == [True] * kinds

    def outcome(run_id: int) -> tuple:
        r = storage.get_run(run_id)
        return (
            r.status,
            r.finished_at - r.started_at,
            r.duration_ms,
            r.error_type,
            r.error_message,
            r.traceback,
            r.log,
            r.dead_letter,
            r.lease_expires_at,
        )

    for n in range(kinds):
        assert outcome(runs[f"b{n}"].id) == outcome(runs[f"s{n}"].id), n
    retries = {r.job: r for r in storage.active_runs()}
    assert set(retries) == {"s2", "b2"}
    assert (retries["b2"].attempt, retries["b2"].params) == (2, {"n": 2})
    assert retries["b2"].not_before - runs["b2"].started_at == (
        retries["s2"].not_before - runs["s2"].started_at
    )
    with storage._engine.connect() as conn:  # alerts fall due when their runs ended: later
        payloads = conn.execute(sa.text("SELECT payload FROM cronhub_outbox")).scalars().all()
    alerts = Counter(json.loads(p)["job"] for p in payloads)
    assert alerts["x"] == 6  # one and two alerts, each way
    assert {d.job for d in storage.dead_letters()} == {"s3", "b3"}


def test_a_batch_of_outcomes_and_a_concurrent_cancel_never_both_win(postgres_database):  # noqa: F811
    # finish_many locks the fenced rows before its one executemany: a cancel (or a reaper) on
    # another instance at the same moment either ends the run first (the batch answers False
    # for it) or waits and finds it ended (and returns None). Never both, never neither.
    a, b = open_storage(postgres_database), open_storage(postgres_database)
    try:
        for round_ in range(20):
            slot = a.database_now().replace(microsecond=0) - timedelta(minutes=30, seconds=round_)
            claimed = a.claim(
                [ClaimRequest(f"r{round_}-{n}", slot) for n in range(3)],
                instance="a",
                now=T0,
                lease_ttl=30,
            )
            ids = [c.run.id for c in claimed]
            barrier = threading.Barrier(2)
            answers: list[bool] = []
            cancelled: list[object] = []

            def finish(
                ids: list[int] = ids,
                barrier: threading.Barrier = barrier,
                answers: list[bool] = answers,
            ) -> None:
                done = Completion(RunStatus.SUCCEEDED, a.database_now())
                barrier.wait()
                answers.extend(a.finish_many([(i, done) for i in ids], instance="a"))

            def cancel(
                ids: list[int] = ids,
                barrier: threading.Barrier = barrier,
                cancelled: list[object] = cancelled,
            ) -> None:
                barrier.wait()
                cancelled.append(b.cancel(ids[1], now=T0))

            threads = [threading.Thread(target=finish), threading.Thread(target=cancel)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert answers[0] and answers[2]
            assert answers[1] is (cancelled[0] is None), (answers, cancelled)
            expected = RunStatus.SUCCEEDED if answers[1] else RunStatus.CANCELLED
            assert a.get_run(ids[1]).status is expected
    finally:
        a.close()
        b.close()


# -- the database clock ------------------------------------------------------------------------


def test_times_come_from_the_database_clock_not_the_callers_now(storage):
    db_now = storage.database_now()
    slot = db_now.replace(microsecond=0) - timedelta(seconds=1)
    far_future = db_now + timedelta(days=3650)  # a wildly wrong caller clock
    (result,) = storage.claim(
        [ClaimRequest("a", slot)], instance="i1", now=far_future, lease_ttl=30
    )
    run = result.run
    assert run is not None and run.started_at is not None and run.lease_expires_at is not None
    assert abs((run.started_at - db_now).total_seconds()) < 5
    assert abs((run.lease_expires_at - run.started_at).total_seconds() - 30) < 1
    # A reaper whose own clock says the lease is long expired does not reap: the database's
    # clock says it is not.
    assert storage.reap(now=far_future, policy=lambda r: Completion(RunStatus.CRASHED)) == []
    assert storage.get_run(run.id).status is RunStatus.RUNNING


def test_a_claim_waits_for_the_database_clock_to_reach_its_slot(storage):
    slot = storage.database_now() + timedelta(seconds=0.6)
    (result,) = storage.claim([ClaimRequest("a", slot)], instance="i1", now=slot, lease_ttl=30)
    assert result.run is not None and result.run.started_at is not None
    assert result.run.started_at >= slot


def test_the_clock_offset_is_measured_and_a_large_one_is_logged(storage, caplog):
    assert storage.clock_offset is not None
    assert abs(storage.measure_clock_offset()) < 0.5  # same host: the same clock
    caplog.set_level(logging.WARNING, logger="cronhub.storage.postgres")
    now = time.time()
    storage._record_offset(datetime.fromtimestamp(now + 2.5, UTC), now, now)
    assert storage.clock_offset == pytest.approx(2.5, abs=0.01)
    assert "2.500 s behind the database's" in caplog.text


async def test_the_clock_offset_is_a_metric(postgres_database):  # noqa: F811
    import httpx

    pm = get_plugin_manager(entrypoints=False)
    pm.register(postgres_plugin, name="storage_postgres")
    hub = Hub(storage=postgres_database, plugin_manager=pm)
    app = hub.asgi(scheduler=False)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
            ) as client,
        ):
            text = (await client.get("/metrics")).text
        [line] = [ln for ln in text.splitlines() if ln.startswith("cronhub_clock_offset_seconds ")]
        assert abs(float(line.split()[1])) < 0.5  # same host: the same clock
    finally:
        hub.close()


# -- LISTEN / NOTIFY and instances ---------------------------------------------------------------


def test_pause_resume_and_run_now_notify_other_instances(postgres_database):  # noqa: F811
    a, b = open_storage(postgres_database), open_storage(postgres_database)
    events: queue.Queue[dict] = queue.Queue()
    try:
        subscribe_when_live(b, events)
        a.set_paused("nightly", True, now=T0)
        assert events.get(timeout=5) == {"event": "job.paused", "job": "nightly", "local": False}
        a.set_paused("nightly", False, now=T0)
        assert events.get(timeout=5) == {"event": "job.resumed", "job": "nightly", "local": False}
        manual = ClaimRequest("nightly", None, trigger=Trigger.MANUAL, status=RunStatus.QUEUED)
        [queued] = a.claim([manual], instance="a", now=T0, lease_ttl=30)
        assert queued.run is not None
        assert events.get(timeout=5) == {
            "event": "run.queued",
            "runs": [queued.run.id],
            "local": False,
        }
    finally:
        a.close()
        b.close()


def test_runs_starting_and_ending_are_notified_with_their_ids(postgres_database):  # noqa: F811
    a, b = open_storage(postgres_database), open_storage(postgres_database)
    seen_by_a: queue.Queue[dict] = queue.Queue()
    seen_by_b: queue.Queue[dict] = queue.Queue()
    try:
        subscribe_when_live(a, seen_by_a)
        subscribe_when_live(b, seen_by_b)
        slot = a.database_now().replace(microsecond=0) - timedelta(seconds=2)
        [first, second] = a.claim(
            [ClaimRequest("x", slot), ClaimRequest("y", slot)], instance="a", now=T0, lease_ttl=30
        )
        ids = [first.run.id, second.run.id]
        assert seen_by_b.get(timeout=5) == {"event": "run.started", "runs": ids, "local": False}
        # The storage object that made the change hears it too, marked as its own.
        assert seen_by_a.get(timeout=5) == {"event": "run.started", "runs": ids, "local": True}
        done = Completion(RunStatus.SUCCEEDED, a.database_now())
        assert a.finish(ids[0], done, instance="a")
        assert seen_by_b.get(timeout=5) == {
            "event": "run.finished",
            "runs": [ids[0]],
            "local": False,
        }
        assert b.cancel(ids[1], now=T0) is not None
        assert seen_by_b.get(timeout=5) == {
            "event": "run.finished",
            "runs": [ids[1]],
            "local": True,
        }
        manual = ClaimRequest("x", None, trigger=Trigger.MANUAL, status=RunStatus.QUEUED)
        [queued] = a.claim([manual], instance="a", now=T0, lease_ttl=30)
        assert seen_by_b.get(timeout=5)["event"] == "run.queued"
        [taken] = b.take_queued(instance="b", now=T0, lease_ttl=30)
        assert taken.id == queued.run.id
        while (event := seen_by_a.get(timeout=5))["event"] != "run.started":
            pass  # a's own events in between: its finish, b's cancel, its run-now
        assert event == {"event": "run.started", "runs": [taken.id], "local": False}
    finally:
        a.close()
        b.close()


def test_a_batch_of_outcomes_is_one_notification(postgres_database):  # noqa: F811
    # finish_many of 50 runs: one run.finished with every id, not one notification per run
    # (a busy instance writes hundreds of outcomes a second).
    a, b = open_storage(postgres_database), open_storage(postgres_database)
    seen: queue.Queue[dict] = queue.Queue()
    try:
        subscribe_when_live(b, seen)
        slot = a.database_now().replace(microsecond=0) - timedelta(seconds=2)
        results = a.claim(
            [ClaimRequest(f"job{n:02d}", slot) for n in range(50)],
            instance="a",
            now=T0,
            lease_ttl=30,
        )
        ids = [r.run.id for r in results]
        assert seen.get(timeout=5) == {"event": "run.started", "runs": ids, "local": False}
        done = Completion(RunStatus.SUCCEEDED, a.database_now())
        assert a.finish_many([(i, done) for i in ids], instance="a") == [True] * 50
        assert seen.get(timeout=5) == {"event": "run.finished", "runs": ids, "local": False}
        a.set_paused("job00", True, now=T0)  # a later event: nothing else came in between
        assert seen.get(timeout=5)["event"] == "job.paused"
    finally:
        a.close()
        b.close()


def test_instances_register_heartbeat_and_leave(postgres_database):  # noqa: F811
    a, b = open_storage(postgres_database), open_storage(postgres_database)
    try:
        a.subscribe(lambda event: None, instance="host-a:1", version="0.1.0", heartbeat=0.2)
        b.register_instance("host-b:2", version="0.1.0")
        deadline = time.monotonic() + 10
        while len(b.instances()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        listed = {i["id"]: i for i in b.instances()}
        assert set(listed) == {"host-a:1", "host-b:2"}
        assert listed["host-a:1"]["host"] == socket.gethostname()
        assert listed["host-a:1"]["alive"] and listed["host-a:1"]["version"] == "0.1.0"
        # Each instance's clock offset is measured at every heartbeat (same host: about 0).
        assert abs(listed["host-a:1"]["clock_offset"]) < 0.5
        first = listed["host-a:1"]["heartbeat_at"]
        time.sleep(0.6)
        again = {i["id"]: i for i in b.instances()}
        assert again["host-a:1"]["heartbeat_at"] > first
        assert not {i["id"]: i for i in b.instances(stale_after=0)}["host-b:2"]["alive"]
        a.unsubscribe()
        assert [i["id"] for i in b.instances()] == ["host-b:2"]
    finally:
        a.close()
        b.close()


# -- lost connections ----------------------------------------------------------------------------


PROBE = "listening-probe"


def subscribe_when_live(storage: PostgresStorage, events: queue.Queue[dict]) -> None:
    """Subscribe ``events.put``; return once the listener (it connects in the background)
    hears this storage's own notifications. The probes themselves are not put."""
    heard = threading.Event()

    def on_event(event: dict) -> None:
        if event.get("job") == PROBE:
            heard.set()
        else:
            events.put(event)

    storage.subscribe(on_event)
    deadline = time.monotonic() + 20
    while not heard.is_set():
        assert time.monotonic() < deadline, "the listener never heard its own notification"
        storage.set_paused(PROBE, False, now=T0)
        heard.wait(0.5)


def test_killed_connections_are_replaced_and_the_listener_reconnects(postgres_database):  # noqa: F811
    storage = open_storage(postgres_database)
    events: queue.Queue[dict] = queue.Queue()
    try:
        subscribe_when_live(storage, events)
        slot = storage.database_now().replace(microsecond=0) - timedelta(seconds=2)
        storage.claim([ClaimRequest("a", slot)], instance="i1", now=T0, lease_ttl=30)
        assert events.get(timeout=10)["event"] == "run.started"
        name = make_url(postgres_database).database
        with admin(server_url()) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            ).fetchone()[0]
        assert killed >= 2  # the pool's connection and the listener's
        assert storage.ping()
        (again,) = storage.claim(
            [ClaimRequest("a", slot + timedelta(seconds=1))], instance="i1", now=T0, lease_ttl=30
        )
        assert again.outcome is ClaimOutcome.RECORDED
        assert again.run is not None and again.run.status is RunStatus.SKIPPED
        assert events.get(timeout=10) == {"event": "reconnected"}
        storage.set_paused("a", True, now=T0)
        assert events.get(timeout=5) == {"event": "job.paused", "job": "a", "local": True}
    finally:
        storage.close()


def test_an_unreachable_server_fails_fast_and_ping_says_so(postgres_database):  # noqa: F811
    storage = open_storage(postgres_database)
    try:
        storage._engine.dispose()
        storage._engine = sa.create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:1/x", connect_args={"connect_timeout": 1}
        )
        assert not storage.ping()
        started = time.monotonic()
        with pytest.raises(StorageError, match="storage postgresql"):
            storage.job_states(["a"])
        assert time.monotonic() - started < storage.reconnect_deadline + 10
    finally:
        storage.close()


# -- the engine wakes on other instances' events --------------------------------------------------


async def test_a_run_queued_elsewhere_starts_at_once_not_at_the_next_timer(
    postgres_database,  # noqa: F811
    plugin_manager,
    register_plugin,
):
    register_plugin(postgres_plugin, name="storage_postgres")
    settings = {"storage": postgres_database, "instance_id": "engine-a", "reaper_interval": 3600}
    hub = Hub(
        storage=postgres_database,
        plugin_manager=plugin_manager,
        settings=load_settings(settings, cwd="/"),
    )
    ran = asyncio.Event()

    @hub.job(name="report", every=3600)
    async def report() -> None:
        ran.set()

    other = open_storage(postgres_database)  # an API-only instance: queues, runs nothing
    engine = Engine(hub)
    await engine.start()
    try:
        assert hub.storage.instances()[0]["id"] == "engine-a"
        await asyncio.sleep(0.5)  # the first housekeeping pass is over; the next is in an hour
        manual = ClaimRequest("report", None, trigger=Trigger.MANUAL, status=RunStatus.QUEUED)
        other.claim([manual], instance="api", now=T0, lease_ttl=30)
        await asyncio.wait_for(ran.wait(), timeout=10)
    finally:
        await engine.stop(grace=1)
        other.close()
        hub.close()
    assert [i["id"] for i in other_instances(postgres_database)] == []


def other_instances(url: str) -> list[dict]:
    storage = open_storage(url)
    try:
        return storage.instances()
    finally:
        storage.close()


# -- injected faults ------------------------------------------------------------------------------


def _faulty_hub(url: str, plugin: FaultPlugin, instance: str) -> Hub:
    # Built-ins, this plugin and the fault wrapper only: no installed job package adds jobs.
    pm = get_plugin_manager(entrypoints=False)
    pm.register(postgres_plugin, name="storage_postgres")
    pm.register(plugin, name="faults")
    storage = f"faulty+{url}"
    values = {
        "storage": storage,
        "instance_id": instance,
        "lease_ttl": 5,
        "heartbeat_interval": 1,
        "reaper_interval": 1,
        "shutdown_grace": 5,
    }
    return Hub(storage=storage, plugin_manager=pm, settings=load_settings(values, cwd="/"))


def test_two_instances_run_every_slot_exactly_once_under_injected_faults(
    postgres_database,  # noqa: F811
    capsys,
):
    """p = 0.2 of each instance's transactions fail on connect, before or after the commit.

    Two engines share the database, each with its own seeded faults; 20 s of slots of 20
    jobs every second and 4 jobs every 4 s whose first attempt fails (one retry). Every slot
    has one row per attempt, ends as it should, and every job body ran exactly once per
    (slot, attempt), counted in this process where both engines run.

    The every-second jobs use ``overlap="allow"``: with the default ``skip``, a slot whose
    previous run's outcome write was delayed past the next second by retried faults (on this
    loaded machine) is correctly recorded ``skipped``, which is not what this test is about.
    Faults stop before the engines do: shutdown under faults is not the subject either.
    """
    plugins = {name: FaultPlugin(p=0.2, seed=seed) for name, seed in (("f1", 5), ("f2", 6))}
    hubs = {name: _faulty_hub(postgres_database, plugin, name) for name, plugin in plugins.items()}
    executions: Counter[tuple[str, str, int]] = Counter()

    def body(fail_first: bool):
        async def run(ctx) -> None:
            executions[(ctx.run.job, ctx.scheduled_for.isoformat(), ctx.attempt)] += 1
            if fail_first and ctx.attempt == 1:
                raise RuntimeError("first attempt fails")

        return run

    ticks = [f"tick{n:02d}" for n in range(20)]
    flaky = [f"flaky{n}" for n in range(4)]
    for hub in hubs.values():
        for name in ticks:
            hub.job(
                body(False),
                name=name,
                every="1s",
                executor="async",
                misfire_grace=30,
                overlap="allow",
            )
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
        engines = [Engine(hub) for hub in hubs.values()]
        for engine in engines:
            await engine.start()
        try:
            first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            last = first + timedelta(seconds=19)
            while datetime.now(UTC) < last + timedelta(seconds=6):
                await asyncio.sleep(0.25)
                assert all(engine.running for engine in engines), "a scheduler loop ended"
        finally:
            for plugin in plugins.values():
                if plugin.storage is not None:
                    plugin.storage.armed = False
            for engine in engines:
                await engine.stop()
        return first, last

    try:
        first, last = asyncio.run(scenario())
        for plugin in plugins.values():
            assert plugin.storage is not None
            # Faults really happened, at every point, on both instances.
            assert set(plugin.storage.injected) == set(FAULT_POINTS), plugin.storage.injected
            assert sum(plugin.storage.injected.values()) >= 20, plugin.storage.injected
        with admin(postgres_database) as conn:
            rows = conn.execute(
                "SELECT job, scheduled_for, attempt, status, instance FROM cronhub_runs"
                " WHERE scheduled_for IS NOT NULL"
            ).fetchall()
    finally:
        for hub in hubs.values():
            hub.close()
    by_key = Counter((job, slot, attempt) for job, slot, attempt, _, _ in rows)
    assert [k for k, n in by_key.items() if n > 1] == []
    assert [k for k, n in executions.items() if n > 1] == []
    # Shutdown releases running runs; a retry queued by a run ending as the engines stopped
    # (after the window) waits in storage for the next instance.
    assert [r for r in rows if r[3] == "running" or (r[3] == "queued" and r[1] <= last)] == []
    status = {(job, slot, attempt): st for job, slot, attempt, st, _ in rows}
    problems = []
    slot = first
    while slot <= last:
        for name in ticks:
            got = status.get((name, slot, 1))
            if got != "succeeded" or executions[(name, slot.isoformat(), 1)] != 1:
                problems.append((name, slot.isoformat(), got))
        if slot.timestamp() % 4 == 0:
            for name in flaky:
                got = (status.get((name, slot, 1)), status.get((name, slot, 2)))
                ran = tuple(executions[(name, slot.isoformat(), a)] for a in (1, 2))
                if (got, ran) != (("failed", "succeeded"), (1, 1)):
                    problems.append((name, slot.isoformat(), got, ran))
        slot += timedelta(seconds=1)
    assert problems == [], problems[:10]
    by_instance = Counter(r[4] for r in rows)
    faults = {name: dict(p.storage.injected) for name, p in plugins.items() if p.storage}
    with capsys.disabled():
        print(
            f"\n[postgres faults] {len(rows)} rows, 0 duplicates; faults injected {faults};"
            f" runs per instance {dict(by_instance)}"
        )
