"""PostgreSQL for the async client: psycopg's async connections, no thread per call.

The statements are the sync dialect's (``postgres.py``): the insert and its unique-key
lookup are the same text, built by the same :class:`PostgresBackend` (which this
module keeps for its SQL, its clock and, once at connect, the migrations). What is
here is how they run on an event loop: a bounded pool of autocommit
``psycopg.AsyncConnection`` s (:class:`AsyncPool`), a client-side deadline on every
call, and a LISTEN connection on which ``await_result`` sleeps until a finish names
its job (docs/architecture.md, "The rooms").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from burrow.backends.postgres import PostgresBackend, done_notice
from burrow.backends.records import CANCEL_NOTICE, JOB_COLUMNS, Audit, StepRow
from burrow.backends.schema import UTC, tasks
from burrow.backends.schema import audit as audit_table
from burrow.backends.sql.connection import first_line
from burrow.errors import BackendError, BurrowError
from burrow.job import JobInfo, JobState, NewJob

DEFAULT_POOL_SIZE = 10
# A waiter re-reads its job this often even without a notification: for ends no
# finish announces (a job deleted, a LISTEN connection lost unnoticed).
RECHECK_S = 5.0
# Through a pooler without listen_dsn there is no LISTEN: a waiter reads its job this often.
POLL_S = 0.05


class AsyncPool:
    """At most ``size`` connections, handed out one caller at a time.

    A connection goes back to the pool only if its call ended normally and it is
    idle (no transaction, no statement in flight); any other (an error, a cancelled
    call, a timeout) is closed, so a cancelled coroutine leaves nothing checked
    out and nothing open on the server, and the next caller gets a fresh one.
    """

    def __init__(self, conninfo: str, size: int, connect_args: dict[str, Any]) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise BurrowError(f"pool_size must be a positive integer, got {size!r}")
        self.size = size
        self._conninfo = conninfo
        self._connect_args = connect_args
        self._slots = asyncio.Semaphore(size)
        self._idle: collections.deque[psycopg.AsyncConnection[Any]] = collections.deque()
        self.checked_out = 0
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._closed:
            raise BackendError("postgresql: the async queue is closed")
        async with self._slots:
            conn: psycopg.AsyncConnection[Any] | None = None
            self.checked_out += 1
            try:
                while self._idle and conn is None:
                    conn = self._idle.popleft()
                    if conn.closed:
                        conn = None
                if conn is None:
                    conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, prepare_threshold=None, **self._connect_args
                    )
                yield conn
            except BaseException:
                if conn is not None:
                    _discard(conn)
                conn = None
                raise
            finally:
                self.checked_out -= 1
                if conn is not None:
                    if not self._closed and not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                        self._idle.append(conn)
                    else:
                        _discard(conn)

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            with contextlib.suppress(psycopg.Error):
                await self._idle.popleft().close()


def _discard(conn: psycopg.AsyncConnection[Any]) -> None:
    """Close without awaiting (the caller may be a cancelled task): libpq's finish is
    a local call, and the server rolls back whatever the connection left open."""
    with contextlib.suppress(Exception):
        conn.pgconn.finish()


class AsyncPostgres:
    """The async client's calls on PostgreSQL (see the module's docstring)."""

    dialect = "postgresql"

    def __init__(self, sync: PostgresBackend, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.sync = sync
        self.timeouts = sync.timeouts
        self._conninfo = sync.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_args = sync.timeouts.postgres_connect_args(pooled=sync.pooled)
        self.pool = AsyncPool(self._conninfo, pool_size, self._connect_args)
        jobs, now = sync._jobs, sync._now_sql
        audit = sync._qualified(audit_table.name).replace("%", "%%")
        self._get_sql = f"SELECT {', '.join(JOB_COLUMNS)} FROM {jobs} WHERE id = %(id)s"
        # The queued cancel and the running cancel request of sql/jobs.py (JobsSQL.cancel,
        # request_cancel), with their notifications and their audit row (when an actor
        # is given, and the cancel applied), as one statement each.
        self._cancel_sql = f"""
WITH cancelled AS (
    UPDATE {jobs} SET state = 'cancelled', finished_at = {now}
    WHERE id = %(id)s AND state = 'queued' RETURNING id
), audited AS (
    INSERT INTO {audit} (at, actor, action, job_id, count)
    SELECT {now}, %(actor)s::text, 'cancel', id, 1 FROM cancelled WHERE %(actor)s::text IS NOT NULL
)
SELECT id, pg_notify(%(done_channel)s, %(done_ids)s) FROM cancelled"""
        self._request_cancel_sql = f"""
