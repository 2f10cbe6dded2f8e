"""``Job`` and the ``@cronhub.job`` decorator, with option validation that names the job."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cronhub.alerting import ALERT_KINDS
from cronhub.errors import JobDefinitionError, ScheduleError
from cronhub.params import JobSignature, signature_of
from cronhub.runs import Overlap
from cronhub.schedules import (
    AtSchedule,
    CronSchedule,
    EverySchedule,
    Schedule,
    get_zone,
    parse_duration,
)

CatchUp = Literal["latest", "all", "none"]
CATCH_UP_POLICIES: tuple[str, ...] = ("latest", "all", "none")
BUILTIN_EXECUTORS: tuple[str, ...] = ("async", "thread", "process")
_OVERLAPS: dict[str, Overlap] = {o.value: o for o in Overlap}
_OVERLAP_VALUES: tuple[str, ...] = tuple(_OVERLAPS)


class OnDemandSchedule:
    """The schedule of a job declared with ``on_demand=True``: no slot of its own.

    Such a job runs when asked (run now) and on the runtime schedules added for it, which is
    how a job whose parameters have no defaults is scheduled.
    """

    kind = "on_demand"
    tz = ZoneInfo("UTC")
    min_interval = None

    def __repr__(self) -> str:
        return "OnDemandSchedule()"

    def next_after(self, after: datetime) -> datetime | None:
        """Never: the job has no slot of its own."""
        return None

    def expression(self) -> None:
        """Nothing written (the job object shows ``"schedule": null``)."""
        return None

    def describe(self) -> str:
        """The schedule in words."""
        return "on demand (run now, or runtime schedules)"


@dataclass(frozen=True, eq=False)
class Job:
    """A scheduled job: a function, its schedule and its options. Immutable; see ``replace``.

    Calling a ``Job`` calls its function, so decorated functions stay testable.
    """

    name: str
    func: Callable[..., Any]
    schedule: Schedule
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    start: datetime | None = None
    end: datetime | None = None
    jitter: float = 0.0
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 10.0
    backoff: float = 2.0
    overlap: Overlap = Overlap.SKIP
    catch_up: str = "latest"
    misfire_grace: float = 60.0
    catch_up_limit: int = 100
    catch_up_window: float = 86400.0
    executor: str = "thread"
    run_on_startup: bool = False
    tags: tuple[str, ...] = ()
    description: str = ""
    #: Where the job came from: an entry point's name, ``app``, or a plugin's name.
    plugin: str = "app"
    #: Whether ``func`` takes a ``RunContext`` argument.
    takes_context: bool = False
    #: The alert kinds raised for this job (``alerts=False`` mutes it: an empty tuple).
    alerts: tuple[str, ...] = ALERT_KINDS

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    @property
    def kind(self) -> str:
        """``cron``, ``every`` or ``at``."""
        return self.schedule.kind

    def replace(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied (validated like the original options)."""
        return dataclasses.replace(self, **changes)

    def next_run(self, after: datetime) -> datetime | None:
        """The first slot strictly after ``after`` inside the ``start``/``end`` window."""
        if self.start is not None and after < self.start:
            after = self.start - timedelta(microseconds=1)
        slot = self.schedule.next_after(after)
        if slot is None or (self.end is not None and slot > self.end):
            return None
        return slot

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        return self.retry_delay * (self.backoff ** max(0, attempt - 1))

    def options(self) -> dict[str, Any]:
        """The job's options as JSON values (for ``list --json`` and the API)."""
        return {
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "backoff": self.backoff,
            "timeout": self.timeout,
            "overlap": str(self.overlap),
            "catch_up": self.catch_up,
            "misfire_grace": self.misfire_grace,
            "catch_up_limit": self.catch_up_limit,
            "catch_up_window": self.catch_up_window,
            "jitter": self.jitter,
            "executor": self.executor,
            "run_on_startup": self.run_on_startup,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "alerts": list(self.alerts),
        }


