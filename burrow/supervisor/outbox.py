"""The outcome outbox: outcomes the supervisor owes the database, written in batches.

Workers report each job as it ends; writing each report in its own transaction
would make commits, not jobs, the limit. The outbox gathers them for a few
milliseconds (``flush_interval``) and writes them in one round trip, keeps them
when the database is away, and gives back what exited workers still hold once
their reported outcomes are in. It knows nothing of workers or the loop: the inbox,
the exit handling and the services put outcomes in (:meth:`Outbox.settle`), the
loop asks when it is due and flushes.
"""

from __future__ import annotations

import structlog

from burrow.backends.contract import Backend
from burrow.backends.records import Outcome
from burrow.errors import BackendError
from burrow.supervisor.telemetry import Telemetry

log = structlog.get_logger("burrow.supervisor")

# A flush this large already costs little per outcome; waiting for more only delays them.
FLUSH_AT_OUTCOMES = 500
_RETRY_S = 0.5  # after a failed write


class Outbox:
    __slots__ = ("backend", "telemetry", "flush_interval_s", "pending", "dead_owners", "retry_mono", "pending_since_mono")

    def __init__(self, backend: Backend, telemetry: Telemetry, flush_interval_s: float) -> None:
        self.backend = backend
        self.telemetry = telemetry
        self.flush_interval_s = flush_interval_s  # the config's; a reload sets it anew
        self.pending: list[Outcome] = []
        self.dead_owners: list[str] = []  # exited workers whose leftover claims to give back
        self.retry_mono = 0.0
        self.pending_since_mono: float | None = None  # when the oldest unwritten outcome was seen

    def settle(self, outcome: Outcome, task: str) -> None:
        """An outcome to write with the next flush (and to count once written)."""
        self.pending.append(outcome)
        self.telemetry.expect(outcome, task)

    def waiting(self) -> bool:
        """Anything to write: outcomes, or exited workers' claims to give back."""
        return bool(self.pending or self.dead_owners)

    def flush(self, now: float, *, force: bool = False) -> None:
        """Write every pending outcome in one round trip; keep them if the database is away.

        Then give back what exited workers still hold, and only then: once their
        reported outcomes are written, a job still running under their owner is
        one they claimed but never announced (and so never ran).
        """
        if not (self.pending or self.dead_owners):
            return
        if self.pending_since_mono is None:
            self.pending_since_mono = now
        if not force and now < self.due_mono(now):
            return
        batch, self.pending = self.pending, []
        owners, self.dead_owners = self.dead_owners, []
        try:
            lost = self.backend.finish(batch)
        except BackendError as exc:
            self.pending = batch + self.pending
            self.dead_owners = owners + self.dead_owners
            self.retry_mono = now + _RETRY_S
            log.error("results_not_written", jobs=len(batch), error=str(exc))
            return
        self.pending_since_mono = None
        self.retry_mono = 0.0  # written: the next outcomes need not wait out an old retry time
        self.telemetry.written(batch, lost, self.backend.now())
        for job_id in lost:
            log.warning("job_lease_lost", job_id=job_id, detail="another attempt owns the job; this result was dropped")
        for index, owner in enumerate(owners):
            try:
                released = self.backend.release_owner(owner)
            except BackendError as exc:
                self.dead_owners = owners[index:] + self.dead_owners
                self.retry_mono = now + _RETRY_S
                log.error("claims_not_released", owner=owner, error=str(exc))
                return
            if released:
                log.warning("unannounced_claims_released", owner=owner, job_ids=released)

    def due_mono(self, now: float) -> float:
        """When pending outcomes should be written: ``flush_interval`` after the oldest.

        Gathering them for a few milliseconds turns a drain's flushes from a few
        dozen outcomes into hundreds (measured: benchmarks/README.md), while a
        job's result still lands within milliseconds. After a failed write, not
        before the retry time.
        """
        if len(self.pending) >= FLUSH_AT_OUTCOMES:
            return self.retry_mono
        since = now if self.pending_since_mono is None else self.pending_since_mono
        return max(self.retry_mono, since + self.flush_interval_s)
