"""Runtime schedules: parameters, validation, the engine (fake clock, real processes), CLI, API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx
import pytest
from cronhub_storage_postgres.testing import (  # noqa: F401 - fixtures
    postgres_database,
    postgres_server,
)
from test_dashboard import CHROMIUM, CHROMIUM_ARGS, SHOTS, WAIT, Server

import cronhub
from cronhub.config import load_settings
from cronhub.engine import Engine, run_job_once
from cronhub.errors import (
    JobDefinitionError,
    ParameterError,
    ScheduleError,
    ScheduleInputError,
    UnknownJobError,
    UnknownScheduleError,
)
from cronhub.hub import Hub
from cronhub.params import check_params, signature_of
from cronhub.runs import RunStatus, Trigger
from cronhub.runtime_schedules import RuntimeSchedules, preview
from cronhub.schedules import parse_expression
from cronhub.storage import RunFilter
from cronhub.testing import advance_to, make_hub

START = "2026-01-05T00:00:00+00:00"


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2026-01-05T{text}+00:00")


@pytest.fixture
def rhub(plugin_manager, clock):
    hub = make_hub(plugin_manager, clock)
    yield hub
    hub.close()


def history(hub, **filters):
    return list(reversed(hub.storage.list_runs(RunFilter(limit=1000, **filters))))


# -- parameters -------------------------------------------------------------------------------


def report(
    ctx: cronhub.RunContext,
    *,
    region: str,
    limit: int = 10,
    ratio: float = 0.5,
    tags: list[str] | None = None,
    mode: Literal["fast", "full"] = "fast",
    weights: dict[str, float] | None = None,
    nested: list[dict[str, list[int]]] | None = None,
    when: datetime | None = None,
) -> None:
    """A job with every kind of parameter the checks know."""


REPORT = signature_of(report)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "job 'report': parameter 'region': missing required parameter"),
        (
            {"region": "eu", "colour": "red"},
            "job 'report': parameter 'colour': unknown parameter (the job function takes: "
            "region, limit, ratio, tags, mode, weights, nested, when)",
        ),
        ({"region": 3}, "parameter 'region': expected str, got 3 (int)"),
        ({"region": "eu", "limit": "ten"}, "parameter 'limit': expected int, got 'ten' (str)"),
        ({"region": "eu", "limit": True}, "parameter 'limit': expected int, got True (bool)"),
        ({"region": "eu", "limit": 2.5}, "parameter 'limit': expected int, got 2.5 (float)"),
        ({"region": "eu", "ratio": "x"}, "parameter 'ratio': expected float, got 'x' (str)"),
        (
            {"region": "eu", "tags": ["a", 3]},
            "parameter 'tags[1]': expected str, got 3 (int)",
        ),
        ({"region": "eu", "tags": "a"}, "parameter 'tags': expected list[str] | None, got 'a'"),
        (
            {"region": "eu", "mode": "slow"},
            "parameter 'mode': expected one of 'fast', 'full', got 'slow' (str)",
        ),
        (
            {"region": "eu", "weights": {"a": 1, "b": "heavy"}},
            "parameter 'weights.b': expected float, got 'heavy' (str)",
        ),
        (
            {"region": "eu", "nested": [{"k": [1, 2]}, {"k": [3, "4"]}]},
            "parameter 'nested[1].k[1]': expected int, got '4' (str)",
        ),
        ({"region": "eu", "when": "2026-01-01"}, "parameter 'when': expected datetime | None"),
        ({"region": float("nan")}, "parameter 'region': nan is not a JSON number"),
        ({"region": {1: "a"}}, "parameter 'region': key 1 is not a string"),
        (["region"], "job 'report': parameters: must be a JSON object of name: value, not list"),
    ],
)
def test_bad_parameters_name_the_job_and_the_parameter(params, message):
    with pytest.raises(ParameterError) as info:
        check_params("report", REPORT, params)
    assert message in str(info.value)


def test_good_parameters_pass_unchanged():
    params = {
        "region": "eu",
        "limit": 3,
        "ratio": 1,  # an integer is a float
        "tags": None,
        "mode": "full",
        "weights": {"a": 0.5},
        "nested": [{"k": []}],
        "when": None,
    }
    assert check_params("report", REPORT, params) == params
    assert check_params("report", REPORT, {"region": "eu"}) == {"region": "eu"}


def test_what_a_function_takes_decides_what_is_accepted():
    def reads_ctx(ctx):
        pass

    def takes_nothing():
        pass

    def takes_anything(ctx, **options):
        pass

    def no_context(region: str = "eu", *, limit: int = 1):
        pass

    free = signature_of(reads_ctx)
    assert free.takes_context and free.parameters == ()
    assert check_params("j", free, {"any": {"json": [1]}}) == {"any": {"json": [1]}}
    with pytest.raises(
        ParameterError, match=r"'x': unknown parameter \(the job function takes: none"
    ):
        check_params("j", signature_of(takes_nothing), {"x": 1})
    assert check_params("j", signature_of(takes_anything), {"x": 1}) == {"x": 1}
    plain = signature_of(no_context)
    assert not plain.takes_context and plain.names == ("region", "limit")
    with pytest.raises(ParameterError, match="'limit': expected int"):
        check_params("j", plain, {"limit": "1"})


def test_a_job_parameter_without_default_needs_on_demand():
    def needs(ctx, *, region: str):
        pass

    with pytest.raises(JobDefinitionError, match="parameter 'region' has no default"):
        cronhub.job(needs, name="needs", cron="0 * * * *")
    with pytest.raises(JobDefinitionError, match="run_on_startup calls it without parameters"):
        cronhub.job(needs, name="needs", on_demand=True, run_on_startup=True)
    with pytest.raises(JobDefinitionError, match=r"on demand has no schedule of its own"):
        cronhub.job(needs, name="needs", on_demand=True, every="1m")
    job = cronhub.job(needs, name="needs", on_demand=True)
    assert (job.kind, job.schedule.expression(), job.next_run(datetime.now(UTC))) == (
        "on_demand",
        None,
        None,
    )


# -- validation of schedules ------------------------------------------------------------------


@pytest.fixture
def book(rhub):
    @rhub.job(on_demand=True, name="report")
    def _report(ctx, *, region: str, limit: int = 10):
        pass

    return RuntimeSchedules(rhub)


@pytest.mark.parametrize(
    ("options", "error", "field", "fragment"),
    [
        ({"cron": "61 * * * *"}, ScheduleInputError, "cron", None),
        ({"cron": "* * *"}, ScheduleInputError, "cron", None),
        ({"every": "5 parsecs"}, ScheduleInputError, "every", None),
        ({"every": "1.5s"}, ScheduleInputError, "every", "whole number of seconds"),
        ({"at": "tomorrow"}, ScheduleInputError, "at", "not an ISO 8601"),
        ({"at": "2020-01-01T00:00:00+00:00"}, ScheduleInputError, "at", "never fires after"),
        ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, ScheduleInputError, "tz", "unknown time"),
        ({"cron": "0 9 * * *", "start": "soon"}, ScheduleInputError, "start", "not an ISO"),
        (
            {"cron": "0 9 * * *", "start": "2026-02-01T00:00", "end": "2026-01-01T00:00"},
            ScheduleInputError,
            "end",
            "must be after start",
        ),
        ({}, ScheduleInputError, "schedule", "exactly one of cron, every, at is required"),
        (
            {"cron": "0 9 * * *", "every": "1h"},
            ScheduleInputError,
            "schedule",
            "(given: cron, every)",
        ),
    ],
)
def test_bad_schedules_name_the_field(book, options, error, field, fragment):
    options.setdefault("params", {"region": "eu"})
    with pytest.raises(error) as info:
        book.add("report", **options)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    if fragment:
        assert fragment in str(info.value)
    assert book.all() == []


@pytest.mark.parametrize("expression", ["61 * * * *", "* * *", "0 0 30 2 *", "@fortnightly"])
def test_cron_errors_are_those_of_cronhub_next(book, expression):
    with pytest.raises(ScheduleError) as expected:
        parse_expression(expression)
    with pytest.raises(ScheduleInputError) as info:
        book.add("report", cron=expression, params={"region": "eu"})
    assert str(info.value) == f"cron: {expected.value}"


def test_unknown_jobs_and_bad_parameters_are_refused(book):
    with pytest.raises(UnknownJobError, match="unknown job 'nope' \\(known jobs: report\\)"):
        book.add("nope", cron="0 9 * * *")
    with pytest.raises(ParameterError, match="parameter 'region': missing required parameter"):
        book.add("report", cron="0 9 * * *")
    with pytest.raises(ParameterError, match="parameter 'limit': expected int"):
        book.add("report", cron="0 9 * * *", params={"region": "eu", "limit": "all"})
    assert book.all() == []
    with pytest.raises(UnknownScheduleError, match="unknown schedule 'abc'"):
        book.get("abc")
    for action in (book.remove, book.pause, book.resume):
        with pytest.raises(UnknownScheduleError):
            action("abc")
    with pytest.raises(UnknownJobError):
        book.all("nope")


def test_add_list_pause_resume_remove(book, clock):
    added = book.add(
        "report",
        cron="0 9 * * MON-FRI",
        tz="Europe/Berlin",
        params={"region": "eu"},
        start="2026-01-06T00:00",
        created_by="test",
    )
    assert added.start == datetime(2026, 1, 5, 23, tzinfo=UTC)  # naive: wall time in tz
    (shown,) = book.describe(book.all("report"))
    assert shown == {
        "id": added.id,
        "job": "report",
        "kind": "cron",
        "schedule": "0 9 * * MON-FRI",
        "schedule_text": shown["schedule_text"],
        "tz": "Europe/Berlin",
        "params": {"region": "eu"},
        "start": "2026-01-06T00:00:00+01:00",
        "end": None,
        "paused": False,
        "next_run": "2026-01-06T09:00:00+01:00",
        "created_at": "2026-01-05T01:00:00+01:00",
        "created_by": "test",
        "updated_at": "2026-01-05T01:00:00+01:00",
    }
    assert "09:00" in shown["schedule_text"]
    clock.advance(60)
    assert book.pause(added.id).paused is True
    assert book.describe([book.get(added.id)])[0]["next_run"] is None
    resumed = book.resume(added.id)
    assert not resumed.paused and resumed.high_water == clock.now()
    assert book.remove(added.id).id == added.id
    assert book.all() == []
    with pytest.raises(UnknownScheduleError):
        book.remove(added.id)


def test_preview_lists_next_times_like_cronhub_next():
    after = datetime(2026, 3, 27, 12, tzinfo=UTC)
    shown = preview("30 2 * * *", tz="Europe/Berlin", after=after, count=3)
    # 2026-03-29 02:30 does not exist in Berlin: a fixed-time job runs at 03:00 that day.
    assert shown.isoformat() == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    assert shown.text == "at 02:30 every day (Europe/Berlin)"
    every = preview("every:90m", after=after, count=2).times
    assert every[1] - every[0] == timedelta(minutes=90)
    window = preview("5m", kind="every", after=after, end=after + timedelta(minutes=12))
    assert len(window.times) == 2 and window.zone.key == "UTC"
    with pytest.raises(ScheduleInputError, match="count: 0"):
        preview("* * * * *", count=0)
    with pytest.raises(ScheduleInputError) as info:
        preview("61 * * * *")
    assert info.value.field == "expr"


# -- the engine, on a fake clock ----------------------------------------------------------------


async def test_a_runtime_schedule_runs_its_slots_with_its_parameters(rhub, clock):
    seen = []

    @rhub.job(on_demand=True, name="report")
    def _report(ctx, *, region: str, limit: int = 10):
        seen.append((ctx.scheduled_for, ctx.run.schedule_id, region, limit, dict(ctx.params)))

    engine = Engine(rhub)
    await engine.start()
    added = RuntimeSchedules(rhub).add("report", every="1m", params={"region": "eu"})
    await advance_to(engine, clock, at("00:03:00"))
    await engine.stop()
    assert [s[0] for s in seen] == [at("00:01:00"), at("00:02:00"), at("00:03:00")]
    assert all(s[1:] == (added.id, "eu", 10, {"region": "eu"}) for s in seen)
    runs = history(rhub, job="report")
    assert [(r.schedule_id, r.trigger, r.status) for r in runs] == [
        (added.id, Trigger.SCHEDULE, RunStatus.SUCCEEDED)
    ] * 3
    stored = rhub.storage.get_schedule(added.id)
    assert stored is not None and stored.high_water == at("00:03:00")
    assert rhub.storage.job_states(["report"])["report"].high_water is None


async def test_the_jobs_own_schedule_and_runtime_schedules_run_side_by_side(rhub, clock):
    seen = []

    @rhub.job(every="2m", name="greet", overlap="allow")
    def _greet(ctx, who: str = "code"):
        seen.append((ctx.scheduled_for, who))

    engine = Engine(rhub)
    await engine.start()
    schedules = RuntimeSchedules(rhub)
    one = schedules.add("greet", every="1m", params={"who": "ann"})
    two = schedules.add("greet", cron="*/3 * * * *", params={"who": "bob"})
    await advance_to(engine, clock, at("00:06:00"))
    await engine.stop()
    assert sorted(seen) == sorted(
        [(at(f"00:0{m}:00"), "code") for m in (2, 4, 6)]
        + [(at(f"00:0{m}:00"), "ann") for m in range(1, 7)]
        + [(at(f"00:0{m}:00"), "bob") for m in (3, 6)]
    )
    keys = [(r.schedule_id, r.scheduled_for) for r in history(rhub)]
    assert len(keys) == len(set(keys)) == 11
    assert {r.schedule_id for r in history(rhub)} == {"", one.id, two.id}


async def test_the_jobs_overlap_policy_applies_to_runtime_slots(rhub, clock):
    release = asyncio.Event()

    @rhub.job(on_demand=True, name="slow", executor="async")
    async def _slow(ctx, *, n: int):
        await release.wait()

    engine = Engine(rhub)
    await engine.start()
    schedules = RuntimeSchedules(rhub)
    schedules.add("slow", every="1m", params={"n": 1})
    schedules.add("slow", every="1m", params={"n": 2})
    await engine.wait_idle()
    clock.advance(60)
    await clock.settle()
    for _ in range(100):
        if len(history(rhub)) == 2:
            break
        await asyncio.sleep(0.01)
    release.set()
    await engine.wait_idle()
    await engine.stop()
    statuses = sorted(str(r.status) for r in history(rhub))
    assert statuses == ["skipped", "succeeded"]  # overlap="skip" across the job's schedules


async def test_pause_resume_and_remove_take_effect_at_once(rhub, clock):
    seen = []

    @rhub.job(on_demand=True, name="tick")
    def _tick(ctx):
        seen.append(ctx.scheduled_for)

    engine = Engine(rhub)
    await engine.start()
    schedules = RuntimeSchedules(rhub)
    added = schedules.add("tick", every="1m")
    await advance_to(engine, clock, at("00:02:00"))
    schedules.pause(added.id)
    await advance_to(engine, clock, at("00:05:30"))
    assert seen == [at("00:01:00"), at("00:02:00")]
    schedules.resume(added.id)
    await advance_to(engine, clock, at("00:07:00"))
    # Paused time is neither caught up nor recorded as missed.
    assert seen == [at("00:01:00"), at("00:02:00"), at("00:06:00"), at("00:07:00")]
    schedules.remove(added.id)
    await advance_to(engine, clock, at("00:10:00"))
    await engine.stop()
    assert len(seen) == 4
    runs = history(rhub)
    assert len(runs) == 4 and {r.status for r in runs} == {RunStatus.SUCCEEDED}
    assert engine.timers.timers == {}


async def test_a_restart_keeps_schedules_and_catches_up_under_the_jobs_policy(rhub, clock):
    @rhub.job(on_demand=True, name="tick")
    def _tick(ctx):
        pass

    first = Engine(rhub)
    await first.start()
    added = RuntimeSchedules(rhub).add("tick", every="1m")
    await advance_to(first, clock, at("00:02:00"))
    await first.stop()
    clock.advance(8 * 60)  # down until 00:10:00
    second = Engine(rhub)
    await second.start()
    await advance_to(second, clock, at("00:11:00"))
    await second.stop()
    runs = history(rhub)
    assert [(r.scheduled_for, r.status, r.missed_count) for r in runs] == [
        (at("00:01:00"), RunStatus.SUCCEEDED, 0),
        (at("00:02:00"), RunStatus.SUCCEEDED, 0),
        (at("00:03:00"), RunStatus.MISSED, 6),  # 00:03 ... 00:08, one record
        (at("00:09:00"), RunStatus.SUCCEEDED, 0),  # within misfire_grace (60 s) at 00:10
        (at("00:10:00"), RunStatus.SUCCEEDED, 0),
        (at("00:11:00"), RunStatus.SUCCEEDED, 0),
    ]
    assert {r.schedule_id for r in runs} == {added.id}


async def test_a_schedule_added_while_no_instance_ran_is_caught_up(rhub, clock):
    @rhub.job(on_demand=True, name="tick", catch_up="latest")
    def _tick(ctx):
        pass

    added = RuntimeSchedules(rhub).add("tick", every="1m")
    clock.advance(5 * 60 + 30)  # 00:05:30: 00:05 is within the grace, 00:01-00:04 are late
    engine = Engine(rhub)
    await engine.start()
    await engine.wait_idle()
    await engine.stop()
    runs = history(rhub)
    assert [(r.scheduled_for, r.status, r.missed_count) for r in runs] == [
        (at("00:01:00"), RunStatus.MISSED, 4),
        (at("00:05:00"), RunStatus.SUCCEEDED, 0),
    ]
    assert {r.schedule_id for r in runs} == {added.id}


async def test_two_engines_on_one_storage_run_each_slot_once(plugin_manager, clock):
    from cronhub.builtin.memory_storage import MemoryStorage

    shared = MemoryStorage()
    seen = []
    hubs = [make_hub(plugin_manager, clock, shared, instance_id=f"engine-{n}") for n in "ab"]
    for hub in hubs:

        @hub.job(on_demand=True, name="tick", overlap="allow")
        def _tick(ctx):
            seen.append((ctx.scheduled_for, ctx.run.instance))

    engines = [Engine(hub) for hub in hubs]
    for engine in engines:
        await engine.start()
    added = RuntimeSchedules(hubs[0]).add("tick", every="10s", params={})
    for engine in engines:
        await engine.wait_idle()
        assert set(engine.timers.timers) == {"\x00schedule:" + added.id}
    for _ in range(30):
        clock.advance(10)
        for engine in engines:
            await engine.wait_idle()
    for engine in engines:
        await engine.stop()
    slots = [slot for slot, _ in seen]
    assert len(slots) == len(set(slots)) == 30
    assert len(history(hubs[0])) == 30


async def test_a_schedule_of_a_job_this_instance_lacks_is_left_to_others(
    plugin_manager, clock, caplog
):
    from cronhub.builtin.memory_storage import MemoryStorage

    shared = MemoryStorage()
    owner = make_hub(plugin_manager, clock, shared)
    other = make_hub(plugin_manager, clock, shared, instance_id="engine-b")

    @owner.job(on_demand=True, name="only-here")
    def _only(ctx):
        pass

    @other.job(every="1h", name="elsewhere")
    def _elsewhere(ctx):
        pass

    engine = Engine(other)
    await engine.start()
    with caplog.at_level(logging.WARNING, logger="cronhub.engine"):
        added = RuntimeSchedules(owner).add("only-here", every="1m")
        await engine.wait_idle()
    await advance_to(engine, clock, at("00:05:00"))
    await engine.stop()
    assert history(other) == []
    assert f"schedule {added.id}: job 'only-here' is not defined on instance engine-b" in (
        caplog.text
    )


async def test_run_now_passes_parameters_by_keyword(rhub, clock):
    seen = []

    @rhub.job(on_demand=True, name="report")
    def _report(ctx, *, region: str, limit: int = 10):
        seen.append((region, limit, ctx.params, ctx.scheduled_for))

    engine = Engine(rhub)
    await engine.start()
    run = await engine.run_now("report", params={"region": "us", "limit": 2})
    await engine.wait_idle()
    await engine.stop()
    assert seen == [("us", 2, {"region": "us", "limit": 2}, None)]
    stored = rhub.storage.get_run(run.id)
    assert stored is not None and stored.status is RunStatus.SUCCEEDED


async def test_the_process_executor_passes_parameters(rhub, tmp_path, monkeypatch):
    (tmp_path / "paramjobs.py").write_text(
        textwrap.dedent(
            """
            def work(ctx, *, n: int, label: str = "x"):
                ctx.log.info("work %s %s %s", n, label, sorted(ctx.params))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import paramjobs

    rhub.add_job(cronhub.job(paramjobs.work, name="work", on_demand=True, executor="process"))
    finished = await run_job_once(rhub, "work", params={"n": 7})
    assert finished.status is RunStatus.SUCCEEDED, finished.error
    assert "work 7 x ['n']" in finished.log