def job(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    cron: str | Sequence[str] | None = None,
    every: float | timedelta | str | None = None,
    at: datetime | str | None = None,
    tz: str | ZoneInfo | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    jitter: float | timedelta | str = 0,
    timeout: float | timedelta | str | None = None,
    retries: int = 0,
    retry_delay: float | timedelta | str = 10,
    backoff: float = 2.0,
    overlap: str = "skip",
    catch_up: str = "latest",
    misfire_grace: float | timedelta | str = 60,
    catch_up_limit: int = 100,
    catch_up_window: float | timedelta | str = "24h",
    executor: str | None = None,
    run_on_startup: bool = False,
    tags: Sequence[str] = (),
    description: str | None = None,
    alerts: bool | Sequence[str] = True,
    on_demand: bool = False,
) -> Any:
    """Declare a scheduled job. Exactly one of ``cron``, ``every`` and ``at`` is required,
    unless ``on_demand=True`` declares a job without a schedule of its own (it runs when
    asked, and on runtime schedules, see :mod:`cronhub.runtime_schedules`).

    The function takes its ``RunContext`` as first positional parameter (or nothing), and
    may take job parameters after it, filled by keyword from a run's JSON ``params`` (see
    :mod:`cronhub.params`). Parameters without a default need ``on_demand=True``: the
    job's own slots call it without parameters.

    Usable as ``@cronhub.job(cron="0 2 * * *")`` over a function, or called as
    ``cronhub.job(func, every="5m")``. Every option is validated here: a bad one raises
    :class:`~cronhub.errors.JobDefinitionError` naming the job, the option and the value.
    Returns the :class:`Job` (callable like the function).
    """
    options = {k: v for k, v in locals().items() if k != "func"}

    def decorate(function: Callable[..., Any]) -> Job:
        return make_job(function, **options)

    return decorate(func) if func is not None else decorate


def make_job(func: Callable[..., Any], **options: Any) -> Job:
    """Build and validate a :class:`Job` from the options of :func:`job`."""
    if not callable(func):
        raise JobDefinitionError(repr(func), None, func, "a job must be a function")
    name = options.get("name") or f"{func.__module__}.{func.__qualname__}"
    if not isinstance(name, str) or not name.strip():
        raise JobDefinitionError(str(name), "name", name, "must be a non-empty string")
    check = _Checker(name)
    signature = check.signature(func)
    tz = check.zone(options.get("tz"))
    start = check.instant("start", options.get("start"), tz)
    end = check.instant("end", options.get("end"), tz)
    if start and end and end <= start:
        raise JobDefinitionError(name, "end", end.isoformat(), "must be after start")
    on_demand = check.flag("on_demand", options.get("on_demand", False))
    schedule = check.schedule(options, tz, start, on_demand=on_demand)
    run_on_startup = check.flag("run_on_startup", options.get("run_on_startup", False))
    check.parameters(signature, on_demand=on_demand, run_on_startup=run_on_startup)
    timeout = options.get("timeout")
    overlap = check.choice("overlap", options.get("overlap", "skip"), _OVERLAP_VALUES)
    executor = options.get("executor") or _default_executor(func)
    if not isinstance(executor, str) or not executor:
        raise JobDefinitionError(name, "executor", executor, "must be an executor name")
    if executor == "process" and "<locals>" in getattr(func, "__qualname__", ""):
        raise JobDefinitionError(
            name, "executor", executor, "a process job must be a module-level function"
        )
    if executor != "async" and inspect.iscoroutinefunction(func):
        raise JobDefinitionError(
            name, "executor", executor, "an async def job runs with executor='async'"
        )
    tags = options.get("tags") or ()
    if tags and (isinstance(tags, str) or not all(isinstance(t, str) for t in tags)):
        raise JobDefinitionError(name, "tags", tags, "must be a list of strings")
    description = options.get("description")
    if description is None:
        description = _summary(func)
    interval = getattr(schedule, "interval", None)
    jitter = check.seconds("jitter", options.get("jitter", 0), allow_zero=True)
    if interval is not None and jitter and jitter >= interval.total_seconds():
        raise JobDefinitionError(
            name, "jitter", options.get("jitter"), "must be shorter than the interval"
        )
    return Job(
        name=name,
        func=func,
        schedule=schedule,
        tz=tz,
        start=start,
        end=end,
        jitter=jitter,
        timeout=None if timeout is None else check.seconds("timeout", timeout),
        retries=check.count("retries", options.get("retries", 0)),
        retry_delay=check.seconds("retry_delay", options.get("retry_delay", 10), allow_zero=True),
        backoff=check.number("backoff", options.get("backoff", 2.0), minimum=1.0),
        overlap=_OVERLAPS[overlap],
        catch_up=check.choice("catch_up", options.get("catch_up", "latest"), CATCH_UP_POLICIES),
        misfire_grace=check.seconds(
            "misfire_grace", options.get("misfire_grace", 60), allow_zero=True
        ),
        catch_up_limit=check.count("catch_up_limit", options.get("catch_up_limit", 100)),
        catch_up_window=check.seconds("catch_up_window", options.get("catch_up_window", "24h")),
        executor=executor,
        run_on_startup=run_on_startup,
        tags=tuple(tags),
        description=str(description),
        takes_context=signature.takes_context,
        alerts=check.alerts(options.get("alerts", True)),
    )


