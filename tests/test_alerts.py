"""Alerts: when the core raises them, the outbox, its delivery loop, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import cronhub
from cronhub import testing
from cronhub.engine import Engine
from cronhub.errors import JobDefinitionError
from cronhub.hub import Hub
from cronhub.outbox import AlertDelivery
from cronhub.runs import Alert, ClaimRequest

ROOT = Path(__file__).resolve().parent.parent


# -- a loopback webhook that records requests and answers as told -----------------------------
class WebhookServer:
    """An HTTP server on 127.0.0.1 recording each POST; ``script`` says how to answer.

    Each script entry is ``(status, headers)`` or ``"hang"`` (answer nothing until released);
    when the script is empty it answers ``default``.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[Any] = []
        self.default: tuple[int, dict[str, str]] = (200, {})
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._lock:
                    answer = server.script.pop(0) if server.script else server.default
                    record = {"path": self.path, "body": json.loads(body or b"null")}
                    server.requests.append(record)
                if answer == "hang":
                    record["status"] = None
                    server.release.wait(30)
                    return
                status, headers = answer
                record["status"] = status
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def delivered(self) -> list[dict[str, Any]]:
        """Requests answered 2xx (what a real webhook would have accepted)."""
        return [r for r in self.requests if r.get("status") and 200 <= r["status"] < 300]

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    server = WebhookServer()
    yield server
    server.close()


class JsonWebhook:
    """The generic JSON webhook plugin of docs/writing_alert_plugins.md."""

    def __init__(self, url: str) -> None:
        self.url = url

    @cronhub.hookimpl
    def cronhub_alert(self, alert: Alert) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(alert.to_dict()).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Wait (real time) until ``check()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def settle(engine: Engine) -> None:
    """Let the engine and the delivery loop finish what is due now."""
    await engine.wait_idle()
    for _ in range(3):
        await engine.delivery.deliver_due()
        await asyncio.sleep(0.01)


def make_hub(plugin_manager, clock, **settings) -> Hub:
    return testing.make_hub(plugin_manager, clock, **{"instance_id": "alerts-a", **settings})


def kinds(server: WebhookServer) -> list[tuple[str, str]]:
    return [(r["body"]["kind"], r["body"]["job"]) for r in server.delivered()]


# -- when -------------------------------------------------------------------------------------
async def test_a_failure_streak_alerts_once_and_recovery_once_across_restarts(
    plugin_manager, clock, register_plugin, webhook
):
    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    hub = make_hub(plugin_manager, clock)
    outcome = {"fail": True}

    @hub.job(every="1m", name="flaky")
    def flaky():
        if outcome["fail"]:
            raise RuntimeError("upstream 503")

    engine = Engine(hub)
    await engine.start()
    for minute in (1, 2, 3):
        clock.set(f"2026-01-05T00:0{minute}:00+00:00")
        await settle(engine)
    await engine.stop()
    # A restart forgets everything in memory: the streak comes from storage.
    engine = Engine(hub)
    await engine.start()
    for minute in (4, 5):
        clock.set(f"2026-01-05T00:0{minute}:00+00:00")
        await settle(engine)
    statuses = [r.status for r in hub.storage.list_runs(cronhub.storage.RunFilter(job="flaky"))]
    assert statuses == ["failed"] * 5
    assert kinds(webhook) == [("failure", "flaky")]
    outcome["fail"] = False
    for minute in (6, 7):
        clock.set(f"2026-01-05T00:0{minute}:00+00:00")
        await settle(engine)
    await engine.stop()
    assert kinds(webhook) == [("failure", "flaky"), ("recovery", "flaky")]
    failure = webhook.delivered()[0]["body"]
    assert failure["error"] == "RuntimeError: upstream 503"
    assert failure["scheduled_for"] == "2026-01-05T00:01:00+00:00"
    assert failure["attempt"] == 1 and failure["duration_ms"] is not None
    assert hub.storage.pending_alerts(now=clock.now()) == []


async def test_a_timeout_alerts_once(plugin_manager, clock, register_plugin, webhook):
    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    hub = make_hub(plugin_manager, clock)

    @hub.job(every="1m", name="hangs", timeout=0.2)
    async def hangs():
        await asyncio.sleep(3600)

    engine = Engine(hub)
    await engine.start()
    clock.set("2026-01-05T00:01:00+00:00")
    await asyncio.sleep(0.3)
    await settle(engine)
    await engine.stop()
    assert kinds(webhook) == [("timeout", "hangs")]


