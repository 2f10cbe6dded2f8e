"""Holding off Python's cyclic garbage collector while a burst of due runs starts.

A full collection walks every tracked object of the process: tens of milliseconds once an
application has imported SQLAlchemy and holds a thousand jobs. Falling in the middle of a
burst of due runs, it makes every later run of the burst that much late. The engine holds
collections off from the first start of a burst until each of its bodies has started, a few
milliseconds; the collection that was due then runs, between bursts. Nothing is skipped and
an application that turned the collector off itself keeps it off.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
#: Bursts holding the collector off now (engines in several threads may overlap).
_holds = 0


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
