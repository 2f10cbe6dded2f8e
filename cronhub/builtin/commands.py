"""The built-in commands, added through ``cronhub_cli`` like any plugin's.

Heavy imports (storage, engine, web) happen inside the commands that need them, so that
``cronhub next`` stays quick.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import typer

from cronhub.cli import EXIT_JOB_FAILED, EXIT_USAGE, echo_json, state
from cronhub.errors import CronhubError, UsageError
from cronhub.plugins import hookimpl

JSON_HELP = "Print JSON."


@hookimpl(trylast=True)
def cronhub_cli(app: typer.Typer) -> None:
    app.command("list")(list_jobs)
    app.command("next")(next_times)
    app.command("plugins")(plugins)
    app.command("check")(check)
    app.command("run")(run)
    app.command("history")(history)
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("worker")(worker)
    app.command("serve")(serve)


def list_jobs(
    ctx: typer.Context,
    tag: str | None = typer.Option(None, "--tag", help="Only jobs with this tag."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List jobs with their schedule, next and last run."""
    hub = state(ctx).hub()
    jobs = hub.describe_jobs(hub.select_jobs(tag))
    if as_json:
        echo_json(jobs)
        return
    if not jobs:
        typer.echo("no jobs" + (f" tagged {tag!r}" if tag else ""))
        return
    rows = [
        (
            job["name"],
            _schedule_cell(job),
            job["tz"],
            "paused" if job["paused"] else (job["next_run"] or "-"),
            job["last_status"] or "-",
        )
        for job in jobs
    ]
    _table(("NAME", "SCHEDULE", "TZ", "NEXT RUN", "LAST STATUS"), rows)


def _schedule_cell(job: dict[str, object]) -> str:
    """The SCHEDULE column: a cron expression as written; intervals and one-offs in words."""
    if job["schedule"] is None:
        return "on demand"
    if job["kind"] == "cron":
        return str(job["schedule"])
    return str(job["schedule_text"])


