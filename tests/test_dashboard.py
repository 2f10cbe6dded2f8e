"""The dashboard, served by the real app (uvicorn on loopback, SQLite in tmp_path).

Two kinds of tests:

- HTML tests read the pages over HTTP: escaping, no inline code, URLs under a prefix, filters,
  pages and error pages. They need no browser.
- Browser tests drive Debian's Chromium with Playwright: jobs appear, "Run now" adds a run
  without a reload, pause and resume, the run page's traceback, cancelling a running run,
  dead letters, the token prompt, a prefix mount, phone width and dark mode. Every page's
  console is collected and a CSP violation or a script error fails the test. Screenshots go
  to ``screenshots/`` (git-ignored).

Without ``/usr/bin/chromium`` the browser tests skip; with ``CRONHUB_REQUIRE_BROWSER=1`` (CI)
that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from cronhub import Hub
from cronhub.runs import ClaimRequest, Completion, RunStatus
from cronhub.storage import RunFilter

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "correct-horse-battery-staple"
EVIL = "evil<img src=x onerror=alert(1)>"
#: Playwright's waits (ms): generous, the machine is shared.
WAIT = 15_000

# -- jobs ---------------------------------------------------------------------------------------


def _divide(total: float, parts: int) -> float:
    return total / parts


def invoices(ctx):
    ctx.log.info("splitting the invoice total")
    _divide(12.5, 0)


def hello(ctx):
    ctx.log.info("hello from the dashboard test")


async def slow(ctx):
    ctx.log.info("starting a long report")
    await asyncio.sleep(120)


def quiet():
    pass


def add_jobs(hub: Hub) -> None:
    """The test hub's jobs; none of them fires on its own during a test run."""
    nightly = {"cron": "0 3 * * *", "tz": "Europe/Berlin"}
    hub.job(name="reports.hello", **nightly, tags=["reports"], description="Says hello.")(hello)
    hub.job(name="billing.invoices", **nightly, tags=["billing"], description="Raises.")(invoices)
    hub.job(name="billing.dead", **nightly, tags=["billing"])(invoices)
    hub.job(name="reports.slow", **nightly, tags=["reports"], timeout="10m")(slow)
    hub.job(name="ops.pausable", **nightly, tags=["ops"])(quiet)
    hub.job(name="ops.tokened", **nightly, tags=["ops"])(quiet)
    hub.job(name="ops.hourly", every="1h", description="Counts down.")(quiet)
    hub.job(
        name=EVIL,
        **nightly,
        tags=["<b>bold</b>"],
        description="<script>alert(2)</script> & <i>friends</i>",
    )(quiet)


#: Past runs of the module's hub, oldest first: Succeeded, Failed, Timed out, sKipped, Missed.
HISTORY = {
    "reports.hello": "SSSSFSSSS",
    "billing.invoices": "SFSFF",
    "reports.slow": "SSTK",
    "ops.hourly": "SSSSSSMSSS",
}
STATUS_OF = {
    "S": RunStatus.SUCCEEDED,
    "F": RunStatus.FAILED,
    "T": RunStatus.TIMED_OUT,
    "K": RunStatus.SKIPPED,
    "M": RunStatus.MISSED,
}


#: The traceback and log of the seeded failures (what the docs' screenshots show).
SEEDED_TRACEBACK = """Traceback (most recent call last):
  File "/srv/acme/billing/invoices.py", line 42, in nightly_invoices
    shares = split_total(batch.total, len(batch.customers))
  File "/srv/acme/billing/invoices.py", line 17, in split_total
    return total / parts
           ~~~~~~^~~~~~~
ZeroDivisionError: float division by zero
"""
SEEDED_LOG = """{at} INFO loading the batch of {day}
{at} INFO 0 customers in the batch
{at} WARNING nothing to invoice, splitting the total anyway
"""


