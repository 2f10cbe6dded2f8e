"""Claims and run ownership of :class:`cronhub.sql.SqlStorage`: the exactly-once core.

A mixin: ``claim`` (insert-if-absent plus overlap, in one transaction), ``take_queued``,
``heartbeat``, ``finish``, ``cancel``, ``reap`` and ``release``, every write fenced by
``status`` and ``instance`` in its ``WHERE`` clause so that it is also correct where writers
are not fully serialised (PostgreSQL, with :meth:`~cronhub.sql.SqlStorage._lock_jobs`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from cronhub.runs import (
    Alert,
    ClaimOutcome,
    ClaimRequest,
    ClaimResult,
    Completion,
    Overlap,
    Run,
    RunStatus,
    Trigger,
)
from cronhub.sql_schedules import ScheduleRow, schedule_stopped
from cronhub.sql_schema import (
    ACTIVE_STATUSES,
    as_overlap,
    as_status,
    as_trigger,
    chunks,
    claim_values,
    duration_ms,
    jobs,
    row_to_run,
    runs,
    utc,
    values_to_run,
)
from cronhub.storage import job_set

if TYPE_CHECKING:
    from cronhub.storage import CrashPolicy

T = TypeVar("T")

#: The columns an owner writes when it ends a run (the fenced update of ``finish``).
FINISH_COLUMNS = (
    "status",
    "finished_at",
    "duration_ms",
    "lease_expires_at",
    "error_type",
    "error_message",
    "traceback",
    "log",
    "dead_letter",
)
#: ``finish`` for many rows in one ``executemany`` (see :attr:`SqlRuns.single_writer`).
_FINISH_MANY = (
    sa.update(runs)
    .where(
        runs.c.id == sa.bindparam("b_id"),
        runs.c.instance == sa.bindparam("b_instance"),
        runs.c.status == RunStatus.RUNNING.value,
    )
    .values(
        {
            **{c: sa.bindparam(f"b_{c}", type_=runs.c[c].type) for c in FINISH_COLUMNS},
            # When the run really started (it was recorded as started when it was claimed).
            "started_at": sa.func.coalesce(
                sa.bindparam("b_started_at", type_=runs.c.started_at.type), runs.c.started_at
            ),
        }
    )
)


def _finish_params(
    run_id: int, completion: Completion, instance: str, duration: int | None
) -> dict[str, Any]:
    """The bind parameters of :data:`_FINISH_MANY` for one run."""
    started_at = completion.started_at
    return {
        "b_id": run_id,
        "b_started_at": None if started_at is None else utc(started_at),
        "b_instance": instance,
        "b_status": str(completion.status),  # the value (faster than .value)
        "b_finished_at": completion.finished_at.astimezone(UTC),
        "b_duration_ms": duration,
        "b_lease_expires_at": None,
        "b_error_type": completion.error_type,
        "b_error_message": completion.error_message,
        "b_traceback": completion.traceback,
        "b_log": completion.log,
        "b_dead_letter": completion.dead_letter,
    }


# The members compared with for every claimed run (module-level: see cronhub.runs).
_RUNNING, _QUEUED, _SKIPPED = RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.SKIPPED
_ALLOW, _REPLACE, _QUEUE = Overlap.ALLOW, Overlap.REPLACE, Overlap.QUEUE
_CLAIMED, _RECORDED = ClaimOutcome.CLAIMED, ClaimOutcome.RECORDED
_OWN_SCHEDULE = (Trigger.SCHEDULE, Trigger.CATCH_UP)


def decide_status(request: ClaimRequest, running: int, queued: int) -> RunStatus:
    """The status a claimed row gets, given the job's ``running`` and ``queued`` run counts.

    Overlap is judged against *running* runs: a queued retry waiting for its backoff does not
    make a new slot skip. ``queue`` lets at most one run wait; a further one is skipped.
    """
    status = as_status(request.status)
    if status is not _RUNNING:
        if status not in (_QUEUED, _SKIPPED, RunStatus.MISSED):
            raise ValueError(
                f"job {request.job!r}: a claim can insert running, queued, skipped or missed "
                f"rows, not {status.value}"
            )
        return status
    overlap = as_overlap(request.overlap)
    if running == 0 or overlap is _ALLOW or overlap is _REPLACE:
        return _RUNNING
    if overlap is _QUEUE and queued == 0:
        return _QUEUED
    return _SKIPPED


#: The statuses a claim may ask for (see :func:`decide_status`).
_CLAIMABLE = frozenset({RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.SKIPPED, RunStatus.MISSED})


def row_slot_key(row: RowMapping) -> tuple[Any, ...]:
    """The unique key of a ``cronhub_runs`` row, as :func:`slot_key` spells it."""
    return (row["job"], row["schedule_id"], row["scheduled_for"], row["attempt"])


def slot_keys(requests: Iterable[ClaimRequest]) -> list[tuple[Any, ...]]:
    """The distinct unique keys of ``requests``, in order (manual runs have none)."""
    return list(dict.fromkeys(k for k in map(slot_key, requests) if k is not None))


def _rows_of(conn: Connection, ids: Sequence[int]) -> Iterator[RowMapping]:
    """The whole rows of runs ``ids``, a query per 1,000."""
    for chunk in chunks(list(ids)):
        yield from conn.execute(sa.select(*runs.c).where(runs.c.id.in_(chunk))).mappings()


def slot_key(request: ClaimRequest) -> tuple[Any, ...] | None:
    """The unique key of a request's row (``None`` for a manual run: never deduplicated)."""
    if request.scheduled_for is None:
        return None
    slot = request.scheduled_for.astimezone(UTC)
    return (request.job, request.schedule_id, slot, request.attempt)


