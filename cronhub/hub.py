"""``Hub``: owns the plugin manager, settings, storage, clock and the job registry."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cronhub.clock import Clock, SystemClock
from cronhub.config import DEFAULT_STORAGE, Settings, load_settings, mask_url
from cronhub.errors import DuplicateJobError, HookError, UnknownJobError, UsageError
from cronhub.jobs import Job, make_job

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from cronhub.plugins import CronhubPluginManager
    from cronhub.runs import JobState
    from cronhub.storage import Storage
    from cronhub.web.runtime import WebRuntime

log = logging.getLogger("cronhub")


class Hub:
    """A scheduler's world: plugins, settings, storage, clock and jobs.

    Everything is built lazily, so an application may create its ``Hub`` at import time
    without loading plugins or opening a database::

        hub = cronhub.Hub(storage="sqlite:///cronhub.db")

        @hub.job(every="5m")
        def refresh() -> None: ...

    :param storage: Storage URL; overrides ``CRONHUB_STORAGE`` and the settings file.
    :param clock: The engine's clock (tests pass a ``FakeClock``).
    :param plugin_manager: A ready plugin manager; by default one is built on first use.
    :param settings: Resolved settings; by default loaded on first use.
    """

    def __init__(
        self,
        storage: str | None = None,
        *,
        clock: Clock | None = None,
        plugin_manager: CronhubPluginManager | None = None,
        settings: Settings | None = None,
        **setting_overrides: Any,
    ) -> None:
        self._storage_url = storage
        self.clock: Clock = clock or SystemClock()
        self._pm = plugin_manager
        self._settings = settings
        self._setting_overrides = setting_overrides
        self._app_jobs: dict[str, Job] = {}
        self._jobs: dict[str, Job] | None = None
        self._storage: Storage | None = None
        self._lock = threading.RLock()
        #: Free space for plugins (clients, caches) keyed by their own names.
        self.state: dict[str, Any] = {}
        #: Where the application's jobs come from, for messages (``--app`` sets it).
        self.source = "the application"
        # The scheduler, event bus and metrics shared by hub.asgi() and hub.lifespan.
        self._web_runtime: WebRuntime | None = None

    # -- plugins and settings -------------------------------------------------------------
    @property
    def plugin_manager(self) -> CronhubPluginManager:
        """The plugin manager, built on first use from the settings' plugin options."""
        if self._pm is None:
            from cronhub.plugins import get_plugin_manager

            settings = self.settings
            self._pm = get_plugin_manager(
                disabled=settings.get("disable_plugins", []),
                strict=bool(settings.get("strict_plugins", False)),
            )
        return self._pm

    def use_plugin_manager(self, pm: CronhubPluginManager) -> None:
        """Adopt ``pm`` (the CLI's) unless this hub already built or was given one."""
        if self._pm is None:
            self._pm = pm

    @property
    def settings(self) -> Settings:
        """Resolved settings (flags given to the hub, variables, files)."""
        if self._settings is None:
            overrides = dict(self._setting_overrides)
            if self._storage_url is not None:
                overrides["storage"] = self._storage_url
            self._settings = load_settings(overrides)
        return self._settings

    @property
    def instance_id(self) -> str:
        """This instance's name in runs and leases."""
        return self.settings.instance_id

    # -- storage -------------------------------------------------------------------------
    @property
    def storage_url(self) -> str:
        """The storage URL in use (may contain a password: print ``mask_url`` of it)."""
        return self._storage_url or self.settings.get("storage") or DEFAULT_STORAGE

    @property
    def storage(self) -> Storage:
        """The opened storage backend for :attr:`storage_url`."""
        with self._lock:
            if self._storage is None:
                self._storage = self._make_storage()
                self._storage.open()
            return self._storage

    def _make_storage(self) -> Storage:
        url = self.storage_url
        pm = self.plugin_manager
        storage = pm.call_provider("cronhub_storage", url=url)
        if storage is None and url == DEFAULT_STORAGE and not self._explicit_storage():
            # Without the SQLite plugin installed, the default falls back to memory.
            storage = pm.call_provider("cronhub_storage", url="memory://")
            log.warning(
                "no storage plugin handles the default %s: using memory:// (nothing persists; "
                "install cronhub-storage-sqlite or set a storage URL)",
                url,
            )
        if storage is None:
            raise UsageError(
                f"no storage plugin handles {mask_url(url)!r} "
                f"(installed backends: {', '.join(self.storage_backends()) or 'none'})"
            )
        return storage  # type: ignore[no-any-return]

    def _explicit_storage(self) -> bool:
        return self._storage_url is not None or self.settings.sources.get("storage") != "default"

    def storage_backends(self) -> list[str]:
        """The plugins that implement ``cronhub_storage``, with the URL forms they declare."""
        pm = self.plugin_manager
        names = []
        for impl in reversed(pm.hook.cronhub_storage.get_hookimpls()):
            urls = getattr(impl.plugin, "STORAGE_URLS", None)
            label = impl.plugin_name
            if urls:
                label += f" ({', '.join(urls)})"
            names.append(label)
        return names

    def close(self) -> None:
        """Close the storage if it was opened."""
        with self._lock:
            if self._storage is not None:
                self._storage.close()
                self._storage = None

    # -- jobs ----------------------------------------------------------------------------
    def job(self, func: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Like :func:`cronhub.job`, and registers the job on this hub."""

        def decorate(function: Callable[..., Any]) -> Job:
            job = make_job(function, **options)
            self.add_job(job)
            return job

        return decorate(func) if func is not None else decorate

    def add_job(self, job: Job) -> None:
        """Register an application job; a second job of the same name is an error."""
        if job.plugin != "app":  # a copy only when needed: jobs are immutable
            job = job.replace(plugin="app")
        if job.name in self._app_jobs:
            raise DuplicateJobError(job.name, self.source, self.source)
        self._app_jobs[job.name] = job
        self._jobs = None

    @property
    def jobs(self) -> dict[str, Job]:
        """Every job, by name: the application's, then plugins', after ``cronhub_modify_jobs``."""
        if self._jobs is None:
            self._jobs = self.collect()
        return self._jobs

    def collect(self) -> dict[str, Job]:
        """Collect jobs from the application and every plugin, checking for duplicate names."""
        pm = self.plugin_manager
        found: list[Job] = list(self._app_jobs.values())
        for plugin_name, result in pm.call_collector("cronhub_jobs", hub=self):
            try:
                jobs = list(result)
            except Exception as exc:
                raise HookError("cronhub_jobs", plugin_name, exc) from exc
            for job in jobs:
                if not isinstance(job, Job):
                    raise HookError(
                        "cronhub_jobs",
                        plugin_name,
                        TypeError(f"returned {job!r}, not a cronhub Job"),
                    )
                found.append(job if plugin_name == "collect" else job.replace(plugin=plugin_name))
        by_name: dict[str, Job] = {}
        for job in found:
            if job.name in by_name:
                raise DuplicateJobError(
                    job.name, self._describe_source(by_name[job.name]), self._describe_source(job)
                )
            by_name[job.name] = job
        jobs = list(by_name.values())
        try:
            pm.hook.cronhub_modify_jobs(hub=self, jobs=jobs)
        except Exception as exc:
            raise HookError("cronhub_modify_jobs", None, exc) from exc
        return {job.name: job for job in jobs}

    def _describe_source(self, job: Job) -> str:
        if job.plugin == "app":
            return self.source
        return self.plugin_manager.describe_plugin(job.plugin)

    def get_job(self, name: str) -> Job:
        """The job called ``name``; :class:`UnknownJobError` lists the known names."""
        try:
            return self.jobs[name]
        except KeyError:
            raise UnknownJobError(name, list(self.jobs)) from None

    def select_jobs(self, tag: str | None = None) -> list[Job]:
        """Jobs sorted by name, optionally only those with ``tag``."""
        return [j for _, j in sorted(self.jobs.items()) if tag is None or tag in j.tags]

    # -- web -----------------------------------------------------------------------------
    def asgi(
        self, *, scheduler: bool = True, token: str | None = None, **options: Any
    ) -> Starlette:
        """The web app of this hub: dashboard, JSON API, events, ``/healthz``, ``/metrics``.

        Serve it (``uvicorn.run(hub.asgi())``: its lifespan runs the scheduler) or mount it
        in an application whose lifespan is :meth:`lifespan`::

            app = FastAPI(lifespan=hub.lifespan)
            app.mount("/cronhub", hub.asgi(token=os.environ["CRONHUB_TOKEN"]))

        :param scheduler: Run the scheduler (``False``: a web-only app over shared storage).
        :param token: Require this bearer token on every route but ``/healthz``.
        :param options: Further options of :func:`cronhub.web.app.create_app`.
        """
        from cronhub.web.app import create_app

        return create_app(self, scheduler=scheduler, token=token, **options)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run this hub's scheduler for the life of an ASGI application.

        Pass it as the application's lifespan (``FastAPI(lifespan=hub.lifespan)``,
        ``Starlette(lifespan=hub.lifespan)``) or enter it yourself (``async with
        hub.lifespan():``). It starts what :meth:`asgi` apps report on (the scheduler unless
        they were made with ``scheduler=False``) and stops it gracefully on exit: running jobs
        get ``shutdown_grace`` seconds. ``app`` is accepted for the frameworks and unused.
        """
        from cronhub.web.app import runtime_for

        runtime = runtime_for(self)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # -- views ---------------------------------------------------------------------------
    def job_states(self, names: Iterable[str]) -> dict[str, JobState]:
        """Persistent state of these jobs from storage."""
        return self.storage.job_states(list(names))

    def describe_jobs(
        self, jobs: Sequence[Job], *, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Job objects of the CLI and HTTP API contract."""
        now = now or self.clock.now()
        states = self.job_states(j.name for j in jobs)
        return [job_to_dict(job, states.get(job.name), now) for job in jobs]


def job_to_dict(
    job: Job,
    state: JobState | None,
    now: datetime,
    *,
    next_run: Callable[[Job, datetime], datetime | None] | None = None,
) -> dict[str, Any]:
    """The job object of design section 6: schedule, state and options.

    :param next_run: Computes the job's next slot after ``now`` (default ``Job.next_run``);
        the web app passes a memo shared by the jobs of one schedule.
    """
    paused = bool(state and state.paused)
    next_run_at = None if paused else (next_run or Job.next_run)(job, now)
    last = state.last_run if state else None
    last_time = None
    if last is not None:
        last_time = last.started_at or last.finished_at or last.scheduled_for or last.created_at
    zone = job.tz if job.kind == "cron" else UTC
    return {
        "name": job.name,
        "kind": job.kind,
        "schedule": job.schedule.expression(),
        "schedule_text": job.schedule.describe(),
        "tz": str(job.tz),
        "tags": list(job.tags),
        "description": job.description,
        "paused": paused,
        "next_run": next_run_at.astimezone(zone).isoformat() if next_run_at else None,
        "last_run": last_time.astimezone(zone).isoformat() if last_time else None,
        "last_status": str(last.status) if last is not None else None,
        "plugin": job.plugin,
        **job.options(),
    }
