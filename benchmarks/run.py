"""Run cronhub and its peers on the same workloads, in one run, and write the report.

Usage (from the repository root, with the project's virtual environment)::

    python benchmarks/run.py                      # everything, full size, 3 repeats
    python benchmarks/run.py --quick              # small sizes, 1 repeat: a smoke test
    python benchmarks/run.py --workloads W1,W4 --subjects cronhub-sqlite,floor \\
        --w1-duration 60 --w4-duration 60         # the engine issue's figures

Each (subject, workload, repeat) runs in a fresh process, in an empty temporary directory,
with ``CRONHUB_*`` variables removed; repeats are interleaved across subjects so that a busy
moment of the machine does not fall on one subject only. A process that outlives its time limit
is stopped and reported as unfinished (with how far it got), and not repeated. The results go to
``benchmarks/results/<stamp>.json``; the Markdown report and its plots go to
``docs/benchmarks.md`` for a full default run, else next to the JSON file (``--output`` wins).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUBJECTS_DIR = HERE / "subjects"
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import report  # noqa: E402
import suite  # noqa: E402

#: The multi-instance workload's script (written separately; called when present).
W6_SCRIPT = HERE / "postgres_instances.py"
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")


@dataclass
class Job:
    """One subject process to run."""

    subject: suite.Subject
    workload: str
    repeat: int
    params: dict[str, Any]
    limit: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; sizes left unset come from the issue (or ``--quick``)."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Benchmark cronhub against APScheduler, FastScheduler and a bare "
        "asyncio floor; write a Markdown report with plots.",
    )
    parser.add_argument(
        "--workloads", default=",".join(ALL_WORKLOADS), help="comma-separated, e.g. W1,W4"
    )
    parser.add_argument(
        "--subjects",
        default=None,
        help="comma-separated names or prefixes (cronhub = cronhub-memory,cronhub-sqlite); "
        "see --list",
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a few seconds each")
    parser.add_argument(
        "--repeat-limit",
        type=float,
        default=suite.REPEAT_LIMIT,
        help="in W2 and W3, a run longer than this many seconds is not repeated "
        f"(default {suite.REPEAT_LIMIT:g})",
    )
    for workload, sizes in suite.FULL_SIZES.items():
        for key, value in sizes.items():
            kind = str if isinstance(value, list) else type(value)
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            parser.add_argument(
                f"--{workload.lower()}-{key}",
                type=kind,
                default=None,
                help=f"{workload} {key} (issue: {shown})",
            )
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=HERE / ".venv-peers",
        help="the peers' virtual environment (created if missing)",
    )
    parser.add_argument("--upgrade-peers", action="store_true", help="pip install --upgrade")
    parser.add_argument("--output", type=Path, default=None, help="the Markdown report")
    parser.add_argument("--title", default=None, help="the report's title (default Benchmarks)")
    parser.add_argument(
        "--report-only",
        type=Path,
        nargs="+",
        default=None,
        metavar="RESULTS_JSON",
        help="rewrite the report from saved results, run nothing; with several files, a "
        "later file's workloads replace the earlier ones'",
    )
    parser.add_argument("--list", action="store_true", help="list subjects and workloads")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be 1 or more")
    return args


def select_workloads(text: str) -> list[str]:
    """The workload names in ``text``; an unknown one is an error naming it."""
    names = [w.strip().upper() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in ALL_WORKLOADS]
    if unknown or not names:
        raise SystemExit(
            f"error: unknown workload(s) {', '.join(unknown) or '(none given)'} "
            f"(known: {', '.join(ALL_WORKLOADS)})"
        )
    return [w for w in ALL_WORKLOADS if w in names]


def select_subjects(text: str | None) -> list[suite.Subject]:
    """The subjects named (or prefixed) in ``text``; all default subjects when ``None``."""
    if text is None:
        return list(suite.SUBJECTS)
    known = [*suite.SUBJECTS, *suite.EXTRA_SUBJECTS]
    chosen: list[suite.Subject] = []
    for word in (w.strip() for w in text.split(",") if w.strip()):
        found = [s for s in known if s.name == word] or [
            s for s in suite.SUBJECTS if s.name.startswith(word)
        ]
        if not found:
            names = ", ".join(s.name for s in known)
            raise SystemExit(f"error: unknown subject {word!r} (known: {names})")
        chosen.extend(s for s in found if s not in chosen)
    return chosen


def sizes(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each workload's parameters: the issue's (or quick) sizes, then the options given."""
    base = suite.QUICK_SIZES if args.quick else suite.FULL_SIZES
    out: dict[str, dict[str, Any]] = {}
    for workload, defaults in base.items():
        params = dict(defaults)
        for key, value in defaults.items():
            given = getattr(args, f"{workload.lower()}_{key}")
            if given is None:
                continue
            if isinstance(value, list):
                try:
                    given = [int(x) for x in str(given).split(",") if x.strip()]
                except ValueError:
                    raise SystemExit(
                        f"error: --{workload.lower()}-{key} {given!r}: expected numbers like 1,2,4"
                    ) from None
            if isinstance(given, int | float) and given <= 0:
                raise SystemExit(f"error: --{workload.lower()}-{key} must be positive")
            params[key] = given
        out[workload] = params
    return out


