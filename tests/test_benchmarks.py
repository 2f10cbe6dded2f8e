"""The benchmark harness (``benchmarks/``): option handling, the subject protocol, the report.

Nothing here times anything: the figures are made up, or ignored, and only the harness's
handling of them is checked.
"""

# ruff: noqa: RUF001 (the report's en dashes and multiplication signs are expected text)
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import report  # noqa: E402
import run  # noqa: E402
import suite  # noqa: E402


def subject(name: str) -> suite.Subject:
    return next(s for s in (*suite.SUBJECTS, *suite.EXTRA_SUBJECTS) if s.name == name)


def test_subjects_by_name_or_prefix():
    chosen = run.select_subjects("cronhub,floor,cronhub-memory")
    assert [s.name for s in chosen] == ["cronhub-memory", "cronhub-sqlite", "floor"]
    assert run.select_subjects("fastscheduler-memory") == [subject("fastscheduler-memory")]
    assert run.select_subjects(None) == list(suite.SUBJECTS)
    with pytest.raises(SystemExit, match="unknown subject 'airflow' \\(known: floor, "):
        run.select_subjects("airflow")


def test_workloads_and_sizes_from_options():
    assert run.select_workloads("w4,W1") == ["W1", "W4"]
    with pytest.raises(SystemExit, match="unknown workload\\(s\\) W9"):
        run.select_workloads("W1,W9")
    args = run.parse_args(["--quick", "--w1-duration", "7", "--w6-instances", "1,3"])
    params = run.sizes(args)
    assert params["W1"] == {"jobs": suite.QUICK_SIZES["W1"]["jobs"], "duration": 7}
    assert params["W6"]["instances"] == [1, 3]
    assert run.sizes(run.parse_args([]))["W3"] == {"jobs": 100_000}
    with pytest.raises(SystemExit, match="--w2-jobs must be positive"):
        run.sizes(run.parse_args(["--w2-jobs", "0"]))
    with pytest.raises(SystemExit, match="--w6-instances 'two'"):
        run.sizes(run.parse_args(["--w6-instances", "two"]))


def test_plan_interleaves_repeats_and_runs_idle_subjects_together():
    subjects = [subject("floor"), subject("cronhub-memory"), subject("croniter")]
    params = run.sizes(run.parse_args(["--quick"]))
    batches = run.plan(["W1", "W4", "W5"], subjects, params, 2)
    w1 = [(b[0].subject.name, b[0].repeat) for b in batches if b[0].workload == "W1"]
    assert w1 == [("floor", 0), ("cronhub-memory", 0), ("floor", 1), ("cronhub-memory", 1)]
    w4 = [[j.subject.name for j in b] for b in batches if b[0].workload == "W4"]
    assert w4 == [["floor", "cronhub-memory"], ["floor", "cronhub-memory"]]
    w5 = [b[0] for b in batches if b[0].workload == "W5"]
    assert {j.subject.name for j in w5} == {"cronhub-memory", "croniter"}
    assert w5[0].params["store"] == "memory"  # the subject's own parameters are added


def test_subject_processes_report_results_time_outs_and_errors(tmp_path):
    interpreters = {suite.PROJECT: Path(sys.executable)}
    w5 = {"iterations": 24}
    jobs = [
        run.Job(subject("croniter"), "W5", 0, w5, 120.0),
        run.Job(subject("cronhub-memory"), "W5", 0, {**w5, "store": "memory"}, 120.0),
        # A one-second limit on a 30 s window: stopped, and not repeated.
        run.Job(subject("floor"), "W1", 0, {"jobs": 1, "duration": 30}, 1.0),
        run.Job(subject("floor"), "W1", 1, {"jobs": 1, "duration": 30}, 1.0),
        run.Job(subject("floor"), "W2", 0, {"jobs": "many"}, 60.0),
        run.Job(subject("croniter"), "W9", 0, {}, 60.0),
    ]
    log: list[dict] = []
    run.run_jobs([[job] for job in jobs], interpreters, log)
    by = {(r["subject"], r["workload"], r["repeat"]): r for r in log}
    for name in ("croniter", "cronhub-memory"):
        record = by[(name, "W5", 0)]
        assert record["status"] == "ok", record
        assert set(record["result"]) >= {"us_utc", "us_dst", "per_expression"}
    assert by[("floor", "W1", 0)]["status"] == "timeout"
    assert ("floor", "W1", 1) not in by
    error = by[("floor", "W2", 0)]
    assert error["status"] == "error"
    assert "ValueError" in error["error"] and "'many'" in error["error"]
    assert by[("croniter", "W9", 0)]["status"] == "unsupported"
    assert len(log) == 5


