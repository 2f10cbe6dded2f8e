"""The benchmark report: Markdown tables (median, min-max over repeats), ratios, plots.

``write(data, path)`` turns the runner's results (the JSON it saves) into ``path`` and PNG plots
in a folder named after it (``docs/benchmarks.md`` -> ``docs/benchmarks/``), and copies the
results there as ``results.json``, so the report can be rebuilt with
``python benchmarks/run.py --report-only docs/benchmarks/results.json --output docs/benchmarks.md``.
The hand-written part (fairness choices, what bounds the figures) is ``benchmarks/notes.md``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import suite

HERE = Path(__file__).resolve().parent
#: An en dash (empty cells, ranges) and the multiplication sign (ratios).
DASH, TIMES = "\u2013", "\u00d7"
NOTES = HERE / "notes.md"


@dataclass
class Cell:
    """One subject's figures in one workload, over its repeats."""

    subject: str
    ok: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Its first run took longer than the repeat limit, so it ran once.
    single: bool = False

    def values(self, key: str) -> list[float]:
        """The numeric values of ``key`` over the successful repeats."""
        out = []
        for result in self.ok:
            value = result.get(key)
            if isinstance(value, int | float) and not (
                isinstance(value, float) and math.isnan(value)
            ):
                out.append(float(value))
        return out

    def median(self, key: str) -> float | None:
        """The median of ``key``, or ``None`` without a successful repeat."""
        values = self.values(key)
        return statistics.median(values) if values else None

    def spread(self, key: str) -> tuple[float, float] | None:
        """Min and max of ``key``."""
        values = self.values(key)
        return (min(values), max(values)) if values else None


def collect(data: dict[str, Any]) -> dict[str, dict[str, Cell]]:
    """Records grouped by workload, then subject."""
    cells: dict[str, dict[str, Cell]] = {}
    for record in data["records"]:
        cell = cells.setdefault(record["workload"], {}).setdefault(
            record["subject"], Cell(record["subject"])
        )
        if record["status"] == "ok":
            cell.ok.append(record["result"])
            cell.single = cell.single or bool(record.get("not_repeated"))
        else:
            cell.failures.append(record)
    return cells


def number(value: float | None, digits: int) -> str:
    """``value`` with thousands separators, or a dash."""
    if value is None:
        return DASH
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def figure(cell: Cell, metric: suite.Metric) -> str:
    """``median (min-max)`` of one metric, or why there is none."""
    median = cell.median(metric.key)
    if median is None:
        return failure_text(cell)
    low, high = cell.spread(metric.key) or (median, median)
    text = number(median, metric.digits)
    if len(cell.values(metric.key)) > 1 and (low != high):
        text += f" ({number(low, metric.digits)}{DASH}{number(high, metric.digits)})"
    if cell.single and len(cell.ok) == 1:
        text += " \u2020"  # a dagger: one run only (see the note under the table)
    return text


def failure_text(cell: Cell) -> str:
    """Why a cell has no figure: time limit (with progress), error, not supported."""
    if not cell.failures:
        return DASH
    record = cell.failures[0]
    status = record["status"]
    if status == "timeout":
        progress = record.get("progress")
        done = f", {progress:,} done" if progress else ""
        return f"unfinished after {record['limit']:.0f} s{done}"
    if status == "unsupported":
        return "n/a"
    if status == "absent":
        return "not run"
    return "error (see results.json)"


def label(name: str) -> str:
    """A subject's label."""
    for subject in (*suite.SUBJECTS, *suite.EXTRA_SUBJECTS):
        if subject.name == name:
            return subject.label
    return name


def ratio(cells: dict[str, Cell], subject: str, baseline: str, key: str) -> float | None:
    """median(subject) / median(baseline) for ``key``."""
    a = cells.get(subject)
    b = cells.get(baseline)
    if a is None or b is None:
        return None
    va, vb = a.median(key), b.median(key)
    if va is None or vb is None or vb == 0:
        return None
    return va / vb