WITH requested AS (
    UPDATE {jobs} SET cancel_requested_at = {now}
    WHERE id = %(id)s AND state = 'running' AND cancel_requested_at IS NULL RETURNING id
), audited AS (
    INSERT INTO {audit} (at, actor, action, job_id, count)
    SELECT {now}, %(actor)s::text, 'cancel', id, 1 FROM {jobs}
    WHERE id = %(id)s AND state = 'running' AND %(actor)s::text IS NOT NULL
)
SELECT id, pg_notify(%(channel)s, %(notice)s) FROM requested
UNION ALL SELECT id, NULL FROM {jobs} WHERE id = %(id)s AND state = 'running'"""
        # ProcessesSQL.task_options: the newest registration of the task.
        self._task_options_sql = (
            f"SELECT options FROM {sync._qualified(tasks.name).replace('%', '%%')}"
            " WHERE task = %(task)s ORDER BY registered_at DESC LIMIT 1"
        )
        self._listener: _DoneListener | None = None

    def now(self) -> dt.datetime:
        return self.sync.now()

    # -- calls --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _call(self, operation: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection for one call, under the call deadline; errors as BackendError."""
        try:
            async with asyncio.timeout(self.timeouts.call_s):
                async with self.pool.connection() as conn:
                    yield conn
        except TimeoutError:
            raise BackendError(
                f"postgresql: {operation} failed: no answer within {self.timeouts.call_s:g}s (connection closed)"
            ) from None
        except psycopg.Error as exc:
            raise BackendError(f"postgresql: {operation} failed: {first_line(exc)}") from exc

    async def enqueue(self, new_jobs: Sequence[NewJob], conn: Any = None) -> list[int]:
        """Insert ``new_jobs`` (one autocommit statement, with its NOTIFY), or inside the
        caller's SQLAlchemy ``AsyncConnection`` transaction with ``conn``."""
        if not new_jobs:
            return []
        if conn is not None:
            driver = await _driver_connection(conn, psycopg.AsyncConnection)
            try:
                return await self._insert(driver, new_jobs)
            except psycopg.Error as exc:
                raise BackendError(f"postgresql: enqueue failed: {first_line(exc)}") from exc
        async with self._call("enqueue") as connection:
            return await self._insert(connection, new_jobs)

    async def _insert(self, connection: psycopg.AsyncConnection[Any], new_jobs: Sequence[NewJob]) -> list[int]:
        """``PostgresBackend._insert`` on an async connection: the same statements, the
        same retry while a unique key's holder finishes between the insert and the lookup."""
        sync = self.sync
        ids: list[int | None] = [None] * len(new_jobs)
        pending = list(range(len(new_jobs)))
        for _ in range(sync.unique_attempts):
            batch = [new_jobs[i] for i in pending]
            params = sync.insert_params(batch)
            unique = any(job.unique_key is not None for job in batch)
            cursor = await connection.execute(sync._enqueue_sql[unique], params)
            for position, job_id in await cursor.fetchall():
                if position is not None:
                    ids[pending[position - 1]] = job_id
            skipped = [i for i in pending if ids[i] is None]
            if skipped:
                holders = [new_jobs[i] for i in skipped]
                cursor = await connection.execute(sync._key_holders_sql, sync.key_holder_params(holders))
                found = {(task, key): job_id for task, key, job_id in await cursor.fetchall()}
                for i in skipped:
                    ids[i] = found.get((new_jobs[i].task, new_jobs[i].unique_key))
            pending = [i for i in skipped if ids[i] is None]
            if not pending:
                return [job_id for job_id in ids if job_id is not None]
        raise BackendError(f"postgresql: enqueue failed: unique keys kept changing hands ({len(pending)} jobs)")

    async def enqueue_workflow(self, name: str | None, steps: Sequence[StepRow], conn: Any = None) -> list[int]:
        """The sync dialect's workflow insert (several statements in one transaction): on
        the caller's ``AsyncConnection`` through ``run_sync``, else in a thread on the
        sync backend's own connection (opened on a client's first workflow)."""
        if conn is None:
            return await asyncio.to_thread(self.sync.enqueue_workflow, name, steps)
        return await self.sync.enqueue_workflow_on(conn, name, steps)

    async def get(self, job_id: int) -> JobInfo | None:
        async with self._call("get") as conn:
            cursor = await conn.execute(self._get_sql, {"id": job_id})
            row = await cursor.fetchone()
        if row is None:
            return None
        values = {name: _utc(value) for name, value in zip(JOB_COLUMNS, row)}
        values["state"] = JobState(values["state"])
        return JobInfo(**values)

    async def cancel(self, job_id: int, audit: Audit | None = None) -> bool:
        """Queued -> cancelled (True); False for any other state."""
        params = {
            "id": job_id, "now": self.sync._clock_now(), "actor": None if audit is None else audit.actor[:255],
            "done_channel": self.sync.done_channel, "done_ids": done_notice([job_id]),
        }
        async with self._call("cancel") as conn:
            cursor = await conn.execute(self._cancel_sql, params)
            return await cursor.fetchone() is not None

    async def request_cancel(self, job_id: int, audit: Audit | None = None) -> bool:
        """Ask the supervisor running the job to stop it; True if it is running."""
        params = {
            "id": job_id, "now": self.sync._clock_now(), "channel": self.sync.channel, "notice": CANCEL_NOTICE,
            "actor": None if audit is None else audit.actor[:255],
        }
        async with self._call("request_cancel") as conn:
            cursor = await conn.execute(self._request_cancel_sql, params)
            return bool(await cursor.fetchall())

    async def task_options(self, task: str) -> str | None:
        """The options (JSON) a process that handles ``task`` registered; None if none does."""
        async with self._call("task_options") as conn:
            cursor = await conn.execute(self._task_options_sql, {"task": task})
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    # -- waiting for a job's end -------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(self, job_id: int) -> AsyncIterator[Wake]:
        """A wake-up for ``job_id``'s end, listening before the caller reads the job (so
        an end between the read and the wait still wakes it)."""
        wake = Wake(self, job_id)
        await wake.attach()
        try:
            yield wake
        finally:
            wake.detach()

    async def _live_listener(self) -> _DoneListener:
        if self._listener is None or self._listener.dead:
            self._listener = _DoneListener(
                # No options parameter, as the sync Listener: a session-mode PgBouncer refuses it.
                self.sync.listen_conninfo(), self.sync.done_channel, self.sync.timeouts.postgres_connect_args(pooled=True)
            )
        listener = self._listener
        await listener.started()
        return listener

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        await self.pool.close()
        await asyncio.to_thread(self.sync.close)


