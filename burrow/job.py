"""The job: its states, what a reader sees of it, what an insert carries, and the
options of an enqueue.

One home for the job's shape (docs/architecture.md, "The job"), so that a new field
or a new enqueue option is an edit here and nowhere else above the database:

- :class:`JobInfo` is what a reader sees; each field's metadata says how operators'
  tools show it (:data:`FIELDS`), so ``burrow jobs show``, its ``--json`` and the
  admin's job page list a new field without being touched.
- :class:`NewJob` is what an insert carries; the dialects build their INSERT from
  its fields.
- :class:`EnqueueOptions` is the enqueue keywords as one value (River's InsertOpts,
  Oban's ``Job.new(args, opts)``), checked once when it is made; :meth:`EnqueueOptions.over`
  is the one place a call's options, a task's defaults and burrow's defaults are
  merged, and :func:`new_job` the one place they become a row. Every enqueue path
  (the typed tasks, ``JobQueue.enqueue``/``enqueue_many``, periodic jobs, the CLI)
  goes through them.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Final, NamedTuple, TypedDict, TypeVar

from burrow.errors import BurrowError
from burrow.options import (
    JobConfig,
    check_max_retries,
    check_priority,
    check_queue_name,
    check_unique_key,
)

DEFAULT_QUEUE: Final = "default"
# Ten years: a larger delay is a bug, not a plan.
T = TypeVar("T")

MAX_ENQUEUE_DELAY_S: Final = 10 * 366 * 24 * 3600.0


class JobState(StrEnum):
    WAITING = "waiting"  # a workflow step whose parents have not all finished: never claimed
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


# -- what a reader sees ----------------------------------------------------------------


class Shown(StrEnum):
    """How operators' tools show a field; each tool renders each kind its own way."""

    TEXT = "text"  # the value as it is (a number, a name)
    STATE = "state"  # a JobState
    TASK = "task"  # a task name (the admin links it to the task's jobs)
    ATTEMPTS = "attempts"  # runs started, read against max_retries + 1 (the most there can be)
    TIME = "time"  # an aware datetime, or None
    BYTES = "bytes"  # stored bytes (payload, result): decoded JSON where they are JSON
    ERROR = "error"  # a multi-line text whose first line is the message
    JOBS = "jobs"  # job ids (a workflow step's parents, children): the admin links each
    PROGRESS = "progress"  # a fraction in [0, 1], or None: shown as a percentage (the admin: a bar)


def _shown(label: str, kind: Shown = Shown.TEXT, *, column: bool = True) -> Any:
    """Field metadata for :data:`FIELDS`: the label people read, how to show it, and
    whether it is a column of ``burrow_jobs`` (else it is read beside the row)."""
    return {"label": label, "shown": kind, "column": column}


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What a job is now. Times are timezone-aware UTC; ``result`` is the stored bytes.

    The first twelve fields are the public API, in this order; the rest are the
    row's other columns, for operators' tools. A field's metadata names it for
    people and says how to show it (see :data:`FIELDS`).
    """

    id: int = field(metadata=_shown("id"))
    task: str = field(metadata=_shown("task", Shown.TASK))
    state: JobState = field(metadata=_shown("state", Shown.STATE))
    priority: int = field(metadata=_shown("priority"))
    attempts: int = field(metadata=_shown("attempts", Shown.ATTEMPTS))
    max_retries: int = field(metadata=_shown("max retries"))
    run_at: dt.datetime = field(metadata=_shown("run at", Shown.TIME))
    created_at: dt.datetime = field(metadata=_shown("created at", Shown.TIME))
    started_at: dt.datetime | None = field(metadata=_shown("started at", Shown.TIME))
    finished_at: dt.datetime | None = field(metadata=_shown("finished at", Shown.TIME))
    last_error: str | None = field(metadata=_shown("last error", Shown.ERROR))
    result: bytes | None = field(metadata=_shown("result", Shown.BYTES))
    payload: bytes = field(metadata=_shown("payload", Shown.BYTES))
    owner: str | None = field(metadata=_shown("owner"))
    lease_expires_at: dt.datetime | None = field(metadata=_shown("lease expires", Shown.TIME))
    unique_key: str | None = field(default=None, metadata=_shown("unique key"))
    snoozes: int = field(default=0, metadata=_shown("snoozes"))
    queue: str = field(default=DEFAULT_QUEUE, metadata=_shown("queue"))
    # q.cancel of a running job, until it ends
    cancel_requested_at: dt.datetime | None = field(default=None, metadata=_shown("cancel request", Shown.TIME))
    # A workflow's step (burrow.Workflow): which workflow, and the steps it waits for
    # and that wait for it (read with the job itself, empty in listings).
    workflow_id: int | None = field(default=None, metadata=_shown("workflow"))
    workflow_name: str | None = field(default=None, metadata=_shown("workflow name"))
    parents: tuple[int, ...] = field(default=(), metadata=_shown("parents", Shown.JOBS, column=False))
    children: tuple[int, ...] = field(default=(), metadata=_shown("children", Shown.JOBS, column=False))
    # the latest current_job().progress(fraction, message) of the run, as its supervisor wrote it
    progress: float | None = field(default=None, metadata=_shown("progress", Shown.PROGRESS))
    progress_message: str | None = field(default=None, metadata=_shown("progress message"))


class JobField(NamedTuple):
    """One row of the field table: a JobInfo field, its label, and how it is shown."""

    name: str
    label: str
    shown: Shown

    def value(self, job: JobInfo) -> Any:
        return getattr(job, self.name)


# Every JobInfo field, in order: what `burrow jobs show` (and --json) and the admin's
# job page render, so that a new field appears in all three.
FIELDS: Final = tuple(JobField(f.name, f.metadata["label"], f.metadata["shown"]) for f in fields(JobInfo))


# -- what an insert carries ------------------------------------------------------------


class NewJob(NamedTuple):
    """A row to insert; the field names are the ``burrow_jobs`` columns they fill, and
    the dialects' INSERT statements are built from them."""

    task: str
    payload: bytes
    priority: int
    max_retries: int
    run_at: dt.datetime | None  # None: now, by the backend's clock
    unique_key: str | None = None  # while a job of this task holds it, no other is inserted
    queue: str = DEFAULT_QUEUE  # the pool of workers that claims it


