"""Retention: finished jobs past their state's age are deleted, old throughput rows,
and audit rows past ``[retention] audit``.

A few thousand jobs a turn at most (1,000 a transaction), so that a first prune
of millions never stalls the loop; while there is more to do, the service comes
back sooner.
"""

from __future__ import annotations

import datetime as dt

import structlog

from burrow.backends.contract import Backend
from burrow.config import RetentionConfig
from burrow.job import JobState
from burrow.supervisor.context import Context

log = structlog.get_logger("burrow.supervisor")

_INTERVAL_S = 60.0
# One transaction of 1,000 jobs a turn, four turns a second while a backlog lasts: a
# turn holds the loop for tens of milliseconds, not the quarter second of five.
_BUSY_INTERVAL_S = 0.25
_ROWS_PER_TURN = 1000
_FIRST_S = 10.0  # not on the first turn: a restart into a backlog starts its workers first
# Throughput rows are kept this long: the admin charts the last hour, a week is plenty.
STATS_KEPT = dt.timedelta(days=7)


class Retention:
    name = "retention"
    first_s = _FIRST_S

    def interval(self, ctx: Context) -> float:
        return _INTERVAL_S

    def run(self, ctx: Context, now: float) -> None:
        deleted = prune_finished(ctx.backend, ctx.config.retention, max_rows=_ROWS_PER_TURN)
        if deleted:
            log.info("jobs_pruned", deleted=deleted)
        if deleted >= _ROWS_PER_TURN:
            ctx.run_at(self.name, now + _BUSY_INTERVAL_S)


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
    if retention.audit_s is not None:
        backend.prune_audit(now - dt.timedelta(seconds=retention.audit_s))
    return deleted
