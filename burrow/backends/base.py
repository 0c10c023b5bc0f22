"""The storage contract every backend fulfils, and the records that cross it.

Backends deal in opaque payload and result bytes; typing happens above them. Each
operation that ends or extends an attempt is *fenced*: it names the job id, the
owner that claimed it and the attempt number, and only touches a row that still
matches all three and is ``running``. A process that lost its lease therefore
never overwrites a newer attempt; the backend reports such jobs as lost instead.

The records here are the job row's one definition above SQL: a claim returns the
fields of :class:`ClaimedJob`, an insert writes those of :class:`NewJob`, a read
fills :class:`JobInfo`; what each outcome does to a row is the table in
``burrow.backends.transitions``.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from burrow.job import JobInfo, JobState, NewJob

# How long a claim holds a job without a heartbeat (config ``lease_timeout``).
DEFAULT_LEASE_S = 30.0


class OutcomeKind(StrEnum):
    """How an attempt ended; ``transitions.TRANSITIONS`` says what each does to the row."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"  # back to queued after a delay, the attempt counted
    FAILED = "failed"
    RELEASED = "released"  # back to queued now, the attempt given back (claimed, never started)
    SNOOZED = "snoozed"  # RetryAfter: back to queued after a delay, the attempt given back
    CANCELLED = "cancelled"  # q.cancel of a running job: stopped by its supervisor, never retried
    # Written by a reaper, not by the owner: only while the lease is still expired.
    EXPIRED_RETRY = "expired_retry"
    EXPIRED_FAILED = "expired_failed"


class HistoryEvent(StrEnum):
    """Why an attempt ended without success, as ``q.history`` records it."""

    RETRIED = "retried"
    FAILED = "failed"
    LEASE_EXPIRED = "lease_expired"
    RELEASED = "released"  # a run interrupted by shutdown: its attempt given back
    REQUEUED = "requeued"  # a finished job put back in the queue by an operator (q.retry)
    SNOOZED = "snoozed"  # the handler raised RetryAfter
    CANCELLED = "cancelled"  # a running job stopped at an operator's request (q.cancel)


# The NOTIFY payload of a cancel request: no task is named so (task names cannot
# start with "!"), and supervisors look for requests among their jobs at once.
CANCEL_NOTICE = "!cancel"


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """The queues a claim takes jobs from: these (``exclude=False``), or every queue but
    these (``exclude=True``: a supervisor's default pool leaves its other pools' queues)."""

    names: tuple[str, ...] = ()
    exclude: bool = True


ALL_QUEUES = QueueFilter()


# ClaimedJob and Outcome are made once per job in a worker and again in its
# supervisor; as named tuples they are as immutable as a frozen dataclass and
# four times cheaper to build (0.6 -> 0.2 us), which counts on short jobs.
class ClaimedJob(NamedTuple):
    """A job a claim handed to ``owner``. Every field but ``owner`` is a column a
    claim returns (``attempt`` is ``attempts``), in this order: see CLAIM_COLUMNS."""

    id: int
    task: str
    payload: bytes
    priority: int
    attempt: int
    max_retries: int
    owner: str
    snoozes: int = 0


# What a claim's RETURNING lists: ClaimedJob's fields before ``owner``, then run_at,
# which only puts the batch in claim order (RETURNING order is unspecified), then
# ClaimedJob's fields after ``owner``.
CLAIM_COLUMNS = ("id", "task", "payload", "priority", "attempts", "max_retries", "run_at", "snoozes")


def claimed_jobs(rows: list[Any], owner: str) -> list[ClaimedJob]:
    """Rows of CLAIM_COLUMNS as ClaimedJobs, in claim order: priority desc, run_at, id.

    run_at sorts correctly both as a datetime and as SQLite's fixed-width text stamp.
    """
    rows.sort(key=lambda r: (-r[3], r[6], r[0]))
    return [ClaimedJob(r[0], r[1], r[2], r[3], r[4], r[5], owner, r[7]) for r in rows]


class Outcome(NamedTuple):
    """How one attempt ended; the fence is (id, owner, attempt)."""

    id: int
    owner: str
    attempt: int
    kind: OutcomeKind
    result: bytes | None = None
    error: str | None = None
    retry_in_s: float = 0.0
    duration_s: float | None = None  # how long the handler ran; None if it never started


def new_owner(role: str) -> str:
    """A lease owner name no other process, here or on another host, will ever use."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{secrets.token_hex(4)}"


def owner_host_pid(owner: str) -> tuple[str | None, int | None]:
    """The host and pid an owner from :func:`new_owner` names; (owner, None) for others."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return (host, int(pid)) if pid.isdigit() else (owner[:255], None)


# The burrow_jobs columns a read selects, in JobInfo's order.
JOB_COLUMNS = tuple(f.name for f in fields(JobInfo))


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """An attempt that did not succeed: why it ended, when, where it ran and for how long."""

    job_id: int
    attempt: int
    event: HistoryEvent
    error: str | None
    at: dt.datetime
    host: str | None = None
    pid: int | None = None
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A burrow process that registered itself (a supervisor or one of its workers)."""

    owner: str
    host: str
    pid: int
    role: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    stale: bool  # no heartbeat for longer than the staleness limit asked for


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A periodic job as the database knows it (burrow status shows it)."""

    name: str
    task: str
    spec: str
    last_slot: dt.datetime | None
    next_slot: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    """A running job whose owner stopped extending its lease: what a reaper decides on."""

    id: int
    task: str
    owner: str
    attempt: int
    max_retries: int
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True)
class ReapedJob:
    id: int
    task: str
    attempt: int
    state: JobState  # queued again, or failed when its retries were spent


