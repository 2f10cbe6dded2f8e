"""The JSON API of design section 7, under ``/api``; ``/api/openapi.json`` describes it.

Every error is ``{"error": "...", "detail": ...}`` with a 4xx status that names the culprit
(the job, run, parameter, header or body at fault), or 503 when the storage does not answer.
Query parameters are checked strictly: an unknown or repeated one is a 400, so a typo never
silently widens a filter. Blocking storage calls run in a thread.

Job names may contain ``/``: ``/api/jobs/{name}`` takes the rest of the path, and a ``POST``
to a path ending in ``/run``, ``/pause`` or ``/resume`` is that action on the job before it.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cronhub.errors import HookError, StorageError, UnknownJobError, UsageError
from cronhub.runs import RunStatus
from cronhub.storage import RunFilter
from cronhub.web.auth import error_response, read_body
from cronhub.web.events import event_stream
from cronhub.web.openapi import openapi_document
from cronhub.web.runtime import compute_stats

if TYPE_CHECKING:
    from starlette.requests import Request

    from cronhub.hub import Hub
    from cronhub.jobs import Job
    from cronhub.web.runtime import WebRuntime

__all__ = ["ApiError", "compute_stats", "routes"]

log = logging.getLogger("cronhub.web")

#: Runs of a job shown by ``GET /api/jobs/{name}``.
JOB_RECENT_RUNS = 20
#: Page sizes of ``GET /api/runs`` and ``GET /api/dead-letters``.
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
#: Largest JSON body accepted.
MAX_JSON_BODY = 1024 * 1024
#: The largest run id (SQL's BIGINT); larger ones cannot exist.
MAX_RUN_ID = 2**63 - 1
JOB_ACTIONS = ("run", "pause", "resume")

Handler = Callable[["Request"], Awaitable[Response]]


class ApiError(Exception):
    """An error answered as ``{"error": ..., "detail": ...}`` with ``status``."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers

    def response(self) -> Response:
        """The JSON error response."""
        return error_response(self.status, self.error, self.detail, self.headers)


def api(handler: Handler) -> Handler:
    """Turn the errors a handler raises into JSON errors (never a 500 for bad input)."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except UnknownJobError as exc:
            return error_response(404, "unknown job", str(exc))
        except StorageError as exc:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            return error_response(503, "storage unavailable", str(exc))
        except HookError as exc:
            log.error("%s %s: %s", request.method, request.url.path, exc)
            return error_response(503, "a plugin failed", str(exc))
        except UsageError as exc:
            return error_response(400, "bad request", str(exc))

    return endpoint


def runtime_of(request: Request) -> WebRuntime:
    """The app's :class:`~cronhub.web.runtime.WebRuntime`."""
    runtime: WebRuntime = request.app.state.runtime
    return runtime


def _hub(request: Request) -> Hub:
    return runtime_of(request).hub


# -- parameters ---------------------------------------------------------------------------------


def query(request: Request, allowed: Collection[str]) -> dict[str, str]:
    """The query parameters, each given at most once and each one of ``allowed``."""
    params = request.query_params
    unknown = sorted(set(params.keys()) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "unknown query parameter",
            f"{', '.join(repr(u) for u in unknown)}; this route takes "
            + (", ".join(sorted(allowed)) or "none"),
        )
    values: dict[str, str] = {}
    for key in params:
        given = params.getlist(key)
        if len(given) > 1:
            raise ApiError(400, "repeated query parameter", f"{key!r} is given {len(given)} times")
        values[key] = given[0]
    return values


def int_param(
    params: dict[str, str], name: str, default: int | None, low: int, high: int
) -> int | None:
    """An integer parameter between ``low`` and ``high``, or ``default`` when absent."""
    text = params.get(name)
    if text is None:
        return default
    value = _integer(text)
    if value is None or not low <= value <= high:
        raise ApiError(
            400, "bad query parameter", f"{name}={text[:40]!r}: an integer from {low} to {high}"
        )
    return value


def bool_param(params: dict[str, str], name: str) -> bool | None:
    """``true``/``false`` (also ``1``/``0``), or ``None`` when absent."""
    text = params.get(name)
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ApiError(400, "bad query parameter", f"{name}={text[:40]!r}: true or false")


def status_param(params: dict[str, str]) -> RunStatus | None:
    """The ``status`` filter, one of the run statuses."""
    text = params.get("status")
    if text is None:
        return None
    try:
        return RunStatus(text)
    except ValueError:
        raise ApiError(
            400,
            "bad query parameter",
            f"status={text[:40]!r}: one of {', '.join(s.value for s in RunStatus)}",
        ) from None


def _integer(text: str) -> int | None:
    text = text.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii() or len(digits) > 40:
        return None
    return int(text)


def run_id_of(request: Request) -> int:
    """The ``{run_id}`` path parameter; 400 if not an integer, 404 if it cannot exist."""
    text = request.path_params["run_id"]
    value = _integer(text) if len(text) <= 40 else None
    if value is None:
        raise ApiError(400, "bad run id", f"{text[:40]!r} is not an integer")
    if not 1 <= value <= MAX_RUN_ID:
        raise ApiError(404, "unknown run", f"no run has id {value}")
    return value


