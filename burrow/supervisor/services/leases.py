"""Lease extension: every in-flight job's lease, renewed each heartbeat; a lost one stops its run.

A lease is how other supervisors know a job is still being worked on; the
outage guard (guard.py) watches how long ago each was renewed. A lease found
lost means another process owns the job now, and ours must stop running it.
"""

from __future__ import annotations

import collections

import structlog

from burrow.errors import BackendError
from burrow.job import JobState
from burrow.supervisor.children import InFlight, WorkerHandle
from burrow.supervisor.context import Context
from burrow.supervisor.services.deadlines import TERM_GRACE_S

log = structlog.get_logger("burrow.supervisor")


class Leases:
    name = "leases"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return ctx.config.supervisor.heartbeat_interval_s

    def run(self, ctx: Context, now: float) -> None:
        """The leases of every in-flight job (the outage guard watches their age).

        With no job in flight the call is free and succeeds: nothing can lapse,
        and a job claimed later has a lease that starts after this moment. A
        lease found lost is not asked for again: its job is another process's now.
        """
        held = [(h, f) for h in ctx.pools.workers() for f in h.inflight if not f.lease_lost]
        fences = [(f.job.id, f.job.owner, f.job.attempt) for _, f in held]
        lost = ctx.backend.extend_leases(fences, ctx.config.supervisor.lease_timeout_s)
        ctx.last_db_ok_mono = now
        for _, flight in held:
            flight.leased_mono = now
        if lost:
            _on_leases_lost(ctx, set(lost), held, now)
        write_progress(ctx, held)


def write_progress(ctx: Context, held: list[tuple[WorkerHandle, InFlight]]) -> None:
    """The latest progress each running job reported since the last heartbeat, in one
    fenced statement (none when no job reported any): at most once a heartbeat per job."""
    reported = [f for _, f in held if f.progress is not None and not f.lease_lost]
    if not reported:
        return
    rows = [(f.job.id, f.job.owner, f.job.attempt, *f.progress) for f in reported if f.progress is not None]
    try:
        ctx.backend.record_progress(rows)
    except BackendError as exc:
        log.warning("progress_not_written", error=str(exc))  # the next heartbeat writes the latest
        return
    for flight in reported:
        flight.progress = None


def _on_leases_lost(ctx: Context, lost: set[int], held: list[tuple[WorkerHandle, InFlight]], now: float) -> None:
    """Stop every run whose lease is gone, before it runs on beside its new owner.

    A lease is lost when another process took the job over: a reaper whose
    clock saw the lease expire (we were stalled, or its clock runs ahead),
    or a hand in the table. The new owner may be running the job this
    moment, so ours must stop at once; and it must leave the row alone (the
    fence would refuse the write anyway). Ids alone name the lost fences:
    when one id is held twice (an old run we lost to our own reaper, and our
    new claim of it), the row says which of the two owns it.
    """
    counts = collections.Counter(f.job.id for _, f in held)
    for handle, flight in held:
        job = flight.job
        if job.id not in lost:
            continue
        if counts[job.id] > 1 and _still_owns(ctx, flight):
            continue
        flight.lease_lost = True
        log.warning(
            "job_lease_lost",
            job_id=job.id,
            task=job.task,
            attempt=job.attempt,
            worker_pid=handle.pid,
            detail="another process owns the job now: its run here is stopped and nothing is written for it",
        )
        if handle.inflight and handle.inflight[0] is flight:
            stop_lost_run(handle, flight, now)
        # A lost job claimed behind the running one is stopped when it starts (inbox.py).


def _still_owns(ctx: Context, flight: InFlight) -> bool:
    try:
        record = ctx.backend.get(flight.job.id)
    except BackendError:
        return True  # not known yet: the next heartbeat asks again
    return (
        record is not None
        and record.state is JobState.RUNNING
        and (record.owner, record.attempts) == (flight.job.owner, flight.job.attempt)
    )


def stop_lost_run(handle: WorkerHandle, flight: InFlight, now: float) -> None:
    """SIGTERM (its stack dumped for the log), SIGKILL after the grace, a new worker.

    What else it was running when it died was not that job's fault: it goes
    back to the queue with its attempt given back (release_running).
    """
    if handle.kill_reason is not None:
        return  # dying already
    handle.release_running = True
    handle.terminate(f"lease lost: job {flight.job.id} belongs to another process now", now + TERM_GRACE_S)
