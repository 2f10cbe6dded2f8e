"""What is particular to the SQLite plugin: WAL, migrations, several processes on one file,
network filesystems, URL handling, retention. The shared behaviour is in the contract suite."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from cronhub_storage_sqlite import SqliteStorage, network_filesystem
from cronhub_storage_sqlite import plugin as sqlite_plugin

from cronhub.errors import StorageError
from cronhub.plugins import get_plugin_manager
from cronhub.runs import ClaimOutcome, ClaimRequest, Completion, Overlap, RunStatus
from cronhub.sql import SqlStorage
from cronhub.sql_schema import SCHEMA_VERSION, build_metadata
from cronhub.storage import RunFilter

T0 = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "cronhub.db"


@pytest.fixture
def storage(db):
    storage = SqliteStorage(f"sqlite:///{db}")
    storage.open()
    yield storage
    storage.close()


def claim(storage, *requests, instance="i1", now=T0):
    return storage.claim(list(requests), instance=instance, now=now, lease_ttl=30)


# -- the file ----------------------------------------------------------------------------------


def test_wal_busy_timeout_and_synchronous_on_every_connection(storage, db):
    assert storage.pragma("journal_mode") == "wal"
    assert storage.pragma("busy_timeout") == 30_000
    assert storage.pragma("synchronous") == 1  # NORMAL
    with sqlite3.connect(db) as other:  # WAL is a property of the file, seen by anyone
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_busy_timeout_from_the_url(db):
    storage = SqliteStorage(f"sqlite:///{db}?busy_timeout=2.5")
    storage.open()
    try:
        assert storage.pragma("busy_timeout") == 2500
    finally:
        storage.close()


def test_a_held_write_lock_is_waited_out_not_raised(db):
    # busy_timeout far below how long the lock is held: the retry loop has to do the work.
    storage = SqliteStorage(f"sqlite:///{db}?busy_timeout=0.02")
    storage.open()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        threading.Timer(0.4, lambda: holder.execute("COMMIT")).start()
        started = time.monotonic()
        (result,) = claim(storage, ClaimRequest("a", T0))
        assert result.outcome is ClaimOutcome.CLAIMED
        assert time.monotonic() - started >= 0.3
    finally:
        storage.close()
        time.sleep(0.1)
        holder.close()


# -- schema and migrations ---------------------------------------------------------------------


def test_a_new_database_has_the_current_schema(storage, db):
    assert storage.schema_version() == SCHEMA_VERSION == 4
    inspector = sa.inspect(sa.create_engine(f"sqlite:///{db}"))
    for table in build_metadata().sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.c.keys())
        expected = {index.name for index in table.indexes}
        assert {i["name"] for i in inspector.get_indexes(table.name)} == expected


V1_SCHEMA = """
CREATE TABLE cronhub_meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO cronhub_meta VALUES ('schema_version', '1');
CREATE TABLE cronhub_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job VARCHAR(200) NOT NULL,
    schedule_id VARCHAR(200) NOT NULL DEFAULT '', scheduled_for VARCHAR(26),
    attempt INTEGER NOT NULL DEFAULT 1, "trigger" VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL, instance VARCHAR(200), created_at VARCHAR(26),
    not_before VARCHAR(26), started_at VARCHAR(26), finished_at VARCHAR(26),
    duration_ms INTEGER, lease_expires_at VARCHAR(26), error_type VARCHAR(200),
    error_message TEXT, traceback TEXT, log TEXT NOT NULL DEFAULT '',
    missed_count INTEGER NOT NULL DEFAULT 0, dead_letter BOOLEAN NOT NULL DEFAULT 0,
    params TEXT);
CREATE UNIQUE INDEX uq_cronhub_runs_slot
    ON cronhub_runs (job, schedule_id, scheduled_for, attempt);
CREATE INDEX ix_cronhub_runs_job_id ON cronhub_runs (job, id);
CREATE INDEX ix_cronhub_runs_status_id ON cronhub_runs (status, id);
CREATE INDEX ix_cronhub_runs_status_lease ON cronhub_runs (status, lease_expires_at);
CREATE INDEX ix_cronhub_runs_status_not_before ON cronhub_runs (status, not_before);
CREATE INDEX ix_cronhub_runs_dead_letter ON cronhub_runs (dead_letter, id);
CREATE INDEX ix_cronhub_runs_finished_at ON cronhub_runs (finished_at);
CREATE TABLE cronhub_jobs (job VARCHAR(200) PRIMARY KEY, paused BOOLEAN NOT NULL DEFAULT 0,
    high_water VARCHAR(26), updated_at VARCHAR(26));
