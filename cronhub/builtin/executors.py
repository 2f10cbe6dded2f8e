"""Built-in executors: ``async`` (event loop), ``thread``, ``process`` (a timeout kills it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from cronhub.context import LogCapture
from cronhub.executors import Outcome
from cronhub.params import keyword_arguments, signature_of
from cronhub.plugins import hookimpl
from cronhub.runs import RunStatus

if TYPE_CHECKING:
    from cronhub.context import RunContext
    from cronhub.jobs import Job


def _call(job: Job, ctx: RunContext) -> Any:
    # Job parameters the function declares are passed by keyword; all are in ctx.params.
    kwargs = keyword_arguments(signature_of(job.func), ctx.params) if ctx.params else {}
    if not job.takes_context:
        return job.func(**kwargs)
    return job.func(ctx, **kwargs)


class AsyncExecutor:
    """Awaits ``async def`` jobs in the scheduler's event loop; a timeout cancels the task."""

    name = "async"

    async def execute(self, job: Job, ctx: RunContext, timeout: float | None) -> Outcome:
        try:
            result = _call(job, ctx)
            if asyncio.iscoroutine(result):
                if timeout is None:  # the common case: no timer to arm
                    await result
                else:
                    limit = asyncio.timeout(timeout)
                    try:
                        async with limit:
                            await result
                    except TimeoutError as exc:
                        if not limit.expired():
                            raise  # the job's own TimeoutError (a socket's, say): it failed
                        ctx.cancel()
                        return _timed_out(timeout, exc)
        except asyncio.CancelledError:
            ctx.cancel()
            raise
        except BaseException as exc:  # SystemExit in a job must not end the scheduler
            return Outcome.from_exception(exc)
        return _SUCCEEDED


#: Outcomes are immutable: every succeeded run shares this one.
_SUCCEEDED = Outcome(RunStatus.SUCCEEDED)


class ThreadExecutor:
    """Runs plain functions in a thread pool.

    Python cannot kill a thread: on timeout or cancel the run ends at once with
    ``ctx.cancelled`` set, and the thread stops when the job checks it (or returns).
    """

    name = "thread"

    def __init__(self, max_workers: int = 64) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._max_workers = max_workers
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="cronhub-job")
            return self._pool

    async def execute(self, job: Job, ctx: RunContext, timeout: float | None) -> Outcome:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor(), _call, job, ctx)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError as exc:
            if future.done() and not future.cancelled() and future.exception() is not None:
                return Outcome.from_exception(exc)  # the job's own TimeoutError: it failed
            ctx.cancel()
            future.add_done_callback(_consume)
            return _timed_out(timeout, exc)
        except asyncio.CancelledError:
            ctx.cancel()
            future.add_done_callback(_consume)
            raise
        except BaseException as exc:  # SystemExit in a job must not end the scheduler
            return Outcome.from_exception(exc)
        return Outcome(RunStatus.SUCCEEDED)


def _consume(future: asyncio.Future[Any]) -> None:
    # The job's thread outlived its run; swallow its late result or exception.
    if not future.cancelled():
        future.exception()


def _timed_out(timeout: float | None, exc: BaseException) -> Outcome:
    return Outcome(
        RunStatus.TIMED_OUT,
        error_type="TimeoutError",
        error_message=f"the run exceeded its timeout of {timeout:g} s",
    )


# -- process executor ------------------------------------------------------------------------


def _child_main(conn: multiprocessing.connection.Connection, payload: bytes) -> None:
    """Entry point of a process run: unpickle, run, send back an Outcome with the log."""
    job_name, module, qualname, takes_context, ctx_fields = pickle.loads(payload)
    capture = LogCapture()
    logger = logging.getLogger(f"cronhub.job.{job_name}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    try:
        import importlib

        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        func = getattr(target, "func", target)  # a Job object wraps the function
        params = ctx_fields.get("params") or {}
        kwargs = keyword_arguments(signature_of(func), params) if params else {}
        if takes_context:
            from cronhub.context import RunContext

            ctx = RunContext(log=logger, **ctx_fields)
            result = func(ctx, **kwargs)
        else:
            result = func(**kwargs)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
        outcome = Outcome(RunStatus.SUCCEEDED, log=capture.text())
    except BaseException as exc:
        failed = Outcome.from_exception(exc)
        outcome = Outcome(
            failed.status, failed.error_type, failed.error_message, failed.traceback, capture.text()
        )
    conn.send(outcome)
    conn.close()


class ProcessExecutor:
    """Runs each run in a fresh process (``spawn``); a timeout or cancel kills it.

    The function must be importable at module level; its context reaches the child without
    the parent's logger, and the child's log comes back in the outcome.
    """

    name = "process"

    def __init__(self, start_method: str = "spawn") -> None:
        self._context = multiprocessing.get_context(start_method)

    async def execute(self, job: Job, ctx: RunContext, timeout: float | None) -> Outcome:
        ctx_fields = {
            "job": None,
            "run": ctx.run,
            "scheduled_for": ctx.scheduled_for,
            "attempt": ctx.attempt,
            "params": ctx.params,
        }
        payload = pickle.dumps(
            (job.name, job.func.__module__, job.func.__qualname__, job.takes_context, ctx_fields)
        )
        parent, child = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main, args=(child, payload), name=f"cronhub:{job.name}", daemon=True
        )
        process.start()
        child.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                outcome = await loop.run_in_executor(None, _receive, parent, process)
        except TimeoutError as exc:
            ctx.cancel()
            _kill(process)
            return _timed_out(timeout, exc)
        except asyncio.CancelledError:
            ctx.cancel()
            _kill(process)
            raise
        finally:
            parent.close()
        if outcome is None:
            code = process.exitcode
            return Outcome(
                RunStatus.FAILED,
                error_type="ProcessDied",
                error_message=f"the job's process ended with exit code {code} before reporting",
            )
        return outcome


def _receive(
    conn: multiprocessing.connection.Connection, process: multiprocessing.process.BaseProcess
) -> Outcome | None:
    while True:
        if conn.poll(0.05):
            try:
                outcome: Outcome = conn.recv()
            except (EOFError, OSError):
                outcome = None  # type: ignore[assignment]
            process.join(5)
            return outcome
        if not process.is_alive():
            # Drain a result sent just before exit.
            if conn.poll(0):
                with contextlib.suppress(EOFError, OSError):
                    return conn.recv()  # type: ignore[no-any-return]
            process.join()
            return None
        if conn.closed:
            return None


def _kill(process: multiprocessing.process.BaseProcess) -> None:
    if process.is_alive():
        process.kill()
    process.join(5)


_EXECUTORS = {e.name: e for e in (AsyncExecutor(), ThreadExecutor(), ProcessExecutor())}


@hookimpl(trylast=True)
def cronhub_executor(job: Job) -> AsyncExecutor | ThreadExecutor | ProcessExecutor | None:
    return _EXECUTORS.get(job.executor)  # type: ignore[return-value]
