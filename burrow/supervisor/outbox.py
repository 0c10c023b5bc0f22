"""The outcome outbox: outcomes the supervisor owes the database, written in batches.

Workers report each job as it ends; writing each report in its own transaction
would make commits, not jobs, the limit. The outbox gathers them for a few
milliseconds (one write per ``flush_interval`` at most) and writes them in one
round trip, keeps them when the database is away, and gives back what exited
workers still hold once their reported outcomes are in. It knows nothing of workers or the loop: the inbox,
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
    __slots__ = ("backend", "telemetry", "flush_interval_s", "pending", "dead_owners", "retry_mono", "last_flush_mono")

    def __init__(self, backend: Backend, telemetry: Telemetry, flush_interval_s: float) -> None:
        self.backend = backend
        self.telemetry = telemetry
        self.flush_interval_s = flush_interval_s  # the config's; a reload sets it anew
        self.pending: list[Outcome] = []
        self.dead_owners: list[str] = []  # exited workers whose leftover claims to give back
        self.retry_mono = 0.0
        self.last_flush_mono = float("-inf")  # when the last write began

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
        if not force and now < self.due_mono(now):
            return
        self.last_flush_mono = now
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
        """When pending outcomes should be written: ``flush_interval`` after the last
        write began, at once with FLUSH_AT_OUTCOMES waiting; after a failed write, not
        before the retry time.

        One write per interval turns a drain's flushes from a few dozen outcomes
        into hundreds (measured: benchmarks/README.md), while a job's result still
        lands within milliseconds, and the first one after a quiet spell at once.
        Counted from the start of the last write, not from the first outcome seen
        after it: on a distant database a write takes longer than the interval,
        the outcomes read after it have waited that long already, and waiting the
        interval again capped a 7 ms round trip's drain at one write per 15 ms
        (benchmarks/README.md, the remote rows).
        """
        if len(self.pending) >= FLUSH_AT_OUTCOMES:
            return self.retry_mono
        return max(self.retry_mono, self.last_flush_mono + self.flush_interval_s)