CREATE TABLE cronhub_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT NOT NULL,
    created_at VARCHAR(26) NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at VARCHAR(26) NOT NULL, last_error TEXT);
CREATE INDEX ix_cronhub_outbox_due ON cronhub_outbox (next_attempt_at, id);
INSERT INTO cronhub_runs (job, scheduled_for, "trigger", status, instance, created_at,
    started_at, finished_at, duration_ms, params)
VALUES ('old', '2031-03-14 11:00:00.000000', 'schedule', 'succeeded', 'i0',
    '2031-03-14 11:00:00.000000', '2031-03-14 11:00:00.000000',
    '2031-03-14 11:00:01.500000', 1500, '{"k": 1}');
INSERT INTO cronhub_jobs (job, paused, high_water) VALUES ('old', 1, '2031-03-14 11:00:00.000000');
"""


def test_a_version_1_database_is_migrated_forward(db):
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_SCHEMA)
    storage = SqliteStorage(f"sqlite:///{db}")
    storage.open()
    try:
        assert storage.schema_version() == 4
        inspector = sa.inspect(sa.create_engine(f"sqlite:///{db}"))
        indexes = {i["name"] for i in inspector.get_indexes("cronhub_runs")}
        assert "ix_cronhub_runs_job_status_id" in indexes
        expected = {i.name for i in build_metadata().tables["cronhub_runs"].indexes}
        assert indexes == expected  # v4: three indexes gone, the partial dead-letter one there
        assert "ix_cronhub_runs_dead_letters" in indexes
        assert not indexes & {"ix_cronhub_runs_status_lease", "ix_cronhub_runs_dead_letter"}
        assert "cronhub_schedules" in inspector.get_table_names()
        assert storage.list_schedules() == [] and storage.schedules_revision() == 0
        (old,) = storage.list_runs(RunFilter(job="old"))
        assert old.status is RunStatus.SUCCEEDED and old.params == {"k": 1}
        assert old.finished_at == datetime(2031, 3, 14, 11, 0, 1, 500000, tzinfo=UTC)
        state = storage.job_states(["old"])["old"]
        assert state.paused and state.high_water == datetime(2031, 3, 14, 11, tzinfo=UTC)
        assert (
            claim(storage, ClaimRequest("old", T0), instance="i1")[0].outcome is ClaimOutcome.PAUSED
        )
    finally:
        storage.close()


def test_dead_letters_are_read_through_their_partial_index(storage, db):
    # SQLite uses a partial index only when the query spells the index's predicate: the
    # storage's dead-letter queries must keep to DEAD_LETTER_ROW.
    from cronhub.sql_history import _dead_letter_is
    from cronhub.sql_schema import runs

    engine = sa.create_engine(f"sqlite:///{db}")
    for query in (
        sa.select(runs.c.id).where(_dead_letter_is(True)).order_by(runs.c.id.desc()).limit(5),
        sa.select(sa.func.count()).where(_dead_letter_is(True)),
    ):
        compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
        with engine.connect() as conn:
            plan = " ".join(r[3] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
        assert "ix_cronhub_runs_dead_letters" in plan, plan
    engine.dispose()


def test_processes_opening_a_new_file_at_once_migrate_it_once(db):
    # Separate storages have separate connections: to SQLite they are separate processes.
    storages = [SqliteStorage(f"sqlite:///{db}") for _ in range(4)]
    barrier = threading.Barrier(len(storages))
    errors: list[BaseException] = []

    def open_it(storage):
        barrier.wait()
        try:
            storage.open()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it, args=(s,)) for s in storages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert {s.schema_version() for s in storages} == {SCHEMA_VERSION}
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT key, value FROM cronhub_meta").fetchall() == [
                ("schema_version", str(SCHEMA_VERSION))
            ]
    finally:
        for storage in storages:
            storage.close()


def test_a_database_from_a_newer_cronhub_is_refused(db):
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE cronhub_meta (key VARCHAR(64) PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO cronhub_meta VALUES ('schema_version', '99')")
    with pytest.raises(StorageError, match=r"schema version 99, newer than .* \(4\)"):
        SqliteStorage(f"sqlite:///{db}").open()


def test_job_states_of_more_names_than_one_statement_takes(storage):
    # Start-up reads every job's state: the names go to SQLite in JSON chunks; none is lost
    # or mixed up at a chunk's edge.
    from cronhub_storage_sqlite import storage as sqlite_module

    names = [f"job{n}" for n in range(2 * sqlite_module._NAMES_PER_QUERY + 500)]
    paused = {names[0], names[sqlite_module._NAMES_PER_QUERY - 1], names[-1]}
    paused.add(names[sqlite_module._NAMES_PER_QUERY])
    for name in paused:
        storage.set_paused(name, True, now=T0)
    states = storage.job_states(names)
    assert list(states) == names
    assert {name for name, state in states.items() if state.paused} == paused


def test_last_run_and_job_names_use_the_job_id_index(storage, db):
    with sqlite3.connect(db) as conn:
        plans = [
            " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}"))
            for query in (
                "SELECT (SELECT max(r.id) FROM cronhub_runs r WHERE r.job = j.value)"
                " FROM json_each('[\"a\"]') AS j",
                "SELECT min(job) FROM cronhub_runs WHERE job > 'a'",
            )
        ]
    assert all("COVERING INDEX ix_cronhub_runs_job" in plan for plan in plans), plans
    assert all("SCAN cronhub_runs" not in plan.replace("USING", "") for plan in plans)


def test_job_states_with_many_jobs_and_awkward_names(storage):
    names = [f"job-{n}" for n in range(1200)] + ["it's", 'quo"te', "ünï", ""]
    requests = [ClaimRequest(name, T0, overlap=Overlap.ALLOW) for name in names]
    results = claim(storage, *requests)
    states = storage.job_states()
    assert set(states) == set(names)
    assert all(states[r.request.job].last_run.id == r.run.id for r in results)
    assert storage.job_states(names[-4:]).keys() == set(names[-4:])


def test_generic_last_run_ids_read_a_chunk_of_jobs_per_query(storage, db):
    # The base class's query (PostgreSQL's, and SQLite's before 3.38) answers as the JSON one.
    names = [f"job-{n}" for n in range(1200)] + ["it's", 'quo"te', "ünï", ""]
    results = claim(storage, *[ClaimRequest(n, T0, overlap=Overlap.ALLOW) for n in names[::2]])
    asked = [*names, "never-ran"]
    queries: list[str] = []

    def count(conn, cursor, statement, *args):
        queries.append(statement)

    engine = storage._engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        generic = storage._run(lambda c: SqlStorage._last_run_ids(storage, c, asked), write=False)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    json_each = storage._run(lambda c: storage._last_run_ids(c, asked), write=False)
    assert generic == json_each == {r.request.job: r.run.id for r in results}
    assert len([q for q in queries if "max(" in q]) == 3  # 1,205 names in chunks of 500
    with sqlite3.connect(db) as conn:
        plan = " ".join(
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN WITH names(name) AS (VALUES ('a'), ('b'))"
                " SELECT names.name, (SELECT max(r.id) FROM cronhub_runs r"
                " WHERE r.job = names.name) FROM names"
            )
        )
    assert "COVERING INDEX ix_cronhub_runs_job" in plan and "SCAN cronhub_runs" not in plan


def test_values_to_run_keeps_every_field():
    # The claim path builds each Run positionally from the inserted row's values: every
    # field must land where it belongs (distinct values, so a swap cannot go unseen).
    import dataclasses

    from cronhub.runs import Run, Trigger
    from cronhub.sql_schema import values_to_run

    values = {}
    for n, field in enumerate(f for f in dataclasses.fields(Run) if f.name != "id"):
        values[field.name] = f"value {n}"
    values["trigger"], values["status"] = "retry", "queued"
    run = values_to_run(7, values)
    assert run.id == 7
    assert run.trigger is Trigger.RETRY and run.status is RunStatus.QUEUED
    for name, value in values.items():
        if name not in ("trigger", "status"):
            assert getattr(run, name) == value, name


@pytest.mark.parametrize(
    "value",
    [
        T0,
        datetime(2031, 3, 14, 12, 0, 0, 7, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(2031, 3, 14, 13, 30, tzinfo=timezone(timedelta(hours=1, minutes=30))),
        datetime(2031, 3, 14, 12, 0, tzinfo=timezone(timedelta(0))),
        datetime(2031, 10, 26, 1, 30, fold=1, tzinfo=ZoneInfo("Europe/London")),
    ],
    ids=["utc", "microseconds", "year-1", "offset", "other-utc", "dst-fold"],
)
def test_times_are_stored_as_fixed_width_utc_text(value):
    from cronhub.sql_schema import UTCDateTime

    dialect = sa.create_engine("sqlite://").dialect
    text = UTCDateTime().process_bind_param(value, dialect)
    expected = value.astimezone(UTC).replace(tzinfo=None)
    assert text == expected.isoformat(sep=" ", timespec="microseconds")
    assert len(text) == 26
    # Compared as instants: Python never finds a time in a repeated hour (fold) equal to
    # one in another zone.
    assert UTCDateTime().process_result_value(text, dialect).timestamp() == value.timestamp()


def test_a_naive_time_is_refused_by_name():
    from cronhub.sql_schema import UTCDateTime

    dialect = sa.create_engine("sqlite://").dialect
    with pytest.raises(ValueError, match="naive datetime 2031-03-14T12:00:00"):
        UTCDateTime().process_bind_param(datetime(2031, 3, 14, 12), dialect)


# -- batches in one statement ------------------------------------------------------------------

AWKWARD_TEXTS = ["it's", 'quo"te', "ünï 🎉", "back\\slash", "line\nbreak", "", "[1, 2]", "null"]


def _run_rows(count: int, *, varying: set[str]) -> list[dict]:
    """Claim rows whose ``varying`` columns differ from row to row (awkward values)."""
    from cronhub.runs import ClaimRequest
    from cronhub.sql_schema import claim_values

    rows = []
    for n in range(count):
        request = ClaimRequest(
            "job" if "job" not in varying else AWKWARD_TEXTS[n % len(AWKWARD_TEXTS)] + str(n),
            T0 + timedelta(microseconds=n if "scheduled_for" in varying else 0),
            params={"k": AWKWARD_TEXTS[n % len(AWKWARD_TEXTS)]} if "params" in varying else {},
            missed_count=2**40 + n if "missed_count" in varying else 0,
        )
        row = claim_values(request, RunStatus.RUNNING, "i1", T0, T0 + timedelta(seconds=30))
        if "error_message" in varying:
            row["error_message"] = None if n % 3 == 0 else AWKWARD_TEXTS[n % len(AWKWARD_TEXTS)]
        if "dead_letter" in varying:
            row["dead_letter"] = n % 2 == 0
        rows.append(row)
    return rows


def _table_as_stored(db_path) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(cronhub_runs)")]
        select = ", ".join(f"{c}, typeof({c})" for c in columns)
        return conn.execute(f"SELECT {select} FROM cronhub_runs ORDER BY id").fetchall()


@pytest.mark.parametrize(
    ("varying", "count"),
    [
        (set(), 1),
        ({"job"}, 7),
        ({"job", "scheduled_for"}, 7),
        ({"job", "params", "missed_count", "error_message", "dead_letter"}, 9),
    ],
    ids=["one-row", "one-column-varies", "two-vary", "many-vary"],
)
def test_a_json_batch_stores_what_executemany_stores(tmp_path, varying, count):
    # The same rows through executemany (one statement per row) and through one statement
    # taking them as JSON: the same values of the same SQLite types, in the same order.
    from cronhub_storage_sqlite.batches import insert_batch, json_insert_batch

    from cronhub.sql_schema import runs

    rows = _run_rows(count, varying=varying)
    stored = []
    for name, make in (("driver", insert_batch), ("json", json_insert_batch)):
        path = tmp_path / f"{name}.db"
        storage = SqliteStorage(f"sqlite:///{path}")
        storage.open()
        batch = make(runs, tuple(rows[0]))
        with storage._engine.begin() as conn:
            assert batch.run(conn, rows) == len(rows)
        storage.close()
        stored.append(_table_as_stored(path))
    assert stored[0] == stored[1]
    assert len(stored[0]) == len(rows)


def test_batch_values_are_converted_once_per_object_in_order():
    from cronhub_storage_sqlite.batches import _converted

    calls = []

    def process(value):
        calls.append(value)
        return f"<{value}>"

    shared, other = {"a": 1}, {"b": 2}
    cases = [
        ([None, None], [], [None, None]),
        ([shared, shared, shared], [shared], ["<{'a': 1}>"] * 3),
        (
            [shared, None, other, shared],
            [shared, other],
            ["<{'a': 1}>", None, "<{'b': 2}>", "<{'a': 1}>"],
        ),
        ([1, 2, 3], [1, 2, 3], ["<1>", "<2>", "<3>"]),
        ([], [], []),
    ]
    for values, processed, expected in cases:
        calls.clear()
        assert _converted(values, process) == expected
        assert calls == processed


def test_a_json_batch_binds_what_does_not_vary_once(storage):
    from cronhub_storage_sqlite.batches import json_insert_batch

    from cronhub.sql_schema import jobs

    batch = json_insert_batch(jobs, ("job", "paused", "high_water"))
    assert batch.statement((True, False, False)) == (
        "INSERT INTO cronhub_jobs (job, paused, high_water)"
        " SELECT value, :c1, :c2 FROM json_each(:rows) ORDER BY key"
    )
    assert batch.statement((True, False, True)) == (
        "INSERT INTO cronhub_jobs (job, paused, high_water)"
        " SELECT value ->> 0, :c1, value ->> 1 FROM json_each(:rows) ORDER BY key"
    )
    # Run for real: what reaches SQLite is that statement, the shared values bound once.
    executed = []

    def record(conn, cursor, statement, parameters, context, executemany):
        executed.append((statement, parameters))

    rows = [{"job": name, "paused": False, "high_water": T0} for name in ("a", "b", "c")]
    sa.event.listen(storage._engine, "before_cursor_execute", record)
    try:
        with storage._engine.begin() as conn:
            executed.clear()
            assert batch.run(conn, rows) == 3
    finally:
        sa.event.remove(storage._engine, "before_cursor_execute", record)
    assert executed == [
        (
            batch.statement((True, False, False)),
            {"c1": 0, "c2": "2031-03-14 12:00:00.000000", "rows": '["a","b","c"]'},
        )
    ]
    assert {name: state.high_water for name, state in storage.job_states().items()} == {
        "a": T0,
        "b": T0,
        "c": T0,
    }


def test_a_json_batch_of_outcomes_ends_only_fenced_runs(tmp_path):
    # The finish update in one statement answers like the per-row one: rows not running
    # under this instance are left alone and not counted, the others take every value.
    from cronhub_storage_sqlite import storage as sqlite_module

    from cronhub.sql_runs import _finish_params

    stored, counts = [], []
    for form in ("_FINISH_BATCH", "_FINISH_JSON"):
        path = tmp_path / f"{form}.db"
        storage = SqliteStorage(f"sqlite:///{path}")
        storage.open()
        requests = [ClaimRequest(f"job{n}", T0, overlap=Overlap.ALLOW) for n in range(6)]
        ids = [r.run.id for r in claim(storage, *requests[:4])]
        ids += [r.run.id for r in claim(storage, *requests[4:], instance="i2")]
        storage.finish(ids[0], Completion(RunStatus.SUCCEEDED, T0), instance="i1")
        params = [
            _finish_params(
                run_id,
                Completion(
                    RunStatus.FAILED if n % 2 else RunStatus.SUCCEEDED,
                    T0 + timedelta(seconds=n),
                    error_message=AWKWARD_TEXTS[n] if n % 2 else None,
                    started_at=T0 - timedelta(seconds=n) if n == 3 else None,
                ),
                "i1",
                n * 1000,
            )
            for n, run_id in enumerate(ids)
        ]
        with storage._engine.begin() as conn:
            counts.append(getattr(sqlite_module, form).run(conn, params))
        storage.close()
        stored.append(_table_as_stored(path))
    assert counts == [3, 3]  # ids[1:4]: ids[0] has ended, ids[4:] belong to i2
    assert stored[0] == stored[1]


@pytest.mark.parametrize("form", ["_FINISH_JSON", "_RAISE_MARKS_JSON"])
def test_json_batch_updates_find_each_row_by_its_key(storage, db, form):
    # Without the fence's "+", SQLite reads every running row through the (status, id)
    # index for each row of the batch: a batch would cost as much as the table is large.
    from cronhub_storage_sqlite import storage as sqlite_module

    batch = getattr(sqlite_module, form)
    varying = (True,) * len(batch.columns)
    with sqlite3.connect(db) as conn:
        plan = " ".join(
            row[3]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {batch.statement(varying)}", {"rows": "[]"}
            )
        )
    assert "SCAN b" in plan and "SEARCH cronhub_" in plan, plan
    assert "SCAN cronhub_" not in plan and "INDEX ix_" not in plan, plan


# -- several processes on one file -------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    from datetime import UTC, datetime, timedelta, timezone
    from cronhub_storage_sqlite import SqliteStorage
    from cronhub.runs import ClaimOutcome, ClaimRequest, Overlap

    url, name, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    t0 = datetime(2031, 3, 14, tzinfo=UTC)
    requests = [
        ClaimRequest(f"job{n % 40}", t0 + timedelta(minutes=n), overlap=Overlap.ALLOW)
        for n in range(2000)
    ]
    rng = random.Random(name)
    rng.shuffle(requests)
    while time.time() < start_at:  # open together: both create and migrate a fresh file
        time.sleep(0.001)
    storage = SqliteStorage(url)
    storage.open()
    while time.time() < start_at + 1.0:  # then claim together
        time.sleep(0.001)
    won, answered, i = [], 0, 0
    first_call = time.time()
    while i < len(requests):
        size = rng.choice([1, 1, 5, 50, 100])
        batch = requests[i : i + size]
        i += size
        for result in storage.claim(batch, instance=name, now=t0, lease_ttl=30):
            answered += 1
            if result.outcome is ClaimOutcome.CLAIMED:
                won.append([result.request.job, result.request.scheduled_for.isoformat()])
    last_answer = time.time()
    storage.close()
    print(json.dumps({"won": won, "answered": answered, "span": [first_call, last_answer]}))
    """
)


