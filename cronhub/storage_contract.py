"""The storage conformance suite: ``StorageContract``, which every storage plugin must pass.

Subclass it in a test module and provide a ``storage`` fixture (opened, empty, closed at
teardown); pytest then runs every test below against your backend::

    from cronhub.storage_contract import StorageContract

    class TestRedisStorage(StorageContract):
        @pytest.fixture
        def storage(self, tmp_path):
            storage = RedisStorage("redis://localhost/15")
            storage.open()
            yield storage
            storage.close()

The suite passes ``now`` explicitly everywhere (times around :data:`T0`, in 2031) and expects
the backend to honour it; a backend that judges time by its own clock must run the suite with
that switched off. Choices the protocol leaves open and that the suite pins down:

- overlap is judged against *running* runs: a queued retry does not make a new slot skip;
- the :class:`~cronhub.runs.ClaimResult` of a run that a later ``replace`` request of the same
  batch cancelled is ``RECORDED`` with the cancelled run;
- ``cancel(reason=...)`` keeps the reason in the run's ``error_message``;
- ``clear_dead_letters`` unflags runs; they stay in history;
- pausing a paused schedule (or resuming a running one) changes nothing, not even the revision.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from cronhub.runs import (
    Alert,
    ClaimOutcome,
    ClaimRequest,
    ClaimResult,
    Completion,
    JobState,
    Overlap,
    Run,
    RunStatus,
    Trigger,
)
from cronhub.runtime_schedules import RuntimeSchedule
from cronhub.storage import RunFilter, Storage

if TYPE_CHECKING:
    from cronhub.storage import CrashPolicy

#: The suite's "now": every time it passes is this plus or minus a few seconds or minutes.
T0 = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)
#: Lease TTL used throughout, in seconds.
TTL = 30.0

CLAIMED, RECORDED = ClaimOutcome.CLAIMED, ClaimOutcome.RECORDED
TAKEN, PAUSED = ClaimOutcome.TAKEN, ClaimOutcome.PAUSED


def at(seconds: float) -> datetime:
    """:data:`T0` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def slot(minute: int) -> datetime:
    """The slot ``minute`` minutes after :data:`T0`."""
    return T0 + timedelta(minutes=minute)


def req(job: str = "job", minute: int | None = 0, **options: Any) -> ClaimRequest:
    """A claim request for ``job``'s slot ``minute`` (``None``: a manual run)."""
    if minute is None:
        options.setdefault("trigger", Trigger.MANUAL)
    return ClaimRequest(job=job, scheduled_for=None if minute is None else slot(minute), **options)


def done(status: RunStatus = RunStatus.SUCCEEDED, seconds: float = 5, **fields: Any) -> Completion:
    """A completion at ``T0 + seconds``."""
    return Completion(status=status, finished_at=at(seconds), **fields)


def policy_of(completion: Callable[[Run], Completion]) -> tuple[CrashPolicy, list[Run]]:
    """A crash policy and the list of runs it was called with."""
    seen: list[Run] = []
    lock = threading.Lock()

    def policy(run: Run) -> Completion:
        with lock:
            seen.append(run)
        return completion(run)

    return policy, seen


def sched(schedule_id: str = "s1", job: str = "job", **fields: Any) -> RuntimeSchedule:
    """A runtime schedule of ``job`` (every minute, created at :data:`T0` unless given)."""
    fields.setdefault("kind", "every")
    fields.setdefault("expression", "60")
    fields.setdefault("created_at", T0)
    return RuntimeSchedule(id=schedule_id, job=job, **fields)


def crash_done(run: Run) -> Completion:
    """The simplest crash policy: nothing follows."""
    return Completion(status=RunStatus.CRASHED, finished_at=run.finished_at or T0)