async def test_a_dead_letter_alerts_once_after_the_failure(
    plugin_manager, clock, register_plugin, webhook
):
    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    hub = make_hub(plugin_manager, clock)

    @hub.job(every="1h", name="doomed", retries=2, retry_delay="10s")
    def doomed():
        raise ValueError("bad row")

    engine = Engine(hub)
    await engine.start()
    for second in (0, 10, 30, 40):
        clock.set(f"2026-01-05T01:00:{second:02d}+00:00")
        await settle(engine)
    await engine.stop()
    # Three failed attempts: the streak began (one alert), the last one is a dead letter.
    assert kinds(webhook) == [("failure", "doomed"), ("dead_letter", "doomed")]
    assert webhook.delivered()[1]["body"]["attempt"] == 3


async def test_a_crash_alerts_once(plugin_manager, clock, register_plugin, webhook):
    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    hub = make_hub(plugin_manager, clock, reaper_interval=5.0, lease_ttl=30.0)
    hub.job(lambda: None, every="1h", name="fragile")
    # A run claimed by an instance that then died (no heartbeat ever comes).
    hub.storage.claim(
        [ClaimRequest(job="fragile", scheduled_for=datetime(2026, 1, 5, tzinfo=UTC))],
        instance="dead-host:1:abc",
        now=clock.now(),
        lease_ttl=30.0,
    )
    engine = Engine(hub)
    await engine.start()
    start = datetime(2026, 1, 5, tzinfo=UTC)
    for second in range(5, 70, 5):
        clock.set(start + timedelta(seconds=second))
        await settle(engine)
    await engine.stop()
    assert kinds(webhook) == [("crash", "fragile")]
    assert "dead-host:1:abc" in webhook.delivered()[0]["body"]["error"]


async def test_a_3h_outage_alerts_once_per_job(plugin_manager, clock, register_plugin, webhook):
    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    hub = make_hub(plugin_manager, clock)
    hub.job(lambda: None, cron="0 * * * *", name="hourly")
    hub.job(lambda: None, cron="*/30 * * * *", name="halfhourly")
    engine = Engine(hub)
    await engine.start()
    for when in ("00:30", "01:00"):
        clock.set(f"2026-01-05T{when}:00+00:00")
        await settle(engine)
    await engine.stop()
    clock.set("2026-01-05T04:10:00+00:00")  # down from 01:00 to 04:10
    for name in ("b", "c"):  # two instances come back; the outage is still one alert per job
        restarted = Engine(hub, instance=name)
        await restarted.start()
        await settle(restarted)
        await restarted.stop()
    assert sorted(kinds(webhook)) == [("missed", "halfhourly"), ("missed", "hourly")]
    counts = {r["body"]["job"]: r["body"]["details"]["missed_count"] for r in webhook.delivered()}
    assert counts == {"hourly": 2, "halfhourly": 5}


# -- per-job options --------------------------------------------------------------------------
async def test_alerts_option_mutes_or_selects_kinds(
    plugin_manager, clock, register_plugin, webhook
):
    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    hub = make_hub(plugin_manager, clock)
    state = {"fail": True}

    def body():
        if state["fail"]:
            raise RuntimeError("no")

    hub.job(body, every="1m", name="muted", alerts=False)
    hub.job(body, every="1m", name="recovery_only", alerts=["recovery"])
    engine = Engine(hub)
    await engine.start()
    clock.set("2026-01-05T00:01:00+00:00")
    await settle(engine)
    state["fail"] = False
    clock.set("2026-01-05T00:02:00+00:00")
    await settle(engine)
    await engine.stop()
    assert kinds(webhook) == [("recovery", "recovery_only")]
    assert hub.jobs["muted"].options()["alerts"] == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [("failure", "'failure'"), (["failure", "page_me"], "'page_me'"), (1, "1")],
)
def test_a_bad_alerts_option_names_job_option_and_value(value, shown):
    with pytest.raises(JobDefinitionError) as info:
        cronhub.job(lambda: None, every=60, name="billing", alerts=value)
    message = str(info.value)
    assert "billing" in message and "alerts" in message and shown in message


# -- delivery ---------------------------------------------------------------------------------
async def test_a_raising_plugin_is_named_and_the_others_still_get_the_alert(
    plugin_manager, clock, register_plugin, webhook, caplog
):
    calls: list[str] = []

    class Boom:
        @cronhub.hookimpl
        def cronhub_alert(self, alert):
            calls.append(alert.kind)
            if len(calls) == 1:
                raise RuntimeError("pager down")

    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    register_plugin(Boom(), name="boom")
    hub = make_hub(plugin_manager, clock)
    hub.storage.add_alerts([Alert(kind="failure", job="j", message="m")], now=clock.now())
    delivery = AlertDelivery(hub, instance="a")
    with caplog.at_level(logging.ERROR, logger="cronhub.outbox"):
        assert await delivery.deliver_due() == 0
    assert calls == ["failure"] and kinds(webhook) == [("failure", "j")]
    [line] = [r.getMessage() for r in caplog.records if "pager down" in r.getMessage()]
    assert "plugin 'boom'" in line
    # Later, only the plugin that failed is asked again.
    clock.advance(5)
    assert await delivery.deliver_due() == 1
    assert calls == ["failure", "failure"] and kinds(webhook) == [("failure", "j")]
    assert hub.storage.pending_alerts(now=clock.now()) == []


