"""The embedded default: one SQLite file in WAL mode.

SQLite has one writer at a time, so claims need no row locks: a ``BEGIN
IMMEDIATE`` transaction takes the write lock up front (instead of upgrading a read
lock later, which is where "database is locked" errors come from) and the select
and the mark happen inside it. Waiting consumers poll with a short, bounded
backoff, because SQLite has no notifications across processes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from burrow.backends.base import ClaimedJob, JobState, Outcome, OutcomeKind
from burrow.backends.schema import apply_migrations, jobs
from burrow.backends.sql import Clock, SQLBackend, history_entry
from burrow.errors import BackendError

BUSY_TIMEOUT_MS = 30_000


def database_path(dsn: str) -> Path:
    """``sqlite:///relative.db`` -> relative.db; ``sqlite:////abs/x.db`` -> /abs/x.db."""
    url = sa.engine.make_url(dsn)
    if url.get_backend_name() != "sqlite":
        raise BackendError(f"not a SQLite DSN: {url.render_as_string(hide_password=True)}")
    if not url.database or url.database == ":memory:":
        raise BackendError("SQLite needs a database file (sqlite:///path/to/jobs.db); in-memory databases cannot be shared")
    return Path(url.database)


def _create_private(path: Path) -> None:
    """Create the file mode 0600 so jobs are private; SQLite gives -wal/-shm the same mode."""
    if not path.parent.is_dir():
        raise BackendError(f"cannot open SQLite database {str(path)!r}: directory {str(path.parent)!r} does not exist")
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL, waiting out other connections switching it too.

    The switch needs an exclusive lock and does not call the busy handler, so
    processes opening a new database together would get "database is locked" at
    once; retry with a short backoff, bounded by the busy timeout. A file already
    in WAL mode (every open after the first) passes on the first try.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def create_engine(path: Path) -> sa.Engine:
    _create_private(path)
    engine = sa.create_engine(f"sqlite:///{path}", hide_parameters=True, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, start transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def begin(conn: sa.Connection) -> None:
        # Writers take the lock at BEGIN; readers stay deferred and never block writers.
        immediate = conn.get_execution_options().get("burrow_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class SQLiteBackend(SQLBackend):
    dialect = "sqlite"
    # RETURNING order is unspecified in SQLite, but an INSERT hands out rowids in
    # VALUES order (the largest + 1; the writer holds the lock throughout), so
    # sorting the returned ids gives the payloads' order from one multi-row INSERT.
    ordered_insert_returning = False

    def __init__(self, dsn: str, *, clock: Clock | None = None) -> None:
        self.path = database_path(dsn)
        super().__init__(create_engine(self.path), clock=clock)
        self._write_engine = self._engine.execution_options(burrow_write=True)

    def _begin_write(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self._write_engine.begin()

    def migrate(self) -> None:
        """BEGIN IMMEDIATE is the lock: a second process waits, then finds nothing to do."""
        self._write("migrate", lambda conn: apply_migrations(conn, self.now()))

    def claim(self, tasks: Sequence[str], limit: int, owner: str, lease_s: float) -> list[ClaimedJob]:
        """Select and mark in one statement; the write lock makes the subquery safe."""
        if not tasks or limit <= 0:
            return []
        now = self._now()
        picked = (
            sa.select(jobs.c.id)
            .where(jobs.c.state == JobState.QUEUED.value, jobs.c.run_at <= now, jobs.c.task.in_(list(tasks)))
            .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
            .limit(limit)
        )
        statement = (
            sa.update(jobs)
            .where(jobs.c.id.in_(picked.scalar_subquery()))
            .values(
                state=JobState.RUNNING.value,
                attempts=jobs.c.attempts + 1,
                owner=owner,
                started_at=now,
                lease_expires_at=self._at(lease_s),
            )
            .returning(
                jobs.c.id, jobs.c.task, jobs.c.payload, jobs.c.priority, jobs.c.attempts, jobs.c.max_retries, jobs.c.run_at
            )
        )
        rows = self._write("claim", lambda c: c.execute(statement).all())
        claimed = [ClaimedJob(r.id, r.task, r.payload, r.priority, r.attempts, r.max_retries, r.run_at, owner) for r in rows]
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.id))  # RETURNING order is unspecified
        return claimed

    def _held(self, conn: sa.Connection, fences: Sequence[tuple[int, str, int]]) -> set[int]:
        """Ids whose (owner, attempt) still hold; exact because we hold the write lock."""
        statement = sa.select(jobs.c.id, jobs.c.owner, jobs.c.attempts).where(
            jobs.c.id.in_([job_id for job_id, _, _ in fences]), jobs.c.state == JobState.RUNNING.value
        )
        current = {(r.id, r.owner, r.attempts) for r in conn.execute(statement)}
        return {job_id for job_id, owner, attempt in fences if (job_id, owner, attempt) in current}

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Check the fences, then one executemany per outcome kind, in one transaction.

        SQLite has no network round trip to save, so per-row statements run at C
        speed through executemany; the fence is checked by a SELECT under the
        same write lock rather than by a VALUES join.
        """
        if not outcomes:
            return []

        def write(conn: sa.Connection) -> list[int]:
            held = self._held(conn, [(o.id, o.owner, o.attempt) for o in outcomes])
            mine = [o for o in outcomes if o.id in held]
            now = self.now()
            for kind, statement in _FINISH.items():
                rows = [_finish_params(o, now) for o in mine if o.kind is kind]
                if rows:
                    conn.execute(statement, rows)
            self._record_history(conn, [e for o in mine if (e := history_entry(o)) is not None])
            return [o.id for o in outcomes if o.id not in held]

        return self._write("finish", write)

    def extend_leases(self, fences: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        if not fences:
            return []

        def extend(conn: sa.Connection) -> list[int]:
            held = self._held(conn, fences)
            until = self.now() + dt.timedelta(seconds=lease_s)
            if held:
                conn.execute(_EXTEND, [{"b_id": job_id, "b_until": until} for job_id in held])
            return [job_id for job_id, _, _ in fences if job_id not in held]

        return self._write("extend_leases", extend)


def _finish_params(outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    return {
        "b_id": outcome.id,
        "b_now": now,
        "b_result": outcome.result,
        "b_error": outcome.error,
        "b_run_at": now + dt.timedelta(seconds=outcome.retry_in_s),
    }


_by_id = jobs.c.id == sa.bindparam("b_id")
_released = {"owner": None, "lease_expires_at": None}
_FINISH = {
    OutcomeKind.SUCCEEDED: sa.update(jobs)
    .where(_by_id)
    .values(
        state=JobState.SUCCEEDED.value,
        finished_at=sa.bindparam("b_now"),
        result=sa.bindparam("b_result"),
        **_released,
    ),
    OutcomeKind.FAILED: sa.update(jobs)
    .where(_by_id)
    .values(state=JobState.FAILED.value, finished_at=sa.bindparam("b_now"), last_error=sa.bindparam("b_error"), **_released),
    OutcomeKind.RETRY: sa.update(jobs)
    .where(_by_id)
    .values(state=JobState.QUEUED.value, run_at=sa.bindparam("b_run_at"), last_error=sa.bindparam("b_error"), **_released),
    OutcomeKind.RELEASED: sa.update(jobs)
    .where(_by_id)
    .values(state=JobState.QUEUED.value, attempts=jobs.c.attempts - 1, **_released),
}
_EXTEND = sa.update(jobs).where(_by_id).values(lease_expires_at=sa.bindparam("b_until"))
