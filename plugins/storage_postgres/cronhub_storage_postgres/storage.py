"""``PostgresStorage``: cronhub storage in PostgreSQL, shared by instances on many hosts.

Exactly-once on PostgreSQL rests on these, all set up here or in :mod:`cronhub.sql_runs`:

- **the unique slot key** ``(job, schedule_id, scheduled_for, attempt)``: every instance
  inserts its claim with ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``, in the
  transaction that writes the run row; the one that gets an id back runs the slot;
- **per-job row locks**: a claim first locks the ``cronhub_jobs`` rows of its jobs with
  ``SELECT ... FOR UPDATE`` in sorted name order (creating missing rows first), so two
  instances claiming different slots of one ``overlap="skip"`` job cannot both see "nothing
  running", and sorted order means they cannot deadlock. No advisory locks are used for claims;
- **the database clock**: "due", lease expiry, reaping and ``started_at`` are judged by
  ``clock_timestamp()``, not by the ``now`` the caller passes (which is used only when the URL
  says ``?db_clock=0``, as the conformance suite with its fake clock does). A claim for a slot
  that the database clock has not reached yet waits until it has, so an instance whose clock
  runs fast does not start runs early. :attr:`PostgresStorage.clock_offset` holds the measured
  offset (database minus local time) and a warning is logged when it exceeds one second.
- **transaction-level advisory locks for migrations only**, so several instances starting
  at once create and migrate the schema once.

Optional capabilities the engine uses when present: :meth:`PostgresStorage.subscribe`
(``LISTEN``/``NOTIFY``: a run-now, pause or resume on one instance wakes the others, and the
web app of every instance hears of runs starting and ending anywhere) and the
``cronhub_instances`` table (:meth:`PostgresStorage.instances`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine, RowMapping, make_url

from cronhub.errors import StorageError
from cronhub.runs import ClaimRequest, ClaimResult, Completion, Run, RunStatus
from cronhub.sql import DEFAULT_RETENTION, SqlStorage, mask_url
from cronhub.sql_runs import row_slot_key, slot_keys
from cronhub.sql_schema import jobs, runs

log = logging.getLogger("cronhub.storage.postgres")

T = TypeVar("T")

#: The ``NOTIFY`` channel instances talk on.
CHANNEL = "cronhub"
#: Most run ids in one notification (a payload must stay under PostgreSQL's 8000 bytes).
IDS_PER_NOTIFY = 400
#: Key in a connection's ``info`` of the run events gathered in its current transaction.
_PENDING_RUNS = "cronhub.pending_run_events"

#: Query parameters a ``postgresql://`` URL may carry for cronhub itself.
URL_OPTIONS = ("retention_days", "db_clock", "pool_size", "max_overflow")
#: libpq parameters passed through to psycopg.
LIBPQ_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
    "host",
    "port",
)

#: Clock offsets above this many seconds are logged as a warning.
CLOCK_WARNING = 1.0
#: A claim waits at most this long for the database clock to reach its slot.
MAX_EARLY_WAIT = 10.0
#: Key of the transaction-level advisory lock that serialises schema migrations.
SCHEMA_LOCK_KEY = 0x63726F6E  # "cron"

#: This host's wall clock, the other side of :attr:`PostgresStorage.clock_offset` (a test
#: harness replaces it to simulate a skewed host).
local_time: Callable[[], float] = time.time

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# SQLSTATEs after which the whole transaction is simply run again.
_CONFLICT_STATES = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock
# Connection trouble: class 08, admin/crash shutdown, cannot connect now, too many clients.
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})

instances_table = sa.Table(
    "cronhub_instances",
    sa.MetaData(),
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    # Database time minus the instance's time, seconds, as it last measured it.
    sa.Column("clock_offset", sa.Float, nullable=True),
)

_DB_NOW = sa.text("SELECT clock_timestamp()")
_LOCK_JOBS = (
    sa.select(jobs.c.job)
    .where(jobs.c.job.in_(sa.bindparam("names", expanding=True)))
    .order_by(jobs.c.job)
    .with_for_update()
)
#: The columns of :data:`_FINISH_UNNEST`'s arrays, with their types.
_FINISH_COLUMNS = (
    ("id", "integer"),
    ("status", "varchar"),
    ("finished_at", "timestamptz"),
    ("duration_ms", "integer"),
    ("error_type", "varchar"),
    ("error_message", "text"),
    ("traceback", "text"),
    ("log", "text"),
    ("dead_letter", "boolean"),
    ("started_at", "timestamptz"),
)
_FINISH_UNNEST = sa.text(
    "UPDATE cronhub_runs AS r SET status = k.status, finished_at = k.finished_at,"
    " started_at = COALESCE(k.started_at, r.started_at),"
    " duration_ms = COALESCE(k.duration_ms,"
    " CASE WHEN COALESCE(k.started_at, r.started_at) IS NULL THEN NULL ELSE CAST(GREATEST(0,"
    " round(extract(epoch FROM k.finished_at - COALESCE(k.started_at, r.started_at)) * 1000))"
    " AS integer) END),"
    " lease_expires_at = NULL, error_type = k.error_type, error_message = k.error_message,"
    " traceback = k.traceback, log = k.log, dead_letter = k.dead_letter"
    " FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _FINISH_COLUMNS)
    + f") AS k({', '.join(name for name, _ in _FINISH_COLUMNS)})"
    " WHERE r.id = k.id AND r.instance = :instance AND r.status = 'running'"
    " RETURNING r.*"
).columns(*runs.c)
_ADD_JOBS = pg_insert(jobs).on_conflict_do_nothing(index_elements=[jobs.c.job])
_KEY = ("job", "schedule_id", "scheduled_for", "attempt")
#: Columns of a claim batch inserted from arrays (``unnest``); the others take their defaults,
#: which :data:`_UNNEST_DEFAULTS` checks every row has (else the batch is inserted row-wise).
_UNNEST_COLUMNS = (
    ("job", "varchar"),
    ("schedule_id", "varchar"),
    ("scheduled_for", "timestamptz"),
    ("attempt", "integer"),
    ("trigger", "varchar"),
    ("status", "varchar"),
    ("instance", "varchar"),
    ("created_at", "timestamptz"),
    ("not_before", "timestamptz"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("lease_expires_at", "timestamptz"),
    ("missed_count", "integer"),
    ("params", "text"),
)
_EXISTING_ROWS = sa.text(
    "SELECT r.* FROM unnest(CAST(:job AS varchar[]), CAST(:schedule_id AS varchar[]),"
    " CAST(:slot AS timestamptz[]), CAST(:attempt AS integer[]))"
    " AS k(job, schedule_id, scheduled_for, attempt)"
    " JOIN cronhub_runs r ON r.job = k.job AND r.schedule_id = k.schedule_id"
    " AND r.scheduled_for = k.scheduled_for AND r.attempt = k.attempt"
).columns(*runs.c)
_PROCESSED_COLUMNS = tuple(
    name for name, kind in _UNNEST_COLUMNS if kind == "timestamptz" or name == "params"
)
_UNNEST_DEFAULTS = {
    "duration_ms": None,
    "error_type": None,
    "error_message": None,
    "traceback": None,
    "log": "",
    "dead_letter": False,
}
_INSERT_UNNEST = sa.text(
    f"INSERT INTO cronhub_runs ({', '.join(name for name, _ in _UNNEST_COLUMNS)}) "
    "SELECT * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _UNNEST_COLUMNS)
    + ") ON CONFLICT DO NOTHING RETURNING id, job, schedule_id, scheduled_for, attempt"
)
_INSERT_MANY = (
    pg_insert(runs)
    .on_conflict_do_nothing()
    .returning(runs.c.id, runs.c.job, runs.c.schedule_id, runs.c.scheduled_for, runs.c.attempt)
)


def _flag(name: str, value: str, url: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise StorageError(f"storage {url}: {name}={value!r} is not a boolean (use 1 or 0)")


def _number(name: str, value: str, url: str, *, integer: bool = False) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        number = -1
    if number < 0:
        kind = "a whole number" if integer else "a number"
        raise StorageError(f"storage {url}: {name}={value!r} is not {kind} >= 0")
    return number


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


class PostgresStorage(SqlStorage):
    """Storage in PostgreSQL: ``postgresql://user:password@host:5432/dbname``.

    URL options (``?name=value``), each also a keyword argument (which wins):

    - ``retention_days``: how long finished runs are kept (default 90; ``0`` keeps them);
    - ``db_clock``: judge time by the database's ``clock_timestamp()`` (default ``1``); ``0``
      uses the ``now`` callers pass, which only a test with a fake clock should want;
    - ``pool_size``, ``max_overflow``: the connection pool (default 5 and 10 per instance);
    - libpq parameters (``sslmode``, ``connect_timeout``, ``application_name``, ...) are passed
      to psycopg.

    :param url: The storage URL (``postgresql://``, ``postgresql+psycopg://`` or ``postgres://``).
    :raises StorageError: For a URL that is not PostgreSQL's or an unknown or bad option.
    """

    #: Give up on a transaction that keeps failing because the server is unreachable after this
    #: many seconds (conflicts are retried for :attr:`retry_deadline`); the engine retries too.
    reconnect_deadline: float = 5.0

    def __init__(
        self,
        url: str,
        *,
        retention_days: float | None = None,
        db_clock: bool | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
    ) -> None:
        masked = mask_url(url)
        if url.startswith("postgres:"):
            url = "postgresql:" + url[len("postgres:") :]
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise StorageError(f"storage {masked}: not a valid PostgreSQL URL ({exc})") from exc
        if parsed.get_backend_name() != "postgresql":
            raise StorageError(f"storage {masked}: not a postgresql:// URL")
        if "+" in parsed.drivername and parsed.get_driver_name() != "psycopg":
            raise StorageError(
                f"storage {masked}: driver {parsed.get_driver_name()!r} is not supported; "
                "use postgresql:// or postgresql+psycopg:// (psycopg 3)"
            )
        options = {k: str(v) for k, v in parsed.query.items()}
        unknown = sorted(set(options) - set(URL_OPTIONS) - set(LIBPQ_OPTIONS))
        if unknown:
            raise StorageError(
                f"storage {masked}: unknown option(s) {', '.join(unknown)} "
                f"(known: {', '.join(URL_OPTIONS + LIBPQ_OPTIONS)})"
            )
        if retention_days is None and "retention_days" in options:
            retention_days = _number("retention_days", options["retention_days"], masked)
        if db_clock is None:
            db_clock = _flag("db_clock", options.get("db_clock", "1"), masked)
        if pool_size is None:
            pool_size = int(
                _number("pool_size", options.get("pool_size", "5"), masked, integer=True)
            )
        if max_overflow is None:
            max_overflow = int(
                _number("max_overflow", options.get("max_overflow", "10"), masked, integer=True)
            )
        if pool_size < 1:
            raise StorageError(f"storage {masked}: pool_size must be at least 1")
        if retention_days is None:
            retention: timedelta | None = DEFAULT_RETENTION
        else:
            retention = timedelta(days=retention_days) if retention_days > 0 else None
        super().__init__(url, retention=retention)
        libpq = {k: v for k, v in options.items() if k in LIBPQ_OPTIONS}
        self._sa_url = parsed.set(drivername="postgresql+psycopg", query=libpq)
        #: Whether "due", leases and reaping follow the database clock (``clock_timestamp()``).
        self.db_clock = db_clock
        #: Connections kept open, and opened beyond that under load.
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        #: Database time minus local time, in seconds, as last measured (``None`` before).
        self.clock_offset: float | None = None
        self._clock_warned = False
        self._listener: _Listener | None = None
        #: Marks the notifications this object sends; its own come back with ``local: True``.
        self.origin = uuid.uuid4().hex

    # -- opening ------------------------------------------------------------------------------
    def _create_engine(self) -> Engine:
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in self._sa_url.query:
            connect_args["connect_timeout"] = 5
        if "application_name" not in self._sa_url.query:
            connect_args["application_name"] = "cronhub"
        return sa.create_engine(
            self._sa_url,
            connect_args=connect_args,
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            pool_timeout=30,
            pool_pre_ping=True,  # a connection killed by a restart is replaced, not used
            pool_recycle=1800,
            isolation_level="READ COMMITTED",
        )

    def open(self) -> None:
        """Connect, create or migrate the schema, and measure the clock offset."""
        try:
            super().open()
        except StorageError as exc:
            raise StorageError(f"cannot open PostgreSQL storage: {exc}") from exc
        self.measure_clock_offset()

    def close(self) -> None:
        """Stop listening and dispose of the connection pool. Safe to call twice."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        super().close()

    def migrate(self) -> int:
        """Apply the shared migrations, then create this plugin's own tables."""
        version = super().migrate()

        def own_tables(conn: Connection) -> None:
            self._lock_schema(conn)
            instances_table.create(conn, checkfirst=True)
            # Added after the first release of the table: tables made before lack it.
            conn.execute(
                sa.text(
                    "ALTER TABLE cronhub_instances ADD COLUMN IF NOT EXISTS clock_offset"
                    " DOUBLE PRECISION"
                )
            )

        self._run(own_tables, write=True)
        return version

    # -- transactions -------------------------------------------------------------------------
    def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction; again on conflicts and (briefly) on lost connections.

        A write retried after a lost connection may have committed the first time: claims
        recognise their own run (``CLAIMED`` again), and fenced writes (``finish``,
        ``heartbeat``) simply find the row already in its new state.
        """
        engine = self._engine
        if engine is None:
            raise StorageError(f"storage {self.url} is not open")
        started = time.monotonic()
        delay = 0.002
        while True:
            try:
                with engine.connect() as conn, conn.begin():
                    conn.info[_PENDING_RUNS] = {}
                    try:
                        result = fn(conn)
                        self._flush_run_events(conn)
                    finally:
                        conn.info.pop(_PENDING_RUNS, None)  # never left for the next checkout
                    return result
            except sa.exc.DBAPIError as exc:
                waited = time.monotonic() - started
                if self._is_connection_error(exc):
                    retry = waited < self.reconnect_deadline
                    delay = max(delay, 0.1)
                else:
                    retry = self._is_retryable(exc) and waited < self.retry_deadline
                if retry:
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.5)
                    continue
                raise StorageError(f"storage {self.url}: {self._describe_error(exc)}") from exc
            except sa.exc.SQLAlchemyError as exc:
                raise StorageError(f"storage {self.url}: {self._describe_error(exc)}") from exc

    def _is_retryable(self, exc: sa.exc.DBAPIError) -> bool:
        return _sqlstate(exc) in _CONFLICT_STATES

    @staticmethod
    def _is_connection_error(exc: sa.exc.DBAPIError) -> bool:
        state = _sqlstate(exc)
        if exc.connection_invalidated:
            return True
        if state is None:
            return isinstance(exc, sa.exc.OperationalError)
        return state.startswith("08") or state in _CONNECTION_STATES

    def ping(self) -> bool:
        """``True`` when the database answers a trivial query now (one try, no retries)."""
        engine = self._engine
        if engine is None:
            return False
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT 1")).scalar() == 1
        except sa.exc.SQLAlchemyError:
            return False

    # -- time ---------------------------------------------------------------------------------
    def _clock(self, conn: Connection, now: datetime) -> datetime:
        """``clock_timestamp()`` (or ``now`` with ``db_clock=0``); measures the offset too."""
        if not self.db_clock:
            return now
        before = local_time()
        current: datetime = conn.execute(_DB_NOW).scalar_one()
        after = local_time()
        self._record_offset(current, before, after)
        return current.astimezone(UTC)

    def _record_offset(self, db_now: datetime, before: float, after: float) -> None:
        offset = db_now.timestamp() - (before + after) / 2
        self.clock_offset = offset
        if abs(offset) > CLOCK_WARNING and not self._clock_warned:
            self._clock_warned = True
            log.warning(
                "%s: this host's clock is %.3f s %s the database's; cronhub judges time by "
                "the database clock, but fix NTP on this host",
                self.url,
                abs(offset),
                "behind" if offset > 0 else "ahead of",
            )
        elif abs(offset) <= CLOCK_WARNING / 2 and self._clock_warned:
            self._clock_warned = False
            log.info("%s: clock offset back to %.3f s", self.url, offset)

    def measure_clock_offset(self) -> float:
        """Measure database time minus local time (seconds); also sets :attr:`clock_offset`."""
        engine = self._engine
        if engine is None:
            raise StorageError(f"storage {self.url} is not open")
        best: tuple[float, datetime, float, float] | None = None
        with engine.connect() as conn:
            for _ in range(3):  # keep the sample with the shortest round trip
                before = local_time()
                db_now = conn.execute(_DB_NOW).scalar_one()
                after = local_time()
                if best is None or after - before < best[0]:
                    best = (after - before, db_now, before, after)
            conn.rollback()
        assert best is not None
        self._record_offset(best[1], best[2], best[3])
        assert self.clock_offset is not None
        return self.clock_offset

    def database_now(self) -> datetime:
        """The database's ``clock_timestamp()``."""
        return self._run(lambda c: c.execute(_DB_NOW).scalar_one().astimezone(UTC), write=False)

    # -- claims -------------------------------------------------------------------------------
    def claim(
        self,
        requests: Sequence[ClaimRequest],
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
    ) -> list[ClaimResult]:
        """Claim slots; with the database clock, first wait until it has reached every slot.

        A slot is never started before its ``scheduled_for`` by database time, even when this
        host's clock runs fast (the wait is at most :data:`MAX_EARLY_WAIT` seconds).
        """
        if self.db_clock:
            self._wait_for_slots(requests)
        return super().claim(requests, instance=instance, now=now, lease_ttl=lease_ttl)

    def _wait_for_slots(self, requests: Sequence[ClaimRequest]) -> None:
        # A slot claimed ahead on purpose (the engine starts it at its time) may be claimed
        # that much earlier; the engine then waits out a fast local clock (``clock_offset``).
        slots = [
            r.scheduled_for - timedelta(seconds=r.claim_ahead)
            for r in requests
            if r.scheduled_for is not None and RunStatus(r.status) is RunStatus.RUNNING
        ]
        if not slots:
            return
        latest = max(slots).astimezone(UTC)
        deadline = time.monotonic() + MAX_EARLY_WAIT
        while True:
            early = (latest - self.database_now()).total_seconds()
            if early <= 0:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s: claiming a slot %.3f s before it is due by the database clock",
                    self.url,
                    early,
                )
                return
            time.sleep(min(early + 0.001, remaining))

    def _existing_rows(
        self, conn: Connection, requests: Sequence[ClaimRequest]
    ) -> dict[tuple[Any, ...], RowMapping]:
        """The rows that already hold the slot keys of ``requests``, by key: one join of the
        keys (as arrays, ``unnest``) with the unique index, however many there are."""
        keys = slot_keys(requests)
        found: dict[tuple[Any, ...], RowMapping] = {}
        if not keys:
            return found
        job, schedule_id, slot, attempt = (list(column) for column in zip(*keys, strict=True))
        params = {"job": job, "schedule_id": schedule_id, "slot": slot, "attempt": attempt}
        for row in conn.execute(_EXISTING_ROWS, params).mappings():
            found[row_slot_key(row)] = row
        return found

    def _lock_jobs(self, conn: Connection, names: Sequence[str]) -> None:
        """Lock the jobs' state rows (``FOR UPDATE``, sorted), creating missing ones first."""
        names = sorted(set(names))
        if not names:
            return
        for start in range(0, len(names), 1000):
            chunk = names[start : start + 1000]
            found = set(conn.execute(_LOCK_JOBS, {"names": chunk}).scalars())
            missing = [name for name in chunk if name not in found]
            if missing:
                # Concurrent inserts of one name wait for each other; sorted order keeps two
                # claimers of overlapping job sets from deadlocking (a deadlock is retried).
                conn.execute(_ADD_JOBS, [{"job": n, "paused": False} for n in missing])
                conn.execute(_LOCK_JOBS, {"names": missing}).all()

    def _lock_schema(self, conn: Connection) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})

    def _insert_runs(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int | None]:
        """Insert a claim batch in one multi-row ``INSERT ... ON CONFLICT DO NOTHING``.

        Ids come back with their slot keys and are matched to the rows by key; manual runs
        (no slot key, never deduplicated) are inserted one by one.
        """
        keyed = [row for row in rows if row["scheduled_for"] is not None]
        ids_by_key: dict[tuple[Any, ...], int] = {}
        if len(keyed) > 1:
            if all(_UNNEST_DEFAULTS.items() <= row.items() for row in keyed):
                # Columns as arrays: 14 parameters instead of 20 per row, 3-4x faster.
                arrays = {name: [row[name] for row in keyed] for name, _ in _UNNEST_COLUMNS}
                for name in _PROCESSED_COLUMNS:  # the columns' own bind processing (UTC, JSON)
                    process = runs.c[name].type.process_bind_param
                    arrays[name] = [process(value, conn.dialect) for value in arrays[name]]
                inserted = conn.execute(_INSERT_UNNEST, arrays)
            else:
                inserted = conn.execute(_INSERT_MANY, keyed)
            for row in inserted:
                slot = row.scheduled_for.astimezone(UTC)
                ids_by_key[(row.job, row.schedule_id, slot, row.attempt)] = row.id
        result: list[int | None] = []
        for row in rows:
            if row["scheduled_for"] is None or len(keyed) <= 1:
                result.append(self._insert_if_absent(conn, row))
            else:
                result.append(ids_by_key.get(tuple(row[k] for k in _KEY)))
        for status, event in ((RunStatus.QUEUED, "run.queued"), (RunStatus.RUNNING, "run.started")):
            ids = [i for i, r in zip(result, rows, strict=True) if i and r["status"] == status]
            self._notify_runs(conn, event, ids)
        return result

    def _take_queued(self, conn: Connection, *args: Any, **kwargs: Any) -> list[Run]:
        taken = super()._take_queued(conn, *args, **kwargs)
        self._notify_runs(conn, "run.started", [run.id for run in taken])
        return taken

    def finish_many(
        self, completions: Sequence[tuple[int, Completion]], *, instance: str
    ) -> list[bool]:
        """End owned runs in one transaction (see the base class): a batch is one statement
        (:meth:`_finish_batch`), not two per run."""
        completions = list(completions)
        if len(completions) <= 1:
            return super().finish_many(completions, instance=instance)
        for run_id, completion in completions:
            if not completion.status.terminal:
                raise ValueError(
                    f"run {run_id}: finish needs a terminal status, not {completion.status.value}"
                )
        return self._run(lambda c: self._finish_batch(c, completions, instance), write=True)

    def _finish_batch(
        self, conn: Connection, completions: Sequence[tuple[int, Completion]], instance: str
    ) -> list[bool]:
        """End a batch of owned runs with one ``UPDATE ... FROM unnest(...) RETURNING``.

        The fence (``instance`` and ``status = 'running'``) is in the update's ``WHERE``, row by
        row: a run another instance reaped or cancelled first is not updated and answers
        ``False``, as a run listed twice does the second time.
        """
        first: dict[int, Completion] = {}
        for run_id, completion in completions:
            first.setdefault(run_id, completion)
        ids = sorted(first)
        arrays: dict[str, list[Any]] = {name: [] for name, _ in _FINISH_COLUMNS}
        for run_id in ids:
            done = first[run_id]
            finished_at = done.finished_at.astimezone(UTC)
            arrays["id"].append(run_id)
            arrays["status"].append(done.status.value)
            arrays["finished_at"].append(finished_at)
            arrays["duration_ms"].append(done.duration_ms)
            arrays["error_type"].append(done.error_type)
            arrays["error_message"].append(done.error_message)
            arrays["traceback"].append(done.traceback)
            arrays["log"].append(done.log)
            arrays["dead_letter"].append(done.dead_letter)
            arrays["started_at"].append(
                None if done.started_at is None else done.started_at.astimezone(UTC)
            )
        ended: dict[int, RowMapping] = {}
        for start in range(0, len(ids), 1000):
            chunk = {name: values[start : start + 1000] for name, values in arrays.items()}
            for row in conn.execute(_FINISH_UNNEST, {**chunk, "instance": instance}).mappings():
                ended[row["id"]] = row
        answers: list[bool] = []
        answered: set[int] = set()
        for run_id, _ in completions:
            answers.append(run_id in ended and run_id not in answered)
            answered.add(run_id)
        for run_id, row in ended.items():
            done = first[run_id]
            if done.retry_at is not None or done.alerts:
                self._follow_up(conn, row, done, now=done.finished_at.astimezone(UTC))
        self._notify_runs(conn, "run.finished", sorted(ended))
        return answers

    def _finish(self, conn: Connection, run_id: int, completion: Completion, instance: str) -> bool:
        finished = super()._finish(conn, run_id, completion, instance)
        if finished:
            self._notify_runs(conn, "run.finished", [run_id])
        return finished

    def _end_runs(
        self, conn: Connection, run_ids: Iterable[int], *args: Any, **kwargs: Any
    ) -> list[Run]:
        ended = super()._end_runs(conn, run_ids, *args, **kwargs)  # cancel, replace, release
        self._notify_runs(conn, "run.finished", [run.id for run in ended])
        return ended

    def reap(self, *, now: datetime, policy: Any, limit: int = 100) -> list[Run]:
        """Mark runs with expired leases ``crashed`` (see the base class) and tell listeners."""
        crashed = super().reap(now=now, policy=policy, limit=limit)
        if crashed:
            ids = [run.id for run in crashed]
            self._run(lambda c: self._notify_runs(c, "run.finished", ids), write=True)
        return crashed

    # -- job state ----------------------------------------------------------------------------
    def set_paused(self, job: str, paused: bool, *, now: datetime) -> None:
        """Persist the paused flag and tell the other instances (``NOTIFY``) on commit."""

        def write(conn: Connection) -> None:
            self._lock_jobs(conn, [job])
            values = {"paused": paused, "updated_at": self._clock(conn, now)}
            self._upsert_job(conn, job, values)
            self._notify(conn, {"event": "job.paused" if paused else "job.resumed", "job": job})

        self._run(write, write=True)

    # -- LISTEN / NOTIFY ----------------------------------------------------------------------
    def _notify(self, conn: Connection, payload: dict[str, Any]) -> None:
        """Send ``payload`` on :data:`CHANNEL` when this transaction commits."""
        conn.execute(
            sa.text("SELECT pg_notify(:channel, :payload)"),
            {
                "channel": CHANNEL,
                "payload": json.dumps({**payload, "origin": self.origin}, sort_keys=True),
            },
        )

    def _notify_runs(self, conn: Connection, event: str, ids: list[int]) -> None:
        """Notify ``event`` for these run ids when the transaction ends.

        Ids are gathered per transaction and sent by :meth:`_flush_run_events`, so that a
        batch of outcomes (``finish_many``) costs a notification, not one per run.
        """
        pending: dict[str, list[int]] | None = conn.info.get(_PENDING_RUNS)
        if pending is None:  # outside :meth:`_run`: send now
            self._send_run_events(conn, event, ids)
        elif ids:
            pending.setdefault(event, []).extend(ids)

    def _flush_run_events(self, conn: Connection) -> None:
        """Send the run events gathered in this transaction, in the order they first arose."""
        pending: dict[str, list[int]] = conn.info.get(_PENDING_RUNS) or {}
        conn.info[_PENDING_RUNS] = {}
        for event, ids in pending.items():
            self._send_run_events(conn, event, ids)

    def _send_run_events(self, conn: Connection, event: str, ids: list[int]) -> None:
        for start in range(0, len(ids), IDS_PER_NOTIFY):
            self._notify(conn, {"event": event, "runs": ids[start : start + IDS_PER_NOTIFY]})

    def subscribe(
        self,
        callback: Callable[[dict[str, Any]], None],
        *,
        instance: str | None = None,
        version: str = "",
        heartbeat: float = 10.0,
    ) -> None:
        """Call ``callback(event)`` (from a thread) for every event any instance notifies.

        Events are dicts with an ``event`` key: ``run.queued``, ``run.started`` and
        ``run.finished`` (with ``runs``, a list of run ids), ``job.paused`` and ``job.resumed``
        (with ``job``), ``schedule.changed`` (with ``schedule``, a runtime schedule's id, and
        ``revision``), and ``reconnected`` after the listening connection was lost and
        re-established (events in between may have been missed). ``local`` is ``True`` for
        the events this storage object itself caused.
        With ``instance``, the listener also registers it in ``cronhub_instances`` and renews
        its ``heartbeat_at`` every ``heartbeat`` seconds. One subscription per storage.
        """
        if self._engine is None:
            raise StorageError(f"storage {self.url} is not open")
        if self._listener is not None:
            raise StorageError(f"storage {self.url}: already subscribed")
        if instance is not None:
            self.register_instance(instance, version=version)
        self._listener = _Listener(self, callback, instance, version, heartbeat)
        self._listener.start()

    def unsubscribe(self) -> None:
        """Stop the listener started by :meth:`subscribe` and deregister the instance."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()

    # -- instances ----------------------------------------------------------------------------
    def register_instance(self, instance: str, *, version: str = "") -> None:
        """Insert or refresh ``instance`` in ``cronhub_instances`` (started and seen now)."""

        def write(conn: Connection) -> None:
            now = conn.execute(_DB_NOW).scalar_one()
            values = {
                "id": instance,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": version,
                "started_at": now,
                "heartbeat_at": now,
                "clock_offset": self.clock_offset,
            }
            statement = pg_insert(instances_table).values(values)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[instances_table.c.id],
                    set_={k: statement.excluded[k] for k in values if k != "id"},
                )
            )

        self._run(write, write=True)

    def instance_heartbeat(self, instance: str) -> bool:
        """Renew ``heartbeat_at`` of ``instance`` and record a fresh clock offset (measured
        now, so that an idle instance's drift is seen and warned about too); ``False`` when
        the instance is not registered."""
        try:
            offset: float | None = self.measure_clock_offset()
        except (sa.exc.SQLAlchemyError, StorageError):
            offset = self.clock_offset  # the update below reports the connection trouble

        def write(conn: Connection) -> bool:
            update = (
                sa.update(instances_table)
                .where(instances_table.c.id == instance)
                .values(heartbeat_at=sa.func.clock_timestamp(), clock_offset=offset)
            )
            return conn.execute(update).rowcount == 1

        return self._run(write, write=True)

    def deregister_instance(self, instance: str) -> None:
        """Remove ``instance`` from ``cronhub_instances`` (a clean shutdown)."""
        self._run(
            lambda c: c.execute(sa.delete(instances_table).where(instances_table.c.id == instance)),
            write=True,
        )

    def instances(self, *, stale_after: float | None = None) -> list[dict[str, Any]]:
        """Registered instances, oldest first: ``id``, ``host``, ``pid``, ``version``,
        ``started_at``, ``heartbeat_at``, ``clock_offset`` (database minus instance time,
        seconds, as last measured there) and ``alive`` (heartbeat within ``stale_after``
        seconds by database time; default three missed 10 s heartbeats)."""
        stale = 30.0 if stale_after is None else stale_after

        def read(conn: Connection) -> list[dict[str, Any]]:
            now = conn.execute(_DB_NOW).scalar_one()
            query = sa.select(instances_table).order_by(
                instances_table.c.started_at, instances_table.c.id
            )
            found = []
            for row in conn.execute(query).mappings():
                item = dict(row)
                item["started_at"] = item["started_at"].astimezone(UTC)
                item["heartbeat_at"] = item["heartbeat_at"].astimezone(UTC)
                item["alive"] = (now - row["heartbeat_at"]).total_seconds() <= stale
                found.append(item)
            return found

        return self._run(read, write=False)


class _Listener:
    """A thread holding one ``LISTEN`` connection (psycopg, autocommit), reconnecting."""

    def __init__(
        self,
        storage: PostgresStorage,
        callback: Callable[[dict[str, Any]], None],
        instance: str | None,
        version: str,
        heartbeat: float,
    ) -> None:
        self.storage = storage
        self.callback = callback
        self.instance = instance
        self.version = version
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="cronhub-listen", daemon=True)
        self._conn: Any = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.instance is not None:
            try:
                self.storage.deregister_instance(self.instance)
            except StorageError as exc:
                log.warning("could not deregister instance %s: %s", self.instance, exc)

    def _connect(self) -> Any:
        import psycopg

        url = self.storage._sa_url
        params: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "user": url.username,
            "password": url.password,
            "dbname": url.database,
            "connect_timeout": 5,
            "application_name": "cronhub-listen",
        }
        params.update({k: v for k, v in url.query.items()})
        params = {k: v for k, v in params.items() if v is not None}
        conn = psycopg.connect(autocommit=True, **params)
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _main(self) -> None:
        failures = 0
        connected_once = False
        next_beat = time.monotonic() + self.heartbeat  # subscribe() registered it just now
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning("%s: LISTEN connection failed: %s", self.storage.url, exc)
                self._stop.wait(min(0.2 * failures, 2.0))
                continue
            failures = 0
            if connected_once:
                self._deliver({"event": "reconnected"})
            connected_once = True
            try:
                with conn:
                    while not self._stop.is_set():
                        if self.instance is not None and time.monotonic() >= next_beat:
                            self._beat()
                            next_beat = time.monotonic() + self.heartbeat
                        for notify in conn.notifies(timeout=0.5, stop_after=100):
                            try:
                                event = json.loads(notify.payload)
                            except ValueError:
                                continue
                            if isinstance(event, dict):
                                origin = event.pop("origin", None)
                                event["local"] = origin == self.storage.origin
                                self._deliver(event)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("%s: LISTEN connection lost: %s", self.storage.url, exc)

    def _beat(self) -> None:
        assert self.instance is not None
        try:
            if not self.storage.instance_heartbeat(self.instance):
                self.storage.register_instance(self.instance, version=self.version)
        except StorageError as exc:
            log.warning("instance heartbeat failed: %s", exc)

    def _deliver(self, event: dict[str, Any]) -> None:
        try:
            self.callback(event)
        except Exception:
            log.exception("storage event callback failed for %s", event)
