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

from burrow.errors import BackendError
from burrow.supervisor.context import Context

log = structlog.get_logger("burrow.supervisor")

_CHECK_S = 1.0
# A role that may not analyze the table is told so once in this long.
_NOT_OWNER_S = 600.0
# Another session held the table (autovacuum, which analyzes after its vacuum when the
# table needs it, or another supervisor): look again later, not every second, as each
# skipped ANALYZE is a warning in the server's log.
_LOCKED_S = 30.0
# A failed check or ANALYZE is not tried again for this long. On a large table the
# ANALYZE may outlast the supervisor's statement timeout (its heartbeat interval), and
# a call that takes the whole deadline makes the backend fail the next calls at once
# for as long (SQLConnection._check_quiet): tried every second, it would keep the
# leases from being extended. Autovacuum analyzes the table meanwhile.
_FAILED_S = 600.0


class Statistics:
    name = "statistics"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return _CHECK_S

    def run(self, ctx: Context, now: float) -> None:
        try:
            refresh = ctx.backend.refresh_statistics()
        except BackendError as exc:
            log.warning("jobs_table_analyze_failed", error=str(exc), retry_in_s=_FAILED_S)
            ctx.run_at(self.name, now + _FAILED_S)
            return
        if refresh is None:
            return
        sizes = {"rows_in_statistics": refresh.rows_in_statistics, "live_rows": refresh.live_rows}
        if refresh.analyzed:
            log.info("jobs_table_analyzed", **sizes)
        elif not refresh.may_analyze:
            log.warning(
                "jobs_table_not_analyzed", **sizes, retry_in_s=_NOT_OWNER_S,
                detail="the role burrow connects as does not own burrow_jobs, so it may not ANALYZE it;"
                " claims may be slow until autovacuum does",
            )  # fmt: skip
            ctx.run_at(self.name, now + _NOT_OWNER_S)
        else:
            log.info("jobs_table_analyze_skipped", **sizes, retry_in_s=_LOCKED_S,
                     detail="another session holds the table (autovacuum, another supervisor)")
            ctx.run_at(self.name, now + _LOCKED_S)