def seed_history(hub: Hub) -> None:
    """Record :data:`HISTORY` as runs of each job's latest past slots (nothing to catch up)."""
    now = hub.clock.now()
    for name, plan in HISTORY.items():
        job = hub.get_job(name)
        slots, cursor = [], now - timedelta(days=len(plan) + 1)
        while (cursor := job.next_run(cursor)) is not None and cursor <= now:
            slots.append(cursor)
        for n, (slot, letter) in enumerate(zip(slots[-len(plan) :], plan, strict=True)):
            status = STATUS_OF[letter]
            recorded = status in (RunStatus.SKIPPED, RunStatus.MISSED)
            request = ClaimRequest(
                job=name, scheduled_for=slot, status=status if recorded else RunStatus.RUNNING
            )
            (result,) = hub.storage.claim([request], instance="seed", now=slot, lease_ttl=60)
            if recorded:
                continue
            failed = status is not RunStatus.SUCCEEDED
            took = 700 + (n * 613 + len(name) * 97) % 2900
            hub.storage.finish(
                result.run.id,
                Completion(
                    status=status,
                    finished_at=slot + timedelta(milliseconds=took),
                    duration_ms=took,
                    error_type="ZeroDivisionError" if failed else None,
                    error_message="float division by zero" if failed else None,
                    traceback=SEEDED_TRACEBACK if failed else None,
                    log=SEEDED_LOG.format(
                        at=slot.strftime("%Y-%m-%d %H:%M:%S,%f")[:-3], day=slot.date()
                    ),
                    dead_letter=failed and n == len(plan) - 1,
                ),
                instance="seed",
            )


# -- the server ---------------------------------------------------------------------------------


@dataclass
class Server:
    """A uvicorn server in a thread, on a free loopback port."""

    app: object
    hub: Hub
    prefix: str = ""
    port: int = 0
    thread: threading.Thread | None = None
    server: uvicorn.Server | None = None
    errors: list[BaseException] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,  # type: ignore[arg-type]
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)

        def run() -> None:
            try:
                self.server.run(sockets=[sock])  # type: ignore[union-attr]
            except BaseException as exc:  # reported by the test that needs the server
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, name="dashboard-test-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if self.errors or not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start: {self.errors}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the test server did not stop within 30 s"

    def get(self, path: str, **kwargs) -> httpx.Response:
        headers = kwargs.pop("headers", {"Accept": "text/html"})
        return httpx.get(self.url + path, headers=headers, timeout=20, **kwargs)

    def runs(self, job: str, **kwargs) -> list:
        return self.hub.storage.list_runs(RunFilter(job=job, **kwargs))


def make_hub(directory: Path) -> Hub:
    hub = Hub(
        storage=f"sqlite:///{directory / 'cronhub.db'}",
        disable_plugins=["acme"],
        shutdown_grace=1,
    )
    add_jobs(hub)
    return hub


@contextlib.contextmanager
def serving(app: object, hub: Hub, prefix: str = "") -> Iterator[Server]:
    server = Server(app, hub, prefix).start()
    try:
        yield server
    finally:
        server.stop()
        hub.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The app with its scheduler, no token, over a history of past runs."""
    hub = make_hub(tmp_path_factory.mktemp("dashboard"))
    seed_history(hub)
    with serving(hub.asgi(), hub) as running:
        yield running


# -- HTML tests (no browser) --------------------------------------------------------------------


class Inspector(HTMLParser):
    """Collects what the CSP forbids and every URL a page refers to."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.inline_scripts = 0
        self.style_elements = 0
        self.style_attributes: list[str] = []
        self.handlers: list[str] = []
        self.urls: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "script":
            self._in_script = "src" not in attributes
        if tag == "style":
            self.style_elements += 1
        for name, value in attrs:
            if name == "style":
                self.style_attributes.append(f"<{tag} style={value!r}>")
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action") and value is not None:
                self.urls.append(value)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_scripts += 1


def inspect(html: str) -> Inspector:
    parser = Inspector()
    parser.feed(html)
    return parser