def clean_env() -> dict[str, str]:
    """This process's environment without cronhub settings or Python path overrides."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CRONHUB_") and k not in ("PYTHONPATH", "PYTHONSTARTUP")
    }


def _parse_output(stdout: str) -> tuple[dict[str, Any] | None, int | None]:
    result, progress = None, None
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
        elif line.startswith("PROGRESS "):
            progress = int(line.split()[1])
    return result, progress


def _record(job: Job, status: str, **fields: Any) -> dict[str, Any]:
    return {
        "subject": job.subject.name,
        "workload": job.workload,
        "repeat": job.repeat,
        "params": job.params,
        "status": status,
        **fields,
    }


def _finish(job: Job, proc: subprocess.Popen[str], started: float) -> dict[str, Any]:
    """Wait for ``proc`` within the job's limit and turn its output into a record."""
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, job.limit - (time.time() - started)))
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        result, progress = _parse_output(stdout or "")
        if result is not None and "unsupported" not in result:
            # The figures were printed; only the process's exit hung.
            return _record(job, "ok", seconds=time.time() - started, result=result, hung=True)
        return _record(
            job, "timeout", seconds=time.time() - started, limit=job.limit, progress=progress
        )
    wall = time.time() - started
    try:
        result, progress = _parse_output(stdout)
    except ValueError as exc:
        return _record(job, "error", seconds=wall, error=f"unreadable result line: {exc}")
    if proc.returncode != 0 or result is None:
        tail = (stderr or stdout or "").strip().splitlines()[-15:]
        return _record(
            job, "error", seconds=wall, error=f"exit {proc.returncode}: " + "\n".join(tail)
        )
    if "unsupported" in result:
        return _record(job, "unsupported", seconds=wall, error=result["unsupported"])
    return _record(job, "ok", seconds=wall, result=result)


