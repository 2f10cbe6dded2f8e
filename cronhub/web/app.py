"""The Starlette app behind ``cronhub serve`` and ``hub.asgi()``.

:func:`create_app` assembles, in this order (the first route that matches wins):

1. ``/healthz`` and ``/metrics``;
2. ``/login``, ``/logout`` (:mod:`cronhub.web.auth`);
3. the JSON API under ``/api`` (:mod:`cronhub.web.api`), with ``/api/events`` (SSE), and
   runtime schedules (:mod:`cronhub.web.schedules_api`);
4. the dashboard's pages, ``cronhub.web.dashboard.routes(hub)``;
5. the routes plugins return from ``cronhub_web_routes(hub)``. A plugin route on a path of the
   HTTP API contract (``/api/...``, ``/healthz``, ``/metrics``) is an error naming the plugin.

Shared objects, for the dashboard and for plugins' routes (``request.app.state``):

- ``app.state.hub``: the :class:`~cronhub.hub.Hub`;
- ``app.state.engine``: the :class:`~cronhub.engine.Engine` this process runs, or ``None``
  for a web-only app (``scheduler=False``, ``cronhub serve --no-scheduler``). A new engine
  replaces it if the app is started again after a stop;
- ``app.state.events``: the :class:`~cronhub.web.events.EventBus` (``publish(kind, data)``,
  ``subscribe(last_id)``);
- ``app.state.runtime``: the :class:`~cronhub.web.runtime.WebRuntime`, which performs actions
  (``run_now``, ``set_paused``, ``cancel``), computes stats and caches job objects (``.jobs``).

Per request: ``request.state.csrf_token`` is the value a form's ``csrf_token`` field must carry,
and ``request.state.auth`` says how the request authenticated (``"bearer"``, ``"cookie"`` or
``None``).

The app's own lifespan starts the scheduler (``serve`` and any ASGI server that runs
lifespans). Mounted in another application (``app.mount("/cronhub", hub.asgi())``), whose
server does not run a mounted app's lifespan, pass ``hub.lifespan`` to that application.
"""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import AsyncIterator, Collection
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Host, Mount, Route

from cronhub.errors import StorageError, UsageError
from cronhub.web import api, dashboard, schedules_api
from cronhub.web.auth import Guard, SecurityHeaders, app_path, login_routes
from cronhub.web.runtime import WebRuntime

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp

    from cronhub.hub import Hub

log = logging.getLogger("cronhub.web")

#: Paths of the HTTP API contract; plugin routes may not use them.
RESERVED = ("/api", "/healthz", "/metrics")


class CronhubApp(Starlette):
    """A Starlette app whose security headers wrap everything, error pages included."""

    def build_middleware_stack(self) -> ASGIApp:
        # Starlette puts its ServerErrorMiddleware outermost; wrapping the whole stack means
        # even a 500 carries the CSP and nosniff headers.
        return SecurityHeaders(super().build_middleware_stack())


def runtime_for(hub: Hub, *, scheduler: bool | None = None) -> WebRuntime:
    """The hub's :class:`WebRuntime`, made on first use (with a scheduler unless told not to).

    :raises UsageError: when an app of this hub was made with the other ``scheduler`` value.
    """
    runtime: WebRuntime | None = getattr(hub, "_web_runtime", None)
    if runtime is None:
        runtime = WebRuntime(hub, scheduler=True if scheduler is None else scheduler)
        hub._web_runtime = runtime
    elif scheduler is not None and runtime.scheduler != scheduler:
        raise UsageError(
            f"this hub's web app already runs {'with' if runtime.scheduler else 'without'} a "
            f"scheduler; hub.asgi(scheduler={scheduler}) cannot change that"
        )
    return runtime


