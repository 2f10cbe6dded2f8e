"""Every hook cronhub calls, grouped by family.

Plugins implement these with :data:`cronhub.hookimpl`; the core declares them with the private
``hookspec`` marker. Each docstring is the reference for its hook (``docs/plugin_hooks.md`` says
the same with longer examples, and a test keeps the two in step).

Call order is pluggy's: last registered, first called, so an installed plugin is asked before the
built-in it overrides; built-in fallbacks are marked ``trylast``. Arguments are passed by
keyword, and an implementation may accept any subset of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer
    from starlette.routing import BaseRoute

    from cronhub.executors import Executor
    from cronhub.hub import Hub
    from cronhub.jobs import Job
    from cronhub.locking import Lock
    from cronhub.runs import Alert, Run
    from cronhub.storage import Storage

hookspec = pluggy.HookspecMarker("cronhub")

# --------------------------------------------------------------------------------------------
# discovery hooks
# --------------------------------------------------------------------------------------------


@hookspec
def cronhub_collect(module: ModuleType) -> Iterable[Job] | None:
    """Return the jobs defined in ``module``, a module loaded from an entry point.

    Called once for every plugin module registered from the entry-point group ``cronhub``
    when the hub collects its jobs (at start-up of every command that needs jobs). All
    results are gathered; a job returned by two implementations for the same module counts
    once. Implementations may not be ``async``.

    :param module: The module an entry point named, e.g. ``acme_jobs``.
    :returns: An iterable of :class:`cronhub.jobs.Job`, or ``None`` to add nothing.

    Example::

        @cronhub.hookimpl
        def cronhub_collect(module):
            # also collect jobs listed in a module-level JOBS tuple
            return getattr(module, "JOBS", None)

    Used by: the built-in ``collect`` plugin, which returns every ``@cronhub.job`` object
    found among the module's attributes.
    """


@hookspec
def cronhub_jobs(hub: Hub) -> Iterable[Job] | None:
    """Return jobs made at run time, from configuration, a database or an API.

    Called once per hub when it collects its jobs, after the entry-point modules were
    collected. All results are gathered; a name used twice is an error that names both
    sources. Implementations may not be ``async``.

    :param hub: The :class:`cronhub.hub.Hub` collecting jobs.
    :returns: An iterable of :class:`cronhub.jobs.Job` (built with :func:`cronhub.job`
        called as a function), or ``None``.

    Example::

        @cronhub.hookimpl
        def cronhub_jobs(hub):
            for name, expr in load_reports_config().items():
                yield cronhub.job(cron=expr, name=f"report.{name}")(make_report(name))

    Used by: the built-in ``collect`` plugin (jobs of entry-point modules).
    """


@hookspec
def cronhub_modify_jobs(hub: Hub, jobs: list[Job]) -> None:
    """Filter or change the collected jobs in place, before the hub uses them.

    Called once per collection, after every ``cronhub_jobs`` implementation answered, with
    the full list (like pytest's ``pytest_collection_modifyitems``). Replace an entry to
    change a job (``jobs[i] = job.replace(timeout=60)``) or delete entries to drop jobs.
    The return value is ignored. Implementations may not be ``async``.

    :param hub: The hub collecting jobs.
    :param jobs: The jobs collected so far, in collection order; modify it in place.
    :returns: Nothing.

    Example::

        @cronhub.hookimpl
        def cronhub_modify_jobs(hub, jobs):
            # run nothing tagged "prod-only" on staging hosts
            jobs[:] = [job for job in jobs if "prod-only" not in job.tags]
    """


# --------------------------------------------------------------------------------------------
# storage hooks
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def cronhub_storage(url: str) -> Storage | None:
    """Return the storage backend that handles ``url``, or ``None`` to pass.

    Called once per hub, when it first needs storage, with the resolved storage URL.
    Stops at the first non-``None`` result (firstresult). Must be a plain ``def`` (an
    ``async def`` is refused at registration); open connections in ``Storage.open()``,
    not here.

    :param url: The storage URL, for example ``sqlite:///cronhub.db``.
    :returns: An object implementing :class:`cronhub.storage.Storage`, or ``None`` if this
        plugin does not handle the URL's scheme.

    Example::

        @cronhub.hookimpl
        def cronhub_storage(url):
            if url.startswith("redis://"):
                return RedisStorage(url)
            return None

    Used by: built-in ``memory`` (``memory://``), ``cronhub-storage-sqlite``
    (``sqlite:///``), ``cronhub-storage-postgres`` (``postgresql://``).
    """


# --------------------------------------------------------------------------------------------
# locking hooks
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def cronhub_lock(hub: Hub) -> Lock | None:
    """Return the lock provider that decides which instance runs a slot.

    Called once per hub when the engine starts. Stops at the first non-``None`` result
    (firstresult); must be a plain ``def``, never ``async def``. The provider claims slots
    (applying the overlap policy) and renews run leases. The default provider is the storage
    itself: claims are insert-if-absent under a unique key, in the transaction of the run row.

    :param hub: The hub whose engine is starting; ``hub.storage`` is open.
    :returns: An object implementing :class:`cronhub.locking.Lock`, or ``None``.

    Example::

        @cronhub.hookimpl
        def cronhub_lock(hub):
            if hub.settings.get("lock") == "audit":
                return AuditingLock(cronhub.locking.StorageLock(hub.storage))
            return None

    Used by: the built-in ``locking`` plugin (``StorageLock``, trylast).
    """


# --------------------------------------------------------------------------------------------
# execution hooks
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def cronhub_executor(job: Job) -> Executor | None:
    """Return the executor that runs ``job``'s function, or ``None`` to pass.

    Called once per job when the engine prepares it. Stops at the first non-``None``
    result (firstresult); must be a plain ``def``. An executor may run the function in
    the event loop, a thread, a process, or hand the run to another system.

    :param job: The job; ``job.executor`` names the executor asked for (``async``,
        ``thread``, ``process`` or a plugin's own name).
    :returns: An object implementing :class:`cronhub.executors.Executor`, or ``None``.

    Example::

        @cronhub.hookimpl
        def cronhub_executor(job):
            if job.executor == "celery":
                return CeleryExecutor(app=celery_app)
            return None

    Used by: the built-in ``executors`` plugin (``async``, ``thread``, ``process``).
    """


@hookspec
def cronhub_run_started(run: Run) -> None:
    """Called when a run of a job starts, after storage recorded it as ``running``.

    Called for every run this instance starts, whatever its trigger. Every implementation
    is called even if another raises (the failure is logged naming the plugin);
    implementations may be ``async`` and are awaited; wrappers are not supported.

    :param run: The run, with ``status="running"``, ``instance`` and ``started_at`` set.
    :returns: Nothing; the value is ignored.

    Example::

        @cronhub.hookimpl
        async def cronhub_run_started(run):
            await statsd.increment("cronhub.started", tags=[f"job:{run.job}"])
    """


@hookspec
def cronhub_run_finished(run: Run) -> None:
    """Called when a run this instance owned has ended and storage recorded it.

    Called once per run with its terminal status (``succeeded``, ``failed``,
    ``timed_out``, ``cancelled``), and for runs the reaper marks ``crashed``. Every
    implementation is called even if another raises; implementations may be ``async``;
    wrappers are not supported.

    :param run: The finished run, with ``status``, ``duration_ms`` and ``error`` set.
    :returns: Nothing; the value is ignored.

    Example::

        @cronhub.hookimpl
        def cronhub_run_finished(run):
            if run.status == "failed":
                sentry_sdk.capture_message(f"{run.job} failed: {run.error_message}")
    """


# --------------------------------------------------------------------------------------------
# alert hooks
# --------------------------------------------------------------------------------------------


@hookspec
def cronhub_alert(alert: Alert) -> None:
    """Deliver an alert: a failure streak began, a job recovered, crashed, timed out, went to
    the dead letters, or missed slots.

    The core decides *when* (once per streak or outage, never once per failed run), writes the
    alert to the storage outbox with the state change, and calls this hook from its delivery
    loop. Every implementation is called even if another raises; an implementation that
    raises is named in the log and the alert is retried for it later with backoff.
    Implementations may be ``async``; wrappers are not supported.

    :param alert: The :class:`cronhub.runs.Alert`; ``alert.kind`` is one of ``failure``,
        ``recovery``, ``crash``, ``timeout``, ``dead_letter``, ``missed``.
    :returns: Nothing; the value is ignored.

    Example::

        @cronhub.hookimpl
        async def cronhub_alert(alert):
            async with httpx.AsyncClient() as client:
                await client.post(WEBHOOK, json=alert.to_dict(), timeout=10)

    Used by: the built-in ``alerts`` plugin (writes each alert to the ``cronhub.alerts``
    logger), ``cronhub-notify-slack``.
    """


# --------------------------------------------------------------------------------------------
# lifecycle and extension hooks
# --------------------------------------------------------------------------------------------


@hookspec
def cronhub_startup(hub: Hub) -> None:
    """Called when the scheduler starts, after storage opened and jobs were collected.

    Called once per engine start (``cronhub worker``, ``cronhub serve``, the ASGI
    lifespan), before the first slot is claimed. Every implementation is called even if
    another raises; implementations may be ``async``; wrappers are not supported.

    :param hub: The hub; ``hub.jobs`` and ``hub.storage`` are ready.
    :returns: Nothing; the value is ignored.

    Example::

        @cronhub.hookimpl
        async def cronhub_startup(hub):
            hub.state["http"] = httpx.AsyncClient()
    """


@hookspec
def cronhub_shutdown(hub: Hub) -> None:
    """Called when the scheduler stops, after running jobs finished or were cancelled.

    Called once per engine stop, before storage closes. Every implementation is called
    even if another raises; implementations may be ``async``; wrappers are not supported.

    :param hub: The hub that is stopping.
    :returns: Nothing; the value is ignored.

    Example::

        @cronhub.hookimpl
        async def cronhub_shutdown(hub):
            await hub.state["http"].aclose()
    """


@hookspec
def cronhub_web_routes(hub: Hub) -> Sequence[BaseRoute] | None:
    """Return Starlette routes to add to the ``cronhub serve`` app.

    Called once when ``hub.asgi()`` builds the application. Routes are mounted after the
    core routes; a route whose path collides with the HTTP API contract (``/api/...``,
    ``/healthz``, ``/metrics``) is an error naming the plugin. Implementations may not be
    ``async``.

    :param hub: The hub the app serves.
    :returns: A sequence of ``starlette.routing.Route`` or ``Mount`` objects, or ``None``.

    Example::

        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        @cronhub.hookimpl
        def cronhub_web_routes(hub):
            async def version(request):
                return PlainTextResponse("acme 1.2")
            return [Route("/acme/version", version)]
    """


@hookspec
def cronhub_cli(app: typer.Typer) -> None:
    """Add commands to the ``cronhub`` command line.

    Called once when the CLI is built (``make_cli``), after the global options exist. Add a
    command with ``@app.command("name")`` or a group with ``app.add_typer(sub,
    name="slack")``. A name that another plugin already added is an error naming both.
    Implementations may not be ``async``.

    :param app: The root ``typer.Typer`` application.
    :returns: Nothing; the value is ignored.

    Example::

        import typer

        @cronhub.hookimpl
        def cronhub_cli(app):
            slack = typer.Typer(help="Slack alerts.")

            @slack.command("test")
            def send_test() -> None:
                typer.echo("sent")

            app.add_typer(slack, name="slack")

    Used by: the built-in ``commands`` plugin (``list``, ``next``, ``run`` and the rest).
    """