@functools.lru_cache(maxsize=1024)
def _first_doc_line(doc: str) -> str:
    return inspect.cleandoc(doc).strip().split("\n", 1)[0]


def _summary(func: Callable[..., Any]) -> str:
    """The first line of ``func``'s docstring as :func:`inspect.getdoc` reads it, or ``""``.

    Cached by docstring, not by function: nothing is kept alive, and a changed ``__doc__``
    is read anew.
    """
    doc = getattr(func, "__doc__", None)
    if isinstance(doc, str):
        return _first_doc_line(doc)
    if doc is None and type(func) is types.FunctionType:
        qualname = func.__qualname__
        # No class to inherit a docstring from (what getdoc looks for), so no docstring.
        if "." not in qualname or "<locals>" in qualname:
            return ""
    return (inspect.getdoc(func) or "").strip().split("\n", 1)[0]


def _default_executor(func: Callable[..., Any]) -> str:
    return "async" if inspect.iscoroutinefunction(func) else "thread"


#: The cron schedules of jobs, by expression and zone: jobs with the same ones share a
#: schedule (immutable but for its own caches), which saves a schedule object per job.
_CRON_SCHEDULES: weakref.WeakValueDictionary[tuple[str, ZoneInfo], CronSchedule] = (
    weakref.WeakValueDictionary()
)


def _cron_schedule(expression: str, tz: ZoneInfo) -> CronSchedule:
    """``CronSchedule(expression, tz)``, shared with the other jobs that have the same."""
    key = (expression, tz)
    schedule = _CRON_SCHEDULES.get(key)
    if schedule is None:
        schedule = _CRON_SCHEDULES.setdefault(key, CronSchedule(expression, tz))
    return schedule


#: Durations already read, by ``(option, allow_zero, type, value)``: most jobs leave the
#: duration options at their defaults (``"24h"``, ``60``...). Only values that were accepted;
#: the type is part of the key, so ``1`` and ``True`` (equal as keys) stay apart.
_SECONDS_MEMO: dict[tuple[str, bool, type, Any], float] = {}
_SECONDS_MEMO_SIZE = 1024
_MEMO_TYPES = (str, int, float)