def test_schedules_survive_the_storage_being_reopened(tmp_path, plugin_manager, clock):
    from cronhub_storage_sqlite import SqliteStorage

    url = f"sqlite:///{tmp_path / 'cronhub.db'}"
    storage = SqliteStorage(url)
    storage.open()
    hub = make_hub(plugin_manager, clock, storage)

    @hub.job(on_demand=True, name="report")
    def _report(ctx, *, region: str):
        pass

    added = RuntimeSchedules(hub).add("report", cron="0 9 * * *", params={"region": "eu"})
    storage.close()
    again = SqliteStorage(url)
    again.open()
    try:
        assert again.list_schedules() == [added]
        assert again.schedules_revision() == 1
    finally:
        again.close()


# -- the CLI ----------------------------------------------------------------------------------

CLI_APP = '''
"""Jobs of the runtime schedule CLI and process tests; each run appends a line to $CH_LOG."""

import os

from cronhub import Hub

hub = Hub()
LOG = os.environ.get("CH_LOG", os.devnull)
INSTANCE = os.environ.get("CRONHUB_INSTANCE_ID", "?")


@hub.job(on_demand=True, name="report", executor="async", overlap="allow", misfire_grace=30)
async def report(ctx, *, region: str, limit: int = 10):
    slot = ctx.scheduled_for.isoformat() if ctx.scheduled_for else "-"
    line = f"{ctx.run.schedule_id or '-'} {slot} {region} {limit} {INSTANCE}\\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
'''


