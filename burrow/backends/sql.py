"""Statements both dialects share, written once in SQLAlchemy Core.

The dialects differ where it matters for speed or locking (claiming, batched
finishing, waiting for work); those live in ``sqlite.py`` and ``postgres.py`` with
the reason at the spot. Everything here is the same SQL on both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql as postgresql_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from burrow.backends.base import (
    ALL_QUEUES,
    CANCEL_NOTICE,
    JOB_COLUMNS,
    ClaimedJob,
    ExpiredLease,
    HistoryEntry,
    HistoryEvent,
    Outcome,
    OutcomeKind,
    ProcessInfo,
    QueueFilter,
    ScheduleInfo,
    SchemaStatus,
    claimed_jobs,
)
from burrow.job import JobInfo, JobState, NewJob
from burrow.backends.deadline import DEFAULT_TIMEOUTS, WATCHDOG, Call, Timeouts
from burrow.backends.migrations import LATEST_VERSION, stored_version
from burrow.backends.schema import UTC, Timestamp, history, jobs, processes, schedules, stats
from burrow.errors import BackendError
from burrow.backends.base import ThroughputRow

T = TypeVar("T")
log = structlog.get_logger("burrow")

Clock = Callable[[], dt.datetime]


# A literal, not a parameter: a prepared statement's generic plan can only use the
# partial index (WHERE state = 'queued') when the value is in the SQL text.
_IS_QUEUED = jobs.c.state == sa.literal_column("'queued'")
_IS_RUNNING = jobs.c.state == sa.literal_column("'running'")  # the reaper's partial index


# Held connections a forked child inherited. They belong to the parent: the child
# keeps them referenced so that neither the pool nor the driver closes them (or
# rolls back on them) from the child, over the parent's socket or file lock.
_INHERITED: list[Any] = []


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)


class SQLBackend:
    """The shared half of a Backend; subclasses add claim, finish and extend_leases."""

    dialect = "sql"

    # Whether calls run on a socket the deadline watchdog can shut down (PostgreSQL).
    watched = False

    def __init__(
        self,
        engine: sa.Engine,
        *,
        schema: str | None = None,
        clock: Clock | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        self.schema = schema
        self.timeouts = timeouts
        # After a call that took the whole deadline and failed, calls fail at once until
        # then (monotonic): one unanswered call at a time, not one per caller and step.
        self._quiet_until: float | None = None
        self._base_engine = engine
        self._engine = engine.execution_options(schema_translate_map={None: schema}) if schema else engine
        self._clock = clock
        self._held: Any = None  # the pool's proxy of this process's hot-path connection
        self._held_lock = threading.Lock()

    # -- time ---------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The backend's idea of now, in Python (the injected clock, or the host's)."""
        return self._clock() if self._clock is not None else utc_now()

    def _now(self) -> sa.ColumnElement[dt.datetime]:
        """``now`` as SQL: a bound value here; PostgreSQL uses the server's clock."""
        return sa.literal(self.now(), Timestamp)

    def _at(self, delay_s: float) -> sa.ColumnElement[dt.datetime]:
        return sa.literal(self.now() + dt.timedelta(seconds=delay_s), Timestamp)

    # -- plumbing -----------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        """Wrap database errors once, at the backend boundary, with the operation named."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            raise BackendError(f"{self.dialect}: {operation} failed: {_first_line(exc.orig or exc)}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f"{self.dialect}: {operation} failed: {_first_line(exc)}") from exc

    def _write(
        self, operation: str, fn: Callable[[sa.Connection], T], *, retry: bool = True, bounded: bool = True
    ) -> T:
        """Run ``fn`` in a write transaction; once more after a dropped connection.

        A retry is safe for the fenced writes (they change nothing a second time).
        Inserts pass retry=False: a lost commit acknowledgement must not become a
        duplicate job. ``bounded=False`` lifts the call deadline (migrations: an
        index built over millions of jobs takes what it takes).
        """
        return self._run(operation, fn, self._begin_write, attempts=2 if retry else 1, bounded=bounded)

    def _run(
        self,
        operation: str,
        fn: Callable[[sa.Connection], T],
        open_connection: Callable[[], contextlib.AbstractContextManager[sa.Connection]],
        *,
        attempts: int,
        bounded: bool = True,
    ) -> T:
        """Run ``fn``; after a dropped connection (the pool is then refreshed) try again."""
        for attempt in range(1, attempts + 1):
            self._check_quiet(operation)
            started = time.monotonic()
            try:
                with self._errors(operation), open_connection() as conn, self._deadline(conn, bounded) as call:
                    try:
                        result = fn(conn)
                    except sa.exc.DBAPIError as exc:
                        if call is not None and call.timed_out:
                            raise self._timed_out(operation) from exc
                        raise
            except BackendError as exc:
                self._note_failure(started)
                cause = exc.__cause__
                disconnected = isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated
                if not disconnected or attempt == attempts or time.monotonic() - started >= self.timeouts.call_s:
                    raise
            else:
                self._quiet_until = None
                return result
        raise AssertionError("unreachable")

    def _deadline(self, conn: sa.Connection, bounded: bool = True) -> contextlib.AbstractContextManager[Call | None]:
        """The call under the watchdog, on a network connection (see deadline.py)."""
        return self._held_deadline(conn.connection.dbapi_connection) if bounded else contextlib.nullcontext()

    def _timed_out(self, operation: str) -> BackendError:
        return BackendError(
            f"{self.dialect}: {operation} failed: no answer within {self.timeouts.call_s:g}s (connection closed)"
        )

    def _check_quiet(self, operation: str) -> None:
        if self._quiet_until is not None and time.monotonic() < self._quiet_until:
            raise BackendError(
                f"{self.dialect}: {operation} not tried: the database did not answer a call"
                f" within {self.timeouts.call_s:g}s just now"
            )

    def _note_failure(self, started: float) -> None:
        """A failed call that took the whole deadline: the next ones wait their turn."""
        now = time.monotonic()
        if now - started >= self.timeouts.call_s:
            self._quiet_until = now + self.timeouts.call_s

    def _begin_write(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self._engine.begin()

    def _on_held(self, operation: str, fn: Callable[[Any], T], *, retry: bool = True) -> T:
        """Run ``fn(dbapi_connection)`` on this process's held connection, for the hot path.

        Claims, finishes and lease extensions run many times a second, and through
        SQLAlchemy's execution layer (pool checkout, begin event, compiled-statement
        lookup, result processing) they cost several times the SQL itself. Here they
        are fixed SQL text on a DBAPI connection kept checked out; ``fn`` owns the
        transaction (commit included). On an error the transaction is rolled back;
        after a dropped connection a fresh one is taken and ``fn`` runs once more,
        which is safe because every hot-path write is fenced or, for claims, leaves
        at worst jobs under our owner whose lease will run out. Inserts pass
        retry=False: a lost commit acknowledgement must not become a duplicate job.
        """
        dialect = self._base_engine.dialect
        with self._held_lock:
            for attempt in (1, 2):
                self._check_quiet(operation)
                started = time.monotonic()
                try:
                    if self._held is None:
                        held = self._base_engine.raw_connection()
                        try:
                            self._configure_held(held.driver_connection)
                        except BaseException:
                            held.invalidate()
                            raise
                        self._held = held
                    connection = self._held.driver_connection
                except dialect.loaded_dbapi.Error as exc:  # the pool raises the driver's errors
                    self._note_failure(started)
                    raise BackendError(f"{self.dialect}: {operation} failed: {_first_line(exc)}") from exc
                call: Call | None = None
                try:
                    with self._held_deadline(connection) as call:
                        result = fn(connection)
                    self._quiet_until = None
                    return result
                except dialect.loaded_dbapi.Error as exc:
                    timed_out = call is not None and call.timed_out
                    disconnected = timed_out or dialect.is_disconnect(exc, self._held.dbapi_connection, None)
                    with contextlib.suppress(Exception):
                        connection.rollback()
                    self._note_failure(started)
                    if disconnected:
                        # The server likely dropped the pooled connections too (a restart,
                        # a terminate): start the retry from a fresh pool, as SQLAlchemy does.
                        self._held.invalidate()
                        self._held = None
                        self._base_engine.dispose()
                        if attempt == 1 and retry and not timed_out:
                            continue
                    if timed_out:
                        raise self._timed_out(operation) from exc
                    raise BackendError(f"{self.dialect}: {operation} failed: {_first_line(exc)}") from exc
                except OverflowError as exc:  # sqlite3 binding an integer beyond 64 bits
                    with contextlib.suppress(Exception):
                        connection.rollback()
                    raise BackendError(f"{self.dialect}: {operation} failed: {_first_line(exc)}") from exc
                except BaseException:
                    with contextlib.suppress(Exception):
                        connection.rollback()
                    raise
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _held_deadline(self, connection: Any) -> Iterator[Call | None]:
        """The call on this DBAPI connection under the watchdog, if it is a network one."""
        fileno = _fileno(connection) if self.watched else None
        if fileno is None:
            yield None
            return
        with WATCHDOG.guard(fileno, self.timeouts.call_s) as call:
            yield call

    def _configure_held(self, connection: Any) -> None:
        """Adjust a newly held DBAPI connection for the hot path (see PostgresBackend)."""

    def _read(self, operation: str, fn: Callable[[sa.Connection], T]) -> T:
        """Reads change nothing, so one retry after a dropped connection is always safe."""
        return self._run(operation, fn, self._engine.connect, attempts=2)

    def ping(self) -> None:
        """Prove the database answers (for --check, health probes and a worker's boot).

        On the hot-path connection, which this opens if it is not open yet: what a
        worker's claims and a supervisor's writes will use is what must answer.
        """

        def ping(connection: Any) -> None:
            cursor = connection.cursor()
            try:
                cursor.execute("SELECT 1")
                cursor.fetchall()
            finally:
                cursor.close()

        self._on_held("ping", ping)

    def schema_status(self) -> SchemaStatus:
        version = self._read("schema_status", lambda c: stored_version(c, self.schema))
        return SchemaStatus(True, version, LATEST_VERSION)

    # -- enqueue ------------------------------------------------------------------

    def enqueue(self, new_jobs: Sequence[NewJob], conn: sa.Connection | None = None) -> list[int]:
        """Insert ``new_jobs`` and wake consumers; the ids in ``new_jobs`` order.

        One insert path per dialect (``_insert``), on this process's held
        connection (one statement, a fraction of the client CPU of SQLAlchemy's
        execution layer), or through the pool if another thread holds it, or on
        the caller's connection inside the caller's transaction (a transactional
        enqueue: the jobs exist if and only if that transaction commits).
        """
        if not new_jobs:
            return []
        for job in new_jobs:
            if job.run_at is not None and job.run_at.tzinfo is None:
                raise ValueError(f"naive datetime {job.run_at!r}: burrow needs timezone-aware datetimes")
        if conn is not None:
            with self._errors("enqueue"), self._driver_errors("enqueue"):
                return self._insert(conn.connection.driver_connection, new_jobs, own_transaction=False)
        if not self._held_lock.locked():
            return self._on_held("enqueue", lambda c: self._insert(c, new_jobs, own_transaction=True), retry=False)
        return self._write(
            "enqueue",
            lambda c: self._insert(c.connection.driver_connection, new_jobs, own_transaction=False),
            retry=False,
        )

    # -- the hot path: each dialect's own SQL --------------------------------------

    def _insert(self, connection: Any, new_jobs: Sequence[NewJob], *, own_transaction: bool) -> list[int]:
        """Insert and notify on a DBAPI connection; commit only with ``own_transaction``."""
        raise NotImplementedError

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
        """Pick and mark up to ``limit`` jobs on the held connection (the dialect's
        ``_claim`` says how); of the ``limits``, those of the tasks asked for.

        Never retried here: a claim whose commit went through before the connection
        dropped has jobs under ``owner`` its caller never saw; a second claim under
        the same owner would hide them. The caller releases ``owner`` instead.
        """
        if not tasks or limit <= 0:
            return []
        limited = {task: n for task, n in (limits or {}).items() if task in tasks}
        claim = self._claim(tasks, limit, owner, lease_s, queues, limited)
        return claimed_jobs(self._on_held("claim", claim, retry=False), owner)

    def _claim(
        self,
        tasks: Sequence[str],
        limit: int,
        owner: str,
        lease_s: float,
        queues: QueueFilter,
        limited: Mapping[str, int],
    ) -> Callable[[Any], list[Any]]:
        """The claim as a function of the held DBAPI connection, returning claimed rows."""
        raise NotImplementedError

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Write outcomes in one round trip (``_finish``); the ids whose fence no longer held.

        A batch the database refuses for its data (not for being away) is split in
        halves until the outcome at fault stands alone; that one is written as its
        job's failure, saying why, and every other outcome is written as it was.
        One unwritable outcome must not keep a supervisor's every later batch out
        of the database (its jobs' leases would lapse and they would run again).
        """
        try:
            return self._finish(outcomes)
        except BackendError as exc:
            if not outcomes or not self._refused_data(exc):
                raise
            if len(outcomes) > 1:
                middle = len(outcomes) // 2
                return self.finish(outcomes[:middle]) + self.finish(outcomes[middle:])
            return self._finish_unwritable(outcomes[0], exc)

    def _refused_data(self, exc: BackendError) -> bool:
        """Whether the database refused what was sent (bad data: PEP 249's DataError,
        IntegrityError, ProgrammingError...), not failed to answer (OperationalError,
        InterfaceError: a lock, a timeout, a lost connection): only then can writing
        less of it succeed. Values Python could not even bind count as refused."""
        cause = exc.__cause__
        if isinstance(cause, sa.exc.DBAPIError):
            cause = cause.orig
        if isinstance(cause, (OverflowError, ValueError, TypeError)):
            return True
        dbapi = self._base_engine.dialect.loaded_dbapi
        return isinstance(cause, dbapi.Error) and not isinstance(cause, (dbapi.OperationalError, dbapi.InterfaceError))

    def _finish_unwritable(self, outcome: Outcome, exc: BackendError) -> list[int]:
        """The job of an outcome the database refused: failed, with the reason."""
        reason = f"burrow could not record this run's outcome ({outcome.kind.value}): {exc}"
        log.error("outcome_unwritable", job_id=outcome.id, attempt=outcome.attempt, error=str(exc))
        failed = Outcome(outcome.id, outcome.owner, outcome.attempt, OutcomeKind.FAILED, error=reason[:2000])
        try:
            return self._finish([failed])
        except BackendError as again:
            # Even that refused: leave the job to its lease, whose reaper records it.
            log.error("outcome_dropped", job_id=outcome.id, attempt=outcome.attempt, error=str(again))
            return [outcome.id]

    def _finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        raise NotImplementedError

    def extend_leases(self, fences: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        raise NotImplementedError

    @contextlib.contextmanager
    def _driver_errors(self, operation: str) -> Iterator[None]:
        """Wrap the driver's own errors, raised where burrow runs SQL on a DBAPI connection."""
        try:
            yield
        except self._base_engine.dialect.loaded_dbapi.Error as exc:
            raise BackendError(f"{self.dialect}: {operation} failed: {_first_line(exc)}") from exc

    def _notify(self, conn: sa.Connection, tasks: Sequence[str]) -> None:
        """Tell waiting consumers that jobs arrived; SQLite consumers poll instead."""

    # -- cancel, read -------------------------------------------------------------

    def cancel(self, job_id: int) -> bool:
        """Queued -> cancelled; a running or finished job is left alone (zero rows)."""
        statement = (
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value)
            .values(state=JobState.CANCELLED.value, finished_at=self._now())
        )
        return self._write("cancel", lambda c: c.execute(statement).rowcount == 1)

    def request_cancel(self, job_id: int) -> bool:
        """Mark a running job for its supervisor to stop (it polls, and on PostgreSQL a
        notification wakes it); True if the job was running."""

        def request(conn: sa.Connection) -> bool:
            statement = (
                sa.update(jobs)
                .where(jobs.c.id == job_id, _IS_RUNNING, jobs.c.cancel_requested_at.is_(None))
                .values(cancel_requested_at=self._now())
            )
            if conn.execute(statement).rowcount == 1:
                self._notify(conn, [CANCEL_NOTICE])
                return True
            found = conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
            return bool(found == JobState.RUNNING.value)  # asked already

        return self._write("request_cancel", request)

    def cancel_requests(self, job_ids: Sequence[int]) -> list[int]:
        if not job_ids:
            return []
        statement = sa.select(jobs.c.id).where(
            jobs.c.id.in_(list(job_ids)), _IS_RUNNING, jobs.c.cancel_requested_at.is_not(None)
        )
        return self._read("cancel_requests", lambda c: list(c.execute(statement).scalars()))

    def get(self, job_id: int) -> JobInfo | None:
        statement = sa.select(*[jobs.c[name] for name in JOB_COLUMNS]).where(jobs.c.id == job_id)
        row = self._read("get", lambda c: c.execute(statement).one_or_none())
        return None if row is None else _job_info(row)

    def history(self, job_id: int) -> list[HistoryEntry]:
        statement = sa.select(history).where(history.c.job_id == job_id).order_by(history.c.id)
        rows = self._read("history", lambda c: c.execute(statement).all())
        return [
            HistoryEntry(r.job_id, r.attempt, HistoryEvent(r.event), r.error, r.at, r.host, r.pid, r.duration_s)
            for r in rows
        ]

    def counts(self) -> dict[JobState, int]:
        statement = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
        rows = self._read("counts", lambda c: c.execute(statement).all())
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(state): n for state, n in rows})
        return counts

    def has_due(self, tasks: Sequence[str]) -> bool:
        statement = (
            sa.select(jobs.c.id)
            .where(_IS_QUEUED, jobs.c.run_at <= self._now(), self._task_filter(tasks))
            .limit(1)
        )
        return self._read("has_due", lambda c: c.execute(statement).first() is not None)

    def _task_filter(self, tasks: Sequence[str]) -> sa.ColumnElement[bool]:
        return jobs.c.task.in_(list(tasks))

    def wait_for_jobs(self, timeout_s: float, tasks: Sequence[str] = ()) -> bool:
        """Poll for due work with a short, growing interval, up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        pause = 0.005
        while True:
            if tasks and self.has_due(tasks):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)

    # -- leases -------------------------------------------------------------------

    def expired_leases(self, limit: int = 1000) -> list[ExpiredLease]:
        """Running jobs whose owner stopped extending the lease, oldest expiry first.

        Only read: the caller decides each job's fate (retry with its backoff, or
        fail when its retries are spent) and writes it with :meth:`finish` as an
        ``EXPIRED_*`` outcome, which re-checks the expiry under the row lock, so a
        lease extended in between, or a second reaper, changes nothing.
        """
        statement = (
            sa.select(
                jobs.c.id, jobs.c.task, jobs.c.owner, jobs.c.attempts, jobs.c.max_retries, jobs.c.cancel_requested_at
            )
            .where(_IS_RUNNING, jobs.c.lease_expires_at < self._now())
            .order_by(jobs.c.lease_expires_at)
            .limit(limit)
        )
        rows = self._read("expired_leases", lambda c: c.execute(statement).all())
        return [
            ExpiredLease(r.id, r.task, r.owner, r.attempts, r.max_retries, r.cancel_requested_at is not None)
            for r in rows
        ]

    def release_owner(self, owner: str) -> list[int]:
        """Give back what ``owner`` (and each of its claims, ``owner/N``) still holds:
        queued again, the attempt returned.

        Two callers. The supervisor, after it wrote every outcome a dead worker
        reported: a job still ``running`` under that worker was claimed but never
        announced (the worker died between the claim's commit and its ``claimed``
        message), so it never ran; without this it waited out its lease and was
        charged an attempt. And a claimer whose claim failed without an answer:
        the commit may have gone through, leaving jobs under that claim's owner
        that nobody will run. The release is a fenced RELEASED outcome, like any other.
        """
        prefix = owner + "/"
        mine = sa.or_(jobs.c.owner == owner, sa.func.substr(jobs.c.owner, 1, len(prefix)) == prefix)
        statement = sa.select(jobs.c.id, jobs.c.owner, jobs.c.attempts).where(_IS_RUNNING, mine)
        rows = self._read("release_owner", lambda c: c.execute(statement).all())
        outcomes = [Outcome(r.id, r.owner, r.attempts, OutcomeKind.RELEASED) for r in rows]
        lost = set(self.finish(outcomes))
        return [o.id for o in outcomes if o.id not in lost]

    # -- operators ----------------------------------------------------------------

    def list_jobs(
        self, states: Sequence[str] | None, tasks: Sequence[str] | None, before_id: int | None, limit: int
    ) -> list[JobInfo]:
        """Newest first, keyset-paged by id.

        A state filter is served by burrow_jobs_state_idx, a task filter by
        burrow_jobs_task_idx; succeeded jobs, left out of the state index, are
        listed by walking the primary key, where nearly every row is one.
        """
        statement = self.list_jobs_statement(states, tasks, before_id, limit)
        rows = self._read("list_jobs", lambda c: c.execute(statement).all())
        return [_job_info(row) for row in rows]

    def list_jobs_statement(
        self, states: Sequence[str] | None, tasks: Sequence[str] | None, before_id: int | None, limit: int
    ) -> sa.Select[Any]:
        """The listing's statement, apart so that a test can EXPLAIN it."""
        statement = sa.select(*[jobs.c[name] for name in JOB_COLUMNS]).order_by(jobs.c.id.desc()).limit(limit)
        if states:
            statement = statement.where(jobs.c.state.in_(list(states)))
            if JobState.SUCCEEDED.value not in states:
                # Restates the state index's own WHERE: SQLite uses a partial index only
                # when the query's terms contain its condition, it proves no more.
                statement = statement.where(jobs.c.state != JobState.SUCCEEDED.value)
        if tasks:
            statement = statement.where(jobs.c.task.in_(list(tasks)))
        if before_id is not None:
            statement = statement.where(jobs.c.id < before_id)
        return statement

    def counts_by_task(self, *, active_only: bool = False) -> dict[str, dict[JobState, int]]:
        """task -> state -> count. ``active_only`` counts queued and running jobs only,
        from their partial indexes, cheap however many finished jobs the table holds."""
        statement = sa.select(jobs.c.task, jobs.c.state, sa.func.count()).group_by(jobs.c.task, jobs.c.state)
        if active_only:
            statement = statement.where(jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
        rows = self._read("counts_by_task", lambda c: c.execute(statement).all())
        counts: dict[str, dict[JobState, int]] = {}
        for task, state, n in rows:
            counts.setdefault(task, {})[JobState(state)] = n
        return counts

    def active_by_queue(self) -> dict[str, dict[JobState, int]]:
        """queue -> queued and running counts, from the partial indexes (cheap)."""
        statement = (
            sa.select(jobs.c.queue, jobs.c.state, sa.func.count())
            .where(jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
            .group_by(jobs.c.queue, jobs.c.state)
        )
        rows = self._read("active_by_queue", lambda c: c.execute(statement).all())
        counts: dict[str, dict[JobState, int]] = {}
        for queue, state, n in rows:
            counts.setdefault(queue, {})[JobState(state)] = n
        return counts

    def requeue(self, job_ids: Sequence[int], from_states: Sequence[JobState], note: str) -> list[int]:
        """Put finished jobs of ``from_states`` back in the queue as new: due now, attempts 0,
        error, result and times cleared; each leaves a ``requeued`` history entry (with the
        attempts it had) so its past attempts stay readable. The ids requeued."""
        if not job_ids:
            return []

        def requeue(conn: sa.Connection) -> list[int]:
            picked = conn.execute(
                sa.select(jobs.c.id, jobs.c.task, jobs.c.attempts)
                .where(jobs.c.id.in_(list(job_ids)), jobs.c.state.in_([s.value for s in from_states]))
                .with_for_update()
            ).all()
            if not picked:
                return []
            now = self._now()
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_([r.id for r in picked]))
                .values(
                    state=JobState.QUEUED.value, attempts=0, run_at=now, started_at=None, finished_at=None,
                    last_error=None, result=None, owner=None, lease_expires_at=None,
                )
            )
            self._record_history(conn, [(r.id, r.attempts, HistoryEvent.REQUEUED, note) for r in picked])
            self._notify(conn, sorted({r.task for r in picked}))
            return [r.id for r in picked]

        return self._write("requeue", requeue)

    def _record_history(self, conn: sa.Connection, entries: Sequence[tuple[int, int, HistoryEvent, str | None]]) -> None:
        """History rows for what an operator or the database itself did (no worker, no duration)."""
        if entries:
            conn.execute(
                sa.insert(history).values(at=self._now()),
                [{"job_id": j, "attempt": a, "event": e.value, "error": err} for j, a, e, err in entries],
            )

    def ids_in(self, state: JobState, tasks: Sequence[str] | None, after_id: int, up_to_id: int, limit: int) -> list[int]:
        """Ids of jobs in ``state`` (of ``tasks``) in (after_id, up_to_id], ascending: bulk
        actions walk the jobs that existed when they began, a batch at a time."""
        statement = (
            sa.select(jobs.c.id)
            .where(jobs.c.state == state.value, jobs.c.id > after_id, jobs.c.id <= up_to_id)
            .order_by(jobs.c.id)
            .limit(limit)
        )
        if tasks:
            statement = statement.where(jobs.c.task.in_(list(tasks)))
        return self._read("ids_in", lambda c: list(c.execute(statement).scalars()))

    def max_id(self) -> int:
        return self._read("max_id", lambda c: c.execute(sa.select(sa.func.coalesce(sa.func.max(jobs.c.id), 0))).scalar_one())

    def _retire_ids(self, conn: sa.Connection) -> None:
        """In a transaction about to delete jobs: make sure no id handed out so far is
        handed out again. PostgreSQL's sequence never goes back; SQLite overrides this."""

    def delete_job(self, job_id: int) -> bool | None:
        """Delete a job that is not running, and its history: True; False if it is running;
        None if there is no such job."""

        def delete(conn: sa.Connection) -> bool | None:
            state = conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id).with_for_update()).scalar()
            if state is None:
                return None
            if state == JobState.RUNNING.value:
                return False
            self._retire_ids(conn)
            conn.execute(sa.delete(history).where(history.c.job_id == job_id))
            conn.execute(sa.delete(jobs).where(jobs.c.id == job_id))
            return True

        return self._write("delete", delete)

    def prune(
        self, finished_before: dt.datetime, states: Sequence[JobState], batch: int = 1000, max_rows: int | None = None
    ) -> int:
        """Delete jobs of ``states`` finished before the cutoff, with their history.

        At most ``batch`` jobs a transaction, the longest finished first (an index
        range: burrow_jobs_finished_idx), so that no lock is held for long and a prune
        of millions never stalls claims and finishes; at most ``max_rows`` in all
        (None: until none is left).
        """
        total = 0
        state_values = [s.value for s in states]
        while max_rows is None or total < max_rows:

            def delete_batch(conn: sa.Connection) -> int:
                self._retire_ids(conn)
                picked = (
                    sa.select(jobs.c.id)
                    .where(jobs.c.state.in_(state_values), jobs.c.finished_at < finished_before)
                    .order_by(jobs.c.finished_at)
                    .limit(batch)
                    .scalar_subquery()
                )
                ids = list(conn.execute(sa.delete(jobs).where(jobs.c.id.in_(picked)).returning(jobs.c.id)).scalars())
                if ids:
                    conn.execute(sa.delete(history).where(history.c.job_id.in_(ids)))
                return len(ids)

            deleted = self._write("prune", delete_batch)
            total += deleted
            if deleted < batch:
                break
        return total

    # -- throughput ---------------------------------------------------------------------

    def add_stats(self, rows: Sequence[ThroughputRow]) -> None:
        """Add per-minute counts to what other processes counted, in one statement."""
        if not rows:
            return
        dialect = sqlite_dialect if self.dialect == "sqlite" else postgresql_dialect
        insert = dialect.insert(stats)
        statement = insert.on_conflict_do_update(
            index_elements=[stats.c.minute, stats.c.task],
            set_={name: stats.c[name] + insert.excluded[name] for name in ("succeeded", "failed", "retried")},
        )
        values = [
            {"minute": r.minute, "task": r.task, "succeeded": r.succeeded, "failed": r.failed, "retried": r.retried}
            for r in rows
        ]
        self._write("add_stats", lambda c: c.execute(statement, values))

    def stats_since(self, since: dt.datetime, tasks: Sequence[str] | None = None) -> list[ThroughputRow]:
        statement = sa.select(stats).where(stats.c.minute >= since).order_by(stats.c.minute, stats.c.task)
        if tasks:
            statement = statement.where(stats.c.task.in_(list(tasks)))
        rows = self._read("stats_since", lambda c: c.execute(statement).all())
        return [ThroughputRow(r.minute, r.task, r.succeeded, r.failed, r.retried) for r in rows]

    def prune_stats(self, before: dt.datetime) -> int:
        statement = sa.delete(stats).where(stats.c.minute < before)
        return self._write("prune_stats", lambda c: c.execute(statement).rowcount)

    # -- periodic jobs ----------------------------------------------------------------

    def enqueue_slot(
        self, name: str, spec: str, slot: dt.datetime, next_slot: dt.datetime, job: NewJob
    ) -> int | None:
        """Enqueue ``job`` for ``slot`` of schedule ``name``, unless a process already did.

        The schedule's row says which slot was enqueued last; moving it forward and
        inserting the job are one transaction, and only one process can move it past
        a given slot (the row lock; SQLite's single writer), so each slot is enqueued
        once. The first time a schedule is seen, its row starts at the current slot
        without a job: the first run is the next slot, not one from before it existed.
        Returns the job's id, or None.
        """

        def write(conn: sa.Connection) -> int | None:
            now = self._now()
            values = {"name": name, "task": job.task, "spec": spec, "last_slot": slot, "next_slot": next_slot}
            if conn.execute(self._insert_ignoring_conflicts(schedules).values(**values, updated_at=now)).rowcount == 1:
                return None
            moved = conn.execute(
                sa.update(schedules)
                .where(schedules.c.name == name, sa.or_(schedules.c.last_slot.is_(None), schedules.c.last_slot < slot))
                .values(**values, updated_at=now)
            ).rowcount
            if moved != 1:
                return None
            [job_id] = self._insert(conn.connection.driver_connection, [job], own_transaction=False)
            return job_id

        return self._write("enqueue_slot", write, retry=False)

    def _insert_ignoring_conflicts(self, table: sa.Table) -> Any:
        dialect = sqlite_dialect if self.dialect == "sqlite" else postgresql_dialect
        return dialect.insert(table).on_conflict_do_nothing()

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule a supervisor has seen, with its last and next slot."""
        statement = sa.select(schedules).order_by(schedules.c.name)
        rows = self._read("schedules", lambda c: c.execute(statement).all())
        return [ScheduleInfo(r.name, r.task, r.spec, r.last_slot, r.next_slot) for r in rows]

    # -- processes ----------------------------------------------------------------

    def register_process(self, owner: str, host: str, pid: int, role: str) -> None:
        def register(conn: sa.Connection) -> None:
            now = self.now()
            conn.execute(sa.delete(processes).where(processes.c.owner == owner))
            conn.execute(
                sa.insert(processes).values(owner=owner, host=host, pid=pid, role=role, started_at=now, heartbeat_at=now)
            )

        self._write("register_process", register)

    def heartbeat_processes(self, owners: Sequence[str]) -> list[str]:
        """Refresh these processes' rows in one statement; the owners whose row is gone
        (reaped as stale by another supervisor while this one was cut off)."""
        statement = (
            sa.update(processes)
            .where(processes.c.owner.in_(list(owners)))
            .values(heartbeat_at=self._now())
            .returning(processes.c.owner)
        )
        found = set(self._write("heartbeat_processes", lambda c: list(c.execute(statement).scalars())))
        return [owner for owner in owners if owner not in found]

    def remove_process(self, owner: str) -> None:
        statement = sa.delete(processes).where(processes.c.owner == owner)
        self._write("remove_process", lambda c: c.execute(statement))

    def reap_processes(self, stale_after_s: float) -> list[str]:
        """Forget processes that stopped heartbeating; their jobs come back by lease expiry."""
        statement = (
            sa.delete(processes).where(processes.c.heartbeat_at < self._at(-stale_after_s)).returning(processes.c.owner)
        )
        return self._write("reap_processes", lambda c: list(c.execute(statement).scalars()))

    def processes(self, stale_after_s: float) -> list[ProcessInfo]:
        """Every registered process, oldest first; stale if silent for ``stale_after_s``."""
        stale = processes.c.heartbeat_at < self._at(-stale_after_s)
        statement = sa.select(processes, sa.case((stale, True), else_=False).label("stale")).order_by(
            processes.c.started_at, processes.c.owner
        )
        rows = self._read("processes", lambda c: c.execute(statement).all())
        return [ProcessInfo(r.owner, r.host, r.pid, r.role, r.started_at, r.heartbeat_at, bool(r.stale)) for r in rows]

    # -- lifecycle ----------------------------------------------------------------

    def after_fork(self) -> None:
        """Forget pooled connections inherited over fork without closing the parent's sockets."""
        if self._held is not None:
            _INHERITED.append(self._held)
            self._held = None
        self._held_lock = threading.Lock()  # another thread may have held it at the fork
        self._base_engine.dispose(close=False)
        self._quiet_until = None

    def close(self) -> None:
        with self._held_lock:
            if self._held is not None:
                with contextlib.suppress(Exception):
                    self._held.close()
                self._held = None
        self._base_engine.dispose()


def _fileno(connection: Any) -> int | None:
    """The socket of a DBAPI connection; None for one that has none (closed, or a file)."""
    try:
        return int(connection.fileno())
    except Exception:  # noqa: BLE001 - a closed connection: the call fails on its own
        return None


def _job_info(row: sa.Row[Any]) -> JobInfo:
    values = row._asdict()
    values["state"] = JobState(values["state"])
    return JobInfo(**values)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
