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

_lock = threading.Lock()
#: Bursts holding the collector off now (engines in several threads may overlap).
_holds = 0
#: Engines running with the objects alive at their start frozen.
_freezes = 0


def hold() -> bool:
    """Hold off collections until :func:`release`; ``False`` if the collector was already off."""
    global _holds
    with _lock:
        if _holds == 0 and not gc.isenabled():
            return False  # the application's choice: not ours to undo
        _holds += 1
        gc.disable()
        return True


def release() -> None:
    """End one :func:`hold`; the last one turns the collector back on."""
    global _holds
    with _lock:
        _holds = max(0, _holds - 1)
        if _holds == 0:
            gc.enable()


def freeze_long_lived() -> bool:
    """Move every object alive now out of the collector's reach until :func:`thaw`.

    ``False`` (and nothing done) where the application froze objects itself or turned the
    collector off.
    """
    global _freezes
    with _lock:
        if _freezes == 0 and (gc.get_freeze_count() > 0 or (_holds == 0 and not gc.isenabled())):
            return False  # the application's own arrangement
        _freezes += 1
        gc.freeze()
        return True


def thaw() -> None:
    """End one :func:`freeze_long_lived`; the last one gives the objects back to the collector."""
    global _freezes
    with _lock:
        _freezes = max(0, _freezes - 1)
        if _freezes == 0:
            gc.unfreeze()