@pytest.fixture
def cli_app(tmp_path):
    (tmp_path / "schapp.py").write_text(CLI_APP)
    env = {
        "CRONHUB_STORAGE": f"sqlite:///{tmp_path / 'cronhub.db'}",
        "CH_LOG": str(tmp_path / "runs.log"),
    }
    return tmp_path, env


def test_cli_add_list_pause_resume_remove(run_cli, cli_app):
    root, env = cli_app

    def cli(*args):
        return run_cli("--app", "schapp:hub", "schedule", *args, env=env, pythonpath=[root])

    added = cli(
        "add", "report", "--cron", "0 9 * * MON-FRI", "--tz", "Europe/Berlin",
        "--params", '{"region": "eu", "limit": 3}', "--json",
    )  # fmt: skip
    assert added.code == 0, added.stderr
    schedule = added.json()
    assert (schedule["job"], schedule["kind"], schedule["schedule"]) == (
        "report",
        "cron",
        "0 9 * * MON-FRI",
    )
    assert schedule["params"] == {"region": "eu", "limit": 3}
    assert schedule["created_by"].startswith("cli")
    text = cli("add", "report", "--every", "5m", "--params", '{"region": "us"}', "--paused")
    assert text.code == 0 and "added schedule " in text.stdout and "(paused)" in text.stdout
    listed = cli("list", "--json").json()
    assert len(listed) == 2 and listed[0]["id"] == schedule["id"]
    assert [s["paused"] for s in listed] == [False, True]
    table = cli("list", "report")
    assert table.code == 0 and table.stdout.splitlines()[0].split() == [
        "ID",
        "JOB",
        "SCHEDULE",
        "TZ",
        "PARAMS",
        "NEXT",
        "RUN",
    ]
    assert '{"limit": 3, "region": "eu"}' in table.stdout
    sid = schedule["id"]
    assert cli("pause", sid).stdout.strip() == f"schedule {sid} of job report: paused"
    assert cli("list", "--json").json()[0]["paused"] is True
    assert cli("resume", sid).stdout.strip() == f"schedule {sid} of job report: resumed"
    assert cli("remove", sid).stdout.strip() == f"removed schedule {sid} of job report"
    assert [s["id"] for s in cli("list", "--json").json()] == [listed[1]["id"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "nope", "--every", "5m"], "error: unknown job 'nope' (known jobs: "),
        (
            ["add", "report", "--every", "5m", "--params", '{"region": 1}'],
            "error: job 'report': parameter 'region': expected str, got 1 (int)",
        ),
        (
            ["add", "report", "--every", "5m", "--params", '{"region": "eu", "colour": 1}'],
            "error: job 'report': parameter 'colour': unknown parameter",
        ),
        (
            ["add", "report", "--every", "5m"],
            "error: job 'report': parameter 'region': missing required parameter",
        ),
        (
            ["add", "report", "--cron", "61 * * * *", "--params", '{"region": "eu"}'],
            "error: --cron: '61 * * * *': minute field '61' is out of range 0-59",
        ),
        (
            ["add", "report", "--cron", "0 9 * * *", "--tz", "Nowhere/City"],
            "error: --tz: 'Nowhere/City': unknown time zone",
        ),
        (["add", "report", "--params", "{}"], "error: exactly one of --cron, --every, --at"),
        (["add", "report", "--every", "5m", "--params", "{bad"], "error: --params is not valid"),
        (["remove", "0123456789ab"], "error: unknown schedule '0123456789ab'"),
        (["pause", "0123456789ab"], "error: unknown schedule '0123456789ab'"),
        (["list", "nope"], "error: unknown job 'nope'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(run_cli, cli_app, args, message):
    root, env = cli_app
    result = run_cli("--app", "schapp:hub", "schedule", *args, env=env, pythonpath=[root])
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr


# -- real worker processes on one SQLite file ---------------------------------------------------


class Worker:
    """``cronhub --app schapp:hub worker`` as a subprocess, its stderr in a file."""

    def __init__(self, root, env, instance):
        self.stderr_path = root / f"{instance}.err"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CRONHUB_")}
        environ.update(env)
        environ.update(
            {
                "CRONHUB_INSTANCE_ID": instance,
                "PYTHONPATH": str(root),
                "CRONHUB_SHUTDOWN_GRACE": "5",
            }
        )
        executable = str(Path(sys.executable).parent / "cronhub")
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [executable, "--app", "schapp:hub", "worker"],
                cwd=root,
                env=environ,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def log(self):
        return self.stderr_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise


def wait_for(predicate, what, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def slot_lines(root, schedule_id):
    path = root / "runs.log"
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.startswith(schedule_id)]


def test_two_workers_see_a_schedule_added_by_the_cli_and_run_each_slot_once(run_cli, cli_app):
    root, env = cli_app
    workers = [Worker(root, env, name) for name in ("w1", "w2")]
    try:
        for worker in workers:
            wait_for(lambda w=worker: "scheduler started" in w.log(), f"{worker.stderr_path.name}")
        added = run_cli(
            "--app", "schapp:hub", "schedule", "add", "report", "--every", "1s",
            "--params", '{"region": "eu"}', "--json", env=env, pythonpath=[root],
        )  # fmt: skip
        assert added.code == 0, added.stderr
        sid = added.json()["id"]
        added_at = time.monotonic()
        for worker in workers:
            wait_for(lambda w=worker: "runtime schedules: 1 active" in w.log(), "the pick-up")
        seen_after = time.monotonic() - added_at
        wait_for(lambda: len(slot_lines(root, sid)) >= 6, "six slots")
    finally:
        codes = [worker.stop() for worker in workers]
    assert codes == [0, 0], [w.log()[-2000:] for w in workers]
    before_restart = slot_lines(root, sid)
    slots = Counter(line[1] for line in before_restart)
    assert slots and max(slots.values()) == 1, slots  # no slot ran twice
    assert {tuple(line[2:4]) for line in before_restart} == {("eu", "10")}
    print(f"both workers picked the schedule up {seen_after:.2f} s after the CLI returned")

    # A restart keeps the schedule: a new worker continues its slots, none twice.
    again = Worker(root, env, "w3")
    try:
        last = max(slots)
        wait_for(
            lambda: sum(1 for line in slot_lines(root, sid) if line[1] > last) >= 3,
            "slots after the restart",
        )
    finally:
        assert again.stop() == 0, again.log()[-2000:]
    listed = run_cli(
        "--app", "schapp:hub", "schedule", "list", "--json", env=env, pythonpath=[root]
    )
    assert [s["id"] for s in listed.json()] == [sid]
    everything = Counter(line[1] for line in slot_lines(root, sid))
    assert max(everything.values()) == 1
    assert any(line[4] == "w3" for line in slot_lines(root, sid))
    with sqlite3.connect(root / "cronhub.db") as conn:
        rows = conn.execute(
            "SELECT scheduled_for, count(*) FROM cronhub_runs WHERE schedule_id = ? "
            "AND status != 'missed' GROUP BY scheduled_for, attempt",
            (sid,),
        ).fetchall()
        statuses = {s for (s,) in conn.execute(
            "SELECT DISTINCT status FROM cronhub_runs WHERE schedule_id = ?", (sid,)
        )}  # fmt: skip
    assert rows and all(count == 1 for _, count in rows)
    assert len(rows) == sum(everything.values())  # every run row ran its body once
    assert statuses <= {"succeeded", "missed"}


# -- PostgreSQL: LISTEN/NOTIFY ------------------------------------------------------------------


async def test_postgres_instances_hear_of_schedule_changes_without_polling(
    postgres_database,  # noqa: F811
    plugin_manager,
    register_plugin,
):
    from cronhub_storage_postgres import PostgresStorage
    from cronhub_storage_postgres import plugin as postgres_plugin

    register_plugin(postgres_plugin, name="storage_postgres")
    seen: list[tuple[datetime, str]] = []
    hubs = []
    for name in ("pg-a", "pg-b"):
        settings = {"storage": postgres_database, "instance_id": name, "reaper_interval": 3600}
        hub = Hub(
            storage=postgres_database,
            plugin_manager=plugin_manager,
            settings=load_settings(settings, cwd="/"),
        )

        @hub.job(on_demand=True, name="report", executor="async", overlap="allow")
        async def _report(ctx, *, region: str) -> None:
            seen.append((ctx.scheduled_for, ctx.run.instance))

        hubs.append(hub)
    engines = [Engine(hub) for hub in hubs]
    # A third storage object stands for another process (an API-only instance).
    other = PostgresStorage(postgres_database)
    other.open()
    try:
        for engine in engines:
            await engine.start()
            assert engine.timers._poller is None  # events, not a once-a-second read
        api = make_hub(plugin_manager, None, other)
        api.add_job(cronhub.job(lambda ctx, *, region: None, name="report", on_demand=True))
        book = RuntimeSchedules(api)
        added = book.add("report", every="1s", params={"region": "eu"})
        key = "\x00schedule:" + added.id

        async def until(predicate, timeout=30.0):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while not predicate():
                assert loop.time() < deadline, "timed out"
                await asyncio.sleep(0.02)

        await until(lambda: all(key in e.timers.timers for e in engines))
        await until(lambda: len(seen) >= 4)
        book.pause(added.id)
        await until(lambda: all(key not in e.timers.timers for e in engines))
        paused_count = len(seen)
        await asyncio.sleep(2.5)
        # At most a slot claimed in the moment of the pause may still end.
        assert len(seen) <= paused_count + 1
        book.remove(added.id)
        await until(lambda: all(e.timers.revision == other.schedules_revision() for e in engines))
    finally:
        for engine in engines:
            await engine.stop(grace=1)
        other.close()
        for hub in hubs:
            hub.close()
    slots = [slot for slot, _ in seen]
    assert len(slots) == len(set(slots)) >= 4


# -- the HTTP API -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app, *, lifespan=True):
    """The app (with its lifespan: the scheduler) and an httpx client over the ASGI transport."""
    async with contextlib.AsyncExitStack() as stack:
        if lifespan:
            await stack.enter_async_context(app.router.lifespan_context(app))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=30
        )
        yield await stack.enter_async_context(client)