def test_two_processes_claim_the_same_2000_slots_once_each(db, tmp_path):
    url = f"sqlite:///{db}"
    start_at = time.time() + 1.2
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, name, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower()
    reports = [json.loads(out) for out, _ in outputs]
    assert [r["answered"] for r in reports] == [2000, 2000]
    won = [tuple(slot) for r in reports for slot in r["won"]]
    assert len(won) == len(set(won)) == 2000
    # Both were claiming at the same time. SQLite's busy handler is not fair (it polls with
    # sleeps of up to 100 ms), so one process may well win most slots, or all of them; what
    # matters is that they overlapped, each slot has one winner and no error escaped.
    (start1, end1), (start2, end2) = (r["span"] for r in reports)
    assert max(start1, start2) < min(end1, end2)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM cronhub_runs").fetchone()[0] == 2000


# -- where the file is -------------------------------------------------------------------------

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
server:/export /mnt/share nfs4 rw,relatime,vers=4.2 0 0
/dev/sdb1 /mnt/share/local ext4 rw 0 0
//nas/public /mnt/my\\040files cifs rw 0 0
me@host:/home /home/me/remote fuse.sshfs rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/mnt/share/cronhub.db", ("nfs4", "/mnt/share")),
        ("/mnt/share/deep/er/cronhub.db", ("nfs4", "/mnt/share")),
        ("/mnt/share/local/cronhub.db", None),  # a local disk mounted inside the share
        ("/mnt/shared/cronhub.db", None),  # a prefix of the name is not a parent
        ("/mnt/my files/cronhub.db", ("cifs", "/mnt/my files")),
        ("/home/me/remote/x.db", ("fuse.sshfs", "/home/me/remote")),
        ("/tmp/cronhub.db", None),
        ("/var/lib/cronhub.db", None),
    ],
)
def test_network_filesystem_detection(path, expected):
    assert network_filesystem(path, MOUNTS) == expected


