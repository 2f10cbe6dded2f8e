"""Test kit for cronhub and plugin authors: an opt-in pytest plugin.

Enable it with ``pytest_plugins = ["cronhub.testing"]`` in ``conftest.py``. It provides:

- ``plugin_manager``: a fresh manager with the built-in plugins only;
- ``register_plugin(obj, name=None)``: registers an inline plugin for one test;
- ``fake_distribution(name, version, entry_points, modules)``: writes a real ``.dist-info``
  folder and modules under ``tmp_path`` and puts them on ``sys.path`` (no mocks);
- ``hook_calls``: the hook calls made during the test, recorded by pluggy's monitoring;
- ``clock``: a :class:`FakeClock`; ``hub``: a ``memory://`` hub on that clock;
- ``StorageContract``: the conformance suite storage plugins subclass (see
  :mod:`cronhub.storage_contract`).
"""

from __future__ import annotations

import asyncio
import heapq
import importlib
import itertools
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cronhub.hub import Hub
from cronhub.plugins import CronhubPluginManager, get_plugin_manager

if TYPE_CHECKING:
    from cronhub.engine import Engine
    from cronhub.storage import Storage


class FakeClock:
    """A clock that moves only when told to, for fast deterministic engine tests.

    ``await clock.sleep(s)`` returns once :meth:`advance` (or :meth:`set`) moved time past
    its deadline. ``advance`` may be called from the test's own coroutine; follow it by
    ``await clock.settle()`` to let woken tasks run.
    """

    #: The scheduler loop may sleep this long at once: the fake wall clock only steps when a
    #: test says so (:meth:`jump`), and long sleeps keep multi-day tests fast.
    max_sleep: float = 3600.0

    def __init__(self, start: datetime | str = "2026-01-05T00:00:00+00:00") -> None:
        if isinstance(start, str):
            start = datetime.fromisoformat(start)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._now = start.astimezone(UTC)
        self._mono = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._counter), future))
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the sleepers whose deadline passed."""
        if seconds < 0:
            raise ValueError("use jump() to move the wall clock back")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        self._wake()

    def set(self, when: datetime | str) -> None:
        """Move the wall clock to ``when`` (forward only; monotonic time follows)."""
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        self.advance((when - self._now).total_seconds())

    def jump(self, seconds: float) -> None:
        """Move the wall clock by ``seconds`` (either way) without moving monotonic time.

        This is what NTP corrections or a suspended laptop look like to a process.
        """
        self._now += timedelta(seconds=seconds)
        self._wake()

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (a test of "no polling" counts these)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def next_deadline(self) -> float | None:
        """Seconds until the earliest pending sleep ends, or ``None``."""
        pending = [d for d, _, f in self._sleepers if not f.done()]
        return min(pending) - self._mono if pending else None

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @staticmethod
    async def settle(rounds: int = 20) -> None:
        """Let woken tasks and worker threads run."""
        for _ in range(rounds):
            await asyncio.sleep(0.001)

    async def run_until(self, when: datetime | str, *, step: float = 1.0) -> None:
        """Advance in ``step`` increments up to ``when``, letting tasks react each step."""
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        while self._now < when:
            self.advance(min(step, (when - self._now).total_seconds()))
            await self.settle()


@dataclass(frozen=True)
class HookCall:
    """One recorded hook call."""

    hook: str
    kwargs: dict[str, Any]


class HookRecorder:
    """Records every hook call of a plugin manager: pluggy dispatches and ``call_*`` helpers."""

    def __init__(self, pm: CronhubPluginManager) -> None:
        self.calls: list[HookCall] = []

        def before(hook_name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
            self.calls.append(HookCall(hook_name, dict(kwargs)))

        def after(outcome: Any, hook_name: str, impls: Any, kwargs: Any) -> None:
            return None

        undo_monitoring = pm.add_hookcall_monitoring(before, after)
        undo_listener = pm.add_call_listener(
            lambda hook_name, kwargs: self.calls.append(HookCall(hook_name, dict(kwargs)))
        )

        def undo() -> None:
            undo_monitoring()
            undo_listener()

        self._undo = undo

    def named(self, hook: str) -> list[HookCall]:
        """The calls of one hook, in order."""
        return [call for call in self.calls if call.hook == hook]

    def close(self) -> None:
        """Stop recording."""
        self._undo()


def write_distribution(
    root: Path,
    name: str,
    version: str = "1.0",
    entry_points: Mapping[str, str] | None = None,
    modules: Mapping[str, str] | None = None,
) -> Path:
    """Write an installed-looking distribution under ``root``: ``.dist-info`` plus modules.

    :param entry_points: ``{"name": "module"}`` of group ``cronhub``.
    :param modules: ``{"pkg/__init__.py": "source"}``; sources are dedented.
    """
    root.mkdir(parents=True, exist_ok=True)
    safe = name.replace("-", "_")
    info = root / f"{safe}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[cronhub]", *(f"{k} = {v}" for k, v in (entry_points or {}).items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for relative, source in (modules or {}).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def plugin_manager() -> CronhubPluginManager:
    """A fresh plugin manager with the built-in plugins only."""
    return get_plugin_manager(entrypoints=False, trace=False)


@pytest.fixture
def register_plugin(plugin_manager: CronhubPluginManager) -> Iterator[Callable[..., Any]]:
    """``register_plugin(obj, name=None)``: register an inline plugin for this test."""
    registered: list[object] = []

    def register(plugin: object, name: str | None = None) -> object:
        plugin_manager.register(plugin, name=name)
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        if plugin_manager.is_registered(plugin):
            plugin_manager.unregister(plugin)


@pytest.fixture
def fake_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """``fake_distribution(name, version, entry_points, modules)``: a real installed dist.

    Each call writes a separate folder on ``sys.path``; modules it adds are forgotten after
    the test.
    """
    counter = itertools.count()
    added_modules: set[str] = set()

    def make(
        name: str,
        version: str = "1.0",
        entry_points: Mapping[str, str] | None = None,
        modules: Mapping[str, str] | None = None,
    ) -> Path:
        root = write_distribution(
            tmp_path / f"site-{next(counter)}", name, version, entry_points, modules
        )
        monkeypatch.syspath_prepend(str(root))
        for relative in modules or {}:
            added_modules.add(relative.split("/")[0].removesuffix(".py"))
        importlib.invalidate_caches()
        return root

    yield make
    for module in list(sys.modules):
        if module.split(".")[0] in added_modules:
            del sys.modules[module]


@pytest.fixture
def hook_calls(plugin_manager: CronhubPluginManager) -> Iterator[HookRecorder]:
    """Records the hook calls of ``plugin_manager`` during the test."""
    recorder = HookRecorder(plugin_manager)
    yield recorder
    recorder.close()


@pytest.fixture
def clock() -> FakeClock:
    """A :class:`FakeClock` starting on Monday 2026-01-05 00:00 UTC."""
    return FakeClock()


@pytest.fixture
def hub(plugin_manager: CronhubPluginManager, clock: FakeClock) -> Iterator[Hub]:
    """A hub on ``memory://`` storage, the fake clock and the fresh plugin manager."""
    from cronhub.config import load_settings

    settings = load_settings({"storage": "memory://", "instance_id": "test-instance"}, cwd="/")
    hub = Hub(storage="memory://", clock=clock, plugin_manager=plugin_manager, settings=settings)
    yield hub
    hub.close()


