"""Storage fault injection for tests: ``FaultyStorage`` and the ``faulty+`` URL plugin.

``FaultyStorage`` wraps a real storage and makes a fraction ``p`` of its transactions fail,
drawn from a seeded random generator, at one of three points:

- ``connect``: the transaction never starts (the database is unreachable);
- ``before_commit``: the transaction's statements ran, then it fails and is rolled back;
- ``after_commit``: the transaction committed, but the caller sees an error anyway (the answer
  was lost: a dropped connection, a timeout), so a retry meets its own earlier write.

For the SQL storages (anything with cronhub's ``SqlStorage._run`` transaction runner) the faults
are injected around each real transaction, so ``before_commit`` rolls real work back and
``after_commit`` follows a real commit. Any other storage is wrapped method by method: the
write happens before an ``after_commit`` fault, not at all before the other two.

Use it directly (``FaultyStorage(SqliteStorage(url), p=0.2, seed=1)``) or register
:class:`FaultPlugin` on a plugin manager and give the hub a ``faulty+sqlite:///...`` URL.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from cronhub.errors import StorageError
from cronhub.plugins import hookimpl

T = TypeVar("T")

#: Where a fault can strike, in the order a transaction passes them.
FAULT_POINTS: tuple[str, ...] = ("connect", "before_commit", "after_commit")

#: Storage methods that are not transactions of the running scheduler: never faulted.
_LIFECYCLE = frozenset({"open", "close", "migrate", "schema_version", "url"})


class InjectedFault(StorageError):
    """A storage error raised on purpose by :class:`FaultyStorage`."""

    def __init__(self, point: str, what: str) -> None:
        super().__init__(f"injected fault {point} ({what})")
        #: One of :data:`FAULT_POINTS`.
        self.point = point


class FaultyStorage:
    """A storage whose transactions fail with probability ``p`` (see the module docstring).

    :param inner: The real storage (not yet opened, or opened).
    :param p: Probability that one transaction fails, between 0 and 1.
    :param seed: Seed of the generator that decides which transactions fail and where.
    :param points: The fault points to draw from (default all of :data:`FAULT_POINTS`).
    :param only: Fault only the transactions whose name contains one of these strings (a
        storage method's name, such as ``"take_queued"``); default all.
    :raises ValueError: For a ``p`` outside ``[0, 1]`` or an unknown point.
    """

    def __init__(
        self,
        inner: Any,
        *,
        p: float = 0.2,
        seed: int = 0,
        points: Iterable[str] = FAULT_POINTS,
        only: Iterable[str] | None = None,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"FaultyStorage: p={p!r} is not a probability between 0 and 1")
        chosen = tuple(points)
        unknown = sorted(set(chosen) - set(FAULT_POINTS))
        if unknown or not chosen:
            raise ValueError(
                f"FaultyStorage: unknown fault point(s) {unknown or chosen!r} "
                f"(known: {', '.join(FAULT_POINTS)})"
            )
        self.inner = inner
        self.p = p
        self.points = chosen
        self.only = None if only is None else tuple(only)
        #: Faults injected so far, by point.
        self.injected: Counter[str] = Counter()
        #: Transactions that went through without a fault.
        self.passed = 0
        #: Faults are drawn only while this is true (the wrapper arms itself after ``open``).
        self.armed = False
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sql = callable(getattr(inner, "_run", None))
        if self._sql:
            original: Callable[..., Any] = inner._run
            inner._run = self._wrap_transaction(original)

    def __repr__(self) -> str:
        return f"FaultyStorage({self.inner!r}, p={self.p})"

    # -- drawing faults -------------------------------------------------------------------------
    def draw(self, what: str = "") -> str | None:
        """The fault point of the next transaction called ``what``, or ``None`` for no fault."""
        with self._lock:
            chosen = self.only is None or any(name in what for name in self.only)
            if not self.armed or not chosen or self._rng.random() >= self.p:
                self.passed += 1
                return None
            point = self._rng.choice(self.points)
            self.injected[point] += 1
            return point

    def _wrap_transaction(self, original: Callable[..., T]) -> Callable[..., T]:
        def run(fn: Callable[[Any], T], *, write: bool) -> T:
            what = getattr(fn, "__qualname__", "transaction")
            point = self.draw(what)
            if point == "connect":
                raise InjectedFault(point, what)
            if point == "before_commit":

                def then_fail(conn: Any) -> T:
                    fn(conn)
                    raise InjectedFault("before_commit", what)  # rolls the transaction back

                return original(then_fail, write=write)
            result = original(fn, write=write)
            if point == "after_commit":
                raise InjectedFault(point, what)
            return result

        return run

    # -- the storage interface ------------------------------------------------------------------
    def open(self) -> None:
        """Open the inner storage, then start injecting faults."""
        self.inner.open()
        self.armed = True

    def close(self) -> None:
        """Stop injecting faults and close the inner storage."""
        self.armed = False
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if self._sql or name.startswith("_") or name in _LIFECYCLE or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            point = self.draw(name)
            if point in ("connect", "before_commit"):
                raise InjectedFault(point, name)
            result = value(*args, **kwargs)
            if point == "after_commit":
                raise InjectedFault(point, name)
            return result

        return call


class FaultPlugin:
    """A plugin answering ``faulty+<url>``: the storage of ``<url>`` wrapped in faults.

    Register it on a plugin manager (``pm.register(FaultPlugin(p=0.2, seed=7))``); the last
    storage it made is :attr:`storage`, for the test to read :attr:`FaultyStorage.injected`.
    """

    PREFIX = "faulty+"

    def __init__(
        self,
        *,
        p: float = 0.2,
        seed: int = 0,
        points: Iterable[str] = FAULT_POINTS,
        only: Iterable[str] | None = None,
    ) -> None:
        self.p = p
        self.seed = seed
        self.points = tuple(points)
        self.only = None if only is None else tuple(only)
        self.storage: FaultyStorage | None = None
        self._pm: Any = None

    @hookimpl(tryfirst=True)
    def cronhub_storage(self, url: str) -> FaultyStorage | None:
        """Wrap the storage another plugin makes for the URL after ``faulty+``."""
        if not url.startswith(self.PREFIX):
            return None
        from cronhub.plugins import get_plugin_manager

        inner_url = url[len(self.PREFIX) :]
        inner = get_plugin_manager().call_provider("cronhub_storage", url=inner_url)
        if inner is None:
            raise StorageError(f"faulty storage: no plugin handles {inner_url!r}")
        self.storage = FaultyStorage(
            inner, p=self.p, seed=self.seed, points=self.points, only=self.only
        )
        return self.storage
