"""The ``cronhub`` executable as a user runs it: output, JSON field by field, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

JOBS_MODULE = """
import cronhub

@cronhub.job(name="acme.report", cron="30 2 * * *", tz="Europe/Berlin", retries=2,
             timeout="10m", tags=["billing", "nightly"])
def report(ctx: cronhub.RunContext) -> None:
    '''Send the nightly report.'''

@cronhub.job(name="acme.poll", every="90s")
def poll() -> None:
    pass
"""


@pytest.fixture
def acme(fake_distribution):
    return fake_distribution(
        "acme-jobs", "1.4.0", {"acme": "acme_cli_jobs"}, {"acme_cli_jobs.py": JOBS_MODULE}
    )


def test_next_json_across_berlin_spring_forward(run_cli):
    result = run_cli(
        "next",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-03-27T00:00:00+01:00",
        "--count",
        "4",
        "--json",
    )
    assert result.code == 0, result.stderr
    assert result.json() == [
        "2026-03-27T02:30:00+01:00",
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_next_text_and_every_forms(run_cli):
    result = run_cli("next", "every:90s", "--after", "2026-01-01T00:00:00+00:00", "--count", "2")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# ")
    assert lines[1:] == ["2026-01-01T00:01:30+00:00", "2026-01-01T00:03:00+00:00"]


def test_next_naive_after_is_read_in_the_zone(run_cli):
    result = run_cli(
        "next",
        "@hourly",
        "--tz",
        "America/New_York",
        "--after",
        "2026-11-01T00:30",
        "--count",
        "3",
        "--json",
    )
    assert result.json() == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["next", "61 * * * *"], ["'61 * * * *'", "minute"]),
        (["next", "0 0 30 2 *"], ["'0 0 30 2 *'", "never"]),
        (["next", "* * * * *", "--tz", "Mars/Olympus"], ["'Mars/Olympus'", "unknown time zone"]),
        (
            ["next", "* * * * *", "--after", "yesterday-ish"],
            ["--after 'yesterday-ish'", "ISO 8601"],
        ),
        (
            ["--storage", "redis://localhost:6379/0", "list"],
            [
                "no storage plugin handles 'redis://localhost:6379/0'",
                "installed backends:",
                "memory",
            ],
        ),
        (
            ["--app", "no_such_module_xyz:hub", "list"],
            ["--app 'no_such_module_xyz:hub'", "cannot import"],
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_culprit_and_exit_2(run_cli, args, fragments):
    result = run_cli(*args)
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_password_in_storage_url_is_never_printed(run_cli):
    result = run_cli("--storage", "redis://admin:s3cr3t-pw@db.example:6379/0", "list")
    assert result.code == 2
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert "redis://admin:***@db.example:6379/0" in result.stderr


def test_list_json_fields(run_cli, acme):
    result = run_cli(
        "list", "--json", pythonpath=[acme], env={"CRONHUB_DISABLE_PLUGINS": "acme-jobs-real"}
    )
    assert result.code == 0, result.stderr
    jobs = {job["name"]: job for job in result.json()}
    report = jobs["acme.report"]
    assert report["kind"] == "cron"
    assert report["schedule"] == "30 2 * * *"
    assert report["tz"] == "Europe/Berlin"
    assert report["tags"] == ["billing", "nightly"]
    assert report["description"] == "Send the nightly report."
    assert report["paused"] is False
    assert report["next_run"].endswith(("+01:00", "+02:00")) and "T02:30:00" in report["next_run"]
    assert report["last_run"] is None and report["last_status"] is None
    assert report["plugin"] == "acme"
    assert (report["retries"], report["timeout"], report["overlap"], report["catch_up"]) == (
        2,
        600.0,
        "skip",
        "latest",
    )
    poll = jobs["acme.poll"]
    assert (poll["kind"], poll["schedule"], poll["tz"]) == ("every", 90.0, "UTC")


def test_list_tag_filter_and_text(run_cli, acme):
    result = run_cli("list", "--tag", "billing", pythonpath=[acme])
    assert result.code == 0, result.stderr
    assert "acme.report" in result.stdout and "acme.poll" not in result.stdout
    assert result.stdout.splitlines()[0].split() == [
        "NAME",
        "SCHEDULE",
        "TZ",
        "NEXT",
        "RUN",
        "LAST",
        "STATUS",
    ]


def test_list_text_shows_intervals_in_words(run_cli, acme):
    result = run_cli("list", pythonpath=[acme])
    assert result.code == 0, result.stderr
    [poll] = [line for line in result.stdout.splitlines() if line.startswith("acme.poll ")]
    assert "every 90 seconds" in poll


def test_plugins_json(run_cli, acme):
    result = run_cli("plugins", "--json", pythonpath=[acme])
    assert result.code == 0, result.stderr
    plugin = {p["name"]: p for p in result.json()}["acme"]
    assert plugin == {
        "name": "acme",
        "distribution": "acme-jobs",
        "version": "1.4.0",
        "module": "acme_cli_jobs",
        "builtin": False,
        "hooks": [],
        "error": None,
        "disabled": False,
    }
    everything = run_cli("plugins", "--all", "--json", "--hook", "cronhub_storage").json()
    assert "memory" in {p["name"] for p in everything}
    assert all("cronhub_storage" in p["hooks"] for p in everything)


def test_broken_plugin_is_one_line_and_others_work(run_cli, acme, fake_distribution):
    broken = fake_distribution(
        "broken-jobs",
        "0.3",
        {"broken": "broken_cli_mod"},
        {"broken_cli_mod.py": "import not_a_module_x\n"},
    )
    result = run_cli("list", "--json", pythonpath=[acme, broken])
    assert result.code == 0
    assert "acme.report" in {job["name"] for job in result.json()}
    assert result.stderr.strip() == (
        "error: plugin 'broken' (entry point broken = broken_cli_mod, distribution broken-jobs "
        "0.3) failed to load: ModuleNotFoundError: No module named 'not_a_module_x'"
    )
    strict = run_cli("--strict-plugins", "list", pythonpath=[acme, broken])
    assert strict.code == 2 and "broken-jobs 0.3" in strict.stderr
    disabled = run_cli("--disable-plugin", "broken-jobs", "list", pythonpath=[acme, broken])
    assert disabled.code == 0 and disabled.stderr == ""


def test_check_lists_every_problem(run_cli, fake_distribution, acme):
    bad_job = fake_distribution(
        "bad-jobs",
        "2.0",
        {"bad": "bad_cli_jobs"},
        {
            "bad_cli_jobs.py": "import cronhub\n@cronhub.job(name='bad.job', cron='0 25 * * *')\n"
            "def f():\n    pass\n"
        },
    )
    broken = fake_distribution(
        "broken-jobs",
        "0.3",
        {"broken": "broken_cli_mod"},
        {"broken_cli_mod.py": "raise RuntimeError('boom')\n"},
    )
    result = run_cli("check", pythonpath=[acme, bad_job, broken])
    assert result.code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any("bad-jobs 2.0" in e and "job 'bad.job'" in e and "'0 25 * * *'" in e for e in errors)
    assert [e for e in errors if "broken-jobs 0.3" in e and "RuntimeError: boom" in e] == [
        next(e for e in errors if "broken-jobs" in e)
    ], "the load error is printed exactly once"
    assert result.stderr.rstrip().endswith("2 problem(s) found")
    good = run_cli("check", pythonpath=[acme])
    assert good.code == 0, good.stderr
    assert good.stdout.startswith("ok: ") and "job(s)" in good.stdout


def test_check_reports_duplicate_job_names_with_both_sources(run_cli, acme, fake_distribution):
    twin = fake_distribution(
        "twin-jobs", "1.0", {"twin": "twin_cli_jobs"}, {"twin_cli_jobs.py": JOBS_MODULE}
    )
    result = run_cli("check", pythonpath=[acme, twin])
    assert result.code == 2
    assert result.stderr.splitlines()[0] == (
        "error: job 'acme.report' is defined twice: by plugin 'acme' (distribution acme-jobs "
        "1.4.0) and by plugin 'twin' (distribution twin-jobs 1.0)"
    )


def test_app_hub(run_cli, tmp_path):
    (tmp_path / "myapp.py").write_text(
        "import cronhub\nhub = cronhub.Hub()\n\n@hub.job(every='5m', name='app.refresh')\n"
        "def refresh():\n    pass\n"
    )
    result = run_cli("--app", "myapp:hub", "list", "--json")
    assert result.code == 0, result.stderr
    job = {j["name"]: j for j in result.json()}["app.refresh"]
    assert job["plugin"] == "app" and job["schedule"] == 300.0
    wrong = run_cli("--app", "myapp:refresh", "list")
    assert wrong.code == 2 and "not a cronhub.Hub" in wrong.stderr


def test_next_does_not_import_web_or_database_stack():
    code = (
        "import sys\nfrom cronhub.cli import main\n"
        "assert main(['next', '*/5 * * * *', '--json']) == 0\n"
        "heavy = {'sqlalchemy', 'starlette', 'uvicorn', 'jinja2', 'psycopg', 'httpx'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    times = json.loads("".join(proc.stdout.strip().splitlines()[:-1]))
    assert len(times) == 5


def test_plugin_commands_are_added_and_collisions_named(plugin_manager, register_plugin):
    import typer
    from typer.testing import CliRunner

    import cronhub
    from cronhub.cli import make_cli
    from cronhub.errors import UsageError

    class Slackish:
        @cronhub.hookimpl
        def cronhub_cli(self, app):
            sub = typer.Typer()

            @sub.command("test")
            def send() -> None:
                typer.echo("sent")

            app.add_typer(sub, name="slack")

    register_plugin(Slackish(), name="slackish")
    result = CliRunner().invoke(make_cli(plugin_manager), ["slack", "test"])
    assert result.exit_code == 0 and result.output.strip() == "sent"

    class Clash:
        @cronhub.hookimpl
        def cronhub_cli(self, app):
            app.command("list")(lambda: None)

    register_plugin(Clash(), name="clash")
    with pytest.raises(UsageError, match="command 'list' of plugin 'clash' is already defined by"):
        make_cli(plugin_manager)


def test_without_a_storage_plugin_the_default_falls_back_to_memory_and_says_so(run_cli):
    result = run_cli(
        "history", env={"CRONHUB_STORAGE": None, "CRONHUB_DISABLE_PLUGINS": "storage_sqlite"}
    )
    assert result.code == 0, result.stderr
    assert "using memory:// (nothing persists" in result.stderr


def test_an_explicit_url_no_plugin_handles_is_not_replaced_by_memory(run_cli):
    result = run_cli(
        "history",
        env={"CRONHUB_STORAGE": "sqlite:///x.db", "CRONHUB_DISABLE_PLUGINS": "storage_sqlite"},
    )
    assert result.code == 2, result.stderr
    backends = result.stderr.split("installed backends: ")[1]
    assert "memory" in backends and "storage_sqlite" not in backends
