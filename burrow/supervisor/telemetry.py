"""What a supervisor counts about the jobs it handles: Prometheus metrics (when
``[http] bind`` is set) and the per-minute throughput rows the admin's chart reads.

Both are fed from the same places in the supervisor: a claim, an outcome written,
a worker's exit. Outcomes are counted once written (a result the fence refused is
not a finished job), which needs each job's task: the supervisor notes it when the
outcome is made (:meth:`expect`), and it is forgotten once written.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import structlog

from burrow.backends.records import Outcome, OutcomeKind, ReapedJob
from burrow.queue import JobQueue
from burrow.stats import StatsCounter
from burrow.supervisor.metrics import Metrics

log = structlog.get_logger("burrow.supervisor")


class Telemetry:
    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics
        self.stats = StatsCounter()
        self._tasks: dict[int, str] = {}  # job id -> task, for outcomes not written yet

    def expect(self, outcome: Outcome, task: str) -> None:
        self._tasks[outcome.id] = task

    def claimed(self, batch_size: int) -> None:
        if self.metrics is not None:
            self.metrics.claim_batch.observe(batch_size)

    def written(self, outcomes: Sequence[Outcome], lost: Iterable[int], at: dt.datetime) -> None:
        """Count the outcomes the database took; forget the tasks of all of them.

        Counted per batch: a tally by (task, kind) first, then one count each (the
        per-minute counter, the Prometheus counter); only a job's duration is
        observed on its own. This runs for every job of a drain.
        """
        refused = set(lost)
        pop = self._tasks.pop
        tally: Counter[tuple[str, OutcomeKind]] = Counter()
        durations: dict[str, list[float]] = {}
        for outcome in outcomes:
            task = pop(outcome.id, None)
            if task is None or (refused and outcome.id in refused):
                continue
            tally[task, outcome.kind] += 1
            if outcome.duration_s is not None:
                durations.setdefault(task, []).append(outcome.duration_s)
        self.stats.count_many(tally, at)
        if self.metrics is not None:
            self.metrics.outcomes(tally, durations)

    def reaped(self, jobs: Sequence[ReapedJob], at: dt.datetime) -> None:
        """Jobs this supervisor's reaper took back from an owner that went silent."""
        tally = Counter(
            (job.task, OutcomeKind.EXPIRED_RETRY if job.state == "queued" else OutcomeKind.EXPIRED_FAILED) for job in jobs
        )
        self.stats.count_many(tally, at)
        if self.metrics is not None:
            self.metrics.outcomes(tally, {})

    def worker_exited(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.worker_exits.labels(reason).inc()

    def refresh(self, queue: JobQueue, pools: Mapping[str, int], paused: Sequence[str] = ()) -> None:
        """Gauges from the database (queued and running by task, queued by queue) and the
        pools; then the per-minute counts, added to the database's (kept for next time
        if it is away)."""
        if self.metrics is not None:
            self.metrics.workers.set(sum(pools.values()))
            for pool, workers in pools.items():
                self.metrics.pool_workers.labels(pool).set(workers)
            self.metrics.active(queue.backend.counts_by_task(active_only=True))
            self.metrics.depths(queue.backend.active_by_queue())
            self.metrics.paused(paused)
        self.write_stats(queue)

    def write_stats(self, queue: JobQueue) -> None:
        self.stats.flush(queue.backend)


# The supervisor's kill reasons, by a word each contains, in the order to look for them.
_KILL_LABELS = (
    ("shutdown", "shutdown"),
    ("SIGINT", "shutdown"),
    ("supervisor exiting", "shutdown"),
    ("silent", "silent"),
    ("timeout", "timeout"),
    ("protocol", "protocol_error"),
    ("database", "outage"),
    ("boot", "boot_failed"),
    ("cancel", "cancelled"),
    ("lease", "lease_lost"),
)


def exit_label(kill_reason: str | None, clean: bool, signaled: bool) -> str:
    """burrow_worker_exits_total's reason: a few stable words, not the free-text reason."""
    if kill_reason is not None:
        return next((label for word, label in _KILL_LABELS if word in kill_reason), "killed")
    if clean:
        return "stopped"
    return "signal" if signaled else "exit_status"
