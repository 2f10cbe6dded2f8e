"""What a hub's web app runs besides its routes: the engine, the event bus, metrics, job views.

One :class:`WebRuntime` per hub, shared by the app (``hub.asgi()``) and ``hub.lifespan``, so an
application that mounts the app and passes ``hub.lifespan`` to its own framework starts the one
scheduler the app reports on. Starting is counted: the app's own lifespan and ``hub.lifespan``
may both run, and the last to stop stops the engine.

It also performs the API's actions (run now, pause, resume, cancel): through the engine when it
runs here, otherwise straight through the storage, so a web-only instance (``--no-scheduler``)
can act on jobs that scheduler instances run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from cronhub.errors import HookError, UsageError
from cronhub.plugins import PluginInfo, hookimpl
from cronhub.runs import ClaimRequest, Run, RunStatus, Trigger
from cronhub.runtime_schedules import validate_params
from cronhub.web.events import JOB_EVENTS, RUN_EVENTS, EventBus
from cronhub.web.jobviews import JobViews
from cronhub.web.metrics import Metrics

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from cronhub.engine import Engine
    from cronhub.hub import Hub
    from cronhub.jobs import Job

log = logging.getLogger("cronhub.web")

#: Seconds ``/healthz`` waits for the storage to answer.
PING_TIMEOUT = 5.0
#: Statuses that count as an execution in the stats (not skipped, missed or still active).
EXECUTED = ("succeeded", "failed", "timed_out", "crashed", "cancelled")
#: Of those, the ones that count against the success rate (a cancel is a person's choice).
FAILED = ("failed", "timed_out", "crashed")


class _RunHooks:
    """The plugin object through which the engine's run hooks reach the web app."""

    def __init__(self, runtime: WebRuntime) -> None:
        self.runtime = runtime

    @hookimpl
    def cronhub_run_started(self, run: Run) -> None:
        self.runtime.metrics.run_started(run)
        self.runtime.publish_run("run.started", run)

    @hookimpl
    def cronhub_run_finished(self, run: Run) -> None:
        self.runtime.metrics.run_finished(run)
        self.runtime.publish_run("run.finished", run)


