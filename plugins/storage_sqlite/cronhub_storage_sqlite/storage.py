"""``SqliteStorage``: cronhub storage in one SQLite file, shared by the processes of one host.

Exactly-once on SQLite rests on three things, all set up here:

- **WAL** journal mode, so readers (the dashboard, ``cronhub history``) never block writers;
- **``BEGIN IMMEDIATE``** for every write transaction, so a claim takes the database's single
  write lock before it reads anything: the overlap check and the insert see one consistent
  state, and no two processes can both decide "nothing is running";
- a **busy timeout** on every connection plus a retry loop with jittered backoff around each
  transaction, so ``database is locked`` never reaches a caller.

SQLite's locks do not work reliably over network filesystems (NFS, SMB, sshfs, 9p...), so a
database on one is refused unless the URL says ``?allow_network_fs=1``. Several hosts need
PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RowMapping, make_url

from cronhub.errors import StorageError
from cronhub.runs import ClaimRequest, RunStatus
from cronhub.sql import DEFAULT_RETENTION, SqlStorage, mask_url
from cronhub.sql_runs import FINISH_COLUMNS, slot_keys
from cronhub.sql_schema import as_status, chunks, jobs, runs
from cronhub_storage_sqlite.batches import (
    DriverBatch,
    JsonBatch,
    bound_values,
    insert_batch,
    json_insert_batch,
    result_values,
)

log = logging.getLogger("cronhub.storage.sqlite")

#: ``RETURNING`` (insert-if-absent in one statement) arrived in SQLite 3.35.
MIN_SQLITE_VERSION = (3, 35, 0)

#: Filesystem types (as in ``/proc/mounts``) whose file locking SQLite cannot rely on.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "smb2",
        "9p",
        "afs",
        "ncpfs",
        "coda",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "davfs",
        "sshfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.gcsfuse",
        "fuse.davfs2",
        "fuse.juicefs",
    }
)


class _Batch:
    """A batch statement in both forms: one statement taking the batch as JSON where this
    SQLite has its JSON functions (:data:`_HAS_JSON`), else ``executemany``."""

    def __init__(self, driver: DriverBatch, json_form: JsonBatch) -> None:
        self.driver, self.json_form = driver, json_form

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        return (self.json_form if _HAS_JSON else self.driver).run(conn, rows)

    @classmethod
    def insert(cls, table: sa.Table, names: Sequence[str]) -> _Batch:
        """``INSERT INTO table (names...)`` of a batch of rows keyed by ``names``."""
        return cls(insert_batch(table, names), json_insert_batch(table, names))


_INSERT = sa.insert(runs)
#: Claim batches inserted through the driver, by the row keys (always the same in practice).
_INSERT_BATCHES: dict[tuple[str, ...], _Batch] = {}
#: The shared ``_FINISH_MANY`` update, as driver SQL (the keys are its bind parameters).
_FINISH_KEYS = [*(f"b_{name}" for name in FINISH_COLUMNS), "b_started_at", "b_id", "b_instance"]
_FINISH_TYPES = [
    *(runs.c[n] for n in FINISH_COLUMNS),
    runs.c.started_at,
    runs.c.id,
    runs.c.instance,
]
_FINISH_BATCH = DriverBatch(
    "UPDATE cronhub_runs SET "
    + ", ".join(f"{name} = ?" for name in FINISH_COLUMNS)
    + ", started_at = COALESCE(?, started_at)"
    " WHERE id = ? AND instance = ? AND status = 'running'",
    _FINISH_TYPES,
    _FINISH_KEYS,
)
#: :data:`_FINISH_BATCH` in one statement. The fence's ``+`` keeps the planner from reading
#: every running row through the ``(status, id)`` index: each row is found by its id.
_FINISH_JSON = JsonBatch(
    "UPDATE cronhub_runs SET "
    + ", ".join(f"{name} = {{{index}}}" for index, name in enumerate(FINISH_COLUMNS))
    + f", started_at = COALESCE({{{len(FINISH_COLUMNS)}}}, started_at)"
    f" FROM json_each(:rows) AS b WHERE cronhub_runs.id = {{{len(FINISH_COLUMNS) + 1}}}"
    f" AND +cronhub_runs.instance = {{{len(FINISH_COLUMNS) + 2}}}"
    " AND +cronhub_runs.status = 'running'",
    _FINISH_TYPES,
    _FINISH_KEYS,
    element="b.value",
)
#: The ids of the rows holding the slot keys of a JSON array of ``[job, schedule_id,
#: scheduled_for, attempt]``.
_EXISTING_KEYS = (
    "SELECT r.id FROM json_each(?) AS k JOIN cronhub_runs AS r"
    " ON r.job = k.value ->> 0 AND r.schedule_id = k.value ->> 1"
    " AND r.scheduled_for = k.value ->> 2 AND r.attempt = k.value ->> 3"
)
_FINISH = _Batch(_FINISH_BATCH, _FINISH_JSON)
_INSERT_JOBS = _Batch.insert(jobs, ("job", "paused", "high_water"))
_MARK_TYPES, _MARK_KEYS = [jobs.c.high_water, jobs.c.job], ["b_mark", "b_job"]
_RAISE_MARKS_JSON = JsonBatch(
    "UPDATE cronhub_jobs SET high_water = {0} FROM json_each(:rows) AS b"
    " WHERE cronhub_jobs.job = {1}",
    _MARK_TYPES,
    _MARK_KEYS,
    element="b.value",
)
_RAISE_MARKS = _Batch(
    DriverBatch("UPDATE cronhub_jobs SET high_water = ? WHERE job = ?", _MARK_TYPES, _MARK_KEYS),
    _RAISE_MARKS_JSON,
)
_INSERT_RETURNING = sa.insert(runs).returning(runs.c.id)
_LAST_ID = "SELECT max(id) FROM cronhub_runs"
#: How many rows a claim batch inserted after id ``?``, and their first and last ids.
_IDS_AFTER = "SELECT count(*), min(id), max(id) FROM cronhub_runs WHERE id > ?"
#: The JSON functions (``json_each``, ``->>``) are built in since SQLite 3.38: the claim path's
#: lookups then take a batch's names or ids as one JSON parameter (one fixed statement rather
#: than an ``IN`` list SQLAlchemy renders anew for each batch).
_HAS_JSON = sqlite3.sqlite_version_info >= (3, 38, 0)
#: Names per JSON parameter where a call may pass many (start-up reads 100,000 jobs): SQLite
#: parses the whole array into memory that the process keeps afterwards.
_NAMES_PER_QUERY = 2000
# The lookups below answer with their rows as one JSON array, in one row: the driver lets go
# of the interpreter lock around each step of a statement, one per row read (see
# :mod:`.batches`), and building a row object costs more than parsing its JSON.
#: Each name of a JSON array and the id of its job's newest run (``NULL`` for none).
_LAST_RUN_IDS = (
    "SELECT json_group_array(json_array(n.value,"
    " (SELECT max(r.id) FROM cronhub_runs AS r WHERE r.job = n.value)))"
    " FROM json_each(?) AS n"
)
#: ``(job, paused, high_water)`` of the jobs named in a JSON array that have a state row.
_JOB_ROWS = (
    "SELECT json_group_array(json_array(s.job, s.paused, s.high_water)) FROM json_each(?) AS n"
    " CROSS JOIN cronhub_jobs AS s ON s.job = n.value"
)
#: ``(job, status, count)`` of the queued and running runs of the jobs named in a JSON array:
#: per name, a search of the ``(job, status, id)`` index.
_ACTIVE_COUNTS = (
    "SELECT json_group_array(json_array(job, status, n)) FROM"
    " (SELECT r.job AS job, r.status AS status, count(*) AS n FROM json_each(?) AS n"
    " CROSS JOIN cronhub_runs AS r ON r.job = n.value"
    " WHERE r.status IN ('queued', 'running') GROUP BY r.job, r.status)"
)
#: Per run id of a JSON array, the status of its job's newest other run whose status is in a
#: second JSON array: a backward scan of the ``(job, id)`` index, stopped at the first match.
_PREVIOUS_OUTCOMES = (
    "SELECT json_group_array(json_array(r.id, (SELECT p.status FROM cronhub_runs AS p"
    " WHERE p.job = r.job AND p.id != r.id AND p.status IN (SELECT value FROM json_each(?))"
    " ORDER BY p.id DESC LIMIT 1)))"
    " FROM json_each(?) AS n CROSS JOIN cronhub_runs AS r ON r.id = n.value"
)


def _json_rows(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[list[Any]]:
    """The rows of one of the statements above (each answers with a JSON array of rows)."""
    return json.loads(conn.exec_driver_sql(sql, params).scalar_one())


def _json_chunks(names: Sequence[str]) -> Iterator[str]:
    """``names`` as JSON arrays of at most :data:`_NAMES_PER_QUERY`, the parameters of the
    statements above."""
    for chunk in chunks(names, _NAMES_PER_QUERY):
        yield json.dumps(list(chunk))


#: Query parameters a ``sqlite:///`` URL may carry.
URL_OPTIONS = ("retention_days", "allow_network_fs", "busy_timeout")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# Transient lock errors: the write lock is held elsewhere (beyond busy_timeout, or in a case
# where SQLite does not call the busy handler), or another connection changed the schema.
_RETRYABLE = re.compile(r"database (table |schema )?is (locked|busy)|schema has changed")


def parse_mounts(text: str) -> list[tuple[str, str]]:
    """``(mount point, filesystem type)`` pairs of a ``/proc/mounts`` table."""
    mounts: list[tuple[str, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        mounts.append((point, fields[2]))
    return mounts


def network_filesystem(path: str | os.PathLike[str], mounts: str) -> tuple[str, str] | None:
    """The ``(filesystem type, mount point)`` holding ``path`` if it is a network filesystem.

    :param path: A database file (it need not exist yet) or directory, ideally absolute and
        with symlinks resolved.
    :param mounts: The text of a mounts table in ``/proc/mounts`` format.
    :returns: ``None`` when the filesystem is local or unknown.
    """
    target = os.path.normpath(os.path.abspath(path))
    best: tuple[str, str] | None = None
    for point, fstype in parse_mounts(mounts):
        point = os.path.normpath(point)
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        # The longest matching mount point is the one that holds the file (later lines win
        # ties: a filesystem mounted over another hides it).
        if inside and (best is None or len(point) >= len(best[1])):
            best = (fstype, point)
    if best is None or best[0].lower() not in NETWORK_FILESYSTEMS:
        return None
    return best


def _flag(name: str, value: str, url: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise StorageError(f"storage {url}: {name}={value!r} is not a boolean (use 1 or 0)")


def _number(name: str, value: str, url: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise StorageError(f"storage {url}: {name}={value!r} is not a number >= 0")
    return number


class SqliteStorage(SqlStorage):
    """Storage in a SQLite file: ``sqlite:///relative.db`` or ``sqlite:////absolute.db``.

    URL options (``?name=value``), each also a keyword argument (which wins):

    - ``retention_days``: how long finished runs are kept by :meth:`purge_expired`
      (default 90; ``0`` keeps them forever);
    - ``allow_network_fs=1``: open a database on a network filesystem anyway;
    - ``busy_timeout``: seconds a connection waits for the write lock (default 30).

    :param url: The storage URL.
    :param mounts_path: The mounts table read to detect network filesystems.
    :raises StorageError: For an in-memory database (``sqlite:///:memory:``, which a pool of
        connections cannot share: use ``memory://``) or a bad option.
    """

    #: ``BEGIN IMMEDIATE`` makes every write transaction the only writer from its start.
    single_writer = True
    counts_finished = True
    one_writer_at_a_time = True

    def __init__(
        self,
        url: str,
        *,
        retention_days: float | None = None,
        allow_network_fs: bool | None = None,
        busy_timeout: float | None = None,
        mounts_path: str = "/proc/mounts",
    ) -> None:
        masked = mask_url(url)
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise StorageError(f"storage {masked}: not a valid SQLite URL ({exc})") from exc
        if parsed.get_backend_name() != "sqlite":
            raise StorageError(f"storage {masked}: not a sqlite:/// URL")
        options = dict(parsed.query)
        unknown = sorted(set(options) - set(URL_OPTIONS))
        if unknown:
            raise StorageError(
                f"storage {masked}: unknown option(s) {', '.join(unknown)} "
                f"(known: {', '.join(URL_OPTIONS)})"
            )
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise StorageError(
                f"storage {masked}: an in-memory SQLite database cannot be shared by the "
                "connections cronhub opens; use memory:// for storage that is not kept, or "
                "sqlite:///cronhub.db for a file"
            )
        if retention_days is None and "retention_days" in options:
            retention_days = _number("retention_days", str(options["retention_days"]), masked)
        if allow_network_fs is None:
            allow_network_fs = _flag(
                "allow_network_fs", str(options.get("allow_network_fs", "0")), masked
            )
        if busy_timeout is None:
            busy_timeout = _number("busy_timeout", str(options.get("busy_timeout", 30)), masked)
        if retention_days is None:
            retention: timedelta | None = DEFAULT_RETENTION
        else:
            retention = timedelta(days=retention_days) if retention_days > 0 else None
        super().__init__(url, retention=retention)
        #: The database file, absolute.
        self.path = Path(database).absolute()
        #: Whether a database on a network filesystem is accepted.
        self.allow_network_fs = allow_network_fs
        #: Seconds a connection waits for the write lock before SQLite reports it busy.
        self.busy_timeout = busy_timeout
        self._mounts_path = mounts_path

    # -- opening ------------------------------------------------------------------------------
    def open(self) -> None:
        """Check the path and filesystem, enable WAL, then create or migrate the schema."""
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            needed = ".".join(map(str, MIN_SQLITE_VERSION))
            raise StorageError(
                f"storage {self.url}: SQLite {sqlite3.sqlite_version} is too old, cronhub needs "
                f"{needed} or newer (Python's sqlite3 module is linked against it)"
            )
        self._check_location()
        try:
            super().open()
        except StorageError as exc:
            raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc

    def _check_location(self) -> None:
        parent = self.path.parent
        if not parent.exists():
            raise StorageError(
                f"cannot open SQLite database {self.path}: directory {parent} does not exist"
            )
        if not parent.is_dir():
            raise StorageError(
                f"cannot open SQLite database {self.path}: {parent} is not a directory"
            )
        writable = self.path if self.path.exists() else parent
        if not os.access(writable, os.W_OK):
            raise StorageError(
                f"cannot open SQLite database {self.path}: {writable} is not writable"
            )
        if self.allow_network_fs:
            return
        try:
            mounts = Path(self._mounts_path).read_text()
        except OSError:
            return  # no /proc (macOS, BSD): nothing to check against
        found = network_filesystem(os.path.realpath(self.path), mounts)
        if found is not None:
            fstype, point = found
            raise StorageError(
                f"SQLite database {self.path} is on a network filesystem ({fstype} mounted at "
                f"{point}), where SQLite's file locks are unreliable and a slot could run twice. "
                "Put it on a local disk, use PostgreSQL to share storage between hosts, or add "
                "?allow_network_fs=1 to the URL if this filesystem's locking is known to work"
            )

    def _create_engine(self) -> Engine:
        engine = sa.create_engine(
            sa.URL.create("sqlite", database=str(self.path)),
            connect_args={"timeout": self.busy_timeout, "check_same_thread": False},
            pool_size=8,
            max_overflow=32,
            pool_timeout=60,
        )
        busy_ms = int(self.busy_timeout * 1000)

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
            # SQLAlchemy's recipe for pysqlite ("Serializable isolation / Savepoints /
            # Transactional DDL"): stop the driver from issuing BEGIN itself, and emit our
            # own BEGIN (IMMEDIATE for writes) in the "begin" event below.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

        try:
            self._enable_wal(engine)
        except BaseException:
            engine.dispose()
            raise
        return engine

    def _enable_wal(self, engine: Engine) -> None:
        """Switch the file to WAL (persistent); retried while another process holds a lock."""
        deadline = time.monotonic() + self.retry_deadline
        while True:
            try:
                raw = engine.raw_connection()
                try:
                    cursor = raw.cursor()
                    mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    cursor.close()
                finally:
                    raw.close()
            except sa.exc.DBAPIError as exc:
                if self._is_retryable(exc) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise StorageError(f"storage {self.url}: {self._describe_error(exc)}") from exc
            except sqlite3.Error as exc:
                if _RETRYABLE.search(str(exc)) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise StorageError(f"storage {self.url}: {type(exc).__name__}: {exc}") from exc
            if str(mode).lower() != "wal":
                log.warning(
                    "%s: journal_mode is %s, not wal (filesystem without shm?)", self.url, mode
                )
            return

    def pragma(self, name: str) -> Any:
        """The value of ``PRAGMA name`` on a pooled connection (``journal_mode``, ...)."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        return self._run(lambda c: c.exec_driver_sql(f"PRAGMA {name}").scalar(), write=False)

    # -- what SqlStorage asks of a dialect ------------------------------------------------------
    def _write_options(self) -> dict[str, Any]:
        # Take the write lock before the first read: the overlap check and the insert then see
        # one state, and a deferred transaction never has to upgrade its lock (which SQLite
        # refuses with SQLITE_BUSY at once, without waiting).
        return {"sqlite_begin": "BEGIN IMMEDIATE"}

    def _is_retryable(self, exc: sa.exc.DBAPIError) -> bool:
        orig = exc.orig
        return isinstance(orig, sqlite3.OperationalError) and bool(_RETRYABLE.search(str(orig)))

    def _insert_runs(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int | None]:
        """Insert a claim batch with one ``executemany``; ids are read back by range.

        Safe without ``ON CONFLICT``: ``BEGIN IMMEDIATE`` holds the only write lock and the
        batch's keys were checked in this same transaction. For the same reason the rows get
        consecutive ids after the highest ever used (``AUTOINCREMENT``), in order; SQLAlchemy
        would otherwise insert row by row to return ids in parameter order.
        """
        if len(rows) <= 1:
            return [conn.execute(_INSERT_RETURNING, row).scalar_one() for row in rows]
        before = conn.exec_driver_sql(_LAST_ID).scalar() or 0
        keys = tuple(rows[0])
        if all(tuple(row) == keys for row in rows):
            batch = _INSERT_BATCHES.get(keys)
            if batch is None:
                batch = _INSERT_BATCHES[keys] = _Batch.insert(runs, keys)
            batch.run(conn, rows)
        else:
            conn.execute(_INSERT, rows)
        count, first, last = conn.exec_driver_sql(_IDS_AFTER, (before,)).one()
        if count != len(rows) or last - first != len(rows) - 1:
            raise StorageError(
                f"storage {self.url}: claim batch ids are not consecutive:"
                f" {count} rows from {first} to {last} for {len(rows)} inserted"
            )
        return list(range(first, last + 1))

    def _existing_rows(
        self, conn: Connection, requests: Sequence[ClaimRequest]
    ) -> dict[tuple[Any, ...], RowMapping]:
        """The rows already holding the batch's slot keys: one query with the keys as JSON.

        Each key is one lookup of the unique key index; the usual answer is none, and the few
        rows found are read by id.
        """
        if not _HAS_JSON:
            return super()._existing_rows(conn, requests)
        keys = slot_keys(requests)
        if not keys:
            return {}
        slots = bound_values(conn, runs.c.scheduled_for, [slot for _, _, slot, _ in keys])
        payload = [
            (job, schedule_id, slot, attempt)
            for (job, schedule_id, _, attempt), slot in zip(keys, slots, strict=True)
        ]
        ids = [row[0] for row in conn.exec_driver_sql(_EXISTING_KEYS, (json.dumps(payload),))]
        return self._rows_by_ids(conn, ids) if ids else {}

    def _job_rows(
        self, conn: Connection, names: Sequence[str]
    ) -> dict[str, tuple[bool, datetime | None]]:
        """``(paused, high_water)`` of the jobs among ``names`` that have a state row: one
        statement per chunk of names, as JSON."""
        if not _HAS_JSON:
            return super()._job_rows(conn, names)
        rows = [
            row for chunk in _json_chunks(names) for row in _json_rows(conn, _JOB_ROWS, (chunk,))
        ]
        marks = result_values(conn, jobs.c.high_water, [mark for _, _, mark in rows])
        return {
            job: (bool(paused), mark) for (job, paused, _), mark in zip(rows, marks, strict=True)
        }

    def _active_count_rows(
        self, conn: Connection, names: Sequence[str]
    ) -> Iterator[tuple[str, str, int]]:
        """Queued and running runs per job and status: one statement per chunk of names, as
        JSON."""
        if not _HAS_JSON:
            yield from super()._active_count_rows(conn, names)
            return
        for chunk in _json_chunks(names):
            yield from map(tuple, _json_rows(conn, _ACTIVE_COUNTS, (chunk,)))  # type: ignore[misc]

    def previous_outcomes(
        self, run_ids: Sequence[int], *, statuses: Iterable[RunStatus]
    ) -> dict[int, RunStatus | None]:
        """See :meth:`cronhub.sql_history.SqlHistory.previous_outcomes`: one statement with
        the ids as JSON."""
        if not _HAS_JSON:
            return super().previous_outcomes(run_ids, statuses=statuses)
        wanted = json.dumps([RunStatus(s).value for s in statuses])
        ids = json.dumps(list(dict.fromkeys(run_ids)))
        rows = self._run(lambda c: _json_rows(c, _PREVIOUS_OUTCOMES, (wanted, ids)), write=False)
        return {
            run_id: as_status(status) if status is not None else None for run_id, status in rows
        }

    def _write_marks(
        self, conn: Connection, inserts: list[dict[str, Any]], updates: list[dict[str, Any]]
    ) -> None:
        """Job rows and high-water marks, a statement for each (:mod:`.batches`)."""
        if inserts:
            _INSERT_JOBS.run(conn, inserts)
        if updates:
            _RAISE_MARKS.run(conn, updates)

    def _update_finished(self, conn: Connection, params: list[dict[str, Any]]) -> int:
        """A batch of outcomes in one statement (see :mod:`.batches`)."""
        return _FINISH.run(conn, params)

    def _last_run_ids(self, conn: Connection, names: Sequence[str]) -> dict[str, int]:
        """One query per chunk of names: ``max(id)`` per name, each an index lookup on
        ``(job, id)``."""
        if not _HAS_JSON:
            return super()._last_run_ids(conn, names)
        found: dict[str, int] = {}
        for chunk in _json_chunks(names):
            for name, run_id in _json_rows(conn, _LAST_RUN_IDS, (chunk,)):
                if run_id is not None:
                    found[name] = run_id
        return found
