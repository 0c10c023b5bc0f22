"""JobQueue: the Queue implementation over a Backend.

It owns the registry of handlers, turns API calls into backend operations and
runs due jobs in-process (``drain``) through the same claim, execute and finish
steps that supervisor workers use.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

import structlog

from burrow import codec
from burrow.backends import backend_for
from burrow.backends.contract import Backend
from burrow.backends.records import (
    ALL_QUEUES,
    Audit,
    AuditEntry,
    QueueInfo,
    SEARCH_WINDOW,
    SearchResult,
    DEFAULT_LEASE_S,
    ClaimedJob,
    ClaimRequest,
    HistoryEntry,
    Outcome,
    OutcomeKind,
    ProcessInfo,
    QueueFilter,
    ReapedJob,
    ScheduleInfo,
    StepRow,
    stopped_when_asked,
    new_owner,
)
from burrow.job import (
    FINISHED_STATES,
    EnqueueKeywords,
    EnqueueOptions,
    JobInfo,
    JobState,
    KeyedKeywords,
    ManyKeywords,
    NewJob,
    keyed_payloads,
    new_jobs,
    unique_keys,
)
from burrow.backends.sql.connection import Clock
from burrow.errors import (
    BackendError,
    BurrowError,
    DuplicateTask,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    PayloadEncodeError,
    WaitTimeout,
)
from burrow.execution import CancelCheck, JobHandlerFunc, Registration, execute, lease_expired_outcome, released
from burrow.options import (
    JobConfig,
    JobOption,
    apply_options,
    check_queue_name,
    check_task_name,
    check_unique_key,
    RegisteredOptions,
)
from burrow.retry import RetryDefaults
from burrow.schedule import Periodic
from burrow.stats import StatsCounter, ThroughputPoint, minute_of, throughput_points

log = structlog.get_logger("burrow")

DRAIN_BATCH = 10
PROGRESS_WRITE_S = 1.0  # a drain writes a job's progress at most this often
# Jobs should carry references, not blobs: a row this size is already slow to claim.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


def _payload_bytes(payload: Any, type_name: str, max_bytes: int) -> bytes:
    """Bytes are stored as given (already encoded); anything else becomes JSON."""
    data = bytes(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else codec.encode(payload)
    if len(data) > max_bytes:
        raise PayloadEncodeError(
            f"payload of {type_name!r} is {len(data)} bytes, over the {max_bytes}-byte cap (max_payload_bytes)"
        )
    return data


def enqueue_rows(
    type_name: str,
    payloads: Sequence[Any],
    options: EnqueueOptions,
    keys: Sequence[str | None] | None,
    config: JobConfig,
    max_payload_bytes: int,
    now: Callable[[], dt.datetime],
) -> list[NewJob]:
    """What an enqueue means, up to the database: the rows of ``payloads`` under
    ``options`` over ``config``, checked and encoded before anything is stored
    (:meth:`JobQueue.enqueue_options` and the async client's both come here)."""
    check_task_name(type_name)
    merged = options.over(config)
    if keys is None:
        keys = unique_keys(merged, config, payloads)
    else:
        keys = [check_unique_key(key) for key in keys]
    data = [_payload_bytes(p, type_name, max_payload_bytes) for p in payloads]
    return new_jobs(type_name, data, keys, merged, now)


class JobQueue:
    """A queue of jobs in one database, and the handlers this process can run."""

    def __init__(
        self,
        backend: Backend,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        retry_defaults: RetryDefaults = RetryDefaults(),
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.backend = backend
        self.lease_s = lease_s
        self.retry_defaults = retry_defaults
        self.max_payload_bytes = max_payload_bytes
        self.owner = new_owner("drain")
        self._registry: dict[str, Registration] = {}
        self._limits: dict[str, int] = {}  # the concurrency limits of the tasks registered here
        self._schedules: dict[str, Periodic] = {}
        self._registered = RegisteredOptions()  # of the tasks this queue has no definition of
        self._stats = StatsCounter()  # drain's finished jobs, for q.throughput
        self._claims = 0  # claims made: each has an owner of its own, owner/N
        self._cancel_check = CancelCheck(self.cancel_requested)
        self._unsettled: list[str] = []  # owners of claims that failed without an answer
        self._slots_seen: dict[str, dt.datetime] = {}  # the last slot each schedule was settled for

    # -- registry -----------------------------------------------------------------

    def handle(self, type_name: str, handler: JobHandlerFunc, *options: JobOption) -> None:
        """Run ``handler`` (bytes -> None, maybe async) for jobs of ``type_name`` here."""
        check_task_name(type_name)
        if type_name in self._registry:
            raise DuplicateTask(f"task {type_name!r} is already registered on this queue")
        if not callable(handler):
            raise BurrowError(f"handler for {type_name!r} is not callable: {handler!r}")
        registration = self._registry[type_name] = Registration(type_name, handler, apply_options(options))
        if registration.config.concurrency is not None:
            self._limits[type_name] = registration.config.concurrency

    @property
    def registrations(self) -> Mapping[str, Registration]:
        return self._registry

    def add_schedule(self, schedule: Periodic) -> None:
        """Enqueue ``schedule``'s job once per slot, from supervisors running this queue's apps
        (``burrow.periodic(...).register(q)`` calls this)."""
        if schedule.name in self._schedules:
            raise BurrowError(f"schedule {schedule.name!r} is already registered on this queue (give it a name=)")
        self._schedules[schedule.name] = schedule

    @property
    def schedules(self) -> Mapping[str, Periodic]:
        return self._schedules

    def _config(self, type_name: str) -> JobConfig:
        """The task's definition: the one registered here, else the options a supervisor
        that handles it registered (docs/architecture.md, "The job"), else burrow's
        defaults. An explicit option of a call wins over either (EnqueueOptions.over)."""
        registration = self._registry.get(type_name)
        if registration is not None:
            return registration.config
        return self._registered_config(type_name)

    def _registered_config(self, type_name: str) -> JobConfig:
        config = self._registered.cached(type_name)
        return config if config is not None else self._registered.remember(type_name, self.backend.task_options(type_name))

    # -- producing ----------------------------------------------------------------

    def enqueue(self, type_name: str, payload: Any, *, conn: Any = None, **options: Unpack[EnqueueKeywords]) -> int:
        """Store one job; returns its id (or, with a unique key held, the holder's id).

        The options (priority, max_retries, run_at or delay, unique_key, queue) are
        :class:`burrow.job.EnqueueOptions`'; what a call leaves out comes from the task
        registered here, then from burrow's defaults. ``conn`` enqueues inside that
        SQLAlchemy transaction: the job exists if and only if it commits.
        """
        return self.enqueue_options(type_name, [payload], EnqueueOptions.of(options), conn=conn)[0]

    def enqueue_at(
        self, type_name: str, payload: Any, run_at: dt.datetime, *, conn: Any = None, **options: Unpack[KeyedKeywords]
    ) -> int:
        """Store a job that is not claimed before ``run_at`` (timezone-aware)."""
        return self.enqueue(type_name, payload, run_at=run_at, conn=conn, **options)

    def enqueue_many(
        self,
        type_name: str,
        payloads: Iterable[Any],
        *,
        unique_keys: Sequence[str | None] | None = None,
        conn: Any = None,
        **options: Unpack[ManyKeywords],
    ) -> list[int]:
        """Store many jobs in one transaction; every payload is encoded before any is stored.

        The ids come back position by position; ``unique_keys`` (one per payload, None
        for none) defaults to the task's ``with_unique`` key of each payload.
        """
        listed = keyed_payloads(type_name, payloads, unique_keys)
        return self.enqueue_options(type_name, listed, EnqueueOptions.of(options), unique_keys, conn=conn)

    def enqueue_options(
        self,
        type_name: str,
        payloads: Sequence[Any],
        options: EnqueueOptions,
        keys: Sequence[str | None] | None = None,
        *,
        conn: Any = None,
        config: JobConfig | None = None,
    ) -> list[int]:
        """The enqueue every other one comes to: ``options`` (checked: EnqueueOptions.of)
        over ``config``, the task's own definition (a typed task passes its own; default:
        the handler registered here), in one transaction.

        Payloads that are bytes are stored as given (already encoded); the rest become
        JSON. ``keys``: one unique key per payload (None for none); default: the
        options' key, else the task's ``with_unique`` of each payload.
        """
        return self.backend.enqueue(self.job_rows(type_name, payloads, options, keys, config=config), conn)

    def job_rows(
        self,
        type_name: str,
        payloads: Sequence[Any],
        options: EnqueueOptions,
        keys: Sequence[str | None] | None = None,
        *,
        config: JobConfig | None = None,
    ) -> list[NewJob]:
        """The rows :meth:`enqueue_options` stores (a workflow's steps are made here too)."""
        check_task_name(type_name)  # before _config's round trip for its registered options
        config = self._config(type_name) if config is None else config
        return enqueue_rows(type_name, payloads, options, keys, config, self.max_payload_bytes, self.backend.now)

    def enqueue_steps(self, name: str | None, steps: Sequence[StepRow], *, conn: Any = None) -> list[int]:
        """Store a workflow's steps (``burrow.Workflow.enqueue`` makes them) in one transaction."""
        return self.backend.enqueue_workflow(name, steps, conn)

    def dequeue(self, job_id: int, *, actor: str | None = None) -> bool:
        """Cancel a job that has not started (True); False for any other state."""
        return self.backend.cancel(job_id, Audit(actor_of(actor), "cancel", job_id=job_id))

    # -- reading ------------------------------------------------------------------

    def job(self, job_id: int) -> JobInfo:
        """The job as it is now; JobNotFound for an unknown id."""
        info = self.backend.get(job_id)
        if info is None:
            raise JobNotFound(f"no job with id {job_id}")
        return info

    def workflow(self, id_or_name: int | str) -> list[JobInfo]:
        """A workflow's jobs, in the order they were added, with their states, parents and
        children; by id (any step's ``workflow_id``) or by name (the newest of that
        name). JobNotFound when there is no such workflow."""
        workflow_id = self.backend.find_workflow(id_or_name) if isinstance(id_or_name, str) else id_or_name
        found = [] if workflow_id is None else self.backend.workflow_jobs(workflow_id)
        if not found:
            raise JobNotFound(f"no workflow {id_or_name!r}")
        return found

    def history(self, job_id: int) -> list[HistoryEntry]:
        """Every attempt of the job that ended without success, oldest first."""
        return self.backend.history(job_id)

    def result(self, job_id: int) -> bytes | None:
        """The stored result bytes of a succeeded job (None if it captured none)."""
        return _result_of(self.job(job_id))

    def wait(self, job_id: int, timeout: float) -> JobInfo:
        """Block until the job finished; WaitTimeout (a TimeoutError) after ``timeout`` s.

        A failed or cancelled job raises what :meth:`result` raises.
        """
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            record = self.job(job_id)
            if record.state in FINISHED_STATES:
                _result_of(record)
                return record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"job {job_id} ({record.task}) still {record.state} after {timeout:g}s")
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block until a job this queue handles may be due; True if woken before ``timeout``."""
        return self.backend.wait_for_jobs(timeout, list(self._registry))

    # -- running in-process -------------------------------------------------------

    def drain(self, max_jobs: int | None = None) -> int:
        """Run due jobs of registered tasks here until none are left; returns how many ran
        and were recorded (a run whose lease was lost meanwhile is logged, not counted)."""
        tasks = list(self._registry)
        claimed = recorded = 0
        try:
            while max_jobs is None or claimed < max_jobs:
                limit = DRAIN_BATCH if max_jobs is None else min(DRAIN_BATCH, max_jobs - claimed)
                batch = self.claim(tasks, limit)
                if not batch:
                    break
                claimed += len(batch)
                recorded += self._run_batch(batch)
        finally:
            self.flush_stats()
        return recorded

    def claim(
        self, tasks: Sequence[str], limit: int, lease_s: float | None = None, queues: QueueFilter = ALL_QUEUES
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` due jobs of ``tasks`` (in ``queues``) under an owner of this
        claim's own, within the concurrency limits of the tasks registered here.

        A claim can fail after its commit went through (the connection dropped before
        the answer): its jobs are then running under its owner, and nobody knows
        them. So every claim has its own owner (``self.owner/N``), and the owners
        of failed claims are released, attempts given back, before the next claim.
        """
        for attempt in (1, 2):  # once more at once: a dropped connection is the usual cause
            try:
                while self._unsettled:
                    released = self.backend.release_owner(self._unsettled[0])
                    if released:
                        log.warning("orphaned_claim_released", owner=self._unsettled[0], job_ids=released)
                    self._unsettled.pop(0)
            except BackendError:
                if attempt == 2:
                    raise
                continue
            self._claims += 1
            owner = f"{self.owner}/{self._claims}"
            try:
                lease = self.lease_s if lease_s is None else lease_s
                return self.backend.claim(ClaimRequest(tasks, limit, owner, lease, queues, self._limits))
            except BackendError:
                self._unsettled.append(owner)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _run_batch(self, batch: Sequence[ClaimedJob]) -> int:
        """Run a claimed batch in order; whatever did not start goes back to the queue.

        Outcomes are written at the end of the batch, or before the leases are pushed
        out (every half lease): so every job of the batch, run or not, keeps a live
        lease until its outcome is written. A job whose lease was lost (another process
        reaped it) is not run; its run, if it ran, is not counted.
        """
        tasks = {job.id: job.task for job in batch}
        pending: list[Outcome] = []
        produced: set[int] = set()
        lost: set[int] = set()
        recorded = 0
        renew_at = self.backend.now() + dt.timedelta(seconds=self.lease_s / 2)  # the database's time
        try:
            for index, job in enumerate(batch):
                if self.backend.now() > renew_at:
                    recorded += self._record(pending, tasks)
                    pending = []
                    rest = [(j.id, j.owner, j.attempt) for j in batch[index:] if j.id not in lost]
                    for job_id in self.backend.extend_leases(rest, self.lease_s):
                        log.warning("job_lease_lost", job_id=job_id, detail="not run here: another process owns it")
                        lost.add(job_id)
                    renew_at = self.backend.now() + dt.timedelta(seconds=self.lease_s / 2)
                if job.id in lost:
                    continue
                outcome = execute(
                    job, self._registry[job.task], self.retry_defaults,
                    cancel_check=self._cancel_check.for_job(job.id), results_of=self.backend.parent_results,
                    progress=self._progress_writer(job),
                )
                pending.append(stopped_when_asked(outcome) if self._cancel_check.seen(job.id) else outcome)
                produced.add(job.id)
        finally:
            unstarted = [released(job) for job in batch if job.id not in produced and job.id not in lost]
            recorded += self._record(pending + unstarted, tasks)
        return recorded

    def _progress_writer(self, job: ClaimedJob) -> Callable[[int, int, float, str | None], None]:
        """A drain's progress(...): written to the job's row at most once a second (the
        first call at once), so a handler calling it in a loop costs no round trip each."""
        last = [-PROGRESS_WRITE_S]

        def write(job_id: int, attempt: int, fraction: float, message: str | None) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_WRITE_S:
                return
            last[0] = now
            try:
                self.backend.record_progress([(job.id, job.owner, job.attempt, fraction, message)])
            except BackendError as exc:
                log.warning("progress_not_written", job_id=job.id, error=str(exc))

        return write

    def _record(self, outcomes: list[Outcome], tasks: Mapping[int, str]) -> int:
        """Write ``outcomes``; the number of runs written (releases are not runs)."""
        if not outcomes:
            return 0
        lost = set(self.backend.finish(outcomes))
        now = self.backend.now()
        tally: Counter[tuple[str, OutcomeKind]] = Counter()
        for outcome in outcomes:
            if outcome.id in lost:
                log.warning("job_lease_lost", job_id=outcome.id, detail="another attempt owns the job; this result was dropped")
            elif outcome.kind is not OutcomeKind.RELEASED:
                tally[tasks[outcome.id], outcome.kind] += 1
        self._stats.count_many(tally, now)
        return sum(tally.values())

    def enqueue_due_slots(self) -> list[int]:
        """Enqueue the latest slot of each registered schedule that no process enqueued yet.

        Once per slot however many processes call this (see Backend.enqueue_slot); a
        slot missed while nothing ran is not made up for, only the latest is. The
        ids of the jobs this call enqueued.
        """
        now = self.backend.now()
        enqueued = []
        for schedule in self._schedules.values():
            slot = schedule.rule.latest(now)
            if self._slots_seen.get(schedule.name) == slot:
                continue  # settled already, by this process or another: no round trip
            data = _payload_bytes(schedule.payload, schedule.task, self.max_payload_bytes)
            options = schedule.options.over(self._config(schedule.task))._replace(run_at=slot, delay=None)
            [job] = new_jobs(schedule.task, [data], [None], options, self.backend.now)
            job_id = self.backend.enqueue_slot(schedule.name, schedule.rule.describe(), slot, schedule.rule.after(slot), job)
            self._slots_seen[schedule.name] = slot
            if job_id is not None:
                log.info("periodic_job_enqueued", schedule=schedule.name, slot=slot.isoformat(), job_id=job_id)
                enqueued.append(job_id)
        return enqueued

    def flush_stats(self) -> None:
        """Add the finished jobs counted here to the database's per-minute counts."""
        try:
            self._stats.flush(self.backend)
        except BackendError as exc:
            log.warning("stats_not_written", error=str(exc))

    def throughput(self, minutes: int = 60, task: str | Sequence[str] | None = None) -> list[ThroughputPoint]:
        """Jobs finished per minute over the last ``minutes`` (this one included), oldest
        first, every minute listed: succeeded, failed and retried runs, of ``task`` if given."""
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 7 * 24 * 60:
            raise BurrowError(f"minutes must be an integer from 1 to {7 * 24 * 60}, got {minutes!r}")
        tasks = [task] if isinstance(task, str) else list(task or [])
        first = minute_of(self.backend.now()) - dt.timedelta(minutes=minutes - 1)
        return throughput_points(self.backend, first, minutes, tasks)

    # -- operators ----------------------------------------------------------------

    def jobs(
        self,
        state: StateFilter = None,
        task: str | Sequence[str] | None = None,
        before_id: int | None = None,
        limit: int = 50,
        *,
        after_id: int | None = None,
    ) -> list[JobInfo]:
        """Jobs newest first (id descending); page on with ``before_id`` = the last id seen,
        and back with ``after_id`` = the first id seen (the ``limit`` jobs just newer).

        ``state`` and ``task`` may each be one value or a list.
        """
        states, tasks = _listing(state, task, before_id, limit)
        if after_id is not None and (isinstance(after_id, bool) or not isinstance(after_id, int)):
            raise BurrowError(f"after_id must be a job id (an integer), got {after_id!r}")
        return self.backend.list_jobs(states, tasks, before_id, limit, after_id)

    def search(
        self,
        text: str,
        state: StateFilter = None,
        task: str | Sequence[str] | None = None,
        before_id: int | None = None,
        limit: int = 50,
        *,
        window: int = SEARCH_WINDOW,
    ) -> SearchResult:
        """Jobs whose payload (its JSON text) or last error contains ``text``, ASCII letters
        in either case, newest first, with :meth:`jobs`' filters.

        A search looks through the ``window`` newest jobs below ``before_id`` (100,000 by
        default, well under 2 s on either database), not the whole table:
        ``result.window_end`` says where it stopped (search on with
        ``before_id=result.window_end``), None when it reached the oldest job."""
        if not isinstance(text, str) or not text or len(text) > 200 or "\x00" in text:
            raise BurrowError(f"search text must be 1 to 200 characters (no NUL), got {text!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise BurrowError(f"window must be a positive integer, got {window!r}")
        states, tasks = _listing(state, task, before_id, limit)
        found, end = self.backend.search_jobs(text, states, tasks, before_id, limit, window)
        return SearchResult(found, end)

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state, zeros included)."""
        return self.backend.counts()

    def counts_by_task(self) -> dict[str, dict[JobState, int]]:
        """task -> state -> count, every state of each task listed (zeros included)."""
        return {
            task: {state: by_state.get(state, 0) for state in JobState}
            for task, by_state in sorted(self.backend.counts_by_task().items())
        }

    def counts_by_queue(self) -> dict[str, dict[JobState, int]]:
        """queue -> queued and running jobs (the depth each pool of workers faces)."""
        return {
            queue: {state: by_state.get(state, 0) for state in (JobState.QUEUED, JobState.RUNNING)}
            for queue, by_state in sorted(self.backend.active_by_queue().items())
        }

    def retry(self, job_id: int, *, actor: str | None = None) -> bool:
        """Put a failed or cancelled job back in the queue, due now, as if new: attempts 0,
        error and result cleared (its history keeps the past attempts and records the
        retry). False for a job in any other state; JobNotFound for an unknown id.

        Every operator action (this, retry_all, cancel, dequeue, delete, prune,
        pause_queue, resume_queue, run_now) writes a row of :meth:`audit` in its own
        transaction, naming ``actor`` (default: the OS user and host, ``user@host``)."""
        if self.backend.requeue([job_id], _RETRYABLE, REQUEUED_NOTE, Audit(actor_of(actor), "retry", job_id=job_id)):
            return True
        self.job(job_id)  # JobNotFound if there is no such job
        return False

    def retry_all(
        self, state: str | JobState = JobState.FAILED, task: str | Sequence[str] | None = None, *, actor: str | None = None
    ) -> int:
        """:meth:`retry` every job in ``state`` (failed or cancelled), of ``task`` if given;
        the number retried. Works through the jobs that existed when it began, 1,000 at a
        time, each batch's audit row in its transaction (one row, count 0, if none was found)."""
        states = _states(state)
        wanted = states[0] if len(states) == 1 else None
        if wanted not in _RETRYABLE:
            raise BurrowError(f"only failed or cancelled jobs can be retried, not state {str(state)!r}")
        tasks = [task] if isinstance(task, str) else list(task or [])
        audit = Audit(actor_of(actor), "retry_all", filter=_filter_text(state=wanted, task=tasks))
        up_to, after, retried = self.backend.max_id(), 0, 0
        while ids := self.backend.ids_in(wanted, tasks, after, up_to, BULK_BATCH):
            retried += len(self.backend.requeue(ids, _RETRYABLE, REQUEUED_NOTE, audit))
            after = ids[-1]
        if not retried:
            self.backend.add_audit(audit, 0)
        return retried

    def cancel(self, job_id: int, *, actor: str | None = None) -> bool:
        """Cancel a job: a queued one at once; a running one is stopped by the supervisor
        running it, within about a second (its worker killed and replaced if the handler
        does not stop first), and ends cancelled, never retried. False for a finished
        job; JobNotFound for an unknown id. (``dequeue`` cancels queued jobs only.)"""
        audit = Audit(actor_of(actor), "cancel", job_id=job_id)
        if self.backend.cancel(job_id, audit) or self.backend.request_cancel(job_id, audit):
            return True
        self.job(job_id)
        return False

    def cancel_requested(self, job_id: int) -> bool:
        """Whether a cancel of this job was asked for while it ran (it may be written off as
        cancelled already: its supervisor does that first, then stops the run)."""
        info = self.backend.get(job_id)
        return info is not None and (info.cancel_requested_at is not None or info.state is JobState.CANCELLED)

    def delete(self, job_id: int, *, actor: str | None = None) -> bool:
        """Delete a job and its history: True; False while it runs. JobNotFound if unknown."""
        deleted = self.backend.delete_job(job_id, Audit(actor_of(actor), "delete", job_id=job_id))
        if deleted is None:
            raise JobNotFound(f"no job with id {job_id}")
        return deleted

    def prune(
        self,
        older_than: dt.timedelta | float,
        states: Iterable[str | JobState] = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED),
        *,
        actor: str | None = None,
    ) -> int:
        """Delete jobs in ``states`` (finished ones only) that finished more than
        ``older_than`` ago, with their history, 1,000 per transaction; the number deleted."""
        age = older_than if isinstance(older_than, dt.timedelta) else dt.timedelta(seconds=older_than)
        if age < dt.timedelta(0):
            raise BurrowError(f"older_than must not be negative, got {older_than!r}")
        wanted = _states(list(states))
        if not wanted or any(s not in FINISHED_STATES for s in wanted):
            raise BurrowError(
                "only finished jobs (succeeded, failed, cancelled) can be pruned,"
                f" not state {', '.join(str(s) for s in wanted) or '(none given)'}"
            )
        audit = Audit(actor_of(actor), "prune", filter=_filter_text(state=wanted, older_than=f"{age.total_seconds():g}s"))
        pruned = self.backend.prune(self.backend.now() - age, wanted, BULK_BATCH, audit=audit)
        if not pruned:
            self.backend.add_audit(audit, 0)
        return pruned

    def run_now(self, job_id: int, *, actor: str | None = None) -> bool:
        """Make a queued job that is due later (scheduled, retrying, snoozed) due now:
        True. False for any other job (due already, running, finished); JobNotFound
        for an unknown id."""
        if self.backend.run_now(job_id, Audit(actor_of(actor), "run_now", job_id=job_id)):
            return True
        self.job(job_id)
        return False

    def pause_queue(self, queue: str, *, actor: str | None = None) -> bool:
        """Stop every supervisor on this database claiming jobs of ``queue`` (at its next
        claim: within a second); running jobs finish, enqueues still work (the jobs
        wait). The state is in the database: it outlives restarts. True if it was not
        paused already."""
        check_queue_name(queue)
        return self.backend.set_paused(queue, True, Audit(actor_of(actor), "pause", queue=queue))

    def resume_queue(self, queue: str, *, actor: str | None = None) -> bool:
        """Let supervisors claim ``queue``'s jobs again; True if it was paused."""
        check_queue_name(queue)
        return self.backend.set_paused(queue, False, Audit(actor_of(actor), "resume", queue=queue))

    def queues(self) -> list[QueueInfo]:
        """Every queue that has queued or running jobs or was ever paused, by name: whether
        it is paused, and its queued and running jobs."""
        active = self.backend.active_by_queue()
        rows = {name: (paused, at, by) for name, paused, at, by in self.backend.queue_rows()}
        out = []
        for name in sorted(set(active) | set(rows)):
            counts = active.get(name, {})
            paused, at, by = rows.get(name, (False, None, None))
            out.append(
                QueueInfo(name, paused, counts.get(JobState.QUEUED, 0), counts.get(JobState.RUNNING, 0), at, by)
            )
        return out

    def paused_queues(self) -> list[str]:
        """The names of the paused queues."""
        return self.backend.paused_queues()

    def audit(self, limit: int = 50, before_id: int | None = None) -> list[AuditEntry]:
        """Operators' actions, newest first (page on with ``before_id``)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LISTING:
            raise BurrowError(f"limit must be an integer from 1 to {MAX_LISTING}, got {limit!r}")
        return self.backend.audit_entries(limit, before_id)

    def periodic_jobs(self) -> list[ScheduleInfo]:
        """Every periodic job a supervisor has run on this database, with its last and next
        slot (the registered ones are :attr:`schedules`; this is what the database knows)."""
        return self.backend.schedules()

    def processes(self, stale_after_s: float | None = None) -> list[ProcessInfo]:
        """The registered supervisors and workers; stale if silent for ``stale_after_s``
        (default: the lease timeout, past which their jobs are another's to run)."""
        return self.backend.processes(self.lease_s if stale_after_s is None else stale_after_s)

    def unhandled(self, stale_after_s: float | None = None) -> dict[str, int]:
        """Due queued jobs by task, for each task that no live supervisor handles (none
        registered it, or each that did is silent for ``stale_after_s``, default the
        lease timeout): jobs that wait until one does."""
        return self.backend.unhandled(self.lease_s if stale_after_s is None else stale_after_s)

    # -- leases -------------------------------------------------------------------

    def reap_expired(self, limit: int = 1000) -> list[ReapedJob]:
        """Requeue (with the job's backoff) or fail the running jobs whose lease expired.

        Any process may reap: an expired lease means its owner stopped
        heartbeating. Each job is decided like any other failed attempt, by
        ``retry.decide``, with its task's backoff when this queue has the task
        registered and the queue's ``retry_defaults`` (config ``[retry]``)
        otherwise; the write re-checks the expiry, so a lease extended meanwhile
        or a second reaper changes nothing.
        """
        expired = self.backend.expired_leases(limit)
        outcomes = [lease_expired_outcome(job, self._config(job.task), self.retry_defaults) for job in expired]
        lost = set(self.backend.finish(outcomes))
        return [
            ReapedJob(job.id, job.task, job.attempt, _REAPED_STATE[outcome.kind])
            for job, outcome in zip(expired, outcomes)
            if job.id not in lost
        ]

    # -- lifecycle ----------------------------------------------------------------

    def migrate(self) -> None:
        self.backend.migrate()

    def after_fork(self) -> None:
        """Call in a forked child before using the queue: new connections, new owner."""
        self.backend.after_fork()
        self.owner = new_owner("drain")
        self._claims, self._unsettled = 0, []

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()


StateFilter = str | JobState | Sequence[str | JobState] | None
MAX_LISTING = 1000
BULK_BATCH = 1000  # rows per statement in bulk actions: no lock held for long
REQUEUED_NOTE = "retried by an operator"
_RETRYABLE = (JobState.FAILED, JobState.CANCELLED)


def _listing(
    state: StateFilter, task: str | Sequence[str] | None, before_id: int | None, limit: int
) -> tuple[list[JobState], list[str]]:
    """A listing's filters checked: its states and tasks as lists."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LISTING:
        raise BurrowError(f"limit must be an integer from 1 to {MAX_LISTING}, got {limit!r}")
    if before_id is not None and (isinstance(before_id, bool) or not isinstance(before_id, int)):
        raise BurrowError(f"before_id must be a job id (an integer), got {before_id!r}")
    tasks = [task] if isinstance(task, str) else list(task or [])
    for name in tasks:
        check_task_name(name)
    return _states(state), tasks


def actor_of(actor: str | None) -> str:
    """Who an action is recorded as: ``actor``, else the OS user and host (user@host)."""
    if actor is not None:
        if not isinstance(actor, str) or not actor.strip():
            raise BurrowError(f"actor must be a non-empty string, got {actor!r}")
        return actor
    return f"{_os_user()}@{socket.gethostname()}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return str(os.getuid())


def _filter_text(**terms: Any) -> str:
    """A bulk action's filter as the audit row keeps it: "state=failed task=a,b"."""
    parts = []
    for key, value in terms.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if value:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _states(state: StateFilter) -> list[JobState]:
    """One state or several, as JobStates; a BurrowError naming a value that is none."""
    values = [state] if isinstance(state, str) else list(state or [])
    try:
        return [JobState(value) for value in values]
    except ValueError:
        bad = next(v for v in values if v not in {s.value for s in JobState})
        raise BurrowError(f"unknown job state {bad!r}: use one of {', '.join(s.value for s in JobState)}") from None


_REAPED_STATE = {OutcomeKind.EXPIRED_RETRY: JobState.QUEUED, OutcomeKind.EXPIRED_FAILED: JobState.FAILED}


def _result_of(record: JobInfo) -> bytes | None:
    if record.state is JobState.SUCCEEDED:
        return record.result
    name = f"job {record.id} ({record.task})"
    if record.state is JobState.FAILED:
        error = (record.last_error or "no error recorded").splitlines()[0]
        raise JobFailed(f"{name} failed after {record.attempts} attempt(s): {error}")
    if record.state is JobState.CANCELLED:
        raise JobCancelled(f"{name} was cancelled")
    raise JobNotFinished(f"{name} has not finished: it is {record.state}")


def connect(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: str | os.PathLike[str] | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    retry_defaults: RetryDefaults = RetryDefaults(),
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    clock: Clock | None = None,
    pooled: bool = False,
    listen_dsn: str | None = None,
) -> JobQueue:
    """Open the queue at ``dsn`` and apply pending migrations before returning.

    Without ``dsn``: the ``BURROW_DATABASE_DSN`` environment variable (with
    ``BURROW_DATABASE_SCHEMA``), else ``sqlite:///burrow.db`` in the current directory.
    ``config="conf/jobs.toml"`` reads the file's ``[database]`` section (``dsn``,
    ``dsn_file``, ``schema``; a relative SQLite path is read against the file's
    directory), under the variables, under ``dsn`` and ``schema`` when given: the
    supervisor's order (burrow.config.database_of).
    ``schema`` (PostgreSQL) keeps this app's jobs apart from others on one server.
    ``max_payload_bytes`` caps an encoded payload; a larger one is refused at enqueue.
    ``clock`` replaces the time source, for tests and simulations.
    ``pooled``: ``dsn`` is PgBouncer in transaction mode; ``listen_dsn``: a direct
    connection for LISTEN (README, "Scaling out"); a file's ``[database]`` may set both.
    """
    from burrow.config import database_of, load_config  # here: `python -m burrow.config` must not find itself imported

    if config is not None:
        database = load_config(os.fspath(config), dsn_override=dsn, dsn_option="connect(dsn=)").database
        dsn, schema = database.dsn, schema or database.schema
        pooled, listen_dsn = pooled or database.pooled, listen_dsn or database.listen_dsn
    else:
        dsn, schema = database_of(dsn, schema=schema)
    backend = backend_for(dsn, schema=schema, clock=clock, pooled=pooled, listen_dsn=listen_dsn)
    try:
        backend.migrate()
    except BaseException:
        backend.close()
        raise
    return JobQueue(backend, lease_s=lease_s, retry_defaults=retry_defaults, max_payload_bytes=max_payload_bytes)
