"""The dashboard's first paint on a hub with 10,000 jobs, measured in Chromium.

Usage (from the repository root, with the project's virtual environment)::

    python benchmarks/dashboard_paint.py                  # 10,000 jobs, 10 runs each
    python benchmarks/dashboard_paint.py --jobs 1000 --repeats 3

It builds a SQLite database in a temporary directory with ``--jobs`` jobs (cron and interval
schedules, a few tags) and ``--runs`` finished runs of each (one in seven failed), serves the
app web-only with uvicorn on a loopback port, and opens each page ``--repeats`` times in a
fresh headless Chromium context (cold cache, no cookies). For every load it reads the
Performance API: the navigation entry (time to first byte, HTML received, DOMContentLoaded,
load) and the paint entries (first paint, first contentful paint). It prints the medians and
the worst load as a Markdown table; ``--json FILE`` writes every sample.

Chromium is Debian's (``/usr/bin/chromium``); Playwright drives it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from cronhub import Hub
from cronhub.runs import ClaimRequest, Completion, Overlap, RunStatus

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MEASURE = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = Object.fromEntries(
    performance.getEntriesByType("paint").map((entry) => [entry.name, entry.startTime]));
  return {
    ttfb: nav.responseStart,
    html: nav.responseEnd,
    dom_content_loaded: nav.domContentLoadedEventEnd,
    load: nav.loadEventEnd,
    first_paint: paint["first-paint"],
    first_contentful_paint: paint["first-contentful-paint"],
    html_bytes: nav.encodedBodySize,
    rows: document.querySelectorAll("#jobs tbody tr, #runs tbody tr").length,
  };
}"""


def noop() -> None:
    """Every benchmark job's body (the scheduler does not run here)."""


def build_hub(directory: Path, jobs: int, runs: int) -> Hub:
    """A hub of ``jobs`` jobs over a SQLite file holding ``runs`` finished runs of each."""
    hub = Hub(storage=f"sqlite:///{directory / 'bench.db'}", disable_plugins=["acme"])
    tags = ["billing", "reports", "ops", "etl", "mail"]
    for n in range(jobs):
        options: dict[str, Any] = (
            {"cron": f"{n % 60} {n % 24} * * *", "tz": "Europe/Berlin"}
            if n % 2
            else {"every": 300 + n % 7 * 60}
        )
        hub.job(
            name=f"job-{n:05d}",
            tags=[tags[n % len(tags)]],
            description=f"Benchmark job number {n}",
            **options,
        )(noop)
    storage = hub.storage
    start = datetime(2026, 1, 1, tzinfo=UTC)
    names = list(hub.jobs)
    batch = 2000
    for minute in range(runs):
        slot = start + timedelta(minutes=minute)
        for first in range(0, len(names), batch):
            requests = [
                ClaimRequest(job=name, scheduled_for=slot, overlap=Overlap.ALLOW)
                for name in names[first : first + batch]
            ]
            claimed = storage.claim(requests, instance="bench", now=slot, lease_ttl=60)
            done = []
            for result in claimed:
                assert result.run is not None
                failed = (result.run.id % 7) == 0
                done.append(
                    (
                        result.run.id,
                        Completion(
                            status=RunStatus.FAILED if failed else RunStatus.SUCCEEDED,
                            finished_at=slot + timedelta(seconds=2),
                            duration_ms=2000,
                            error_type="RuntimeError" if failed else None,
                            error_message="benchmark failure" if failed else None,
                        ),
                    )
                )
            storage.finish_many(done, instance="bench")
    return hub


