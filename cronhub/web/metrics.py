"""``/metrics``: Prometheus metrics of one app, in a registry of its own (not the global one).

Counted by this instance, from the runs it finished (the ``cronhub_run_finished`` hook) and the
cancels asked of it:

- ``cronhub_runs_total{job,status}``: runs that ended, by job and status;
- ``cronhub_run_duration_seconds``: a histogram of their durations;
- ``cronhub_lateness_seconds``: a histogram of ``started_at - scheduled_for`` of the scheduled,
  catch-up and startup runs this instance started (retries wait on purpose and are left out).

Read from the storage at each scrape, so every instance reports the same cluster-wide values
(aggregate them with ``max``, not ``sum``):

- ``cronhub_running`` and ``cronhub_queued``: runs in those statuses now;
- ``cronhub_jobs``: jobs this instance knows;
- ``cronhub_storage_up``: 1 when the storage answered the scrape's queries, else 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cronhub.runs import RunStatus, Trigger

if TYPE_CHECKING:
    from cronhub.hub import Hub
    from cronhub.runs import Run

log = logging.getLogger("cronhub.web")

#: Buckets of run durations, seconds: from quick jobs to hour-long batches.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, float("inf"))
#: Buckets of lateness, seconds: timer precision, jitter, then real delays.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 3600, float("inf"))
#: Triggers whose start is expected at ``scheduled_for``.
_ON_TIME = frozenset({Trigger.SCHEDULE, Trigger.CATCH_UP, Trigger.STARTUP})


class _StorageCollector(Collector):
    """Gauges read from the storage at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        jobs = self.hub.jobs
        yield GaugeMetricFamily("cronhub_jobs", "Jobs known to this instance.", value=len(jobs))
        up = GaugeMetricFamily("cronhub_storage_up", "1 when the storage answered the scrape.")
        try:
            storage = self.hub.storage
            active = storage.active_runs()
        except Exception as exc:  # the scrape still answers, saying the storage is down
            log.warning("metrics: storage did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        running = sum(1 for run in active if run.status is RunStatus.RUNNING)
        yield GaugeMetricFamily("cronhub_running", "Runs running now.", value=running)
        yield GaugeMetricFamily("cronhub_queued", "Runs queued now.", value=len(active) - running)
        # Storages that judge time by their own clock (PostgreSQL) measure this host's offset.
        offset = getattr(storage, "clock_offset", None)
        if offset is not None:
            yield GaugeMetricFamily(
                "cronhub_clock_offset_seconds",
                "Storage (database) time minus this instance's time, as last measured.",
                value=offset,
            )


class Metrics:
    """The app's registry and the counters the run hooks feed."""

    def __init__(self, hub: Hub) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "cronhub_runs",
            "Runs that ended on this instance, by job and status.",
            ["job", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "cronhub_run_duration_seconds",
            "Durations of the runs that ended on this instance.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.lateness = Histogram(
            "cronhub_lateness_seconds",
            "started_at - scheduled_for of the scheduled runs this instance started.",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StorageCollector(hub))

    def run_started(self, run: Run) -> None:
        """Observe the lateness of a run that just started."""
        if run.trigger in _ON_TIME and run.started_at and run.scheduled_for:
            late = (run.started_at - run.scheduled_for).total_seconds()
            self.lateness.observe(max(0.0, late))

    def run_finished(self, run: Run) -> None:
        """Count a run that ended and observe its duration."""
        self.runs.labels(job=run.job, status=str(run.status)).inc()
        if run.duration_ms is not None:
            self.duration.observe(max(0, run.duration_ms) / 1000)

    def render(self) -> bytes:
        """The text exposition format (blocking: it reads the storage)."""
        return generate_latest(self.registry)