@dataclass(frozen=True, slots=True)
class ThroughputRow:
    """Jobs of one task finished in one minute (its start, UTC), as the stats table holds them."""

    minute: dt.datetime
    task: str
    succeeded: int = 0
    failed: int = 0
    retried: int = 0


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """How far a database's schema is from this release's, read without changing anything."""

    database_exists: bool  # False: a SQLite file that the first start will create
    version: int  # 0: no burrow tables yet
    latest: int  # the newest migration this release knows

    def describe(self) -> str:
        if not self.database_exists:
            return f"does not exist yet: it will be created, and migrated to version {self.latest}, on start"
        if self.version == self.latest:
            return f"version {self.version}, up to date"
        if self.version > self.latest:
            return f"version {self.version}, newer than this burrow (version {self.latest}): upgrade burrow"
        return f"version {self.version}: start will migrate it to version {self.latest}"


class Backend(Protocol):
    """One database holding burrow's tables. Implementations: sqlite, postgres."""

    dialect: str

    def migrate(self) -> None:
        """Apply pending migrations, once, under a lock."""

    def ping(self) -> None:
        """Raise BackendError unless the database answers."""

    def schema_status(self) -> SchemaStatus:
        """Where the schema stands, without creating or changing anything."""

    def enqueue(self, jobs: Sequence[NewJob], conn: Any = None) -> list[int]:
        """Insert jobs in one transaction; ids by position; inside ``conn``'s transaction when given."""

    def claim(
        self,
        tasks: Sequence[str],
        limit: int,
        owner: str,
        lease_s: float,
        *,
        queues: QueueFilter = ALL_QUEUES,
        limits: Mapping[str, int] | None = None,
    ) -> list[ClaimedJob]:
        """Mark up to ``limit`` due queued jobs of ``tasks`` in ``queues`` running for
        ``owner``; of a task in ``limits``, only while fewer than its limit run."""

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Write outcomes in one round trip; returns the ids whose fence no longer held."""

    def extend_leases(self, jobs: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        """Push out the leases of (id, owner, attempt); returns the ids that were lost."""

    def expired_leases(self, limit: int = 1000) -> list[ExpiredLease]:
        """Running jobs whose lease has run out, oldest expiry first, at most ``limit``."""

    def release_owner(self, owner: str) -> list[int]:
        """Requeue, attempt given back, every job still running under a dead ``owner``."""

    def cancel(self, job_id: int) -> bool:
        """Cancel a queued job; False if it is in any other state."""

    def request_cancel(self, job_id: int) -> bool:
        """Ask the supervisor running this job to stop it; False unless it is running."""

    def cancel_requests(self, job_ids: Sequence[int]) -> list[int]:
        """Which of these jobs are running with a cancel request."""

    def get(self, job_id: int) -> JobInfo | None: ...

    def history(self, job_id: int) -> list[HistoryEntry]: ...

    def has_due(self, tasks: Sequence[str]) -> bool:
        """Whether a claim of ``tasks`` could return a job now."""

    def counts(self) -> dict[JobState, int]: ...

    def wait_for_jobs(self, timeout_s: float, tasks: Sequence[str] = ()) -> bool:
        """Block until new jobs may be due or the timeout; True if woken early."""

    def now(self) -> dt.datetime:
        """The backend's idea of now (an injected clock in tests)."""

    # -- operators (q.jobs, q.retry, q.delete, q.prune, q.processes, counts) --

    def list_jobs(
        self, states: Sequence[str] | None, tasks: Sequence[str] | None, before_id: int | None, limit: int
    ) -> list[JobInfo]: ...

    def counts_by_task(self, *, active_only: bool = False) -> dict[str, dict[JobState, int]]: ...

    def active_by_queue(self) -> dict[str, dict[JobState, int]]: ...

    def requeue(self, job_ids: Sequence[int], from_states: Sequence[JobState], note: str) -> list[int]: ...

    def ids_in(self, state: JobState, tasks: Sequence[str] | None, after_id: int, up_to_id: int, limit: int) -> list[int]: ...

    def max_id(self) -> int: ...

    def delete_job(self, job_id: int) -> bool | None: ...

    def prune(
        self, finished_before: dt.datetime, states: Sequence[JobState], batch: int = 1000, max_rows: int | None = None
    ) -> int: ...

    def processes(self, stale_after_s: float) -> list[ProcessInfo]: ...

    # -- throughput --

    def add_stats(self, rows: Sequence[ThroughputRow]) -> None: ...

    def stats_since(self, since: dt.datetime, tasks: Sequence[str] | None = None) -> list[ThroughputRow]: ...

    def prune_stats(self, before: dt.datetime) -> int: ...

    # -- periodic jobs --

    def enqueue_slot(
        self, name: str, spec: str, slot: dt.datetime, next_slot: dt.datetime, job: NewJob
    ) -> int | None: ...

    def schedules(self) -> list[ScheduleInfo]: ...

    # -- processes --

    def register_process(self, owner: str, host: str, pid: int, role: str) -> None: ...

    def heartbeat_processes(self, owners: Sequence[str]) -> list[str]:
        """Refresh these processes' rows; the owners whose row was removed (presumed dead)."""

    def remove_process(self, owner: str) -> None: ...

    def reap_processes(self, stale_after_s: float) -> list[str]: ...

    def after_fork(self) -> None:
        """Drop connections inherited from the parent without closing its sockets."""

    def close(self) -> None: ...