def make_data() -> dict:
    def ok(subject_name, workload, repeat, **result):
        return {
            "subject": subject_name,
            "workload": workload,
            "repeat": repeat,
            "params": {},
            "status": "ok",
            "seconds": 1.0,
            "result": result,
        }

    records = [
        ok("floor", "W1", 0, p50_ms=5, p90_ms=8, p99_ms=10, max_ms=11, missed=0),
        ok("floor", "W1", 1, p50_ms=5, p90_ms=8, p99_ms=12, max_ms=13, missed=0),
        ok("cronhub-memory", "W1", 0, p50_ms=9, p90_ms=15, p99_ms=20, max_ms=21, missed=0),
        ok("cronhub-memory", "W1", 1, p50_ms=9, p90_ms=15, p99_ms=24, max_ms=25, missed=0),
        ok("cronhub-sqlite", "W1", 0, p50_ms=9, p90_ms=15, p99_ms=30, max_ms=31, missed=0),
        ok("cronhub-sqlite", "W1", 1, p50_ms=9, p90_ms=15, p99_ms=30, max_ms=31, missed=2),
        {
            "subject": "apscheduler-sqlite",
            "workload": "W1",
            "repeat": 0,
            "params": {},
            "status": "timeout",
            "limit": 80.0,
            "progress": 8000,
            "seconds": 80.0,
        },
        ok("cronhub-sqlite", "W2", 0, per_s=9000, recorded={"succeeded": 10}),
        {**ok("apscheduler-sqlite", "W2", 0, per_s=600, late_start_s=4.0), "not_repeated": True},
        {
            "subject": "cronhub-postgres",
            "workload": "W6",
            "repeat": 0,
            "params": {},
            "status": "absent",
            "error": "postgres_instances.py not found",
        },
    ]
    return {
        "started": "2026-01-05T00:00:00+00:00",
        "command": "python benchmarks/run.py",
        "repeats": 2,
        "workloads": ["W1", "W2", "W6"],
        "subjects": ["floor"],
        "params": {
            "W1": {"jobs": 1000, "duration": 20},
            "W2": {"jobs": 10},
            "W6": {"jobs": 1000, "duration": 20, "instances": [1, 2, 4]},
        },
        "environment": {"cores": 2, "load_before": [0.1, 0, 0], "load_after": [0.2, 0, 0]},
        "records": records,
        "seconds": 60.0,
    }


def test_report_tables_ratios_and_targets():
    text = report.render(make_data(), {}, "plots")
    # Medians with their range, ratios against the floor.
    assert "| **cronhub (memory://)** | 9.0 | 15.0 | 22.0 (20.0–24.0) | 23.0 (21.0–25.0) | 0 |" in (
        text
    )
    assert "| 2.00× |" in text
    # 22 / 11 = 2.0 is within 2x; 30 / 11 is within 3x but a repeat missed 2 slots.
    assert "| W1 | memory:// p99 within 2x the floor | 22.0 (20.0–24.0) | 11.0 | 2.00× | yes |" in (
        text
    )
    assert "| W1 | SQLite p99 within 3x the floor, 0 missed | 30.0 | 11.0 | 2.73× | **no** |" in (
        text
    )
    assert "| W2 | SQLite at least 15x APScheduler (SQLite) | 9,000 | 600 | 15.00× | yes |" in text
    assert "unfinished after 80 s, 8,000 done" in text
    assert "| APScheduler (SQLite) | 600 † | 1.00× |" in text
    assert "† One run only" in text
    assert "outlasted the lead time by up to 4.0 s" in text
    assert "cronhub (SQLite): runs in its database (last repeat): succeeded 10." in text
    assert "Not run: postgres_instances.py not found." in text
    assert "Noisy figures" not in text  # a quiet machine


def test_report_says_when_the_machine_was_busy_and_merges_runs(tmp_path):
    first = make_data()
    first["environment"]["load_before"] = [3.5, 0, 0]
    second = make_data()
    second["started"] = "2026-01-05T01:00:00+00:00"
    second["command"] = "python benchmarks/run.py --workloads W2"
    second["workloads"] = ["W2"]
    second["records"] = [
        {**r, "result": {**r["result"], "per_s": 1200}}
        for r in second["records"]
        if r["workload"] == "W2" and r["subject"] == "cronhub-sqlite"
    ]
    merged = report.merge([first, second])
    assert [r["result"]["per_s"] for r in merged["records"] if r["workload"] == "W2"] == [1200]
    assert merged["workloads"] == ["W1", "W2", "W6"]
    out = tmp_path / "bench.md"
    report.write(merged, out)
    text = out.read_text()
    assert "Noisy figures" in text
    assert "W2: from a later run started 2026-01-05T01:00:00+00:00" in text
    assert json.loads((tmp_path / "bench" / "results.json").read_text())["merged"]


def test_a_merge_into_a_merged_report_keeps_the_runs_it_does_not_replace():
    first = make_data()
    first["merged"] = [
        {"started": "2026-01-05T01:00:00+00:00", "command": "a", "workloads": ["W1", "W6"]}
    ]
    later = make_data()
    later["started"] = "2026-01-05T02:00:00+00:00"
    later["command"] = "python benchmarks/run.py --workloads W1"
    later["workloads"] = ["W1"]
    later["environment"] = {**later["environment"], "commit": "abc1234", "dirty": False}
    later["records"] = [r for r in later["records"] if r["workload"] == "W1"]
    merged = report.merge([first, later])
    assert [(m["started"], m["workloads"]) for m in merged["merged"]] == [
        ("2026-01-05T01:00:00+00:00", ["W6"]),
        ("2026-01-05T02:00:00+00:00", ["W1"]),
    ]
    text = "\n".join(report.header(merged))
    assert "W6: from a later run started 2026-01-05T01:00:00+00:00" in text
    assert "2026-01-05T02:00:00+00:00 on the same machine at commit abc1234" in text


def test_the_header_leaves_out_where_a_run_wrote_its_own_report():
    data = make_data()
    data["command"] = "python benchmarks/run.py --workloads W1 --output /some/where.md"
    data["merged"] = [
        {"started": "x", "command": "python benchmarks/run.py --output=a.md", "workloads": ["W2"]}
    ]
    text = "\n".join(report.header(data))
    assert "Command: `python benchmarks/run.py --workloads W1`" in text
    assert "(`python benchmarks/run.py`)" in text
    assert "--output" not in text