class _Checker:
    """Validates options of one job; every error names the job, the option and the value."""

    def __init__(self, job: str) -> None:
        self.job = job

    def fail(self, option: str, value: Any, reason: str) -> JobDefinitionError:
        return JobDefinitionError(self.job, option, value, reason)

    def signature(self, func: Callable[..., Any]) -> JobSignature:
        signature = signature_of(func)
        if signature.positional_only:
            names = ", ".join(signature.positional_only)
            raise JobDefinitionError(
                self.job,
                None,
                None,
                f"a job function takes a RunContext, then parameters passed by keyword; "
                f"({names}) cannot be passed by keyword",
            )
        return signature

    def parameters(self, signature: JobSignature, *, on_demand: bool, run_on_startup: bool) -> None:
        # The job's own slots (and run_on_startup) call it without parameters.
        if on_demand and not run_on_startup:
            return
        for name in (p.name for p in signature.parameters if p.required):
            why = "run_on_startup calls it" if on_demand else "the job's own schedule calls it"
            raise JobDefinitionError(
                self.job,
                None,
                None,
                f"parameter {name!r} has no default, and {why} without parameters "
                "(give it a default, or declare the job with on_demand=True and add runtime "
                "schedules with parameters)",
            )

    def zone(self, value: Any) -> ZoneInfo:
        try:
            return get_zone(value)
        except ScheduleError as exc:
            raise self.fail("tz", value, exc.reason) from exc

    def instant(self, option: str, value: Any, tz: ZoneInfo) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError as exc:
                raise self.fail(option, value, "is not an ISO 8601 date and time") from exc
        if not isinstance(value, datetime):
            raise self.fail(option, value, "must be a datetime or an ISO 8601 string")
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return value.astimezone(UTC)

    def schedule(
        self, options: dict[str, Any], tz: ZoneInfo, start: datetime | None, *, on_demand: bool
    ) -> Schedule:
        given = [k for k in ("cron", "every", "at") if options.get(k) is not None]
        if on_demand:
            if given:
                raise JobDefinitionError(
                    self.job,
                    "on_demand",
                    True,
                    f"a job on demand has no schedule of its own (given: {', '.join(given)})",
                )
            return OnDemandSchedule()  # type: ignore[return-value]
        if len(given) != 1:
            detail = ", ".join(given) if given else "none"
            hint = "" if given else "; on_demand=True declares a job that runs only when asked"
            raise JobDefinitionError(
                self.job,
                None,
                None,
                f"exactly one of cron, every, at is required (given: {detail}){hint}",
            )
        kind = given[0]
        value = options[kind]
        try:
            if kind == "cron":
                if not isinstance(value, str) and not (
                    isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value)
                ):
                    raise self.fail("cron", value, "must be an expression or a list of them")
                return (
                    _cron_schedule(value, tz) if isinstance(value, str) else CronSchedule(value, tz)
                )
            if kind == "every":
                return EverySchedule(value, anchor=start)
            return AtSchedule(value, tz=tz)
        except ScheduleError as exc:
            raise self.fail(kind, value, exc.reason) from exc

    def seconds(self, option: str, value: Any, *, allow_zero: bool = False) -> float:
        kind = type(value)
        key = (option, allow_zero, kind, value) if kind in _MEMO_TYPES else None
        if key is not None and (known := _SECONDS_MEMO.get(key)) is not None:
            return known
        if isinstance(value, bool):
            raise self.fail(option, value, "must be seconds or a duration like '90s'")
        if allow_zero and isinstance(value, int | float) and value == 0:
            return 0.0
        try:
            seconds = parse_duration(value, what=option).total_seconds()
        except ScheduleError as exc:
            raise self.fail(option, value, exc.reason) from exc
        if key is not None:
            if len(_SECONDS_MEMO) >= _SECONDS_MEMO_SIZE:
                _SECONDS_MEMO.clear()
            _SECONDS_MEMO[key] = seconds
        return seconds

    def count(self, option: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(option, value, "must be a whole number >= 0")
        return value

    def number(self, option: str, value: Any, *, minimum: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(option, value, f"must be a number >= {minimum}")
        return float(value)

    def flag(self, option: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(option, value, "must be True or False")
        return value

    def alerts(self, value: Any) -> tuple[str, ...]:
        # True: every kind; False: muted; or a list of kinds (issue 6).
        if value is True:
            return ALERT_KINDS
        if value is False:
            return ()
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise self.fail("alerts", value, "must be True, False or a list of alert kinds")
        for kind in value:
            if kind not in ALERT_KINDS:
                raise self.fail("alerts", kind, f"must be one of {', '.join(ALERT_KINDS)}")
        return tuple(k for k in ALERT_KINDS if k in value)

    def choice(self, option: str, value: Any, choices: Sequence[str]) -> str:
        if value not in choices:
            raise self.fail(option, value, f"must be one of {', '.join(choices)}")
        return str(value)