def workload_table(name: str, cells: dict[str, Cell], params: dict[str, Any]) -> list[str]:
    """The Markdown section of one workload (W1-W5)."""
    workload = suite.WORKLOADS[name]
    base_label = label(workload.baseline)
    ratio_label = next(m.label for m in workload.metrics if m.key == workload.ratio_metric)
    lines = [
        f"## {name}: {workload.title}",
        "",
        workload.description.format(**params),
        "",
        "| subject | "
        + " | ".join(m.label for m in workload.metrics)
        + f" | {ratio_label} ÷ {base_label} |",
        "| --- | " + " | ".join("---:" for _ in workload.metrics) + " | ---: |",
    ]
    order = [s.name for s in (*suite.SUBJECTS, *suite.EXTRA_SUBJECTS)]
    for subject in sorted(cells, key=lambda s: order.index(s) if s in order else 99):
        cell = cells[subject]
        r = ratio(cells, subject, workload.baseline, workload.ratio_metric)
        ratio_text = DASH if r is None else f"{r:,.2f}{TIMES}"
        name_text = f"**{label(subject)}**" if subject.startswith("cronhub") else label(subject)
        row = [figure(cell, m) for m in workload.metrics]
        lines.append(f"| {name_text} | " + " | ".join(row) + f" | {ratio_text} |")
    notes = _cell_notes(name, cells)
    if any(c.single and len(c.ok) == 1 for c in cells.values()):
        notes.append(
            "- \u2020 One run only: it took longer than the repeat limit "
            f"({suite.REPEAT_LIMIT:g} s by default), so it was not repeated."
        )
    if notes:
        lines += ["", *notes]
    return lines


def _cell_notes(name: str, cells: dict[str, Cell]) -> list[str]:
    """What the records say beyond the table: what cronhub wrote, late starts."""
    notes = []
    for subject, cell in cells.items():
        recorded = [r["recorded"] for r in cell.ok if r.get("recorded") is not None]
        if recorded:
            statuses = ", ".join(
                f"{k} {v:,}" for k, v in sorted(recorded[-1].items(), key=lambda kv: -kv[1])
            )
            notes.append(f"- {label(subject)}: runs in its database (last repeat): {statuses}.")
        late = [r.get("late_start_s", 0.0) for r in cell.ok]
        if late and max(late) > 0:
            notes.append(
                f"- {label(subject)}: registering the jobs outlasted the lead time by up to "
                f"{max(late):.1f} s; its rate is counted from the end of its start-up."
            )
    return sorted(notes)


#: W6 columns, in this order when present.
W6_KEYS = (
    "claims_per_s",
    "lateness_p50_ms",
    "lateness_p99_ms",
    "lateness_max_ms",
    "missing",
    "duplicates",
    "skipped",
    "instance_share_min_pct",
    "instance_share_max_pct",
)
#: Figures of the script not shown (parameters, or repeated in another column).
W6_HIDDEN = ("instances", "jobs", "duration_s", "slots", "rows", "succeeded")


