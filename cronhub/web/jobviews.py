"""Job objects of ``GET /api/jobs``, cached so that listing 10,000 jobs stays cheap.

Building a job object costs a storage read (its state and last run) and a next-fire-time
computation; serialising 10,000 of them costs more than the response is worth. So each job's
object is kept with its JSON, split around the ``next_run`` value, and is rebuilt only when:

- an event touches the job (a run of it started or finished, it was paused or resumed): the
  app calls :meth:`JobViews.invalidate`, and a request re-reads the states of such jobs, at
  most once every ``settle`` seconds (a busy scheduler finishes runs all the time: this
  bounds the rebuilds of the list, and of its gzip form, to one a second);
- its ``next_run`` passes: only that value is recomputed, from a memo shared by all the jobs
  of one schedule (``*/5 * * * *`` is computed once for every job that uses it);
- every ``max_age`` seconds the states of all jobs are re-read in the background, so changes
  made by other processes (``cronhub pause`` in a shell, a worker on the same SQLite file)
  appear within that time; jobs whose state did not change keep their JSON. The interval
  stretches to ten times the duration of the last re-read (10,000 jobs on a large SQLite
  history take about a second), so the refresh never costs more than a tenth of the time.

The whole response is kept too, until any job changes, and so is its gzip form (compressed
in a worker thread once per change, shared by every client that accepts gzip): 10,000 job
objects are about 7 MB of JSON and 0.2 to 0.5 MB gzipped. ``GET /api/jobs/{name}`` does not
use this cache: it always reads the job's current state.
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from cronhub.hub import job_to_dict

if TYPE_CHECKING:
    from cronhub.hub import Hub
    from cronhub.jobs import Job
    from cronhub.runs import JobState

log = logging.getLogger("cronhub.web")

# Stands for the next_run value while a job's JSON is split around it.
_SENTINEL = f"cronhub-next-run-{uuid.uuid4().hex}"
_SENTINEL_JSON = json.dumps(_SENTINEL)


class NextRuns:
    """Next fire times memoised by schedule: jobs that share a schedule share the answer.

    ``next_run(t)`` is the first slot after ``t``, so an answer ``slot`` computed at ``t0``
    holds for every ``t`` in ``[t0, slot)``.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[Any, ...], tuple[datetime, datetime | None]] = {}

    def __call__(self, job: Job, now: datetime) -> datetime | None:
        """The first slot of ``job`` after ``now``."""
        key = (job.kind, repr(job.schedule.expression()), str(job.tz), job.start, job.end)
        hit = self._memo.get(key)
        if hit is not None and hit[0] <= now and (hit[1] is None or now < hit[1]):
            return hit[1]
        slot = job.next_run(now)
        if len(self._memo) > 100_000:
            self._memo.clear()
        self._memo[key] = (now, slot)
        return slot


@dataclass(slots=True)
class _View:
    job: Job
    state: JobState | None
    obj: dict[str, Any]
    #: The job's JSON before and after the next_run value.
    head: bytes
    tail: bytes
    next_run: datetime | None
    next_json: bytes