def test_a_database_on_a_network_filesystem_is_refused(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nsrv:/x {tmp_path} nfs rw 0 0\n")
    db = tmp_path / "cronhub.db"
    storage = SqliteStorage(f"sqlite:///{db}", mounts_path=str(mounts))
    with pytest.raises(StorageError) as refused:
        storage.open()
    message = str(refused.value)
    assert str(db) in message and "nfs" in message and "allow_network_fs=1" in message
    assert not db.exists()
    allowed = SqliteStorage(f"sqlite:///{db}?allow_network_fs=1", mounts_path=str(mounts))
    allowed.open()
    assert allowed.ping()
    allowed.close()


# -- URLs ---------------------------------------------------------------------------------------


def test_the_url_never_shows_a_password(tmp_path):
    storage = SqliteStorage(f"sqlite://admin:s3cret@/{tmp_path}/x.db?retention_days=3")
    assert "s3cret" not in storage.url and "***" in storage.url
    assert "s3cret" not in repr(storage)
    with pytest.raises(StorageError) as bad:
        SqliteStorage(f"sqlite://admin:s3cret@/{tmp_path}/x.db?retention_dayz=3")
    assert "s3cret" not in str(bad.value) and "retention_dayz" in str(bad.value)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///"])
def test_an_in_memory_database_is_refused(url):
    with pytest.raises(StorageError, match="memory://"):
        SqliteStorage(url)


def test_a_missing_directory_is_named(tmp_path):
    path = tmp_path / "nowhere" / "cronhub.db"
    with pytest.raises(StorageError, match=f"{path}.*directory {path.parent} does not exist"):
        SqliteStorage(f"sqlite:///{path}").open()


def test_an_unwritable_path_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "cronhub.db"
    with pytest.raises(StorageError, match=str(path)):
        SqliteStorage(f"sqlite:///{path}").open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_directory_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StorageError, match=f"{folder / 'cronhub.db'}.*not writable"):
            SqliteStorage(f"sqlite:///{folder / 'cronhub.db'}").open()
    finally:
        folder.chmod(0o700)


