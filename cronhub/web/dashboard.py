"""The dashboard: server-rendered pages (Jinja2) and their static files.

Every page is rendered from the hub on the server, so it shows its data on first paint and
works without JavaScript; ``static/cronhub.js`` then keeps it live from the Server-Sent Events
of ``/api/events`` and performs the actions through the JSON API. The pages never inline a
script or a style (the app sends ``Content-Security-Policy: script-src 'self'; style-src
'self'``), and every string from a user or a job is escaped by Jinja2's autoescape.

URLs are built from the request's ``root_path``, so the dashboard works when ``hub.asgi()`` is
mounted under a prefix (``app.mount("/cronhub", hub.asgi())``).

Pages:

- ``/``: overall stats and the jobs table (search ``q``, ``tag``, ``page``; 100 jobs a page);
- ``/jobs/{name}``: one job, its options, its history (``status``, ``before`` cursor) and its
  runtime schedules with a form to add one (``static/schedules.js``);
- ``/runs/{id}``: one run with its error, traceback and log;
- ``/dead-letters``: runs that failed their last attempt;
- ``/plugins``: loaded plugins and the hooks each implements.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cronhub.errors import UnknownJobError
from cronhub.runs import RunStatus
from cronhub.storage import RunFilter
from cronhub.web import formatting
from cronhub.web.schedule_views import job_schedules

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.routing import BaseRoute

    from cronhub.hub import Hub
    from cronhub.jobs import Job
    from cronhub.runs import Run
    from cronhub.storage import Storage

log = logging.getLogger("cronhub.web")

#: Jobs per page of the jobs table (``?per_page=`` may ask for 10 to 500).
PER_PAGE = 100
MAX_PER_PAGE = 500
#: Coloured marks per job in the jobs table.
MARKS = 10
#: Runs per page of a job's history and of the dead letters.
HISTORY_PAGE = 50


class BadParameter(ValueError):
    """A query parameter that cannot be used; answered with a 400 page naming it."""

    def __init__(self, name: str, value: str, expected: str) -> None:
        super().__init__(f"query parameter {name!r}: {expected}, got {value!r}")


class NotFound(LookupError):
    """A job or run that does not exist; answered with a 404 page."""


@dataclass(frozen=True)
class Catalog:
    """The jobs table's view of a hub's jobs: sorted, with the text the search box looks in."""

    #: The ``hub.jobs`` mapping this was made from (a new mapping means the jobs changed).
    source: dict[str, Job]
    jobs: list[Job]
    tags: list[str]
    #: Per job, in order: name, description and tags, case-folded.
    haystacks: list[str]

    @classmethod
    def of(cls, source: dict[str, Job]) -> Catalog:
        """The catalog of ``source``."""
        ordered = [job for _, job in sorted(source.items())]
        return cls(
            source=source,
            jobs=ordered,
            tags=sorted({tag for job in ordered for tag in job.tags}),
            haystacks=[
                "\n".join((job.name, job.description, *job.tags)).casefold() for job in ordered
            ],
        )

    def search(self, text: str, tag: str) -> list[Job]:
        """Jobs whose name, description or tags contain ``text``, with ``tag`` if given."""
        needle = text.casefold()
        return [
            job
            for job, haystack in zip(self.jobs, self.haystacks, strict=True)
            if (not tag or tag in job.tags) and needle in haystack
        ]


@dataclass
class Dashboard:
    """The templates, static-file versions and page builders of one hub's dashboard."""

    hub: Hub
    env: jinja2.Environment = field(init=False)
    versions: dict[str, str] = field(init=False)
    _catalog: Catalog | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("cronhub.web", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(
            reltime=formatting.reltime,
            abstime=formatting.abstime,
            duration=formatting.duration,
            number=formatting.number,
            percent=formatting.percent,
        )
        self.env.globals.update(
            status_class=formatting.status_class,
            written=formatting.written,
            run_statuses=[s.value for s in RunStatus],
            marks_total=MARKS,
        )
        self.versions = _static_versions()

    # -- rendering -------------------------------------------------------------------------
    def render(self, request: Request, template: str, **context: Any) -> str:
        """Render ``template`` with the helpers every page uses."""
        base = request.scope.get("root_path", "").rstrip("/")

        def url(path: str, **params: Any) -> str:
            query = {k: v for k, v in params.items() if v not in (None, "")}
            return base + path + ("?" + urlencode(query) if query else "")

        def static(name: str) -> str:
            return f"{base}/static/{name}?v={self.versions.get(name, '0')}"

        return self.env.get_template(template).render(
            base=base,
            url=url,
            static=static,
            job_url=lambda name: f"{base}/jobs/{quote(name, safe='')}",
            run_url=lambda run_id: f"{base}/runs/{run_id}",
            now=self.hub.clock.now(),
            path=request.url.path,
            **context,
        )

    def page(self, template: str, build: Any, *, stats: bool = False) -> Any:
        """A Starlette endpoint that builds the context in a thread and renders ``template``.

        With ``stats``, the overall stats are rendered too (from the app's runtime, which
        caches them for a moment, so that reloads and many tabs do not each count runs).
        """

        async def endpoint(request: Request) -> HTMLResponse:
            # The stats are counted while the page's own data is read (both wait on storage).
            counting = asyncio.ensure_future(self.stats(request)) if stats else None
            try:
                context = await run_in_threadpool(build, request)
            except (BadParameter, NotFound) as exc:
                if counting is not None:
                    counting.cancel()
                if isinstance(exc, BadParameter):
                    return self.error_page(request, 400, "Bad request", str(exc))
                return self.error_page(request, 404, "Not found", str(exc))
            except BaseException:
                if counting is not None:
                    counting.cancel()
                raise
            if counting is not None:
                context["stats"] = await counting
            html = await run_in_threadpool(lambda: self.render(request, template, **context))
            return HTMLResponse(html)

        endpoint.__name__ = template.removesuffix(".html").replace("-", "_")
        return endpoint

    async def stats(self, request: Request) -> dict[str, Any] | None:
        """The overall stats of ``GET /api/stats``; ``None`` if they cannot be read now.

        The page then shows dashes and the script fetches them; a slow count must not
        keep the jobs table from showing.
        """
        runtime = getattr(request.app.state, "runtime", None)
        try:
            if runtime is not None:
                return await runtime.stats()  # type: ignore[no-any-return]
            from cronhub.web.runtime import compute_stats

            return await run_in_threadpool(compute_stats, self.hub)
        except Exception as exc:
            log.warning("dashboard: overall stats unavailable: %s", exc)
            return None

    def error_page(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        """A page that says what was wrong with the request."""
        html = self.render(request, "error.html", title=title, message=message, status=status)
        return HTMLResponse(html, status_code=status)

    def catalog(self) -> Catalog:
        """Every job sorted by name, with its tags: kept until the hub's jobs change."""
        jobs = self.hub.jobs
        if self._catalog is None or self._catalog.source is not jobs:
            self._catalog = Catalog.of(jobs)
        return self._catalog

    # -- page contexts (run in a worker thread: storage calls block) -----------------------
    def jobs_context(self, request: Request) -> dict[str, Any]:
        """The jobs table: filtered, paginated, with each job's newest runs."""
        params = request.query_params
        search = params.get("q", "").strip()
        tag = params.get("tag", "").strip()
        page = _positive_int(params, "page", 1)
        per_page = _positive_int(params, "per_page", PER_PAGE)
        if per_page < 10 or per_page > MAX_PER_PAGE:
            raise BadParameter("per_page", str(per_page), f"a number from 10 to {MAX_PER_PAGE}")
        catalog = self.catalog()
        every, tags = catalog.jobs, catalog.tags
        chosen = catalog.search(search, tag)
        pages = max(1, -(-len(chosen) // per_page))
        page = min(page, pages)
        shown = chosen[(page - 1) * per_page : page * per_page]
        jobs = self.hub.describe_jobs(shown)
        recent = recent_runs(self.hub.storage, [job["name"] for job in jobs], MARKS)
        for job in jobs:
            runs = recent.get(job["name"], [])
            job["marks"] = [formatting.mark(run) for run in reversed(runs)]
            job["state"] = formatting.job_state(job, runs)
        return {
            "page_name": "jobs",
            "jobs": jobs,
            "total": len(every),
            "matching": len(chosen),
            "first": (page - 1) * per_page + 1 if shown else 0,
            "last": (page - 1) * per_page + len(shown),
            "page": page,
            "pages": pages,
            "per_page": per_page if per_page != PER_PAGE else None,
            "search": search,
            "tag": tag,
            "tags": tags,
        }

    def job_context(self, request: Request) -> dict[str, Any]:
        """One job: its options, state and a page of its history."""
        name = request.path_params["name"]
        try:
            job = self.hub.get_job(name)
        except UnknownJobError:
            raise NotFound(f"no job named {name!r}") from None
        params = request.query_params
        status = params.get("status", "").strip()
        if status and status not in {s.value for s in RunStatus}:
            raise BadParameter("status", status, "one of " + ", ".join(s.value for s in RunStatus))
        before = _positive_int(params, "before", None)
        (described,) = self.hub.describe_jobs([job])
        runs = self.hub.storage.list_runs(
            RunFilter(
                job=job.name,
                status=RunStatus(status) if status else None,
                before=before,
                limit=HISTORY_PAGE + 1,
            )
        )
        newest = recent_runs(self.hub.storage, [job.name], MARKS)[job.name]
        described["state"] = formatting.job_state(described, newest)
        more = len(runs) > HISTORY_PAGE
        runs = runs[:HISTORY_PAGE]
        return {
            "page_name": "job",
            "job": described,
            **job_schedules(self.hub, job),
            "options": formatting.job_options(described),
            "runs": [run.to_dict() for run in runs],
            "status": status,
            "before": before,
            "older": runs[-1].id if more and runs else None,
        }

    def run_context(self, request: Request) -> dict[str, Any]:
        """One run in full: error, traceback, log."""
        run_id = request.path_params["run_id"]
        run = self.hub.storage.get_run(run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id}")
        return {
            "page_name": "run",
            "run": run.to_dict(detail=True),
            "job_known": run.job in self.hub.jobs,
        }

    def dead_letters_context(self, request: Request) -> dict[str, Any]:
        """Runs that failed their last attempt and were not cleared."""
        runs = self.hub.storage.dead_letters(limit=HISTORY_PAGE * 4)
        return {"page_name": "dead-letters", "runs": [run.to_dict() for run in runs]}

    def plugins_context(self, request: Request) -> dict[str, Any]:
        """Plugins, their distributions and hooks; each hook with its implementations."""
        pm = self.hub.plugin_manager
        plugins = sorted(pm.list_plugins(), key=lambda info: (info.builtin, info.name))
        hooks = []
        for name in sorted(n for n in dir(pm.hook) if n.startswith("cronhub_")):
            caller = getattr(pm.hook, name)
            spec = getattr(caller, "spec", None)
            doc = (spec.function.__doc__ or "") if spec is not None else ""
            impls = [impl.plugin_name for impl in reversed(caller.get_hookimpls())]
            hooks.append({"name": name, "doc": formatting.summary(doc), "plugins": impls})
        return {"page_name": "plugins", "plugins": plugins, "hooks": hooks}


def routes(hub: Hub) -> list[BaseRoute]:
    """The dashboard's routes (pages under ``/``, static files under ``/static``)."""
    board = Dashboard(hub)
    return [
        Route("/", board.page("jobs.html", board.jobs_context, stats=True), name="dashboard"),
        Route("/jobs/{name:path}", board.page("job.html", board.job_context), name="job_page"),
        Route("/runs/{run_id:int}", board.page("run.html", board.run_context), name="run_page"),
        Route(
            "/dead-letters",
            board.page("dead_letters.html", board.dead_letters_context),
            name="dead_letters_page",
        ),
        Route("/plugins", board.page("plugins.html", board.plugins_context), name="plugins_page"),
        Mount("/static", StaticFiles(packages=[("cronhub.web", "static")]), name="static"),
    ]


def recent_runs(storage: Storage, names: list[str], per_job: int) -> dict[str, list[Run]]:
    """The newest runs of each job: ``Storage.recent_runs``, or one query per job.

    A storage plugin written before ``recent_runs`` joined the protocol still works; it is
    only slower with many jobs on a page.
    """
    method = getattr(storage, "recent_runs", None)
    if callable(method):
        return method(names, per_job=per_job)  # type: ignore[no-any-return]
    return {name: storage.list_runs(RunFilter(job=name, limit=per_job)) for name in names}


def _positive_int(params: Any, name: str, default: int | None) -> Any:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(name, raw, "a positive whole number") from None
    if value < 1:
        raise BadParameter(name, raw, "a positive whole number")
    return value


def _static_versions() -> dict[str, str]:
    """A short content hash per static file, appended to its URL to bust caches."""
    versions = {}
    for item in resources.files("cronhub.web").joinpath("static").iterdir():
        if item.is_file():
            versions[item.name] = hashlib.sha256(item.read_bytes()).hexdigest()[:10]
    return versions
