"""The storage contract every backend fulfils, and the records that cross it.

Backends deal in opaque payload and result bytes; typing happens above them. Each
operation that ends or extends an attempt is *fenced*: it names the job id, the
owner that claimed it and the attempt number, and only touches a row that still
matches all three and is ``running``. A process that lost its lease therefore
never overwrites a newer attempt; the backend reports such jobs as lost instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"  # back to queued at retry_at, the attempt counted
    FAILED = "failed"
    RELEASED = "released"  # back to queued now, the attempt given back (claimed, never started)


@dataclass(frozen=True, slots=True)
class NewJob:
    task: str
    payload: bytes
    priority: int
    max_retries: int
    run_at: dt.datetime | None  # None: now, by the backend's clock


# ClaimedJob and Outcome are made once per job in a worker and again in its
# supervisor; as named tuples they are as immutable as a frozen dataclass and
# four times cheaper to build (0.6 -> 0.2 us), which counts on short jobs.
class ClaimedJob(NamedTuple):
    id: int
    task: str
    payload: bytes
    priority: int
    attempt: int
    max_retries: int
    owner: str


class Outcome(NamedTuple):
    """How one attempt ended; the fence is (id, owner, attempt)."""

    id: int
    owner: str
    attempt: int
    kind: OutcomeKind
    result: bytes | None = None
    error: str | None = None
    retry_in_s: float = 0.0


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: int
    task: str
    state: JobState
    priority: int
    attempts: int
    max_retries: int
    run_at: dt.datetime
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_error: str | None
    result: bytes | None
    owner: str | None
    lease_expires_at: dt.datetime | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """An attempt that did not succeed: why it ended and when."""

    job_id: int
    attempt: int
    event: str  # "retried", "failed", "lease_expired", "released"
    error: str | None
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class ReapedJob:
    id: int
    task: str
    attempt: int
    state: JobState  # queued again, or failed when its retries were spent


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
        """Insert jobs in one statement; inside ``conn``'s transaction when given."""

    def claim(self, tasks: Sequence[str], limit: int, owner: str, lease_s: float) -> list[ClaimedJob]:
        """Mark up to ``limit`` due queued jobs of ``tasks`` running for ``owner``."""

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Write outcomes in one round trip; returns the ids whose fence no longer held."""

    def extend_leases(self, jobs: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        """Push out the leases of (id, owner, attempt); returns the ids that were lost."""

    def reap_expired(self, limit: int = 1000) -> list[ReapedJob]:
        """Requeue (or fail, if spent) running jobs whose lease has expired."""

    def release_owner(self, owner: str) -> list[int]:
        """Requeue, attempt given back, every job still running under a dead ``owner``."""

    def cancel(self, job_id: int) -> bool:
        """Cancel a queued job; False if it is in any other state."""

    def get(self, job_id: int) -> JobRecord | None: ...

    def history(self, job_id: int) -> list[HistoryEntry]: ...

    def has_due(self, tasks: Sequence[str]) -> bool:
        """Whether a claim of ``tasks`` could return a job now."""

    def counts(self) -> dict[JobState, int]: ...

    def wait_for_jobs(self, timeout_s: float, tasks: Sequence[str] = ()) -> bool:
        """Block until new jobs may be due or the timeout; True if woken early."""

    def register_process(self, owner: str, host: str, pid: int, role: str) -> None: ...

    def heartbeat_process(self, owner: str) -> bool:
        """Refresh this process's row; False if it was removed (presumed dead)."""

    def remove_process(self, owner: str) -> None: ...

    def reap_processes(self, stale_after_s: float) -> list[str]: ...

    def after_fork(self) -> None:
        """Drop connections inherited from the parent without closing its sockets."""

    def close(self) -> None: ...
