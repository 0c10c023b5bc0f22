"""The storage contract: the small stores a caller needs, and ``Backend``, all of them.

A caller is typed against the store it uses, so that what it may do to the
database is visible in its signature and a test double has only that to fake:
the claim loop needs a :class:`JobStore`, the stats flush a :class:`StatsStore`,
the operators' tools an :class:`OperatorStore`. :class:`Backend` combines them;
each implementation (``sqlite``, ``postgres``) is one object behind all of them,
on one database (see docs/architecture.md on the storage contract).

The records that cross these interfaces are in ``burrow.backends.records``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from burrow.backends.records import (
    Audit,
    AuditEntry,
    ClaimedJob,
    ClaimRequest,
    ExpiredLease,
    HistoryEntry,
    Outcome,
    ProcessInfo,
    ScheduleInfo,
    SchemaStatus,
    StatisticsRefresh,
    StepRow,
    ThroughputRow,
)
from burrow.job import JobInfo, JobState, NewJob


class JobStore(Protocol):
    """The job's life on the hot path: enqueue, claim, finish, leases, waiting for work."""

    def now(self) -> dt.datetime:
        """The backend's idea of now (an injected clock in tests)."""

    def enqueue(self, jobs: Sequence[NewJob], conn: Any = None) -> list[int]:
        """Insert jobs in one transaction; ids by position; inside ``conn``'s transaction when given."""

    def enqueue_dbapi(self, dbapi_connection: Any, jobs: Sequence[NewJob]) -> list[int]:
        """Insert jobs on a caller's DB-API connection, inside the transaction open there."""

    def claim(self, request: ClaimRequest) -> list[ClaimedJob]:
        """Mark up to ``request.limit`` due queued jobs of ``request.tasks`` in
        ``request.queues`` running for ``request.owner``; of a task in
        ``request.limits``, only while fewer than its limit run."""

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Write outcomes in one round trip; returns the ids whose fence no longer held."""

    def record_progress(self, rows: Sequence[tuple[int, str, int, float, str | None]]) -> None:
        """The latest progress of running jobs: (id, owner, attempt, fraction, message),
        fenced; a row whose attempt no longer runs is left alone."""

    def extend_leases(self, jobs: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        """Push out the leases of (id, owner, attempt); returns the ids that were lost."""

    def expired_leases(self, limit: int = 1000) -> list[ExpiredLease]:
        """Running jobs whose lease has run out, oldest expiry first, at most ``limit``."""

    def release_owner(self, owner: str) -> list[int]:
        """Requeue, attempt given back, every job still running under a dead ``owner``."""

    def has_due(self, tasks: Sequence[str]) -> bool:
        """Whether a claim of ``tasks`` could return a job now."""

    def wait_for_jobs(self, timeout_s: float, tasks: Sequence[str] = ()) -> bool:
        """Block until new jobs may be due or the timeout; True if woken early."""

    def cancel_requests(self, job_ids: Sequence[int]) -> list[int]:
        """Which of these jobs are running with a cancel request."""


class OperatorStore(Protocol):
    """Reading and repairing jobs: q.job, q.jobs, q.retry, q.cancel, q.delete, q.prune, counts."""

    def get(self, job_id: int) -> JobInfo | None: ...

    def history(self, job_id: int) -> list[HistoryEntry]: ...

    def list_jobs(
        self,
        states: Sequence[str] | None,
        tasks: Sequence[str] | None,
        before_id: int | None,
        limit: int,
        after_id: int | None = None,
    ) -> list[JobInfo]:
        """Newest first below ``before_id``; with ``after_id``, the ``limit`` jobs just
        newer than it (still newest first)."""

    def search_jobs(
        self,
        text: str,
        states: Sequence[str] | None,
        tasks: Sequence[str] | None,
        before_id: int | None,
        limit: int,
        window: int,
    ) -> tuple[list[JobInfo], int | None]:
        """Jobs whose payload or last error holds ``text`` (ASCII case aside), newest
        first, among the ``window`` newest ids below ``before_id``; and where the window ended."""

    def counts(self) -> dict[JobState, int]: ...

    def counts_by_task(self, *, active_only: bool = False) -> dict[str, dict[JobState, int]]: ...

    def active_by_queue(self) -> dict[str, dict[JobState, int]]: ...

    def requeue(
        self, job_ids: Sequence[int], from_states: Sequence[JobState], note: str, audit: Audit | None = None
    ) -> list[int]: ...

    def ids_in(self, state: JobState, tasks: Sequence[str] | None, after_id: int, up_to_id: int, limit: int) -> list[int]: ...

    def max_id(self) -> int: ...

    def delete_job(self, job_id: int, audit: Audit | None = None) -> bool | None: ...

    def cancel(self, job_id: int, audit: Audit | None = None) -> bool:
        """Cancel a queued job; False if it is in any other state."""

    def request_cancel(self, job_id: int, audit: Audit | None = None) -> bool:
        """Ask the supervisor running this job to stop it; False unless it is running."""

    def prune(
        self,
        finished_before: dt.datetime,
        states: Sequence[JobState],
        batch: int = 1000,
        max_rows: int | None = None,
        audit: Audit | None = None,
    ) -> int: ...

    # Every action above and below takes an ``audit``: its burrow_audit row, written in
    # the action's own transaction when (and only when) the action changed something.

    def set_paused(self, queue: str, paused: bool, audit: Audit | None = None) -> bool:
        """Pause (the claims leave its jobs) or resume a queue; True if its state changed."""

    def queue_rows(self) -> list[tuple[str, bool, dt.datetime, str | None]]:
        """Every queue ever paused: (name, paused, updated_at, updated_by)."""

    def paused_queues(self) -> list[str]: ...

    def run_now(self, job_id: int, audit: Audit | None = None) -> bool:
        """A queued job due later made due now; False for any other job."""

    def add_audit(self, entry: Audit, count: int) -> None:
        """Record an action that wrote nothing else (in a transaction of its own)."""

    def audit_entries(self, limit: int, before_id: int | None = None) -> list[AuditEntry]: ...

    def prune_audit(self, before: dt.datetime) -> int: ...


class ProcessStore(Protocol):
    """The registry of live burrow processes (supervisors and their workers)."""

    def register_process(self, owner: str, host: str, pid: int, role: str) -> None: ...

    def heartbeat_processes(self, owners: Sequence[str]) -> list[str]:
        """Refresh these processes' rows; the owners whose row was removed (presumed dead)."""

    def remove_process(self, owner: str) -> None: ...

    def reap_processes(self, stale_after_s: float) -> list[str]: ...

    def processes(self, stale_after_s: float) -> list[ProcessInfo]: ...

    def register_tasks(self, owner: str, options: Mapping[str, str]) -> None:
        """The tasks ``owner`` handles (task -> its options as JSON), replacing its last list."""

    def task_options(self, task: str) -> str | None:
        """The options (JSON) a registered process last gave ``task``; None if none handles it."""

    def unhandled(self, stale_after_s: float) -> dict[str, int]:
        """Due queued jobs by task, for the tasks no live process handles."""


