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
    """What the engine needs from time."""

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
