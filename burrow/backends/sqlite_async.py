"""SQLite for the async client: the sync dialect's calls, each run in a thread.

sqlite3 has no async interface, and a local file answers in microseconds, so each
call is :class:`SQLiteBackend`'s own, run on one of ``pool_size`` threads of this
client's (the loop never waits on the file lock). A cancelled call's thread still
runs to its end and returns its connection to the pool. ``await_result`` reads the
job with a short, growing pause (SQLite has no notifications). A transactional
enqueue takes a SQLAlchemy ``AsyncConnection`` of ``sqlite+aiosqlite`` on the same
file: the dialect's insert runs on it, in its transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from burrow.backends.records import Audit, StepRow
from burrow.backends.sql.connection import driver_of
from burrow.backends.sqlite import SQLiteBackend
from burrow.errors import BurrowError
from burrow.job import JobInfo, NewJob

T = TypeVar("T")

DEFAULT_POOL_SIZE = 4
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.002, 0.1


class AsyncSQLite:
    """The async client's calls on SQLite (see the module's docstring)."""

    dialect = "sqlite"

    def __init__(self, sync: SQLiteBackend, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise BurrowError(f"pool_size must be a positive integer, got {pool_size!r}")
        self.sync = sync
        self._threads = ThreadPoolExecutor(pool_size, thread_name_prefix="burrow-sqlite")

    def now(self) -> dt.datetime:
        return self.sync.now()

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(fn, *args))

    async def enqueue(self, new_jobs: Sequence[NewJob], conn: Any = None) -> list[int]:
        if not new_jobs:
            return []
        if conn is None:
            return await self._thread(self.sync.enqueue, new_jobs)
        run_sync = getattr(conn, "run_sync", None)
        if run_sync is None:
            raise BurrowError(f"conn= takes a SQLAlchemy AsyncConnection, got {type(conn).__name__}")
        ids: list[int] = await run_sync(self._insert_on, new_jobs)
        return ids

    def _insert_on(self, conn: Any, new_jobs: Sequence[NewJob]) -> list[int]:
        """The dialect's insert on the caller's connection (SQLAlchemy's sync view of
        the aiosqlite one), in the caller's transaction."""
        if conn.dialect.name != "sqlite":
            raise BurrowError(f"conn= is a {conn.dialect.name} connection, not one to this queue's database")
        with self.sync._errors("enqueue"), self.sync._driver_errors("enqueue"):
            return self.sync._insert(driver_of(conn), new_jobs, own_transaction=False)

    async def enqueue_workflow(self, name: str | None, steps: Sequence[StepRow], conn: Any = None) -> list[int]:
        """The sync dialect's workflow insert: in a thread, or on the caller's connection."""
        if conn is None:
            return await self._thread(self.sync.enqueue_workflow, name, steps)
        return await self.sync.enqueue_workflow_on(conn, name, steps)

    async def get(self, job_id: int) -> JobInfo | None:
        return await self._thread(self.sync.get, job_id)

    async def cancel(self, job_id: int, audit: Audit | None = None) -> bool:
        return await self._thread(self.sync.cancel, job_id, audit)

    async def request_cancel(self, job_id: int, audit: Audit | None = None) -> bool:
        return await self._thread(self.sync.request_cancel, job_id, audit)

    async def task_options(self, task: str) -> str | None:
        return await self._thread(self.sync.task_options, task)

    @contextlib.asynccontextmanager
    async def watch(self, job_id: int) -> AsyncIterator[Pause]:
        yield Pause()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._threads, self.sync.close)
        self._threads.shutdown(wait=False)


class Pause:
    """SQLite's wake-up: a pause that doubles from 2 ms to 100 ms, as ``JobQueue.wait``'s."""

    def __init__(self) -> None:
        self._pause = _FIRST_PAUSE_S

    async def wait(self, timeout: float) -> None:
        await asyncio.sleep(min(self._pause, timeout))
        self._pause = min(self._pause * 2, _MAX_PAUSE_S)