def test_a_relative_path_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = SqliteStorage("sqlite:///jobs.db")
    assert storage.path == tmp_path / "jobs.db"
    storage.open()
    storage.close()
    assert (tmp_path / "jobs.db").exists()


# -- retention ----------------------------------------------------------------------------------


def test_retention_defaults_to_90_days(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert SqliteStorage(url).retention == timedelta(days=90)
    assert SqliteStorage(url + "?retention_days=7").retention == timedelta(days=7)
    assert SqliteStorage(url + "?retention_days=0").retention is None
    assert SqliteStorage(url + "?retention_days=7", retention_days=2).retention == timedelta(days=2)
    with pytest.raises(StorageError, match="retention_days='soon'"):
        SqliteStorage(url + "?retention_days=soon")


def test_purge_expired_keeps_90_days(storage):
    now = T0 + timedelta(days=200)
    ages = {"old": 91, "recent": 89}
    for job, days in ages.items():
        started = now - timedelta(days=days)
        (result,) = claim(storage, ClaimRequest(job, started), now=started)
        done = Completion(RunStatus.SUCCEEDED, finished_at=started + timedelta(seconds=1))
        assert storage.finish(result.run.id, done, instance="i1")
    assert storage.purge_expired(now=now) == 1
    assert [r.job for r in storage.list_runs(RunFilter())] == ["recent"]


# -- the plugin ---------------------------------------------------------------------------------


def test_the_plugin_answers_sqlite_urls_only(tmp_path):
    assert isinstance(sqlite_plugin.cronhub_storage(f"sqlite:///{tmp_path}/x.db"), SqliteStorage)
    assert sqlite_plugin.cronhub_storage("memory://") is None
    assert sqlite_plugin.cronhub_storage("postgresql://u@h/db") is None


def test_the_installed_entry_point_provides_the_storage(tmp_path):
    pm = get_plugin_manager()
    assert "storage_sqlite" in {info.name for info in pm.list_plugins()}
    storage = pm.call_provider("cronhub_storage", url=f"sqlite:///{tmp_path}/x.db")
    assert isinstance(storage, SqliteStorage)
    assert type(pm.call_provider("cronhub_storage", url="memory://")).__name__ == "MemoryStorage"
