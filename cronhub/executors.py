"""The ``Executor`` protocol and ``Outcome``: how a job's function is run and how it ended."""

from __future__ import annotations

import traceback as tb
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cronhub.runs import RunStatus
from cronhub.slots_init import stores_through_slots

if TYPE_CHECKING:
    from cronhub.context import RunContext
    from cronhub.jobs import Job


@stores_through_slots
@dataclass(frozen=True, slots=True)
class Outcome:
    """How one execution ended."""

    status: RunStatus
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    #: Log text produced outside the parent's capture (a process executor's child).
    log: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, status: RunStatus = RunStatus.FAILED) -> Outcome:
        """A failed outcome carrying ``exc``'s type, message and traceback."""
        return cls(
            status=status,
            error_type=type(exc).__qualname__,
            error_message=str(exc),
            traceback="".join(tb.format_exception(exc)),
        )


@runtime_checkable
class Executor(Protocol):
    """Runs a job's function for one run."""

    #: The name jobs use to ask for it (``job.executor``).
    name: str

    async def execute(self, job: Job, ctx: RunContext, timeout: float | None) -> Outcome:
        """Run ``job`` once and say how it ended.

        Must return ``timed_out`` when ``timeout`` seconds pass (and stop the work as far as
        the executor can), ``failed`` with the exception's details when the function raises,
        and must not raise itself. When the awaiting task is cancelled (a lost lease, a
        cancel request, shutdown) it stops the work as far as it can, sets
        ``ctx.cancelled``, and lets ``asyncio.CancelledError`` propagate.
        """
        ...