async def json_body(request: Request, allowed: Collection[str]) -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body), with only ``allowed`` keys."""
    body, _ = await read_body(request.receive, MAX_JSON_BODY)
    if body is None:
        raise ApiError(413, "body too large", f"at most {MAX_JSON_BODY} bytes of JSON")
    if not body.strip():
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(
            415, "unsupported media type", f"send application/json, not {content_type!r}"
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid JSON body", str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid JSON body", f"expected an object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "unknown field in body",
            f"{', '.join(repr(u) for u in unknown)}; accepted: {', '.join(sorted(allowed))}",
        )
    return data


async def _job_or_404(request: Request, name: str) -> Job:
    hub = _hub(request)
    jobs = await run_in_threadpool(lambda: hub.jobs)
    job = jobs.get(name)
    if job is None:
        raise UnknownJobError(name, list(jobs) if len(jobs) <= 50 else None)
    return job


def _json(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status)


# -- jobs ---------------------------------------------------------------------------------------


class ChunkedBody(Response):
    """A large ready-made body sent in chunks under its ``Content-Length``.

    One ``send`` of several megabytes makes asyncio (before Python 3.12) keep the unsent rest
    in a buffer that it shifts after every partial write; chunks keep that buffer small.
    """

    chunk = 256 * 1024

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        body = memoryview(self.body if scope.get("method") != "HEAD" else b"")
        for start in range(0, max(len(body), 1), self.chunk):
            last = start + self.chunk >= len(body)
            piece = bytes(body[start : start + self.chunk])
            await send({"type": "http.response.body", "body": piece, "more_body": not last})


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``q=0`` refuses it)."""
    for part in header.split(","):
        name, _, options = part.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        for option in options.split(";"):
            key, _, value = option.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


@api
async def list_jobs(request: Request) -> Response:
    """``GET /api/jobs``: ``{"jobs": [job objects]}``, by name; ``?tag=`` filters.

    The full list is gzipped for clients that accept it (it is cached, compressed once).
    """
    params = query(request, {"tag"})
    views = runtime_of(request).jobs
    headers = {"Vary": "Accept-Encoding"}
    tag = params.get("tag")
    if tag is None and accepts_gzip(request.headers.get("accept-encoding", "")):
        headers["Content-Encoding"] = "gzip"
        body = await views.gzipped()
    else:
        body = await views.json(tag)
    return ChunkedBody(body, media_type="application/json", headers=headers)


@api
async def get_job(request: Request) -> Response:
    """``GET /api/jobs/{name}``: the job object with its newest runs in ``runs``."""
    name: str = request.path_params["name"]
    hub = _hub(request)
    jobs = await run_in_threadpool(lambda: hub.jobs)
    prefix, _, action = name.rpartition("/")
    if name not in jobs and action in JOB_ACTIONS and prefix in jobs:
        # GET /api/jobs/x/run: the route of the action exists, with another method.
        raise ApiError(405, "method not allowed", f"{action} is done with POST", {"Allow": "POST"})
    query(request, ())
    job = await _job_or_404(request, name)
    return _json(await _job_detail(hub, job))


def _action(action: str) -> Handler:
    @api
    async def endpoint(request: Request) -> Response:
        job = await _job_or_404(request, request.path_params["name"])
        return await _job_action(request, job, action)

    endpoint.__name__ = endpoint.__qualname__ = f"job_{action}"
    endpoint.__doc__ = f"``POST /api/jobs/{{name}}/{action}``."
    return endpoint


async def _job_detail(hub: Hub, job: Job) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        [obj] = hub.describe_jobs([job])
        runs = hub.storage.list_runs(RunFilter(job=job.name, limit=JOB_RECENT_RUNS))
        obj["runs"] = [run.to_dict() for run in runs]
        return obj

    return await run_in_threadpool(read)


async def _job_action(request: Request, job: Job, action: str) -> Response:
    query(request, ())
    runtime = runtime_of(request)
    if action == "run":
        body = await json_body(request, {"params"})
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise ApiError(400, "invalid JSON body", "params must be an object")
        run = await runtime.run_now(job, params)
        return _json({"run_id": run.id, "run": run.to_dict()}, 202)
    obj = await runtime.set_paused(job, action == "pause")
    return _json(obj)


# -- runs ---------------------------------------------------------------------------------------


@api
async def list_runs(request: Request) -> Response:
    """``GET /api/runs``: ``{"runs": [...], "next": cursor}``, newest first."""
    params = query(request, {"job", "status", "limit", "before", "dead_letter"})
    limit = int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    before = int_param(params, "before", None, 1, MAX_RUN_ID)
    status = status_param(params)
    dead_letter = bool_param(params, "dead_letter")
    job = params.get("job")
    hub = _hub(request)
    assert limit is not None
    flt = RunFilter(job=job, status=status, before=before, limit=limit + 1, dead_letter=dead_letter)

    def read() -> list[Any]:
        # A job this instance does not define may still have history (one removed, or defined
        # by another instance): it is unknown only when it has no run at all.
        undefined = job is not None and job not in hub.jobs
        if undefined and not hub.storage.list_runs(RunFilter(job=job, limit=1)):
            hub.get_job(str(job))
        return hub.storage.list_runs(flt)

    runs = await run_in_threadpool(read)
    more = len(runs) > limit
    runs = runs[:limit]
    return _json({"runs": [run.to_dict() for run in runs], "next": runs[-1].id if more else None})