def first_run(server: Server, job: str):
    """Run ``job`` now through the API; return the run id."""
    response = httpx.post(f"{server.url}/api/jobs/{quote(job, safe='')}/run", timeout=20)
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def finished(server: Server, run_id: int):
    def check():
        run = server.hub.storage.get_run(run_id)
        return run if run is not None and run.status.terminal else None

    return wait_for(check, what=f"run {run_id} to finish")


def page_paths(server: Server) -> list[str]:
    run_id = first_run(server, "billing.invoices")
    finished(server, run_id)
    return [
        "/",
        "/?q=billing",
        "/?tag=ops",
        f"/jobs/{quote(EVIL, safe='')}",
        "/jobs/billing.invoices",
        "/jobs/billing.invoices?status=failed",
        f"/runs/{run_id}",
        "/dead-letters",
        "/plugins",
        "/jobs/nobody",
        "/?page=zero",
    ]


def test_pages_have_no_inline_code_and_send_the_csp(server):
    for path in page_paths(server):
        response = server.get(path)
        assert response.status_code in (200, 400, 404), path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "style-src 'self'" in response.headers["content-security-policy"]
        page = inspect(response.text)
        assert page.inline_scripts == 0, path
        assert page.style_elements == 0, path
        assert page.style_attributes == [], path
        assert page.handlers == [], path
        scripts = [a["src"] for tag, a in page.tags if tag == "script"]
        # The job page also loads the runtime schedules' form (static/schedules.js).
        ours = ("/static/cronhub.js?v=", "/static/schedules.js?v=")
        assert scripts and all(s.startswith(ours) for s in scripts), scripts


def test_user_strings_are_escaped(server):
    for path in ("/", f"/jobs/{quote(EVIL, safe='')}", "/?q=evil"):
        html = server.get(path).text
        assert "<img src=x" not in html and "<script>alert" not in html, path
        assert "evil&lt;img src=x onerror=alert(1)&gt;" in html, path
    html = server.get(f"/jobs/{quote(EVIL, safe='')}").text
    assert "&lt;script&gt;alert(2)&lt;/script&gt; &amp; &lt;i&gt;friends&lt;/i&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    # The search box echoes the query escaped, inside its attribute.
    html = server.get("/", params={"q": '"><script>alert(3)</script>'}).text
    assert 'value="&#34;&gt;&lt;script&gt;alert(3)&lt;/script&gt;"' in html


def test_bad_parameters_and_unknown_things_are_named(server):
    response = server.get("/?page=zero")
    assert response.status_code == 400
    assert "query parameter &#39;page&#39;: a positive whole number, got &#39;zero&#39;" in (
        response.text
    )
    response = server.get("/?per_page=5000")
    assert response.status_code == 400 and "per_page" in response.text
    response = server.get("/jobs/billing.invoices?status=exploded")
    assert response.status_code == 400
    assert "one of queued, running, succeeded" in response.text
    response = server.get("/jobs/billing.invoices?before=-3")
    assert response.status_code == 400 and "before" in response.text
    response = server.get("/jobs/nobody")
    assert response.status_code == 404 and "no job named &#39;nobody&#39;" in response.text
    response = server.get("/runs/987654")
    assert response.status_code == 404 and "no run with id 987654" in response.text


def test_search_tag_and_history_filters(server):
    html = server.get("/?q=BILLING").text
    assert 'data-job="billing.invoices"' in html and 'data-job="billing.dead"' in html
    assert 'data-job="reports.hello"' not in html
    html = server.get("/?tag=ops").text
    assert re.findall(r'<tr data-job="([^"]+)"', html) == ["ops.pausable", "ops.tokened"]
    assert "No job matches" in server.get("/?q=no-such-job").text
    failed = first_run(server, "billing.invoices")
    finished(server, failed)
    html = server.get("/jobs/billing.invoices?status=succeeded").text
    assert f'data-run="{failed}"' not in html and "No succeeded runs" in html
    html = server.get("/jobs/billing.invoices?status=failed").text
    assert f'data-run="{failed}"' in html