def w6_section(records: list[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """The multi-instance section: whatever figures ``postgres_instances.py`` printed."""
    lines = ["## W6: multi-instance (PostgreSQL)", ""]
    lines.append(
        f"{params['jobs']:,} jobs every second for {params['duration']} s, shared by "
        f"{', '.join(map(str, params['instances']))} cronhub instance(s) on one PostgreSQL "
        "database (`benchmarks/postgres_instances.py`)."
    )
    lines.append("")
    absent = [r for r in records if r["status"] == "absent"]
    if absent:
        return [*lines, f"Not run: {absent[0]['error']}."]
    by_n: dict[int, Cell] = {}
    for record in records:
        cell = by_n.setdefault(int(record.get("instances", 0)), Cell(str(record.get("instances"))))
        (cell.ok if record["status"] == "ok" else cell.failures).append(
            record.get("result") if record["status"] == "ok" else record
        )
    found: list[str] = []
    for cell in by_n.values():
        for result in cell.ok:
            numeric = [k for k, v in result.items() if isinstance(v, int | float)]
            found.extend(k for k in numeric if k not in found)
    # The figures that matter first (when the script gives them), then any others; the
    # parameters are in the sentence above.
    keys = [k for k in W6_KEYS if k in found]
    keys += [k for k in found if k not in keys and k not in W6_HIDDEN]
    if not keys:
        failed = next(iter(by_n.values())).failures if by_n else []
        detail = failed[0].get("error", failed[0]["status"]) if failed else "no records"
        return [*lines, f"No figures: {detail}"]
    lines.append("| instances | " + " | ".join(keys) + " |")
    lines.append("| ---: | " + " | ".join("---:" for _ in keys) + " |")
    for n in sorted(by_n):
        cell = by_n[n]
        row = [figure(cell, suite.Metric(k, k, digits=1)) for k in keys]
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    return lines


def check_targets(cells: dict[str, dict[str, Cell]]) -> list[str]:
    """The table of cronhub's targets: figure, reference, verdict."""
    lines = [
        "| workload | target | cronhub | reference | ratio | met |",
        "| --- | --- | ---: | ---: | ---: | :---: |",
    ]
    for target in suite.TARGETS:
        workload = cells.get(target.workload, {})
        cell = workload.get(target.subject)
        if cell is None:
            continue
        value = cell.median(target.metric)
        reference = (
            workload[target.baseline].median(target.metric)
            if (target.baseline and target.baseline in workload)
            else None
        )
        digits = next(
            (m.digits for m in suite.WORKLOADS[target.workload].metrics if m.key == target.metric),
            1,
        )
        met: bool | None = None
        ratio_text = DASH
        if value is not None:
            if target.factor is not None and reference:
                r = value / reference
                ratio_text = f"{r:,.2f}{TIMES}"
                met = r >= target.factor if target.at_least else r <= target.factor
            elif target.limit is not None and target.baseline is not None and reference is not None:
                met = value <= reference + target.limit
            elif target.limit is not None and target.baseline is None:
                met = value <= target.limit
            if met and target.zero:
                met = all(r.get(target.zero) == 0 for r in cell.ok) and not cell.failures
        verdict = {True: "yes", False: "**no**", None: DASH}[met]
        ref_text = DASH if reference is None else number(reference, digits)
        if target.limit is not None and target.baseline is None:
            ref_text = f"limit {number(target.limit, digits)}"
        value_text = figure(cell, suite.Metric(target.metric, "", digits=digits))
        lines.append(
            f"| {target.workload} | {target.text} | {value_text} "
            f"| {ref_text} | {ratio_text} | {verdict} |"
        )
    return lines


def w6_targets(records: list[dict[str, Any]]) -> list[str]:
    """W6's target rows: p99 lateness under 100 ms with the most instances, claims spread.

    "Spread" is read as: every instance claimed at least half of its fair share (so with 4
    instances, each at least 12.5 % of the slots), and no slot was claimed twice.
    """
    ok = [r for r in records if r["status"] == "ok" and isinstance(r.get("result"), dict)]
    if not ok:
        return []
    most = max(int(r.get("instances", 0)) for r in ok)
    cell = Cell(str(most), ok=[r["result"] for r in ok if int(r.get("instances", 0)) == most])
    rows = []
    p99 = cell.median("lateness_p99_ms")
    if p99 is not None:
        verdict = "yes" if p99 < 100 else "**no**"
        value = figure(cell, suite.Metric("lateness_p99_ms", "", digits=1))
        rows.append(
            f"| W6 | lateness p99 under 100 ms with {most} instances | {value} | limit 100.0 "
            f"| {DASH} | {verdict} |"
        )
    share = cell.median("instance_share_min_pct")
    if share is not None and most > 1:
        fair = 100.0 / most
        duplicates = sum(int(r["result"].get("duplicates", 0) or 0) for r in ok)
        met = share >= fair / 2 and duplicates == 0
        value = figure(cell, suite.Metric("instance_share_min_pct", "", digits=1))
        rows.append(
            f"| W6 | claims spread: the least busy of {most} instances claims at least half its "
            f"share, no slot claimed twice | {value} % | {fair / 2:.1f} % "
            f"| {DASH} | {'yes' if met else '**no**'} |"
        )
    return rows


def plots(cells: dict[str, dict[str, Cell]], folder: Path) -> dict[str, str]:
    """One PNG per workload (median bars, min-max whiskers); ``{}`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    folder.mkdir(parents=True, exist_ok=True)
    order = [s.name for s in (*suite.SUBJECTS, *suite.EXTRA_SUBJECTS)]
    made: dict[str, str] = {}
    for name, workload in suite.WORKLOADS.items():
        by_subject = cells.get(name)
        if not by_subject:
            continue
        subjects = sorted(by_subject, key=lambda s: order.index(s) if s in order else 99)
        metrics = [m for m in workload.metrics if m.key not in ("cpu_s", "max_ms", "missed")]
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(4.2 * len(metrics), 0.5 * len(subjects) + 1.4), squeeze=False
        )
        for ax, metric in zip(axes[0], metrics, strict=True):
            medians, lows, highs, colours = [], [], [], []
            for s in subjects:
                cell = by_subject[s]
                m = cell.median(metric.key)
                low, high = cell.spread(metric.key) or (0.0, 0.0)
                medians.append(m or 0.0)
                lows.append(max(0.0, (m or 0.0) - low))
                highs.append(max(0.0, high - (m or 0.0)))
                colours.append("#1f77b4" if s.startswith("cronhub") else "#999999")
            y = range(len(subjects))
            ax.barh(list(y), medians, xerr=[lows, highs], color=colours, capsize=3)
            ax.set_yticks(list(y))
            ax.set_yticklabels([label(s) for s in subjects] if ax is axes[0][0] else [])
            ax.invert_yaxis()
            positive = [v for v in medians if v > 0]
            if positive and max(positive) / min(positive) > 30:
                ax.set_xscale("log")
            ax.set_xlabel(metric.label + (" (lower is better)" if metric.lower_is_better else ""))
            for i, (m, s) in enumerate(zip(medians, subjects, strict=True)):
                if m == 0 and by_subject[s].median(metric.key) is None:
                    ax.text(0, i, "  " + failure_text(by_subject[s]), va="center", fontsize=7)
        fig.suptitle(f"{name}: {workload.title}")
        fig.tight_layout()
        path = folder / f"{name.lower()}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made[name] = path.name
    return made


def header(data: dict[str, Any]) -> list[str]:
    """Where, when and with what the figures were measured."""
    env = data.get("environment", {})
    project, peer = env.get("project", {}), env.get("peers", {})
    load = env.get("load_before", [0, 0, 0])
    load_after = env.get("load_after", load)
    cores = env.get("cores") or 1
    versions = ", ".join(f"{k} {v}" for k, v in peer.items() if v and k not in ("python", "sqlite"))
    commit = env.get("commit", "?") + (" (with uncommitted changes)" if env.get("dirty") else "")
    lines = [
        f"Measured {data['started']} on {env.get('cpu', '?')}, {cores} cores "
        f"({env.get('platform', '?')}), Python {project.get('python', '?')}, SQLite "
        f"{project.get('sqlite', '?')}; cronhub at commit {commit}; peers: {versions or DASH}. "
        f"{data['repeats']} repeat(s) per figure, each a fresh process: the median, with the "
        f"min{DASH}max range in brackets. It took {data.get('seconds', 0) / 60:.1f} min in all.",
        "",
        f"Command: `{_shown_command(data.get('command', 'python benchmarks/run.py'))}`",
        "",
    ]
    merged = data.get("merged", [])
    for extra in merged:
        at = ""
        if extra.get("commit"):
            dirty = " (with uncommitted changes)" if extra.get("dirty") else ""
            at = f" at commit {extra['commit']}{dirty}"
        command = _shown_command(extra["command"])
        lines += [
            f"{', '.join(extra['workloads'])}: from a later run started {extra['started']} "
            f"on the same machine{at} (`{command}`), which replaced the first run's.",
            "",
        ]
        extra_load = extra.get("load")
        if extra_load and max(extra_load) > 0.5 * cores:
            lines += [
                _noisy(
                    f"the run that measured {', '.join(extra['workloads'])}", *extra_load, cores
                ),
                "",
            ]
    if data.get("command", "").strip() == "python benchmarks/run.py":
        lines[2] = "Command: `python benchmarks/run.py`"
    if max(load[0], load_after[0]) > 0.5 * cores:
        later = {w for m in merged for w in m["workloads"]}
        first = [w for w in data.get("workloads", []) if w not in later]
        which = f"the run that measured {', '.join(first)}" if merged else "this run"
        lines += [_noisy(which, load[0], load_after[0], cores), ""]
    return lines


def _shown_command(command: str) -> str:
    """``command`` without its ``--output`` (where that run's own report went is moot here)."""
    return re.sub(r"\s--output(?:=|\s+)\S+", "", command)


def _noisy(which: str, before: float, after: float, cores: int) -> str:
    return (
        f"> **Noisy figures.** The machine was busy with other work during {which} (load "
        f"average {before:.1f} at the start, {after:.1f} at the end, on {cores} cores). "
        "Absolute figures, lateness above all, are worse than on a quiet machine; ratios taken "
        "in the same run are the figures to compare."
    )


def intro(data: dict[str, Any]) -> str:
    """The opening sentence: who is compared with whom."""
    peers = {s.name for s in suite.SUBJECTS if s.python == suite.PEERS}
    with_peers = any(r["subject"] in peers for r in data["records"])
    who = (
        "cronhub against the schedulers a user would otherwise pick (APScheduler 3.11 and "
        "FastScheduler) and a bare-asyncio floor"
        if with_peers
        else "cronhub against a bare-asyncio floor"
    )
    return (
        f"{who}, on the same workloads in one run. This page is written by "
        "`python benchmarks/run.py` (see [Running them](#running-them)); tests never time "
        "anything."
    )


def render(data: dict[str, Any], plot_names: dict[str, str], plot_dir: str) -> str:
    """The whole Markdown report."""
    cells = collect(data)
    lines = [
        f"# {data.get('title') or 'Benchmarks'}",
        "",
        intro(data),
        "",
        *header(data),
        "## cronhub's targets",
        "",
        *check_targets(cells),
        *w6_targets([r for r in data["records"] if r["workload"] == "W6"]),
        "",
    ]
    for name in data["workloads"]:
        if name == "W6":
            w6 = [r for r in data["records"] if r["workload"] == "W6"]
            lines += [*w6_section(w6, data["params"]["W6"]), ""]
            continue
        if name not in cells:
            continue
        lines += [*workload_table(name, cells[name], data["params"][name]), ""]
        if name in plot_names:
            lines += [f"![{name}]({plot_dir}/{plot_names[name]})", ""]
    if NOTES.exists():
        lines += [NOTES.read_text().strip(), ""]
    return "\n".join(lines)


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' results as one: a later run's workloads replace an earlier one's.

    Each workload's figures (and so its ratios) still come from one run; the header names
    the runs that were merged.
    """
    data = dict(runs[0])
    data["records"] = list(runs[0]["records"])
    data["params"] = dict(runs[0]["params"])
    data["workloads"] = list(runs[0]["workloads"])
    # Runs merged into the first file before: kept for the workloads no later run replaces.
    data["merged"] = [dict(m) for m in runs[0].get("merged", [])]
    for later in runs[1:]:
        replaced = set(later["workloads"])
        for earlier in data["merged"]:
            earlier["workloads"] = [w for w in earlier["workloads"] if w not in replaced]
        data["merged"] = [m for m in data["merged"] if m["workloads"]]
        data["records"] = [r for r in data["records"] if r["workload"] not in replaced]
        data["records"] += later["records"]
        for name in later["workloads"]:
            data["params"][name] = later["params"][name]
            if name not in data["workloads"]:
                data["workloads"].append(name)
        data["workloads"].sort()
        env = later.get("environment", {})
        data["merged"].append(
            {
                "started": later["started"],
                "command": _shown_command(later.get("command", "")),
                "workloads": sorted(replaced),
                "commit": env.get("commit"),
                "dirty": env.get("dirty", False),
                "load": [env.get("load_before", [0])[0], env.get("load_after", [0])[0]],
            }
        )
        data["seconds"] = data.get("seconds", 0) + later.get("seconds", 0)
    return data


def write(data: dict[str, Any], path: Path) -> None:
    """Write the report to ``path``, its plots and a copy of ``data`` beside it."""
    folder = path.with_suffix("")
    plot_names = plots(collect(data), folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(data, indent=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data, plot_names, folder.name))
