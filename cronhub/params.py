"""Job parameters: what a job function takes besides its ``RunContext``, and checking JSON.

A job function may take its :class:`~cronhub.context.RunContext` as its first positional
parameter, and **job parameters** after it, which cronhub fills by keyword from a run's
``params`` (a JSON object given by a runtime schedule or a run-now)::

    @cronhub.job(on_demand=True)
    def report(ctx: cronhub.RunContext, *, region: str, limit: int = 10) -> None: ...

The first positional parameter is the context unless it is annotated with another type
(``def f(region: str)`` takes no context). Every parameter a run passes is also in
``ctx.params``; a function that takes a context and declares no job parameters reads
``ctx.params`` itself, and accepts any JSON object.

Values are checked against the type hints before a schedule is stored or a run is queued:
``int``, ``float`` (an integer is accepted), ``str``, ``bool``, ``None``, ``list[...]``,
``dict[str, ...]``, ``Optional``/``Union``/``X | Y``, ``Literal[...]`` and ``Any``, nested. An
unannotated parameter takes any JSON value; a hint that JSON cannot fill (``datetime``, a class
of the application) refuses every value, so such a parameter keeps its default.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from cronhub.errors import ParameterError

#: Marks a parameter without a type hint (any JSON value).
ANY: Any = typing.Any
#: Largest JSON text of a run's parameters, in bytes (they are stored with every run).
MAX_PARAMS_BYTES = 64 * 1024

_EMPTY = inspect.Parameter.empty
_SUPPORTED = "int, float, str, bool, None, list[...], dict[str, ...], Optional, Union, Literal, Any"


@dataclass(frozen=True, slots=True)
class JobParameter:
    """One keyword parameter of a job function."""

    name: str
    #: The resolved type hint, or :data:`ANY` when there is none (or it cannot be resolved).
    hint: Any
    #: ``True`` when the parameter has no default.
    required: bool
    default: Any = None


@dataclass(frozen=True, slots=True)
class JobSignature:
    """What a job function takes, as far as cronhub calls it."""

    #: Whether the first positional parameter receives the ``RunContext``.
    takes_context: bool
    #: Parameters filled by keyword from a run's ``params``, in declaration order.
    parameters: tuple[JobParameter, ...] = ()
    #: The function has ``**kwargs``: every parameter name is accepted and passed.
    var_keyword: bool = False
    #: Positional-only parameters after the context (cronhub cannot pass them).
    positional_only: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The names of :attr:`parameters`."""
        return tuple(p.name for p in self.parameters)

    @property
    def required(self) -> tuple[str, ...]:
        """The parameters without a default: every run must give them."""
        return tuple(p.name for p in self.parameters if p.required)

    def get(self, name: str) -> JobParameter | None:
        """The parameter called ``name``, or ``None``."""
        return next((p for p in self.parameters if p.name == name), None)


def _is_context_hint(hint: Any) -> bool:
    from cronhub.context import RunContext

    if hint is RunContext:
        return True
    return isinstance(hint, str) and hint.split(".")[-1].strip("'\"") == "RunContext"


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    """Resolved type hints, or the raw annotations when they cannot all be resolved."""
    try:
        return typing.get_type_hints(func)
    except Exception:
        # A name only imported under TYPE_CHECKING, a partial, a callable object...: keep
        # what can be read; unresolved strings are not checked (see _check).
        target = inspect.unwrap(func)
        return dict(getattr(target, "__annotations__", {}) or {})


def signature_of(func: Callable[..., Any]) -> JobSignature:
    """The :class:`JobSignature` of ``func`` (cached per function)."""
    try:
        return _cached_signature(func)
    except TypeError:  # an unhashable callable object
        return _read_signature(func)


@functools.lru_cache(maxsize=4096)
def _cached_signature(func: Callable[..., Any]) -> JobSignature:
    return _read_signature(func)


def _read_signature(func: Callable[..., Any]) -> JobSignature:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        # No signature to read (some builtins): call it without arguments, as before.
        return JobSignature(takes_context=False)
    hints = _hints(func)
    takes_context = False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if positional:
        first = positional[0]
        hint = hints.get(first.name, _EMPTY)
        takes_context = hint is _EMPTY or hint is Any or _is_context_hint(hint)
    rest = [p for p in params if not (takes_context and p is positional[0])]
    parameters = []
    positional_only = []
    var_keyword = False
    for param in rest:
        if param.kind is param.VAR_KEYWORD:
            var_keyword = True
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.kind is param.POSITIONAL_ONLY:
            positional_only.append(param.name)
        else:
            hint = hints.get(param.name, _EMPTY)
            parameters.append(
                JobParameter(
                    name=param.name,
                    hint=ANY if hint is _EMPTY else hint,
                    required=param.default is _EMPTY,
                    default=None if param.default is _EMPTY else param.default,
                )
            )
    return JobSignature(takes_context, tuple(parameters), var_keyword, tuple(positional_only))