def create_app(
    hub: Hub,
    *,
    scheduler: bool = True,
    token: str | None = None,
    allowed_hosts: Collection[str] | None = None,
    event_keepalive: float = 15.0,
) -> Starlette:
    """Build the web app of ``hub``: API, events, dashboard, health, metrics, plugin routes.

    :param scheduler: Run the scheduler in the app's lifespan (``False``: web-only).
    :param token: Require this bearer token (or the login cookie) on every route but
        ``/healthz``; ``None`` for no token.
    :param allowed_hosts: Answer only requests whose ``Host`` is one of these names
        (``cronhub serve`` passes the loopback names when it runs without a token).
    :param event_keepalive: Seconds between keep-alive comments on idle event streams.
    :raises UsageError: for an empty token, or a plugin route on a reserved path (naming the
        plugin).
    """
    if token is not None and not token.strip():
        raise UsageError("the token must not be empty or blank")
    runtime = runtime_for(hub, scheduler=scheduler)
    runtime.events.keepalive = event_keepalive

    async def healthz(request: Request) -> Response:
        healthy, body = await runtime.health()
        return JSONResponse(
            body, status_code=200 if healthy else 503, headers={"Cache-Control": "no-store"}
        )

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(runtime.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/metrics", metrics, methods=["GET"], name="metrics"),
        *login_routes(token),
        # Before the job routes: /api/jobs/{name}/schedules is not a job named ".../schedules".
        *schedules_api.routes(),
        *api.routes(),
        *dashboard.routes(hub),
        *plugin_routes(hub),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = CronhubApp(
        routes=routes,
        middleware=[Middleware(Guard, token=token, allowed_hosts=allowed_hosts)],
        exception_handlers={
            HTTPException: _http_error,  # type: ignore[dict-item]
            StorageError: _storage_error,  # type: ignore[dict-item]
        },
        lifespan=lifespan,
    )
    runtime.attach(app)
    return app


# -- plugin routes ------------------------------------------------------------------------------


def plugin_routes(hub: Hub) -> list[BaseRoute]:
    """The routes of every ``cronhub_web_routes`` implementation, checked against the contract.

    :raises UsageError: naming the plugin, for something that is not a route or a route on a
        path of the HTTP API contract.
    """
    pm = hub.plugin_manager
    found: list[BaseRoute] = []
    for plugin_name, result in pm.call_collector("cronhub_web_routes", hub=hub):
        who = pm.describe_plugin(plugin_name)
        try:
            returned = list(result)
        except TypeError:
            raise UsageError(
                f"{who}: cronhub_web_routes returned {type(result).__name__}, not a list of routes"
            ) from None
        for route in returned:
            if not isinstance(route, BaseRoute):
                raise UsageError(
                    f"{who}: cronhub_web_routes returned {route!r}, not a Starlette route"
                )
            for path in _paths(route):
                if _reserved(path):
                    raise UsageError(
                        f"{who}: its cronhub_web_routes route {path!r} collides with cronhub's "
                        "HTTP API (/api/..., /healthz, /metrics are reserved)"
                    )
            found.append(route)
    return found


def _paths(route: BaseRoute, prefix: str = "") -> list[str]:
    if isinstance(route, Mount):
        inner = route.routes if route.routes else []
        paths = [prefix + route.path]
        for child in inner:
            paths += _paths(child, prefix + route.path)
        return paths
    if isinstance(route, Host):
        return [p for child in route.routes for p in _paths(child, prefix)]
    path = getattr(route, "path", None)
    return [prefix + path] if isinstance(path, str) else []


def _reserved(path: str) -> bool:
    path = path.rstrip("/") or "/"
    return any(path == r or path.startswith(r + "/") for r in RESERVED)


# -- errors -------------------------------------------------------------------------------------


def _wants_html(request: Request) -> bool:
    path = app_path(request.scope)
    api_path = path.startswith("/api/") or path in ("/api", "/metrics", "/healthz")
    return not api_path and "text/html" in request.headers.get("accept", "")


def _error(request: Request, status: int, error: str, detail: Any, headers: Any = None) -> Response:
    if _wants_html(request):
        page = (
            "<!doctype html><html lang=en><meta charset=utf-8>"
            f"<title>{status} {html.escape(error)}</title>"
            f"<h1>{status} {html.escape(error)}</h1><p>{html.escape(str(detail))}</p></html>"
        )
        return HTMLResponse(page, status_code=status, headers=headers)
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    path = app_path(request.scope)
    if exc.status_code == 404:
        detail: Any = f"no route {request.method} {path}"
        error = "not found"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} {path}: allowed methods are {allowed or 'none'}"
        error = "method not allowed"
    else:
        error, detail = exc.detail, None
    return _error(request, exc.status_code, str(error), detail, exc.headers)


async def _storage_error(request: Request, exc: StorageError) -> Response:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return _error(request, 503, "storage unavailable", str(exc))
