"""Errors raised by cronhub; every message names the culprit (job, expression, plugin, value)."""

from __future__ import annotations

from typing import Any


class CronhubError(Exception):
    """Base class of every error cronhub raises on purpose.

    The CLI prints ``error: <message>`` on one line and exits 2 for these.
    """


class UsageError(CronhubError):
    """Bad input from the command line, a setting or an API call."""


class ScheduleError(CronhubError):
    """A cron expression, interval, one-off time or time zone that cannot be used.

    :param expression: The expression (or zone name) at fault, as the user wrote it.
    :param reason: Why it cannot be used.
    """

    def __init__(self, expression: object, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"{expression!r}: {reason}" if expression is not None else reason)


class JobDefinitionError(CronhubError):
    """A job defined with an option that cannot be used.

    :param job: The job's name.
    :param option: The option at fault (``cron``, ``timeout``, ...).
    :param value: The value given.
    :param reason: Why it is refused.
    """

    def __init__(self, job: str, option: str | None, value: Any, reason: str) -> None:
        self.job = job
        self.option = option
        self.value = value
        self.reason = reason
        where = f"option {option}={value!r}: " if option else ""
        super().__init__(f"job {job!r}: {where}{reason}")


class DuplicateJobError(CronhubError):
    """Two sources define a job of the same name."""

    def __init__(self, name: str, first: str, second: str) -> None:
        self.name = name
        self.sources = (first, second)
        super().__init__(f"job {name!r} is defined twice: by {first} and by {second}")


class UnknownJobError(UsageError):
    """A job name that no loaded plugin or application defines."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        hint = ""
        if known is not None:
            hint = f" (known jobs: {', '.join(sorted(known)) or 'none'})"
        super().__init__(f"unknown job {name!r}{hint}")


class PluginLoadError(CronhubError):
    """An entry point of group ``cronhub`` that could not be imported or registered.

    :param name: The entry point's name.
    :param value: The entry point's target (``package.module``).
    :param distribution: The distribution that declares it, or ``None`` if unknown.
    :param version: That distribution's version.
    :param cause: The exception raised while loading.
    """

    def __init__(
        self,
        name: str,
        value: str,
        distribution: str | None,
        version: str | None,
        cause: BaseException,
    ) -> None:
        self.name = name
        self.value = value
        self.distribution = distribution
        self.version = version
        self.cause = cause
        dist = f"distribution {distribution} {version}" if distribution else "unknown distribution"
        super().__init__(
            f"plugin {name!r} (entry point {name} = {value}, {dist}) failed to load: "
            f"{type(cause).__name__}: {cause}"
        )


class HookError(CronhubError):
    """A hook implementation raised.

    :param hook: The hook's name, e.g. ``cronhub_alert``.
    :param plugin: The name of the plugin whose implementation raised.
    :param cause: The exception.
    """

    def __init__(self, hook: str, plugin: str | None, cause: BaseException) -> None:
        self.hook = hook
        self.plugin = plugin
        self.cause = cause
        who = f"plugin {plugin!r}" if plugin else "a plugin"
        super().__init__(f"hook {hook} failed in {who}: {type(cause).__name__}: {cause}")


class StorageError(CronhubError):
    """The storage backend cannot be opened or answered with an error."""


class LeaseLost(CronhubError):
    """This instance no longer owns a run (its lease expired or it was cancelled)."""


class ParameterError(UsageError):
    """A parameter for a job function that the function cannot take.

    :param job: The job's name.
    :param parameter: The parameter at fault (``limit``, or ``items[2]`` inside a value), or
        ``None`` when the parameters as a whole are refused.
    :param reason: Why it is refused.
    """

    def __init__(self, job: str, parameter: str | None, reason: str) -> None:
        self.job = job
        self.parameter = parameter
        self.reason = reason
        where = f"parameter {parameter!r}: " if parameter else "parameters: "
        super().__init__(f"job {job!r}: {where}{reason}")


class ScheduleInputError(UsageError):
    """A field of a runtime schedule that cannot be used (expression, zone, window, kind).

    :param field: The field at fault: ``cron``, ``every``, ``at``, ``tz``, ``start``, ``end``...
    :param reason: Why it is refused; for expressions, the same text as ``cronhub next`` prints.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class UnknownScheduleError(UsageError):
    """A runtime schedule id that storage does not hold (never added, or removed)."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"unknown schedule {schedule_id!r}")