class Server:
    """uvicorn serving ``app`` in a thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def process_cpu() -> float:
    """CPU seconds used by this process so far (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(url: str, pages: list[str], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Load each page ``repeats`` times (after one warm-up) in fresh contexts."""
    from playwright.sync_api import sync_playwright

    samples: dict[str, list[dict[str, Any]]] = {page: [] for page in pages}
    # One client for every request: making one (and its TLS context) costs more CPU than
    # the server spends on a small page.
    client = httpx.Client(headers={"Accept": "text/html"}, timeout=120)
    with client, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for path in pages:
            for attempt in range(repeats + 1):
                # The same page over plain HTTP first: the server's share, without a browser.
                started, cpu = time.perf_counter(), process_cpu()
                response = client.get(url + path)
                response.raise_for_status()
                server_ms = (time.perf_counter() - started) * 1000
                # CPU of this process (the server's thread, and the client's small share):
                # unlike wall time, hardly affected by other work on the machine.
                cpu_ms = (process_cpu() - cpu) * 1000
                context = browser.new_context(viewport={"width": 1360, "height": 860})
                page = context.new_page()
                # The renderer's own accounting of its main thread (Chrome DevTools Protocol).
                devtools = context.new_cdp_session(page)
                devtools.send("Performance.enable", {"timeDomain": "threadTicks"})
                page.goto(url + path, wait_until="load", timeout=120_000)
                page.wait_for_function(
                    "() => performance.getEntriesByName('first-contentful-paint').length > 0"
                )
                sample = page.evaluate(MEASURE)
                metrics = {
                    m["name"]: m["value"]
                    for m in devtools.send("Performance.getMetrics")["metrics"]
                }
                sample["style_layout"] = (
                    metrics["RecalcStyleDuration"] + metrics["LayoutDuration"]
                ) * 1000
                sample["script"] = metrics["ScriptDuration"] * 1000
                sample["server"] = server_ms
                sample["server_cpu"] = cpu_ms
                context.close()
                if attempt:  # the first load warms the server's caches and the OS
                    samples[path].append(sample)
        browser.close()
    return samples


def report(samples: dict[str, list[dict[str, Any]]], jobs: int, runs: int) -> str:
    """Medians (and the worst load) as a Markdown table, in milliseconds."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines = [
        f"Dashboard pages, {jobs:,} jobs with {runs} runs each (SQLite), cold browser cache; "
        "milliseconds (browser columns from navigation start), median of the loads (worst in "
        f"brackets); {os.cpu_count()} CPUs, load average {load} at the end.",
        "",
        "| page | rows | HTML KiB | server CPU | server (HTTP GET) | first byte | HTML done "
        "| first contentful paint | DOMContentLoaded | load | style + layout | script |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path, loads in samples.items():

        def cell(key: str, loads: list[dict[str, Any]] = loads) -> str:
            values = [load[key] for load in loads if load[key] is not None]
            return f"{statistics.median(values):.0f} ({max(values):.0f})" if values else "-"

        size = statistics.median(load["html_bytes"] for load in loads) / 1024
        lines.append(
            f"| `{path}` | {loads[0]['rows']} | {size:.0f} | {cell('server_cpu')} "
            f"| {cell('server')} | {cell('ttfb')} "
            f"| {cell('html')} "
            f"| {cell('first_contentful_paint')} | {cell('dom_content_loaded')} "
            f"| {cell('load')} | {cell('style_layout')} | {cell('script')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="number of jobs")
    parser.add_argument("--runs", type=int, default=10, help="finished runs per job")
    parser.add_argument("--repeats", type=int, default=5, help="loads per page")
    parser.add_argument("--json", type=Path, help="write every sample to this file")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing (apt install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        hub = build_hub(Path(tmp), args.jobs, args.runs)
        print(
            f"built {args.jobs:,} jobs and {args.jobs * args.runs:,} runs "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        last_page = max(1, -(-args.jobs // 100))
        pages = [
            "/",
            f"/?page={last_page}",
            "/?q=job-0999",
            "/?tag=billing&page=3",
            "/?per_page=500",
            "/jobs/job-00042",
        ]
        with Server(hub.asgi(scheduler=False)) as server:
            samples = measure(server.url, pages, args.repeats)
        hub.close()
    print(report(samples, args.jobs, args.runs))
    if args.json:
        args.json.write_text(json.dumps(samples, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
