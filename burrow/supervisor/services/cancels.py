"""The cancel poller: jobs of ours an operator cancelled while they ran (q.cancel).

Each is written off as cancelled at once (fenced, never retried). A job not
started yet is not started; the one running gets a grace to stop by itself (its
handler may look at current_job().cancel_requested), then the deadlines service
stops its worker and a new one replaces it. PostgreSQL also notifies us of a
cancel (services/listener.py), which runs this at once rather than at the next poll.
"""

from __future__ import annotations

import structlog

from burrow.backends.records import CANCELLED_BY_OPERATOR, Outcome, OutcomeKind
from burrow.supervisor import protocol
from burrow.supervisor.context import Context

log = structlog.get_logger("burrow.supervisor")

# How often running jobs are looked at for cancel requests.
_CHECK_S = 0.5
# How long a cancelled handler has to stop by itself: a handler that looks
# (CancelCheck asks once a second) sees it in time.
CANCEL_GRACE_S = 2.0


class Cancels:
    name = "cancels"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return _CHECK_S

    def run(self, ctx: Context, now: float) -> None:
        held = {f.job.id: (h, f) for h in ctx.pools.workers() for f in h.inflight if not f.lease_lost}
        cancelled = ctx.backend.cancel_requests(list(held))
        for job_id in cancelled:
            handle, flight = held[job_id]
            running = handle.inflight[0] is flight and flight.started_mono is not None
            handle.inflight.remove(flight)
            handle.cancelled.add(job_id)
            duration_s = now - flight.started_mono if running and flight.started_mono is not None else None
            error = CANCELLED_BY_OPERATOR + ("" if running else " before it started")
            job = flight.job
            ctx.outbox.settle(
                Outcome(job.id, job.owner, job.attempt, OutcomeKind.CANCELLED, error=error, duration_s=duration_s), job.task
            )
            log.info("job_cancelled", job_id=job.id, task=job.task, attempt=job.attempt, worker_pid=handle.pid, running=running)
            if running:
                handle.cancel_deadline_mono = now + CANCEL_GRACE_S
            else:
                handle.send(protocol.cancel(job_id))
        if cancelled:
            ctx.outbox.flush(now, force=True)  # written off at once; other outcomes keep their pace
