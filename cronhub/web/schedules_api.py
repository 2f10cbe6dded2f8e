"""The HTTP API of runtime schedules, and the preview of an expression's next run times.

Routes (in :func:`routes`, placed by the app before the job routes of :mod:`cronhub.web.api`):

- ``POST /api/jobs/{name}/schedules``: add a schedule for a registered job; 201 with it;
- ``GET /api/jobs/{name}/schedules``: ``{"schedules": [...]}`` of one job;
- ``GET /api/schedules?job=``: ``{"schedules": [...]}``, oldest first;
- ``GET /api/schedules/{id}``, ``DELETE /api/schedules/{id}``: one schedule; delete it;
- ``POST /api/schedules/{id}/pause``, ``POST /api/schedules/{id}/resume``;
- ``GET /api/preview?expr=&tz=&count=&kind=&start=&end=``: the next run times, computed as
  ``cronhub next`` computes them (the dashboard's form shows them before saving), or
  ``"valid": false`` with the reason ``cronhub next`` gives.

Bad input is a 4xx JSON error naming the culprit: ``{"error": "invalid parameter", "detail":
"job 'report': parameter 'limit': expected int, got 'ten' (str)", "job": "report",
"parameter": "limit"}``; ``{"error": "invalid schedule", "detail": "cron: ...", "field":
"cron"}``; 404 for an unknown job or schedule. Every change is published on the event bus as
``schedule.changed`` (``{"schedule": schedule object}``, with ``"removed": true`` on delete).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cronhub.errors import ParameterError, ScheduleInputError, UnknownScheduleError
from cronhub.runtime_schedules import KINDS, MAX_PREVIEW, RuntimeSchedules, preview
from cronhub.web.api import ApiError, api, int_param, json_body, query, runtime_of

if TYPE_CHECKING:
    from starlette.requests import Request

    from cronhub.runtime_schedules import RuntimeSchedule

Handler = Callable[["Request"], Awaitable[Response]]

#: Fields of ``POST /api/jobs/{name}/schedules``.
BODY_FIELDS = ("cron", "every", "at", "tz", "params", "start", "end", "paused")
#: The SSE event published after every change.
EVENT = "schedule.changed"


def schedule_errors(handler: Handler) -> Handler:
    """Answer the schedule errors with their culprit; others go to :func:`api`."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ParameterError as exc:
            body = {
                "error": "invalid parameter",
                "detail": str(exc),
                "job": exc.job,
                "parameter": exc.parameter,
            }
            return JSONResponse(body, status_code=400)
        except ScheduleInputError as exc:
            body = {"error": "invalid schedule", "detail": str(exc), "field": exc.field}
            return JSONResponse(body, status_code=400)
        except UnknownScheduleError as exc:
            return JSONResponse({"error": "unknown schedule", "detail": str(exc)}, status_code=404)

    return api(endpoint)


def _book(request: Request) -> RuntimeSchedules:
    return RuntimeSchedules(runtime_of(request).hub)


def _publish(request: Request, data: dict[str, Any]) -> None:
    runtime_of(request).events.publish(EVENT, data)


def _describe(book: RuntimeSchedules, schedule: RuntimeSchedule) -> dict[str, Any]:
    return book.describe([schedule])[0]


@schedule_errors
async def add_schedule(request: Request) -> Response:
    """``POST /api/jobs/{name}/schedules``: 201 and the schedule object."""
    query(request, ())
    body = await json_body(request, BODY_FIELDS)
    name: str = request.path_params["name"]
    for field in ("cron", "every", "at", "tz", "start", "end"):
        value = body.get(field)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and not isinstance(value, str) and not (field == "every" and number):
            raise ScheduleInputError(field, f"{value!r}: must be a string")
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        raise ApiError(400, "invalid JSON body", f"paused must be true or false, not {paused!r}")
    # A browser (the dashboard) sends the CSRF header; other clients do not need it.
    creator = "dashboard" if request.headers.get("x-csrf-token") else "api"
    book = _book(request)

    def add() -> dict[str, Any]:
        added = book.add(
            name,
            cron=body.get("cron"),
            every=body.get("every"),
            at=body.get("at"),
            tz=body.get("tz"),
            params=body.get("params"),
            start=body.get("start"),
            end=body.get("end"),
            paused=paused,
            created_by=creator,
        )
        return _describe(book, added)

    shown = await run_in_threadpool(add)
    _publish(request, {"schedule": shown})
    return JSONResponse(shown, status_code=201)