class JobViews:
    """The cache of job objects; see the module docstring.

    :param hub: The hub whose jobs are shown.
    :param max_age: Seconds after which every job's state is re-read (in the background).
    :param settle: Seconds between two re-reads of the jobs that events touched.
    """

    def __init__(self, hub: Hub, *, max_age: float = 5.0, settle: float = 1.0) -> None:
        self.hub = hub
        self.max_age = max_age
        self.settle = settle
        self.next_runs = NextRuns()
        self._views: dict[str, _View] = {}
        self._jobs: dict[str, Job] | None = None
        self._expiry: list[tuple[datetime, str]] = []
        self._dirty: set[str] = set()
        self._all_dirty = True
        self._loaded_at = 0.0
        self._refresh_cost = 0.0
        self._settled_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._response: bytes | None = None
        # The gzip form of a response, and the response it was made from.
        self._gzipped: tuple[bytes, bytes] | None = None
        self._gzipping: tuple[bytes, asyncio.Future[bytes]] | None = None

    # -- invalidation --------------------------------------------------------------------
    def invalidate(self, name: str | None = None) -> None:
        """Re-read ``name``'s state (every job's with ``None``) at the next request."""
        if name is None:
            self._all_dirty = True
        elif name in self._views:
            self._dirty.add(name)

    # -- reading -------------------------------------------------------------------------
    async def json(self, tag: str | None = None) -> bytes:
        """``{"jobs": [job objects]}`` as JSON bytes, jobs sorted by name."""
        await self._update()
        if tag is None:
            if self._response is None:
                self._response = self._join(self._views.values())
            return self._response
        return self._join(v for v in self._views.values() if tag in v.job.tags)

    async def gzipped(self) -> bytes:
        """:meth:`json` of every job, gzipped (compressed once per change of the list)."""
        body = await self.json()
        if self._gzipped is not None and self._gzipped[0] is body:
            return self._gzipped[1]
        if self._gzipping is not None and self._gzipping[0] is body:
            return await asyncio.shield(self._gzipping[1])
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._gzipping = (body, future)
        try:
            # Level 1: a fifth of the time of level 6 for a few percent more bytes; zlib
            # releases the GIL, so requests go on being served meanwhile.
            packed = await run_in_threadpool(gzip.compress, body, 1, mtime=0)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters, if any, get it too
            raise
        finally:
            if self._gzipping is not None and self._gzipping[1] is future:
                self._gzipping = None
        future.set_result(packed)
        self._gzipped = (body, packed)
        return packed

    async def objects(self, tag: str | None = None) -> list[dict[str, Any]]:
        """The job objects as dicts (copies), sorted by name."""
        await self._update()
        return [dict(v.obj) for v in self._views.values() if tag is None or tag in v.job.tags]

    def paused(self) -> int:
        """How many jobs the cache last saw paused."""
        return sum(1 for v in self._views.values() if v.state is not None and v.state.paused)

    @staticmethod
    def _join(views: Any) -> bytes:
        parts = [b'{"jobs":[']
        first = True
        for view in views:
            if not first:
                parts.append(b",")
            first = False
            parts += (view.head, view.next_json, view.tail)
        parts.append(b"]}")
        return b"".join(parts)

    # -- updating ------------------------------------------------------------------------
    async def _update(self) -> None:
        async with self._lock:
            jobs = self.hub.jobs
            if jobs is not self._jobs:
                self._jobs = jobs
                self._views = {}
                self._all_dirty = True
            if self._all_dirty:
                self._all_dirty = False
                self._dirty.clear()
                self._loaded_at = time.monotonic()
                states = await run_in_threadpool(self.hub.job_states, list(jobs))
                self._refresh_cost = time.monotonic() - self._loaded_at
                self._apply(states, rebuild=True)
            elif self._dirty and time.monotonic() - self._settled_at >= self.settle:
                self._settled_at = time.monotonic()
                names = [n for n in self._dirty if n in jobs]
                self._dirty.clear()
                states = await run_in_threadpool(self.hub.job_states, names)
                self._apply(states, rebuild=True)
            self._expire()
            interval = max(self.max_age, 10 * self._refresh_cost)
            if time.monotonic() - self._loaded_at > interval and self._refreshing is None:
                # Serve what is cached now; re-read every state in the background.
                self._loaded_at = time.monotonic()
                self._refreshing = asyncio.create_task(self._refresh(), name="cronhub-jobviews")

    async def _refresh(self) -> None:
        try:
            jobs = self._jobs or {}
            known = {name: view.state for name, view in self._views.items()}

            def changed_states() -> dict[str, JobState]:
                # Read and compare in the worker thread: only the changes reach the loop.
                states = self.hub.job_states(list(jobs))
                return {n: s for n, s in states.items() if n not in known or known[n] != s}

            begin = time.monotonic()
            changed = await run_in_threadpool(changed_states)
            self._refresh_cost = time.monotonic() - begin
            async with self._lock:
                if jobs is self._jobs and changed:
                    self._apply(changed, rebuild=True)
        except Exception as exc:  # the next request tries again; the cache stays as it was
            log.warning("cannot refresh job states: %s", exc)
        finally:
            self._refreshing = None

    def _apply(self, states: dict[str, JobState], *, rebuild: bool) -> None:
        """Rebuild the views of jobs whose state changed (all given ones with ``rebuild``)."""
        assert self._jobs is not None
        now = self.hub.clock.now()
        changed = added = False
        for name, state in states.items():
            job = self._jobs.get(name)
            if job is None:
                continue
            view = self._views.get(name)
            if view is not None and not rebuild and view.state == state:
                continue
            # Replacing a key keeps its place in the dict (and so in the response).
            added = added or view is None
            self._views[name] = self._build(job, state, now)
            changed = True
        if added or self._views.keys() != self._jobs.keys():
            for name in self._jobs:
                if name not in self._views:
                    self._views[name] = self._build(self._jobs[name], None, now)
            self._views = {n: self._views[n] for n in sorted(self._views) if n in self._jobs}
            # Rebuilt from scratch, which also drops the entries of replaced views.
            self._expiry = [(v.next_run, n) for n, v in self._views.items() if v.next_run]
            heapq.heapify(self._expiry)
            changed = True
        if changed:
            self._response = None

    def _build(self, job: Job, state: JobState | None, now: datetime) -> _View:
        obj = job_to_dict(job, state, now, next_run=self.next_runs)
        text = json.dumps({**obj, "next_run": _SENTINEL}, ensure_ascii=False)
        head, tail = text.split(_SENTINEL_JSON, 1)
        next_run = _parse(obj["next_run"])
        if next_run is not None:
            heapq.heappush(self._expiry, (next_run, job.name))
        return _View(
            job=job,
            state=state,
            obj=obj,
            head=head.encode(),
            tail=tail.encode(),
            next_run=next_run,
            next_json=json.dumps(obj["next_run"]).encode(),
        )

    def _expire(self) -> None:
        """Recompute ``next_run`` of the jobs whose next run time has come."""
        now = self.hub.clock.now()
        while self._expiry and self._expiry[0][0] <= now:
            slot, name = heapq.heappop(self._expiry)
            view = self._views.get(name)
            if view is None or view.next_run != slot:
                continue  # a stale entry: the view was rebuilt since
            # Only next_run moves: the rest of the object and its JSON stay as they are.
            next_run = self.next_runs(view.job, now)
            zone = view.job.tz if view.job.kind == "cron" else UTC
            text = next_run.astimezone(zone).isoformat() if next_run is not None else None
            view.obj = {**view.obj, "next_run": text}
            view.next_run = next_run
            view.next_json = json.dumps(text).encode()
            if view.next_run is not None:
                heapq.heappush(self._expiry, (view.next_run, name))
            self._response = None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value else None
