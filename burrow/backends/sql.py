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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from burrow.backends.base import (
    JOB_COLUMNS,
    ClaimedJob,
    ExpiredLease,
    HistoryEntry,
    HistoryEvent,
    JobInfo,
    JobState,
    NewJob,
    Outcome,
    OutcomeKind,
    SchemaStatus,
)
from burrow.backends.migrations import LATEST_VERSION, stored_version
from burrow.backends.schema import UTC, Timestamp, history, jobs, processes
from burrow.errors import BackendError

T = TypeVar("T")
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

    def __init__(self, engine: sa.Engine, *, schema: str | None = None, clock: Clock | None = None) -> None:
        self.schema = schema
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

    def _write(self, operation: str, fn: Callable[[sa.Connection], T], *, retry: bool = True) -> T:
        """Run ``fn`` in a write transaction; once more after a dropped connection.

        A retry is safe for the fenced writes (they change nothing a second time)
        and for claims (a claim whose commit was lost leaves jobs running under our
        owner; their lease runs out and they are reaped). Inserts pass retry=False:
        a lost commit acknowledgement must not become a duplicate job.
        """
        return self._run(operation, fn, self._begin_write, attempts=2 if retry else 1)

    def _run(
        self,
        operation: str,
        fn: Callable[[sa.Connection], T],
        open_connection: Callable[[], contextlib.AbstractContextManager[sa.Connection]],
        *,
        attempts: int,
    ) -> T:
        """Run ``fn``; after a dropped connection (the pool is then refreshed) try again."""
        for attempt in range(1, attempts + 1):
            try:
                with self._errors(operation), open_connection() as conn:
                    return fn(conn)
            except BackendError as exc:
                cause = exc.__cause__
                disconnected = isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated
                if not disconnected or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

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
                    raise BackendError(f"{self.dialect}: {operation} failed: {_first_line(exc)}") from exc
                try:
                    return fn(connection)
                except dialect.loaded_dbapi.Error as exc:
                    disconnected = dialect.is_disconnect(exc, self._held.dbapi_connection, None)
                    with contextlib.suppress(Exception):
                        connection.rollback()
                    if disconnected:
                        # The server likely dropped the pooled connections too (a restart,
                        # a terminate): start the retry from a fresh pool, as SQLAlchemy does.
                        self._held.invalidate()
                        self._held = None
                        self._base_engine.dispose()
                        if attempt == 1 and retry:
                            continue
                    raise BackendError(f"{self.dialect}: {operation} failed: {_first_line(exc)}") from exc
                except BaseException:
                    with contextlib.suppress(Exception):
                        connection.rollback()
                    raise
        raise AssertionError("unreachable")

    def _configure_held(self, connection: Any) -> None:
        """Adjust a newly held DBAPI connection for the hot path (see PostgresBackend)."""

    def _table_name(self, table: sa.Table) -> str:
        """``table``'s name as hot-path SQL text spells it: quoted, in our schema."""
        preparer = self._base_engine.dialect.identifier_preparer
        name = preparer.quote(table.name)
        return f"{preparer.quote_schema(self.schema)}.{name}" if self.schema else name

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

    def claim(self, tasks: Sequence[str], limit: int, owner: str, lease_s: float) -> list[ClaimedJob]:
        raise NotImplementedError

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
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

    def get(self, job_id: int) -> JobInfo | None:
        statement = sa.select(*[jobs.c[name] for name in JOB_COLUMNS]).where(jobs.c.id == job_id)
        row = self._read("get", lambda c: c.execute(statement).one_or_none())
        return None if row is None else _job_info(row)

    def history(self, job_id: int) -> list[HistoryEntry]:
        statement = sa.select(history).where(history.c.job_id == job_id).order_by(history.c.id)
        rows = self._read("history", lambda c: c.execute(statement).all())
        return [HistoryEntry(r.job_id, r.attempt, HistoryEvent(r.event), r.error, r.at) for r in rows]

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
            sa.select(jobs.c.id, jobs.c.task, jobs.c.owner, jobs.c.attempts, jobs.c.max_retries)
            .where(_IS_RUNNING, jobs.c.lease_expires_at < self._now())
            .order_by(jobs.c.lease_expires_at)
            .limit(limit)
        )
        rows = self._read("expired_leases", lambda c: c.execute(statement).all())
        return [ExpiredLease(r.id, r.task, r.owner, r.attempts, r.max_retries) for r in rows]

    def release_owner(self, owner: str) -> list[int]:
        """Give back what a dead worker still holds: queued again, the attempt returned.

        The supervisor calls this after it wrote every outcome the worker
        reported, so a job still ``running`` under that owner was claimed but
        never announced: the worker died between the claim's commit and its
        ``claimed`` message, before running anything. Without this the job
        waited out its lease and was charged an attempt it never ran. The
        release is a fenced RELEASED outcome, like any other.
        """
        statement = sa.select(jobs.c.id, jobs.c.attempts).where(_IS_RUNNING, jobs.c.owner == owner)
        rows = self._read("release_owner", lambda c: c.execute(statement).all())
        outcomes = [Outcome(r.id, owner, r.attempts, OutcomeKind.RELEASED) for r in rows]
        lost = set(self.finish(outcomes))
        return [o.id for o in outcomes if o.id not in lost]

    # -- processes ----------------------------------------------------------------

    def register_process(self, owner: str, host: str, pid: int, role: str) -> None:
        def register(conn: sa.Connection) -> None:
            now = self.now()
            conn.execute(sa.delete(processes).where(processes.c.owner == owner))
            conn.execute(
                sa.insert(processes).values(owner=owner, host=host, pid=pid, role=role, started_at=now, heartbeat_at=now)
            )

        self._write("register_process", register)

    def heartbeat_process(self, owner: str) -> bool:
        statement = sa.update(processes).where(processes.c.owner == owner).values(heartbeat_at=self._now())
        return self._write("heartbeat_process", lambda c: c.execute(statement).rowcount == 1)

    def remove_process(self, owner: str) -> None:
        statement = sa.delete(processes).where(processes.c.owner == owner)
        self._write("remove_process", lambda c: c.execute(statement))

    def reap_processes(self, stale_after_s: float) -> list[str]:
        """Forget processes that stopped heartbeating; their jobs come back by lease expiry."""
        statement = (
            sa.delete(processes).where(processes.c.heartbeat_at < self._at(-stale_after_s)).returning(processes.c.owner)
        )
        return self._write("reap_processes", lambda c: list(c.execute(statement).scalars()))

    def list_processes(self) -> list[dict[str, Any]]:
        rows = self._read("list_processes", lambda c: c.execute(sa.select(processes)).mappings().all())
        return [dict(row) for row in rows]

    # -- lifecycle ----------------------------------------------------------------

    def after_fork(self) -> None:
        """Forget pooled connections inherited over fork without closing the parent's sockets."""
        if self._held is not None:
            _INHERITED.append(self._held)
            self._held = None
        self._held_lock = threading.Lock()  # another thread may have held it at the fork
        self._base_engine.dispose(close=False)

    def close(self) -> None:
        with self._held_lock:
            if self._held is not None:
                with contextlib.suppress(Exception):
                    self._held.close()
                self._held = None
        self._base_engine.dispose()


def _job_info(row: sa.Row[Any]) -> JobInfo:
    values = row._asdict()
    values["state"] = JobState(values["state"])
    return JobInfo(**values)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