class StorageContract:
    """The behaviour every :class:`cronhub.storage.Storage` must show. Subclass it."""

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        raise NotImplementedError("a StorageContract subclass must provide a `storage` fixture")

    # -- helpers ------------------------------------------------------------------------------
    def claim(
        self, storage: Storage, *requests: ClaimRequest, instance: str = "i1", now: datetime = T0
    ) -> list[ClaimResult]:
        return storage.claim(list(requests), instance=instance, now=now, lease_ttl=TTL)

    def start(self, storage: Storage, job: str = "job", minute: int = 0, **kw: Any) -> Run:
        """Claim one slot as ``running`` and return its run."""
        (result,) = self.claim(storage, req(job, minute, **kw.pop("options", {})), **kw)
        assert result.outcome is CLAIMED, result
        assert result.run is not None
        return result.run

    def queue(self, storage: Storage, job: str = "job", minute: int = 0, **options: Any) -> Run:
        """Record a queued run for a slot (``status=QUEUED``)."""
        (result,) = self.claim(storage, req(job, minute, status=RunStatus.QUEUED, **options))
        assert result.outcome is RECORDED and result.run is not None, result
        return result.run

    def status(self, storage: Storage, run_id: int) -> RunStatus:
        run = storage.get_run(run_id)
        assert run is not None
        return run.status

    # -- lifecycle ----------------------------------------------------------------------------
    def test_is_a_storage(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)
        assert isinstance(storage.url, str) and storage.url
        assert storage.ping() is True

    def test_close_twice_is_safe(self, storage: Storage) -> None:
        storage.close()
        storage.close()

    # -- claims -------------------------------------------------------------------------------
    def test_claim_inserts_a_running_row(self, storage: Storage) -> None:
        (result,) = self.claim(storage, req("a", 0, params={"x": [1, 2]}), now=at(1))
        assert result.outcome is CLAIMED
        run = result.run
        assert run is not None and isinstance(run.id, int)
        assert (run.job, run.scheduled_for, run.attempt) == ("a", slot(0), 1)
        assert (run.status, run.trigger, run.instance) == (
            RunStatus.RUNNING,
            Trigger.SCHEDULE,
            "i1",
        )
        assert (run.created_at, run.started_at, run.lease_expires_at) == (at(1), at(1), at(31))
        assert run.finished_at is None and run.params == {"x": [1, 2]}
        assert storage.get_run(run.id) == run

    def test_second_claim_of_a_slot_is_taken_and_writes_nothing(self, storage: Storage) -> None:
        first = self.start(storage, "a", 0)
        (again,) = self.claim(storage, req("a", 0), instance="i2", now=at(1))
        assert again.outcome is TAKEN and again.run is None
        (later,) = self.claim(storage, req("a", 0, overlap=Overlap.ALLOW), instance="i3")
        assert later.outcome is TAKEN
        assert [r.id for r in storage.list_runs(RunFilter())] == [first.id]

    def test_the_same_instant_in_another_zone_is_the_same_slot(self, storage: Storage) -> None:
        self.start(storage, "a", 0)
        plus_two = slot(0).astimezone(timezone(timedelta(hours=2)))
        (result,) = self.claim(storage, ClaimRequest("a", plus_two), instance="i2")
        assert result.outcome is TAKEN

    def test_attempt_and_schedule_id_are_part_of_the_key(self, storage: Storage) -> None:
        allow = {"overlap": Overlap.ALLOW}
        # "@..." ids are the engine's own slot families (no runtime schedule row needed).
        results = self.claim(
            storage,
            req("a", 0, **allow),
            req("a", 0, attempt=2, **allow),
            req("a", 0, schedule_id="@extra", **allow),
            req("b", 0, **allow),
        )
        assert [r.outcome for r in results] == [CLAIMED] * 4
        (again,) = self.claim(storage, req("a", 0, attempt=2, **allow), instance="i2")
        assert again.outcome is TAKEN
        assert results[1].run is not None and results[1].run.attempt == 2
        assert results[2].run is not None and results[2].run.schedule_id == "@extra"

    def test_manual_runs_are_never_deduplicated(self, storage: Storage) -> None:
        manual = req("a", None, overlap=Overlap.ALLOW)
        results = self.claim(storage, manual, manual)
        results += self.claim(storage, manual, instance="i2")
        assert [r.outcome for r in results] == [CLAIMED] * 3
        runs = [r.run for r in results if r.run is not None]
        assert len({r.id for r in runs}) == 3
        assert all(r.scheduled_for is None and r.trigger is Trigger.MANUAL for r in runs)

    def test_a_claim_retried_by_its_owner_answers_claimed_again(self, storage: Storage) -> None:
        run = self.start(storage, "a", 0)
        (again,) = self.claim(storage, req("a", 0), now=at(3))
        assert again.outcome is CLAIMED and again.run == run
        assert [r.id for r in storage.list_runs(RunFilter())] == [run.id]
        assert self.claim(storage, req("a", 0), instance="i2")[0].outcome is TAKEN
        assert storage.finish(run.id, done(), instance="i1")
        assert self.claim(storage, req("a", 0))[0].outcome is TAKEN  # no longer running

    def test_claims_advance_the_high_water_mark(self, storage: Storage) -> None:
        storage.set_paused("p", True, now=T0)
        self.claim(
            storage,
            req("a", 3),
            req("a", 1),
            req("a", 7, schedule_id="extra"),
            req("a", 8, trigger=Trigger.RETRY, attempt=2, status=RunStatus.QUEUED),
            req("a", 9, trigger=Trigger.STARTUP, overlap=Overlap.ALLOW),
            req("p", 5),
            req("b", 2, trigger=Trigger.CATCH_UP, status=RunStatus.MISSED),
            req("c", None),
            req("d", 6, trigger=Trigger.RETRY),
        )
        # A TAKEN answer moves the mark too: the key exists, whoever wrote it.
        self.claim(storage, req("d", 6), req("a", 2), instance="i2")
        states = storage.job_states(["a", "p", "b", "c", "d"])
        marks = {name: state.high_water for name, state in states.items()}
        assert marks == {"a": slot(3), "p": slot(5), "b": slot(2), "c": None, "d": slot(6)}
        assert storage.job_states(["p"])["p"].last_run is None

    def test_a_mixed_batch_answers_in_order(self, storage: Storage) -> None:
        self.start(storage, "taken", 0, instance="i2")
        storage.set_paused("paused", True, now=T0)
        requests = [
            req("new", 0),
            req("taken", 0),
            req("paused", 0),
            req("gone", 0, status=RunStatus.MISSED, missed_count=7),
            req("new", 1),
            req("later", 0, status=RunStatus.QUEUED, not_before=at(60)),
            req("gone", 1, status=RunStatus.SKIPPED),
        ]
        results = self.claim(storage, *requests, now=at(2))
        assert [r.request for r in results] == requests
        assert [r.outcome for r in results] == [
            CLAIMED, TAKEN, PAUSED, RECORDED, RECORDED, RECORDED, RECORDED,
        ]  # fmt: skip
        statuses = [r.run.status if r.run else None for r in results]
        assert statuses == [
            RunStatus.RUNNING, None, None, RunStatus.MISSED, RunStatus.SKIPPED,
            RunStatus.QUEUED, RunStatus.SKIPPED,
        ]  # fmt: skip
        missed, queued = results[3].run, results[5].run
        assert missed is not None and missed.missed_count == 7
        assert missed.finished_at == at(2) and missed.lease_expires_at is None
        assert queued is not None and queued.not_before == at(60)
        assert queued.lease_expires_at is None and queued.started_at is None
        assert storage.get_run(missed.id) == missed

    def test_an_empty_batch_answers_nothing(self, storage: Storage) -> None:
        assert storage.claim([], instance="i1", now=T0, lease_ttl=TTL) == []

    def test_a_claim_for_a_terminal_status_is_refused_whole(self, storage: Storage) -> None:
        with pytest.raises(ValueError):
            self.claim(storage, req("a", 0), req("a", 1, status=RunStatus.SUCCEEDED))
        assert storage.list_runs(RunFilter()) == []

    # -- overlap ------------------------------------------------------------------------------
    def test_skip_records_skipped_while_a_run_is_running(self, storage: Storage) -> None:
        first = self.start(storage, "a", 0)
        (second,) = self.claim(storage, req("a", 1), instance="i2", now=at(60))
        assert second.outcome is RECORDED and second.run is not None
        assert second.run.status is RunStatus.SKIPPED and second.run.finished_at == at(60)
        assert self.claim(storage, req("b", 1))[0].outcome is CLAIMED  # overlap is per job
        assert storage.finish(first.id, done(), instance="i1")
        assert self.claim(storage, req("a", 2), now=at(120))[0].outcome is CLAIMED

    def test_skip_within_one_batch(self, storage: Storage) -> None:
        results = self.claim(storage, req("a", 0), req("a", 1), req("a", 2))
        assert [r.outcome for r in results] == [CLAIMED, RECORDED, RECORDED]
        assert [r.run.status for r in results if r.run] == [
            RunStatus.RUNNING, RunStatus.SKIPPED, RunStatus.SKIPPED,
        ]  # fmt: skip

    def test_a_queued_retry_does_not_make_a_new_slot_skip(self, storage: Storage) -> None:
        self.queue(storage, "a", 0, trigger=Trigger.RETRY, attempt=2, not_before=at(600))
        assert self.claim(storage, req("a", 1))[0].outcome is CLAIMED

    def test_allow_runs_side_by_side(self, storage: Storage) -> None:
        results = self.claim(storage, req("a", 0, overlap=Overlap.ALLOW))
        results += self.claim(
            storage, req("a", 1, overlap=Overlap.ALLOW), req("a", 2, overlap=Overlap.ALLOW)
        )
        assert [r.outcome for r in results] == [CLAIMED] * 3
        assert len(storage.active_runs("a")) == 3

    def test_queue_lets_one_run_wait(self, storage: Storage) -> None:
        queue = {"overlap": Overlap.QUEUE}
        self.start(storage, "a", 0, options=queue)
        (waiting,) = self.claim(storage, req("a", 1, **queue), instance="i2")
        (extra,) = self.claim(storage, req("a", 2, **queue), instance="i2")
        assert waiting.outcome is RECORDED and waiting.run is not None
        assert waiting.run.status is RunStatus.QUEUED and waiting.run.lease_expires_at is None
        assert extra.outcome is RECORDED and extra.run is not None
        assert extra.run.status is RunStatus.SKIPPED
        batch = self.claim(
            storage, req("b", 0, **queue), req("b", 1, **queue), req("b", 2, **queue)
        )
        assert [r.run.status for r in batch if r.run] == [
            RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.SKIPPED,
        ]  # fmt: skip

    def test_replace_cancels_the_running_run(self, storage: Storage) -> None:
        replace = {"overlap": Overlap.REPLACE}
        old = self.start(storage, "a", 0, options=replace)
        (new,) = self.claim(storage, req("a", 1, **replace), instance="i2", now=at(60))
        assert new.outcome is CLAIMED and new.run is not None and new.run.instance == "i2"
        cancelled = storage.get_run(old.id)
        assert cancelled is not None and cancelled.status is RunStatus.CANCELLED
        assert cancelled.finished_at == at(60) and cancelled.lease_expires_at is None
        assert storage.heartbeat([old.id], instance="i1", now=at(61), lease_ttl=TTL) == set()
        assert storage.finish(old.id, done(seconds=62), instance="i1") is False
        assert [r.id for r in storage.active_runs("a")] == [new.run.id]

    def test_replace_within_one_batch(self, storage: Storage) -> None:
        replace = {"overlap": Overlap.REPLACE}
        first, second = self.claim(storage, req("a", 0, **replace), req("a", 1, **replace))
        assert first.outcome is RECORDED and first.run is not None
        assert first.run.status is RunStatus.CANCELLED
        assert second.outcome is CLAIMED and second.run is not None
        assert self.status(storage, first.run.id) is RunStatus.CANCELLED
        assert [r.id for r in storage.active_runs("a")] == [second.run.id]

    # -- paused jobs --------------------------------------------------------------------------
    def test_a_paused_job_gets_no_row(self, storage: Storage) -> None:
        storage.set_paused("a", True, now=T0)
        results = self.claim(storage, req("a", 0), req("a", None), req("b", 0))
        assert [r.outcome for r in results] == [PAUSED, PAUSED, CLAIMED]
        assert results[0].run is None
        assert storage.list_runs(RunFilter(job="a")) == []
        assert storage.job_states(["a"])["a"].last_run is None

    def test_ignore_pause_and_resume(self, storage: Storage) -> None:
        storage.set_paused("a", True, now=T0)
        (manual,) = self.claim(storage, req("a", None, ignore_pause=True))
        assert manual.outcome is CLAIMED
        storage.set_paused("a", False, now=at(1))
        (scheduled,) = self.claim(storage, req("a", 1, overlap=Overlap.ALLOW))
        assert scheduled.outcome is CLAIMED

    # -- leases and heartbeats ----------------------------------------------------------------
    def test_heartbeat_extends_the_owners_lease(self, storage: Storage) -> None:
        run = self.start(storage)
        assert storage.heartbeat([run.id], instance="i1", now=at(10), lease_ttl=TTL) == {run.id}
        renewed = storage.get_run(run.id)
        assert renewed is not None and renewed.lease_expires_at == at(40)
        assert storage.heartbeat([], instance="i1", now=at(10), lease_ttl=TTL) == set()

    def test_heartbeat_is_fenced(self, storage: Storage) -> None:
        mine = self.start(storage, "a")
        theirs = self.start(storage, "b", instance="i2")
        ids = [mine.id, theirs.id, 999_999]
        assert storage.heartbeat(ids, instance="i1", now=at(10), lease_ttl=TTL) == {mine.id}
        untouched = storage.get_run(theirs.id)
        assert untouched is not None and untouched.lease_expires_at == at(30)

    def test_no_heartbeat_after_cancel_or_reap(self, storage: Storage) -> None:
        cancelled, reaped = self.start(storage, "a"), self.start(storage, "b")
        assert storage.cancel(cancelled.id, now=at(5)) is not None
        assert [r.id for r in storage.reap(now=at(31), policy=crash_done)] == [reaped.id]
        ids = [cancelled.id, reaped.id]
        assert storage.heartbeat(ids, instance="i1", now=at(32), lease_ttl=TTL) == set()

    # -- finish -------------------------------------------------------------------------------
    def test_finish_records_the_completion(self, storage: Storage) -> None:
        run = self.start(storage)
        completion = done(
            RunStatus.FAILED,
            seconds=2.5,
            error_type="ValueError",
            error_message="bad input",
            traceback="Traceback (most recent call last):\n  ...",
            log="line 1\nline 2\n",
        )
        assert storage.finish(run.id, completion, instance="i1") is True
        ended = storage.get_run(run.id)
        assert ended is not None and ended.status is RunStatus.FAILED
        assert (ended.finished_at, ended.duration_ms, ended.lease_expires_at) == (
            at(2.5),
            2500,
            None,
        )
        assert ended.error == {"type": "ValueError", "message": "bad input"}
        assert ended.traceback == completion.traceback and ended.log == completion.log
        assert ended.dead_letter is False and storage.active_runs() == []
        assert storage.finish(run.id, completion, instance="i1") is False  # already ended

    def test_finish_keeps_a_given_duration(self, storage: Storage) -> None:
        run = self.start(storage)
        assert storage.finish(run.id, done(duration_ms=1234), instance="i1")
        ended = storage.get_run(run.id)
        assert ended is not None and ended.duration_ms == 1234

    def test_finish_records_when_the_run_really_started(self, storage: Storage) -> None:
        # A run claimed ahead of its slot starts later than its claim recorded.
        run = self.start(storage)
        assert storage.finish(run.id, done(seconds=2.5, started_at=at(0.5)), instance="i1")
        ended = storage.get_run(run.id)
        assert ended is not None
        assert (ended.started_at, ended.duration_ms) == (at(0.5), 2000)

    def test_finish_is_fenced_and_then_writes_nothing(self, storage: Storage) -> None:
        run = self.start(storage)
        alert = Alert(kind="failure", job="job", message="failed", run_id=run.id)
        completion = done(RunStatus.FAILED, retry_at=at(60), dead_letter=True, alerts=(alert,))
        assert storage.finish(run.id, completion, instance="i2") is False
        assert storage.get_run(run.id) == run
        assert storage.pending_alerts(now=at(3600)) == []
        assert [r.id for r in storage.list_runs(RunFilter())] == [run.id]

    def test_finish_after_reap_is_refused(self, storage: Storage) -> None:
        run = self.start(storage)
        storage.reap(now=at(31), policy=crash_done)
        assert storage.finish(run.id, done(seconds=40), instance="i1") is False
        assert self.status(storage, run.id) is RunStatus.CRASHED

    def test_finish_with_retry_queues_the_next_attempt(self, storage: Storage) -> None:
        storage.add_schedule(sched("s"))  # a retry of a runtime schedule's slot keeps its id
        run = self.start(storage, options={"schedule_id": "s", "params": {"k": "v"}})
        completion = done(RunStatus.FAILED, retry_at=at(70))
        assert storage.finish(run.id, completion, instance="i1")
        (retry,) = storage.active_runs()
        assert (retry.status, retry.trigger, retry.attempt) == (RunStatus.QUEUED, Trigger.RETRY, 2)
        assert (retry.job, retry.scheduled_for, retry.schedule_id) == ("job", slot(0), "s")
        assert retry.not_before == at(70) and retry.params == {"k": "v"}
        assert retry.lease_expires_at is None and retry.id > run.id

    def test_finish_with_dead_letter_and_alerts(self, storage: Storage) -> None:
        run = self.start(storage)
        alerts = (
            Alert(kind="failure", job="job", message="first", run_id=run.id),
            Alert(kind="dead_letter", job="job", message="second", run_id=run.id),
        )
        completion = done(RunStatus.FAILED, dead_letter=True, alerts=alerts)
        assert storage.finish(run.id, completion, instance="i1")
        assert [r.id for r in storage.dead_letters()] == [run.id]
        pending = storage.pending_alerts(now=at(5))
        assert [(p.alert.kind, p.alert.message, p.alert.run_id) for p in pending] == [
            ("failure", "first", run.id), ("dead_letter", "second", run.id),
        ]  # fmt: skip

    def test_finish_needs_a_terminal_status(self, storage: Storage) -> None:
        run = self.start(storage)
        with pytest.raises(ValueError):
            storage.finish(run.id, done(RunStatus.RUNNING), instance="i1")
        with pytest.raises(ValueError):
            storage.finish_many([(run.id, done()), (run.id, done(RunStatus.QUEUED))], instance="i1")
        assert self.status(storage, run.id) is RunStatus.RUNNING

    def test_finish_many_answers_per_run_in_order(self, storage: Storage) -> None:
        a, b = self.start(storage, "a"), self.start(storage, "b")
        theirs = self.start(storage, "c", instance="i2")
        answers = storage.finish_many(
            [
                (a.id, done()),
                (theirs.id, done()),
                (b.id, done(RunStatus.FAILED, retry_at=at(60))),
                (a.id, done(RunStatus.FAILED)),
                (999_999, done()),
            ],
            instance="i1",
        )
        assert answers == [True, False, True, False, False]
        assert self.status(storage, a.id) is RunStatus.SUCCEEDED
        assert self.status(storage, b.id) is RunStatus.FAILED
        assert self.status(storage, theirs.id) is RunStatus.RUNNING
        (retry,) = storage.active_runs("b")
        assert (retry.attempt, retry.not_before) == (2, at(60))
        assert storage.finish_many([], instance="i1") == []

    # -- take_queued --------------------------------------------------------------------------
    def test_take_queued_respects_not_before(self, storage: Storage) -> None:
        queued = self.queue(storage, "a", 0, not_before=at(60))
        assert storage.take_queued(instance="i2", now=at(59), lease_ttl=TTL) == []
        (taken,) = storage.take_queued(instance="i2", now=at(60), lease_ttl=TTL)
        assert (taken.id, taken.status, taken.instance) == (queued.id, RunStatus.RUNNING, "i2")
        assert (taken.started_at, taken.lease_expires_at) == (at(60), at(90))
        assert storage.get_run(taken.id) == taken
        assert storage.take_queued(instance="i3", now=at(61), lease_ttl=TTL) == []

    def test_take_queued_oldest_first_up_to_limit(self, storage: Storage) -> None:
        ids = [self.queue(storage, f"job{n}", 0).id for n in range(5)]
        first = storage.take_queued(instance="i1", now=T0, lease_ttl=TTL, limit=3)
        rest = storage.take_queued(instance="i1", now=T0, lease_ttl=TTL, limit=3)
        assert [r.id for r in first] == ids[:3] and [r.id for r in rest] == ids[3:]

    def test_take_queued_leaves_paused_jobs_but_manual_runs(self, storage: Storage) -> None:
        scheduled = self.queue(storage, "a", 0)
        manual = self.queue(storage, "a", None, overlap=Overlap.ALLOW)
        storage.set_paused("a", True, now=T0)
        taken = storage.take_queued(instance="i1", now=T0, lease_ttl=TTL)
        assert [r.id for r in taken] == [manual.id]
        assert self.status(storage, scheduled.id) is RunStatus.QUEUED

    def test_take_queued_waits_for_the_running_run(self, storage: Storage) -> None:
        running = self.start(storage, "a", 0)
        waiting = self.queue(storage, "a", 1)
        retry = self.queue(storage, "a", 0, attempt=2, trigger=Trigger.RETRY)
        assert storage.take_queued(instance="i1", now=at(1), lease_ttl=TTL) == []
        assert storage.finish(running.id, done(), instance="i1")
        # Once free, one run starts; the other waits again behind it.
        assert [r.id for r in storage.take_queued(instance="i1", now=at(6), lease_ttl=TTL)] == [
            waiting.id
        ]
        assert self.status(storage, retry.id) is RunStatus.QUEUED

    def test_take_queued_waits_even_for_allow_jobs(self, storage: Storage) -> None:
        allow = {"overlap": Overlap.ALLOW}
        self.start(storage, "a", 0, options=allow)
        self.queue(storage, "a", 0, attempt=2, trigger=Trigger.RETRY, **allow)
        self.queue(storage, "a", None, **allow)
        assert storage.take_queued(instance="i1", now=at(1), lease_ttl=TTL) == []

    def test_take_queued_one_per_job_and_only_the_given_jobs(self, storage: Storage) -> None:
        a1, a2 = self.queue(storage, "a", 0), self.queue(storage, "a", 1)
        b = self.queue(storage, "b", 0)
        assert storage.take_queued(instance="i1", now=T0, lease_ttl=TTL, jobs=[]) == []
        taken = storage.take_queued(instance="i1", now=T0, lease_ttl=TTL, jobs=["b", "zz"])
        assert [r.id for r in taken] == [b.id]
        taken = storage.take_queued(instance="i1", now=T0, lease_ttl=TTL, jobs={"a", "b"})
        assert [r.id for r in taken] == [a1.id]
        assert self.status(storage, a2.id) is RunStatus.QUEUED

    def test_each_queued_run_is_taken_once(self, storage: Storage) -> None:
        queued = {self.queue(storage, f"job{n}", 0).id for n in range(40)}
        taken: list[int] = []
        barrier = threading.Barrier(4)

        def worker(name: str) -> None:
            barrier.wait()
            while runs := storage.take_queued(instance=name, now=T0, lease_ttl=TTL, limit=3):
                taken.extend(r.id for r in runs)

        threads = [threading.Thread(target=worker, args=(f"i{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(taken) == sorted(queued)

    # -- cancel -------------------------------------------------------------------------------
    def test_cancel_queued_and_running_runs(self, storage: Storage) -> None:
        running, queued = self.start(storage, "a"), self.queue(storage, "b")
        for run in (running, queued):
            cancelled = storage.cancel(run.id, now=at(7), reason="stopped by alice")
            assert cancelled is not None and cancelled.status is RunStatus.CANCELLED
            assert cancelled.finished_at == at(7) and cancelled.lease_expires_at is None
            assert "stopped by alice" in (cancelled.error_message or "")
            assert storage.get_run(run.id) == cancelled
        assert storage.cancel(running.id, now=at(8)) is None  # already terminal
        assert storage.cancel(999_999, now=at(8)) is None
        assert storage.active_runs() == []

    # -- reap ---------------------------------------------------------------------------------
    def test_reap_crashes_only_expired_leases(self, storage: Storage) -> None:
        alive, dead = self.start(storage, "a"), self.start(storage, "b")
        storage.heartbeat([alive.id], instance="i1", now=at(20), lease_ttl=TTL)
        assert storage.reap(now=at(30), policy=crash_done) == []  # expiry is strict
        policy, seen = policy_of(crash_done)
        (crashed,) = storage.reap(now=at(31), policy=policy)
        assert crashed.id == dead.id and crashed.status is RunStatus.CRASHED
        assert crashed.finished_at == at(31) and crashed.lease_expires_at is None
        assert [r.id for r in seen] == [dead.id] and seen[0].status is RunStatus.CRASHED
        assert storage.get_run(dead.id) == crashed
        assert self.status(storage, alive.id) is RunStatus.RUNNING
        assert storage.reap(now=at(31), policy=policy) == []

    def test_reap_applies_the_policy(self, storage: Storage) -> None:
        retried, dead = self.start(storage, "a"), self.start(storage, "b")

        def decide(run: Run) -> Completion:
            alert = Alert(kind="crash", job=run.job, message="crashed", run_id=run.id)
            if run.job == "a":
                return Completion(RunStatus.CRASHED, at(31), retry_at=at(90), alerts=(alert,))
            return Completion(RunStatus.CRASHED, at(31), dead_letter=True, alerts=(alert,))

        assert {r.id for r in storage.reap(now=at(31), policy=decide)} == {retried.id, dead.id}
        (retry,) = storage.active_runs()
        assert (retry.job, retry.attempt, retry.trigger) == ("a", 2, Trigger.RETRY)
        assert retry.status is RunStatus.QUEUED and retry.not_before == at(90)
        assert [r.id for r in storage.dead_letters()] == [dead.id]
        assert sorted(p.alert.run_id or 0 for p in storage.pending_alerts(now=at(31))) == sorted(
            [retried.id, dead.id]
        )

    def test_a_failing_policy_leaves_the_run_alone(self, storage: Storage) -> None:
        run = self.start(storage)

        def broken(run: Run) -> Completion:
            raise RuntimeError("policy bug")

        with pytest.raises(RuntimeError, match="policy bug"):
            storage.reap(now=at(31), policy=broken)
        assert storage.get_run(run.id) == run  # the crash and its follow-up are one change
        assert [r.id for r in storage.reap(now=at(31), policy=crash_done)] == [run.id]

    def test_reap_limit(self, storage: Storage) -> None:
        for n in range(5):
            self.start(storage, f"job{n}")
        assert len(storage.reap(now=at(31), policy=crash_done, limit=2)) == 2
        assert len(storage.reap(now=at(31), policy=crash_done, limit=10)) == 3

    def test_two_reapers_crash_each_run_once(self, storage: Storage) -> None:
        ids = {self.start(storage, f"job{n}").id for n in range(30)}
        policy, seen = policy_of(crash_done)
        reaped: list[int] = []
        barrier = threading.Barrier(3)

        def reaper() -> None:
            barrier.wait()
            while runs := storage.reap(now=at(31), policy=policy, limit=4):
                reaped.extend(r.id for r in runs)

        threads = [threading.Thread(target=reaper) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(reaped) == sorted(ids)
        assert sorted(r.id for r in seen) == sorted(ids)

    # -- release ------------------------------------------------------------------------------
    def test_release_ends_this_instances_running_runs(self, storage: Storage) -> None:
        mine = [self.start(storage, f"job{n}") for n in range(3)]
        theirs = self.start(storage, "other", instance="i2")
        queued = self.queue(storage, "waiting")
        released = storage.release(instance="i1", now=at(9), status=RunStatus.CANCELLED)
        assert sorted(r.id for r in released) == [r.id for r in mine]
        for run in released:
            assert run.status is RunStatus.CANCELLED and run.finished_at == at(9)
            assert storage.finish(run.id, done(seconds=10), instance="i1") is False
        assert self.status(storage, theirs.id) is RunStatus.RUNNING
        assert self.status(storage, queued.id) is RunStatus.QUEUED

    # -- history ------------------------------------------------------------------------------
    def test_list_runs_filters_newest_first(self, storage: Storage) -> None:
        a1 = self.start(storage, "a", 0)
        b1 = self.start(storage, "b", 0)
        a2 = self.claim(storage, req("a", 1))[0].run  # skipped
        assert a2 is not None
        storage.finish(a1.id, done(RunStatus.FAILED, dead_letter=True), instance="i1")
        ids = lambda **kw: [r.id for r in storage.list_runs(RunFilter(**kw))]  # noqa: E731
        assert ids() == [a2.id, b1.id, a1.id]
        assert ids(job="a") == [a2.id, a1.id]
        assert ids(status=RunStatus.RUNNING) == [b1.id]
        assert ids(job="a", status=RunStatus.SKIPPED) == [a2.id]
        assert ids(dead_letter=True) == [a1.id]
        assert ids(dead_letter=False) == [a2.id, b1.id]
        assert ids(limit=2) == [a2.id, b1.id]
        assert ids(job="nobody") == []

    def test_before_cursor_pages_without_gaps_or_duplicates(self, storage: Storage) -> None:
        allow = {"overlap": Overlap.ALLOW}
        results = self.claim(storage, *[req("a" if n % 3 else "b", n, **allow) for n in range(25)])
        every = sorted((r.run.id for r in results if r.run), reverse=True)
        pages: list[list[int]] = []
        cursor: int | None = None
        while page := storage.list_runs(RunFilter(before=cursor, limit=10)):
            pages.append([r.id for r in page])
            cursor = page[-1].id
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [i for p in pages for i in p] == every
        only_a = storage.list_runs(RunFilter(job="a", before=every[5], limit=100))
        assert all(r.job == "a" and r.id < every[5] for r in only_a) and only_a

    def test_get_run(self, storage: Storage) -> None:
        run = self.start(storage)
        storage.finish(run.id, done(traceback="tb", log="hello\n"), instance="i1")
        full = storage.get_run(run.id)
        assert full is not None and (full.traceback, full.log) == ("tb", "hello\n")
        assert storage.get_run(999_999) is None

    def test_active_runs(self, storage: Storage) -> None:
        running, queued = self.start(storage, "a"), self.queue(storage, "b")
        self.claim(storage, req("a", 1))  # skipped: not active
        assert sorted(r.id for r in storage.active_runs()) == [running.id, queued.id]
        assert [r.id for r in storage.active_runs("b")] == [queued.id]
        assert storage.active_runs("nobody") == []

    def test_recent_runs_per_job_newest_first(self, storage: Storage) -> None:
        allow = {"overlap": Overlap.ALLOW}
        results = self.claim(storage, *[req("a" if n % 3 else "b", n, **allow) for n in range(25)])
        storage.finish(results[1].run.id, done(traceback="tb", log="hello\n"), instance="i1")
        by_job: dict[str, list[int]] = {"a": [], "b": []}
        for result in results:
            assert result.run is not None
            by_job[result.run.job].insert(0, result.run.id)
        recent = storage.recent_runs(["b", "a", "nobody", "a"], per_job=4)
        assert list(recent) == ["b", "a", "nobody"]
        assert [r.id for r in recent["a"]] == by_job["a"][:4]
        assert [r.id for r in recent["b"]] == by_job["b"][:4]
        assert recent["nobody"] == []
        assert all(r.job == "a" for r in recent["a"])
        everything = storage.recent_runs(["a"], per_job=100)["a"]
        assert [r.id for r in everything] == by_job["a"]
        finished = next(r for r in everything if r.id == results[1].run.id)
        assert finished.status is RunStatus.SUCCEEDED
        assert (finished.traceback, finished.log) == (None, "")
        assert storage.recent_runs(["a"], per_job=0) == {"a": []}
        assert storage.recent_runs([]) == {}

    def test_recent_runs_of_many_jobs(self, storage: Storage) -> None:
        names = [f"job-{n:04d}" for n in range(450)]
        allow = {"overlap": Overlap.ALLOW}
        self.claim(storage, *[req(name, m, **allow) for name in names for m in range(2)])
        recent = storage.recent_runs(names, per_job=1)
        assert list(recent) == names
        assert all(len(runs) == 1 and runs[0].job == name for name, runs in recent.items())
        assert all(runs[0].scheduled_for == slot(1) for runs in recent.values())

    def test_alert_streaks_of_many_runs_agree_with_one_by_one(self, storage: Storage) -> None:
        # The writer reads the streaks of a whole batch at once (``previous_outcomes`` where
        # the storage has it, else ``recent_runs``): it must agree with ``streak_of``.
        from cronhub.alerting import Streak, streak_of, streaks_of

        allow = {"options": {"overlap": Overlap.ALLOW}}
        ending: dict[str, int] = {}
        ok = self.start(storage, "ok", 0, **allow)
        storage.finish(ok.id, done(), instance="i1")
        bad = self.start(storage, "bad", 0, **allow)
        storage.finish(bad.id, done(RunStatus.FAILED, dead_letter=True), instance="i1")
        self.claim(storage, req("bad", 1, status=RunStatus.SKIPPED))
        flip = self.start(storage, "flip", 0, **allow)
        storage.finish(flip.id, done(RunStatus.FAILED), instance="i1")
        flip = self.start(storage, "flip", 1, **allow)
        storage.finish(flip.id, done(), instance="i1")
        for name in ("ok", "bad", "new", "flip"):
            ending[name] = self.start(storage, name, 5, **allow).id
        later = self.start(storage, "bad", 6, **allow)  # finished before the one ending now
        storage.finish(later.id, done(RunStatus.TIMED_OUT), instance="i1")
        pairs = list(ending.items())
        found = streaks_of(storage, pairs)
        assert found == {run_id: streak_of(storage, job, run_id) for job, run_id in pairs}
        assert found[ending["bad"]] == Streak(failing=True, dead_letter=True)
        assert found[ending["ok"]] == found[ending["new"]] == found[ending["flip"]] == Streak()
        assert streaks_of(storage, []) == {}

    def test_count_runs_by_status_finished_after_and_dead_letter(self, storage: Storage) -> None:
        assert storage.count_runs() == {}
        a, b = self.start(storage, "a"), self.start(storage, "b")
        self.start(storage, "c")
        self.queue(storage, "q")
        (skipped,) = self.claim(storage, req("c", 1), now=at(1))
        assert skipped.run is not None and skipped.run.status is RunStatus.SKIPPED
        storage.finish(a.id, done(seconds=5), instance="i1")
        storage.finish(b.id, done(RunStatus.FAILED, seconds=65, dead_letter=True), instance="i1")
        assert storage.count_runs() == {
            "running": 1,
            "queued": 1,
            "skipped": 1,
            "succeeded": 1,
            "failed": 1,
        }
        assert storage.count_runs(finished_after=at(0)) == {
            "skipped": 1,
            "succeeded": 1,
            "failed": 1,
        }
        assert storage.count_runs(finished_after=at(5)) == {"failed": 1}  # strictly after
        assert storage.count_runs(finished_after=at(65)) == {}
        assert storage.count_runs(dead_letter=True) == {"failed": 1}
        assert storage.count_runs(finished_after=at(10), dead_letter=False) == {}
        storage.clear_dead_letters()
        assert storage.count_runs(dead_letter=True) == {}

    # -- job state ----------------------------------------------------------------------------
    def test_job_states_of_unknown_jobs_are_defaults(self, storage: Storage) -> None:
        assert storage.job_states(["x", "y"]) == {"x": JobState("x"), "y": JobState("y")}
        assert storage.job_states() == {}

    def test_job_states_last_run_and_paused(self, storage: Storage) -> None:
        self.start(storage, "a", 0)
        newest = self.claim(storage, req("a", 1))[0].run
        b = self.start(storage, "b", 0)
        storage.set_paused("c", True, now=T0)
        states = storage.job_states()
        assert sorted(states) == ["a", "b", "c"]
        assert states["a"].last_run is not None and newest is not None
        assert states["a"].last_run.id == newest.id
        assert states["b"].last_run is not None and states["b"].last_run.id == b.id
        assert states["c"].paused is True and states["c"].last_run is None
        assert storage.job_states(["a"])["a"].last_run == states["a"].last_run
        storage.set_paused("c", False, now=at(1))
        assert storage.job_states(["c"])["c"].paused is False

    def test_high_water_only_moves_forward(self, storage: Storage) -> None:
        assert storage.advance_high_water("a", slot(5)) == slot(5)
        assert storage.advance_high_water("a", slot(3)) == slot(5)
        tokyo = slot(9).astimezone(timezone(timedelta(hours=9)))
        mark = storage.advance_high_water("a", tokyo)
        assert mark == slot(9) and mark.utcoffset() == timedelta(0)
        state = storage.job_states(["a"])["a"]
        assert state.high_water == slot(9) and state.high_water.utcoffset() == timedelta(0)
        assert state.paused is False

    # -- runtime schedules --------------------------------------------------------------------
    def test_schedules_add_get_list_delete(self, storage: Storage) -> None:
        assert storage.list_schedules() == [] and storage.get_schedule("s1") is None
        berlin = timezone(timedelta(hours=2))
        first = storage.add_schedule(
            sched(
                "s1",
                "a",
                kind="cron",
                expression="*/5 9-17 * * MON-FRI",
                tz="Europe/Berlin",
                params={"region": "eu", "ids": [1, 2], "deep": {"x": None, "f": 1.5}},
                start=datetime(2031, 4, 1, 9, tzinfo=berlin),
                end=at(86400 * 30),
                created_by="cli:ann@host",
            )
        )
        assert first == sched(
            "s1",
            "a",
            kind="cron",
            expression="*/5 9-17 * * MON-FRI",
            tz="Europe/Berlin",
            params={"region": "eu", "ids": [1, 2], "deep": {"x": None, "f": 1.5}},
            start=datetime(2031, 4, 1, 7, tzinfo=UTC),
            end=at(86400 * 30),
            created_by="cli:ann@host",
            updated_at=T0,
        )
        assert first.start is not None and first.start.utcoffset() == timedelta(0)
        storage.add_schedule(sched("s2", "b", created_at=at(1), paused=True))
        storage.add_schedule(sched("s0", "a", created_at=at(1)))
        assert [s.id for s in storage.list_schedules()] == ["s1", "s0", "s2"]
        assert [s.id for s in storage.list_schedules("a")] == ["s1", "s0"]
        assert storage.list_schedules("nobody") == []
        s2 = storage.get_schedule("s2")
        assert s2 is not None and s2.paused and s2.high_water is None and s2.created_by is None
        assert storage.get_schedule("s1") == first
        assert storage.delete_schedule("s1") == first
        assert storage.delete_schedule("s1") is None and storage.get_schedule("s1") is None
        assert [s.id for s in storage.list_schedules("a")] == ["s0"]

    def test_adding_an_existing_id_changes_nothing(self, storage: Storage) -> None:
        first = storage.add_schedule(sched("s1", params={"v": 1}))
        revision = storage.schedules_revision()
        again = storage.add_schedule(sched("s1", params={"v": 2}, created_at=at(9)))
        assert again == first and storage.get_schedule("s1") == first
        assert storage.schedules_revision() == revision

    def test_pause_and_resume_a_schedule(self, storage: Storage) -> None:
        storage.add_schedule(sched("s1"))
        paused = storage.set_schedule_paused("s1", True, now=at(10))
        assert paused is not None and paused.paused and paused.updated_at == at(10)
        assert paused.high_water is None
        same = storage.set_schedule_paused("s1", True, now=at(20))
        assert same is not None and same.updated_at == at(10)
        # Resuming moves the mark to now: no instance catches up the paused time.
        resumed = storage.set_schedule_paused("s1", False, now=at(30))
        assert resumed is not None and not resumed.paused
        assert (resumed.updated_at, resumed.high_water) == (at(30), at(30))
        assert storage.get_schedule("s1") == resumed
        assert storage.set_schedule_paused("nope", True, now=at(1)) is None

    def test_the_revision_grows_with_changes_not_with_claims(self, storage: Storage) -> None:
        start = storage.schedules_revision()
        assert isinstance(start, int)
        storage.add_schedule(sched("s1"))
        added = storage.schedules_revision()
        assert added > start
        self.claim(storage, req("job", 1, schedule_id="s1"))
        assert storage.schedules_revision() == added
        storage.set_schedule_paused("s1", True, now=at(1))
        paused = storage.schedules_revision()
        storage.set_schedule_paused("s1", True, now=at(2))
        assert paused > added and storage.schedules_revision() == paused
        storage.set_schedule_paused("s1", False, now=at(3))
        resumed = storage.schedules_revision()
        storage.delete_schedule("s1")
        deleted = storage.schedules_revision()
        storage.delete_schedule("s1")
        assert paused < resumed < deleted == storage.schedules_revision()

    def test_a_runtime_schedules_slot_is_claimed_once_with_its_id_and_params(
        self, storage: Storage
    ) -> None:
        storage.add_schedule(sched("s1", params={"k": "v"}))
        (first,) = self.claim(storage, req("job", 1, schedule_id="s1", params={"k": "v"}))
        assert first.outcome is CLAIMED and first.run is not None
        assert (first.run.schedule_id, first.run.params) == ("s1", {"k": "v"})
        (again,) = self.claim(storage, req("job", 1, schedule_id="s1"), instance="i2")
        assert again.outcome is TAKEN
        # The job's own slot at the same instant is another key.
        (own,) = self.claim(storage, req("job", 1, overlap=Overlap.ALLOW), instance="i2")
        assert own.outcome is CLAIMED and own.run is not None and own.run.schedule_id == ""
        stored = storage.get_run(first.run.id)
        assert stored is not None and stored.params == {"k": "v"}

    def test_slots_of_paused_removed_or_foreign_schedules_are_not_claimed(
        self, storage: Storage
    ) -> None:
        for schedule_id in ("live", "held", "gone"):
            storage.add_schedule(sched(schedule_id))
        storage.add_schedule(sched("other", job="b"))
        storage.set_schedule_paused("held", True, now=T0)
        storage.delete_schedule("gone")
        allow = {"overlap": Overlap.ALLOW}
        ids = ["live", "held", "gone", "never", "other", "@startup"]
        results = self.claim(storage, *[req("job", 1, schedule_id=i, **allow) for i in ids])
        assert [r.outcome for r in results] == [CLAIMED, PAUSED, PAUSED, PAUSED, PAUSED, CLAIMED]
        assert all(r.run is None for r in results[1:5])
        assert sorted(r.schedule_id for r in storage.list_runs(RunFilter())) == ["@startup", "live"]
        storage.set_schedule_paused("held", False, now=at(1))
        (resumed,) = self.claim(storage, req("job", 2, schedule_id="held", **allow), now=at(120))
        assert resumed.outcome is CLAIMED

    def test_claims_advance_each_schedules_own_mark(self, storage: Storage) -> None:
        storage.add_schedule(sched("s1"))
        storage.add_schedule(sched("s2"))
        allow = {"overlap": Overlap.ALLOW}
        self.claim(
            storage,
            req("job", 3, schedule_id="s1", **allow),
            req("job", 1, schedule_id="s1", **allow),
            req("job", 7, schedule_id="s1", trigger=Trigger.RETRY, attempt=2, **allow),
            req("job", 9, schedule_id="s2", trigger=Trigger.STARTUP, **allow),
            req("job", 2, schedule_id="s2", trigger=Trigger.CATCH_UP, status=RunStatus.MISSED),
        )
        marks = {s.id: s.high_water for s in storage.list_schedules()}
        assert marks == {"s1": slot(3), "s2": slot(2)}
        # TAKEN answers move the mark too, and a paused job's slots still do (PAUSED).
        self.claim(storage, req("job", 3, schedule_id="s1"), instance="i2")
        storage.set_paused("job", True, now=T0)
        (held,) = self.claim(storage, req("job", 8, schedule_id="s1"), instance="i2")
        assert held.outcome is PAUSED
        self.claim(storage, req("job", 4, schedule_id="s1"), instance="i2")  # never back
        schedule = storage.get_schedule("s1")
        assert schedule is not None and schedule.high_water == slot(8)
        assert storage.job_states(["job"])["job"].high_water is None

    def test_watchers_hear_each_change_made_through_the_storage(self, storage: Storage) -> None:
        watch = getattr(storage, "watch_schedules", None)
        if watch is None:
            pytest.skip("watch_schedules is an optional capability")
        heard: list[int] = []
        unwatch = watch(lambda: heard.append(storage.schedules_revision()))
        storage.add_schedule(sched("s1"))
        storage.add_schedule(sched("s1"))  # exists: no change
        storage.set_schedule_paused("s1", True, now=at(1))
        storage.set_schedule_paused("s1", True, now=at(2))  # no change
        self.claim(storage, req("job", 1, schedule_id="s1"))
        storage.set_schedule_paused("s1", False, now=at(3))
        storage.delete_schedule("s1")
        storage.delete_schedule("s1")  # gone: no change
        assert len(heard) == 4 and heard == sorted(heard)
        assert heard[-1] == storage.schedules_revision()
        unwatch()
        storage.add_schedule(sched("s2"))
        assert len(heard) == 4

    # -- dead letters -------------------------------------------------------------------------
    def test_dead_letters_list_and_clear(self, storage: Storage) -> None:
        dead: list[Run] = []
        for job in ("a", "b", "a"):
            run = self.start(storage, job, len(dead), options={"overlap": Overlap.ALLOW})
            storage.finish(run.id, done(RunStatus.FAILED, dead_letter=True), instance="i1")
            dead.append(run)
        assert [r.id for r in storage.dead_letters()] == [r.id for r in reversed(dead)]
        assert [r.id for r in storage.dead_letters(job="a")] == [dead[2].id, dead[0].id]
        assert [r.id for r in storage.dead_letters(limit=1)] == [dead[2].id]
        assert storage.clear_dead_letters(job="a") == 2
        assert [r.id for r in storage.dead_letters()] == [dead[1].id]
        assert storage.clear_dead_letters() == 1 and storage.dead_letters() == []
        assert storage.clear_dead_letters() == 0
        kept = storage.get_run(dead[0].id)
        assert kept is not None and kept.dead_letter is False and kept.status is RunStatus.FAILED

    # -- outbox -------------------------------------------------------------------------------
    def test_outbox_pending_delivered_failed(self, storage: Storage) -> None:
        alerts = [
            Alert(
                kind="missed",
                job="a",
                message="missed 3 slots",
                scheduled_for=slot(1),
                created_at=at(1),
                details={"missed_count": 3},
            ),
            Alert(kind="failure", job="b", message="b failed", run_id=7, attempt=2),
        ]
        storage.add_alerts(alerts, now=at(2))
        storage.add_alerts([Alert(kind="recovery", job="c", message="ok")], now=at(3))
        assert storage.pending_alerts(now=at(1)) == []  # not written yet at that time
        first, second, third = storage.pending_alerts(now=at(3))
        assert first.alert == alerts[0] and first.attempts == 0
        assert (second.alert.job, second.alert.run_id, second.alert.attempt) == ("b", 7, 2)
        assert third.alert.kind == "recovery" and first.id < second.id < third.id
        assert [p.id for p in storage.pending_alerts(now=at(3), limit=2)] == [first.id, second.id]
        storage.alert_delivered(first.id)
        storage.alert_failed(second.id, retry_at=at(60), error="HTTP 500")
        assert [p.id for p in storage.pending_alerts(now=at(59))] == [third.id]
        retried = storage.pending_alerts(now=at(60))
        assert [p.id for p in retried] == [second.id, third.id]
        assert retried[0].attempts == 1 and retried[0].next_attempt_at == at(60)

    # -- retention ----------------------------------------------------------------------------
    def test_purge_deletes_only_old_terminal_runs(self, storage: Storage) -> None:
        allow = {"overlap": Overlap.ALLOW}
        old_done = self.start(storage, "a", 0, options=allow)
        storage.finish(old_done.id, done(seconds=10), instance="i1")
        old_running = self.start(storage, "a", 1, options=allow)
        old_queued = self.queue(storage, "b", 0)
        (old_skipped,) = self.claim(storage, req("c", 0, status=RunStatus.SKIPPED))
        recent = self.start(storage, "a", 2, options=allow, now=at(7200))
        storage.finish(recent.id, done(seconds=7210), instance="i1")
        assert storage.purge(older_than=at(3600)) == 2
        assert storage.get_run(old_done.id) is None
        assert old_skipped.run is not None and storage.get_run(old_skipped.run.id) is None
        kept = sorted(r.id for r in storage.list_runs(RunFilter()))
        assert kept == sorted([old_running.id, old_queued.id, recent.id])
        assert storage.purge(older_than=at(3600)) == 0

    # -- datetimes ----------------------------------------------------------------------------
    def test_datetimes_round_trip_as_aware_utc(self, storage: Storage) -> None:
        india = timezone(timedelta(hours=5, minutes=30))
        scheduled = datetime(2031, 3, 14, 17, 31, 2, 123456, tzinfo=india)
        now = datetime(2031, 3, 14, 12, 1, 2, 654321, tzinfo=UTC)
        (result,) = self.claim(storage, ClaimRequest("a", scheduled), now=now)
        assert result.run is not None
        run = storage.get_run(result.run.id)
        assert run is not None and run.scheduled_for == scheduled and run.started_at == now
        for value in (run.scheduled_for, run.created_at, run.started_at, run.lease_expires_at):
            assert value is not None and value.utcoffset() == timedelta(0)
        assert run.lease_expires_at == now + timedelta(seconds=TTL)
        assert (run.scheduled_for.hour, run.scheduled_for.microsecond) == (12, 123456)

    # -- concurrency --------------------------------------------------------------------------
    def test_threads_claiming_the_same_slots_claim_each_once(self, storage: Storage) -> None:
        requests = [req(f"job{n % 7}", n, overlap=Overlap.ALLOW) for n in range(140)]
        outcomes: list[tuple[str, ClaimResult]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(6)

        def claimer(name: str) -> None:
            mine = list(requests)
            random.Random(name).shuffle(mine)
            barrier.wait()
            for start in range(0, len(mine), 20):
                results = self.claim(storage, *mine[start : start + 20], instance=name)
                with lock:
                    outcomes.extend((name, r) for r in results)

        threads = [threading.Thread(target=claimer, args=(f"i{n}",)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        key = lambda r: (r.request.job, r.request.scheduled_for)  # noqa: E731
        claimed = Counter(key(r) for _, r in outcomes if r.outcome is CLAIMED)
        assert len(outcomes) == 6 * len(requests)
        assert set(claimed) == {(r.job, r.scheduled_for) for r in requests}
        assert set(claimed.values()) == {1}
        assert Counter(r.outcome for _, r in outcomes)[TAKEN] == 5 * len(requests)
        assert len(storage.list_runs(RunFilter(limit=1000))) == len(requests)
