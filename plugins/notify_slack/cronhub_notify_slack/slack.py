"""The Slack client: Block Kit messages from alerts, posted to an incoming webhook.

The webhook URL is a secret (whoever has it can post to the channel): it is kept in
:class:`SlackNotifier` only, and every message this module logs or raises shows
:func:`mask_webhook` of it at most.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronhub.outbox import RetryAlert
from cronhub.runs import Alert

#: Title and emoji of each alert kind.
TITLES: dict[str, tuple[str, str]] = {
    "failure": (":red_circle:", "started failing"),
    "recovery": (":large_green_circle:", "recovered"),
    "crash": (":boom:", "crashed"),
    "timeout": (":hourglass:", "timed out"),
    "dead_letter": (":skull:", "dead letter (retries exhausted)"),
    "missed": (":warning:", "missed slots"),
    "test": (":wave:", "test message"),
}
DEFAULT_TIMEOUT = 10.0


class SlackError(RetryAlert):
    """Slack did not take the message (the text never contains the webhook URL)."""


def mask_webhook(url: str) -> str:
    """``https://hooks.slack.com/***``: the host only, safe to print or log."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme or 'https'}://{host}/***"


def _when(value: datetime | None, tz: str | None) -> str:
    if value is None:
        return "manual run"
    try:
        zone = ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _duration(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def build_message(alert: Alert, base_url: str | None = None) -> dict[str, Any]:
    """The Block Kit payload of ``alert`` (``text`` is the notification fallback)."""
    emoji, title = TITLES.get(alert.kind, (":bell:", alert.kind))
    headline = f"{emoji} {alert.job}: {title}"
    fields = [
        f"*Job*\n`{alert.job}`",
        f"*What happened*\n{alert.message}",
        f"*Attempt*\n{alert.attempt if alert.attempt is not None else '-'}",
        f"*Duration*\n{_duration(alert.duration_ms)}",
        f"*Scheduled*\n{_when(alert.scheduled_for, alert.details.get('tz'))}",
    ]
    if alert.kind == "missed":
        fields.append(f"*Missed slots*\n{alert.details.get('missed_count', 1)}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": text} for text in fields],
        },
    ]
    if alert.error:
        error = alert.error if len(alert.error) < 2900 else alert.error[:2900] + "…"
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{error}```"}}
        )
    if base_url and alert.run_id is not None:
        link = f"{base_url.rstrip('/')}/runs/{alert.run_id}"
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{link}|Run {alert.run_id}>"}],
            }
        )
    return {"text": f"{alert.job}: {title}: {alert.message}", "blocks": blocks}


class SlackNotifier:
    """Posts Block Kit messages to one incoming webhook.

    :param webhook_url: The incoming webhook (a secret).
    :param base_url: Where the dashboard is served; adds a link to each run.
    :param timeout: Seconds for one HTTP request.
    """

    def __init__(
        self, webhook_url: str, *, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if urlsplit(webhook_url).scheme not in ("http", "https"):
            raise ValueError(f"slack.webhook_url {mask_webhook(webhook_url)} is not an http(s) URL")
        self._url = webhook_url
        self.base_url = base_url
        self.timeout = timeout

    @property
    def masked_url(self) -> str:
        """The webhook URL without its secret path."""
        return mask_webhook(self._url)

    def __repr__(self) -> str:
        return f"SlackNotifier({self.masked_url})"

    def notify(self, alert: Alert) -> None:
        """Send ``alert``; raise :class:`SlackError` (with ``retry_after`` on 429) on failure."""
        self.post(build_message(alert, self.base_url))

    def post(self, payload: dict[str, Any]) -> None:
        """POST ``payload`` to the webhook (blocking)."""
        body = json.dumps(payload).encode()
        request = urllib.request.Request(
            self._url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        where = self.masked_url
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            # ``from None``: the original exception carries the full URL.
            retry_after = _retry_after(exc.headers.get("Retry-After")) if exc.headers else None
            if exc.code == 429:
                raise SlackError(
                    f"Slack webhook {where} rate limited (429); retry after {retry_after or '?'}s",
                    retry_after=retry_after,
                ) from None
            raise SlackError(f"Slack webhook {where} answered HTTP {exc.code}") from None
        except TimeoutError:
            raise SlackError(f"Slack webhook {where} did not answer in {self.timeout:g}s") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SlackError(f"Slack webhook {where} unreachable: {reason}") from None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
