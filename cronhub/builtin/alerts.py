"""Default alert delivery: every alert is written to the ``cronhub.alerts`` logger."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cronhub.plugins import hookimpl

if TYPE_CHECKING:
    from cronhub.runs import Alert

log = logging.getLogger("cronhub.alerts")


@hookimpl(trylast=True)
def cronhub_alert(alert: Alert) -> None:
    level = logging.INFO if alert.kind == "recovery" else logging.WARNING
    log.log(level, "[%s] %s: %s", alert.kind, alert.job, alert.message)