def keyword_arguments(signature: JobSignature, params: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments a call passes for ``params``: those the function declares."""
    if not params:
        return {}
    if signature.var_keyword:
        return dict(params)
    names = signature.names
    return {name: value for name, value in params.items() if name in names}


def check_params(job: str, signature: JobSignature, params: Any) -> dict[str, Any]:
    """Check ``params`` for a job with ``signature``; return them as a plain ``dict``.

    :param job: The job's name, for the error message.
    :raises ParameterError: Naming the job and the parameter: not a JSON object, an unknown
        or missing parameter, a value that is not JSON or does not match the type hint.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ParameterError(
            job, None, f"must be a JSON object of name: value, not {_kind_of(params)}"
        )
    checked: dict[str, Any] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name:
            raise ParameterError(job, str(name), "parameter names must be non-empty strings")
        problem = _json_problem(value, name)
        if problem is not None:
            raise ParameterError(job, problem[0], problem[1])
        checked[name] = value
    size = len(json.dumps(checked, ensure_ascii=False).encode())
    if size > MAX_PARAMS_BYTES:
        raise ParameterError(
            job, None, f"{size} bytes of JSON, more than the limit of {MAX_PARAMS_BYTES}"
        )
    free_form = signature.takes_context and not signature.parameters
    if not (signature.var_keyword or free_form):
        declared = signature.names
        for name in checked:
            if name not in declared:
                takes = ", ".join(declared) if declared else "none"
                raise ParameterError(
                    job, name, f"unknown parameter (the job function takes: {takes})"
                )
    for name in signature.required:
        if name not in checked:
            raise ParameterError(job, name, "missing required parameter")
    for name, value in checked.items():
        parameter = signature.get(name)
        if parameter is None:
            continue
        problem = _check(value, parameter.hint, name)
        if problem is not None:
            raise ParameterError(job, problem[0], problem[1])
    return checked


# -- values ----------------------------------------------------------------------------------


def _kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_kind_of(value)})"


def _json_problem(value: Any, path: str) -> tuple[str, str] | None:
    """``(path, reason)`` when ``value`` is not plain JSON (str keys, finite numbers)."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, f"{value!r} is not a JSON number")
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _json_problem(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"key {key!r} is not a string (JSON object keys are strings)"
            found = _json_problem(item, f"{path}.{key}")
            if found:
                return found
        return None
    return path, f"{_show(value)} is not a JSON value"


def type_name(hint: Any) -> str:
    """A type hint as a reader writes it: ``int``, ``list[str]``, ``int | None``."""
    if hint is ANY:
        return "Any"
    if hint is None or hint is type(None):
        return "None"
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{', '.join(type_name(a) for a in args)}]" if args else base
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _check(value: Any, hint: Any, path: str) -> tuple[str, str] | None:
    """``None`` when ``value`` fits ``hint``, else ``(path of the culprit, reason)``."""
    if hint is ANY or hint is object or isinstance(hint, str | typing.ForwardRef):
        return None  # no hint, or one that could not be resolved: not checked
    if isinstance(hint, typing.TypeVar):
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _check(value, args[0], path)
    if hint is None or hint is type(None):
        return None if value is None else _mismatch(value, hint, path)
    if origin in (Union, types.UnionType):
        if any(_check(value, option, path) is None for option in args):
            return None
        # One option of the right container kind names the deeper culprit best.
        for option in args:
            option_origin = typing.get_origin(option) or option
            if option_origin in (list, dict) and isinstance(value, option_origin):
                return _check(value, option, path)
        return _mismatch(value, hint, path)
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return None
        return path, f"expected one of {', '.join(repr(a) for a in args)}, got {_show(value)}"
    if hint is bool:
        return None if isinstance(value, bool) else _mismatch(value, hint, path)
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else _mismatch(value, hint, path)
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else _mismatch(value, hint, path)
    if hint is str:
        return None if isinstance(value, str) else _mismatch(value, hint, path)
    container = origin or hint
    if container in (list, Sequence, typing.List):  # noqa: UP006 - matching old-style hints
        if not isinstance(value, list | tuple):
            return _mismatch(value, hint, path)
        item_hint = args[0] if args else ANY
        for index, item in enumerate(value):
            found = _check(item, item_hint, f"{path}[{index}]")
            if found:
                return found
        return None
    if container in (dict, Mapping, typing.Dict):  # noqa: UP006 - matching old-style hints
        if not isinstance(value, Mapping):
            return _mismatch(value, hint, path)
        key_hint, item_hint = args if len(args) == 2 else (ANY, ANY)
        if key_hint not in (str, ANY):
            return path, f"has type {type_name(hint)}: JSON object keys are always strings"
        for key, item in value.items():
            found = _check(item, item_hint, f"{path}.{key}")
            if found:
                return found
        return None
    return path, (
        f"has type {type_name(hint)}, which a JSON value cannot fill "
        f"(supported: {_SUPPORTED}); it keeps its default"
    )


def _mismatch(value: Any, hint: Any, path: str) -> tuple[str, str]:
    return path, f"expected {type_name(hint)}, got {_show(value)}"
