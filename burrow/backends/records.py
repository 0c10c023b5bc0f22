"""The records that cross the storage contract (``burrow.backends.contract``).

Backends deal in opaque payload and result bytes; typing happens above them. Each
operation that ends or extends an attempt is *fenced*: it names the job id, the
owner that claimed it and the attempt number, and only touches a row that still
matches all three and is ``running``. A process that lost its lease therefore
never overwrites a newer attempt; the backend reports such jobs as lost instead.

They live apart from the protocols so that code which only builds or reads a
record (the stats counter, the transitions table, the CLI's printers) imports no
storage interface at all (see docs/architecture.md on the storage contract).

The records here are the job row's one definition above SQL: a claim returns the
fields of :class:`ClaimedJob`, an insert writes those of :class:`burrow.job.NewJob`,
a read fills :class:`burrow.job.JobInfo`; what each outcome does to a row is the table in
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
from typing import Any, NamedTuple

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
# The error of a running job its supervisor ended at an operator's request.
CANCELLED_BY_OPERATOR = "cancelled at an operator's request (q.cancel)"


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """The queues a claim takes jobs from: these (``exclude=False``), or every queue but
    these (``exclude=True``: a supervisor's default pool leaves its other pools' queues)."""

    names: tuple[str, ...] = ()
    exclude: bool = True


ALL_QUEUES = QueueFilter()


class ClaimRequest(NamedTuple):
    """What one claim asks for: every parameter of ``JobStore.claim`` as one value.

    The protocol, the shared SQL and both dialects pass it through whole, so a new
    claim parameter is a field here and the SQL that reads it, nothing in between.
    One is built per claim, not per job: a named tuple, it costs a fraction of a
    microsecond.
    """

    tasks: Sequence[str]
    limit: int
    owner: str
    lease_s: float
    queues: QueueFilter = ALL_QUEUES  # the queues to take jobs from
    limits: Mapping[str, int] | None = None  # task -> most jobs of it running at once, everywhere


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


def stopped_when_asked(outcome: Outcome) -> Outcome:
    """The outcome of a job whose handler saw its cancel request (CancelCheck.seen) and
    ended: cancelled, whatever the handler returned, as if whoever writes it (the
    supervisor, or a drain) had seen the request first."""
    return Outcome(
        outcome.id, outcome.owner, outcome.attempt, OutcomeKind.CANCELLED, error=CANCELLED_BY_OPERATOR,
        duration_s=outcome.duration_s,
    )


def new_owner(role: str) -> str:
    """A lease owner name no other process, here or on another host, will ever use."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{secrets.token_hex(4)}"


def owner_host_pid(owner: str) -> tuple[str | None, int | None]:
    """The host and pid an owner from :func:`new_owner` names; (owner, None) for others."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return (host, int(pid)) if pid.isdigit() else (owner[:255], None)


class StepRow(NamedTuple):
    """A workflow's step as stored: its row, its parents by position in the workflow,
    whether it runs whatever they end as, and its delay counted from its release."""

    job: NewJob
    parents: tuple[int, ...]
    ignore_parent_failure: bool
    delay_s: float


# The burrow_jobs columns a read selects, in JobInfo's order.
JOB_COLUMNS = tuple(f.name for f in fields(JobInfo) if f.metadata["column"])


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
class HostInfo:
    """The processes of one host, as ``burrow status`` and the admin show them."""

    host: str
    supervisors: int
    workers: int
    heartbeat_at: dt.datetime  # the newest heartbeat of its processes
    stale: bool  # every process of it is stale: a host silent past the lease (its rows are reaped)


def hosts_of(processes: Sequence[ProcessInfo]) -> list[HostInfo]:
    """Per host (in the order hosts first appear): its supervisors, its workers, its newest heartbeat."""
    by_host: dict[str, list[ProcessInfo]] = {}
    for process in processes:
        by_host.setdefault(process.host, []).append(process)
    return [
        HostInfo(
            host,
            sum(1 for p in rows if p.role == "supervisor"),
            sum(1 for p in rows if p.role != "supervisor"),
            max(p.heartbeat_at for p in rows),
            all(p.stale for p in rows),
        )
        for host, rows in by_host.items()
    ]


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


@dataclass(frozen=True, slots=True)
class StatisticsRefresh:
    """The jobs table's planner statistics were far behind it: what came of it.

    ``analyzed`` is False when they are behind still: another session held the
    table's lock (autovacuum's or another supervisor's ANALYZE, which will do), or
    the role may not analyze the table (``may_analyze``: it does not own it), in
    which case no ANALYZE was sent.
    """

    rows_in_statistics: int  # the rows its statistics count (0: never analyzed)
    live_rows: int  # the rows the statistics views count now
    analyzed: bool
    may_analyze: bool = True


class Audit(NamedTuple):
    """An operator action to record with it (burrow_audit), in its own transaction: who
    (``actor``), what (``action``), on which job, queue or filter. The count of jobs is
    what the action changed, filled in by the backend."""

    actor: str
    action: str
    job_id: int | None = None
    queue: str | None = None
    filter: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded operator action (``burrow audit``, the admin's Activity page)."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    job_id: int | None
    queue: str | None
    filter: str | None
    count: int


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A page of jobs whose payload or last error holds the text, newest first.

    A search looks through a window of the newest jobs (``SEARCH_WINDOW`` ids
    below ``before_id``), not the whole table: ``window_end`` is the id the window
    stopped at (search on with ``before_id=window_end`` for older jobs), None when
    the window reached the oldest job."""

    jobs: list[JobInfo]
    window_end: int | None


# How many of the newest jobs a search looks through: a scan of this many rows
# answers in well under 2 s on PostgreSQL and SQLite (README, Operating burrow).
SEARCH_WINDOW = 100_000


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue: whether an operator paused it, and its queued and running jobs."""

    name: str
    paused: bool
    queued: int
    running: int
    updated_at: dt.datetime | None = None  # of the last pause or resume
    updated_by: str | None = None
