"""The job: its states, what a reader sees of it, and what an insert carries.

One home for the job's shape, so that a new field is one edit here (and a column
in ``backends/schema.py``, a migration and the dialects' inserts): everything that
shows or stores a job reads its fields from these definitions. See
docs/architecture.md, "The job".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

DEFAULT_QUEUE = "default"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class NewJob(NamedTuple):
    """A row to insert; the field names are the ``burrow_jobs`` columns they fill."""

    task: str
    payload: bytes
    priority: int
    max_retries: int
    run_at: dt.datetime | None  # None: now, by the backend's clock
    unique_key: str | None = None  # while a job of this task holds it, no other is inserted
    queue: str = DEFAULT_QUEUE  # the pool of workers that claims it


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What a job is now. Times are timezone-aware UTC; ``result`` is the stored bytes.

    The first twelve fields are the public API (DESIGN.md section 3); the rest are
    the row's other columns, for operators' tools.
    """

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
    payload: bytes
    owner: str | None
    lease_expires_at: dt.datetime | None
    unique_key: str | None = None
    snoozes: int = 0
    queue: str = DEFAULT_QUEUE
    cancel_requested_at: dt.datetime | None = None  # q.cancel of a running job, until it ends