async def test_a_webhook_down_for_a_minute_gets_the_alert_once_when_back(
    plugin_manager, clock, register_plugin, webhook
):
    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    hub = make_hub(plugin_manager, clock)
    webhook.default = (500, {})
    hub.storage.add_alerts([Alert(kind="crash", job="j", message="m")], now=clock.now())
    delivery = AlertDelivery(hub, instance="a")
    delivery.start()
    try:
        await eventually(lambda: webhook.requests)
        while clock.now() < datetime(2026, 1, 5, 0, 1, tzinfo=UTC):  # a minute of 500s
            clock.advance(1)
            await asyncio.sleep(0.01)
        tries_while_down = len(webhook.requests)
        webhook.default = (200, {})
        for _ in range(120):  # the next retry (backoff) lands within two minutes
            clock.advance(1)
            await asyncio.sleep(0.01)
            if webhook.delivered():
                break
        await eventually(lambda: webhook.delivered())
        clock.advance(3600)
        await asyncio.sleep(0.2)
    finally:
        await delivery.stop()
    assert 2 <= tries_while_down <= 6  # backoff, not a retry storm
    assert len(webhook.delivered()) == 1
    assert hub.storage.pending_alerts(now=clock.now()) == []


async def test_two_instances_never_send_the_same_alert(
    plugin_manager, clock, register_plugin, webhook
):
    register_plugin(JsonWebhook(webhook.url), name="json_webhook")
    hub = make_hub(plugin_manager, clock)
    alerts = [Alert(kind="failure", job=f"j{i}", message="m") for i in range(10)]
    hub.storage.add_alerts(alerts, now=clock.now())
    first, second = AlertDelivery(hub, instance="a"), AlertDelivery(hub, instance="b")
    sent = await asyncio.gather(first.deliver_due(), second.deliver_due())
    assert sum(sent) == 10
    assert sorted(job for _, job in kinds(webhook)) == sorted(a.job for a in alerts)


SCRIPT = """
import asyncio, json, os, sys, urllib.request
import cronhub
from cronhub.engine import Engine
from cronhub.hub import Hub
from cronhub.plugins import get_plugin_manager

class Webhook:
    @cronhub.hookimpl
    def cronhub_alert(self, alert):
        request = urllib.request.Request(
            os.environ["WEBHOOK"], data=json.dumps(alert.to_dict()).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=60).read()

import cronhub_storage_sqlite.plugin

pm = get_plugin_manager(entrypoints=False)
pm.register(cronhub_storage_sqlite.plugin, name="storage_sqlite")
pm.register(Webhook(), name="webhook")
hub = Hub(storage=sys.argv[1], plugin_manager=pm)
if os.environ.get("WITH_JOB"):
    @hub.job(every="1h", name="nightly", run_on_startup=True)
    def nightly():
        raise RuntimeError("disk full")

async def main():
    engine = Engine(hub)
    await engine.start()
    print("started", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_killed_between_the_state_change_and_the_send_delivers_once_after_restart(
    tmp_path, webhook
):
    script = tmp_path / "instance.py"
    script.write_text(textwrap.dedent(SCRIPT))
    db = f"sqlite:///{tmp_path / 'cronhub.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CRONHUB_")},
        "WEBHOOK": webhook.url,
        "CRONHUB_ALERTS_LEASE": "1",
        "CRONHUB_INSTANCE_ID": "first",
    }
    # The first instance records the failure (and its alert) and starts sending: the webhook
    # hangs, and the process is killed with SIGKILL mid-send.
    webhook.script = ["hang"]
    first = subprocess.Popen(
        [sys.executable, str(script), db], env={**env, "WITH_JOB": "1"}, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 60
        while not webhook.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert webhook.requests, "the first instance never tried to send"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    webhook.release.set()
    assert webhook.delivered() == []
    second = subprocess.Popen(
        [sys.executable, str(script), db], env={**env, "CRONHUB_INSTANCE_ID": "second"}
    )
    try:
        deadline = time.monotonic() + 60
        while not webhook.delivered() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # longer than the lease: a second send would show up
    finally:
        second.terminate()
        second.wait(30)
    [sent] = webhook.delivered()
    assert (sent["body"]["kind"], sent["body"]["job"]) == ("failure", "nightly")
    import sqlite3

    with sqlite3.connect(tmp_path / "cronhub.db") as conn:
        assert conn.execute("select count(*) from cronhub_outbox").fetchone() == (0,)
