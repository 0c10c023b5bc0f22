"""The counters a supervisor exports at ``/metrics`` (their names are API).

The supervisor already sees every outcome (workers report to it over pipes), so
one process owns every metric: no multiprocess mode, no files. prometheus_client
is an optional extra (``pip install 'burrow-jobs[metrics]'``), imported only when
``[http] bind`` is set; without it the supervisor counts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from burrow.job import JobState
from burrow.backends.records import OutcomeKind
from burrow.errors import ConfigError
from burrow.version import DISTRIBUTION

# The outcome label of burrow_jobs_finished_total, by kind.
OUTCOME_LABELS: Mapping[OutcomeKind, str] = {
    OutcomeKind.SUCCEEDED: "succeeded",
    OutcomeKind.RETRY: "retried",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.RELEASED: "released",
    OutcomeKind.SNOOZED: "snoozed",
    OutcomeKind.EXPIRED_RETRY: "lease_expired",
    OutcomeKind.EXPIRED_FAILED: "lease_expired",
}

# Job durations from a millisecond to an hour.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    """burrow_* metrics in a registry of their own."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigError(
                f"[http] bind needs prometheus_client for /metrics: pip install '{DISTRIBUTION}[metrics]'"
            ) from None
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self.finished = prom.Counter(
            "burrow_jobs_finished", "Runs whose outcome this supervisor wrote, by task and outcome",
            ["task", "outcome"], registry=self.registry,
        )
        self.duration = prom.Histogram(
            "burrow_job_duration_seconds", "How long handlers ran, measured in the worker",
            ["task"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.queued = prom.Gauge("burrow_jobs_queued", "Queued jobs in the database, by task", ["task"], registry=self.registry)
        self.running = prom.Gauge("burrow_jobs_running", "Running jobs in the database, by task", ["task"], registry=self.registry)
        self.waiting = prom.Gauge(
            "burrow_jobs_waiting", "Workflow steps waiting for their parents, by task", ["task"], registry=self.registry
        )
        self.workers = prom.Gauge("burrow_workers", "Worker processes of this supervisor", registry=self.registry)
        self.pool_workers = prom.Gauge(
            "burrow_pool_workers", "Worker processes of this supervisor, by pool", ["pool"], registry=self.registry
        )
        self.queue_depth = prom.Gauge(
            "burrow_queue_depth", "Queued jobs in the database, by queue", ["queue"], registry=self.registry
        )
        self.worker_exits = prom.Counter(
            "burrow_worker_exits", "Worker processes that exited, by reason", ["reason"], registry=self.registry
        )
        self.claim_batch = prom.Histogram(
            "burrow_claim_batch_size", "Jobs a worker claimed in one round trip",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.unhandled_jobs = prom.Gauge(
            "burrow_jobs_unhandled", "Due queued jobs of a task no live supervisor handles, by task",
            ["task"], registry=self.registry,
        )
        self.queue_paused = prom.Gauge(
            "burrow_queue_paused", "1 while an operator has the queue paused (its jobs are not claimed), else 0",
            ["queue"], registry=self.registry,
        )
        self._unhandled_tasks: set[str] = set()
        self._active_tasks: set[str] = set()
        self._queues: set[str] = set()

    def outcomes(self, tally: Mapping[tuple[str, OutcomeKind], int], durations: Mapping[str, Sequence[float]]) -> None:
        """A batch's outcomes by (task, kind), and its jobs' durations by task (each
        task's histogram looked up once a batch: the lookup cost more than the observe)."""
        for (task, kind), n in tally.items():
            self.finished.labels(task, OUTCOME_LABELS[kind]).inc(n)
        for task, seconds in durations.items():
            histogram = self.duration.labels(task)
            for duration_s in seconds:
                histogram.observe(duration_s)

    def unhandled(self, counts: Mapping[str, int]) -> None:
        """Due jobs of unhandled tasks; a task handled again reads 0."""
        self._unhandled_tasks.update(counts)
        for task in self._unhandled_tasks:
            self.unhandled_jobs.labels(task).set(counts.get(task, 0))

    def active(self, counts: Mapping[str, Mapping[JobState, int]]) -> None:
        """Waiting, queued and running jobs by task; a task with none left reads 0."""
        self._active_tasks.update(counts)
        for task in self._active_tasks:
            by_state = counts.get(task, {})
            self.queued.labels(task).set(by_state.get(JobState.QUEUED, 0))
            self.running.labels(task).set(by_state.get(JobState.RUNNING, 0))
            self.waiting.labels(task).set(by_state.get(JobState.WAITING, 0))

    def depths(self, by_queue: Mapping[str, Mapping[JobState, int]]) -> None:
        self._queues.update(by_queue)
        for queue in self._queues:
            self.queue_depth.labels(queue).set(by_queue.get(queue, {}).get(JobState.QUEUED, 0))

    def paused(self, queues: Sequence[str]) -> None:
        """1 for each paused queue; 0 for every other queue seen (depths or paused before)."""
        self._queues.update(queues)
        paused = set(queues)
        for queue in self._queues:
            self.queue_paused.labels(queue).set(1 if queue in paused else 0)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
