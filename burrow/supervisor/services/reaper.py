"""The reaper: jobs whose lease expired (their supervisor died or stalled) go back or fail,
and process rows gone stale are removed.

Every supervisor reaps, so one that dies is cleaned up after by the others.
"""

from __future__ import annotations

import structlog

from burrow.supervisor.context import Context

log = structlog.get_logger("burrow.supervisor")


class Reaper:
    name = "reaper"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return ctx.config.supervisor.reap_interval_s

    def run(self, ctx: Context, now: float) -> None:
        # Our own results first: a job that finished while the database was
        # away has an expired lease, and reaping it first would run it again.
        ctx.outbox.flush(now, force=True)
        if ctx.outbox.pending:
            return  # not written yet: some may be ours, finished, with an expired lease
        reaped = ctx.queue.reap_expired()
        for job in reaped:
            log.warning("job_lease_expired", job_id=job.id, task=job.task, attempt=job.attempt, now=job.state.value)
        ctx.telemetry.reaped(reaped, ctx.backend.now())
        for owner in ctx.backend.reap_processes(ctx.stale_after_s()):
            log.warning("process_presumed_dead", owner=owner)