class WebRuntime:
    """The engine (unless web-only), event bus, metrics and job views of one hub.

    :param hub: The hub.
    :param scheduler: Run the scheduler in this process (``False``: web-only).
    :param keepalive: Seconds between keep-alive comments of idle event streams.
    """

    def __init__(self, hub: Hub, *, scheduler: bool = True, keepalive: float = 15.0) -> None:
        self.hub = hub
        self.scheduler = scheduler
        self.events = EventBus(keepalive=keepalive)
        self.metrics = Metrics(hub)
        self.jobs = JobViews(hub)
        self.engine: Engine | None = self._new_engine() if scheduler else None
        self.started_at = hub.clock.now()
        self._apps: list[Starlette] = []
        self._users = 0
        self._plugin_name: str | None = None
        self._subscribed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stats: tuple[float, dict[str, Any]] | None = None
        self._engine_started = False

    def _new_engine(self) -> Engine:
        from cronhub.engine import Engine

        return Engine(self.hub)

    def attach(self, app: Starlette) -> None:
        """Put the shared objects on ``app.state`` (and keep them current on restarts)."""
        self._apps.append(app)
        self._publish_state(app)

    def _publish_state(self, app: Starlette) -> None:
        app.state.hub = self.hub
        app.state.engine = self.engine
        app.state.events = self.events
        app.state.runtime = self

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the scheduler (or listen to the storage when web-only); counted."""
        self._users += 1
        if self._users > 1:
            return
        try:
            await self._start()
        except BaseException:
            # A failed start (storage down, a plugin's startup hook) leaves nothing behind.
            self._users -= 1
            self._unregister()
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self.events.bind(loop)
        if self.events.closed:  # started again after a stop (tests, a reloaded app)
            self.events = EventBus(keepalive=self.events.keepalive)
            self.events.bind(loop)
        pm = self.hub.plugin_manager
        self._plugin_name = f"web-{id(self):x}"
        pm.register(_RunHooks(self), name=self._plugin_name)
        pm.infos[self._plugin_name] = PluginInfo(
            name=self._plugin_name, module=__name__, builtin=True
        )
        await run_in_threadpool(lambda: self.hub.storage)  # open it (errors surface now)
        if self.engine is not None:
            if self._engine_started:  # an engine does not start twice: make a new one
                self.engine = self._new_engine()
            self._engine_started = True
            self.engine.event_listeners.append(self._on_storage_event)
            await self.engine.start()
        else:
            await self._subscribe(loop)
        for app in self._apps:
            self._publish_state(app)

    async def stop(self) -> None:
        """End the event streams and stop the scheduler (when the last user stops)."""
        if self._users == 0:
            return
        self._users -= 1
        if self._users > 0:
            return
        self.events.close()
        for task in list(self._tasks):
            task.cancel()
        try:
            if self.engine is not None:
                await self.engine.stop()
            elif self._subscribed:
                self._subscribed = False
                await run_in_threadpool(self.hub.storage.unsubscribe)  # type: ignore[attr-defined]
        finally:
            self._unregister()

    def _unregister(self) -> None:
        pm = self.hub.plugin_manager
        if self._plugin_name is not None and pm.has_plugin(self._plugin_name):
            pm.unregister(name=self._plugin_name)
            pm.infos.pop(self._plugin_name, None)
        self._plugin_name = None

    @property
    def running(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` did not undo it."""
        return self._users > 0

    # -- events --------------------------------------------------------------------------
    def publish_run(self, kind: str, run: Run) -> None:
        """Publish a run event and mark its job's cached object stale."""
        self.jobs.invalidate(run.job)
        self.events.publish(kind, {"run": run.to_dict()})

    def publish_job(self, kind: str, job: dict[str, Any]) -> None:
        """Publish a job event (``job`` is a job object) and mark the cached one stale."""
        self.jobs.invalidate(job["name"])
        self.events.publish(kind, {"job": job})

    async def _subscribe(self, loop: asyncio.AbstractEventLoop) -> None:
        """Web-only: listen to the storage's events ourselves (no engine does it)."""
        subscribe = getattr(self.hub.storage, "subscribe", None)
        if not callable(subscribe):
            return

        def on_event(event: dict[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._on_storage_event, event)

        try:
            await run_in_threadpool(subscribe, on_event)
        except Exception as exc:
            log.warning("storage events unavailable; this instance streams no events: %s", exc)
            return
        self._subscribed = True

    def _on_storage_event(self, event: dict[str, Any]) -> None:
        """Forward another instance's run or job event to the bus (in the loop's thread)."""
        if event.get("local"):
            return  # this process's own change, published here when it happened
        kind = event.get("event")
        if kind == "reconnected":
            self.jobs.invalidate()  # events may have been missed
        elif kind in JOB_EVENTS and isinstance(event.get("job"), str):
            self._spawn(self._forward_job(str(kind), event["job"]))
        elif kind in RUN_EVENTS:
            ids = [i for i in event.get("runs") or [] if isinstance(i, int)]
            if ids:
                self._spawn(self._forward_runs(str(kind), ids))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_job(self, kind: str, name: str) -> None:
        job = self.hub.jobs.get(name)
        if job is None:
            return  # a job another instance defines and this one does not
        try:
            [obj] = await run_in_threadpool(self.hub.describe_jobs, [job])
        except Exception as exc:
            log.warning("cannot read job %s for its %s event: %s", name, kind, exc)
            return
        self.publish_job(kind, obj)

    async def _forward_runs(self, kind: str, ids: list[int]) -> None:
        for run_id in ids:
            try:
                run = await run_in_threadpool(self.hub.storage.get_run, run_id)
            except Exception as exc:
                log.warning("cannot read run %d for its %s event: %s", run_id, kind, exc)
                return
            if run is not None:
                self.publish_run(kind, run)

    # -- actions -------------------------------------------------------------------------
    @property
    def _live_engine(self) -> Engine | None:
        engine = self.engine
        return engine if engine is not None and engine.running else None

    async def run_now(self, job: Job, params: dict[str, Any]) -> Run:
        """Queue a manual run of ``job``; any scheduler instance may start it.

        :raises ParameterError: when ``params`` do not fit the job function (a 400 naming it).
        """
        params = validate_params(job, params)
        engine = self._live_engine
        if engine is not None:
            run = await engine.run_now(job.name, params)
        else:
            lock = self.hub.plugin_manager.call_provider("cronhub_lock", hub=self.hub)
            if lock is None:
                raise HookError("cronhub_lock", None, RuntimeError("no lock provider answered"))
            request = ClaimRequest(
                job=job.name,
                scheduled_for=None,
                trigger=Trigger.MANUAL,
                status=RunStatus.QUEUED,
                overlap=job.overlap,
                ignore_pause=True,
                params=params,
            )
            [result] = await run_in_threadpool(
                lambda: lock.claim(
                    [request],
                    instance=self.hub.instance_id,
                    now=self.hub.clock.now(),
                    lease_ttl=float(self.hub.settings.get("lease_ttl")),
                )
            )
            if result.run is None:  # a lock provider that refused a manual run
                raise UsageError(f"job {job.name!r}: the run was not queued ({result.outcome})")
            run = result.run
        self.publish_run("run.queued", run)
        return run

    async def set_paused(self, job: Job, paused: bool) -> dict[str, Any]:
        """Pause or resume ``job``; return its job object (an event if the state changed)."""
        [before] = await run_in_threadpool(self.hub.describe_jobs, [job])
        engine = self._live_engine
        if engine is not None:
            await engine.set_paused(job.name, paused)
        else:
            now = self.hub.clock.now()
            await run_in_threadpool(lambda: self.hub.storage.set_paused(job.name, paused, now=now))
        [after] = await run_in_threadpool(self.hub.describe_jobs, [job])
        if before["paused"] != after["paused"]:
            self.publish_job("job.paused" if paused else "job.resumed", after)
        return after

    async def cancel(self, run_id: int) -> Run | None:
        """Cancel a queued or running run wherever it runs; ``None`` if it already ended.

        The run's owner stops it: an async job's task is cancelled, a process job's process
        killed, a thread job sees ``ctx.cancelled`` (on another instance: at its next lease
        renewal, which it loses).
        """
        engine = self._live_engine
        if engine is not None:
            run = await engine.cancel(run_id)
        else:
            now = self.hub.clock.now()
            run = await run_in_threadpool(lambda: self.hub.storage.cancel(run_id, now=now))
        if run is not None:
            # The owner's own outcome is refused (the storage already ended the run), so no
            # run-finished hook reports it: count and publish it here.
            self.metrics.run_finished(run)
            self.publish_run("run.finished", run)
        return run

    # -- views ---------------------------------------------------------------------------
    async def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body)`` of ``/healthz``: the scheduler loop and the storage."""
        body: dict[str, Any] = {"status": "ok"}
        healthy = True
        engine = self.engine
        if engine is None:
            body["scheduler"] = "disabled"
        elif engine.running:
            body["scheduler"] = "ok"
            if engine.last_tick is not None:
                body["last_tick_age"] = round(
                    max(0.0, engine.clock.monotonic() - engine.last_tick), 3
                )
        else:
            body["scheduler"] = "stopped"
            healthy = False
        try:
            answered = await asyncio.wait_for(
                run_in_threadpool(lambda: self.hub.storage.ping()), PING_TIMEOUT
            )
            body["storage"] = "ok" if answered else "unreachable"
        except TimeoutError:
            body["storage"] = f"no answer within {PING_TIMEOUT:g} s"
        except Exception as exc:
            body["storage"] = f"error: {type(exc).__name__}"
        if body["storage"] != "ok":
            healthy = False
        if not healthy:
            body["status"] = "unavailable"
        return healthy, body

    async def stats(self, max_age: float = 2.0) -> dict[str, Any]:
        """The overall stats of ``/api/stats`` (cached for ``max_age`` seconds)."""
        loop = asyncio.get_running_loop()
        cached = self._stats
        if cached is not None and loop.time() - cached[0] < max_age:
            return cached[1]
        value = await run_in_threadpool(compute_stats, self.hub)
        self._stats = (loop.time(), value)
        return value

    async def instances(self) -> list[dict[str, Any]]:
        """The instances the storage knows (PostgreSQL), or just this one."""
        listed: list[dict[str, Any]] = []
        list_instances: Callable[[], list[dict[str, Any]]] | None = getattr(
            self.hub.storage, "instances", None
        )
        if callable(list_instances):
            listed = [dict(item) for item in await run_in_threadpool(list_instances)]
        me = self.hub.instance_id
        for item in listed:
            item["this"] = item.get("id") == me
            item.setdefault("scheduler", True)  # instances register when their engine starts
        if not any(item["this"] for item in listed):
            from cronhub import __version__

            now = self.hub.clock.now()
            listed.append(
                {
                    "id": me,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "version": __version__,
                    "started_at": self.started_at,
                    "heartbeat_at": now,
                    "alive": True,
                    "this": True,
                    "scheduler": self._live_engine is not None,
                }
            )
        for item in listed:
            for key in ("started_at", "heartbeat_at"):
                if hasattr(item.get(key), "isoformat"):
                    item[key] = item[key].isoformat()
        return listed


def compute_stats(hub: Hub) -> dict[str, Any]:
    """Overall stats (blocking; reads the storage): the contract of ``GET /api/stats``.

    ``runs_last_hour`` counts the runs that ended in the last hour (skipped and missed slots
    are not runs that ran); ``success_rate_24h`` is the share of succeeded among the runs that
    ended in the last 24 hours as succeeded, failed, timed out or crashed (``None`` without
    any); ``running`` and ``queued`` are runs in those statuses now, on every instance.
    """
    storage = hub.storage
    now = hub.clock.now()
    active = storage.active_runs()
    running = sum(1 for run in active if run.status is RunStatus.RUNNING)
    hour = storage.count_runs(finished_after=now - timedelta(hours=1))
    day = storage.count_runs(finished_after=now - timedelta(hours=24))
    dead = storage.count_runs(dead_letter=True)
    succeeded = day.get("succeeded", 0)
    judged = succeeded + sum(day.get(status, 0) for status in FAILED)
    return {
        "jobs": len(hub.jobs),
        "running": running,
        "queued": len(active) - running,
        "runs_last_hour": sum(hour.get(status, 0) for status in EXECUTED),
        "success_rate_24h": round(succeeded / judged, 4) if judged else None,
        "dead_letters": sum(dead.values()),
    }
