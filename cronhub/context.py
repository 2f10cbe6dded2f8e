"""``RunContext``: what a job function receives, and the capture of what it logs."""

from __future__ import annotations

import io
import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cronhub.jobs import Job
    from cronhub.runs import Run

_FORMAT = "%(asctime)s %(levelname)s %(message)s"
#: One formatter for every capture (building one per run parses the format each time).
_FORMATTER = logging.Formatter(_FORMAT)


class LogCapture(logging.Handler):
    """Collects the records of one run's logger as text (the run's ``log``)."""

    def __init__(self, limit: int = 256 * 1024) -> None:
        super().__init__(logging.DEBUG)
        self.formatter = _FORMATTER
        self._buffer = io.StringIO()
        self._limit = limit
        self._truncated = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad format string in the job's call must not fail the run
            text = f"{record.levelname} {record.msg!r} {record.args!r}"
        if self._buffer.tell() + len(text) > self._limit:
            if not self._truncated:
                self._buffer.write("... log truncated\n")
                self._truncated = True
            return
        self._buffer.write(text + "\n")

    def text(self) -> str:
        """Everything captured so far."""
        return self._buffer.getvalue()


class RunLogger(logging.Logger):
    """One run's logger (``cronhub.job.<name>``'s child); :meth:`text` is what it captured.

    Not registered with :mod:`logging`'s manager: registering it (and ``setLevel``, which
    clears every logger's level cache) cost more than the rest of a run's start-up once
    thousands of runs start in one second. The capturing handler is made when the first record
    arrives, so a job that does not log costs no handler at all. Records also propagate to
    the application's logging, so a worker's console shows them.
    """

    _first_record = threading.Lock()

    def __init__(self, job_name: str, run_id: int | str) -> None:
        super().__init__(f"cronhub.job.{job_name}.{run_id}", logging.DEBUG)
        self.parent = logging.getLogger(f"cronhub.job.{job_name}")
        self.capture: LogCapture | None = None

    def handle(self, record: logging.LogRecord) -> None:
        if self.capture is None:
            with self._first_record:  # a thread job and the loop may log at once
                if self.capture is None:
                    self.capture = LogCapture()
                    self.addHandler(self.capture)
        super().handle(record)

    def text(self) -> str:
        """Everything the run logged so far."""
        return self.capture.text() if self.capture is not None else ""


def run_logger(job_name: str, run_id: int | str) -> RunLogger:
    """A logger for one run, capturing what it logs (see :class:`RunLogger`)."""
    return RunLogger(job_name, run_id)


def release_logger(logger: RunLogger) -> None:
    """Detach the capture from the per-run logger."""
    if logger.capture is not None:
        logger.removeHandler(logger.capture)


class RunContext:
    """What a job function may take as its one argument.

    ``ctx.log`` is the run's logger (what it logs becomes the run's ``log``); it is made the
    first time a job uses it, so a job that never logs costs no logger. ``ctx.cancelled``
    turns true when the run should stop (a timeout in a thread, a lost lease, a cancel from
    the dashboard, shutdown): a long thread job should check it.
    """

    __slots__ = ("_cancelled", "_log", "attempt", "job", "params", "run", "scheduled_for")

    #: Guards the first use of ``log`` (a thread job and the loop may both reach it).
    _making_log = threading.Lock()

    def __init__(
        self,
        job: Job | None,
        run: Run,
        log: logging.Logger | None = None,
        scheduled_for: datetime | None = None,
        attempt: int = 1,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.job = job
        self.run = run
        #: The nominal slot in UTC, or ``None`` for a manual run.
        self.scheduled_for = scheduled_for
        self.attempt = attempt
        self.params: dict[str, Any] = {} if params is None else params
        self._log = log
        self._cancelled = False

    def __repr__(self) -> str:
        job = self.job.name if self.job is not None else self.run.job
        return (
            f"RunContext(job={job!r}, run={self.run.id!r}, "
            f"scheduled_for={self.scheduled_for!r}, attempt={self.attempt!r})"
        )

    @property
    def log(self) -> logging.Logger:
        """The run's logger (``cronhub.job.<name>.<run id>``)."""
        if self._log is None:
            with self._making_log:
                if self._log is None:
                    self._log = run_logger(self.run.job, self.run.id)
        return self._log

    def log_text(self) -> str:
        """What the run logged so far through :attr:`log` (empty if it never logged)."""
        logger = self._log
        return logger.text() if isinstance(logger, RunLogger) else ""

    def release(self) -> None:
        """Detach the log capture (the run ended)."""
        if isinstance(self._log, RunLogger):
            release_logger(self._log)

    @property
    def cancelled(self) -> bool:
        """``True`` once the run was asked to stop."""
        return self._cancelled

    def cancel(self) -> None:
        """Ask the job to stop (sets :attr:`cancelled`)."""
        self._cancelled = True
