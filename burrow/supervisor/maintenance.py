"""The supervisor's periodic work: a schedule of named steps, each on its own interval.

Leases, the process row, the reaper and the LISTEN connection each keep their
own clock, and so will pruning, cron slots, cancel polling and metrics: one
more step each, not one more hand-kept ``next_*_mono`` field in the loop. The
schedule holds no clock of its own; the caller passes ``now`` (monotonic
seconds), so a test can step time by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from burrow.backends.contract import Backend
from burrow.config import RetentionConfig
from burrow.job import JobState
from burrow.errors import BackendError


@dataclass(slots=True)
class Step:
    """``run(now)`` every ``interval_s``; first at ``due_mono`` (0: on the first turn)."""

    name: str
    interval_s: float
    run: Callable[[float], None]
    due_mono: float = 0.0


@dataclass(frozen=True, slots=True)
class StepFailure:
    step: str
    error: BackendError


class Schedule:
    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self._steps: dict[str, Step] = {}
        # Kept rather than computed: the loop asks on every turn, thousands of
        # times a second in a drain, and almost always nothing is due.
        self._next_due_mono = float("inf")
        for step in steps:
            self.add(step)

    def add(self, step: Step) -> None:
        if step.name in self._steps:
            raise ValueError(f"a step named {step.name!r} is already scheduled")
        self._steps[step.name] = step
        self._next_due_mono = min(self._next_due_mono, step.due_mono)

    def set_interval(self, name: str, interval_s: float) -> None:
        """From the next run on (a reload): the run already planned keeps its time."""
        self._steps[name].interval_s = interval_s

    def run_at(self, name: str, due_mono: float) -> None:
        """Move one run of a step (a step with more work left runs again sooner)."""
        self._steps[name].due_mono = due_mono
        self._next_due_mono = min(step.due_mono for step in self._steps.values())

    def next_due_mono(self) -> float:
        """When the loop must wake up next for a step; infinity with no steps."""
        return self._next_due_mono

    def run_due(self, now: float) -> list[StepFailure]:
        """Run every step due at ``now``, the longest overdue first; their failures.

        A database error is one step's failure, not the turn's: a reaper that
        times out on a lock must not keep the leases from being extended. Any
        other exception is a bug and propagates.
        """
        if now < self._next_due_mono:
            return []
        due = sorted((s for s in self._steps.values() if s.due_mono <= now), key=lambda s: s.due_mono)
        for step in due:
            # Planned before any runs, so a failing step waits its interval too
            # instead of hammering a database that is away.
            step.due_mono = now + step.interval_s
        self._next_due_mono = min(step.due_mono for step in self._steps.values())
        failures = []
        for step in due:
            try:
                step.run(now)
            except BackendError as exc:
                failures.append(StepFailure(step.name, exc))
        return failures


# Throughput rows are kept this long: the admin charts the last hour, a week is plenty.
STATS_KEPT = dt.timedelta(days=7)


def prune_finished(backend: Backend, retention: RetentionConfig, *, max_rows: int) -> int:
    """Delete finished jobs older than their state's retention, at most ``max_rows``;
    and throughput rows older than STATS_KEPT. The number of jobs deleted."""
    now = backend.now()
    deleted = 0
    ages = (
        (JobState.SUCCEEDED, retention.succeeded_s),
        (JobState.FAILED, retention.failed_s),
        (JobState.CANCELLED, retention.cancelled_s),
    )
    for state, age_s in ages:
        if age_s is not None and deleted < max_rows:
            before = now - dt.timedelta(seconds=age_s)
            deleted += backend.prune(before, [state], max_rows=max_rows - deleted)
    backend.prune_stats(now - STATS_KEPT)
    return deleted
