"""cronhub-notify-slack: cronhub alerts as Slack Block Kit messages via an incoming webhook."""

from __future__ import annotations

from cronhub_notify_slack.slack import SlackError, SlackNotifier, build_message, mask_webhook

__version__ = "0.1.0"

__all__ = ["SlackError", "SlackNotifier", "__version__", "build_message", "mask_webhook"]
