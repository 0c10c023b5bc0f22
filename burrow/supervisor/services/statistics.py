"""Planner statistics: the jobs table analyzed when a burst has left its statistics far behind.

On PostgreSQL the claim's plan rests on the table's statistics. Taken while the
table was new or nearly empty, they say no job is queued, and the planner then
finds a claim's few hundred jobs by sorting every queued one: a burst into a new
table drained at a fifth of its rate until autovacuum analyzed the table, up to a
minute later (PostgresBackend.refresh_statistics says when it acts and why).
Every second the supervisor compares the rows the table's statistics count
with the rows it holds, one catalog read, and analyzes it when they are ten
times apart. SQLite plans its claims well without statistics: nothing is done there.
"""

from __future__ import annotations

import structlog

from burrow.supervisor.context import Context

log = structlog.get_logger("burrow.supervisor")

_CHECK_S = 1.0
# An ANALYZE that left the statistics as they were (the role does not own the table,
# or another session held its lock) is not retried for this long: the server logs a
# warning for each try.
_AFTER_SKIPPED_S = 600.0


class Statistics:
    name = "statistics"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return _CHECK_S

    def run(self, ctx: Context, now: float) -> None:
        refresh = ctx.backend.refresh_statistics()
        if refresh is None:
            return
        sizes = {"rows_in_statistics": refresh.rows_in_statistics, "live_rows": refresh.live_rows}
        if refresh.analyzed:
            log.info("jobs_table_analyzed", **sizes)
            return
        log.warning(
            "jobs_table_not_analyzed", **sizes, retry_in_s=_AFTER_SKIPPED_S,
            detail="ANALYZE burrow_jobs changed nothing: is the table owned by another role?",
        )  # fmt: skip
        ctx.run_at(self.name, now + _AFTER_SKIPPED_S)
