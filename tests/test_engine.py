"""The engine on a fake clock: slots, retries, overlap, catch-up, pause, jitter, DST, leases."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

import cronhub
from cronhub.clock import SystemClock
from cronhub.engine import Engine
from cronhub.errors import JobDefinitionError
from cronhub.faults import FaultyStorage
from cronhub.runner import StartGate
from cronhub.runs import RunStatus
from cronhub.schedules import jitter_delay
from cronhub.storage import RunFilter
from cronhub.testing import FakeClock, advance_to, make_hub

START = "2026-01-05T00:00:00+00:00"


@pytest.fixture
def ehub(plugin_manager, clock):
    hub = make_hub(plugin_manager, clock)
    yield hub
    hub.close()


def runs(hub, **filters):
    return list(reversed(hub.storage.list_runs(RunFilter(limit=1000, **filters))))


async def test_every_slot_runs_once_and_hooks_fire(ehub, clock, register_plugin):
    seen = []

    class Recorder:
        @cronhub.hookimpl
        def cronhub_run_started(self, run):
            seen.append(("started", run.job, run.status))

        @cronhub.hookimpl
        async def cronhub_run_finished(self, run):
            seen.append(("finished", run.job, run.status))

        @cronhub.hookimpl
        def cronhub_startup(self, hub):
            seen.append(("startup", len(hub.jobs)))

        @cronhub.hookimpl
        def cronhub_shutdown(self, hub):
            seen.append(("shutdown",))

    register_plugin(Recorder(), name="recorder")

    @ehub.job(every="1m", name="tick")
    def tick(ctx):
        ctx.log.info("tick at %s", ctx.scheduled_for.isoformat())

    engine = Engine(ehub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:03:00+00:00")
    await engine.stop()
    history = runs(ehub, job="tick")
    assert [r.scheduled_for.isoformat() for r in history] == [
        "2026-01-05T00:01:00+00:00",
        "2026-01-05T00:02:00+00:00",
        "2026-01-05T00:03:00+00:00",
    ]
    assert {r.status for r in history} == {RunStatus.SUCCEEDED}
    detail = ehub.storage.get_run(history[0].id)
    assert "tick at 2026-01-05T00:01:00+00:00" in detail.log
    assert seen[0] == ("startup", 1) and seen[-1] == ("shutdown",)
    assert seen.count(("started", "tick", RunStatus.RUNNING)) == 3
    assert seen.count(("finished", "tick", RunStatus.SUCCEEDED)) == 3


async def test_retries_with_backoff_then_dead_letter(ehub, clock):
    @ehub.job(every="1h", name="flaky", retries=2, retry_delay="10s", backoff=3.0)
    def flaky():
        raise RuntimeError("upstream 503")

    engine = Engine(ehub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T01:02:00+00:00")
    await engine.stop()
    history = runs(ehub, job="flaky")
    slot = datetime(2026, 1, 5, 1, tzinfo=UTC)
    assert [(r.attempt, r.trigger, r.status) for r in history] == [
        (1, "schedule", "failed"),
        (2, "retry", "failed"),
        (3, "retry", "failed"),
    ]
    assert [r.started_at - slot for r in history] == [
        timedelta(0),
        timedelta(seconds=10),
        timedelta(seconds=40),
    ]
    assert all(r.scheduled_for == slot for r in history)
    assert [r.dead_letter for r in history] == [False, False, True]
    assert history[0].error == {"type": "RuntimeError", "message": "upstream 503"}
    assert [r.id for r in ehub.storage.dead_letters()] == [history[-1].id]


async def test_timeout_and_bad_jobs_never_stop_the_scheduler(ehub, clock):
    @ehub.job(every="1m", name="hangs", timeout=0.2)
    async def hangs():
        await asyncio.sleep(3600)

    @ehub.job(every="1m", name="exits")
    def exits():
        raise SystemExit(3)

    @ehub.job(every="1m", name="ok")
    def ok():
        pass

    engine = Engine(ehub)
    await engine.start()
    for minute in (1, 2):
        clock.set(f"2026-01-05T00:0{minute}:00+00:00")
        await asyncio.sleep(0.4)
        await engine.wait_idle()
    await engine.stop()
    assert [r.status for r in runs(ehub, job="hangs")] == ["timed_out", "timed_out"]
    assert runs(ehub, job="hangs")[0].error["type"] == "TimeoutError"
    assert [r.status for r in runs(ehub, job="exits")] == ["failed", "failed"]
    assert [r.status for r in runs(ehub, job="ok")] == ["succeeded", "succeeded"]


async def test_a_jobs_own_timeout_error_is_a_failure_not_a_timeout(ehub, clock):
    # A socket's or a client's TimeoutError inside the job: the run failed, with that error,
    # whether or not the job has a timeout of its own.
    @ehub.job(every="1m", name="no_limit")
    async def no_limit():
        raise TimeoutError("upstream did not answer")

    @ehub.job(every="1m", name="with_limit", timeout=30)
    async def with_limit():
        raise TimeoutError("upstream did not answer")

    @ehub.job(every="1m", name="in_a_thread", timeout=30)
    def in_a_thread():
        raise TimeoutError("upstream did not answer")

    engine = Engine(ehub)
    await engine.start()
    clock.set("2026-01-05T00:01:00+00:00")
    await asyncio.sleep(0.1)
    await engine.wait_idle()
    await engine.stop()
    for name in ("no_limit", "with_limit", "in_a_thread"):
        (run,) = runs(ehub, job=name)
        assert run.status == "failed", name
        assert run.error == {"type": "TimeoutError", "message": "upstream did not answer"}


async def test_overlap_skip_records_skipped_slots(ehub, clock):
    release = threading.Event()

    @ehub.job(every="1m", name="slow", overlap="skip")
    def slow(ctx):
        release.wait(10)

    engine = Engine(ehub)
    await engine.start()
    clock.set("2026-01-05T00:01:00+00:00")
    await asyncio.sleep(0.05)
    clock.set("2026-01-05T00:02:00+00:00")
    await asyncio.sleep(0.1)
    release.set()
    await engine.wait_idle()
    await engine.stop()
    assert [(r.scheduled_for.minute, r.status) for r in runs(ehub, job="slow")] == [
        (1, "succeeded"),
        (2, "skipped"),
    ]


async def test_overlap_queue_runs_the_waiting_slot_after(ehub, clock):
    release = threading.Event()

    @ehub.job(every="1m", name="queued", overlap="queue")
    def queued(ctx):
        if ctx.scheduled_for.minute == 1:
            release.wait(10)

    engine = Engine(ehub)
    await engine.start()
    clock.set("2026-01-05T00:01:00+00:00")
    await asyncio.sleep(0.05)
    clock.set("2026-01-05T00:02:00+00:00")
    await asyncio.sleep(0.1)
    assert [r.status for r in runs(ehub, job="queued")] == ["running", "queued"]
    release.set()
    await asyncio.sleep(0.1)
    await advance_to(engine, clock, "2026-01-05T00:02:01+00:00")
    await engine.stop()
    assert [(r.scheduled_for.minute, r.status) for r in runs(ehub, job="queued")] == [
        (1, "succeeded"),
        (2, "succeeded"),
    ]


async def test_overlap_replace_cancels_the_old_run(ehub, clock):
    @ehub.job(every="1m", name="replaced", overlap="replace")
    async def replaced(ctx):
        if ctx.scheduled_for.minute == 1:
            await asyncio.sleep(3600)

    engine = Engine(ehub)
    await engine.start()
    clock.set("2026-01-05T00:01:00+00:00")
    await asyncio.sleep(0.05)
    clock.set("2026-01-05T00:02:00+00:00")
    await asyncio.sleep(0.1)
    await engine.wait_idle()
    await engine.stop()
    assert [(r.scheduled_for.minute, r.status) for r in runs(ehub, job="replaced")] == [
        (1, "cancelled"),
        (2, "succeeded"),
    ]


async def test_overlap_allow_runs_side_by_side(ehub, clock):
    release = threading.Event()

    @ehub.job(every="1m", name="parallel", overlap="allow")
    def parallel():
        release.wait(10)

    engine = Engine(ehub)
    await engine.start()
    clock.set("2026-01-05T00:01:00+00:00")
    await asyncio.sleep(0.05)
    clock.set("2026-01-05T00:02:00+00:00")
    await asyncio.sleep(0.1)
    assert [r.status for r in runs(ehub, job="parallel")] == ["running", "running"]
    release.set()
    await engine.wait_idle()
    await engine.stop()


@pytest.mark.parametrize(
    ("policy", "caught_up", "missed"),
    [
        ("latest", ["04:00"], ("02:00", 2)),
        ("all", ["03:00", "04:00"], ("02:00", 1)),
        ("none", [], ("02:00", 3)),
    ],
)
async def test_catch_up_after_a_3h_outage(plugin_manager, clock, policy, caught_up, missed):
    hub = make_hub(plugin_manager, clock)
    hub.job(lambda: None, cron="0 * * * *", name="hourly", catch_up=policy, catch_up_limit=2)
    engine = Engine(hub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T01:00:00+00:00")
    await engine.stop()
    clock.set("2026-01-05T04:30:00+00:00")  # down from 01:00 to 04:30
    restarted = Engine(hub)
    await restarted.start()
    await restarted.wait_idle()
    await restarted.stop()
    history = runs(hub, job="hourly")
    hhmm = lambda r: r.scheduled_for.strftime("%H:%M")  # noqa: E731
    assert [(hhmm(r), r.trigger, r.status) for r in history[:1]] == [
        ("01:00", "schedule", "succeeded")
    ]
    assert [
        hhmm(r) for r in history if r.trigger == "catch_up" and r.status == "succeeded"
    ] == caught_up
    [record] = [r for r in history if r.status == "missed"]
    assert (hhmm(record), record.missed_count) == missed
    assert len(history) == 1 + len(caught_up) + 1


async def test_slots_older_than_the_window_are_summarised_not_enumerated(plugin_manager, clock):
    hub = make_hub(plugin_manager, clock)
    hub.job(lambda: None, every="1s", name="busy", catch_up="latest", catch_up_window="1h")
    engine = Engine(hub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:00:01+00:00")
    await engine.stop()
    clock.set("2026-01-12T00:00:00.5+00:00")  # a week later: 604,799 slots late
    restarted = Engine(hub)
    await restarted.start()
    await restarted.wait_idle()
    await restarted.stop()
    history = runs(hub, job="busy")
    [record] = [r for r in history if r.status == "missed"]
    caught = [r for r in history if r.trigger == "catch_up"]
    now = clock.now()  # a slot less than claim_ahead away may be claimed too: not counted
    on_time = [
        r
        for r in history[1:]
        if r.trigger == "schedule" and r.status != "missed" and r.scheduled_for <= now
    ]
    assert record.missed_count + len(caught) + len(on_time) == 7 * 86400 - 1
    assert record.scheduled_for.isoformat() == "2026-01-05T00:00:02+00:00"


async def test_pause_is_persistent_and_paused_time_is_not_caught_up(ehub, clock):
    @ehub.job(every="1m", name="pausable")
    def pausable():
        pass

    engine = Engine(ehub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:01:00+00:00")
    await engine.set_paused("pausable", True)
    await advance_to(engine, clock, "2026-01-05T00:30:00+00:00")
    assert ehub.storage.job_states(["pausable"])["pausable"].paused is True
    await engine.set_paused("pausable", False)
    await advance_to(engine, clock, "2026-01-05T00:31:00+00:00")
    await engine.stop()
    assert [r.scheduled_for.minute for r in runs(ehub, job="pausable")] == [1, 31]


async def test_run_now_and_run_on_startup(ehub, clock):
    @ehub.job(cron="0 0 1 1 *", name="yearly", run_on_startup=True)
    def yearly(ctx):
        ctx.log.info("trigger params %s", ctx.params)

    clock.advance(17)  # 00:00:17: the startup slot is the start minute
    engine = Engine(ehub)
    await engine.start()
    await engine.wait_idle()
    queued = await engine.run_now("yearly")
    await advance_to(engine, clock, clock.now() + timedelta(seconds=1))
    await engine.stop()
    history = runs(ehub, job="yearly")
    assert [(r.trigger, r.status) for r in history] == [
        ("startup", "succeeded"),
        ("manual", "succeeded"),
    ]
    assert history[0].scheduled_for.isoformat() == "2026-01-05T00:00:00+00:00"
    assert history[1].id == queued.id and history[1].scheduled_for is None


async def test_two_instances_start_together_run_startup_once(plugin_manager, clock):
    hub_a = make_hub(plugin_manager, clock)
    hub_b = make_hub(plugin_manager, clock, storage=hub_a.storage, instance_id="engine-b")
    for hub in (hub_a, hub_b):
        hub.job(lambda: None, cron="0 0 1 1 *", name="once", run_on_startup=True)
    a, b = Engine(hub_a), Engine(hub_b)
    await asyncio.gather(a.start(), b.start())
    await a.wait_idle()
    await b.wait_idle()
    await asyncio.gather(a.stop(), b.stop())
    assert len(runs(hub_a, job="once")) == 1


def test_jitter_is_the_same_everywhere_and_below_the_interval():
    slot = datetime(2026, 1, 5, 10, tzinfo=UTC)
    first = jitter_delay("billing.sync", slot, 30.0)
    assert first == jitter_delay("billing.sync", slot, 30.0)
    assert 0 <= first < 30
    assert first != jitter_delay("billing.sync", slot + timedelta(minutes=1), 30.0)
    assert jitter_delay("x", slot, 30.0, timedelta(seconds=5)) < 5


async def test_jitter_delays_the_start_not_the_slot(ehub, clock):
    @ehub.job(every="1h", name="jittery", jitter=600)
    def jittery():
        pass

    engine = Engine(ehub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T01:30:00+00:00")
    await engine.stop()
    [run] = runs(ehub, job="jittery")
    slot = datetime(2026, 1, 5, 1, tzinfo=UTC)
    assert run.scheduled_for == slot
    expected = jitter_delay("jittery", slot, 600.0, timedelta(hours=1))
    assert run.started_at == slot + timedelta(seconds=expected)


async def test_dst_end_to_end_new_york(plugin_manager):
    clock = FakeClock("2026-10-31T12:00:00-04:00")
    hub = make_hub(plugin_manager, clock)
    hub.job(lambda: None, cron="30 1 * * *", tz="America/New_York", name="fixed")
    hub.job(lambda: None, cron="0 * * * *", tz="America/New_York", name="hourly")
    engine = Engine(hub)
    await engine.start()
    await advance_to(engine, clock, "2026-11-01T04:00:00-05:00")
    await engine.stop()
    fixed = [r.scheduled_for for r in runs(hub, job="fixed")]
    assert fixed == [
        datetime.fromisoformat("2026-11-01T01:30:00-04:00"),
    ]
    hourly = [
        r.scheduled_for.astimezone(hub.jobs["hourly"].tz).isoformat()
        for r in runs(hub, job="hourly")
    ]
    assert hourly[-6:] == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
        "2026-11-01T04:00:00-05:00",
    ]


async def test_dst_spring_forward_new_york(plugin_manager):
    clock = FakeClock("2026-03-07T12:00:00-05:00")
    hub = make_hub(plugin_manager, clock)
    hub.job(lambda: None, cron="30 2 * * *", tz="America/New_York", name="fixed")
    engine = Engine(hub)
    await engine.start()
    await advance_to(engine, clock, "2026-03-09T12:00:00-04:00")
    await engine.stop()
    assert [r.scheduled_for.astimezone(hub.jobs["fixed"].tz).isoformat() for r in runs(hub)] == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]


async def test_clock_jumps_forward_and_back(ehub, clock):
    @ehub.job(every="1m", name="steady", catch_up="none", misfire_grace=30)
    def steady():
        pass

    engine = Engine(ehub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:01:00+00:00")
    clock.jump(3600)  # NTP step forward by an hour
    await asyncio.sleep(0)
    engine._wake()
    await engine.wait_idle()
    clock.jump(-1800)  # and back by half an hour: nothing runs twice
    engine._wake()
    await engine.wait_idle()
    clock.advance(120)
    await engine.wait_idle()
    clock.jump(1800)
    engine._wake()
    await engine.wait_idle()
    await engine.stop()
    history = runs(ehub, job="steady")
    keys = [(r.scheduled_for, r.attempt) for r in history]
    assert len(keys) == len(set(keys))
    # 00:02-01:00 skipped by the first step forward; 01:02 by the last one.
    assert [r.missed_count for r in history if r.status == "missed"] == [59, 1]


async def test_lost_lease_cancels_the_job_and_writes_nothing(plugin_manager, clock):
    hub = make_hub(plugin_manager, clock, heartbeat_interval=5.0)
    cancelled = threading.Event()

    @hub.job(every="1h", name="long")
    def long(ctx):
        for _ in range(200):
            if ctx.cancelled:
                cancelled.set()
                return
            threading.Event().wait(0.01)

    engine = Engine(hub)
    await engine.start()
    clock.set("2026-01-05T01:00:00+00:00")
    await asyncio.sleep(0.05)
    [run] = runs(hub, job="long")
    hub.storage.cancel(run.id, now=clock.now())  # e.g. a cancel from another instance
    clock.advance(5)  # next heartbeat finds the lease gone
    await asyncio.sleep(0.2)
    await engine.wait_idle()
    await engine.stop()
    assert cancelled.is_set()
    assert [r.status for r in runs(hub, job="long")] == ["cancelled"]


async def test_reaper_marks_expired_runs_crashed_and_retries(plugin_manager, clock):
    hub = make_hub(plugin_manager, clock, reaper_interval=5.0, lease_ttl=30.0)
    hub.job(lambda: None, every="1h", name="fragile", retries=1, retry_delay="1m")
    # A run claimed by an instance that then died (no heartbeats ever come).
    from cronhub.runs import ClaimRequest

    [claimed] = hub.storage.claim(
        [ClaimRequest(job="fragile", scheduled_for=datetime(2026, 1, 5, tzinfo=UTC))],
        instance="dead-host:1:abc",
        now=clock.now(),
        lease_ttl=30.0,
    )
    engine = Engine(hub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:00:36+00:00")
    crashed = hub.storage.get_run(claimed.run.id)
    assert crashed.status == "crashed"
    await advance_to(engine, clock, "2026-01-05T00:01:40+00:00")
    await engine.stop()
    history = runs(hub, job="fragile")
    assert [(r.attempt, r.trigger, r.status, r.instance) for r in history] == [
        (1, "schedule", "crashed", "dead-host:1:abc"),
        (2, "retry", "succeeded", "engine-a"),
    ]


async def test_shutdown_waits_for_running_jobs_then_cancels(plugin_manager, clock):
    hub = make_hub(plugin_manager, clock)

    @hub.job(every="1h", name="stubborn", retries=1)
    async def stubborn():
        await asyncio.sleep(3600)

    engine = Engine(hub)
    await engine.start()
    clock.set("2026-01-05T01:00:00+00:00")
    await asyncio.sleep(0.05)
    await engine.stop(grace=0.1)
    history = runs(hub, job="stubborn")
    assert [(r.attempt, r.status) for r in history] == [(1, "cancelled"), (2, "queued")]
    assert not hub.storage.active_runs("stubborn") or all(
        r.status == "queued" for r in hub.storage.active_runs("stubborn")
    )


async def test_a_plugin_executor_runs_the_jobs_that_ask_for_it(ehub, clock, register_plugin):
    from cronhub.executors import Outcome

    handled = []

    class InlineExecutor:
        name = "inline"

        async def execute(self, job, ctx, timeout):
            handled.append((job.name, ctx.scheduled_for.minute))
            job.func()
            return Outcome(RunStatus.SUCCEEDED)

    class InlinePlugin:
        @cronhub.hookimpl
        def cronhub_executor(self, job):
            return InlineExecutor() if job.executor == "inline" else None

    register_plugin(InlinePlugin(), name="inline")
    ehub.job(lambda: None, every="1m", name="custom", executor="inline")
    ehub.job(lambda: None, every="1m", name="plain")
    engine = Engine(ehub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:02:00+00:00")
    await engine.stop()
    assert handled == [("custom", 1), ("custom", 2)]
    assert [r.status for r in runs(ehub, job="plain")] == ["succeeded", "succeeded"]


async def test_an_unknown_executor_is_named_at_start(ehub):
    ehub.job(lambda: None, every="1m", name="orphan", executor="celery")
    with pytest.raises(JobDefinitionError, match="job 'orphan': option executor='celery'"):
        await Engine(ehub).start()


async def test_a_plugin_lock_sees_every_claim_and_heartbeat(ehub, clock, register_plugin):
    from cronhub.locking import StorageLock

    calls = []

    class AuditingLock(StorageLock):
        def claim(self, requests, **kwargs):
            calls.append(("claim", [r.job for r in requests]))
            return super().claim(requests, **kwargs)

        def heartbeat(self, run_ids, **kwargs):
            calls.append(("heartbeat", sorted(run_ids)))
            return super().heartbeat(run_ids, **kwargs)

    class AuditPlugin:
        @cronhub.hookimpl
        def cronhub_lock(self, hub):
            return AuditingLock(hub.storage)

    register_plugin(AuditPlugin(), name="audit")
    release = threading.Event()

    @ehub.job(every="1h", name="audited", executor="thread")
    def audited():
        release.wait(10)

    engine = Engine(ehub)
    await engine.start()
    clock.set("2026-01-05T01:00:00+00:00")
    await asyncio.sleep(0.05)
    clock.advance(float(ehub.settings.get("heartbeat_interval")))
    await asyncio.sleep(0.1)
    release.set()
    await engine.wait_idle()
    await engine.stop()
    [run] = runs(ehub, job="audited")
    assert run.status == "succeeded"
    assert ("claim", ["audited"]) in calls and ("heartbeat", [run.id]) in calls


# -- claiming ahead ----------------------------------------------------------------------------


async def test_a_slot_is_claimed_ahead_and_starts_at_its_time(ehub, clock):
    started = []

    @ehub.job(cron="* * * * *", name="minutely", executor="async")
    async def minutely(ctx):
        started.append((clock.now(), ctx.scheduled_for))

    engine = Engine(ehub)
    await engine.start()
    slot = datetime(2026, 1, 5, 0, 1, tzinfo=UTC)
    await advance_to(engine, clock, "2026-01-05T00:00:59.4+00:00")
    assert runs(ehub) == []  # not yet: 0.6 s before the slot
    await advance_to(engine, clock, "2026-01-05T00:00:59.6+00:00")
    [claimed] = runs(ehub)
    assert claimed.status == RunStatus.RUNNING
    assert claimed.scheduled_for == slot
    assert claimed.started_at == datetime(2026, 1, 5, 0, 0, 59, 500000, tzinfo=UTC)
    assert started == []  # claimed, not started
    await advance_to(engine, clock, "2026-01-05T00:01:00.5+00:00")
    await engine.stop()
    assert started == [(slot, slot)]
    [done] = [r for r in runs(ehub) if r.scheduled_for == slot]
    assert done.status == RunStatus.SUCCEEDED
    assert done.started_at == slot  # the row says when it really started


async def test_claim_ahead_zero_claims_at_the_due_time(plugin_manager, clock):
    hub = make_hub(plugin_manager, clock, claim_ahead=0)
    hub.job(lambda: None, cron="* * * * *", name="minutely")
    engine = Engine(hub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:00:59.9+00:00")
    assert runs(hub) == []
    await advance_to(engine, clock, "2026-01-05T00:01:00.1+00:00")
    await engine.stop()
    assert [r.status for r in runs(hub)] == [RunStatus.SUCCEEDED]
    hub.close()


async def test_a_job_running_here_is_claimed_at_its_slot_so_that_it_does_not_skip(ehub, clock):
    release = asyncio.Event()
    ran = []

    @ehub.job(every="1m", name="long", executor="async")  # overlap "skip"
    async def long(ctx):
        ran.append(ctx.scheduled_for)
        if len(ran) == 1:
            await release.wait()

    async def settle() -> None:
        for _ in range(100):
            await asyncio.sleep(0)

    engine = Engine(ehub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:00:59+00:00")
    clock.advance(1.0)  # the first slot starts; its body waits for the event
    await settle()
    assert len(ran) == 1
    # 0.2 s before the next slot the first run is still active: that slot is not claimed yet
    # (claimed now, it would be recorded as skipped).
    clock.advance(59.8)
    await settle()
    assert [r.status for r in runs(ehub)] == [RunStatus.RUNNING]
    release.set()  # it ends before the slot
    await settle()
    await advance_to(engine, clock, "2026-01-05T00:02:00.1+00:00")
    await engine.stop()
    assert [r.status for r in runs(ehub)] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]
    assert len(ran) == 2


async def claimed_ahead(hub, clock) -> tuple[Engine, list[datetime]]:
    """An engine 0.3 s before a minutely job's slot, which it has claimed; the slots run."""
    ran: list[datetime] = []

    @hub.job(cron="* * * * *", name="minutely", executor="async")
    async def minutely(ctx):
        ran.append(ctx.scheduled_for)

    engine = Engine(hub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:00:59.7+00:00")
    assert [r.status for r in runs(hub)] == [RunStatus.RUNNING]
    return engine, ran


async def test_stop_starts_what_it_claimed_ahead_and_leaves_nothing_running(ehub, clock):
    engine, ran = await claimed_ahead(ehub, clock)
    await engine.stop()
    assert ran == [datetime(2026, 1, 5, 0, 1, tzinfo=UTC)]
    assert [r.status for r in runs(ehub)] == [RunStatus.SUCCEEDED]


async def test_cancelling_a_run_claimed_ahead_keeps_it_from_starting(ehub, clock):
    engine, ran = await claimed_ahead(ehub, clock)
    [claimed] = runs(ehub)
    cancelled = await engine.cancel(claimed.id)
    assert cancelled is not None and cancelled.status == RunStatus.CANCELLED
    await advance_to(engine, clock, "2026-01-05T00:01:00.5+00:00")
    await engine.stop()
    assert ran == []
    assert [r.status for r in runs(ehub)] == [RunStatus.CANCELLED]


@pytest.mark.parametrize("listener", [False, True])
async def test_stop_waits_for_the_outcomes_the_writer_has_out(
    plugin_manager, clock, tmp_path, register_plugin, listener
):
    # A launched run hands its outcome to the writer and its task ends at once; a stop that
    # came while the batch was still out to storage must wait for it, not release the run as
    # cancelled, and for the cronhub_run_finished hook the writer then calls. The storage is
    # a slow SQLite file (its calls run in threads, off the loop).
    from cronhub_storage_sqlite import SqliteStorage

    finished: list[RunStatus] = []
    if listener:

        class Recorder:
            @cronhub.hookimpl
            async def cronhub_run_finished(self, run):
                await asyncio.sleep(0.2)
                finished.append(run.status)

        register_plugin(Recorder(), name="recorder")

    storage = SqliteStorage(f"sqlite:///{tmp_path / 'slow.db'}")
    storage.open()
    writing = threading.Event()
    finish_many = storage.finish_many

    def slow_finish_many(*args, **kwargs):
        writing.set()
        time.sleep(0.5)
        return finish_many(*args, **kwargs)

    storage.finish_many = slow_finish_many  # type: ignore[method-assign]
    hub = make_hub(plugin_manager, clock, storage=storage)
    try:

        @hub.job(cron="* * * * *", name="minutely", executor="async")
        async def minutely(ctx):
            return None

        engine = Engine(hub)
        await engine.start()
        await advance_to(engine, clock, "2026-01-05T00:00:59.7+00:00")  # claimed ahead
        clock.advance(0.4)  # the slot: the run starts and ends (advance_to would wait idle)
        while not writing.is_set():
            await asyncio.sleep(0.01)
        assert not engine.runs.idle  # the batch is out: not idle yet
        await engine.stop()
        assert [r.status for r in runs(hub)] == [RunStatus.SUCCEEDED]
        assert finished == ([RunStatus.SUCCEEDED] if listener else [])
    finally:
        hub.close()
        storage.close()


async def test_a_run_claimed_ahead_waits_launched_but_not_active(ehub, clock):
    # Launched ahead (its task and context made) so that its slot only has to let it in; until
    # then it is not active here: nothing to wait for, no job busy, no body started.
    engine, ran = await claimed_ahead(ehub, clock)
    [claimed] = runs(ehub)
    assert engine.runs.known(claimed.id)
    assert engine.runs.active == {}
    assert engine.runs.active_jobs() == set()
    assert engine.runs.idle
    await engine.wait_idle(timeout=1.0)
    assert ran == []
    await advance_to(engine, clock, "2026-01-05T00:01:00.1+00:00")
    await engine.wait_idle()
    assert ran == [datetime(2026, 1, 5, 0, 1, tzinfo=UTC)]
    await engine.stop()
    assert [r.status for r in runs(ehub)] == [RunStatus.SUCCEEDED]


async def test_a_run_cancelled_before_its_task_took_a_step_still_ends(ehub, clock):
    # Launched ahead and cancelled in the same tick: its task has not run yet. Cancelling
    # the task then would skip everything that ends the run here; its gate is cancelled.
    engine, ran = await claimed_ahead(ehub, clock)
    [claimed] = runs(ehub)
    other = claimed.replace(id=claimed.id + 1000)  # a run storage does not hold
    engine.runs.launch_all([other], gate=StartGate())
    assert engine.runs.cancel_local(other.id, "cancelled")
    # Ended: nothing of it is left active here (wait_idle raises TimeoutError otherwise).
    await engine.wait_idle(timeout=2.0)
    assert other.id not in engine.runs._active
    await advance_to(engine, clock, "2026-01-05T00:01:00.1+00:00")
    await engine.stop()
    assert ran == [datetime(2026, 1, 5, 0, 1, tzinfo=UTC)]


async def test_collection_waits_until_every_body_of_a_burst_started(ehub, clock):
    # A full garbage collection in the middle of a burst of due runs would make every later
    # run of it late: the collector is off from the first start until the last body started,
    # and on again afterwards.
    collector_on: list[bool] = []
    for i in range(50):

        @ehub.job(cron="* * * * *", name=f"burst{i}", executor="async")
        async def burst(ctx):
            collector_on.append(gc.isenabled())

    engine = Engine(ehub)
    await engine.start()
    assert gc.isenabled()
    await advance_to(engine, clock, "2026-01-05T00:01:00.1+00:00")
    await engine.wait_idle()
    await engine.stop()
    assert collector_on == [False] * 50
    assert gc.isenabled()


@pytest.fixture
def unfrozen(monkeypatch):
    """No objects frozen and no engine counted as freezing them (whatever ran before)."""
    from cronhub import gc_hold

    gc.unfreeze()
    monkeypatch.setattr(gc_hold._frozen, "count", 0)


async def test_what_lives_as_long_as_the_engine_is_frozen_until_it_stops(ehub, clock, unfrozen):
    # Full collections need not walk the jobs, plugins and modules again and again: they are
    # frozen from the engine's start to its stop.
    @ehub.job(cron="* * * * *", name="minutely", executor="async")
    async def minutely(ctx):
        pass

    assert gc.get_freeze_count() == 0
    engine = Engine(ehub)
    await engine.start()
    assert gc.get_freeze_count() > 0
    await advance_to(engine, clock, "2026-01-05T00:01:00.1+00:00")
    assert [r.status for r in runs(ehub)] == ["succeeded"]
    await engine.stop()
    assert gc.get_freeze_count() == 0


async def test_gc_freeze_false_leaves_the_collector_alone(plugin_manager, clock, unfrozen):
    hub = make_hub(plugin_manager, clock, gc_freeze="false")
    try:
        engine = Engine(hub)
        await engine.start()
        assert gc.get_freeze_count() == 0
        await engine.stop()
    finally:
        hub.close()


async def test_an_application_that_froze_objects_itself_keeps_its_arrangement(
    ehub, clock, unfrozen
):
    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        engine = Engine(ehub)
        await engine.start()
        # Not ours to add to, or to undo (the count only drops as frozen objects are freed).
        assert 0 < gc.get_freeze_count() <= frozen
        await engine.stop()
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


async def test_an_application_that_turned_collection_off_keeps_it_off(ehub, clock):
    @ehub.job(cron="* * * * *", name="minutely", executor="async")
    async def minutely(ctx):
        pass

    engine = Engine(ehub)
    await engine.start()
    gc.disable()
    try:
        await advance_to(engine, clock, "2026-01-05T00:01:00.1+00:00")
        await engine.wait_idle()
        assert not gc.isenabled()
        assert [r.status for r in runs(ehub)] == ["succeeded"]
    finally:
        gc.enable()
        await engine.stop()


async def test_the_start_of_runs_claimed_ahead_is_slept_to_precisely(plugin_manager):
    # The timer of the loop wakes a millisecond or more late: the start of a gate is slept to
    # with the clock's sleep_precise where it has one, and only that start.
    class RecordingClock(FakeClock):
        def __init__(self) -> None:
            super().__init__()
            self.precise: list[datetime] = []

        async def sleep_precise(self, seconds: float) -> None:
            self.precise.append(self.now() + timedelta(seconds=seconds))
            await self.sleep(seconds)

    clock = RecordingClock()
    hub = make_hub(plugin_manager, clock)

    @hub.job(cron="* * * * *", name="minutely", executor="async")
    async def minutely(ctx):
        pass

    engine = Engine(hub)
    await engine.start()
    await advance_to(engine, clock, "2026-01-05T00:01:00.2+00:00")
    await engine.wait_idle()
    await engine.stop()
    assert clock.precise == [datetime(2026, 1, 5, 0, 1, tzinfo=UTC)]
    assert [r.status for r in runs(hub)] == [RunStatus.SUCCEEDED]
    hub.close()


async def test_a_precise_sleep_never_ends_early():
    clock = SystemClock()
    for seconds in (0.0, 0.001, 0.004, 0.02):
        before = time.monotonic()
        await clock.sleep_precise(seconds)
        assert time.monotonic() - before >= seconds


async def test_an_instance_back_from_an_outage_plans_after_what_another_one_handled(
    plugin_manager, clock
):
    # B cannot claim from the start; A runs three slots and stops. When B reaches storage
    # again its own next slot is the first one: planned from there, its missed record (keyed
    # on a slot A ran) was refused and the slots after A's were counted by nobody. Planned
    # from the stored high-water mark, every slot is accounted for exactly once.
    hub_a = make_hub(plugin_manager, clock)
    # B's view of the shared storage: every claim fails while ``armed``.
    cut = FaultyStorage(hub_a.storage, p=1.0, points=["connect"], only=["claim"])
    hub_b = make_hub(plugin_manager, clock, storage=cut, instance_id="engine-b")
    for hub in (hub_a, hub_b):
        hub.job(lambda: None, every="1m", name="latest", catch_up="latest", misfire_grace=30)
    a, b = Engine(hub_a), Engine(hub_b)
    await a.start()
    cut.armed = True
    await b.start()
    await advance_to(a, clock, "2026-01-05T00:03:10+00:00")
    await a.stop()
    await advance_to(b, clock, "2026-01-05T00:10:40+00:00")
    cut.armed = False
    await advance_to(b, clock, "2026-01-05T00:10:50+00:00")
    await b.stop()
    minute = timedelta(minutes=1)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    covered: dict[datetime, int] = {}
    for run in runs(hub_a, job="latest"):
        for n in range(run.missed_count if run.status == RunStatus.MISSED else 1):
            slot = run.scheduled_for + n * minute
            covered[slot] = covered.get(slot, 0) + 1
    assert covered == {start + n * minute: 1 for n in range(1, 11)}, covered
    hub_a.close()