@pytest.fixture
def api_hub(rhub):
    @rhub.job(on_demand=True, name="report")
    def _report(ctx, *, region: str, limit: int = 10):
        ctx.log.info("report %s %s", region, limit)

    @rhub.job(every="1h", name="billing/nightly")
    def _nightly(ctx):
        pass

    return rhub


async def test_api_add_list_get_pause_resume_delete(api_hub, clock):
    app = api_hub.asgi()
    bus = app.state.events
    start = bus.last_id
    async with serving(app, lifespan=False) as client:
        body = {"cron": "0 9 * * MON-FRI", "tz": "Europe/Berlin", "params": {"region": "eu"}}
        added = await client.post("/api/jobs/report/schedules", json=body)
        assert added.status_code == 201, added.text
        schedule = added.json()
        sid = schedule["id"]
        assert schedule["job"] == "report" and schedule["created_by"] == "api"
        assert schedule["params"] == {"region": "eu"} and schedule["paused"] is False
        assert schedule["next_run"] == "2026-01-05T09:00:00+01:00"
        # A job name with a slash: the schedules route still finds it.
        clock.advance(1)
        other = await client.post("/api/jobs/billing/nightly/schedules", json={"every": 900})
        assert other.status_code == 201, other.text
        assert other.json()["job"] == "billing/nightly" and other.json()["schedule"] == "900"
        listed = (await client.get("/api/schedules")).json()["schedules"]
        assert [s["id"] for s in listed] == [sid, other.json()["id"]]
        mine = (await client.get("/api/schedules", params={"job": "report"})).json()
        assert [s["id"] for s in mine["schedules"]] == [sid]
        by_job = (await client.get("/api/jobs/billing/nightly/schedules")).json()["schedules"]
        assert [s["job"] for s in by_job] == ["billing/nightly"]
        assert (await client.get(f"/api/schedules/{sid}")).json() == schedule
        paused = await client.post(f"/api/schedules/{sid}/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        assert paused.json()["next_run"] is None
        resumed = await client.post(f"/api/schedules/{sid}/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        deleted = await client.delete(f"/api/schedules/{sid}")
        assert deleted.status_code == 200 and deleted.json()["removed"] is True
        assert deleted.json()["schedule"]["id"] == sid
        gone = await client.get(f"/api/schedules/{sid}")
        assert gone.status_code == 404 and gone.json() == {
            "error": "unknown schedule",
            "detail": f"unknown schedule {sid!r}",
        }
        doc = (await client.get("/api/openapi.json")).json()
    _, events = bus.subscribe(start)
    assert [e.kind for e in events] == ["schedule.changed"] * 5
    assert events[-1].data["removed"] is True and events[-1].data["schedule"]["id"] == sid
    for path in (
        "/api/jobs/{name}/schedules",
        "/api/schedules",
        "/api/schedules/{schedule_id}",
        "/api/schedules/{schedule_id}/pause",
        "/api/schedules/{schedule_id}/resume",
        "/api/preview",
    ):
        assert path in doc["paths"]
    assert set(doc["paths"]["/api/jobs/{name}/schedules"]) == {"get", "post"}


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (
            {"every": "5m", "params": {"region": "eu", "limit": "all"}},
            400,
            {
                "error": "invalid parameter",
                "detail": "job 'report': parameter 'limit': expected int, got 'all' (str)",
                "job": "report",
                "parameter": "limit",
            },
        ),
        (
            {"every": "5m"},
            400,
            {
                "error": "invalid parameter",
                "detail": "job 'report': parameter 'region': missing required parameter",
                "job": "report",
                "parameter": "region",
            },
        ),
        (
            {"cron": "61 * * * *", "params": {"region": "eu"}},
            400,
            {
                "error": "invalid schedule",
                "detail": "cron: '61 * * * *': minute field '61' is out of range 0-59",
                "field": "cron",
            },
        ),
        (
            {"cron": "0 9 * * *", "tz": "Atlantis/Capital", "params": {"region": "eu"}},
            400,
            {
                "error": "invalid schedule",
                "detail": "tz: 'Atlantis/Capital': unknown time zone",
                "field": "tz",
            },
        ),
        (
            {"params": {"region": "eu"}},
            400,
            {
                "error": "invalid schedule",
                "detail": "schedule: exactly one of cron, every, at is required (given: none)",
                "field": "schedule",
            },
        ),
        (
            {"cron": ["0 9 * * *"], "params": {"region": "eu"}},
            400,
            {
                "error": "invalid schedule",
                "detail": "cron: ['0 9 * * *']: must be a string",
                "field": "cron",
            },
        ),
        (
            {"every": "5m", "params": {"region": "eu"}, "module": "os.system"},
            400,
            {
                "error": "unknown field in body",
                "detail": "'module'; accepted: at, cron, end, every, params, paused, start, tz",
            },
        ),
        (
            {"every": "5m", "params": ["eu"]},
            400,
            {
                "error": "invalid parameter",
                "detail": "job 'report': parameters: must be a JSON object of name: value, "
                "not list",
                "job": "report",
                "parameter": None,
            },
        ),
    ],
)
async def test_api_bad_schedules_get_a_4xx_naming_the_culprit(api_hub, body, status, expected):
    async with serving(api_hub.asgi(), lifespan=False) as client:
        response = await client.post("/api/jobs/report/schedules", json=body)
        assert response.status_code == status, response.text
        assert response.json() == expected
        assert (await client.get("/api/schedules")).json() == {"schedules": []}


