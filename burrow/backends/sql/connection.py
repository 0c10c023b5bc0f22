"""The connection half of every SQL backend: engines, transactions, deadlines, errors.

Everything a statement needs to run, and nothing about which statement: the
per-table modules beside this one (``jobs``, ``history``, ``processes``,
``schedules``, ``stats``) hold burrow's SQL, each on :class:`SQLConnection`, and
``backend.SQLBackend`` puts them together. The dialects (``sqlite.py``,
``postgres.py``) differ where it matters for speed or locking and say why at the
spot (see docs/architecture.md on the storage contract).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa

from burrow.backends.deadline import DEFAULT_TIMEOUTS, WATCHDOG, Call, Timeouts
from burrow.backends.migrations import LATEST_VERSION, stored_version
from burrow.backends.records import SchemaStatus
from burrow.backends.schema import UTC, Timestamp
from burrow.errors import BackendError
from burrow.job import NewJob

T = TypeVar("T")

Clock = Callable[[], dt.datetime]



# Held connections a forked child inherited. They belong to the parent: the child
# keeps them referenced so that neither the pool nor the driver closes them (or
# rolls back on them) from the child, over the parent's socket or file lock.
_INHERITED: list[Any] = []


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC)




# What each operation does, in the words of the people who read the errors: a message
# says "sqlite: reading the schema version failed: ...", never a method's name.
OPERATION_WORDS: Final = {
    "active_by_queue": "counting jobs by queue",
    "add_stats": "recording throughput",
    "audit": "reading the audit trail",
    "cancel": "cancelling a job",
    "cancel_requests": "reading cancel requests",
    "claim": "claiming jobs",
    "counts": "counting jobs",
    "counts_by_task": "counting jobs by task",
    "delete": "deleting a job",
    "enqueue": "enqueueing",
    "enqueue_slot": "enqueueing a periodic job",
    "enqueue_workflow": "enqueueing a workflow",
    "expired_leases": "looking for expired leases",
    "extend_leases": "extending leases",
    "find_workflow": "finding a workflow",
    "finish": "recording job outcomes",
    "get": "reading a job",
    "has_due": "looking for due jobs",
    "heartbeat_processes": "writing the process heartbeat",
    "history": "reading a job's history",
    "ids_in": "reading job ids",
    "job_edges": "reading a job's parents and children",
    "list_jobs": "listing jobs",
    "max_id": "reading the highest job id",
    "migrate": "migrating the schema",
    "parent_results": "reading a step's parent results",
    "pause_queue": "pausing a queue",
    "paused_queues": "reading paused queues",
    "ping": "reaching the database",
    "processes": "listing processes",
    "progress": "recording job progress",
    "prune": "deleting old jobs",
    "prune_audit": "deleting old audit rows",
    "prune_stats": "deleting old throughput rows",
    "queues": "reading queues",
    "reap_processes": "removing stale processes",
    "refresh_statistics": "analyzing the jobs table",
    "register_process": "registering the process",
    "register_tasks": "recording the tasks this supervisor handles",
    "release_owner": "releasing a stopped worker's jobs",
    "remove_process": "removing the process row",
    "request_cancel": "requesting a cancel",
    "requeue": "retrying jobs",
    "resume_queue": "resuming a queue",
    "run_now": "making a job due now",
    "schedules": "reading periodic jobs",
    "schema_status": "reading the schema version",
    "search_jobs": "searching jobs",
    "stats_since": "reading throughput",
    "task_options": "reading a task's registered options",
    "unhandled": "looking for jobs no supervisor handles",
    "workflow_jobs": "reading a workflow's jobs",
}


def doing(operation: str) -> str:
    """``operation`` as people say it (an unknown one with its underscores as spaces)."""
    return OPERATION_WORDS.get(operation) or operation.replace("_", " ")

class SQLConnection:
    """How a backend reaches its database: the calls, their deadlines and their errors.

    Two ways in. ``_write`` and ``_read`` run SQLAlchemy Core through the pool, for
    everything but the hot path; ``_on_held`` runs a dialect's fixed SQL text on a
    DBAPI connection this process keeps checked out, for claims, finishes, lease
    extensions and enqueues (see its docstring for why).
    """

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
            raise BackendError(f"{self.dialect}: {doing(operation)} failed: {first_line(exc.orig or exc)}") from exc
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f"{self.dialect}: {doing(operation)} failed: {first_line(exc)}") from exc

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
            f"{self.dialect}: {doing(operation)} failed: no answer within {self.timeouts.call_s:g}s (connection closed)"
        )

    def _check_quiet(self, operation: str) -> None:
        if self._quiet_until is not None and time.monotonic() < self._quiet_until:
            raise BackendError(
                f"{self.dialect}: {doing(operation)} not tried: the database did not answer a call"
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
                    raise BackendError(f"{self.dialect}: {doing(operation)} failed: {first_line(exc)}") from exc
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
                    elif self._held_is_stale(exc):
                        # Its prepared statements no longer fit the schema (another
                        # version migrated it): a fresh connection prepares them anew.
                        # The statement failed before it ran, so running it again is
                        # safe even for an insert.
                        self._held.invalidate()
                        self._held = None
                        if attempt == 1:
                            continue
                    if timed_out:
                        raise self._timed_out(operation) from exc
                    raise BackendError(f"{self.dialect}: {doing(operation)} failed: {first_line(exc)}") from exc
                except OverflowError as exc:  # sqlite3 binding an integer beyond 64 bits
                    with contextlib.suppress(Exception):
                        connection.rollback()
                    raise BackendError(f"{self.dialect}: {doing(operation)} failed: {first_line(exc)}") from exc
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

    def _held_is_stale(self, exc: Exception) -> bool:
        """Whether ``exc`` says the held connection's session state (its prepared
        statements) no longer fits the database: then it is replaced (see PostgresBackend)."""
        return False

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

    @contextlib.contextmanager
    def _driver_errors(self, operation: str) -> Iterator[None]:
        """Wrap the driver's own errors, raised where burrow runs SQL on a DBAPI connection."""
        try:
            yield
        except self._base_engine.dialect.loaded_dbapi.Error as exc:
            raise BackendError(f"{self.dialect}: {doing(operation)} failed: {first_line(exc)}") from exc

    # -- what the tables' modules ask of a dialect -----------------------------------

    def _insert(self, connection: Any, new_jobs: Sequence[NewJob], *, own_transaction: bool) -> list[int]:
        """Insert and notify on a DBAPI connection; commit only with ``own_transaction``.

        Here, not in ``jobs``, because periodic jobs (``schedules``) insert too, in
        the transaction that moves their schedule forward.
        """
        raise NotImplementedError

    def _notify(self, conn: sa.Connection, tasks: Sequence[str]) -> None:
        """Tell waiting consumers that jobs arrived; SQLite consumers poll instead."""

    def _ended(self, conn: sa.Connection, job_ids: Sequence[int]) -> None:
        """Tell clients awaiting these jobs that they ended; SQLite's clients poll instead."""

    def _dialect_insert(self, table: sa.Table) -> Any:
        """An INSERT with ON CONFLICT clauses, which SQLAlchemy has only per dialect
        (each backend's module imports its own: a process never loads the other's)."""
        raise NotImplementedError

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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Executing:
    """A DBAPI connection with the ``execute`` shortcut the dialects' own inserts use
    (sqlite3's and psycopg's): for SQLAlchemy's adapter of an async driver, under a
    caller's ``AsyncConnection.run_sync``, whose cursor awaits for us."""

    def __init__(self, dbapi_connection: Any) -> None:
        self._connection = dbapi_connection

    def execute(self, statement: str, params: Any = ()) -> Any:
        cursor = self._connection.cursor()
        cursor.execute(statement, params)
        return cursor


def driver_of(conn: sa.Connection) -> Any:
    """The connection a dialect's own statements run on, under ``conn``: the driver's,
    or, when the driver is an async one (a caller's ``AsyncConnection``, through
    ``run_sync``), SQLAlchemy's adapter of it."""
    dbapi = conn.connection.dbapi_connection
    if dbapi is not conn.connection.driver_connection:  # an adapter: the driver is async
        return _Executing(dbapi)
    return dbapi
