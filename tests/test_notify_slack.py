"""The Slack plugin against a loopback webhook: messages, 429, timeouts, masking, the CLI."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from cronhub_notify_slack import SlackError, SlackNotifier, build_message, mask_webhook
from cronhub_notify_slack import plugin as slack_plugin
from test_alerts import WebhookServer, eventually, make_hub

import cronhub
from cronhub.config import load_settings
from cronhub.engine import Engine
from cronhub.outbox import AlertDelivery
from cronhub.runs import Alert

SECRET = "T0SECRET/B0SECRET/xoxsecretpathdonotleak"


@pytest.fixture
def webhook():
    server = WebhookServer()
    yield server
    server.close()


@pytest.fixture
def slack(webhook, monkeypatch, register_plugin):
    """The plugin, registered, configured with a webhook URL holding :data:`SECRET`."""
    monkeypatch.setenv("CRONHUB_SLACK_WEBHOOK_URL", f"{webhook.url}/services/{SECRET}")
    monkeypatch.setenv("CRONHUB_SLACK_TIMEOUT", "0.5")
    monkeypatch.setenv("CRONHUB_SLACK_BASE_URL", "https://cron.example.com/cronhub/")
    monkeypatch.setattr(slack_plugin, "_state", slack_plugin._State())
    register_plugin(slack_plugin, name="notify_slack")
    return slack_plugin


def alert(**changes):
    values = {
        "kind": "failure",
        "job": "billing.invoices",
        "message": "the job started failing",
        "run_id": 42,
        "status": "failed",
        "attempt": 2,
        "scheduled_for": datetime(2026, 3, 1, 1, 0, tzinfo=UTC),
        "error": "RuntimeError: upstream 503",
        "duration_ms": 1530,
        "details": {"tz": "Europe/Berlin"},
    }
    values.update(changes)
    return Alert(**values)


def text_of(message):
    parts = [message["text"]]
    for block in message["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts.extend(f["text"] for f in block.get("fields", []))
        parts.extend(e["text"] for e in block.get("elements", []))
    return "\n".join(parts)


def test_block_kit_message_has_what_a_person_needs():
    message = build_message(alert(), "https://cron.example.com/cronhub/")
    text = text_of(message)
    assert message["blocks"][0]["type"] == "header"
    assert "billing.invoices" in message["blocks"][0]["text"]["text"]
    for expected in (
        "the job started failing",
        "RuntimeError: upstream 503",
        "*Attempt*\n2",
        "1.5 s",
        "2026-03-01 02:00:00 CET",  # the slot in the job's zone
        "<https://cron.example.com/cronhub/runs/42|Run 42>",
    ):
        assert expected in text
    assert "runs/42" not in text_of(build_message(alert()))  # no base_url: no link
    missed = text_of(build_message(alert(kind="missed", details={"missed_count": 3})))
    assert "*Missed slots*\n3" in missed


async def test_an_engine_failure_reaches_slack_once_with_the_run_link(
    plugin_manager, clock, slack, webhook
):
    hub = make_hub(plugin_manager, clock)

    @hub.job(every="1m", name="report", tz="America/New_York")
    def report():
        raise RuntimeError("boom")

    engine = Engine(hub)
    await engine.start()
    for minute in (1, 2, 3):
        clock.set(f"2026-01-05T00:0{minute}:00+00:00")
        await engine.wait_idle()
        await engine.delivery.deliver_due()
    await engine.stop()
    [sent] = webhook.delivered()
    assert sent["path"] == f"/services/{SECRET}"
    text = text_of(sent["body"])
    assert "2026-01-04 19:01:00 EST" in text and "RuntimeError: boom" in text
    assert "https://cron.example.com/cronhub/runs/1|Run 1" in text


async def test_429_then_200_delivers_once_after_retry_after(
    plugin_manager, clock, slack, webhook, caplog
):
    hub = make_hub(plugin_manager, clock)
    webhook.script = [(429, {"Retry-After": "30"})]
    hub.storage.add_alerts([alert()], now=clock.now())
    delivery = AlertDelivery(hub, instance="a")
    with caplog.at_level(logging.DEBUG):
        assert await delivery.deliver_due() == 0
        clock.advance(29)
        assert await delivery.deliver_due() == 0  # not before Retry-After
        assert len(webhook.requests) == 1
        clock.advance(1)
        assert await delivery.deliver_due() == 1
    assert [r["status"] for r in webhook.requests] == [429, 200]
    assert "rate limited (429)" in caplog.text
    assert SECRET not in caplog.text


async def test_a_hanging_webhook_times_out_and_is_retried(
    plugin_manager, clock, slack, webhook, caplog
):
    hub = make_hub(plugin_manager, clock)
    webhook.script = ["hang"]
    hub.storage.add_alerts([alert(kind="timeout")], now=clock.now())
    delivery = AlertDelivery(hub, instance="a")
    with caplog.at_level(logging.DEBUG):
        assert await delivery.deliver_due() == 0
        clock.advance(5)
        assert await delivery.deliver_due() == 1
    assert "did not answer in 0.5s" in caplog.text
    assert len(webhook.delivered()) == 1
    assert SECRET not in caplog.text


async def test_a_500_and_an_unreachable_webhook_never_show_the_secret(caplog, webhook):
    webhook.default = (500, {})
    notifiers = [
        SlackNotifier(f"{webhook.url}/services/{SECRET}"),
        SlackNotifier(f"http://127.0.0.1:9/services/{SECRET}", timeout=2),
    ]
    for notifier in notifiers:
        with pytest.raises(SlackError) as info:
            await asyncio.to_thread(notifier.notify, alert())
        shown = f"{info.value} {info.value!r} {notifier!r} {info.value.__cause__}"
        assert SECRET not in shown and "/***" in shown
        assert info.value.__suppress_context__
    assert mask_webhook(f"https://hooks.slack.com/services/{SECRET}") == (
        "https://hooks.slack.com/***"
    )


def test_without_a_webhook_the_plugin_is_idle_and_says_so_once(caplog, monkeypatch):
    monkeypatch.setattr(slack_plugin, "_state", slack_plugin._State())
    settings = load_settings({}, cwd="/", environ={})
    with caplog.at_level(logging.INFO, logger="cronhub.slack"):
        assert slack_plugin.configure(settings) is None
        assert slack_plugin.configure(settings) is None
        slack_plugin.cronhub_alert(alert())  # nothing to send to: no error
    assert [r.getMessage() for r in caplog.records].count(
        "slack: no webhook_url ([tool.cronhub.slack] or CRONHUB_SLACK_WEBHOOK_URL): idle"
    ) == 1


def test_the_webhook_url_can_come_from_the_settings_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.cronhub.slack]\nwebhook_url = "https://hooks.slack.com/services/X/Y/Z"\n'
    )
    notifier = slack_plugin.notifier_from(load_settings({}, cwd=tmp_path, environ={}))
    assert notifier is not None and notifier.masked_url == "https://hooks.slack.com/***"


def test_cronhub_slack_test_sends_a_message_and_masks_the_url(run_cli, webhook):
    url = f"{webhook.url}/services/{SECRET}"
    result = run_cli("slack", "test", env={"CRONHUB_SLACK_WEBHOOK_URL": url})
    assert result.code == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert f"{webhook.url}/***" in result.stdout
    [sent] = webhook.delivered()
    assert sent["body"]["blocks"][0]["type"] == "header"
    webhook.default = (500, {})
    failed = run_cli("slack", "test", env={"CRONHUB_SLACK_WEBHOOK_URL": url})
    assert failed.code == 1 and "HTTP 500" in failed.stderr
    assert SECRET not in failed.stdout + failed.stderr
    missing = run_cli("slack", "test")
    assert missing.code == 2 and "CRONHUB_SLACK_WEBHOOK_URL" in missing.stderr
    for args in (["plugins", "--json"], ["check"], ["list", "--json"]):
        shown = run_cli(*args, env={"CRONHUB_SLACK_WEBHOOK_URL": url})
        assert SECRET not in shown.stdout + shown.stderr


async def test_the_secret_is_absent_from_every_log_line_of_a_failing_day(
    plugin_manager, clock, slack, webhook, caplog
):
    hub = make_hub(plugin_manager, clock)
    webhook.script = [(500, {}), (429, {"Retry-After": "1"}), "hang"]
    hub.job(lambda: 1 / 0, every="1m", name="divides")
    engine = Engine(hub)
    with caplog.at_level(logging.DEBUG):
        await engine.start()
        clock.set("2026-01-05T00:01:00+00:00")
        await engine.wait_idle()
        start = clock.now()
        while not webhook.delivered() and clock.now() < start + timedelta(minutes=10):
            clock.advance(1)
            await asyncio.sleep(0.01)
        await eventually(webhook.delivered)
        await engine.stop()
    assert len(webhook.delivered()) == 1 and len(webhook.requests) == 4
    assert caplog.records and all(SECRET not in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text


def test_the_plugin_is_installed_through_its_entry_point(run_cli):
    result = run_cli("plugins", "--json")
    [entry] = [p for p in result.json() if p["name"] == "notify_slack"]
    assert entry["distribution"] == "cronhub-notify-slack"
    assert {"cronhub_alert", "cronhub_cli", "cronhub_startup"} <= set(entry["hooks"])


def test_a_job_can_mute_slack_alerts_with_the_core_option():
    muted = cronhub.job(lambda: None, every=60, name="noisy", alerts=False)
    assert muted.alerts == ()


async def test_the_webhook_url_never_appears_in_the_api_or_the_dashboard(
    plugin_manager, clock, slack, webhook
):
    import httpx

    from cronhub.engine import run_job_once

    hub = make_hub(plugin_manager, clock)

    @hub.job(every="1h", name="report")
    def report():
        raise RuntimeError("boom")

    run = await run_job_once(hub, "report")
    app = hub.asgi(scheduler=False)
    paths = ["/", "/plugins", "/jobs/report", f"/runs/{run.id}", "/dead-letters"]
    paths += ["/api/jobs", "/api/jobs/report", f"/api/runs/{run.id}", "/api/runs"]
    paths += ["/api/plugins", "/api/stats", "/api/instances", "/api/openapi.json", "/metrics"]
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
            ) as client,
        ):
            for path in paths:
                response = await client.get(path)
                assert response.status_code == 200, path
                assert SECRET not in response.text, path
                assert "services/" not in response.text, path
            plugins = (await client.get("/api/plugins")).json()
        assert "notify_slack" in str(plugins)  # the plugin is there, its secret is not
    finally:
        hub.close()
