"""How the dashboard shows times, durations, numbers and statuses (Jinja2 filters).

``static/cronhub.js`` formats the same values the same way when it updates a page, so a value
rendered by the server and one updated live look alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cronhub.runs import Run

#: Statuses drawn red, blue, amber; the rest (queued, skipped, cancelled) are grey.
FAILURE_STATUSES = frozenset({"failed", "timed_out", "crashed"})


def _when(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def span(seconds: float) -> str:
    """``4m 12s``, ``3h 05m``, ``2d 4h``: the two largest units of a number of seconds."""
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def reltime(value: datetime | str | None, now: datetime) -> str:
    """``in 4m 12s`` for a future time, ``3m ago`` for a past one, ``-`` for none."""
    when = _when(value)
    if when is None:
        return "-"
    delta = (when - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    if delta > 0:
        return "in " + span(delta)
    return span(delta).split(" ")[0] + " ago"


def abstime(value: datetime | str | None) -> str:
    """``2026-03-08 14:03:12 UTC``: the absolute time shown in ``title`` attributes."""
    when = _when(value)
    if when is None:
        return ""
    if when.utcoffset():
        when = when.astimezone(UTC)
    # isoformat, not strftime: a page of the jobs table formats a thousand of these.
    return when.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds") + " UTC"


def duration(ms: int | None) -> str:
    """``340 ms``, ``1.2 s``, ``2m 03s``; ``-`` when unknown."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return span(ms / 1000)


def number(value: int | float | None) -> str:
    """``10,000``; ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def percent(value: float | None) -> str:
    """A success rate given as a fraction (``0.982`` -> ``98.2%``); ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{value * 100:.1f}%".replace(".0%", "%")


def status_class(status: str | None) -> str:
    """The CSS class that colours a status: ``s-succeeded``, ``s-failed``, ..."""
    return f"s-{status or 'never'}"


def mark(run: Run) -> dict[str, Any]:
    """What a coloured mark of the jobs table needs: the run's id, status and a tooltip.

    Built here rather than in the template: a page of 100 jobs has 1,000 marks.
    """
    status = str(run.status)
    when = run.started_at or run.finished_at or run.created_at
    title = f"#{run.id} {status.replace('_', ' ')}"
    if when is not None:
        title += " · " + abstime(when)
    return {"id": run.id, "status": status, "title": title}


def job_state(job: dict[str, Any], recent: Sequence[Run]) -> str:
    """What a job is doing, for its status cell: paused, running, queued or its last status.

    ``recent`` are its newest runs, newest first: a running run counts even when a newer
    slot was already recorded as skipped.
    """
    if job.get("paused"):
        return "paused"
    statuses = {str(run.status) for run in recent}
    for active in ("running", "queued"):
        if active in statuses:
            return active
    return str(job.get("last_status") or "never")


def job_options(job: dict[str, Any]) -> list[tuple[str, str]]:
    """A job's options as (label, text) pairs for the job page, defaults included."""

    def seconds(value: float | None) -> str:
        if value is None:
            return "none"
        return span(value) if value >= 60 else f"{value:g}s"

    retries = str(job["retries"])
    if job["retries"]:
        retries += f" (first after {seconds(job['retry_delay'])}, backoff x{job['backoff']:g})"
    catch_up = str(job["catch_up"])
    if job["catch_up"] == "all":
        catch_up += f" (at most {job['catch_up_limit']})"
    catch_up += f", window {seconds(job['catch_up_window'])}"
    options = [
        ("Time zone", str(job["tz"])),
        ("Timeout", seconds(job["timeout"])),
        ("Retries", retries),
        ("Overlap", str(job["overlap"])),
        ("Catch-up", catch_up),
        ("Misfire grace", seconds(job["misfire_grace"])),
        ("Jitter", seconds(job["jitter"]) if job["jitter"] else "none"),
        ("Executor", str(job["executor"])),
        ("Run on start-up", "yes" if job["run_on_startup"] else "no"),
    ]
    if job.get("start") or job.get("end"):
        options.append(("Window", f"{job.get('start') or '...'} to {job.get('end') or '...'}"))
    alerts = job.get("alerts")
    if alerts is not None:
        options.append(("Alerts", ", ".join(alerts) or "muted"))
    options.append(("Defined by", str(job["plugin"])))
    return options


def written(job: dict[str, Any]) -> str:
    """The schedule as the job's author wrote it: ``*/5 * * * *``, ``90s``, an ISO time."""
    schedule = job["schedule"]
    if schedule is None:  # a job on demand: no schedule of its own
        return "on_demand=True"
    if isinstance(schedule, list):
        return " | ".join(str(item) for item in schedule)
    if job["kind"] == "every" and isinstance(schedule, int | float):
        seconds = float(schedule)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size and seconds % size == 0:
                return f"{int(seconds // size)}{unit}"
        return f"{seconds:g}s"
    return str(schedule)


_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]*\.)?([^`]+)`")


def summary(docstring: str) -> str:
    """The first paragraph of a docstring as plain text (reST markup removed)."""
    paragraph = docstring.strip().split("\n\n")[0]
    text = " ".join(paragraph.split())
    return _ROLE.sub(r"\1", text).replace("``", "")