class WorkflowStore(Protocol):
    """Workflows: stored whole, read as a graph (their release is the database's own:
    migration 12's triggers)."""

    def enqueue_workflow(self, name: str | None, steps: Sequence[StepRow], conn: Any = None) -> list[int]:
        """Store the workflow's steps and edges in one transaction; job ids by position."""

    def find_workflow(self, name: str) -> int | None:
        """The id of the newest workflow of that name."""

    def workflow_jobs(self, workflow_id: int) -> list[JobInfo]:
        """The workflow's jobs in id order, with their parents and children."""

    def parent_results(self, job_id: int) -> dict[int, bytes | None]:
        """Each parent's stored result, None unless it succeeded with one."""


class ScheduleStore(Protocol):
    """Periodic jobs: each slot enqueued once, whichever process gets there first."""

    def enqueue_slot(
        self, name: str, spec: str, slot: dt.datetime, next_slot: dt.datetime, job: NewJob
    ) -> int | None: ...

    def schedules(self) -> list[ScheduleInfo]: ...


class StatsStore(Protocol):
    """Jobs finished per minute and task, added to by every process (the throughput chart)."""

    def add_stats(self, rows: Sequence[ThroughputRow]) -> None: ...

    def stats_since(self, since: dt.datetime, tasks: Sequence[str] | None = None) -> list[ThroughputRow]: ...

    def prune_stats(self, before: dt.datetime) -> int: ...


class Lifecycle(Protocol):
    """The database itself: its schema, whether it answers, and the connections to it."""

    dialect: str

    def migrate(self) -> None:
        """Apply pending migrations, once, under a lock."""

    def ping(self) -> None:
        """Raise BackendError unless the database answers."""

    def schema_status(self) -> SchemaStatus:
        """Where the schema stands, without creating or changing anything."""

    def refresh_statistics(self) -> StatisticsRefresh | None:
        """ANALYZE the jobs table if the planner's statistics of it count a tenth of its
        rows or fewer (a burst of jobs into a new table); None when they count more,
        or the database needs none (SQLite)."""

    def after_fork(self) -> None:
        """Drop connections inherited from the parent without closing its sockets."""

    def close(self) -> None: ...


class Backend(JobStore, OperatorStore, ProcessStore, WorkflowStore, ScheduleStore, StatsStore, Lifecycle, Protocol):
    """One database holding burrow's tables, behind every store. Implementations: sqlite, postgres."""