# Statements of the claim path, built once: SQLAlchemy then only looks them up in its
# compiled cache, which matters at thousands of claims per second.
_NAMES = sa.bindparam("names", expanding=True)
_JOB_ROWS = sa.select(jobs.c.job, jobs.c.paused, jobs.c.high_water).where(jobs.c.job.in_(_NAMES))
_ACTIVE_COUNTS = (
    sa.select(runs.c.job, runs.c.status, sa.func.count())
    .where(runs.c.status.in_(ACTIVE_STATUSES), runs.c.job.in_(_NAMES))
    .group_by(runs.c.job, runs.c.status)
)
_RUNNING_IDS = (
    sa.select(runs.c.job, runs.c.id)
    .where(runs.c.status == RunStatus.RUNNING.value, runs.c.job.in_(_NAMES))
    .order_by(runs.c.id)
)
_INSERT_JOB = sa.insert(jobs)
#: Whether any run is queued: one probe of the ``(status, id)`` index.
_ANY_QUEUED = sa.select(runs.c.id).where(runs.c.status == RunStatus.QUEUED.value).limit(1)
_RAISE_MARK = (
    sa.update(jobs)
    .where(jobs.c.job == sa.bindparam("b_job"))
    .values(high_water=sa.bindparam("b_mark"))
)
_KEYS_PER_QUERY = 100


@functools.lru_cache(maxsize=_KEYS_PER_QUERY)
def _key_lookup(size: int) -> sa.Select[Any]:
    """``SELECT`` of the rows holding ``size`` slot keys (parameters ``j0 s0 t0 a0 j1 ...``).

    An OR of exact key matches: SQLite and PostgreSQL answer it with one unique-index search
    per key (a row-value ``IN (VALUES ...)`` makes SQLite scan the whole index). Built once
    per size, so that SQLAlchemy's compiled cache serves every later batch.
    """
    terms = [
        sa.and_(
            runs.c.job == sa.bindparam(f"j{n}"),
            runs.c.schedule_id == sa.bindparam(f"s{n}"),
            runs.c.scheduled_for == sa.bindparam(f"t{n}"),
            runs.c.attempt == sa.bindparam(f"a{n}"),
        )
        for n in range(size)
    ]
    return sa.select(*runs.c).where(sa.or_(*terms))


def _existing_claim(request: ClaimRequest, row: RowMapping, instance: str) -> ClaimResult:
    """``TAKEN``, or ``CLAIMED`` again when the slot's row runs under ``instance``.

    The second case is a retried claim whose first commit succeeded but whose answer was lost
    (a timeout, a dropped connection): the engine recognises the run it started.
    """
    if row["status"] == RunStatus.RUNNING.value and row["instance"] == instance:
        return ClaimResult(request, ClaimOutcome.CLAIMED, row_to_run(row))
    return ClaimResult(request, ClaimOutcome.TAKEN)