def _start(job: Job, interpreters: dict[str, Path], folder: str) -> subprocess.Popen[str]:
    command = [
        str(interpreters[job.subject.python]),
        str(SUBJECTS_DIR / job.subject.script),
        job.workload,
        json.dumps(job.params),
    ]
    return subprocess.Popen(
        command,
        cwd=folder,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _describe(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        extra = record.get("error", "") or ""
        if record["status"] == "timeout":
            extra = f"stopped after {record['limit']:.0f} s (progress {record.get('progress')})"
        return f"{record['status']}: {extra.splitlines()[-1] if extra else ''}"
    workload = suite.WORKLOADS.get(record["workload"])
    result = record["result"]
    if workload is None:
        return "ok"
    parts = []
    for metric in workload.metrics:
        value = result.get(metric.key)
        if isinstance(value, int | float):
            parts.append(f"{metric.label} {value:,.{metric.digits}f}")
    return ", ".join(parts)


def run_jobs(
    batches: list[list[Job]],
    interpreters: dict[str, Path],
    log: list[dict[str, Any]],
    repeat_limit: float = suite.REPEAT_LIMIT,
) -> None:
    """Run each batch (one process, or several at once for idle workloads) and log records."""
    given_up: set[tuple[str, str]] = set()
    total = sum(len(b) for b in batches)
    done = 0
    for batch in batches:
        batch = [j for j in batch if (j.subject.name, j.workload) not in given_up]
        if not batch:
            continue
        with tempfile.TemporaryDirectory(prefix="cronhub-bench-") as folder:
            running = []
            for job in batch:
                sub = os.path.join(folder, job.subject.name)
                os.mkdir(sub)
                running.append((job, _start(job, interpreters, sub), time.time()))
            for job, proc, started in running:
                record = _finish(job, proc, started)
                log.append(record)
                done += 1
                if record["status"] in ("timeout", "error", "unsupported"):
                    given_up.add((job.subject.name, job.workload))
                elif job.workload in suite.SIZE_BOUND and record["seconds"] > repeat_limit:
                    given_up.add((job.subject.name, job.workload))
                    record["not_repeated"] = True
                print(
                    f"[{done}/{total}] {job.workload} {job.subject.name} #{job.repeat + 1}: "
                    f"{_describe(record)} ({record['seconds']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )


def plan(
    workloads: list[str],
    subjects: list[suite.Subject],
    params: dict[str, dict[str, Any]],
    repeats: int,
) -> list[list[Job]]:
    """Batches to run, workload by workload; repeats interleaved across subjects."""
    batches: list[list[Job]] = []
    for name in workloads:
        if name == "W6":
            continue
        workload = suite.WORKLOADS[name]
        chosen = [s for s in subjects if name in s.workloads]
        for repeat in range(repeats):
            jobs = [
                Job(
                    s,
                    name,
                    repeat,
                    {**params[name], **s.params},
                    suite.time_limit(name, params[name], s),
                )
                for s in chosen
            ]
            if workload.concurrent:
                batches.append(jobs)
            else:
                batches.extend([job] for job in jobs)
    return batches


def run_w6(params: dict[str, Any], repeats: int, log: list[dict[str, Any]]) -> None:
    """W6 (multi-instance, PostgreSQL): the hook for ``benchmarks/postgres_instances.py``.

    That script is written separately. Called as ``python postgres_instances.py --instances N
    --jobs J --duration S`` once per instance count and repeat, it prints one JSON object
    (its last line) with the figures; they are reported as they come.
    """
    base = {"subject": "cronhub-postgres", "workload": "W6", "params": params}
    if not W6_SCRIPT.exists():
        log.append(
            {**base, "repeat": 0, "status": "absent", "error": f"{W6_SCRIPT.name} not found"}
        )
        print(f"W6: {W6_SCRIPT.name} is not there yet; skipped", file=sys.stderr)
        return
    limit = float(params["duration"]) + 120.0
    for repeat in range(repeats):
        for n in params["instances"]:
            command = [
                sys.executable,
                str(W6_SCRIPT),
                "--instances",
                str(n),
                "--jobs",
                str(params["jobs"]),
                "--duration",
                str(params["duration"]),
            ]
            started = time.time()
            record: dict[str, Any] = {**base, "repeat": repeat, "instances": n}
            try:
                done = subprocess.run(
                    command,
                    cwd=ROOT,
                    env=clean_env(),
                    capture_output=True,
                    text=True,
                    timeout=limit,
                )
            except subprocess.TimeoutExpired:
                record.update(status="timeout", limit=limit, seconds=time.time() - started)
            else:
                lines = [ln for ln in done.stdout.strip().splitlines() if ln.strip()]
                try:
                    result = json.loads(lines[-1]) if lines else None
                except ValueError:
                    result = None
                if done.returncode != 0 or not isinstance(result, dict):
                    tail = (done.stderr or done.stdout).strip().splitlines()[-10:]
                    record.update(
                        status="error",
                        error=f"{shlex.join(command[1:])}: exit {done.returncode}: "
                        + "\n".join(tail),
                    )
                else:
                    record.update(status="ok", result=result)
                record["seconds"] = time.time() - started
            log.append(record)
            print(f"W6 {n} instance(s) #{repeat + 1}: {record['status']}", file=sys.stderr)


def environment(interpreters: dict[str, Path]) -> dict[str, Any]:
    """What the figures were measured on: machine, load, versions, commit."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*words: str) -> str:
        try:
            return subprocess.run(
                ["git", *words], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "load_before": list(os.getloadavg()),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "project": peers.versions_in(
            interpreters[suite.PROJECT], ("cronhub", "croniter", "sqlalchemy")
        ),
        "peers": peers.versions_in(interpreters[suite.PEERS])
        if suite.PEERS in interpreters
        else {},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks and write the results and the report."""
    args = parse_args(argv)
    if args.list:
        for s in (*suite.SUBJECTS, *suite.EXTRA_SUBJECTS):
            extra = "" if s in suite.SUBJECTS else "  (only when named)"
            print(f"{s.name:22} {s.label:30} {','.join(s.workloads)}{extra}")
        for w in suite.WORKLOADS.values():
            print(f"{w.name:4} {w.title}")
        print("W6   multi-instance (PostgreSQL), via postgres_instances.py")
        return 0
    if args.report_only is not None:
        data = report.merge([json.loads(p.read_text()) for p in args.report_only])
        data["title"] = args.title or data.get("title")
        output = args.output or args.report_only[-1].with_suffix(".md")
        report.write(data, output)
        print(f"report: {output}", file=sys.stderr)
        return 0

    workloads = select_workloads(args.workloads)
    subjects = select_subjects(args.subjects)
    params = sizes(args)
    repeats = args.repeats or (1 if args.quick else 3)
    interpreters: dict[str, Path] = {suite.PROJECT: Path(sys.executable)}
    if any(s.python == suite.PEERS for s in subjects):
        interpreters[suite.PEERS] = peers.ensure(args.peers_venv, upgrade=args.upgrade_peers)

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    full = (
        workloads == list(ALL_WORKLOADS)
        and args.subjects is None
        and params == {w: dict(v) for w, v in suite.FULL_SIZES.items()}
        and not args.quick
    )
    output = args.output or (
        ROOT / "docs" / "benchmarks.md" if full else results_dir / f"{stamp}.md"
    )

    data: dict[str, Any] = {
        "title": args.title,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": (
            "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        ).strip(),
        "repeats": repeats,
        "workloads": workloads,
        "subjects": [s.name for s in subjects],
        "params": params,
        "environment": environment(interpreters),
        "records": [],
    }
    t0 = time.time()
    try:
        run_jobs(
            plan(workloads, subjects, params, repeats),
            interpreters,
            data["records"],
            args.repeat_limit,
        )
        if "W6" in workloads:
            run_w6(params["W6"], repeats, data["records"])
    finally:
        data["seconds"] = time.time() - t0
        data["environment"]["load_after"] = list(os.getloadavg())
        results = results_dir / f"{stamp}.json"
        results.write_text(json.dumps(data, indent=1))
        print(f"results: {results}", file=sys.stderr)
    report.write(data, output)
    print(f"report: {output} ({data['seconds'] / 60:.1f} min)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
