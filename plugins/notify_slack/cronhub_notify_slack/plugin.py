"""The plugin: settings at startup, ``cronhub_alert`` posts, the ``cronhub slack`` command."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from cronhub.config import Settings, load_settings
from cronhub.plugins import hookimpl
from cronhub.runs import Alert
from cronhub_notify_slack.slack import DEFAULT_TIMEOUT, SlackError, SlackNotifier

if TYPE_CHECKING:
    from cronhub.hub import Hub

log = logging.getLogger("cronhub.slack")


class _State:
    """The notifier configured at startup (or on first use), and whether "idle" was said."""

    notifier: SlackNotifier | None = None
    configured = False
    said_idle = False


_state = _State()


def notifier_from(settings: Settings) -> SlackNotifier | None:
    """The notifier ``[tool.cronhub.slack]`` / ``CRONHUB_SLACK_*`` describe, or ``None``."""
    table = settings.section("slack")
    url = str(table.get("webhook_url") or "").strip()
    if not url:
        return None
    base_url = table.get("base_url") or settings.get("base_url")
    timeout = float(table.get("timeout") or DEFAULT_TIMEOUT)
    return SlackNotifier(url, base_url=str(base_url) if base_url else None, timeout=timeout)


def configure(settings: Settings) -> SlackNotifier | None:
    """(Re)read the settings; say once when there is no webhook."""
    _state.notifier = notifier_from(settings)
    _state.configured = True
    if _state.notifier is None and not _state.said_idle:
        _state.said_idle = True
        log.info("slack: no webhook_url ([tool.cronhub.slack] or CRONHUB_SLACK_WEBHOOK_URL): idle")
    elif _state.notifier is not None:
        log.info("slack: alerts go to %s", _state.notifier.masked_url)
    return _state.notifier


@hookimpl
def cronhub_startup(hub: Hub) -> None:
    configure(hub.settings)


@hookimpl
def cronhub_alert(alert: Alert) -> None:
    if not _state.configured:
        configure(load_settings())
    if _state.notifier is not None:
        _state.notifier.notify(alert)


@hookimpl
def cronhub_cli(app: typer.Typer) -> None:
    slack = typer.Typer(help="Slack alerts (cronhub-notify-slack).", no_args_is_help=True)

    @slack.command("test")
    def test() -> None:
        """Send a test message to the configured Slack webhook."""
        notifier = notifier_from(load_settings())
        if notifier is None:
            typer.echo(
                "error: no Slack webhook: set [tool.cronhub.slack] webhook_url "
                "or CRONHUB_SLACK_WEBHOOK_URL",
                err=True,
            )
            raise typer.Exit(2)
        alert = Alert(
            kind="test",
            job="cronhub",
            message="cronhub can reach this channel",
            created_at=datetime.now(UTC),
        )
        try:
            notifier.notify(alert)
        except SlackError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"sent a test message to {notifier.masked_url}")

    app.add_typer(slack, name="slack")
