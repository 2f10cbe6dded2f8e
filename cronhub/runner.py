"""Runs owned by this instance: execute, keep leases, record outcomes, reap, shut down.

A run is started only after storage recorded it as ``running`` under this instance. While it
runs its lease is renewed; if renewal is refused (the run was reaped, cancelled or replaced)
or impossible for a whole lease, the job is cancelled and nothing more is written for it.
Outcomes are written in batches, one transaction per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cronhub import gc_hold
from cronhub.alerting import Streak, streaks_of
from cronhub.context import RunContext
from cronhub.executors import Outcome
from cronhub.runs import Completion, Run, RunStatus

if TYPE_CHECKING:
    from cronhub.engine import Engine
    from cronhub.jobs import Job

log = logging.getLogger("cronhub.runs")

#: Why a run was cancelled; a run cancelled because its lease was lost writes nothing.
LEASE_LOST = "lease lost"
SHUTDOWN = "shutdown"
# Compared with for every run's outcome (module-level: see cronhub.runs).
_CANCELLED = RunStatus.CANCELLED


@dataclass(slots=True)
class _Active:
    run: Run
    ctx: RunContext | None = None
    #: The task the body runs in (the run's own task, or one of its own for a direct run).
    task: asyncio.Task[Any] | None = None
    #: ``True`` while the body runs: only then does a cancel cancel ``task``.
    in_body: bool = False
    renewed_at: float = 0.0
    cancel_reason: str | None = None
    #: The job's failure streak read from storage before the outcome is written (alerts of
    #: a run executed directly; batched outcomes read their streaks in the writer).
    streak: Streak | None = None
    #: Set while a run launched ahead of its slot waits for it (see :class:`StartGate`).
    gate: asyncio.Future[None] | None = None
    #: A gated run's body, once done, waits on this for the rest of its gate to start.
    after_burst: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> bool:
        """Launched ahead of its slot and not started yet."""
        return self.gate is not None


class StartGate:
    """The runs claimed ahead of one start time, launched and waiting for it.

    Launching a run (its task, its context) costs more than starting it: a run claimed ahead
    is launched at once and waits here, and at its slot :meth:`RunManager.open` lets every
    run of the gate into its body, one right after another.
    """

    __slots__ = ("after_burst", "waiters")

    def __init__(self) -> None:
        #: One future per run; each run's own, so that cancelling one cancels no other.
        self.waiters: list[asyncio.Future[None]] = []
        #: Per run too: set once every body of the gate has started.
        self.after_burst: list[asyncio.Future[None]] = []


def _finished(run: Run, completion: Completion) -> Run:
    """``run`` as ``completion`` ended it."""
    return run.replace(
        started_at=completion.started_at or run.started_at,
        status=completion.status,
        finished_at=completion.finished_at,
        duration_ms=completion.duration_ms,
        error_type=completion.error_type,
        error_message=completion.error_message,
        traceback=completion.traceback,
        log=completion.log,
        dead_letter=completion.dead_letter,
    )


def _set_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _cancelled(reason: str) -> Outcome:
    return Outcome(RunStatus.CANCELLED, error_type="Cancelled", error_message=reason)


@dataclass(slots=True)
class _Pending:
    """An outcome waiting for the writer, which ends its run once the answer is in
    (:meth:`RunManager._ended`)."""

    run: Run
    job: Job | None
    completion: Completion
    entry: _Active


class RunManager:
    """The runs this instance owns, their leases and the batched writer of their outcomes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._active: dict[int, _Active] = {}
        self._tasks: set[asyncio.Task[Run | None]] = set()
        # Remember recent run ids, so a claim answered twice never starts a run twice.
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._pending: list[_Pending] = []
        self._pending_event: asyncio.Event | None = None
        #: ``True`` while the writer has a batch of outcomes out to storage.
        self._writing = False
        self._background: list[asyncio.Task[None]] = []
        # Set while runs are active: the heartbeat loop sleeps on it, so an idle instance
        # has no timer at all.
        self._has_active: asyncio.Event | None = None
        self._forget_task = self._tasks.discard
        #: Runs launched ahead of their slot, waiting at a gate.
        self._waiting = 0
        # Clear while a burst of runs is starting: lease renewals wait for it (their storage
        # work would compete for the interpreter with the bodies still to start).
        self._burst_over: asyncio.Event | None = None

    @property
    def idle(self) -> bool:
        """No run is active and no outcome waits to be written (runs waiting for their
        slot at a gate are not active yet)."""
        waiting = self._waiting
        return (
            len(self._active) == waiting
            and not self._pending
            and not self._writing
            and len(self._tasks) == waiting
        )

    @property
    def active(self) -> dict[int, Run]:
        """The runs executing here now, by id."""
        return {run_id: e.run for run_id, e in self._active.items() if not e.waiting}

    def start(self) -> None:
        """Start the heartbeat and writer tasks."""
        # A run may end before this (a fast startup run): its outcome already waits.
        self._pending_event = self._pending_event or asyncio.Event()
        if self._pending:
            self._pending_event.set()
        self._has_active = asyncio.Event()
        self._background = [
            asyncio.create_task(self._heartbeat_loop(), name="cronhub-heartbeat"),
            asyncio.create_task(self._writer_loop(), name="cronhub-writer"),
        ]

    # -- starting ------------------------------------------------------------------------
    def launch(self, run: Run) -> None:
        """Execute ``run`` in the background unless this instance already started it."""
        self.launch_all([run])

    def launch_all(self, runs: Iterable[Run], *, gate: StartGate | None = None) -> None:
        """Execute ``runs`` in the background, in order, skipping any already started here.

        Each run is one task; the tasks take their first steps in this order once the caller
        yields, so a burst of due runs starts its bodies one right after another. With
        ``gate`` each run does its start-up and then waits for :meth:`open`.
        """
        seen, active, tasks = self._seen, self._active, self._tasks
        loop = asyncio.get_running_loop()
        create_task = loop.create_task
        create_future = loop.create_future
        renewed_at = self.engine.clock.monotonic()
        launched = 0
        # Launched ahead of their slot, the runs only wait: their burst is when the gate opens.
        with self._burst(loop) if gate is None else contextlib.nullcontext():
            for run in runs:
                run_id = run.id
                if run_id in seen:
                    continue
                seen[run_id] = None
                entry = active[run_id] = _Active(run, None, None, False, renewed_at)
                if gate is not None:
                    entry.gate = create_future()
                    entry.after_burst = create_future()
                    gate.waiters.append(entry.gate)
                    gate.after_burst.append(entry.after_burst)
                    self._waiting += 1
                entry.task = task = create_task(self.execute(run))
                tasks.add(task)
                task.add_done_callback(self._forget_task)
                launched += 1
        if launched:
            self._forget_oldest()
            if self._has_active is not None:
                self._has_active.set()

    def open(self, gate: StartGate) -> None:
        """Start the runs waiting at ``gate``: their slot has come."""
        loop = asyncio.get_running_loop()
        with self._burst(loop):
            for waiter in gate.waiters:
                if not waiter.done():  # a run cancelled while it waited
                    waiter.set_result(None)
            loop.call_soon(_set_all, gate.after_burst)

    @contextlib.contextmanager
    def _burst(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """While runs start in a burst: no garbage collection, no lease renewals.

        Every step made ready inside the block (a new task's first one, a woken task's) runs
        before the callbacks queued at its end, so the burst is over when they run. The
        cyclic garbage collector is held off until then (:mod:`cronhub.gc_hold`): a full
        collection in the middle of a burst costs every later run of it the collection's
        pause (tens of milliseconds once a process holds a few hundred thousand objects),
        and nothing of the burst is garbage yet. Lease renewals wait too: their storage work
        would compete for the interpreter with the bodies still to start.
        """
        held = gc_hold.hold()
        if self._burst_over is None:
            self._burst_over = asyncio.Event()
        self._burst_over.clear()
        try:
            yield
        finally:
            loop.call_soon(self._burst_over.set)
            if held:
                loop.call_soon(gc_hold.release)

    def active_jobs(self) -> set[str]:
        """The jobs with a run active here (not counting runs waiting for their slot)."""
        return {entry.run.job for entry in self._active.values() if not entry.waiting}

    def known(self, run_id: int) -> bool:
        """Whether this instance started (or is running) run ``run_id`` recently."""
        return run_id in self._seen or run_id in self._active

    def _remember(self, run_id: int) -> None:
        self._seen[run_id] = None
        self._forget_oldest()

    def _forget_oldest(self) -> None:
        while len(self._seen) > 100_000:
            self._seen.popitem(last=False)

    async def recorded(self, run: Run) -> None:
        """A slot recorded without running (skipped, missed, queued)."""
        log.debug("job %s: slot %s recorded as %s", run.job, run.scheduled_for, run.status)

    async def execute(self, run: Run, *, direct: bool = False) -> Run:
        """Run ``run`` (already ``running`` under this instance) and record how it ended.

        A launched run's body runs in this task (one task per run, so a burst of runs starts
        its bodies in order, each right after its own start-up); ``direct`` (``cronhub run``)
        runs it in a task of its own and returns the run as it ended. A launched run hands its
        outcome to the batched writer, which ends the run (and calls ``cronhub_run_finished``)
        once the outcome is written, and returns ``run`` itself at once.
        """
        engine = self.engine
        clock = engine.clock
        entry = self._active.get(run.id)
        if entry is None:
            entry = self._active[run.id] = _Active(run, renewed_at=clock.monotonic())
            self._remember(run.id)
            if self._has_active is not None:
                self._has_active.set()
        job = engine.jobs.get(run.job)
        ctx: RunContext | None = None
        if job is not None:
            params = dict(run.params) if run.params else {}
            ctx = entry.ctx = RunContext(job, run, None, run.scheduled_for, run.attempt, params)
        if entry.gate is not None:
            # Launched ahead of its slot: everything above is done, the slot is what is left.
            try:
                await entry.gate
            except asyncio.CancelledError:  # cancelled before it started (see cancel_local)
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    current.uncancel()
                entry.cancel_reason = entry.cancel_reason or "cancelled"
            finally:
                entry.gate = None
                self._waiting -= 1
        started_at = clock.now()
        started = clock.monotonic()
        wall_started = time.monotonic()
        try:
            if job is None or ctx is None:
                outcome = Outcome(
                    RunStatus.FAILED,
                    error_type="UnknownJob",
                    error_message=f"job {run.job!r} is not defined on instance {engine.instance}",
                )
            else:
                if engine.pm.listened("cronhub_run_started"):
                    await engine.pm.call_each("cronhub_run_started", run=run)
                if direct:
                    outcome = await self._run_body_in_task(job, ctx, entry)
                elif entry.cancel_reason is not None:  # cancelled before its body started
                    outcome = _cancelled(entry.cancel_reason)
                else:
                    # The body runs in this task (written out here: a burst of due runs starts
                    # each body one coroutine call sooner).
                    entry.in_body = True
                    try:
                        outcome = await engine.executors[job.name].execute(job, ctx, job.timeout)
                    except asyncio.CancelledError:
                        # This task was cancelled (cancel_local, shutdown): the run ends
                        # cancelled and the task goes on to record it.
                        current = asyncio.current_task()
                        if current is not None:
                            current.uncancel()
                        outcome = _cancelled(entry.cancel_reason or "cancelled")
                    except Exception as exc:  # an executor must not raise; a plugin's might
                        outcome = Outcome.from_exception(exc)
                    finally:
                        entry.in_body = False
                    # A run claimed ahead of its slot lets the runs of its slot start their
                    # bodies before it records its outcome (the burst starts sooner), on a
                    # future of its own made ahead. A run launched as it was claimed goes
                    # on: a yield here is a step more for every run of a burst.
                    if entry.after_burst is not None:
                        try:  # noqa: SIM105 - contextlib.suppress costs more, in the burst
                            await entry.after_burst
                        except asyncio.CancelledError:  # the body is done: it is recorded
                            pass
        finally:
            if ctx is not None:
                ctx.release()
        log_text = ctx.log_text() if ctx is not None else ""
        if entry.cancel_reason == LEASE_LOST:
            self._active.pop(run.id, None)
            log.warning("run %d of %s: lease lost; cancelled without recording", run.id, run.job)
            return run
        if direct:
            entry.streak = await engine.alert_streak(job, run)
        now = clock.now()
        elapsed = max(clock.monotonic() - started, time.monotonic() - wall_started)
        # Batched outcomes get their alerts in the writer, which reads the streaks of a whole
        # batch in one query (one read per run cost more than the run at high rates).
        # Recorded as started when it was claimed (ahead of its slot, or before it waited for
        # the loop): the history shows when it really started.
        real_start = started_at if run.started_at is None or started_at > run.started_at else None
        completion = self._completion(
            job, run, outcome, log_text, now, elapsed, entry, alerts=direct, started_at=real_start
        )
        if not direct:
            # The writer ends the run once its batch is written (:meth:`_ended`); nobody
            # reads a launched task's result.
            self._enqueue(_Pending(run, job, completion, entry))
            return run
        try:
            written = await engine.io_retry(
                "finish", engine.hub.storage.finish, run.id, completion, instance=engine.instance
            )
        except Exception as exc:
            # The lease will expire and a reaper marks the run crashed (and retries it).
            log.error("run %d of %s: cannot record its outcome: %s", run.id, run.job, exc)
            self._active.pop(run.id, None)
            return run
        self._active.pop(run.id, None)
        return await self._conclude(_Pending(run, job, completion, entry), written)

    def _written(self, job: Job | None, completion: Completion) -> None:
        """What follows a run's outcome written: its alerts, its retry, a waiting queued run."""
        engine = self.engine
        if completion.alerts:
            engine.delivery.wake()
        if completion.retry_at is not None:
            engine._schedule_housekeeping(completion.retry_at)
        elif job is not None and job.overlap != "allow":
            # A queued run of this job (overlap "queue", catch-up) may be waiting for this one.
            engine._schedule_housekeeping(completion.finished_at)

    @staticmethod
    def _dropped(run: Run, entry: _Active) -> None:
        """Say why a run's outcome was not written (storage ended the run first)."""
        if entry.cancel_reason == "cancelled":
            # A cancel (the API, another instance) ended the run in storage first.
            log.info("run %d of %s: cancelled", run.id, run.job)
        else:
            log.warning("run %d of %s: no longer owned here; outcome dropped", run.id, run.job)

    def _ended(self, pending: _Pending, written: bool | BaseException) -> None:
        """End a run whose task handed its outcome to the writer, given the storage's answer
        (``written``, or the error that kept the batch from being written)."""
        run = pending.run
        self._active.pop(run.id, None)
        if isinstance(written, BaseException):
            # The lease will expire and a reaper marks the run crashed (and retries it).
            log.error("run %d of %s: cannot record its outcome: %s", run.id, run.job, written)
        elif written and not self.engine.pm.listened("cronhub_run_finished"):
            self._written(pending.job, pending.completion)  # the common case: nothing to await
        else:
            # A lost answer to settle, or a hook to call: in a task of its own, which
            # ``idle`` and shutdown wait for.
            task = asyncio.get_running_loop().create_task(self._conclude(pending, written))
            self._tasks.add(task)
            task.add_done_callback(self._forget_task)

    async def _conclude(self, pending: _Pending, written: bool) -> Run:
        """What follows the storage's answer to a run's outcome; returns the run as it ended.

        A ``False`` answer may be a write whose answer was lost and whose retry found the run
        already ended: if the row holds this completion, the first attempt wrote it.
        """
        run, completion = pending.run, pending.completion
        if not written:
            written = await self._wrote_before(run, completion)
        finished = _finished(run, completion)
        if not written:
            self._dropped(run, pending.entry)
            return finished
        self._written(pending.job, completion)
        if self.engine.pm.listened("cronhub_run_finished"):
            await self.engine.pm.call_each("cronhub_run_finished", run=finished)
        return finished

    async def _wrote_before(self, run: Run, completion: Completion) -> bool:
        engine = self.engine
        try:
            stored = await engine.io_retry("read run", engine.hub.storage.get_run, run.id)
        except Exception:
            return False
        return (
            stored is not None
            and stored.instance == engine.instance
            and stored.status is completion.status
            and stored.finished_at == completion.finished_at
        )

    async def _run_body_in_task(self, job: Job, ctx: RunContext, entry: _Active) -> Outcome:
        """A direct run's body, in a task of its own (a cancel stops the body alone)."""
        if entry.cancel_reason is not None:  # cancelled before its body started
            return _cancelled(entry.cancel_reason)
        executor = self.engine.executors[job.name]
        task = entry.task = asyncio.create_task(executor.execute(job, ctx, job.timeout))
        entry.in_body = True
        try:
            return await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            return _cancelled(entry.cancel_reason or "cancelled")
        except Exception as exc:  # an executor must not raise, but one from a plugin might
            return Outcome.from_exception(exc)
        finally:
            entry.in_body = False

    def _completion(
        self,
        job: Job | None,
        run: Run,
        outcome: Outcome,
        log_text: str,
        now: datetime,
        elapsed: float,
        entry: _Active,
        *,
        alerts: bool = True,
        started_at: datetime | None = None,
    ) -> Completion:
        status = outcome.status
        retry_at = None
        dead_letter = False
        retries_left = job is not None and run.attempt <= job.retries
        if status.failure:
            if retries_left and job is not None:
                retry_at = now + timedelta(seconds=job.retry_delay_for(run.attempt))
            else:
                dead_letter = True
        elif status is _CANCELLED and entry.cancel_reason == SHUTDOWN and retries_left:
            retry_at = now
        completion = Completion(
            status=status,
            finished_at=now,
            duration_ms=int(elapsed * 1000),
            error_type=outcome.error_type,
            error_message=outcome.error_message,
            traceback=outcome.traceback,
            log=log_text + outcome.log,
            retry_at=retry_at,
            dead_letter=dead_letter,
            started_at=started_at,
        )
        return self._with_alerts(job, run, completion, entry.streak) if alerts else completion

    def _with_alerts(
        self, job: Job | None, run: Run, completion: Completion, streak: Streak | None
    ) -> Completion:
        """``completion`` with the alerts its run raises, given the job's ``streak``."""
        error = None
        if completion.error_type:
            error = f"{completion.error_type}: {completion.error_message}"
        found = self.engine.alerts_for(
            job,
            run,
            completion.status,
            streak=streak,
            error=error,
            duration_ms=completion.duration_ms,
            dead_letter=completion.dead_letter,
        )
        return dataclasses.replace(completion, alerts=tuple(found)) if found else completion

    # -- writing -------------------------------------------------------------------------
    def _enqueue(self, pending: _Pending) -> None:
        if self._pending_event is None:  # before start(): the writer takes it when it starts
            self._pending_event = asyncio.Event()
        self._pending.append(pending)
        self._pending_event.set()

    def _finish_batch(self, batch: list[_Pending]) -> tuple[list[bool], bool]:
        """Read the batch's streaks, add its alerts and write it (blocking: storage thread).

        Returns the storage's answers and whether any alert was written.
        """
        engine = self.engine
        storage = engine.hub.storage
        pairs = [(p.job.name, p.run.id) for p in batch if p.job is not None and p.job.alerts]
        streaks: dict[int, Streak] = {}
        if pairs:
            try:
                streaks = streaks_of(storage, pairs)
            except Exception as exc:
                # As for one run: an unreadable streak counts as "not failing" (an extra
                # alert rather than a lost one).
                log.warning("cannot read the streaks of %d job(s) for alerts: %s", len(pairs), exc)
        items = []
        for p in batch:
            completion = p.completion
            if p.job is not None and p.job.alerts:
                completion = self._with_alerts(p.job, p.run, completion, streaks.get(p.run.id))
            items.append((p.run.id, completion))
        answers = storage.finish_many(items, instance=engine.instance)
        return answers, any(c.alerts for _, c in items)

    async def _writer_loop(self) -> None:
        assert self._pending_event is not None
        engine = self.engine
        while True:
            await self._pending_event.wait()
            self._pending_event.clear()
            await asyncio.sleep(0)  # let runs finishing in the same tick join the batch
            batch, self._pending = self._pending, []
            if not batch:
                continue
            self._writing = True
            try:
                answers, alerted = await engine.io_retry("finish", self._finish_batch, batch)
            except Exception as exc:
                for p in batch:
                    self._ended(p, exc)
                continue
            finally:
                self._writing = False
            if alerted:
                engine.delivery.wake()
            for p, answer in zip(batch, answers, strict=True):
                self._ended(p, answer)

    # -- leases --------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        engine = self.engine
        assert self._has_active is not None
        while True:
            if not self._active:
                self._has_active.clear()
                await self._has_active.wait()
            await engine.clock.sleep(engine.heartbeat_interval)
            if self._burst_over is not None:
                await self._burst_over.wait()
            with contextlib.suppress(Exception):
                await self.heartbeat()

    async def heartbeat(self) -> None:
        """Renew the leases of active runs; cancel the runs whose lease is gone."""
        engine = self.engine
        ids = list(self._active)
        if not ids:
            return
        assert engine.lock is not None
        try:
            kept = await engine.io(
                engine.lock.heartbeat,
                ids,
                instance=engine.instance,
                now=engine.clock.now(),
                lease_ttl=engine.lease_ttl,
            )
        except Exception as exc:
            # Storage unreachable: a run whose lease could not be renewed for a whole TTL may
            # already be reaped elsewhere, so it stops here (design section 4).
            log.warning("cannot renew leases: %s", exc)
            limit = engine.clock.monotonic() - engine.lease_ttl
            for run_id in ids:
                entry = self._active.get(run_id)
                if entry is not None and entry.renewed_at < limit:
                    self.cancel_local(run_id, LEASE_LOST)
            return
        mono = engine.clock.monotonic()
        for run_id in ids:
            entry = self._active.get(run_id)
            if entry is None:
                continue
            if run_id in kept:
                entry.renewed_at = mono
            else:
                self.cancel_local(run_id, LEASE_LOST)

    def cancel_local(self, run_id: int, reason: str) -> bool:
        """Cancel a run executing here; ``False`` when it is not here."""
        entry = self._active.get(run_id)
        if entry is None:
            return False
        entry.cancel_reason = entry.cancel_reason or reason
        if entry.ctx is not None:
            entry.ctx.cancel()
        if entry.gate is not None:
            # Waiting for its slot: its own gate is cancelled, not its task, which may not
            # have taken its first step yet (a task cancelled before it starts never runs
            # the code that ends the run here).
            if not entry.gate.done():
                entry.gate.cancel()
        elif entry.task is not None and entry.in_body and not entry.task.done():
            entry.task.cancel()
        return True

    def cancel_local_others(self, run: Run) -> None:
        """``overlap="replace"``: the new ``run`` replaces this instance's older runs of its job."""
        for run_id, entry in list(self._active.items()):
            if entry.run.job == run.job and run_id != run.id:
                self.cancel_local(run_id, LEASE_LOST)

    async def reap(self, now: datetime) -> list[Run]:
        """Mark runs whose lease expired (anywhere) as crashed, with retry or dead letter."""
        from cronhub.engine import completion_for_crash

        engine = self.engine

        def policy(run: Run) -> Completion:
            job = engine.jobs.get(run.job)
            completion = completion_for_crash(job, run, now)
            # No storage read here (this runs inside the reaper's transaction): a crash always
            # alerts, and a dead letter alert follows when retries are exhausted.
            alerts = engine.alerts_for(
                job,
                run,
                RunStatus.CRASHED,
                error=f"Crashed: lease of instance {run.instance} expired",
                dead_letter=completion.dead_letter,
            )
            return Completion(
                completion.status,
                completion.finished_at,
                error_type="Crashed",
                error_message=f"lease of instance {run.instance} expired: the owner stopped",
                retry_at=completion.retry_at,
                dead_letter=completion.dead_letter,
                alerts=tuple(alerts),
            )

        crashed = await engine.io_retry("reap", engine.hub.storage.reap, now=now, policy=policy)
        if crashed:
            engine.delivery.wake()
        for run in crashed:
            log.warning("run %d of %s on %s crashed (lease expired)", run.id, run.job, run.instance)
            await engine.pm.call_each("cronhub_run_finished", run=run)
        return crashed

    # -- shutdown ------------------------------------------------------------------------
    async def shutdown(self, grace: float) -> None:
        """Let active runs finish within ``grace`` seconds, cancel the rest, stop writing."""
        engine = self.engine
        if self._tasks:
            log.info("waiting up to %gs for %d running job(s)", grace, len(self._tasks))
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            if pending:
                for run_id in list(self._active):
                    self.cancel_local(run_id, SHUTDOWN)
                await asyncio.wait(pending, timeout=max(5.0, engine.lease_ttl))
        while self._pending or self._writing:
            await asyncio.sleep(0.01)
        if self._tasks:
            # What the last batches left to do: lost answers to settle, hooks to call.
            await asyncio.wait(set(self._tasks), timeout=max(5.0, engine.lease_ttl))
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            # Anything still marked running here (a run whose outcome could not be written)
            # is released as cancelled rather than left for the reaper.
            await engine.io(
                engine.hub.storage.release,
                instance=engine.instance,
                now=engine.clock.now(),
                status=RunStatus.CANCELLED,
            )
