"""AsyncJobQueue: the producer's API for asyncio applications, never blocking the loop.

An enqueue means what it means on :class:`burrow.queue.JobQueue`: the rows come from
the same :func:`burrow.queue.enqueue_rows` (the same checks, the same errors, a
payload that does not encode stores nothing); only the round trip differs. The
backends' async halves (``burrow/backends/postgres_async.py``, ``sqlite_async.py``)
run it: PostgreSQL on psycopg's async connections from a bounded pool, SQLite in a
few threads of the client's own. Nothing here runs jobs: workers do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Protocol, Unpack

from burrow.backends import async_backend_for
from burrow.backends.records import Audit, StepRow
from burrow.backends.sql.connection import Clock
from burrow.errors import JobNotFound, WaitTimeout
from burrow.job import FINISHED_STATES, EnqueueKeywords, EnqueueOptions, JobInfo, ManyKeywords, NewJob, keyed_payloads
from burrow.options import JobConfig, RegisteredOptions, check_task_name
from burrow.queue import DEFAULT_MAX_PAYLOAD_BYTES, _result_of, actor_of, enqueue_rows


class _Wake(Protocol):
    async def wait(self, timeout: float) -> None: ...


class AsyncBackend(Protocol):
    """What the async client asks of a database (the backends' ``*_async`` modules)."""

    dialect: str

    def now(self) -> dt.datetime: ...

    async def enqueue(self, new_jobs: Sequence[NewJob], conn: Any = None) -> list[int]: ...

    async def enqueue_workflow(self, name: str | None, steps: Sequence[StepRow], conn: Any = None) -> list[int]: ...

    async def get(self, job_id: int) -> JobInfo | None: ...

    async def cancel(self, job_id: int, audit: Audit | None = None) -> bool: ...

    async def request_cancel(self, job_id: int, audit: Audit | None = None) -> bool: ...

    async def task_options(self, task: str) -> str | None: ...

    def watch(self, job_id: int) -> AbstractAsyncContextManager[_Wake]: ...

    async def close(self) -> None: ...


class AsyncJobQueue:
    """A queue of jobs in one database, for producers on an event loop (make one with
    :func:`aconnect`). Every method is a coroutine; none blocks the loop."""

    def __init__(self, backend: AsyncBackend, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.backend = backend
        self.max_payload_bytes = max_payload_bytes
        self._registered = RegisteredOptions()  # of the tasks, this client has no definition of any

    # -- producing ----------------------------------------------------------------

    async def enqueue(self, type_name: str, payload: Any, *, conn: Any = None, **options: Unpack[EnqueueKeywords]) -> int:
        """Store one job; its id (or, with a unique key held, the holder's id).

        The options are ``JobQueue.enqueue``'s. ``conn``: a SQLAlchemy ``AsyncConnection``
        on the same database; the job exists if and only if its transaction commits.
        """
        return (await self.enqueue_options(type_name, [payload], EnqueueOptions.of(options), conn=conn))[0]

    async def enqueue_many(
        self,
        type_name: str,
        payloads: Iterable[Any],
        *,
        unique_keys: Sequence[str | None] | None = None,
        conn: Any = None,
        **options: Unpack[ManyKeywords],
    ) -> list[int]:
        """Store many jobs in one statement; every payload is encoded before any is stored."""
        listed = keyed_payloads(type_name, payloads, unique_keys)
        return await self.enqueue_options(type_name, listed, EnqueueOptions.of(options), unique_keys, conn=conn)

    async def enqueue_options(
        self,
        type_name: str,
        payloads: Sequence[Any],
        options: EnqueueOptions,
        keys: Sequence[str | None] | None = None,
        *,
        conn: Any = None,
        config: JobConfig | None = None,
    ) -> list[int]:
        """``JobQueue.enqueue_options`` on the loop; ``config`` is the task's definition (a
        typed task passes its own; default: the options a supervisor that handles the task
        registered, else burrow's: this queue registers no handlers)."""
        return await self.backend.enqueue(await self.job_rows(type_name, payloads, options, keys, config=config), conn)

    async def job_rows(
        self,
        type_name: str,
        payloads: Sequence[Any],
        options: EnqueueOptions,
        keys: Sequence[str | None] | None = None,
        *,
        config: JobConfig | None = None,
    ) -> list[NewJob]:
        """The rows :meth:`enqueue_options` stores (a workflow's steps are made here too)."""
        if config is None:
            check_task_name(type_name)  # before a round trip for its options
            config = await self._registered_config(type_name)
        return enqueue_rows(type_name, payloads, options, keys, config, self.max_payload_bytes, self.backend.now)

    async def enqueue_steps(self, name: str | None, steps: Sequence[StepRow], *, conn: Any = None) -> list[int]:
        """Store a workflow's steps (``burrow.Workflow.aenqueue`` makes them) in one transaction."""
        return await self.backend.enqueue_workflow(name, steps, conn)

    async def _registered_config(self, type_name: str) -> JobConfig:
        """``JobQueue._registered_config``, awaited."""
        config = self._registered.cached(type_name)
        return config if config is not None else self._registered.remember(type_name, await self.backend.task_options(type_name))

    # -- reading ------------------------------------------------------------------

    async def job(self, job_id: int) -> JobInfo:
        """The job as it is now; JobNotFound for an unknown id."""
        info = await self.backend.get(job_id)
        if info is None:
            raise JobNotFound(f"no job with id {job_id}")
        return info

    async def result(self, job_id: int) -> bytes | None:
        """The stored result bytes of a succeeded job; JobNotFinished, JobFailed,
        JobCancelled as ``JobQueue.result``."""
        return _result_of(await self.job(job_id))

    async def wait(self, job_id: int, timeout: float) -> JobInfo:
        """Until the job finished (WaitTimeout, a TimeoutError, after ``timeout`` s); a
        failed or cancelled job raises what :meth:`result` raises.

        PostgreSQL: sleeps on LISTEN until a finish names the job. SQLite: reads the
        job with a pause growing from 2 ms to 100 ms.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.backend.watch(job_id) as wake:
            while True:
                record = await self.job(job_id)
                if record.state in FINISHED_STATES:
                    _result_of(record)
                    return record
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise WaitTimeout(f"job {job_id} ({record.task}) still {record.state} after {timeout:g}s")
                await wake.wait(remaining)

    # -- operating ----------------------------------------------------------------

    async def dequeue(self, job_id: int, *, actor: str | None = None) -> bool:
        """Cancel a job that has not started (True); False for any other state."""
        return await self.backend.cancel(job_id, Audit(actor_of(actor), "cancel", job_id=job_id))

    async def cancel(self, job_id: int, *, actor: str | None = None) -> bool:
        """``JobQueue.cancel``: a queued job at once, a running one by its supervisor;
        False for a finished job, JobNotFound for an unknown id. Audited as ``actor``
        (default user@host), as every operator action is."""
        audit = Audit(actor_of(actor), "cancel", job_id=job_id)
        if await self.backend.cancel(job_id, audit) or await self.backend.request_cancel(job_id, audit):
            return True
        await self.job(job_id)
        return False

    # -- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> AsyncJobQueue:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def aconnect(
    dsn: str = "sqlite:///burrow.db",
    *,
    schema: str | None = None,
    pool_size: int | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    clock: Clock | None = None,
    pooled: bool = False,
    listen_dsn: str | None = None,
) -> AsyncJobQueue:
    """Open the queue at ``dsn`` for async producers; pending migrations are applied
    first (once, in a thread: they take a lock and may take a while).

    ``pool_size``: at most this many connections at once (PostgreSQL, default 10) or
    threads (SQLite, default 4); more concurrent calls wait their turn. ``pooled``:
    ``dsn`` is PgBouncer in transaction mode; ``listen_dsn``: a direct connection on
    which ``await_result`` listens (without one, through a pooler, it polls).
    """
    backend = await async_backend_for(
        dsn, schema=schema, clock=clock, pool_size=pool_size, pooled=pooled, listen_dsn=listen_dsn
    )
    return AsyncJobQueue(backend, max_payload_bytes=max_payload_bytes)