def test_jobs_table_pages_through_many_jobs(tmp_path):
    hub = make_hub(tmp_path)
    for n in range(230):
        hub.job(name=f"bulk.job-{n:03d}", cron="0 4 * * *", tags=["bulk"])(quiet)
    with serving(hub.asgi(scheduler=False), hub) as web:
        first = web.get("/?tag=bulk").text
        rows = re.findall(r'<tr data-job="([^"]+)"', first)
        assert rows == [f"bulk.job-{n:03d}" for n in range(100)]
        assert "1\N{EN DASH}100 of 230 matching (238 in all)" in first
        assert 'href="/?tag=bulk&amp;page=2" rel="next"' in first
        last = web.get("/?tag=bulk&page=3").text
        assert re.findall(r'<tr data-job="([^"]+)"', last)[-1] == "bulk.job-229"
        assert "201\N{EN DASH}230 of 230" in last
        beyond = web.get("/?tag=bulk&page=99").text  # clamped to the last page
        assert "201\N{EN DASH}230 of 230" in beyond
        small = web.get("/?tag=bulk&per_page=10").text
        assert len(re.findall(r"<tr data-job=", small)) == 10


def test_recent_runs_of_a_storage_without_the_method():
    from cronhub.builtin.memory_storage import MemoryStorage
    from cronhub.runs import Overlap
    from cronhub.web.dashboard import recent_runs

    storage = MemoryStorage()
    now = datetime.now(UTC)
    requests = [
        ClaimRequest(job=job, scheduled_for=now - timedelta(minutes=n), overlap=Overlap.ALLOW)
        for n in range(5)
        for job in ("a", "b")
    ]
    storage.claim(requests, instance="i", now=now, lease_ttl=30)

    class OlderPlugin:
        """A storage written before ``recent_runs`` joined the protocol."""

        def list_runs(self, query):
            return storage.list_runs(query)

    expected = storage.recent_runs(["a", "b", "c"], per_job=3)
    assert recent_runs(OlderPlugin(), ["a", "b", "c"], 3) == expected
    assert [len(runs) for runs in expected.values()] == [3, 3, 0]


def test_the_stats_and_marks_read_index_ranges_on_sqlite(tmp_path):
    """The queries behind every jobs page load: no scan of the whole history."""
    import sqlalchemy as sa

    hub = make_hub(tmp_path)
    storage = hub.storage
    statements: list[tuple[str, object]] = []
    sa.event.listen(
        storage._engine,
        "before_cursor_execute",
        lambda conn, cursor, sql, params, context, many: statements.append((sql, params)),
    )
    storage.count_runs(finished_after=datetime.now(UTC) - timedelta(hours=1))
    storage.recent_runs(["reports.hello", "billing.invoices"], per_job=10)
    plans = []
    with storage._engine.connect() as conn:
        for sql, params in statements:
            if sql.lstrip().upper().startswith("SELECT"):
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
                plans.append(" / ".join(row[3] for row in rows))
    assert len(plans) == 2, plans
    assert all("SCAN cronhub_runs" not in plan for plan in plans), plans
    assert "USING INDEX ix_cronhub_runs_finished_at" in plans[0]
    assert plans[1].count("USING INDEX ix_cronhub_runs_job_id") == 2


def test_urls_follow_the_mount_prefix(tmp_path):
    hub = make_hub(tmp_path)
    parent = Starlette(routes=[Mount("/cronhub", app=hub.asgi())], lifespan=hub.lifespan)
    with serving(parent, hub, prefix="/cronhub") as mounted:
        run_id = first_run(mounted, "billing.invoices")
        finished(mounted, run_id)
        for path in ("/", "/jobs/billing.invoices", f"/runs/{run_id}", "/dead-letters"):
            response = mounted.get(path)
            assert response.status_code == 200, path
            page = inspect(response.text)
            local = [u for u in page.urls if not u.startswith(("http", "#"))]
            assert local and all(u.startswith("/cronhub/") for u in local), (path, local)
            assert 'data-base="/cronhub"' in response.text
        css = httpx.get(mounted.url + "/static/cronhub.css", timeout=20)
        assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text