def next_times(
    expression: str = typer.Argument(
        ..., metavar="EXPR", help="A cron expression, '@daily', 'every:5m' or 'at:ISO'."
    ),
    tz: str = typer.Option("UTC", "--tz", help="IANA time zone of the expression."),
    after: str | None = typer.Option(None, "--after", help="Start after this ISO time."),
    count: int = typer.Option(5, "--count", "-n", min=1, max=10000, help="How many."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show the next fire times of an expression (no storage or plugins needed)."""
    from cronhub.schedules import get_zone, parse_expression

    zone = get_zone(tz)
    schedule = parse_expression(expression, tz=zone)
    start = _parse_after(after, zone)
    times: list[datetime] = []
    current = start
    while len(times) < count:
        slot = schedule.next_after(current)
        if slot is None:
            break
        times.append(slot)
        current = slot
    shown = [t.astimezone(zone).isoformat() for t in times]
    if as_json:
        echo_json(shown)
        return
    typer.echo(f"# {schedule.describe()}")
    for text in shown:
        typer.echo(text)


def _parse_after(value: str | None, zone: object) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--after {value!r} is not an ISO 8601 time (e.g. 2026-03-08T01:30:00-05:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)  # type: ignore[arg-type]
    return parsed


def plugins(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", help="Include built-in plugins."),
    hook: str | None = typer.Option(None, "--hook", help="Only plugins implementing this hook."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List plugins: name, distribution, version, hooks, and load errors."""
    pm = state(ctx).pm
    infos = [
        info
        for info in pm.list_plugins()
        if (show_all or not info.builtin) and (hook is None or hook in info.hooks)
    ]
    if as_json:
        echo_json([info.to_dict() for info in infos])
        return
    if not infos:
        typer.echo("no plugins installed (use --all to list the built-in ones)")
        return
    rows = []
    for info in infos:
        status = "error: " + info.error if info.error else ("disabled" if info.disabled else "")
        dist = f"{info.distribution} {info.version}" if info.distribution else "-"
        rows.append((info.name, dist, ", ".join(info.hooks) or "-", status))
    _table(("NAME", "DISTRIBUTION", "HOOKS", "STATUS"), rows)


def check(ctx: typer.Context) -> None:
    """Import every plugin and validate every job; exit 2 listing every problem."""
    cli = state(ctx)
    pm = cli.pm
    # Plugins that failed to load, or implement unknown hooks, were already reported as one
    # line each while loading; they are counted here, not printed twice.
    reported = len(pm.load_errors) + sum(
        1 for info in pm.infos.values() if info.error and "unknown hook" in info.error
    )
    problems: list[str] = []
    jobs: dict[str, object] = {}
    try:
        hub = cli.hub()
        jobs = dict(hub.jobs)
    except CronhubError as exc:
        problems.append(str(exc))
    else:
        for job in hub.jobs.values():
            try:
                executor = pm.call_provider("cronhub_executor", job=job)
            except CronhubError as exc:
                problems.append(f"job {job.name!r}: {exc}")
                continue
            if executor is None:
                problems.append(f"job {job.name!r}: no plugin provides executor {job.executor!r}")
    if problems or reported:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        typer.echo(f"{len(problems) + reported} problem(s) found", err=True)
        raise typer.Exit(EXIT_USAGE)
    loaded = sum(1 for info in pm.infos.values() if not info.builtin and not info.disabled)
    typer.echo(f"ok: {loaded} plugin(s), {len(jobs)} job(s)")


def run(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The job to run."),
    params: str | None = typer.Option(
        None, "--params", help="Parameters for the job function, a JSON object: '{\"a\": 1}'."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Run a job now in this process and record the run; exit 1 if it did not succeed."""
    import json

    from cronhub.engine import run_job_once

    parsed = None
    if params is not None:
        try:
            parsed = json.loads(params)
        except ValueError as exc:
            raise UsageError(f"--params is not valid JSON: {exc}") from None
    hub = state(ctx).hub()
    hub.get_job(name)
    finished = asyncio.run(run_job_once(hub, name, params=parsed))
    if as_json:
        echo_json(finished.to_dict(detail=True))
    else:
        typer.echo(
            f"run {finished.id} of {finished.job}: {finished.status} in {finished.duration_ms} ms"
        )
        if finished.log:
            typer.echo(finished.log.rstrip())
        if finished.traceback:
            typer.echo(finished.traceback.rstrip(), err=True)
    if finished.status != "succeeded":
        raise typer.Exit(EXIT_JOB_FAILED)


def history(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Only runs of this job."),
    status: str | None = typer.Option(None, "--status", help="Only runs with this status."),
    limit: int = typer.Option(20, "--limit", min=1, max=10000, help="How many runs."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show runs, newest first."""
    from cronhub.runs import RunStatus
    from cronhub.storage import RunFilter

    hub = state(ctx).hub()
    if status is not None and status not in {s.value for s in RunStatus}:
        raise UsageError(
            f"--status {status!r}: must be one of {', '.join(s.value for s in RunStatus)}"
        )
    if name is not None and name not in hub.jobs:
        hub.get_job(name)
    runs = hub.storage.list_runs(
        RunFilter(job=name, status=RunStatus(status) if status else None, limit=limit)
    )
    if as_json:
        echo_json([r.to_dict() for r in runs])
        return
    if not runs:
        typer.echo("no runs")
        return
    rows = [
        (
            str(r.id),
            r.job,
            str(r.status),
            str(r.trigger),
            r.scheduled_for.isoformat() if r.scheduled_for else "-",
            f"{r.duration_ms} ms" if r.duration_ms is not None else "-",
            (r.error_message or "")[:60],
        )
        for r in runs
    ]
    _table(("ID", "JOB", "STATUS", "TRIGGER", "SCHEDULED FOR", "DURATION", "ERROR"), rows)


def pause(ctx: typer.Context, name: str = typer.Argument(..., help="The job.")) -> None:
    """Pause a job (persistent): no slot of it runs or is caught up until resumed."""
    _set_paused(ctx, name, True)


def resume(ctx: typer.Context, name: str = typer.Argument(..., help="The job.")) -> None:
    """Resume a paused job; the time it was paused is not caught up."""
    _set_paused(ctx, name, False)


def _set_paused(ctx: typer.Context, name: str, paused: bool) -> None:
    hub = state(ctx).hub()
    job = hub.get_job(name)
    hub.storage.set_paused(job.name, paused, now=hub.clock.now())
    typer.echo(f"{job.name}: {'paused' if paused else 'resumed'}")


def worker(ctx: typer.Context) -> None:
    """Run the scheduler until SIGINT or SIGTERM (running jobs get a grace period)."""
    from cronhub.config import mask_url
    from cronhub.engine import Engine

    hub = state(ctx).hub()
    if hub.storage_url.startswith("memory://"):
        typer.echo("warning: memory:// storage keeps nothing after this process", err=True)
    typer.echo(
        f"cronhub worker: {len(hub.jobs)} job(s), storage {mask_url(hub.storage.url)}", err=True
    )
    asyncio.run(_serve(Engine(hub)))


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(
        8000, "--port", min=0, max=65535, help="Port to listen on (0: any free one)."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        help="Require this bearer token (default: CRONHUB_TOKEN or the token setting).",
    ),
    no_scheduler: bool = typer.Option(
        False, "--no-scheduler", help="Serve the dashboard and API only (web-only instance)."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Allow a non-loopback address without a token."
    ),
) -> None:
    """Run the scheduler with the dashboard, HTTP API, /healthz and /metrics."""
    from cronhub.web.serve import resolve_token, run_server

    hub = state(ctx).hub()
    run_server(
        hub,
        host=host,
        port=port,
        token=resolve_token(token, hub),
        scheduler=not no_scheduler,
        insecure=insecure,
    )


async def _serve(engine: object) -> None:
    import signal

    from cronhub.engine import Engine

    assert isinstance(engine, Engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await engine.serve(stop)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    for row in (headers, *rows):
        typer.echo(
            "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
        )