# -- the options of an enqueue ---------------------------------------------------------


class _Unset(enum.Enum):
    UNSET = "unset"


# A unique_key the call did not give: the task's ``with_unique`` decides. (An explicit
# None is a decision too: this job has no key.)
UNSET: Final = _Unset.UNSET

Delay = dt.timedelta | float


class JobKeywords(TypedDict, total=False):
    """The enqueue options every job takes (see :class:`EnqueueOptions` for each)."""

    priority: int
    max_retries: int
    queue: str


class ManyKeywords(JobKeywords, total=False):
    """What ``enqueue_many`` takes: one time for all its jobs (unique keys come per payload)."""

    run_at: dt.datetime
    delay: Delay


class KeyedKeywords(JobKeywords, total=False):
    """What ``enqueue_at`` and ``enqueue_in`` take beside their time."""

    unique_key: str | None


class EnqueueKeywords(ManyKeywords, KeyedKeywords, total=False):
    """Every enqueue option as a keyword: ``task.enqueue(q, p, delay=30, queue="mail")``.

    The enqueue functions take ``**options: Unpack[...]`` of these; their fields are
    :class:`EnqueueOptions`'s (a test holds the two equal), so a new option is one
    field there and one here.
    """


class EnqueueOptions(NamedTuple):
    """The options of one enqueue, as one value (make one with :meth:`of`, which checks
    each given value once, whichever path it came by).

    A field left at its default was not given: :meth:`over` fills it from the task's
    definition, then from burrow's defaults. ``run_at`` (timezone-aware) and ``delay``
    (a timedelta or seconds) exclude each other. ``unique_key``: while a queued or
    running job of the task holds the key, enqueue stores nothing and returns that
    job's id; left unset, the task's ``with_unique`` derives it from the payload.

    A named tuple, not a frozen dataclass: every enqueue makes two, and a frozen
    dataclass costs five times as much to build (6 us against 1 on a loaded core).
    """

    priority: int | None = None
    max_retries: int | None = None
    run_at: dt.datetime | None = None
    delay: Delay | None = None
    unique_key: str | None | _Unset = UNSET
    queue: str | None = None

    @classmethod
    def of(cls, keywords: Mapping[str, Any]) -> EnqueueOptions:
        """From enqueue keywords, each checked; a BurrowError names a bad or unknown one."""
        if not keywords:
            return _NO_OPTIONS
        for name, value in keywords.items():
            check = _CHECKS.get(name)
            if check is None:
                raise BurrowError(f"unknown enqueue option {name!r}: use {', '.join(sorted(_CHECKS))}")
            if value is not None:
                check(value)
        if keywords.get("run_at") is not None and keywords.get("delay") is not None:
            raise BurrowError("pass run_at or delay, not both")
        return cls(**keywords)

    def over(self, config: JobConfig) -> EnqueueOptions:
        """These options, with what they leave unset taken from the task's ``config``
        (whose own defaults are burrow's); the unique key stays as it is (see
        :func:`unique_keys`).

        The one merge of a call's options over a task's: every enqueue path calls
        it, and calling it again changes nothing.
        """
        if self.priority is not None and self.max_retries is not None and self.queue is not None:
            return self
        merged = list(self)  # every other option carried as the call gave it
        if self.priority is None:
            merged[_PRIORITY] = config.priority
        if self.max_retries is None:
            merged[_MAX_RETRIES] = config.max_retries
        merged[_QUEUE] = self.queue or config.queue or DEFAULT_QUEUE
        return EnqueueOptions._make(merged)

    def keywords(self) -> EnqueueKeywords:
        """The options that were given, as keywords for another enqueue call."""
        given: Any = {
            name: value
            for name, value, default in zip(self._fields, self, _DEFAULTS)
            if value is not default
        }
        return given


