"""``cronhub schedule``: add, list, pause, resume and remove runtime schedules.

A runtime schedule runs a job that a plugin or the application already registered, with JSON
parameters checked against the job function (see :mod:`cronhub.runtime_schedules`). Every
worker and ``serve`` instance sharing the storage picks a change up within a second. Bad input
(an unknown job, a bad expression, zone or parameter) is one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

import typer

from cronhub.cli import echo_json, state
from cronhub.errors import ScheduleInputError, UsageError
from cronhub.plugins import hookimpl

JSON_HELP = "Print JSON."
#: Fields of a schedule that are also ``add`` options (errors name the option).
_OPTIONS = ("cron", "every", "at", "tz", "start", "end")


@hookimpl(trylast=True)
def cronhub_cli(app: typer.Typer) -> None:
    group = typer.Typer(
        name="schedule",
        help="Runtime schedules of registered jobs: add, list, pause, resume, remove.",
        no_args_is_help=True,
        add_completion=False,
    )
    group.command("add")(add)
    group.command("list")(list_schedules)
    group.command("remove")(remove)
    group.command("pause")(pause)
    group.command("resume")(resume)
    app.add_typer(group, name="schedule")


def _schedules(ctx: typer.Context) -> Any:
    from cronhub.runtime_schedules import RuntimeSchedules

    return RuntimeSchedules(state(ctx).hub())


def _creator() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a bare container)
        return "cli"
    return f"cli:{user}@{socket.gethostname()}"


def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The registered job to schedule."),
    cron: str | None = typer.Option(None, "--cron", help="A cron expression, e.g. '0 9 * * MON'."),
    every: str | None = typer.Option(None, "--every", help="An interval: '90s', '5m', '1h'."),
    at: str | None = typer.Option(None, "--at", help="One run at an ISO 8601 time."),
    tz: str = typer.Option("UTC", "--tz", help="IANA zone of --cron, and of naive times."),
    params: str | None = typer.Option(
        None, "--params", help="Parameters for the job function, a JSON object: '{\"a\": 1}'."
    ),
    start: str | None = typer.Option(None, "--start", help="No slot before this ISO time."),
    end: str | None = typer.Option(None, "--end", help="No slot after this ISO time."),
    paused: bool = typer.Option(False, "--paused", help="Add it paused."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Add a runtime schedule for a registered job (exactly one of --cron, --every, --at)."""
    parsed: Any = None
    if params is not None:
        try:
            parsed = json.loads(params)
        except ValueError as exc:
            raise UsageError(f"--params is not valid JSON: {exc}") from None
    schedules = _schedules(ctx)
    try:
        added = schedules.add(
            name,
            cron=cron,
            every=every,
            at=at,
            tz=tz,
            params=parsed,
            start=start,
            end=end,
            paused=paused,
            created_by=_creator(),
        )
    except ScheduleInputError as exc:
        raise _as_option_error(exc) from None
    (shown,) = schedules.describe([added])
    if as_json:
        echo_json(shown)
        return
    state_text = "paused" if added.paused else f"next run {shown['next_run'] or '-'}"
    typer.echo(f"added schedule {added.id}: {added.job}, {shown['schedule_text']} ({state_text})")


def _as_option_error(exc: ScheduleInputError) -> UsageError:
    if exc.field in _OPTIONS:
        return UsageError(f"--{exc.field}: {exc.reason}")
    if exc.field == "schedule":
        return UsageError(exc.reason.replace("cron, every, at", "--cron, --every, --at"))
    return UsageError(str(exc))


def list_schedules(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Only the schedules of this job."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List runtime schedules, oldest first."""
    schedules = _schedules(ctx)
    shown = schedules.describe(schedules.all(name))
    if as_json:
        echo_json(shown)
        return
    if not shown:
        typer.echo("no schedules" + (f" for job {name!r}" if name else ""))
        return
    rows = [
        (
            item["id"],
            item["job"],
            f"{item['kind']} {item['schedule']}",
            item["tz"],
            json.dumps(item["params"], ensure_ascii=False, sort_keys=True),
            "paused" if item["paused"] else (item["next_run"] or "-"),
        )
        for item in shown
    ]
    _table(("ID", "JOB", "SCHEDULE", "TZ", "PARAMS", "NEXT RUN"), rows)


def remove(
    ctx: typer.Context,
    schedule_id: str = typer.Argument(..., metavar="ID", help="The schedule's id."),
) -> None:
    """Remove a runtime schedule (its runs stay in history)."""
    removed = _schedules(ctx).remove(schedule_id)
    typer.echo(f"removed schedule {removed.id} of job {removed.job}")


def pause(
    ctx: typer.Context,
    schedule_id: str = typer.Argument(..., metavar="ID", help="The schedule's id."),
) -> None:
    """Pause a runtime schedule: none of its slots runs, or is caught up later."""
    changed = _schedules(ctx).pause(schedule_id)
    typer.echo(f"schedule {changed.id} of job {changed.job}: paused")


def resume(
    ctx: typer.Context,
    schedule_id: str = typer.Argument(..., metavar="ID", help="The schedule's id."),
) -> None:
    """Resume a paused runtime schedule; the paused time is not caught up."""
    changed = _schedules(ctx).resume(schedule_id)
    typer.echo(f"schedule {changed.id} of job {changed.job}: resumed")


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in (headers, *rows):
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
