"""Demo jobs for cronhub: a heartbeat, a job that fails now and then, a slow job."""

from __future__ import annotations

import random
import time

import cronhub


@cronhub.job(name="acme.heartbeat", every="10s", tags=["demo"])
def heartbeat(ctx: cronhub.RunContext) -> None:
    """Log that the scheduler is alive."""
    ctx.log.info("alive (attempt %s, slot %s)", ctx.attempt, ctx.scheduled_for)


@cronhub.job(
    name="acme.flaky",
    cron="* * * * *",
    retries=2,
    retry_delay="5s",
    tags=["demo"],
)
def flaky(ctx: cronhub.RunContext) -> None:
    """Fail about one time in three, to show retries, alerts and dead letters."""
    if random.random() < 1 / 3:
        raise RuntimeError("the upstream service answered 503")
    ctx.log.info("synced")


@cronhub.job(name="acme.slow", cron="*/5 * * * *", timeout="30s", tags=["demo"])
def slow(ctx: cronhub.RunContext) -> None:
    """Work for up to 90 s; the 30 s timeout ends it first."""
    for second in range(90):
        if ctx.cancelled:
            ctx.log.warning("stopping after %s s: cancelled", second)
            return
        time.sleep(1)