def make_hub(
    plugin_manager: CronhubPluginManager,
    clock: FakeClock | None,
    storage: Storage | None = None,
    **settings: Any,
) -> Hub:
    """A hub on ``memory://`` for engine tests: instance ``engine-a``, no reaper rounds.

    :param storage: An opened storage to share (several hubs on one storage are several
        instances); by default the hub opens its own ``memory://``.
    :param settings: Settings that override those defaults (``instance_id="engine-b"``).
    """
    from cronhub.config import load_settings

    values: dict[str, Any] = {
        "storage": "memory://",
        "instance_id": "engine-a",
        "reaper_interval": 3600.0,
    }
    values.update(settings)
    hub = Hub(
        storage="memory://",
        clock=clock,
        plugin_manager=plugin_manager,
        settings=load_settings(values, cwd="/"),
    )
    if storage is not None:
        hub._storage = storage
    return hub


async def advance_to(engine: Engine, clock: FakeClock, when: datetime | str) -> None:
    """Advance the fake clock wake-up by wake-up until ``when``, letting the engine work."""
    when = datetime.fromisoformat(when) if isinstance(when, str) else when
    await engine.wait_idle()
    while clock.now() < when:
        deadline = clock.next_deadline()
        step = (when - clock.now()).total_seconds()
        if deadline is not None:
            step = min(step, max(deadline, 0.0))
        clock.advance(step)
        await engine.wait_idle()


def __getattr__(name: str) -> Any:
    # The conformance suite imports pytest fixtures of its own; load it on first use only.
    if name == "StorageContract":
        from cronhub.storage_contract import StorageContract

        return StorageContract
    raise AttributeError(name)