async def test_api_unknown_jobs_schedules_and_methods(api_hub):
    async with serving(api_hub.asgi(), lifespan=False) as client:
        unknown = await client.post("/api/jobs/nope/schedules", json={"every": "5m"})
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown job"
        assert "unknown job 'nope'" in unknown.json()["detail"]
        for method, path in (
            ("GET", "/api/schedules/0123456789ab"),
            ("DELETE", "/api/schedules/0123456789ab"),
            ("POST", "/api/schedules/0123456789ab/pause"),
            ("POST", "/api/schedules/0123456789ab/resume"),
        ):
            response = await client.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] == "unknown schedule"
        assert (await client.get("/api/schedules/..%2F..%2Fetc")).status_code == 404
        wrong = await client.put("/api/schedules/0123456789ab")
        assert wrong.status_code == 405
        not_json = await client.post(
            "/api/jobs/report/schedules",
            content=b"every=5m",
            headers={"content-type": "text/plain"},
        )
        assert not_json.status_code == 415
        broken = await client.post(
            "/api/jobs/report/schedules",
            content=b"{nope",
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 400 and broken.json()["error"] == "invalid JSON body"
        filtered = await client.get("/api/schedules", params={"job": "nope"})
        assert filtered.status_code == 404
        typo = await client.get("/api/schedules", params={"jobs": "report"})
        assert typo.status_code == 400 and typo.json()["error"] == "unknown query parameter"


async def test_api_preview_computes_like_cronhub_next(api_hub):
    async with serving(api_hub.asgi(), lifespan=False) as client:
        response = await client.get(
            "/api/preview", params={"expr": "0 9 * * MON", "tz": "Europe/Berlin", "count": 2}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "valid": True,
            "times": ["2026-01-05T09:00:00+01:00", "2026-01-12T09:00:00+01:00"],
            "schedule_text": "at 09:00 on Monday (Europe/Berlin)",
            "tz": "Europe/Berlin",
            "error": None,
            "field": None,
        }
        every = (await client.get("/api/preview", params={"expr": "90m", "kind": "every"})).json()
        assert every["times"][:2] == ["2026-01-05T01:30:00+00:00", "2026-01-05T03:00:00+00:00"]
        # An expression that cannot be used is the answer (as the form shows it), with the
        # reason cronhub next gives.
        with pytest.raises(ScheduleError) as expected:
            parse_expression("0 9 * * FUNDAY")
        bad = await client.get("/api/preview", params={"expr": "0 9 * * FUNDAY"})
        assert bad.status_code == 200
        assert bad.json() == {
            "valid": False,
            "times": [],
            "schedule_text": None,
            "tz": "UTC",
            "error": f"expr: {expected.value}",
            "field": "expr",
        }
        zone = await client.get("/api/preview", params={"expr": "* * * * *", "tz": "Nowhere"})
        assert zone.json()["valid"] is False and zone.json()["field"] == "tz"
        for params, error in (
            ({}, "missing query parameter"),
            ({"expr": ""}, "missing query parameter"),
            ({"expr": "* * * * *", "count": "0"}, "bad query parameter"),
            ({"expr": "* * * * *", "kind": "yearly"}, "bad query parameter"),
            ({"expr": "* * * * *", "when": "now"}, "unknown query parameter"),
        ):
            response = await client.get("/api/preview", params=params)
            assert response.status_code == 400 and response.json()["error"] == error, params


async def test_a_schedule_added_through_the_api_runs_in_the_apps_scheduler(api_hub, clock):
    app = api_hub.asgi()
    async with serving(app) as client:
        engine = app.state.engine
        added = await client.post(
            "/api/jobs/report/schedules", json={"every": "1m", "params": {"region": "apac"}}
        )
        assert added.status_code == 201, added.text
        sid = added.json()["id"]
        await advance_to(engine, clock, at("00:02:00"))
        runs = (await client.get("/api/runs", params={"job": "report"})).json()["runs"]
        assert [(r["schedule_id"], r["status"]) for r in runs] == [(sid, "succeeded")] * 2
        detail = (await client.get(f"/api/runs/{runs[0]['id']}")).json()
        assert detail["params"] == {"region": "apac"} and "report apac 10" in detail["log"]


# -- the dashboard, in Chromium ----------------------------------------------------------------


def dashboard_report(ctx, *, region: str, limit: int = 10):
    ctx.log.info("report for %s (%s)", region, limit)


@contextlib.contextmanager
def dashboard_server(tmp_path):
    hub = Hub(
        storage=f"sqlite:///{tmp_path / 'cronhub.db'}",
        disable_plugins=["acme"],
        shutdown_grace=1,
    )
    hub.job(name="report", on_demand=True, description="A report per region.")(dashboard_report)
    server = Server(hub.asgi(), hub).start()
    try:
        yield server
    finally:
        server.stop()
        hub.close()


@pytest.fixture
def browser():
    """Chromium for one test (launched as the dashboard tests do).

    Function-scoped: Playwright's sync API keeps an event loop running in this thread while
    it is open, and the async tests of this module need the thread's loop to themselves.
    """
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CRONHUB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CRONHUB_REQUIRE_BROWSER=1 but {CHROMIUM} is missing")
        pytest.skip(f"{CHROMIUM} is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_dashboard_form_previews_adds_pauses_and_deletes(tmp_path, browser):
    with dashboard_server(tmp_path) as server:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        context.set_default_timeout(WAIT)
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                problems.append(message.text)
                if "Content Security Policy" in message.text or message.type == "warning"
                else None
            ),
        )
        try:
            page.goto(f"{server.url}/jobs/report")
            page.locator("#rs-empty").wait_for(state="visible")
            assert page.locator("#rs-takes").inner_text() == (
                "The job takes region: str (required), limit: int = 10."
            )
            # The preview appears while typing, before anything is saved.
            page.fill("#rs-tz", "Europe/Berlin")
            page.fill("#rs-expr", "0 9 * * MON-FRI")
            page.locator("#rs-times li").nth(4).wait_for()
            when = page.locator("#rs-times .rs-when").all_inner_texts()
            assert len(when) == 5
            assert all(w[:3] in ("Mon", "Tue", "Wed", "Thu", "Fri") for w in when), when
            assert all(" 09:00 +0" in w for w in when), when  # +01:00 or +02:00 (summer)
            expected = preview("0 9 * * MON-FRI", tz="Europe/Berlin", kind="cron")
            assert page.locator("#rs-preview-text").inner_text() == expected.text
            assert server.hub.storage.list_schedules() == []
            # An expression that cannot be used: the reason cronhub next gives.
            page.fill("#rs-expr", "61 * * * *")
            page.locator("#rs-preview-text.is-error").wait_for()
            assert page.locator("#rs-preview-text").inner_text() == (
                "cron: '61 * * * *': minute field '61' is out of range 0-59"
            )
            assert page.locator("#rs-times").is_hidden()
            # A parameter of the wrong type: the 4xx names it, nothing is stored.
            page.fill("#rs-expr", "30 8 * * *")
            page.fill("#rs-params", '{"region": 5}')
            page.click("#rs-save")
            page.locator("#rs-error").wait_for(state="visible")
            assert page.locator("#rs-error").inner_text() == (
                "job 'report': parameter 'region': expected str, got 5 (int)"
            )
            assert server.hub.storage.list_schedules() == []
            # Saved: the row appears without a reload, and the scheduler picks it up.
            page.fill("#rs-params", '{"region": "eu", "limit": 3}')
            page.click("#rs-save")
            page.locator("#rs-table tbody tr").first.wait_for()
            (stored,) = server.hub.storage.list_schedules()
            assert (stored.expression, stored.tz, stored.params) == (
                "30 8 * * *",
                "Europe/Berlin",
                {"region": "eu", "limit": 3},
            )
            assert stored.created_by == "dashboard"
            row = page.locator(f'tr[data-schedule="{stored.id}"]')
            assert row.locator(".rs-params").inner_text() == '{"limit": 3, "region": "eu"}'
            assert (
                page.locator("#rs-empty").is_hidden()
                and page.locator("#rs-count").inner_text() == "1"
            )
            assert page.locator("#rs-status").inner_text().startswith(f"Added schedule {stored.id}")
            page.select_option("#rs-kind", "every")
            page.fill("#rs-expr", "1s")
            page.fill("#rs-params", '{"region": "apac"}')
            page.locator("#rs-times li").first.wait_for()
            page.click("#rs-save")
            page.locator("#rs-table tbody tr").nth(1).wait_for()
            every = next(s for s in server.hub.storage.list_schedules() if s.kind == "every")
            wait_for(
                lambda: any(r.schedule_id == every.id for r in server.runs("report")),
                "a run of the schedule added in the browser",
                timeout=60,
            )
            SHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SHOTS / "runtime-schedules.png"), full_page=True)
            # Pause, resume and delete act at once, and persist.
            row = page.locator(f'tr[data-schedule="{every.id}"]')
            row.locator("[data-rs-action=pause]").click()
            page.locator(f'tr[data-schedule="{every.id}"][data-paused="yes"]').wait_for()
            assert server.hub.storage.get_schedule(every.id).paused is True
            page.locator(f'tr[data-schedule="{every.id}"] [data-rs-action=resume]').click()
            page.locator(f'tr[data-schedule="{every.id}"][data-paused="no"]').wait_for()
            assert server.hub.storage.get_schedule(every.id).paused is False
            delete = page.locator(f'tr[data-schedule="{every.id}"] [data-rs-action=delete]')
            delete.click()
            assert delete.inner_text() == "Confirm delete"
            delete.click()
            page.locator(f'tr[data-schedule="{every.id}"]').wait_for(state="detached")
            assert server.hub.storage.get_schedule(every.id) is None
            assert page.locator("#rs-count").inner_text() == "1"
            # After a reload the server renders the same list.
            page.reload()
            page.locator(f'tr[data-schedule="{stored.id}"]').wait_for()
            assert page.locator("#rs-table tbody tr").count() == 1
        finally:
            context.close()
        assert problems == [], problems