# -- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CRONHUB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CRONHUB_REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A browser page with its console problems collected."""

    page: object
    problems: list[str]

    def shot(self, name: str, *, full_page: bool = True) -> Path:
        SHOTS.mkdir(exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@contextlib.contextmanager
def open_tab(browser, **context_options) -> Iterator[Tab]:
    context = browser.new_context(**{"viewport": {"width": 1360, "height": 860}, **context_options})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    problems: list[str] = []

    def on_console(message) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)

    def on_response(response) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def on_dialog(dialog) -> None:
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("response", on_response)
    page.on("dialog", on_dialog)
    try:
        yield Tab(page, problems)
    finally:
        context.close()
    assert problems == [], problems


@pytest.fixture
def tab(browser) -> Iterator[Tab]:
    with open_tab(browser) as opened:
        yield opened


def row(page, job: str):
    return page.locator(f'#jobs tbody tr[data-job="{job}"]')


def expect_live(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#live")).to_have_attribute("data-state", "live")


def test_jobs_appear_with_schedule_countdown_and_stats(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/")
    names = page.locator("#jobs tbody tr").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-job'))"
    )
    assert {"reports.hello", "billing.invoices", "reports.slow", EVIL} <= set(names)
    hello = row(page, "reports.hello")
    expect(hello.locator(".c-schedule")).to_contain_text("at 03:00 every day (Europe/Berlin)")
    expect(hello.locator(".c-schedule code")).to_have_text("0 3 * * *")
    expect(hello.locator(".c-tags .tag")).to_have_text(["reports"])
    # The past runs are coloured marks, oldest first, each linking to its run.
    classes = hello.locator("a.mark").evaluate_all("marks => marks.map(m => m.classList[1])")
    assert classes == [f"s-{STATUS_OF[c]}" for c in HISTORY["reports.hello"]]
    assert hello.locator(".mark-empty").count() == 10 - len(HISTORY["reports.hello"])
    expect(hello.locator("[data-role=state]")).to_have_text("succeeded")
    expect(row(page, "billing.invoices").locator("[data-role=state]")).to_have_text("failed")
    # The countdown ticks every second; its title gives the absolute time.
    countdown = row(page, "ops.hourly").locator("time[data-countdown]")
    first = countdown.text_content()
    assert first.startswith("in ")
    expect(countdown).not_to_have_text(first, timeout=5000)
    assert "UTC" in countdown.get_attribute("title")
    # Stats are rendered by the server; the live indicator connects.
    expect(page.locator('[data-stat="jobs"] .stat-value')).to_have_text("8")
    expect_live(page)
    # A hostile job name is text, not markup.
    evil = row(page, EVIL)
    expect(evil.locator(".job-link")).to_have_text(EVIL)
    assert page.locator("img[src=x]").count() == 0
    tab.shot("jobs-first-paint")


def test_search_and_tag_filter(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/")
    page.get_by_label("Tag", exact=True).select_option("ops")  # applies at once
    expect(page).to_have_url(re.compile(r"\?q=&tag=ops$"))
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    page.get_by_role("searchbox").fill("TOKEN")
    page.get_by_role("searchbox").press("Enter")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(row(page, "ops.tokened")).to_be_visible()
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("#jobs tbody tr")).to_have_count(8)


def test_run_now_adds_a_run_without_reload(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/")
    expect_live(page)
    page.evaluate("window.__notReloaded = true")
    before = server.runs("reports.hello")
    hello = row(page, "reports.hello")
    marks = hello.locator("a.mark")
    expect(marks).to_have_count(min(10, len(before)))
    hello.get_by_role("button", name="Run now").click()
    expect(page.locator(".toast").first).to_contain_text("Started reports.hello as run #")
    run_id = wait_for(
        lambda: next((r.id for r in server.runs("reports.hello") if r.id > before[0].id), None),
        what="the new run",
    )
    # Its mark arrives at the right end of the row, pushing the oldest out of ten.
    expect(marks.last).to_have_attribute("href", f"/runs/{run_id}")
    expect(marks.last).to_have_class(re.compile(r"\bs-succeeded\b"))
    expect(marks).to_have_count(min(10, len(before) + 1))
    expect(hello.locator("[data-role=state]")).to_have_text("succeeded")
    expect(page.locator('[data-stat="runs_last_hour"] .stat-value')).not_to_have_text("0")
    assert page.evaluate("window.__notReloaded") is True

    # On the job page, the run is added to the history table, newest first.
    page.goto(server.url + "/jobs/reports.hello")
    expect_live(page)
    page.evaluate("window.__notReloaded = true")
    page.get_by_role("button", name="Run now").click()
    newest = page.locator("#runs tbody tr").first
    expect(newest).not_to_have_attribute("data-run", str(run_id))
    expect(newest.locator("[data-role=state]")).to_have_text("succeeded")
    assert page.evaluate("window.__notReloaded") is True
    tab.shot("job-page")


def test_pause_and_resume_show_at_once_and_persist(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/")
    expect_live(page)
    job = row(page, "ops.pausable")
    job.get_by_role("button", name="Pause").click()
    expect(job.locator("[data-role=state]")).to_have_text("paused")
    expect(job.locator("[data-role=next]")).to_have_text("paused")
    expect(job).to_have_class(re.compile(r"\bis-paused\b"))
    expect(page.locator(".toast").last).to_contain_text("Paused ops.pausable")
    assert server.hub.storage.job_states(["ops.pausable"])["ops.pausable"].paused
    tab.shot("jobs-paused")
    page.reload()
    job = row(page, "ops.pausable")
    expect(job.locator("[data-role=state]")).to_have_text("paused")
    job.get_by_role("button", name="Resume").click()
    expect(job.locator("[data-role=next] time")).to_contain_text("in ")
    expect(job.get_by_role("button", name="Pause")).to_be_visible()
    assert not server.hub.storage.job_states(["ops.pausable"])["ops.pausable"].paused


def test_pause_from_elsewhere_arrives_live(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/jobs/ops.pausable")
    expect_live(page)
    headers = {"Accept": "application/json"}
    httpx.post(server.url + "/api/jobs/ops.pausable/pause", headers=headers, timeout=20)
    head = page.locator("#job-head")
    expect(head.locator("[data-role=state]")).to_have_text("paused")
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    httpx.post(server.url + "/api/jobs/ops.pausable/resume", headers=headers, timeout=20)
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    expect(head.locator("[data-role=state]")).not_to_have_text("paused")


def test_run_page_shows_error_traceback_and_log(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/jobs/billing.invoices")
    expect_live(page)
    page.get_by_role("button", name="Run now").click()
    page.locator(".toast a", has_text="View").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+$"))
    expect(page.locator("#run-head [data-role=state]")).to_have_text("failed")
    expect(page.locator("#run-error")).to_be_visible()
    expect(page.locator("[data-field=error_type]")).to_have_text("ZeroDivisionError")
    expect(page.locator("[data-field=error_message]")).to_have_text("float division by zero")
    traceback = page.locator("[data-field=traceback]")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("in _divide")
    expect(page.locator("[data-field=log]")).to_contain_text("splitting the invoice total")
    tab.shot("run-traceback")
    # A failure from the history, rendered by the server alone.
    seeded = server.runs("billing.invoices", status=RunStatus.FAILED)[-1]
    page.goto(f"{server.url}/runs/{seeded.id}")
    expect(page.locator("[data-field=traceback]")).to_contain_text("in split_total")
    expect(page.locator("[data-field=log]")).to_contain_text("0 customers in the batch")
    expect(page.locator("#run-head .badge", has_text="dead letter")).to_have_count(0)
    tab.shot("run-seeded")


def test_cancel_a_running_run(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    run_id = first_run(server, "reports.slow")
    wait_for(
        lambda: server.hub.storage.get_run(run_id).status is RunStatus.RUNNING,
        what="the slow run to start",
    )
    page.goto(f"{server.url}/runs/{run_id}")
    expect_live(page)
    expect(page.locator("#run-head [data-role=state]")).to_have_text("running")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-head [data-role=state]")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    assert finished(server, run_id).status is RunStatus.CANCELLED
    expect(page.locator("[data-field=error_heading]")).to_have_text("Reason")


def test_dead_letters_list_and_clear(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/dead-letters")
    expect_live(page)
    run_id = first_run(server, "billing.dead")
    finished(server, run_id)
    # The new dead letter arrives live.
    expect(page.locator(f'#runs tbody tr[data-run="{run_id}"]')).to_be_visible()
    expect(page.locator(f'#runs tbody tr[data-run="{run_id}"]')).to_contain_text("billing.dead")
    tab.shot("dead-letters")
    clear = page.get_by_role("button", name="Clear all")
    clear.click()
    expect(page.get_by_role("button", name="Click again to clear")).to_be_visible()
    assert server.hub.storage.dead_letters()  # one click is not enough
    page.get_by_role("button", name="Click again to clear").click()
    expect(page.locator("#runs-empty")).to_be_visible()
    expect(page.locator("#runs")).to_be_hidden()
    expect(page.locator("#dead-count")).to_have_text("0")
    assert server.hub.storage.dead_letters() == []
    page.reload()
    expect(page.locator("#runs-empty")).to_be_visible()


def test_plugins_page_lists_plugins_and_hooks(server, tab):
    from playwright.sync_api import expect

    page = tab.page
    page.goto(server.url + "/plugins")
    sqlite = page.locator('#plugins tr[data-plugin="storage_sqlite"]')
    expect(sqlite).to_contain_text("cronhub-storage-sqlite")
    expect(sqlite).to_contain_text("cronhub_storage")
    expect(page.locator('#plugins tr[data-plugin="acme"]')).to_contain_text("disabled")
    storage_hook = page.locator("#hooks tr", has_text="cronhub_storage(")
    expect(page.locator("#hooks")).to_contain_text("cronhub_collect")
    assert storage_hook.count() == 0  # names, not signatures
    tab.shot("plugins")


def test_phone_width_and_dark_mode(server, browser):
    from playwright.sync_api import expect

    run_id = first_run(server, "billing.invoices")
    finished(server, run_id)
    running = first_run(server, "reports.slow")  # something blue on the screenshots
    for scheme in ("light", "dark"):
        phone = {"viewport": {"width": 390, "height": 844}, "color_scheme": scheme}
        with open_tab(browser, **phone) as tab:
            page = tab.page
            page.goto(server.url + "/")
            expect_live(page)
            # Cards, not a table: no header row, and nothing wider than the screen.
            assert page.locator("#jobs thead").evaluate("e => getComputedStyle(e).display") == (
                "none"
            )
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the jobs page is {width} px wide on a 390 px screen"
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert (background == "rgb(13, 17, 23)") == (scheme == "dark"), background
            tab.shot(f"jobs-phone-{scheme}", full_page=False)
            page.goto(f"{server.url}/runs/{run_id}")
            expect(page.locator("[data-field=traceback]")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            tab.shot(f"run-phone-{scheme}")
        with open_tab(browser, color_scheme=scheme) as tab:
            tab.page.goto(server.url + "/")
            expect(row(tab.page, "reports.slow").locator("[data-role=state]")).to_have_text(
                "running"
            )
            tab.shot(f"jobs-desktop-{scheme}", full_page=False)
            tab.page.goto(server.url + "/jobs/billing.invoices")
            expect_live(tab.page)
            tab.shot(f"job-desktop-{scheme}")
    response = httpx.post(f"{server.url}/api/runs/{running}/cancel", timeout=20)
    assert response.status_code == 202, response.text


def test_token_prompt(tmp_path, browser):
    from playwright.sync_api import expect

    hub = make_hub(tmp_path)
    with serving(hub.asgi(token=TOKEN), hub) as secured, open_tab(browser) as tab:
        page = tab.page
        page.goto(secured.url + "/jobs/ops.tokened")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.fill("#token", "wrong-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_be_visible()
        tab.shot("login")
        page.fill("#token", TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(secured.url + "/jobs/ops.tokened")
        expect_live(page)
        # Actions carry the CSRF header and the login cookie.
        page.get_by_role("button", name="Pause").click()
        expect(page.locator("#job-head [data-role=state]")).to_have_text("paused")
        assert hub.storage.job_states(["ops.tokened"])["ops.tokened"].paused
        # The token itself is not readable by scripts (HttpOnly cookie).
        assert TOKEN not in page.evaluate("document.cookie")
        page.goto(secured.url + "/")
        expect(row(page, "ops.tokened").locator("[data-role=state]")).to_have_text("paused")
        # The page's one refused request was the wrong token's (the console also reports
        # the login page's favicon, which Chromium fetches on its own before signing in).
        refused = [p for p in tab.problems if p.startswith("HTTP 401")]
        assert refused == [f"HTTP 401: POST {secured.url}/login"]
        tab.problems[:] = [p for p in tab.problems if "401" not in p]


def test_signed_out_action_leads_back_after_login(tmp_path, browser):
    from playwright.sync_api import expect

    hub = make_hub(tmp_path)
    parent = Starlette(routes=[Mount("/cronhub", app=hub.asgi(token=TOKEN))], lifespan=hub.lifespan)
    with serving(parent, hub, prefix="/cronhub") as mounted, open_tab(browser) as tab:
        page = tab.page
        page.goto(mounted.url + "/jobs/ops.tokened?status=failed")
        page.fill("#token", TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(mounted.url + "/jobs/ops.tokened?status=failed")
        expect_live(page)
        # The login cookie expires (or is revoked) while the page is open.
        page.context.clear_cookies(name="cronhub_token")
        page.get_by_role("button", name="Pause").click()
        expect(page).to_have_url(re.compile(r"/cronhub/login\?next="))
        page.fill("#token", TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(mounted.url + "/jobs/ops.tokened?status=failed")
        refused = [p for p in tab.problems if p.startswith("HTTP 401")]
        assert refused and all("/cronhub/api/" in p for p in refused), refused
        # Console lines without a URL: the refused call above, and the login page's favicon
        # (Chromium asks the host's /favicon.ico for a page that names no icon).
        assert not [p for p in tab.problems if p.startswith("HTTP 404")]
        tab.problems[:] = [p for p in tab.problems if "401" not in p and "404" not in p]


def test_mounted_under_a_prefix(tmp_path, browser):
    from playwright.sync_api import expect

    hub = make_hub(tmp_path)
    parent = Starlette(routes=[Mount("/cronhub", app=hub.asgi())], lifespan=hub.lifespan)
    with serving(parent, hub, prefix="/cronhub") as mounted, open_tab(browser) as tab:
        page = tab.page
        page.goto(mounted.url + "/")
        expect_live(page)
        hello = row(page, "reports.hello")
        hello.get_by_role("button", name="Run now").click()
        expect(hello.locator("a.mark.s-succeeded")).to_have_count(1)
        hello.locator(".job-link").click()
        expect(page).to_have_url(mounted.url + "/jobs/reports.hello")
        expect(page.locator("#runs tbody tr")).to_have_count(1)
        assert page.evaluate("getComputedStyle(document.body).margin") == "0px"  # CSS loaded