class Wake:
    """Set when a notification may concern the job; :meth:`wait` returns then (or after
    the timeout, or at most RECHECK_S), and the caller reads the job again."""

    def __init__(self, backend: AsyncPostgres, job_id: int) -> None:
        self._backend, self._job_id = backend, job_id
        self._event = asyncio.Event()
        self._listener: _DoneListener | None = None

    async def attach(self) -> None:
        if not self._backend.sync.listens:
            return  # through a pooler without listen_dsn: wait() polls
        self._listener = await self._backend._live_listener()
        self._listener.add(self._job_id, self)

    def detach(self) -> None:
        if self._listener is not None:
            self._listener.remove(self._job_id, self)
            self._listener = None

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        if not self._backend.sync.listens:
            await asyncio.sleep(min(timeout, POLL_S))
            return
        if self._listener is None or self._listener.dead:
            # The LISTEN connection was lost: listen anew; the caller's read covers the gap.
            self.detach()
            await self.attach()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(timeout, RECHECK_S)):
                await self._event.wait()
        self._event.clear()


class _DoneListener:
    """One LISTEN connection per client, read by a task that wakes the waiters named."""

    def __init__(self, conninfo: str, channel: str, connect_args: dict[str, Any]) -> None:
        self._waiters: dict[int, set[Wake]] = {}
        self.dead = False
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(conninfo, channel, connect_args))

    async def started(self) -> None:
        try:
            await asyncio.shield(self._ready)
        except psycopg.Error as exc:
            raise BackendError(f"postgresql: LISTEN failed: {first_line(exc)}") from exc

    async def _run(self, conninfo: str, channel: str, connect_args: dict[str, Any]) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **connect_args)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self._ready.set_result(None)
            async for notice in conn.notifies():
                if not notice.payload:
                    self._wake_all()
                    continue
                for job_id in notice.payload.split(","):
                    for wake in self._waiters.get(int(job_id) if job_id.isdigit() else -1, ()):
                        wake.set()
        except (psycopg.Error, OSError) as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
        finally:
            self.dead = True
            self._wake_all()  # they read their jobs again; the next wait listens anew
            if conn is not None:
                _discard(conn)

    def _wake_all(self) -> None:
        for wakes in self._waiters.values():
            for wake in wakes:
                wake.set()

    def add(self, job_id: int, wake: Wake) -> None:
        self._waiters.setdefault(job_id, set()).add(wake)

    def remove(self, job_id: int, wake: Wake) -> None:
        wakes = self._waiters.get(job_id)
        if wakes is not None:
            wakes.discard(wake)
            if not wakes:
                del self._waiters[job_id]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self._ready.done():
            self._ready.cancel()


async def _driver_connection(conn: Any, driver_type: type) -> Any:
    """The driver's connection under a SQLAlchemy ``AsyncConnection``, inside its transaction."""
    get_raw = getattr(conn, "get_raw_connection", None)
    if get_raw is None:
        raise BurrowError(f"conn= takes a SQLAlchemy AsyncConnection, got {type(conn).__name__}")
    raw = await get_raw()
    driver = raw.driver_connection
    if not isinstance(driver, driver_type):
        raise BurrowError(f"conn= is a {type(driver).__name__} connection, not one to this queue's database")
    return driver


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, dt.datetime) else value