def _check_run_at(run_at: dt.datetime) -> None:
    if not isinstance(run_at, dt.datetime) or run_at.tzinfo is None or run_at.utcoffset() is None:
        shown = run_at.isoformat() if isinstance(run_at, dt.datetime) else repr(run_at)
        raise BurrowError(f"run_at {shown} is naive: pass a timezone-aware datetime")


def _check_unique_key(key: object) -> None:
    if key is not UNSET:
        check_unique_key(key)


_NO_OPTIONS: Final = EnqueueOptions()
_PRIORITY, _MAX_RETRIES, _QUEUE = (EnqueueOptions._fields.index(name) for name in ("priority", "max_retries", "queue"))
_DEFAULTS: Final = tuple(_NO_OPTIONS)
# How each option is checked (None, "not given", is never checked).
_CHECKS: Final[Mapping[str, Callable[[Any], object]]] = {
    "priority": check_priority,
    "max_retries": check_max_retries,
    "run_at": _check_run_at,
    "delay": lambda delay: delay_seconds(delay),
    "unique_key": _check_unique_key,
    "queue": check_queue_name,
}


def delay_seconds(delay: Delay) -> float:
    """A delay option as seconds, checked."""
    seconds = delay.total_seconds() if isinstance(delay, dt.timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_ENQUEUE_DELAY_S:
        raise BurrowError(f"delay must be 0 to {MAX_ENQUEUE_DELAY_S:g} seconds (or a timedelta), got {delay!r}")
    return float(seconds)


def keyed_payloads(task: str, payloads: Iterable[T], keys: Sequence[str | None] | None) -> list[T]:
    """The payloads as a list, once each call's ``unique_keys`` (one per payload) is
    known to match them: every enqueue_many, sync or async, typed or raw, checks here."""
    payloads = list(payloads)
    if keys is not None and len(keys) != len(payloads):
        raise BurrowError(f"{len(keys)} unique keys for {len(payloads)} payloads of {task!r}")
    return payloads


def unique_keys(options: EnqueueOptions, config: JobConfig, payloads: Sequence[Any]) -> list[str | None]:
    """Each payload's unique key: the call's, else the task's ``with_unique`` of the
    payload (the typed payload for a task, the raw value for ``q.enqueue``), else none."""
    if options.unique_key is not UNSET:
        return [options.unique_key] * len(payloads)
    if config.unique is None:
        return [None] * len(payloads)
    return [check_unique_key(config.unique(payload)) for payload in payloads]


def new_jobs(
    task: str,
    payloads: Sequence[bytes],
    keys: Sequence[str | None],
    options: EnqueueOptions,
    now: Callable[[], dt.datetime],
) -> list[NewJob]:
    """The rows for jobs of ``task`` under ``options`` (merged: :meth:`EnqueueOptions.over`),
    one per encoded payload and its unique key. ``now`` (the backend's clock) is read
    only for a ``delay``, once for all of them."""
    run_at = options.run_at
    if options.delay is not None:
        run_at = now() + dt.timedelta(seconds=delay_seconds(options.delay))
    priority, max_retries, queue = options.priority, options.max_retries, options.queue
    if priority is None or max_retries is None or queue is None:
        raise BurrowError("new_jobs takes options merged over the task's (EnqueueOptions.over)")
    return [NewJob(task, payload, priority, max_retries, run_at, key, queue) for payload, key in zip(payloads, keys)]