def high_water_marks(requests: Iterable[ClaimRequest]) -> dict[str, datetime]:
    """Per job, the newest slot of its own schedule among ``requests`` (``Storage.claim``).

    Only requests with ``schedule_id == ""`` and a ``schedule`` or ``catch_up`` trigger count.
    """
    marks: dict[str, datetime] = {}
    for request in requests:
        if request.scheduled_for is None or request.schedule_id != "":
            continue
        if as_trigger(request.trigger) not in _OWN_SCHEDULE:
            continue
        slot = request.scheduled_for.astimezone(UTC)
        if request.job not in marks or slot > marks[request.job]:
            marks[request.job] = slot
    return marks


class SqlRuns:
    """Claims, leases and the end of runs, for :class:`cronhub.sql.SqlStorage`."""

    #: ``True`` where a write transaction excludes every other writer from its start (SQLite's
    #: ``BEGIN IMMEDIATE``): rows it reads cannot change before it writes them, so batches
    #: skip the per-row fence check (PostgreSQL keeps it: another instance's reaper may
    #: update a row between this transaction's read and its update).
    single_writer: bool = False
    #: ``True`` where :meth:`_update_finished` returns how many rows it updated: a batch of
    #: outcomes that all carry their duration is then written without reading its rows first
    #: (and read only in the rare batch where not every row was still running here).
    counts_finished: bool = False

    if TYPE_CHECKING:  # provided by SqlStorage and SqlHistory

        def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T: ...

        def _clock(self, conn: Connection, now: datetime) -> datetime: ...

        def _lock_jobs(self, conn: Connection, names: Sequence[str]) -> None: ...

        def _insert_if_absent(self, conn: Connection, values: dict[str, Any]) -> int | None: ...

        def _insert_runs(
            self, conn: Connection, rows: list[dict[str, Any]]
        ) -> list[int | None]: ...

        def _add_alerts(self, conn: Connection, alerts: Sequence[Alert], now: datetime) -> None: ...

        def _schedule_rows(
            self, conn: Connection, requests: Sequence[ClaimRequest]
        ) -> dict[str, ScheduleRow]: ...

        def _advance_schedule_marks(
            self,
            conn: Connection,
            requests: Sequence[ClaimRequest],
            rows: dict[str, ScheduleRow],
        ) -> None: ...

    # -- claims -------------------------------------------------------------
    def claim(
        self,
        requests: Sequence[ClaimRequest],
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
    ) -> list[ClaimResult]:
        """Claim slots in one transaction; see :meth:`cronhub.storage.Storage.claim`."""
        requests = list(requests)
        if not requests:
            return []
        for request in requests:  # refuse a bad request before writing anything
            if request.status not in _CLAIMABLE:
                decide_status(request, 0, 0)  # raises, naming the job and the status
        return self._run(lambda c: self._claim(c, requests, instance, now, lease_ttl), write=True)

    def _claim(
        self,
        conn: Connection,
        requests: list[ClaimRequest],
        instance: str,
        now: datetime,
        lease_ttl: float,
    ) -> list[ClaimResult]:
        # Read what the decisions need in a few queries, decide in Python (in request order,
        # counting the batch's earlier rows), insert the new rows in one go, then cancel what
        # ``replace`` requests replace (the new run ids name the replacement).
        names = sorted({r.job for r in requests})
        self._lock_jobs(conn, names)
        # The clock is read once the job locks are held: a claim that waited for another
        # instance's transaction starts its runs (and their leases) when it really does.
        now = self._clock(conn, now)
        lease = now + timedelta(seconds=lease_ttl)
        job_rows = self._job_rows(conn, names)
        paused = {job for job, (is_paused, _) in job_rows.items() if is_paused}
        # Runtime schedules read in this transaction: a slot of one paused or removed before
        # it committed is not claimed (answered PAUSED, like a paused job's).
        schedule_rows = self._schedule_rows(conn, requests)
        stopped = {i for i, r in enumerate(requests) if schedule_stopped(r, schedule_rows)}
        replacing = {r.job for r in requests if r.overlap == _REPLACE}
        running, queued = self._active_counts(conn, names, replacing)
        live = [
            r
            for i, r in enumerate(requests)
            if (r.ignore_pause or r.job not in paused) and i not in stopped
        ]
        existing = self._existing_rows(conn, live)
        results: list[ClaimResult | None] = []
        new_rows: dict[int, dict[str, Any]] = {}  # index in results -> row to insert
        replaces: dict[int, list[int]] = {}  # index -> running ids (or -index-1 of new rows)
        repeats: dict[int, int] = {}  # index -> index of the same key earlier in the batch
        first_of_key: dict[tuple[Any, ...], int] = {}
        for index, request in enumerate(requests):
            key = slot_key(request)
            if (request.job in paused and not request.ignore_pause) or index in stopped:
                results.append(ClaimResult(request, ClaimOutcome.PAUSED))
            elif key is not None and key in existing:
                results.append(_existing_claim(request, existing[key], instance))
            elif key is not None and key in first_of_key:
                results.append(None)
                repeats[index] = first_of_key[key]
            else:
                status = decide_status(request, len(running[request.job]), queued[request.job])
                if status is _RUNNING:
                    if request.overlap == _REPLACE:
                        replaces[index] = running[request.job]
                        running[request.job] = []
                    running[request.job] = [*running[request.job], -index - 1]
                elif status is _QUEUED:
                    queued[request.job] += 1
                if key is not None:
                    first_of_key[key] = index
                new_rows[index] = claim_values(request, status, instance, now, lease)
                results.append(None)
        ids = dict(zip(new_rows, self._insert_runs(conn, list(new_rows.values())), strict=True))
        for index, values in new_rows.items():
            request, run_id = requests[index], ids[index]
            if run_id is None:  # lost a race with a writer outside the job locks
                results[index] = ClaimResult(request, ClaimOutcome.TAKEN)
                continue
            run = values_to_run(run_id, values)
            outcome = _CLAIMED if run.status is _RUNNING else _RECORDED
            results[index] = ClaimResult(request, outcome, run)
            if replaces.get(index):
                # Negative entries stand for rows of this batch: -(their index) - 1.
                old_ids = [i if i > 0 else ids.get(-i - 1) or 0 for i in replaces[index]]
                reason = f"replaced by run {run_id}"
                for old in self._end_runs(conn, old_ids, RunStatus.CANCELLED, now, reason=reason):
                    earlier = next((i for i, r in ids.items() if r == old.id), None)
                    if earlier is not None:  # claimed earlier in this batch: say what became of it
                        replaced = results[earlier]
                        assert replaced is not None
                        results[earlier] = ClaimResult(replaced.request, ClaimOutcome.RECORDED, old)
        for index, first in repeats.items():
            # The same slot twice in one batch: answered like a retried claim of that row.
            earlier = results[first]
            assert earlier is not None
            again = earlier.outcome is ClaimOutcome.CLAIMED
            results[index] = ClaimResult(
                requests[index],
                ClaimOutcome.CLAIMED if again else ClaimOutcome.TAKEN,
                earlier.run if again else None,
            )
        self._advance_marks(conn, high_water_marks(requests), job_rows)
        self._advance_schedule_marks(conn, requests, schedule_rows)
        answered = [result for result in results if result is not None]
        assert len(answered) == len(requests)
        return answered

    def _active_counts(
        self, conn: Connection, names: Sequence[str], replacing: set[str]
    ) -> tuple[dict[str, list[int]], dict[str, int]]:
        """Per job: the running runs (their ids for ``replace`` jobs) and the queued count."""
        running: dict[str, list[int]] = {name: [] for name in names}
        queued: dict[str, int] = dict.fromkeys(names, 0)
        for job, status, count in self._active_count_rows(conn, names):
            if status == RunStatus.QUEUED.value:
                queued[job] = count
            elif job not in replacing:
                running[job] = [0] * count  # only the number matters
        for chunk in chunks(sorted(replacing)):
            for job, run_id in conn.execute(_RUNNING_IDS, {"names": chunk}):
                running[job].append(run_id)
        return running, queued

    def _active_count_rows(
        self, conn: Connection, names: Sequence[str]
    ) -> Iterator[tuple[str, str, int]]:
        """``(job, status, count)`` of the queued and running runs of the jobs among ``names``
        (a backend may count them its own faster way)."""
        for chunk in chunks(names):
            yield from conn.execute(_ACTIVE_COUNTS, {"names": chunk})

    def _existing_rows(
        self, conn: Connection, requests: Sequence[ClaimRequest]
    ) -> dict[tuple[Any, ...], RowMapping]:
        """The rows that already hold the slot keys of ``requests``, by key.

        The keys are ``(job, schedule_id, scheduled_for in UTC, attempt)``; a backend may find
        them its own faster way (:meth:`_rows_by_ids` reads the rows it finds).
        """
        keys = slot_keys(requests)
        found: dict[tuple[Any, ...], RowMapping] = {}
        for chunk in chunks(keys, _KEYS_PER_QUERY):
            params: dict[str, Any] = {}
            for n, (job, schedule_id, slot, attempt) in enumerate(chunk):
                params.update({f"j{n}": job, f"s{n}": schedule_id, f"t{n}": slot, f"a{n}": attempt})
            for row in conn.execute(_key_lookup(len(chunk)), params).mappings():
                found[row_slot_key(row)] = row
        return found

    def _rows_by_ids(
        self, conn: Connection, ids: Sequence[int]
    ) -> dict[tuple[Any, ...], RowMapping]:
        """The rows of runs ``ids``, by slot key (see :meth:`_existing_rows`)."""
        return {row_slot_key(row): row for row in _rows_of(conn, ids)}

    def _job_rows(
        self, conn: Connection, names: Sequence[str]
    ) -> dict[str, tuple[bool, datetime | None]]:
        """``(paused, high_water)`` of the jobs among ``names`` that have a state row (a
        backend may read them its own faster way)."""
        found: dict[str, tuple[bool, datetime | None]] = {}
        for chunk in chunks(names):
            for job, paused, high_water in conn.execute(_JOB_ROWS, {"names": chunk}):
                found[job] = (bool(paused), high_water)
        return found

    def _advance_marks(
        self,
        conn: Connection,
        marks: dict[str, datetime],
        job_rows: dict[str, tuple[bool, datetime | None]],
    ) -> None:
        """Move high-water marks forward (never back); ``job_rows`` is the current state."""
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for job, mark in marks.items():
            if job not in job_rows:
                inserts.append({"job": job, "paused": False, "high_water": mark})
            elif job_rows[job][1] is None or mark > job_rows[job][1]:  # type: ignore[operator]
                updates.append({"b_job": job, "b_mark": mark})
        if inserts or updates:
            self._write_marks(conn, inserts, updates)

    def _write_marks(
        self, conn: Connection, inserts: list[dict[str, Any]], updates: list[dict[str, Any]]
    ) -> None:
        """Insert job rows (``job``, ``paused``, ``high_water``) and raise marks (``b_job``,
        ``b_mark``): once per claim batch, a row per job (a backend may do it its faster way).
        """
        if inserts:
            conn.execute(_INSERT_JOB, inserts)
        if updates:
            conn.execute(_RAISE_MARK, updates)

    def _end_runs(
        self,
        conn: Connection,
        run_ids: Iterable[int],
        status: RunStatus,
        now: datetime,
        *,
        reason: str | None = None,
        from_statuses: tuple[str, ...] = ACTIVE_STATUSES,
        instance: str | None = None,
    ) -> list[Run]:
        """End active runs with a terminal ``status``; return those that were still active."""
        ended: list[Run] = []
        for run_id in run_ids:
            where = [runs.c.id == run_id, runs.c.status.in_(from_statuses)]
            if instance is not None:
                where.append(runs.c.instance == instance)
            started = conn.execute(sa.select(runs.c.started_at).where(*where)).first()
            if started is None:
                continue
            values: dict[str, Any] = {
                "status": status.value,
                "finished_at": now,
                "lease_expires_at": None,
                "duration_ms": duration_ms(started[0], now),
            }
            if reason is not None:
                values["error_message"] = reason
            row = conn.execute(sa.update(runs).where(*where).values(values).returning(*runs.c))
            updated = row.mappings().first()
            if updated is not None:
                ended.append(row_to_run(updated))
        return ended

    def take_queued(
        self,
        *,
        instance: str,
        now: datetime,
        lease_ttl: float,
        jobs: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Start due queued runs; see :meth:`cronhub.storage.Storage.take_queued`.

        Most calls find no queued run at all (the engine asks after runs end, in case one
        waits): a read without the write lock answers those, so they never queue behind the
        claims and outcomes being written. A run queued just after that read is taken at the
        next call, as it would have been had this one come a moment earlier.
        """
        if not self._run(lambda c: c.execute(_ANY_QUEUED).first() is not None, write=False):
            return []
        wanted = job_set(jobs)
        return self._run(
            lambda c: self._take_queued(c, instance, now, lease_ttl, wanted, limit), write=True
        )

    def _take_queued(
        self,
        conn: Connection,
        instance: str,
        now: datetime,
        lease_ttl: float,
        wanted: AbstractSet[str] | None,
        limit: int,
    ) -> list[Run]:
        now = self._clock(conn, now)
        lease = now + timedelta(seconds=lease_ttl)
        taken: list[Run] = []
        after = 0
        # job -> may one of its queued runs start (False once one started in this call)
        free: dict[str, bool] = {}
        paused: dict[str, bool] = {}
        due = sa.or_(runs.c.not_before.is_(None), runs.c.not_before <= now)
        while len(taken) < limit:
            # Queued rows are few (at most one per queue job, plus retries and manual runs);
            # read them in id order, in pages, and filter by job here rather than with a
            # 10,000-name IN list.
            query = (
                sa.select(*runs.c)
                .where(runs.c.status == RunStatus.QUEUED.value, due, runs.c.id > after)
                .order_by(runs.c.id)
                .limit(500)
            )
            page = list(conn.execute(query).mappings())
            if not page:
                break
            after = page[-1]["id"]
            rows = [row for row in page if wanted is None or row["job"] in wanted]
            new = sorted({row["job"] for row in rows} - free.keys())
            self._lock_jobs(conn, new)
            busy = self._running_jobs(conn, new)
            job_rows = self._job_rows(conn, new)
            for name in new:
                free[name] = name not in busy
                paused[name] = job_rows.get(name, (False, None))[0]
            for row in rows:
                job, manual = row["job"], row["trigger"] == Trigger.MANUAL.value
                if not free[job] or (paused[job] and not manual):
                    continue
                update = (
                    sa.update(runs)
                    .where(runs.c.id == row["id"], runs.c.status == RunStatus.QUEUED.value)
                    .values(
                        status=RunStatus.RUNNING.value,
                        instance=instance,
                        started_at=now,
                        lease_expires_at=lease,
                    )
                    .returning(*runs.c)
                )
                started = conn.execute(update).mappings().first()
                if started is None:
                    continue
                taken.append(row_to_run(started))
                free[job] = False  # at most one per job per call: it now has a running run
                if len(taken) >= limit:
                    break
        return taken

    def _running_jobs(self, conn: Connection, names: Sequence[str]) -> set[str]:
        busy: set[str] = set()
        for chunk in chunks(names):
            query = sa.select(runs.c.job).where(
                runs.c.status == RunStatus.RUNNING.value, runs.c.job.in_(chunk)
            )
            busy.update(conn.execute(query.distinct()).scalars())
        return busy

    def heartbeat(
        self, run_ids: Iterable[int], *, instance: str, now: datetime, lease_ttl: float
    ) -> set[int]:
        """Extend owned leases (fenced); see :meth:`cronhub.storage.Storage.heartbeat`."""
        ids = sorted(set(run_ids))
        if not ids:
            return set()

        def renew(conn: Connection) -> set[int]:
            lease = self._clock(conn, now) + timedelta(seconds=lease_ttl)
            renewed: set[int] = set()
            for chunk in chunks(ids):
                update = (
                    sa.update(runs)
                    .where(
                        runs.c.id.in_(chunk),
                        runs.c.instance == instance,
                        runs.c.status == RunStatus.RUNNING.value,
                    )
                    .values(lease_expires_at=lease)
                    .returning(runs.c.id)
                )
                renewed.update(conn.execute(update).scalars())
            return renewed

        return self._run(renew, write=True)

    def finish(self, run_id: int, completion: Completion, *, instance: str) -> bool:
        """End an owned run and apply retry/dead letter/alerts in the same transaction."""
        return self.finish_many([(run_id, completion)], instance=instance)[0]

    def finish_many(
        self, completions: Sequence[tuple[int, Completion]], *, instance: str
    ) -> list[bool]:
        """:meth:`finish` for several runs in one transaction; one answer per run, in order."""
        completions = list(completions)
        for run_id, completion in completions:
            if not completion.status.terminal:
                raise ValueError(
                    f"run {run_id}: finish needs a terminal status, not {completion.status.value}"
                )
        if not completions:
            return []
        if self.single_writer and len(completions) > 1:
            return self._run(lambda c: self._finish_batch(c, completions, instance), write=True)
        return self._run(
            lambda c: [self._finish(c, i, done, instance) for i, done in completions], write=True
        )

    def _finish_batch(
        self, conn: Connection, completions: Sequence[tuple[int, Completion]], instance: str
    ) -> list[bool]:
        """:meth:`_finish` for a batch: one read of the fenced rows, one ``executemany``.

        Only where this transaction is the only writer (:attr:`single_writer`): the rows read
        at its start cannot change before its update, so every row read is a row updated.
        """
        ids = list(dict.fromkeys(run_id for run_id, _ in completions))
        if (
            self.counts_finished
            and len(ids) == len(completions)
            and all(c.duration_ms is not None for _, c in completions)
        ):
            # Update first; the fence (this instance's, still running) answers for each row.
            # When every row was still ours, that is the batch's answer; otherwise undo and
            # take the path below, which reads the rows to answer each run.
            savepoint = conn.begin_nested()
            params = [_finish_params(i, c, instance, c.duration_ms) for i, c in completions]
            if self._update_finished(conn, params) == len(params):
                savepoint.commit()
                self._follow_ups(conn, completions)
                return [True] * len(completions)
            savepoint.rollback()
        # Only what the update needs (the start of each fenced row); whole rows are read
        # for the few outcomes that queue a retry or raise an alert.
        rows: dict[int, datetime | None] = {}
        for chunk in chunks(ids):
            select = sa.select(runs.c.id, runs.c.started_at).where(
                runs.c.id.in_(chunk),
                runs.c.instance == instance,
                runs.c.status == RunStatus.RUNNING.value,
            )
            rows.update((run_id, started) for run_id, started in conn.execute(select))
        answers: list[bool] = []
        params: list[dict[str, Any]] = []
        follow: list[tuple[int, Completion, datetime]] = []
        for run_id, completion in completions:
            owned = run_id in rows
            answers.append(owned)
            if not owned:
                continue
            row_started = rows.pop(run_id)  # popped: a run listed twice is ended once
            duration = completion.duration_ms
            if duration is None:
                duration = duration_ms(
                    completion.started_at or row_started, completion.finished_at.astimezone(UTC)
                )
            params.append(_finish_params(run_id, completion, instance, duration))
            follow.append((run_id, completion))
        if params:
            self._update_finished(conn, params)
        self._follow_ups(conn, follow)
        return answers

    def _follow_ups(self, conn: Connection, finished: Sequence[tuple[int, Completion]]) -> None:
        """The retries and alerts of runs just finished (most outcomes have neither)."""
        follow = [(i, c) for i, c in finished if c.retry_at is not None or c.alerts]
        if not follow:
            return
        full = {row["id"]: row for row in _rows_of(conn, [run_id for run_id, _ in follow])}
        for run_id, completion in follow:
            finished_at = completion.finished_at.astimezone(UTC)
            self._follow_up(conn, full[run_id], completion, now=finished_at)

    def _update_finished(self, conn: Connection, params: list[dict[str, Any]]) -> int | None:
        """Run :data:`_FINISH_MANY` for ``params`` (a backend may run it its own faster way).

        Returns the number of rows updated where the backend knows it (see
        :attr:`counts_finished`).
        """
        conn.execute(_FINISH_MANY, params)
        return None

    def _finish(self, conn: Connection, run_id: int, completion: Completion, instance: str) -> bool:
        fence = [
            runs.c.id == run_id,
            runs.c.instance == instance,
            runs.c.status == RunStatus.RUNNING.value,
        ]
        row = conn.execute(sa.select(*runs.c).where(*fence)).mappings().first()
        if row is None:
            return False
        finished_at = completion.finished_at.astimezone(UTC)
        duration = completion.duration_ms
        if duration is None:
            duration = duration_ms(completion.started_at or row["started_at"], finished_at)
        values = {
            "status": completion.status.value,
            "finished_at": finished_at,
            "duration_ms": duration,
            "lease_expires_at": None,
            "error_type": completion.error_type,
            "error_message": completion.error_message,
            "traceback": completion.traceback,
            "log": completion.log,
            "dead_letter": completion.dead_letter,
        }
        if completion.started_at is not None:
            values["started_at"] = utc(completion.started_at)
        if conn.execute(sa.update(runs).where(*fence).values(values)).rowcount != 1:
            return False
        self._follow_up(conn, row, completion, now=finished_at)
        return True

    def _follow_up(
        self, conn: Connection, row: RowMapping, completion: Completion, *, now: datetime
    ) -> None:
        """Queue the retry and write the alerts that ``completion`` asks for."""
        if completion.retry_at is not None:
            retry = {
                **{c.name: row[c.name] for c in runs.c if c.name != "id"},
                "attempt": row["attempt"] + 1,
                "trigger": Trigger.RETRY.value,
                "status": RunStatus.QUEUED.value,
                "instance": None,
                "created_at": now,
                "not_before": utc(completion.retry_at),
                "started_at": None,
                "finished_at": None,
                "duration_ms": None,
                "lease_expires_at": None,
                "error_type": None,
                "error_message": None,
                "traceback": None,
                "log": "",
                "dead_letter": False,
            }
            self._insert_if_absent(conn, retry)
        if completion.alerts:
            self._add_alerts(conn, completion.alerts, now)

    def cancel(self, run_id: int, *, now: datetime, reason: str = "cancelled") -> Run | None:
        """Cancel a queued or running run; ``None`` when unknown or already terminal."""

        def stop(conn: Connection) -> Run | None:
            ended = self._end_runs(
                conn, [run_id], RunStatus.CANCELLED, self._clock(conn, now), reason=reason
            )
            return ended[0] if ended else None

        return self._run(stop, write=True)

    def reap(self, *, now: datetime, policy: CrashPolicy, limit: int = 100) -> list[Run]:
        """Mark runs with expired leases ``crashed`` and apply ``policy``, atomically per run."""

        def crash(conn: Connection) -> list[Run]:
            current = self._clock(conn, now)
            expired = [
                runs.c.status == RunStatus.RUNNING.value,
                runs.c.lease_expires_at < current,
            ]
            query = sa.select(*runs.c).where(*expired).order_by(runs.c.lease_expires_at)
            crashed: list[Run] = []
            for row in conn.execute(query.limit(limit)).mappings().all():
                lease = row["lease_expires_at"]
                values = {
                    "status": RunStatus.CRASHED.value,
                    "finished_at": current,
                    "lease_expires_at": None,
                    "duration_ms": duration_ms(row["started_at"], current),
                    "error_type": "LeaseExpired",
                    "error_message": (
                        f"lease expired at {lease.isoformat()}: instance {row['instance']} "
                        "stopped renewing it (crashed or stalled)"
                    ),
                }
                # The WHERE repeats the expiry test: of two reapers, only one updates the row.
                update = sa.update(runs).where(runs.c.id == row["id"], *expired).values(values)
                if conn.execute(update).rowcount != 1:
                    continue
                run = row_to_run(row).replace(**{**values, "status": RunStatus.CRASHED})
                completion = policy(run)
                follow: dict[str, Any] = {"dead_letter": completion.dead_letter}
                for name in ("error_type", "error_message", "traceback"):
                    if getattr(completion, name) is not None:
                        follow[name] = getattr(completion, name)
                conn.execute(sa.update(runs).where(runs.c.id == run.id).values(follow))
                self._follow_up(conn, row, completion, now=current)
                crashed.append(run.replace(**follow))
            return crashed

        return self._run(crash, write=True)

    def release(self, *, instance: str, now: datetime, status: RunStatus) -> list[Run]:
        """End every run still ``running`` under ``instance`` with ``status`` (shutdown)."""
        if not status.terminal:
            raise ValueError(f"release needs a terminal status, not {status.value}")

        def end(conn: Connection) -> list[Run]:
            owned = sa.select(runs.c.id).where(
                runs.c.instance == instance, runs.c.status == RunStatus.RUNNING.value
            )
            ids = list(conn.execute(owned.order_by(runs.c.id)).scalars())
            return self._end_runs(
                conn,
                ids,
                status,
                self._clock(conn, now),
                reason=f"released by instance {instance} at shutdown",
                from_statuses=(RunStatus.RUNNING.value,),
                instance=instance,
            )

        return self._run(end, write=True)
