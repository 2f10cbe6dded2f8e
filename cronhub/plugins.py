"""The plugin manager: built-in plugins, entry points of group ``cronhub``, errors, tracing.

Build one with :func:`get_plugin_manager`; nothing is loaded at import time.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import importlib_metadata
import pluggy

from cronhub import hookspecs
from cronhub.errors import HookError, PluginLoadError, UsageError

log = logging.getLogger("cronhub.plugins")

#: The marker plugins use: ``@cronhub.hookimpl``.
hookimpl = pluggy.HookimplMarker("cronhub")

ENTRY_POINT_GROUP = "cronhub"

#: Built-in plugins, registered first (so called last), under these short names.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("collect", "cronhub.builtin.collect"),
    ("memory", "cronhub.builtin.memory_storage"),
    ("locking", "cronhub.builtin.locking"),
    ("executors", "cronhub.builtin.executors"),
    ("alerts", "cronhub.builtin.alerts"),
    ("commands", "cronhub.builtin.commands"),
    ("schedule_commands", "cronhub.builtin.schedule_commands"),
)

#: Built-ins without which cronhub cannot work; disabling one is a usage error.
ESSENTIAL_PLUGINS = frozenset({"collect", "commands", "executors", "locking"})

_VERSION = importlib_metadata.version("cronhub")


@dataclass
class PluginInfo:
    """What ``cronhub plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form of ``cronhub plugins --json``."""
        return asdict(self)


def _split_names(value: str | None) -> list[str]:
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def _short_repr(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CronhubPluginManager(pluggy.PluginManager):
    """A pluggy manager that records plugin provenance and calls hooks the cronhub way."""

    def __init__(self) -> None:
        super().__init__("cronhub")
        self.add_hookspecs(hookspecs)
        #: Every plugin registered or that failed to load, by name.
        self.infos: dict[str, PluginInfo] = {}
        #: Entry points that failed to load.
        self.load_errors: list[PluginLoadError] = []
        self._blocked_names: set[str] = set()
        self._tracing = False
        self._call_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        #: :meth:`listened`'s answers, by hook name; emptied whenever an answer may change.
        self._listened: dict[str, bool] = {}

    # -- registration --------------------------------------------------------------------
    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        # Only cronhub_* attributes are hook implementations; everything else on a plugin
        # module (helpers, imported names) is ignored, like pytest's prefix filter.
        if not name.startswith("cronhub_"):
            return None
        return super().parse_hookimpl_opts(plugin, name)  # type: ignore[arg-type]

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin``, refusing ``async def`` implementations of firstresult hooks."""
        self._check_async_firstresult(plugin, name)
        self._listened.clear()
        return super().register(plugin, name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        """Unregister a plugin (by object or name); see :meth:`pluggy.PluginManager.unregister`."""
        self._listened.clear()
        return super().unregister(plugin, name)

    def add_hookspecs(self, module_or_class: object) -> None:
        """Add hook specifications; see :meth:`pluggy.PluginManager.add_hookspecs`."""
        if hasattr(self, "_listened"):
            self._listened.clear()
        super().add_hookspecs(module_or_class)

    def _check_async_firstresult(self, plugin: object, name: str | None) -> None:
        for attr in dir(plugin):
            if not attr.startswith("cronhub_"):
                continue
            caller = getattr(self.hook, attr, None)
            spec = getattr(caller, "spec", None)
            if spec is None or not spec.opts.get("firstresult"):
                continue
            function = getattr(plugin, attr)
            if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
                who = name or getattr(plugin, "__name__", None) or type(plugin).__name__
                # An awaitable is "not None" to pluggy, so an async provider would win every
                # dispatch without being asked (style guide, pluggy probe C.7).
                raise pluggy.PluginValidationError(
                    plugin,
                    f"plugin {who!r}: {attr} is a firstresult hook and must be a plain def, "
                    "not async def",
                )

    def block(self, names: Iterable[str]) -> None:
        """Block plugins by entry-point or distribution name."""
        for name in names:
            if name in ESSENTIAL_PLUGINS:
                raise UsageError(f"plugin {name} cannot be disabled")
            self._blocked_names.add(name)
            self.set_blocked(name)

    def is_blocked_entry_point(self, ep_name: str, dist_name: str | None) -> bool:
        """Whether an entry point is blocked by its own name or its distribution's."""
        if self.is_blocked(ep_name):
            return True
        return dist_name is not None and (
            dist_name in self._blocked_names
            or dist_name.replace("_", "-").lower()
            in {n.replace("_", "-").lower() for n in self._blocked_names}
        )

    def load_builtins(self) -> None:
        """Register the built-in plugins, in ``BUILTIN_PLUGINS`` order."""
        import importlib

        for short_name, module_name in BUILTIN_PLUGINS:
            if self.is_blocked(short_name):
                self.infos[short_name] = PluginInfo(
                    name=short_name,
                    distribution="cronhub",
                    version=_VERSION,
                    module=module_name,
                    builtin=True,
                    disabled=True,
                )
                continue
            module = importlib.import_module(module_name)
            self.register(module, name=short_name)
            self.infos[short_name] = PluginInfo(
                name=short_name,
                distribution="cronhub",
                version=_VERSION,
                module=module_name,
                builtin=True,
            )

    def load_entrypoints(self, *, strict: bool = False) -> None:
        """Load every entry point of group ``cronhub``, one at a time.

        A plugin that fails to import or register is recorded in :attr:`load_errors` and
        logged as one line naming its entry point and distribution; the others still load.
        With ``strict`` the first failure is raised instead.
        """
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            dist_name = dist.name if dist is not None else None
            dist_version = dist.version if dist is not None else None
            if self.has_plugin(ep.name) or ep.name in self.infos:
                continue
            if self.is_blocked_entry_point(ep.name, dist_name):
                self.infos[ep.name] = PluginInfo(
                    name=ep.name,
                    distribution=dist_name,
                    version=dist_version,
                    module=ep.value,
                    disabled=True,
                )
                continue
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except Exception as exc:
                error = PluginLoadError(ep.name, ep.value, dist_name, dist_version, exc)
                self.infos[ep.name] = PluginInfo(
                    name=ep.name,
                    distribution=dist_name,
                    version=dist_version,
                    module=ep.value,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if strict:
                    raise error from exc
                self.load_errors.append(error)
                log.error("%s", error)
                continue
            self.infos[ep.name] = PluginInfo(
                name=ep.name, distribution=dist_name, version=dist_version, module=ep.value
            )

    def check_unknown_hooks(self, *, strict: bool = False) -> None:
        """Find ``cronhub_*`` implementations that match no hookspec (a misspelt hook).

        The plugin is unregistered and reported (fatal with ``strict``).
        """
        for name, plugin in list(self.list_name_plugin()):
            unknown = []
            for caller in self.get_hookcallers(plugin) or []:
                if caller.spec is None:
                    unknown.append(caller.name)
            if not unknown:
                continue
            info = self.infos.get(name) or PluginInfo(name=name)
            dist = (
                f" (distribution {info.distribution} {info.version})" if info.distribution else ""
            )
            message = (
                f"plugin {name!r}{dist} implements unknown hook(s) {', '.join(sorted(unknown))}"
            )
            if strict:
                raise UsageError(message)
            log.warning("%s; the plugin is not used", message)
            self.unregister(plugin)
            info.error = message
            self.infos[name] = info

    def warn_unknown_blocked(self) -> None:
        """Warn about disabled names that match no plugin (a typo, most likely)."""
        known = set(self.infos) | {i.distribution for i in self.infos.values() if i.distribution}
        normalized = {k.replace("_", "-").lower() for k in known}
        for name in sorted(self._blocked_names):
            if name not in known and name.replace("_", "-").lower() not in normalized:
                log.warning(
                    "cannot disable unknown plugin %r (known plugins: %s)",
                    name,
                    ", ".join(sorted(self.infos)),
                )

    # -- listing -------------------------------------------------------------------------
    def list_plugins(self) -> list[PluginInfo]:
        """Every plugin, loaded or not, with the hooks it implements."""
        for name, plugin in self.list_name_plugin():
            if plugin is None:  # a blocked name: pluggy keeps it as a placeholder
                continue
            info = self.infos.setdefault(name, PluginInfo(name=name, module=_module_of(plugin)))
            info.hooks = sorted(c.name for c in self.get_hookcallers(plugin) or [])
        return list(self.infos.values())

    def plugin_modules(self) -> list[tuple[str, ModuleType]]:
        """The modules registered from entry points, with their entry-point names."""
        result = []
        for name, plugin in self.list_name_plugin():
            info = self.infos.get(name)
            if info is None or info.builtin or not isinstance(plugin, ModuleType):
                continue
            result.append((name, plugin))
        return result

    def describe_plugin(self, name: str | None) -> str:
        """``plugin 'x' (distribution d 1.0)`` for messages."""
        if name is None:
            return "an unnamed plugin"
        info = self.infos.get(name)
        if info is None or not info.distribution:
            return f"plugin {name!r}"
        if info.builtin:
            return f"built-in plugin {name!r}"
        return f"plugin {name!r} (distribution {info.distribution} {info.version})"

    # -- tracing -------------------------------------------------------------------------
    def enable_tracing(self) -> None:
        """Log every hook call, its implementations and its result to ``cronhub.plugins``."""
        if self._tracing:
            return
        self._tracing = True

        def before(hook_name: str, impls: Sequence[Any], kwargs: dict[str, Any]) -> None:
            log.info(
                "hook %s(%s) -> %s",
                hook_name,
                ", ".join(f"{k}={_short_repr(v, 60)}" for k, v in kwargs.items()),
                [impl.plugin_name for impl in impls],
            )

        def after(outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Any) -> None:
            exc = outcome.exception
            if exc is not None:
                log.info("hook %s raised %s: %s", hook_name, type(exc).__name__, exc)
            else:
                log.info("hook %s returned %s", hook_name, _short_repr(outcome.get_result()))

        self.add_hookcall_monitoring(before, after)

    # -- calling hooks -------------------------------------------------------------------
    def add_call_listener(
        self, listener: Callable[[str, dict[str, Any]], None]
    ) -> Callable[[], None]:
        """Be told of every hook call made through the ``call_*`` helpers; returns an undo.

        pluggy's own monitoring (``add_hookcall_monitoring``) only sees calls dispatched by
        ``pm.hook.<name>(...)``; the helpers call implementations one by one to name failures.
        """
        self._call_listeners.append(listener)
        self._listened.clear()

        def undo() -> None:
            self._call_listeners.remove(listener)
            self._listened.clear()

        return undo

    def _plain_impls(self, hook_name: str, kwargs: dict[str, Any]) -> list[Any]:
        """Implementations in call order (last registered first), wrappers left out."""
        for listener in list(self._call_listeners):
            listener(hook_name, kwargs)
        impls = reversed(getattr(self.hook, hook_name).get_hookimpls())
        return [i for i in impls if not (i.hookwrapper or getattr(i, "wrapper", False))]

    def call_collector(self, hook_name: str, /, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a collector hook per implementation; return ``(plugin name, result)`` pairs.

        A raising implementation becomes a :class:`HookError` naming the plugin.
        """
        results: list[tuple[str, Any]] = []
        for impl in self._plain_impls(hook_name, kwargs):
            if self._tracing:
                log.info("hook %s -> plugin %s", hook_name, impl.plugin_name)
            try:
                value = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                raise HookError(hook_name, impl.plugin_name, exc) from exc
            if inspect.isawaitable(value):
                _close(value)
                raise HookError(
                    hook_name,
                    impl.plugin_name,
                    TypeError(f"{hook_name} must not be async"),
                )
            if value is not None:
                results.append((impl.plugin_name, value))
        return results

    def call_provider(self, hook_name: str, /, **kwargs: Any) -> Any:
        """Call a firstresult hook; a raising implementation becomes a named ``HookError``."""
        for impl in self._plain_impls(hook_name, kwargs):
            # Mirror pluggy's firstresult loop so that a failure names its plugin.
            if self._tracing:
                log.info("hook %s -> plugin %s", hook_name, impl.plugin_name)
            try:
                value = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                raise HookError(hook_name, impl.plugin_name, exc) from exc
            if value is not None:
                return value
        return None

    def listened(self, hook_name: str) -> bool:
        """Whether calling ``hook_name`` reaches anyone (an implementation or a call listener).

        The per-run hooks check it first: most installations implement neither, and a call
        that reaches nobody still costs a coroutine per run.
        """
        answer = self._listened.get(hook_name)
        if answer is None:
            answer = self._listened[hook_name] = bool(self._call_listeners) or bool(
                getattr(self.hook, hook_name).get_hookimpls()
            )
        return answer

    async def call_each(self, hook_name: str, /, **kwargs: Any) -> list[HookError]:
        """Call every implementation of a notification hook; one failure never stops the rest.

        Awaitable results are awaited. Each failure is logged naming the plugin and returned.
        """
        errors: list[HookError] = []
        if not self.listened(hook_name):
            return errors
        for impl in self._plain_impls(hook_name, kwargs):
            if self._tracing:
                log.info("hook %s -> plugin %s", hook_name, impl.plugin_name)
            try:
                value = impl.function(*[kwargs[arg] for arg in impl.argnames])
                if inspect.isawaitable(value):
                    await value
            except Exception as exc:
                error = HookError(hook_name, impl.plugin_name, exc)
                errors.append(error)
                log.error("%s", error, exc_info=exc)
        return errors


def _close(value: object) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()


def _module_of(plugin: object) -> str | None:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return type(plugin).__module__


def get_plugin_manager(
    *,
    entrypoints: bool = True,
    disabled: Iterable[str] = (),
    strict: bool = False,
    trace: bool | None = None,
) -> CronhubPluginManager:
    """Build a fresh plugin manager: hookspecs, blocking, built-ins, then entry points.

    :param entrypoints: Load plugins of the entry-point group ``cronhub``.
    :param disabled: Plugin names (entry point or distribution) to block, added to
        ``CRONHUB_DISABLE_PLUGINS``.
    :param strict: Make a plugin that fails to load, or implements an unknown hook, fatal.
    :param trace: Log hook calls; default from ``CRONHUB_TRACE_PLUGINS``.
    """
    pm = CronhubPluginManager()
    if trace is None:
        trace = os.environ.get("CRONHUB_TRACE_PLUGINS", "") not in ("", "0", "false")
    if trace:
        pm.enable_tracing()
    pm.block([*_split_names(os.environ.get("CRONHUB_DISABLE_PLUGINS")), *disabled])
    pm.load_builtins()
    if entrypoints:
        pm.load_entrypoints(strict=strict)
    pm.check_unknown_hooks(strict=strict)
    pm.warn_unknown_blocked()
    return pm
