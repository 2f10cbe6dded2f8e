"""The web backend over the ASGI transport: JSON API, errors, actions, security, health, metrics.

Event streams need a real server (httpx's ASGI transport waits for a response to end), so the
SSE tests run the app under uvicorn on a loopback port in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import textwrap
import threading
import time
import uuid

import httpx
import pytest
import uvicorn
from cronhub_storage_postgres import plugin as postgres_plugin
from cronhub_storage_postgres.testing import postgres_database, postgres_server  # noqa: F401
from cronhub_storage_sqlite import plugin as sqlite_plugin
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import cronhub
from cronhub.config import load_settings
from cronhub.errors import UsageError
from cronhub.hub import Hub
from cronhub.plugins import get_plugin_manager
from cronhub.runs import RunStatus
from cronhub.storage import RunFilter
from cronhub.web.auth import CSP, cookie_value, safe_next
from cronhub.web.events import EventBus, parse_last_event_id

BASE = "http://127.0.0.1"
TIMEOUT = 30.0

# -- jobs and fixtures -------------------------------------------------------------------------

# Signals between the test and its jobs (set from job threads, read by the test).
STARTED: dict[str, threading.Event] = {}
CANCELLED: dict[str, threading.Event] = {}


def signal(name: str) -> tuple[threading.Event, threading.Event]:
    STARTED[name], CANCELLED[name] = threading.Event(), threading.Event()
    return STARTED[name], CANCELLED[name]


def make_hub(plugin_manager, tmp_path, storage: str = "memory://", **settings) -> Hub:
    values = {"storage": storage, "instance_id": "web-a", "shutdown_grace": 5.0, **settings}
    return Hub(
        storage=storage,
        plugin_manager=plugin_manager,
        settings=load_settings(values, cwd=tmp_path),
    )


def add_jobs(hub: Hub, tmp_path, monkeypatch) -> None:
    """A few jobs of every kind; the process job lives in a module a spawned child can import."""
    module = f"webjobs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            import os, time

            def sleeper(ctx):
                with open(ctx.params["pid_file"], "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(120)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sleeper = __import__(module).sleeper

    @hub.job(every="1h", name="hello", tags=["greeting"], description="Says <hello>")
    def hello(ctx):
        ctx.log.info("hello from %s", ctx.params.get("who", "nobody"))

    @hub.job(every="1h", name="billing/nightly", tags=["billing"])
    def nightly():
        return None

    @hub.job(every="1h", name="broken")
    def broken():
        raise ValueError("no <script>alert(1)</script> here")

    @hub.job(every="1h", name="async-wait")
    async def async_wait(ctx):
        STARTED["async"].set()
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            CANCELLED["async"].set()
            raise

    @hub.job(every="1h", name="thread-wait", executor="thread")
    def thread_wait(ctx):
        STARTED["thread"].set()
        deadline = time.monotonic() + 120
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if ctx.cancelled:
            CANCELLED["thread"].set()

    hub.add_job(cronhub.job(sleeper, every="1h", name="process-wait", executor="process"))


@pytest.fixture
def web_hub(plugin_manager, tmp_path, monkeypatch):
    hub = make_hub(plugin_manager, tmp_path)
    add_jobs(hub, tmp_path, monkeypatch)
    yield hub
    hub.close()


@contextlib.asynccontextmanager
async def serving(app, *, lifespan: bool = True, **client_options):
    """The app with its lifespan running, and an httpx client over the ASGI transport."""
    async with contextlib.AsyncExitStack() as stack:
        if lifespan:
            await stack.enter_async_context(app.router.lifespan_context(app))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=TIMEOUT, **client_options
        )
        yield await stack.enter_async_context(client)


async def eventually(check, timeout: float = TIMEOUT, interval: float = 0.05):
    """Await ``check()`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s (last value: {value!r})")
        await asyncio.sleep(interval)


async def run_until_done(client, job: str, **body) -> dict:
    response = await client.post(f"/api/jobs/{job}/run", json=body or None)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]

    async def finished():
        run = (await client.get(f"/api/runs/{run_id}")).json()
        return run if run["status"] not in ("queued", "running") else None

    return await eventually(finished)


def assert_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    text = json.dumps(body)
    for word in words:
        assert word in text, (word, body)
    return body


# -- jobs -----------------------------------------------------------------------------------------


async def test_jobs_are_the_cli_job_objects(web_hub):
    app = web_hub.asgi()
    async with serving(app) as client:
        response = await client.get("/api/jobs")
        assert response.status_code == 200
        listed = response.json()["jobs"]
        expected = web_hub.describe_jobs(web_hub.select_jobs())
        assert [j["name"] for j in listed] == sorted(j["name"] for j in expected)
        assert listed == expected
        tagged = (await client.get("/api/jobs", params={"tag": "billing"})).json()["jobs"]
        assert [j["name"] for j in tagged] == ["billing/nightly"]
        assert (await client.get("/api/jobs", params={"tag": "nope"})).json() == {"jobs": []}


async def test_the_jobs_list_follows_runs_pauses_and_changes_from_other_processes(web_hub):
    app = web_hub.asgi()
    async with serving(app) as client:

        async def listed():
            return {j["name"]: j for j in (await client.get("/api/jobs")).json()["jobs"]}

        assert (await listed())["hello"]["last_status"] is None
        await run_until_done(client, "hello")
        # Events mark the job stale; its state is re-read within `settle` (1 s).
        await eventually(lambda: _has(listed, "hello", last_status="succeeded"))
        await client.post("/api/jobs/hello/pause")
        await eventually(lambda: _has(listed, "hello", paused=True, next_run=None))
        # A change the app hears nothing of (another process, the CLI) shows within max_age.
        app.state.runtime.jobs.max_age = 0.2
        web_hub.storage.set_paused("billing/nightly", True, now=web_hub.clock.now())
        await eventually(lambda: _has(listed, "billing/nightly", paused=True))


async def _has(listed, name: str, **fields) -> bool:
    job = (await listed())[name]
    return all(job[key] == value for key, value in fields.items())


async def test_cached_job_objects_move_next_run_when_it_passes(plugin_manager, clock):
    hub = Hub(
        storage="memory://",
        clock=clock,
        plugin_manager=plugin_manager,
        settings=load_settings({"storage": "memory://", "instance_id": "t"}, cwd="/"),
    )
    for n, options in enumerate(
        [{"every": "1m"}, {"every": "90s"}, {"cron": "*/5 * * * *", "tz": "Europe/Berlin"},
         {"cron": "*/5 * * * *"}, {"cron": "0 3 * * *", "tz": "America/New_York"}]
    ):  # fmt: skip
        hub.add_job(cronhub.job(lambda: None, name=f"j{n}", **options))
    async with serving(hub.asgi(), lifespan=False) as client:
        for _ in range(4):
            listed = (await client.get("/api/jobs")).json()["jobs"]
            assert listed == hub.describe_jobs(hub.select_jobs())
            clock.advance(97)


async def test_the_jobs_list_is_gzipped_once_per_change(web_hub):
    app = web_hub.asgi()
    async with serving(app, lifespan=False) as client:
        plain = await client.get("/api/jobs", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.headers["vary"] == "Accept-Encoding"
        packed = await client.get("/api/jobs", headers={"accept-encoding": "gzip, br"})
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.json() == plain.json()
        assert int(packed.headers["content-length"]) < len(plain.content)
        views = app.state.runtime.jobs
        cached = views._gzipped
        await client.get("/api/jobs", headers={"accept-encoding": "gzip"})
        assert views._gzipped is cached  # not compressed again
        refused = await client.get("/api/jobs", headers={"accept-encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("GZIP;Q=0.0", False),
        ("identity", False),
        ("", False),
        ("gzip;q=abc", False),
    ],
)
def test_accept_encoding(header, expected):
    from cronhub.web.api import accepts_gzip

    assert accepts_gzip(header) is expected


async def test_one_job_with_its_runs_and_names_with_slashes(web_hub):
    async with serving(web_hub.asgi()) as client:
        run = await run_until_done(client, "billing/nightly")
        response = await client.get("/api/jobs/billing/nightly")
        assert response.status_code == 200
        job = response.json()
        assert job["name"] == "billing/nightly" and job["tags"] == ["billing"]
        assert [r["id"] for r in job["runs"]] == [run["id"]]
        assert job["last_status"] == "succeeded"
        encoded = await client.get("/api/jobs/billing%2Fnightly")
        assert encoded.json()["name"] == "billing/nightly"


async def test_unknown_jobs_and_wrong_methods_are_json_errors(web_hub):
    async with serving(web_hub.asgi()) as client:
        assert_error(await client.get("/api/jobs/nobody"), 404, "unknown job", "nobody")
        assert_error(await client.post("/api/jobs/nobody/run"), 404, "nobody")
        assert_error(await client.post("/api/jobs/nobody/pause"), 404, "nobody")
        wrong = await client.get("/api/jobs/hello/run")
        assert_error(wrong, 405, "POST")
        assert wrong.headers["allow"] == "POST"
        assert_error(await client.post("/api/jobs/hello"), 405)
        assert_error(await client.post("/api/jobs/hello/explode"), 405, "GET")
        assert_error(await client.delete("/api/jobs"), 405, "GET")
        assert_error(await client.put("/api/runs/1/cancel"), 405, "POST")
        assert_error(await client.get("/api/nothing-here"), 404, "/api/nothing-here")
        assert_error(await client.get("/api/jobs", params={"tags": "x"}), 400, "tags", "tag")


# -- run now and runs ---------------------------------------------------------------------------


async def test_run_now_queues_a_run_that_the_engine_runs(web_hub):
    async with serving(web_hub.asgi()) as client:
        response = await client.post("/api/jobs/hello/run", json={"params": {"who": "api"}})
        assert response.status_code == 202
        body = response.json()
        assert body["run_id"] == body["run"]["id"]
        assert body["run"]["status"] == "queued" and body["run"]["trigger"] == "manual"

        async def done():
            run = (await client.get(f"/api/runs/{body['run_id']}")).json()
            return run if run["status"] == "succeeded" else None

        run = await eventually(done)
        assert "hello from api" in run["log"]
        assert run["params"] == {"who": "api"}
        assert set(run) >= {"traceback", "log", "params", "error", "duration_ms"}


async def test_bad_run_bodies_are_rejected_before_anything_is_queued(web_hub):
    async with serving(web_hub.asgi()) as client:
        headers = {"content-type": "application/json"}
        post = client.post
        assert_error(await post("/api/jobs/hello/run", content=b"{", headers=headers), 400, "JSON")
        assert_error(
            await post("/api/jobs/hello/run", content=b"[1]", headers=headers), 400, "object"
        )
        assert_error(await post("/api/jobs/hello/run", json={"parms": {}}), 400, "parms")
        assert_error(await post("/api/jobs/hello/run", json={"params": [1]}), 400, "params")
        assert_error(
            await post(
                "/api/jobs/hello/run", content=b"who=me", headers={"content-type": "text/plain"}
            ),
            415,
        )
        assert_error(
            await post("/api/jobs/hello/run", content=b"\xff\xfe", headers=headers), 400, "JSON"
        )
        big = b'{"params": {"x": "' + b"a" * (1024 * 1024) + b'"}}'
        assert_error(await post("/api/jobs/hello/run", content=big, headers=headers), 413)
        assert web_hub.storage.list_runs(RunFilter(job="hello")) == []


async def test_runs_pages_follow_the_cursor_without_gaps_or_repeats(web_hub):
    async with serving(web_hub.asgi()) as client:
        ids = []
        for _ in range(7):
            ids.append((await client.post("/api/jobs/billing%2Fnightly/run")).json()["run_id"])
        await run_until_done(client, "broken")
        seen, cursor, pages = [], None, 0
        while True:
            params = {"job": "billing/nightly", "limit": 3}
            if cursor is not None:
                params["before"] = cursor
            page = (await client.get("/api/runs", params=params)).json()
            seen += [r["id"] for r in page["runs"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
        assert seen == sorted(ids, reverse=True) and pages == 3
        failed = (await client.get("/api/runs", params={"status": "failed"})).json()
        assert [r["job"] for r in failed["runs"]] == ["broken"] and failed["next"] is None
        dead = (await client.get("/api/runs", params={"dead_letter": "true"})).json()["runs"]
        assert [r["job"] for r in dead] == ["broken"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": "0"}, ["limit", "1 to 1000"]),
        ({"limit": "1001"}, ["limit"]),
        ({"limit": "ten"}, ["limit", "ten"]),
        ({"before": "-3"}, ["before"]),
        ({"before": "99999999999999999999999"}, ["before"]),
        ({"status": "exploded"}, ["status", "succeeded"]),
        ({"dead_letter": "maybe"}, ["dead_letter"]),
        ({"jobs": "hello"}, ["jobs"]),
        ([("limit", "1"), ("limit", "2")], ["limit", "2 times"]),
    ],
)
async def test_bad_run_filters_are_400_naming_the_parameter(web_hub, params, words):
    async with serving(web_hub.asgi(), lifespan=False) as client:
        assert_error(await client.get("/api/runs", params=params), 400, *words)


async def test_history_of_an_unknown_job_is_404_unless_it_has_runs(web_hub):
    async with serving(web_hub.asgi(), lifespan=False) as client:
        assert_error(await client.get("/api/runs", params={"job": "ghost"}), 404, "ghost")
        from cronhub.runs import ClaimRequest, Trigger

        web_hub.storage.claim(
            [ClaimRequest("retired", None, trigger=Trigger.MANUAL, status=RunStatus.QUEUED)],
            instance="x",
            now=web_hub.clock.now(),
            lease_ttl=30,
        )
        runs = (await client.get("/api/runs", params={"job": "retired"})).json()["runs"]
        assert [r["job"] for r in runs] == ["retired"]


async def test_one_run_and_bad_run_ids(web_hub):
    async with serving(web_hub.asgi()) as client:
        run = await run_until_done(client, "broken")
        assert run["status"] == "failed" and run["error"]["type"] == "ValueError"
        assert "Traceback" in run["traceback"]
        assert_error(await client.get("/api/runs/999999"), 404, "999999")
        assert_error(await client.get("/api/runs/abc"), 400, "abc")
        assert_error(await client.get("/api/runs/0"), 404)
        assert_error(await client.get(f"/api/runs/{2**70}"), 404)
        assert_error(await client.post("/api/runs/abc/cancel"), 400)
        assert_error(await client.post("/api/runs/424242/cancel"), 404, "424242")


# -- cancel, for each executor --------------------------------------------------------------------


async def _start_and_cancel(client, job: str, started, **body):
    response = await client.post(f"/api/jobs/{job}/run", json=body or None)
    run_id = response.json()["run_id"]
    await eventually(lambda: asyncio.to_thread(started))
    cancelled = await client.post(f"/api/runs/{run_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["run"]["status"] == "cancelled"
    run = (await client.get(f"/api/runs/{run_id}")).json()
    assert run["status"] == "cancelled"
    assert_error(await client.post(f"/api/runs/{run_id}/cancel"), 409, "cancelled")
    return run


async def test_cancel_an_async_run_cancels_its_task(web_hub, caplog):
    caplog.set_level("INFO", logger="cronhub.runs")
    started, cancelled = signal("async")
    async with serving(web_hub.asgi()) as client:
        run = await _start_and_cancel(client, "async-wait", started.is_set)
        assert await asyncio.to_thread(cancelled.wait, TIMEOUT)

        async def said_cancelled():
            return f"run {run['id']} of async-wait: cancelled" in caplog.text

        await eventually(said_cancelled)
    assert "outcome dropped" not in caplog.text  # a cancel is not a lost lease


async def test_cancel_a_thread_run_sets_ctx_cancelled(web_hub):
    started, cancelled = signal("thread")
    async with serving(web_hub.asgi()) as client:
        await _start_and_cancel(client, "thread-wait", started.is_set)
        assert await asyncio.to_thread(cancelled.wait, TIMEOUT)


async def test_cancel_a_process_run_kills_its_process(web_hub, tmp_path):
    pid_file = tmp_path / "pid"

    def started():
        return pid_file.exists() and pid_file.read_text().strip().isdigit()

    async with serving(web_hub.asgi()) as client:
        await _start_and_cancel(client, "process-wait", started, params={"pid_file": str(pid_file)})
        pid = int(pid_file.read_text())

        async def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        await eventually(gone)


async def test_cancel_a_queued_run_and_cancel_without_a_running_engine(web_hub):
    async with serving(web_hub.asgi(), lifespan=False) as client:  # the engine is not started
        run_id = (await client.post("/api/jobs/hello/run")).json()["run_id"]
        assert (await client.get(f"/api/runs/{run_id}")).json()["status"] == "queued"
        response = await client.post(f"/api/runs/{run_id}/cancel")
        assert response.status_code == 202 and response.json()["run"]["status"] == "cancelled"


# -- pause, dead letters, stats, plugins, instances ----------------------------------------------


async def test_pause_and_resume_persist_and_answer_the_job(web_hub):
    async with serving(web_hub.asgi()) as client:
        paused = await client.post("/api/jobs/hello/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        assert web_hub.storage.job_states(["hello"])["hello"].paused
        assert (await client.post("/api/jobs/hello/pause")).json()["paused"] is True
        resumed = (await client.post("/api/jobs/hello/resume")).json()
        assert resumed["paused"] is False and resumed["next_run"] is not None
        assert not web_hub.storage.job_states(["hello"])["hello"].paused


async def test_dead_letters_list_and_clear(web_hub):
    async with serving(web_hub.asgi()) as client:
        await run_until_done(client, "broken")
        await run_until_done(client, "hello")
        listed = (await client.get("/api/dead-letters")).json()["runs"]
        assert [r["job"] for r in listed] == ["broken"] and listed[0]["dead_letter"]
        assert (await client.get("/api/dead-letters", params={"job": "hello"})).json() == {
            "runs": []
        }
        assert_error(await client.get("/api/dead-letters", params={"limit": "-1"}), 400)
        cleared = await client.delete("/api/dead-letters")
        assert cleared.status_code == 200 and cleared.json() == {"cleared": 1}
        assert (await client.get("/api/dead-letters")).json() == {"runs": []}
        assert (await client.get(f"/api/runs/{listed[0]['id']}")).json()["status"] == "failed"


async def test_stats(web_hub):
    app = web_hub.asgi()
    async with serving(app) as client:
        empty = (await client.get("/api/stats")).json()
        assert empty == {
            "jobs": 6,
            "running": 0,
            "queued": 0,
            "runs_last_hour": 0,
            "success_rate_24h": None,
            "dead_letters": 0,
        }
        for job in ("hello", "hello", "hello", "broken"):
            await run_until_done(client, job)
        app.state.runtime._stats = None  # the stats are cached for 2 s
        stats = (await client.get("/api/stats")).json()
        assert stats["runs_last_hour"] == 4
        assert stats["success_rate_24h"] == 0.75
        assert stats["dead_letters"] == 1
        assert stats["jobs"] == 6


async def test_plugins_are_the_cli_records(web_hub):
    async with serving(web_hub.asgi(), lifespan=False) as client:
        everything = (await client.get("/api/plugins", params={"all": "true"})).json()["plugins"]
        infos = [i.to_dict() for i in web_hub.plugin_manager.list_plugins()]
        assert everything == infos
        default = (await client.get("/api/plugins")).json()["plugins"]
        assert default == [i for i in infos if not i["builtin"]]
        storage = await client.get("/api/plugins", params={"all": "1", "hook": "cronhub_storage"})
        assert {p["name"] for p in storage.json()["plugins"]} == {"memory"}


async def test_instances_without_an_instances_table_is_this_one(web_hub):
    async with serving(web_hub.asgi()) as client:
        [me] = (await client.get("/api/instances")).json()["instances"]
        assert me["id"] == "web-a" and me["this"] and me["alive"] and me["scheduler"]
        assert me["pid"] == os.getpid()


# -- health and metrics ----------------------------------------------------------------------------


async def test_healthz_checks_the_scheduler_loop_and_the_storage(web_hub):
    app = web_hub.asgi()
    async with serving(app, lifespan=False) as client:
        response = await client.get("/healthz")  # the lifespan (and so the engine) never ran
        assert response.status_code == 503
        assert response.json()["scheduler"] == "stopped"
    async with serving(app) as client:
        healthy = await client.get("/healthz")
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["status"] == "ok"
        assert healthy.json()["scheduler"] == "ok" and healthy.json()["storage"] == "ok"
        # The loop ending (a crash) is seen at once, not after a timeout.
        app.state.engine._loop_task.cancel()
        await asyncio.sleep(0.05)
        broken = await client.get("/healthz")
        assert broken.status_code == 503 and broken.json()["scheduler"] == "stopped"


async def test_healthz_without_a_scheduler_counts_only_the_storage(plugin_manager, tmp_path):
    db = tmp_path / "web.db"
    plugin_manager.register(sqlite_plugin, name="storage_sqlite")
    hub = make_hub(plugin_manager, tmp_path, storage=f"sqlite:///{db}")
    app = hub.asgi(scheduler=False)
    try:
        async with serving(app) as client:
            ok = await client.get("/healthz")
            assert ok.status_code == 200 and ok.json()["scheduler"] == "disabled"
            assert app.state.engine is None
            hub.storage.close()  # what a lost database looks like to ping()
            down = await client.get("/healthz")
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable" and down.json()["storage"] != "ok"
    finally:
        hub.close()


async def test_metrics_in_prometheus_format(web_hub):
    app = web_hub.asgi()
    async with serving(app) as client:
        await run_until_done(client, "hello")
        await run_until_done(client, "broken")
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        assert 'cronhub_runs_total{job="hello",status="succeeded"} 1.0' in text
        assert 'cronhub_runs_total{job="broken",status="failed"} 1.0' in text
        assert "cronhub_run_duration_seconds_count 2.0" in text
        assert "cronhub_lateness_seconds_bucket" in text
        assert re.search(r"^cronhub_running 0\.0$", text, re.M)
        assert re.search(r"^cronhub_queued 0\.0$", text, re.M)
        assert re.search(r"^cronhub_jobs 6\.0$", text, re.M)
        assert re.search(r"^cronhub_storage_up 1\.0$", text, re.M)
        # Each app has its own registry: nothing leaks into prometheus_client's global one.
        from prometheus_client import REGISTRY, generate_latest

        assert b"cronhub_runs_total" not in generate_latest(REGISTRY)


# -- security -------------------------------------------------------------------------------------

TOKEN = "s3cret-token-for-tests-0123456789"


async def test_every_response_carries_the_security_headers(web_hub):
    async with serving(web_hub.asgi(token=TOKEN), lifespan=False) as client:
        for response in (
            await client.get("/api/jobs"),  # 401
            await client.get("/healthz"),
            await client.get("/login"),
            await client.get("/api/nothing", headers={"authorization": f"Bearer {TOKEN}"}),
        ):
            assert response.headers["content-security-policy"] == CSP
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"


async def test_a_token_guards_every_route_but_healthz(web_hub):
    async with serving(web_hub.asgi(token=TOKEN)) as client:
        missing = await client.get("/api/jobs")
        assert_error(missing, 401, "Bearer")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert_error(await client.get("/metrics"), 401)
        assert_error(await client.get("/api/openapi.json"), 401)
        assert_error(await client.get("/api/events"), 401)
        assert_error(await client.post("/api/jobs/hello/run"), 401)
        wrong = {"authorization": "Bearer not-the-token"}
        assert_error(await client.get("/api/jobs", headers=wrong), 401, "not this server")
        assert (await client.get("/healthz")).status_code == 200
        good = {"authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/api/jobs", headers=good)).status_code == 200
        # A bearer request is not a browser's: no CSRF token needed.
        assert (await client.post("/api/jobs/hello/run", headers=good)).status_code == 202
        page = await client.get("/", headers={"accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2F"
        deep = await client.get("/jobs/hello?x=1", headers={"accept": "text/html"})
        assert deep.headers["location"] == "/login?next=%2Fjobs%2Fhello%3Fx%3D1"


async def test_login_sets_an_httponly_cookie_then_csrf_guards_cookie_posts(web_hub):
    async with serving(web_hub.asgi(token=TOKEN)) as client:
        form = await client.get("/login", params={"next": "/jobs/hello"})
        assert form.status_code == 200 and "text/html" in form.headers["content-type"]
        csrf = client.cookies["cronhub_csrf"]
        assert f'value="{csrf}"' in form.text
        assert 'name="next" value="/jobs/hello"' in form.text
        assert "<script" not in form.text and "style=" not in form.text
        set_csrf = form.headers["set-cookie"]
        assert "SameSite=Strict" in set_csrf and "HttpOnly" not in set_csrf

        bad = await client.post(
            "/login", data={"token": "wrong", "next": "/jobs/hello", "csrf_token": csrf}
        )
        assert bad.status_code == 401 and "not the token" in bad.text
        assert "cronhub_token" not in client.cookies

        no_csrf = await client.post("/login", data={"token": TOKEN, "next": "/"})
        assert_error(no_csrf, 403, "CSRF")

        good = await client.post(
            "/login", data={"token": TOKEN, "next": "/jobs/hello", "csrf_token": csrf}
        )
        assert good.status_code == 303 and good.headers["location"] == "/jobs/hello"
        cookie = good.headers["set-cookie"]
        assert cookie.startswith(f"cronhub_token={cookie_value(TOKEN)};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie

        assert (await client.get("/api/jobs")).status_code == 200  # the cookie authenticates
        assert_error(await client.post("/api/jobs/hello/run"), 403, "X-CSRF-Token")
        assert_error(
            await client.post("/api/jobs/hello/run", headers={"x-csrf-token": "forged" * 8}), 403
        )
        ok = await client.post("/api/jobs/hello/run", headers={"x-csrf-token": csrf})
        assert ok.status_code == 202

        out = await client.post("/logout", headers={"x-csrf-token": csrf})
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
        assert_error(await client.get("/api/jobs"), 401)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/jobs/x?y=1", "/jobs/x?y=1"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_login_only_redirects_to_local_paths(given, expected):
    assert safe_next(given) == expected


async def test_without_a_token_browsers_need_the_csrf_header_and_scripts_do_not(web_hub):
    async with serving(web_hub.asgi(), lifespan=False) as client:
        first = await client.get("/api/stats")
        csrf = first.cookies["cronhub_csrf"]
        browser = {"origin": "http://evil.example", "sec-fetch-site": "cross-site"}
        assert_error(await client.post("/api/jobs/hello/pause", headers=browser), 403, "CSRF")
        assert_error(await client.delete("/api/dead-letters", headers=browser), 403)
        form = await client.post(
            "/api/jobs/hello/pause",
            content="csrf_token=nope",
            headers={**browser, "content-type": "application/x-www-form-urlencoded"},
        )
        assert_error(form, 403)
        same_site = {"origin": BASE, "x-csrf-token": csrf}
        assert (await client.post("/api/jobs/hello/pause", headers=same_site)).status_code == 200
        assert (await client.post("/api/jobs/hello/resume")).status_code == 200  # a script
        # The cookie is not re-set once the client has it.
        assert "set-cookie" not in (await client.get("/api/stats")).headers


async def test_the_host_check_refuses_other_names(web_hub):
    app = web_hub.asgi(allowed_hosts={"127.0.0.1", "localhost"})
    async with serving(app, lifespan=False) as client:
        assert (await client.get("/api/stats")).status_code == 200
        rebound = await client.get("/api/stats", headers={"host": "evil.example:8000"})
        assert_error(rebound, 403, "evil.example")


async def test_user_strings_are_escaped_in_html_errors_and_json(web_hub):
    async with serving(web_hub.asgi(), lifespan=False) as client:
        page = await client.get("/<script>x</script>", headers={"accept": "text/html"})
        assert page.status_code == 404 and "<script>x" not in page.text
        assert "&lt;script&gt;" in page.text
        jobs = (await client.get("/api/jobs")).json()["jobs"]
        assert {j["name"]: j for j in jobs}["hello"]["description"] == "Says <hello>"


async def test_secrets_never_appear(plugin_manager, tmp_path):
    plugin_manager.register(postgres_plugin, name="storage_postgres")
    hub = make_hub(plugin_manager, tmp_path, storage="postgresql://u:hunter2@127.0.0.1:1/x")
    app = hub.asgi(scheduler=False, token=TOKEN)
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with serving(app, lifespan=False) as client:
        for path in ("/healthz", "/api/stats", "/api/jobs", "/api/instances", "/metrics"):
            response = await client.get(path, headers=headers)
            assert "hunter2" not in response.text, path
            assert TOKEN not in response.text, path


# -- plugins' routes, mounting, lifespans ---------------------------------------------------------


async def test_plugin_routes_come_after_the_core_routes(web_hub, register_plugin):
    class Acme:
        @cronhub.hookimpl
        def cronhub_web_routes(self, hub):
            async def version(request):
                return PlainTextResponse(f"acme for {len(request.app.state.hub.jobs)} jobs")

            return [Route("/acme/version", version), Route("/login", version)]

    register_plugin(Acme(), name="acme")
    async with serving(web_hub.asgi(), lifespan=False) as client:
        assert (await client.get("/acme/version")).text == "acme for 6 jobs"
        # /login is cronhub's: the plugin's route of the same path is never reached.
        assert "acme" not in (await client.get("/login")).text


@pytest.mark.parametrize(
    "route",
    [
        Route("/api/acme", lambda request: None),
        Route("/healthz", lambda request: None),
        Route("/metrics/", lambda request: None),
        Mount("/api", routes=[]),
        Mount("/", routes=[Route("/api/z", lambda request: None)]),
    ],
)
def test_a_plugin_route_on_the_api_contract_is_an_error_naming_the_plugin(
    web_hub, register_plugin, route
):
    class Greedy:
        @cronhub.hookimpl
        def cronhub_web_routes(self, hub):
            return [route]

    register_plugin(Greedy(), name="greedy")
    with pytest.raises(UsageError, match=r"plugin 'greedy'.*collides with cronhub's HTTP API"):
        web_hub.asgi()


def test_a_plugin_returning_something_else_is_an_error_naming_it(web_hub, register_plugin):
    class Confused:
        @cronhub.hookimpl
        def cronhub_web_routes(self, hub):
            return ["/acme"]

    register_plugin(Confused(), name="confused")
    with pytest.raises(UsageError, match=r"plugin 'confused'.*not a Starlette route"):
        web_hub.asgi()


async def test_plugin_websockets_need_the_token_too(web_hub, register_plugin):
    from starlette.routing import WebSocketRoute

    class Live:
        @cronhub.hookimpl
        def cronhub_web_routes(self, hub):
            async def echo(websocket):
                await websocket.accept()
                await websocket.send_text("hello")
                await websocket.close()

            return [WebSocketRoute("/acme/live", echo)]

    register_plugin(Live(), name="live")
    app = web_hub.asgi(token=TOKEN)

    async def connect(headers):
        scope = {
            "type": "websocket",
            "path": "/acme/live",
            "raw_path": b"/acme/live",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "scheme": "ws",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
            "subprotocols": [],
        }
        inbox = [{"type": "websocket.connect"}]
        sent = []

        async def receive():
            return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        return [m["type"] for m in sent]

    assert await connect([]) == ["websocket.close"]
    bearer = [(b"authorization", f"Bearer {TOKEN}".encode())]
    assert await connect(bearer) == ["websocket.accept", "websocket.send", "websocket.close"]


async def test_head_of_the_event_stream_does_not_hang(web_hub):
    async with serving(web_hub.asgi(), lifespan=False) as client:
        response = await client.head("/api/events")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")


async def test_mounted_under_a_prefix_with_hub_lifespan(web_hub):
    cron_app = web_hub.asgi(token=TOKEN)
    outer = Starlette(routes=[Mount("/cronhub", app=cron_app)], lifespan=web_hub.lifespan)
    async with serving(outer) as client:
        assert cron_app.state.engine.running
        health = await client.get("/cronhub/healthz")
        assert health.json()["scheduler"] == "ok"
        assert "Path=/cronhub;" in health.headers["set-cookie"]  # the CSRF cookie
        page = await client.get("/cronhub/", headers={"accept": "text/html"})
        assert page.headers["location"] == "/cronhub/login?next=%2F"
        form = await client.get("/cronhub/login")
        assert 'action="/cronhub/login"' in form.text
        csrf = client.cookies["cronhub_csrf"]
        login = await client.post(
            "/cronhub/login", data={"token": TOKEN, "next": "/jobs/hello", "csrf_token": csrf}
        )
        assert login.headers["location"] == "/cronhub/jobs/hello"
        assert "Path=/cronhub" in login.headers["set-cookie"]
        headers = {"x-csrf-token": csrf}
        queued = await client.post("/cronhub/api/jobs/hello/run", headers=headers)
        assert queued.status_code == 202
        doc = (await client.get("/cronhub/api/openapi.json")).json()
        assert doc["servers"] == [{"url": "/cronhub"}]
    assert not cron_app.state.engine.running


async def test_one_scheduler_per_hub_whatever_starts_it(web_hub):
    app = web_hub.asgi()
    assert web_hub.asgi() is not app and web_hub.asgi().state.runtime is app.state.runtime
    with pytest.raises(UsageError, match="already runs with a scheduler"):
        web_hub.asgi(scheduler=False)
    async with web_hub.lifespan(), serving(app) as client:
        assert (await client.get("/healthz")).status_code == 200
    assert not app.state.runtime.running
    # Started again after a stop, it runs a new engine.
    async with serving(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert app.state.engine.running


async def test_a_failed_start_leaves_nothing_behind(plugin_manager, tmp_path):
    plugin_manager.register(sqlite_plugin, name="storage_sqlite")
    missing = tmp_path / "no-such-dir" / "x.db"
    hub = make_hub(plugin_manager, tmp_path, storage=f"sqlite:///{missing}")
    app = hub.asgi()
    before = {name for name, _ in plugin_manager.list_name_plugin()}
    with pytest.raises(Exception, match=r"no-such-dir|unable to open"):
        async with hub.lifespan():
            pass
    assert not app.state.runtime.running
    assert {name for name, _ in plugin_manager.list_name_plugin()} == before


async def test_the_fastapi_example_app(monkeypatch, tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app"
    monkeypatch.syspath_prepend(str(example))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRONHUB_STORAGE", f"sqlite:///{tmp_path / 'app.db'}")
    monkeypatch.setenv("CRONHUB_TOKEN", TOKEN)
    sys.modules.pop("orders_app", None)
    import orders_app as example_app

    try:
        async with serving(example_app.app) as client:
            assert (await client.get("/")).json()["service"] == "orders"
            headers = {"authorization": f"Bearer {TOKEN}"}
            assert (await client.get("/cronhub/api/jobs")).status_code == 401
            jobs = (await client.get("/cronhub/api/jobs", headers=headers)).json()["jobs"]
            assert "orders.sync_orders" in {j["name"] for j in jobs}
            run = await client.post("/cronhub/api/jobs/orders.sync_orders/run", headers=headers)
            run_id = run.json()["run_id"]

            async def done():
                got = await client.get(f"/cronhub/api/runs/{run_id}", headers=headers)
                return got.json()["status"] == "succeeded"

            await eventually(done)
            assert (await client.get("/orders/synced")).json()["synced"] >= 1
    finally:
        example_app.hub.close()
        sys.modules.pop("orders_app", None)


# -- events ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def live(app):
    """Serve ``app`` with uvicorn on a free loopback port; yield its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started or task.done()), timeout=30)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.events.close()
        server.should_exit = True
        await asyncio.wait_for(task, 60)


class SSE:
    """Reads events from an open ``/api/events`` response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, timeout: float = TIMEOUT) -> dict | None:
        """The next event as ``{"id", "event", "data"}``; ``None`` when the stream ends."""
        event: dict = {}
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line == "":
                    if "event" in event:
                        return event
                    event = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    field, _, value = line.partition(": ")
                    event[field] = json.loads(value) if field == "data" else value
        return None

    async def until(self, kind: str, **match) -> dict:
        while True:
            event = await self.next()
            assert event is not None, f"the stream ended before a {kind} event"
            data = event.get("data") or {}
            item = data.get("run") or data.get("job") or {}
            if event["event"] == kind and all(item.get(k) == v for k, v in match.items()):
                return event


async def test_events_stream_runs_and_pauses_with_increasing_ids(web_hub):
    app = web_hub.asgi()
    async with (
        live(app) as url,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
        client.stream("GET", "/api/events") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["content-security-policy"] == CSP
        events = SSE(stream)
        run_id = (await client.post("/api/jobs/hello/run")).json()["run_id"]
        queued = await events.until("run.queued", id=run_id)
        started = await events.until("run.started", id=run_id)
        finished = await events.until("run.finished", id=run_id)
        assert queued["data"]["run"]["status"] == "queued"
        assert started["data"]["run"]["status"] == "running"
        assert finished["data"]["run"]["status"] == "succeeded"
        assert int(queued["id"]) < int(started["id"]) < int(finished["id"])
        await client.post("/api/jobs/hello/pause")
        paused = await events.until("job.paused", name="hello")
        assert paused["data"]["job"]["paused"] is True
        await client.post("/api/jobs/hello/resume")
        resumed = await events.until("job.resumed", name="hello")
        assert resumed["data"]["job"]["paused"] is False
        signal("async")
        cancel_id = (await client.post("/api/jobs/async-wait/run")).json()["run_id"]
        await events.until("run.started", id=cancel_id)
        await client.post(f"/api/runs/{cancel_id}/cancel")
        ended = await events.until("run.finished", id=cancel_id)
        assert ended["data"]["run"]["status"] == "cancelled"


async def test_last_event_id_replays_what_was_missed_and_old_ids_get_a_reset(web_hub):
    app = web_hub.asgi()
    async with live(app) as url, httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        await client.post("/api/jobs/hello/pause")
        await client.post("/api/jobs/hello/resume")
        bus = app.state.events
        first, second = list(bus._buffer)[-2:]
        headers = {"last-event-id": str(first.id)}
        async with client.stream("GET", "/api/events", headers=headers) as stream:
            replayed = await SSE(stream).next()
            assert replayed["id"] == str(second.id) and replayed["event"] == "job.resumed"
        headers = {"last-event-id": "12"}  # from before this process started
        async with client.stream("GET", "/api/events", headers=headers) as stream:
            reset = await SSE(stream).next()
            assert reset["event"] == "reset" and reset["id"] == str(bus.last_id)
        bad = await client.get("/api/events", headers={"last-event-id": "twelve"})
        assert_error(bad, 400, "Last-Event-ID")


async def test_idle_streams_get_keepalives_and_end_at_shutdown(web_hub):
    app = web_hub.asgi(event_keepalive=0.2)
    async with (
        live(app) as url,
        httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
        client.stream("GET", "/api/events") as stream,
    ):
        events = SSE(stream)
        with pytest.raises(TimeoutError):
            await events.next(timeout=1.0)
        assert ": keep-alive" in events.comments
        app.state.events.close()
        assert await events.next(timeout=10) is None


def test_the_bus_buffers_replays_dedupes_and_drops_slow_clients():
    async def scenario():
        bus = EventBus(buffer=3, first_id=100, queue_size=2)
        slow, first = bus.subscribe()
        assert first == []
        run = {"run": {"id": 7, "job": "x"}}
        assert bus.publish("run.started", run).id == 100
        assert bus.publish("run.started", run) is None  # the same run event twice
        bus.publish("run.finished", run)
        bus.publish("job.paused", {"job": {"name": "x"}})  # the slow client's queue is full
        assert bus.subscribers == 0 and slow.overflowed
        _, replay = bus.subscribe(last_id=100)
        assert [e.id for e in replay] == [101, 102]
        for n in range(3):
            bus.publish("job.resumed", {"job": {"name": f"j{n}"}})
        _, too_old = bus.subscribe(last_id=100)  # 101 fell out of the 3-event buffer
        assert [e.kind for e in too_old] == ["reset"]
        _, current = bus.subscribe(last_id=bus.last_id)
        assert current == []
        _, future = bus.subscribe(last_id=10**12)
        assert [e.kind for e in future] == ["reset"]
        assert parse_last_event_id(" 42 ") == 42 and parse_last_event_id("") is None
        with pytest.raises(ValueError):
            parse_last_event_id("-1")

    asyncio.run(scenario())


async def test_events_of_other_instances_reach_a_web_only_app(postgres_database, tmp_path):  # noqa: F811
    def postgres_hub(instance: str) -> Hub:
        pm = get_plugin_manager(entrypoints=False, trace=False)
        pm.register(postgres_plugin, name="storage_postgres")
        settings = {"storage": postgres_database, "instance_id": instance}
        return Hub(
            storage=postgres_database,
            plugin_manager=pm,
            settings=load_settings(settings, cwd=tmp_path),
        )

    scheduler_hub, web_only = postgres_hub("web-a"), postgres_hub("web-b")

    @scheduler_hub.job(every="1h", name="shared")
    def shared_a():
        return None

    @web_only.job(every="1h", name="shared")
    def shared_b():
        return None

    web_app = web_only.asgi(scheduler=False)
    try:
        async with (
            scheduler_hub.lifespan(),
            live(web_app) as web_url,
            httpx.AsyncClient(base_url=web_url, timeout=TIMEOUT) as client,
            client.stream("GET", "/api/events") as stream,
        ):
            events = SSE(stream)
            await asyncio.sleep(0.5)  # the web app's LISTEN connection
            engine = scheduler_hub._web_runtime.engine
            run = await engine.run_now("shared")
            assert (await events.until("run.queued", id=run.id))["data"]["run"]["job"] == "shared"
            finished = await events.until("run.finished", id=run.id)
            assert finished["data"]["run"]["status"] == "succeeded"
            await engine.set_paused("shared", True)
            paused = await events.until("job.paused", name="shared")
            assert paused["data"]["job"]["paused"] is True
            instances = (await client.get("/api/instances")).json()["instances"]
            assert {(i["id"], i["this"], i["scheduler"]) for i in instances} == {
                ("web-a", False, True),
                ("web-b", True, False),
            }
    finally:
        scheduler_hub.close()
        web_only.close()


# -- the OpenAPI document, property-based ------------------------------------------------------


def _property_app():
    """A memory:// hub with a few jobs and runs, for the generated requests."""
    hub = Hub(
        storage="memory://",
        plugin_manager=get_plugin_manager(entrypoints=False, trace=False),
        settings=load_settings({"storage": "memory://", "instance_id": "prop"}, cwd="/"),
    )

    @hub.job(every="1h", name="hello", tags=["greeting"])
    def hello(ctx):
        ctx.log.info("hello")

    @hub.job(every="1h", name="broken")
    def broken():
        raise ValueError("broken")

    from cronhub.runs import ClaimRequest, Trigger

    for name in ("hello", "broken"):
        request = ClaimRequest(name, None, trigger=Trigger.MANUAL, status=RunStatus.QUEUED)
        hub.storage.claim([request], instance="prop", now=hub.clock.now(), lease_ttl=30)
    return hub, hub.asgi()


def _schemathesis_test():
    import schemathesis
    from hypothesis import HealthCheck, settings

    _hub, app = _property_app()
    # An event stream never ends by itself; it has tests of its own above.
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app).exclude(path="/api/events")

    @schema.parametrize()
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    def test_generated_requests_get_documented_answers_and_never_a_5xx(case):
        """Every operation, with valid and invalid inputs: documented statuses and schemas."""
        case.call_and_validate()

    return test_generated_requests_get_documented_answers_and_never_a_5xx


test_generated_requests_get_documented_answers_and_never_a_5xx = _schemathesis_test()


@pytest.fixture(scope="module", autouse=True)
def _stop_schemathesis_lifespans():
    yield
    from schemathesis.python import asgi as schemathesis_asgi

    schemathesis_asgi.shutdown_lifespans()
