"""Keeping Python's cyclic garbage collector out of the scheduler's way.

A full collection walks every tracked object of the process: tens of milliseconds once an
application has imported SQLAlchemy and holds a thousand jobs, and it grows with the jobs.

- **Bursts.** Falling in the middle of a burst of due runs, a collection makes every later
  run of the burst that much late. The engine holds collections off (:func:`hold`) from the
  first start of a burst until each of its bodies has started, a few milliseconds; the
  collection that was due then runs, between bursts. Nothing is skipped.
- **What lives as long as the scheduler.** The modules, plugins, jobs and schedules alive when
  an engine has started stay alive until it stops; walking them again at every full
  collection is wasted. The engine moves them out of the collector's reach at its start
  (:func:`freeze_long_lived`, Python's ``gc.freeze``) and back at its stop (:func:`thaw`).
  Reference counting still frees them as usual; only a reference cycle among them that
  becomes garbage while the engine runs waits for the stop. The setting ``gc_freeze = false``
  turns this off.

An application that turned the collector off itself, or froze objects itself, keeps its own
arrangement.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

_lock = threading.Lock()


class _SharedSwitch:
    """A process-wide change to the collector that engines (in several threads, maybe) ask
    for together: made at each request, undone when the last one ends. Refused when nothing
    of ours holds it and ``applications_own`` says the application arranged it itself."""

    def __init__(
        self,
        make: Callable[[], None],
        undo: Callable[[], None],
        applications_own: Callable[[], bool],
    ) -> None:
        self.make, self.undo, self.applications_own = make, undo, applications_own
        #: Requests holding the change now.
        self.count = 0

    def request(self) -> bool:
        with _lock:
            if self.count == 0 and self.applications_own():
                return False  # not ours to add to or to undo
            self.count += 1
            self.make()
            return True

    def end(self) -> None:
        with _lock:
            self.count = max(0, self.count - 1)
            if self.count == 0:
                self.undo()


#: Bursts holding the collector off now.
_off = _SharedSwitch(gc.disable, gc.enable, lambda: not gc.isenabled())
#: Engines running with the objects alive at their start frozen.
_frozen = _SharedSwitch(
    gc.freeze,
    gc.unfreeze,
    lambda: gc.get_freeze_count() > 0 or (_off.count == 0 and not gc.isenabled()),
)


def hold() -> bool:
    """Hold off collections until :func:`release`; ``False`` if the collector was already off."""
    return _off.request()


def release() -> None:
    """End one :func:`hold`; the last one turns the collector back on."""
    _off.end()


def freeze_long_lived() -> bool:
    """Move every object alive now out of the collector's reach until :func:`thaw`.

    ``False`` (and nothing done) where the application froze objects itself or turned the
    collector off.
    """
    return _frozen.request()


def thaw() -> None:
    """End one :func:`freeze_long_lived`; the last one gives the objects back to the collector."""
    _frozen.end()