@api
async def get_run(request: Request) -> Response:
    """``GET /api/runs/{id}``: the run object with ``traceback``, ``log`` and ``params``."""
    query(request, ())
    run_id = run_id_of(request)
    run = await run_in_threadpool(_hub(request).storage.get_run, run_id)
    if run is None:
        raise ApiError(404, "unknown run", f"no run has id {run_id}")
    return _json(run.to_dict(detail=True))


@api
async def cancel_run(request: Request) -> Response:
    """``POST /api/runs/{id}/cancel``: 202 and the cancelled run; 409 if it already ended."""
    query(request, ())
    run_id = run_id_of(request)
    hub = _hub(request)
    run = await run_in_threadpool(hub.storage.get_run, run_id)
    if run is None:
        raise ApiError(404, "unknown run", f"no run has id {run_id}")
    cancelled = await runtime_of(request).cancel(run_id) if not run.status.terminal else None
    if cancelled is None:
        current = await run_in_threadpool(hub.storage.get_run, run_id)
        status = current.status if current is not None else run.status
        raise ApiError(409, "run already ended", f"run {run_id} of {run.job} ended as {status}")
    return _json({"run": cancelled.to_dict()}, 202)


# -- dead letters, stats, plugins, instances ---------------------------------------------------


@api
async def dead_letters(request: Request) -> Response:
    """``GET`` lists dead letters (``job``, ``limit``); ``DELETE`` clears them (``job``)."""
    hub = _hub(request)
    if request.method == "DELETE":
        params = query(request, {"job"})
        job = params.get("job")
        cleared = await run_in_threadpool(lambda: hub.storage.clear_dead_letters(job=job))
        return _json({"cleared": cleared})
    params = query(request, {"job", "limit"})
    limit = int_param(params, "limit", 100, 1, MAX_LIMIT)
    assert limit is not None
    runs = await run_in_threadpool(
        lambda: hub.storage.dead_letters(job=params.get("job"), limit=limit)
    )
    return _json({"runs": [run.to_dict() for run in runs]})


@api
async def stats(request: Request) -> Response:
    """``GET /api/stats``: jobs, running, queued, runs last hour, success rate, dead letters."""
    query(request, ())
    return _json(await runtime_of(request).stats())


@api
async def plugins(request: Request) -> Response:
    """``GET /api/plugins``: the records of ``cronhub plugins --json`` (``all``, ``hook``)."""
    params = query(request, {"all", "hook"})
    show_all = bool_param(params, "all") or False
    hook = params.get("hook")
    pm = _hub(request).plugin_manager
    infos = [
        info.to_dict()
        for info in pm.list_plugins()
        if (show_all or not info.builtin) and (hook is None or hook in info.hooks)
    ]
    return _json({"plugins": infos})


@api
async def instances(request: Request) -> Response:
    """``GET /api/instances``: the instances sharing the storage (or just this one)."""
    query(request, ())
    return _json({"instances": await runtime_of(request).instances()})


@api
async def events(request: Request) -> Response:
    """``GET /api/events``: the Server-Sent Events stream."""
    query(request, ())
    if request.method == "HEAD":  # the headers only: a stream never ends
        return Response(media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return event_stream(runtime_of(request).events, request.headers.get("last-event-id"))


@api
async def openapi(request: Request) -> Response:
    """``GET /api/openapi.json``: the OpenAPI 3.1 document of this API."""
    query(request, ())
    return _json(openapi_document(request.scope.get("root_path", "")))


def routes() -> list[Route]:
    """The API's routes (the app adds ``/healthz`` and ``/metrics``)."""
    return [
        Route("/api/jobs", list_jobs, methods=["GET"], name="api_jobs"),
        *(
            Route(f"/api/jobs/{{name:path}}/{action}", _action(action), methods=["POST"])
            for action in JOB_ACTIONS
        ),
        Route("/api/jobs/{name:path}", get_job, methods=["GET"], name="api_job"),
        Route("/api/runs", list_runs, methods=["GET"], name="api_runs"),
        Route("/api/runs/{run_id}", get_run, methods=["GET"], name="api_run"),
        Route("/api/runs/{run_id}/cancel", cancel_run, methods=["POST"], name="api_run_cancel"),
        Route("/api/dead-letters", dead_letters, methods=["GET", "DELETE"], name="api_dead"),
        Route("/api/stats", stats, methods=["GET"], name="api_stats"),
        Route("/api/plugins", plugins, methods=["GET"], name="api_plugins"),
        Route("/api/instances", instances, methods=["GET"], name="api_instances"),
        Route("/api/events", events, methods=["GET"], name="api_events"),
        Route("/api/openapi.json", openapi, methods=["GET"], name="api_openapi"),
    ]
