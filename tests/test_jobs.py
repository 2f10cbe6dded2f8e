"""``@cronhub.job``: options, validation errors that name the job, sources and duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import cronhub
from cronhub.errors import DuplicateJobError, HookError, JobDefinitionError


def noop() -> None:
    pass


def test_defaults_and_name():
    job = cronhub.job(
        noop, cron="0 2 * * *", tz="Europe/Berlin", retries=3, timeout="10m", tags=["billing"]
    )
    assert job.name == f"{noop.__module__}.noop"
    assert job.kind == "cron" and str(job.tz) == "Europe/Berlin"
    assert (job.retries, job.timeout, job.tags) == (3, 600.0, ("billing",))
    assert (job.overlap, job.catch_up, job.misfire_grace) == ("skip", "latest", 60.0)
    assert (job.retry_delay, job.backoff, job.catch_up_limit, job.catch_up_window) == (
        10.0,
        2.0,
        100,
        86400.0,
    )
    assert job.executor == "thread" and job.takes_context is False
    job()  # still callable like the function


def test_async_jobs_default_to_async_executor_and_context_is_detected():
    async def body(ctx: cronhub.RunContext) -> None:
        pass

    job = cronhub.job(body, every="90s", name="a")
    assert job.executor == "async" and job.takes_context is True
    assert job.schedule.next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2026, 1, 1, 0, 1, 30, tzinfo=UTC
    )


def test_cron_list_is_the_union_of_slots():
    job = cronhub.job(noop, name="u", cron=["0 9 * * 1-5", "0 12 * * 6"])
    start = datetime(2026, 1, 2, 10, tzinfo=UTC)  # a Friday
    first = job.schedule.next_after(start)
    second = job.schedule.next_after(first)
    assert (first, second) == (
        datetime(2026, 1, 3, 12, tzinfo=UTC),
        datetime(2026, 1, 5, 9, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"cron": "61 * * * *"}, "option cron='61 * * * *'"),
        ({"cron": "0 0 30 2 *"}, "option cron='0 0 30 2 *'"),
        (
            {"cron": "0 2 * * *", "tz": "Mars/Olympus"},
            "option tz='Mars/Olympus': unknown time zone",
        ),
        ({"every": "5 parsecs"}, "option every='5 parsecs'"),
        ({"every": 0}, "option every=0"),
        ({"at": "tomorrow"}, "option at='tomorrow'"),
        ({"every": "1m", "timeout": "-3s"}, "option timeout='-3s'"),
        ({"every": "1m", "retries": -1}, "option retries=-1: must be a whole number >= 0"),
        ({"every": "1m", "retries": 1.5}, "option retries=1.5"),
        ({"every": "1m", "backoff": 0.5}, "option backoff=0.5: must be a number >= 1.0"),
        (
            {"every": "1m", "overlap": "sometimes"},
            "option overlap='sometimes': must be one of skip, allow, queue, replace",
        ),
        (
            {"every": "1m", "catch_up": "most"},
            "option catch_up='most': must be one of latest, all, none",
        ),
        ({"every": "1m", "jitter": "2m"}, "option jitter='2m': must be shorter than the interval"),
        ({"every": "1m", "run_on_startup": "yes"}, "option run_on_startup='yes'"),
        ({"every": "1m", "tags": "billing"}, "option tags='billing'"),
        (
            {
                "every": "1m",
                "start": "2026-02-01T00:00:00+00:00",
                "end": "2026-01-01T00:00:00+00:00",
            },
            "option end=",
        ),
        ({}, "exactly one of cron, every, at is required (given: none)"),
        (
            {"cron": "* * * * *", "every": "1m"},
            "exactly one of cron, every, at is required (given: cron, every)",
        ),
    ],
)
def test_bad_options_name_job_option_and_value(options, fragment):
    with pytest.raises(JobDefinitionError) as info:
        cronhub.job(noop, name="billing.nightly", **options)
    message = str(info.value)
    assert message.startswith("job 'billing.nightly': ")
    assert fragment in message


def test_job_function_signature_is_checked():
    def two(a, b):
        pass

    # The first positional parameter is the context; a job parameter without a default cannot
    # be filled by the job's own slots.
    with pytest.raises(
        JobDefinitionError,
        match=r"job 'x': parameter 'b' has no default, and the job's own schedule calls it",
    ):
        cronhub.job(two, name="x", every="1m")
    assert cronhub.job(two, name="x", on_demand=True).kind == "on_demand"

    def positional_only(ctx, region, /):
        pass

    with pytest.raises(JobDefinitionError, match=r"\(region\) cannot be passed by keyword"):
        cronhub.job(positional_only, name="y", on_demand=True)


def test_process_jobs_must_be_importable():
    def local():
        pass

    with pytest.raises(JobDefinitionError, match="module-level function"):
        cronhub.job(local, name="p", every="1m", executor="process")


def test_start_and_end_window():
    job = cronhub.job(
        noop,
        name="w",
        every="1h",
        start="2026-01-01T00:30:00+00:00",
        end="2026-01-01T03:00:00+00:00",
    )
    assert job.next_run(datetime(2025, 1, 1, tzinfo=UTC)) == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert job.next_run(datetime(2026, 1, 1, 0, 30, tzinfo=UTC)) == datetime(
        2026, 1, 1, 1, 30, tzinfo=UTC
    )
    assert job.next_run(datetime(2026, 1, 1, 2, 30, tzinfo=UTC)) is None
    assert job.retry_delay_for(1) == 10 and job.retry_delay_for(3) == 40


def test_hub_job_decorator_and_duplicates(plugin_manager):
    hub = cronhub.Hub(storage="memory://", plugin_manager=plugin_manager)

    @hub.job(every="1m", name="dup")
    def first():
        pass

    with pytest.raises(DuplicateJobError, match="job 'dup' is defined twice"):
        hub.job(noop, every="1m", name="dup")
    assert list(hub.jobs) == ["dup"] and hub.jobs["dup"].plugin == "app"


def test_cronhub_jobs_hook_and_duplicate_names_both_sources(plugin_manager, register_plugin):
    hub = cronhub.Hub(storage="memory://", plugin_manager=plugin_manager)
    hub.job(noop, every="1m", name="report.daily")

    class Reports:
        @cronhub.hookimpl
        def cronhub_jobs(self, hub):
            return [cronhub.job(noop, cron="0 6 * * *", name="report.weekly")]

    register_plugin(Reports(), name="reports")
    assert hub.jobs["report.weekly"].plugin == "reports"

    class Clash:
        @cronhub.hookimpl
        def cronhub_jobs(self, hub):
            yield cronhub.job(noop, every="5m", name="report.daily")

    register_plugin(Clash(), name="clash")
    with pytest.raises(DuplicateJobError) as info:
        hub.collect()
    assert str(info.value) == (
        "job 'report.daily' is defined twice: by the application and by plugin 'clash'"
    )


def test_cronhub_jobs_hook_failure_names_plugin(plugin_manager, register_plugin):
    class Broken:
        @cronhub.hookimpl
        def cronhub_jobs(self, hub):
            yield cronhub.job(noop, every="1m", name="ok")
            raise RuntimeError("config missing")

    register_plugin(Broken(), name="broken-jobs")
    hub = cronhub.Hub(storage="memory://", plugin_manager=plugin_manager)
    with pytest.raises(
        HookError, match=r"cronhub_jobs failed in plugin 'broken-jobs'.*config missing"
    ):
        hub.collect()


def test_cronhub_modify_jobs_filters_and_overrides(plugin_manager, register_plugin):
    hub = cronhub.Hub(storage="memory://", plugin_manager=plugin_manager)
    hub.job(noop, every="1m", name="keep", tags=["x"])
    hub.job(noop, every="1m", name="drop", tags=["prod-only"])

    class Staging:
        @cronhub.hookimpl
        def cronhub_modify_jobs(self, hub, jobs):
            jobs[:] = [j.replace(timeout=5.0) for j in jobs if "prod-only" not in j.tags]

    register_plugin(Staging(), name="staging")
    assert list(hub.jobs) == ["keep"] and hub.jobs["keep"].timeout == 5.0


def test_cronhub_collect_hook_adds_jobs_from_modules(fake_distribution, register_plugin):
    fake_distribution(
        "listing-jobs",
        "1.0",
        {"listing": "listing_mod"},
        {
            "listing_mod.py": """
            import cronhub
            def body():
                pass
            JOBS = (cronhub.job(body, name="listed", every="1h"),)
        """
        },
    )
    from cronhub.plugins import get_plugin_manager

    pm = get_plugin_manager()

    class ListCollector:
        @cronhub.hookimpl
        def cronhub_collect(self, module):
            return getattr(module, "JOBS", None)

    pm.register(ListCollector(), name="list-collector")
    hub = cronhub.Hub(storage="memory://", plugin_manager=pm)
    assert hub.jobs["listed"].plugin == "listing"


def test_window_and_every_anchor():
    start = datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
    job = cronhub.job(noop, name="anchored", every=timedelta(minutes=10), start=start)
    assert job.next_run(start) == start + timedelta(minutes=10)


def test_options_read_before_are_still_checked():
    # Accepted durations are remembered by option, type and value: never an error.
    for _ in range(2):
        job = cronhub.job(noop, name="d", every="1m", retry_delay="5m", misfire_grace=1)
        assert (job.retry_delay, job.misfire_grace, job.catch_up_window) == (300.0, 1.0, 86400.0)
        # True equals 1 as a dictionary key, but it is no duration
        with pytest.raises(JobDefinitionError, match="option misfire_grace=True: must be sec"):
            cronhub.job(noop, name="d", every="1m", misfire_grace=True)
        with pytest.raises(JobDefinitionError, match="option retry_delay='5 parsecs'"):
            cronhub.job(noop, name="d", every="1m", retry_delay="5 parsecs")


def test_jobs_share_the_schedule_of_one_expression_and_zone():
    a = cronhub.job(noop, name="a", cron="0 2 * * *", tz="Europe/Berlin")
    b = cronhub.job(noop, name="b", cron="0 2 * * *", tz="Europe/Berlin")
    c = cronhub.job(noop, name="c", cron="0 2 * * *")
    assert a.schedule is b.schedule and c.schedule is not a.schedule
    after = datetime(2026, 1, 1, tzinfo=UTC)
    assert a.schedule.next_after(after) == datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert c.schedule.next_after(after) == datetime(2026, 1, 1, 2, tzinfo=UTC)


class _Base:
    def run(self) -> None:
        """Inherited summary.

        More text.
        """


class _Child(_Base):
    def run(self) -> None:
        pass


def test_description_is_the_first_docstring_line_read_anew():
    def documented() -> None:
        """Refresh the cache.

        Details.
        """

    assert cronhub.job(documented, name="x", every="1m").description == "Refresh the cache."
    documented.__doc__ = "Changed."
    assert cronhub.job(documented, name="x", every="1m").description == "Changed."
    documented.__doc__ = None
    assert cronhub.job(documented, name="x", every="1m").description == ""
    assert cronhub.job(noop, name="x", every="1m").description == ""
    # what inspect.getdoc finds: a method's docstring inherited from its base class
    assert cronhub.job(_Child().run, name="x", every="1m").description == "Inherited summary."
    assert cronhub.job(noop, name="x", every="1m", description="Mine").description == "Mine"


def test_hub_registers_app_jobs_as_app(plugin_manager):
    hub = cronhub.Hub(storage="memory://", plugin_manager=plugin_manager)
    job = cronhub.job(noop, name="a", every="1m")
    hub.add_job(job)
    hub.add_job(job.replace(name="b", plugin="elsewhere"))
    assert hub.jobs["a"] is job
    assert (hub.jobs["a"].plugin, hub.jobs["b"].plugin) == ("app", "app")
