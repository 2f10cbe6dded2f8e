"""Delivery of the alert outbox: claim due alerts, call every ``cronhub_alert`` plugin, retry.

Alerts are written to storage with the state change that raised them; this loop sends them.
A row is claimed with a lease (``claim_alerts``) so two instances never send it together, and
it is removed only after every plugin took it, so a process killed between the state change
and the send delivers it after the restart. A plugin that raises is named in the log and only
that plugin is asked again later, with exponential backoff (or after the ``retry_after`` of a
:class:`RetryAlert` it raised, e.g. Slack's ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from cronhub.errors import CronhubError

if TYPE_CHECKING:
    from cronhub.hub import Hub
    from cronhub.runs import OutboxItem

log = logging.getLogger("cronhub.outbox")
T = TypeVar("T")

#: Seconds between looks at the outbox when nothing woke the loop (alerts written by other
#: instances). This instance wakes the loop itself when it writes alerts or a retry is due.
POLL_INTERVAL = 30.0
#: First retry delay after a failed delivery, doubled per attempt up to :data:`MAX_BACKOFF`.
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 900.0
#: Seconds one plugin may take for one alert.
PLUGIN_TIMEOUT = 30.0
#: Seconds a claimed row stays hidden from other instances while this one sends it.
LEASE = 120.0
BATCH = 20


class RetryAlert(CronhubError):
    """Raised by an alert plugin that wants the alert again, not before ``retry_after`` seconds.

    :param message: Why (shown in the log: keep secrets out of it).
    :param retry_after: Seconds to wait, e.g. an HTTP ``Retry-After``.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AlertDelivery:
    """The loop that empties the outbox into the ``cronhub_alert`` plugins.

    :param hub: The hub (storage, plugins, clock).
    :param instance: This instance's name (for the log).
    :param io: Runs a blocking storage call off the event loop (the engine's ``io``).
    """

    def __init__(
        self,
        hub: Hub,
        *,
        instance: str,
        io: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.hub = hub
        self.clock = hub.clock
        self.instance = instance
        self._io = io
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        # Plugins that already took an item; only the others are asked again (in memory: after
        # a restart every plugin gets the alert once more, which is "at least once").
        self._done: dict[int, set[str]] = {}
        # When retries scheduled here are due: the loop sleeps until the earliest.
        self._retries: set[datetime] = set()
        # ``[tool.cronhub.alerts] lease`` / ``CRONHUB_ALERTS_LEASE``: how long a claimed row
        # stays hidden from other instances (a sender killed mid-send delays it this long).
        self.lease = float(hub.settings.section("alerts").get("lease") or LEASE)

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self._io is not None:
            return await self._io(fn, *args, **kwargs)  # type: ignore[no-any-return]
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop in the running event loop."""
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name="cronhub-alerts")

    async def stop(self) -> None:
        """Stop the loop; alerts not yet sent stay in the outbox for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Look at the outbox now (new alerts were written)."""
        if self._wakeup is not None:
            self._wakeup.set()

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            self._wakeup.clear()
            try:
                await self.deliver_due()
            except Exception as exc:
                # Storage down: the alerts wait in the outbox, nothing is lost.
                log.warning("alert outbox unavailable: %s; retrying", exc)
            now = self.clock.now()
            self._retries = {when for when in self._retries if when > now}
            # A fake clock says how long it may sleep at once (as for the engine's loop).
            delay = float(getattr(self.clock, "max_sleep", POLL_INTERVAL))
            if self._retries:
                delay = min(delay, (min(self._retries) - now).total_seconds())
            sleeper = asyncio.ensure_future(self.clock.sleep(max(delay, 0.0)))
            waker = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, waker):
                    task.cancel()

    # -- delivery ------------------------------------------------------------------------
    async def deliver_due(self) -> int:
        """Claim the due alerts and send them; return how many were fully delivered."""
        storage = self.hub.storage
        now = self.clock.now()
        claim = getattr(storage, "claim_alerts", None)
        if claim is not None:
            items = await self._call(claim, now=now, lease=self.lease, limit=BATCH)
        else:
            # A storage without claim_alerts: single-instance behaviour (documented).
            items = await self._call(storage.pending_alerts, now=now, limit=BATCH)
        # Rows leased by another (maybe dead) sender or due for a retry soon: wake up then,
        # rather than at the next poll.
        soon = await self._call(
            storage.pending_alerts, now=now + timedelta(seconds=POLL_INTERVAL), limit=BATCH
        )
        taken = {item.id for item in items}
        self._retries.update(
            i.next_attempt_at for i in soon if i.id not in taken and i.next_attempt_at is not None
        )
        if not items:
            return 0
        results = await asyncio.gather(*(self._deliver(item) for item in items))
        return sum(results)

    async def _deliver(self, item: OutboxItem) -> bool:
        storage = self.hub.storage
        alert = item.alert
        done = self._done.setdefault(item.id, set())
        failures: list[tuple[str, BaseException]] = []
        pm = self.hub.plugin_manager
        for impl in reversed(pm.hook.cronhub_alert.get_hookimpls()):
            if impl.hookwrapper or getattr(impl, "wrapper", False) or impl.plugin_name in done:
                continue
            try:
                await asyncio.wait_for(self._invoke(impl.function, alert), PLUGIN_TIMEOUT)
            except Exception as exc:
                failures.append((impl.plugin_name, exc))
                continue
            done.add(impl.plugin_name)
        if not failures:
            await self._call(storage.alert_delivered, item.id)
            self._done.pop(item.id, None)
            return True
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2**item.attempts)
        hinted = [e.retry_after for _, e in failures if isinstance(e, RetryAlert) and e.retry_after]
        if hinted:
            delay = max(hinted)
        error = "; ".join(f"plugin {name!r}: {type(e).__name__}: {e}" for name, e in failures)
        for name, exc in failures:
            log.error(
                "alert %d (%s of job %s): hook cronhub_alert failed in plugin %r: %s: %s; "
                "retrying in %gs",
                item.id,
                alert.kind,
                alert.job,
                name,
                type(exc).__name__,
                exc,
                delay,
            )
        retry_at = self.clock.now() + timedelta(seconds=delay)
        self._retries.add(retry_at)
        await self._call(storage.alert_failed, item.id, retry_at=retry_at, error=error)
        return False

    @staticmethod
    async def _invoke(function: Callable[..., Any], alert: Any) -> None:
        if inspect.iscoroutinefunction(function):
            await function(alert)
            return
        # A plain def may block (urllib, smtplib): keep it off the event loop.
        value = await asyncio.to_thread(function, alert)
        if inspect.isawaitable(value):
            await value