# -- run now, with parameters ---------------------------------------------------------------------


async def test_run_now_checks_parameters_before_queueing(api_hub):
    engine = Engine(api_hub)
    await engine.start()
    try:
        with pytest.raises(ParameterError, match="parameter 'region': expected str, got 5"):
            await engine.run_now("report", params={"region": 5})
    finally:
        await engine.stop()
    async with serving(api_hub.asgi(), lifespan=False) as client:  # web-only: no engine
        response = await client.post("/api/jobs/report/run", json={"params": {"limit": 2}})
        assert response.status_code == 400
        assert response.json()["detail"] == (
            "job 'report': parameter 'region': missing required parameter"
        )
        good = await client.post("/api/jobs/report/run", json={"params": {"region": "eu"}})
        assert good.status_code == 202, good.text
    assert [r.params for r in history(api_hub)] == [{"region": "eu"}]


def test_cli_run_passes_parameters(run_cli, cli_app):
    root, env = cli_app
    ran = run_cli(
        "--app", "schapp:hub", "run", "report", "--params", '{"region": "us", "limit": 4}',
        "--json", env=env, pythonpath=[root],
    )  # fmt: skip
    assert ran.code == 0, ran.stderr
    assert ran.json()["params"] == {"region": "us", "limit": 4}
    assert (root / "runs.log").read_text().split()[2:4] == ["us", "4"]
    refused = run_cli("--app", "schapp:hub", "run", "report", env=env, pythonpath=[root])
    assert refused.code == 2
    assert refused.stderr.strip() == (
        "error: job 'report': parameter 'region': missing required parameter"
    )
