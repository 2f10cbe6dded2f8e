"""Time as the engine sees it: the ``Clock`` protocol and the real ``SystemClock``.

The engine never calls ``datetime.now()`` or ``asyncio.sleep()`` itself; it asks its clock, so
tests inject :class:`cronhub.testing.FakeClock` and check schedules, misfires and DST without
waiting.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What the engine needs from time.

    A clock may also offer ``async def sleep_precise(seconds)``, a sleep that ends on the
    instant rather than when the event loop's timer gets to it; the engine uses it, where
    there is one, for the start of runs claimed ahead (see :class:`SystemClock`).
    """

    def now(self) -> datetime:
        """The current time, an aware datetime in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, timeouts)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    #: Longest single sleep of the scheduler loop: a step of the wall clock (NTP, a resumed
    #: laptop) is noticed within this many seconds even when nothing is due.
    max_sleep: float = 60.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_precise(self, seconds: float) -> None:
        """Wait ``seconds``, ending within a fraction of a millisecond of the instant.

        The event loop's timers wake a millisecond or more late (the poll's timeout is in
        whole milliseconds, rounded up, and the process must be scheduled again), so this
        sleeps until :data:`PRECISE_MARGIN` before the instant and then yields to the loop
        until it comes: a few milliseconds of a busy loop that still runs everything else.
        The engine sleeps so only for the start of runs claimed ahead.
        """
        target = time.monotonic() + seconds
        if seconds > PRECISE_MARGIN:
            await asyncio.sleep(seconds - PRECISE_MARGIN)
        while time.monotonic() < target:
            await asyncio.sleep(0)


#: How long before a precise instant :meth:`SystemClock.sleep_precise` stops sleeping and
#: starts yielding (the timer lateness seen on Linux is 1 to 3 ms).
PRECISE_MARGIN = 0.003