async def job_schedules(request: Request) -> Response:
    """``/api/jobs/{name}/schedules``: ``GET`` lists the job's schedules, ``POST`` adds one."""
    if request.method == "POST":
        return await add_schedule(request)
    return await _job_schedules(request)


@schedule_errors
async def _job_schedules(request: Request) -> Response:
    query(request, ())
    return await _list(request, request.path_params["name"])


@schedule_errors
async def list_schedules(request: Request) -> Response:
    """``GET /api/schedules``: every schedule (``?job=`` filters), oldest first."""
    params = query(request, {"job"})
    return await _list(request, params.get("job"))


async def _list(request: Request, job: str | None) -> Response:
    book = _book(request)
    shown = await run_in_threadpool(lambda: book.describe(book.all(job)))
    return JSONResponse({"schedules": shown})


@schedule_errors
async def one_schedule(request: Request) -> Response:
    """``GET`` or ``DELETE /api/schedules/{id}``: the schedule; delete answers what it removed."""
    query(request, ())
    book = _book(request)
    schedule_id: str = request.path_params["schedule_id"]
    if request.method == "DELETE":
        removed = await run_in_threadpool(book.remove, schedule_id)
        shown = _describe(book, removed)
        _publish(request, {"schedule": shown, "removed": True})
        return JSONResponse({"schedule": shown, "removed": True})
    found = await run_in_threadpool(book.get, schedule_id)
    return JSONResponse(_describe(book, found))


def _pause_action(paused: bool) -> Handler:
    @schedule_errors
    async def endpoint(request: Request) -> Response:
        query(request, ())
        book = _book(request)
        action = book.pause if paused else book.resume
        changed = await run_in_threadpool(action, request.path_params["schedule_id"])
        shown = _describe(book, changed)
        _publish(request, {"schedule": shown})
        return JSONResponse(shown)

    verb = "pause" if paused else "resume"
    endpoint.__name__ = endpoint.__qualname__ = f"schedule_{verb}"
    endpoint.__doc__ = f"``POST /api/schedules/{{id}}/{verb}``: the schedule object."
    return endpoint


@api
async def preview_times(request: Request) -> Response:
    """``GET /api/preview``: the next run times of an expression, or why it cannot be used.

    The request is well formed as soon as ``expr`` is given; an expression (or zone, window)
    that cannot be used is the answer, not a bad request: ``{"valid": false, "error": "expr:
    ...", "field": "expr", ...}`` with the same reason as ``cronhub next`` prints.
    """
    params = query(request, {"expr", "tz", "count", "kind", "start", "end"})
    expression = params.get("expr")
    if expression is None or not expression:
        raise ApiError(400, "missing query parameter", "expr: the expression to preview")
    kind = params.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise ApiError(400, "bad query parameter", f"kind={kind[:40]!r}: one of {', '.join(KINDS)}")
    count = int_param(params, "count", 5, 1, MAX_PREVIEW)
    assert count is not None
    tz = params.get("tz") or "UTC"
    try:
        shown = preview(
            expression,
            tz=tz,
            count=count,
            kind=kind,
            start=params.get("start") or None,
            end=params.get("end") or None,
            after=runtime_of(request).hub.clock.now(),
        )
    except ScheduleInputError as exc:
        invalid = {"error": str(exc), "field": exc.field, "schedule_text": None}
        return JSONResponse({"valid": False, "times": [], "tz": tz, **invalid})
    return JSONResponse(
        {
            "valid": True,
            "times": shown.isoformat(),
            "schedule_text": shown.text,
            "tz": shown.zone.key,
            "error": None,
            "field": None,
        }
    )


def routes() -> list[Route]:
    """The routes of runtime schedules and the preview."""
    return [
        Route(
            "/api/jobs/{name:path}/schedules",
            job_schedules,
            methods=["GET", "POST"],
            name="api_job_schedules",
        ),
        Route("/api/schedules", list_schedules, methods=["GET"], name="api_schedules"),
        Route(
            "/api/schedules/{schedule_id}",
            one_schedule,
            methods=["GET", "DELETE"],
            name="api_schedule",
        ),
        Route(
            "/api/schedules/{schedule_id}/pause",
            _pause_action(True),
            methods=["POST"],
            name="api_schedule_pause",
        ),
        Route(
            "/api/schedules/{schedule_id}/resume",
            _pause_action(False),
            methods=["POST"],
            name="api_schedule_resume",
        ),
        Route("/api/preview", preview_times, methods=["GET"], name="api_preview"),
    ]
