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
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from burrow.backends.base import ClaimedJob, NewJob, Outcome, OutcomeKind, SchemaStatus
from burrow.backends.schema import LATEST_VERSION, UTC, apply_migrations
from burrow.backends.sql import Clock, SQLBackend, history_entry
from burrow.errors import BackendError

BUSY_TIMEOUT_MS = 30_000
_INSERT_ROWS = 500  # 6 parameters a row; SQLite allows 32,766 in a statement
_LOCK_RETRY_S = 0.0002


def database_path(dsn: str) -> Path:
    """``sqlite:///relative.db`` -> relative.db; ``sqlite:////abs/x.db`` -> /abs/x.db."""
    url = sa.engine.make_url(dsn)
    if url.get_backend_name() != "sqlite":
        raise BackendError(f"not a SQLite DSN: {url.render_as_string(hide_password=True)}")
    if not url.database or url.database == ":memory:":
        raise BackendError("SQLite needs a database file (sqlite:///path/to/jobs.db); in-memory databases cannot be shared")
    return Path(url.database)


def _check_directory(path: Path) -> None:
    if not path.parent.is_dir():
        raise BackendError(f"cannot open SQLite database {str(path)!r}: directory {str(path.parent)!r} does not exist")


def _create_private(path: Path) -> None:
    """Create the file mode 0600 so jobs are private; SQLite gives -wal/-shm the same mode."""
    _check_directory(path)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL, waiting out other connections switching it too.

    The switch needs an exclusive lock and does not call the busy handler, so
    processes opening a new database together would get "database is locked" at
    once; retry with a short backoff. A file already in WAL mode (every open after
    the first) passes on the first try.
    """
    _retry_while_locked(lambda: cursor.execute("PRAGMA journal_mode = WAL"), pause_s=0.001, max_pause_s=0.05)


def _retry_while_locked(run: Callable[[], object], *, pause_s: float, max_pause_s: float) -> None:
    """``run()`` until it does not fail with "database is locked", pausing between
    tries (doubling up to ``max_pause_s``), for at most the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            run()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, max_pause_s)


def create_engine(path: Path) -> sa.Engine:
    """An engine that creates the file on its first connection, not before.

    Building a backend touches nothing, so ``--check`` can look at a database
    without creating one.
    """
    _check_directory(path)
    engine = sa.create_engine(f"sqlite:///{path}", hide_parameters=True, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "do_connect")
    def create_file(*_: Any) -> None:
        _create_private(path)

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

    def _configure_held(self, connection: Any) -> None:
        # Hot-path writes wait for the lock in _begin_immediate; its only other use,
        # ping's SELECT 1, reads no table and so takes no lock.
        connection.execute("PRAGMA busy_timeout = 0")

    def schema_status(self) -> SchemaStatus:
        """A missing file is reported, not created (opening it would create it)."""
        if not self.path.exists():
            return SchemaStatus(False, 0, LATEST_VERSION)
        return super().schema_status()

    def migrate(self) -> None:
        """BEGIN IMMEDIATE is the lock: a second process waits, then finds nothing to do."""
        self._write("migrate", lambda conn: apply_migrations(conn, self.now()))

    def _insert_held(self, connection: Any, new_jobs: Sequence[NewJob]) -> list[int]:
        """Multi-row INSERTs of at most _INSERT_ROWS rows (SQLite caps the parameters of
        a statement), in one transaction; ids ascend in VALUES order (see the class)."""
        now = _stamp(self.now())
        ids: list[int] = []
        _begin_immediate(connection)
        for start in range(0, len(new_jobs), _INSERT_ROWS):
            chunk = new_jobs[start : start + _INSERT_ROWS]
            params: list[Any] = []
            for job in chunk:
                run_at = now if job.run_at is None else _stamp(job.run_at)
                params += (job.task, job.priority, job.payload, job.max_retries, run_at, now)
            ids += sorted(row[0] for row in connection.execute(_insert_sql(len(chunk)), params))
        connection.execute("COMMIT")
        return ids

    def claim(self, tasks: Sequence[str], limit: int, owner: str, lease_s: float) -> list[ClaimedJob]:
        """Select and mark in one statement; the write lock makes the subquery safe."""
        if not tasks or limit <= 0:
            return []
        now = self.now()
        params = (owner, _stamp(now), _stamp(now + dt.timedelta(seconds=lease_s)), _stamp(now), *tasks, limit)
        statement = _claim_sql(len(tasks))

        def claim(conn: sqlite3.Connection) -> list[Any]:
            _begin_immediate(conn)
            rows = conn.execute(statement, params).fetchall()
            conn.execute("COMMIT")
            return rows

        rows = self._on_held("claim", claim)
        rows.sort(key=lambda r: (-r[3], r[6], r[0]))  # RETURNING order is unspecified; stamps sort as text
        return [ClaimedJob(r[0], r[1], r[2], r[3], r[4], r[5], owner) for r in rows]

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """One executemany per outcome kind, fenced in its WHERE clause, in one transaction.

        SQLite has no network round trip to save, so per-row statements run at C
        speed through executemany. When every row matched (the usual case) that is
        all; when some fence failed the transaction is redone row by row, to learn
        which outcomes were written.
        """
        if not outcomes:
            return []
        now = self.now()
        stamp = _stamp(now)
        by_kind: dict[OutcomeKind, list[tuple[Any, ...]]] = {}
        for outcome in outcomes:
            by_kind.setdefault(outcome.kind, []).append(_finish_params(outcome, now, stamp))

        def write(conn: sqlite3.Connection) -> list[Outcome]:
            _begin_immediate(conn)
            if all(conn.executemany(_FINISH[kind], rows).rowcount == len(rows) for kind, rows in by_kind.items()):
                written: Sequence[Outcome] = outcomes
            else:
                conn.rollback()
                _begin_immediate(conn)
                written = [o for o in outcomes if conn.execute(_FINISH[o.kind], _finish_params(o, now, stamp)).rowcount == 1]
            entries = [(*e, stamp) for o in written if (e := history_entry(o)) is not None]
            if entries:
                conn.executemany(_INSERT_HISTORY, entries)
            conn.execute("COMMIT")
            return list(written)

        written = {o.id for o in self._on_held("finish", write)}
        return [o.id for o in outcomes if o.id not in written]

    def extend_leases(self, fences: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        if not fences:
            return []
        until = _stamp(self.now() + dt.timedelta(seconds=lease_s))

        def extend(conn: sqlite3.Connection) -> list[int]:
            _begin_immediate(conn)
            lost = [f[0] for f in fences if conn.execute(_EXTEND, (until, *f)).rowcount != 1]
            conn.execute("COMMIT")
            return lost

        return self._on_held("extend_leases", extend)


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock for a hot-path transaction, trying again every 0.2 ms.

    SQLite's own busy handler sleeps 1, 2, 5, 10, ... 100 ms between tries, so
    under steady contention a waiting process backs off further and further while
    the others keep taking the lock: a claimer starved for a whole second among
    four, and a worker waiting out a 2 ms flush slept 3 ms or more. The held
    connection therefore has no busy timeout (``_configure_held``) and retries here
    at a fine, constant grain, bounded by the same 30 s.
    """
    _retry_while_locked(lambda: conn.execute("BEGIN IMMEDIATE"), pause_s=_LOCK_RETRY_S, max_pause_s=_LOCK_RETRY_S)


def _stamp(value: dt.datetime) -> str:
    """A UTC datetime as SQLAlchemy stores it in SQLite (see schema.Timestamp): fixed width,
    so stamps compare as text in time order."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, 'queued', ?, 0, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO burrow_jobs (task, priority, state, payload, attempts, max_retries, run_at, created_at)"
        f" VALUES {values} RETURNING id"
    )


@functools.cache
def _claim_sql(task_count: int) -> str:
    return f"""
        UPDATE burrow_jobs
        SET state = 'running', attempts = attempts + 1, owner = ?, started_at = ?, lease_expires_at = ?
        WHERE id IN (
            SELECT id FROM burrow_jobs
            WHERE state = 'queued' AND run_at <= ? AND task IN ({", ".join("?" * task_count)})
            ORDER BY priority DESC, run_at, id
            LIMIT ?
        )
        RETURNING id, task, payload, priority, attempts, max_retries, run_at
    """


def _finish_params(outcome: Outcome, now: dt.datetime, stamp: str) -> tuple[Any, ...]:
    """The SET values of ``_FINISH[outcome.kind]``, then its fence; ``stamp`` is ``now`` stamped."""
    fence = (outcome.id, outcome.owner, outcome.attempt)
    if outcome.kind is OutcomeKind.SUCCEEDED:
        return (stamp, outcome.result, *fence)
    if outcome.kind is OutcomeKind.FAILED:
        return (stamp, outcome.error, *fence)
    if outcome.kind is OutcomeKind.RETRY:
        return (_stamp(now + dt.timedelta(seconds=outcome.retry_in_s)), outcome.error, *fence)
    return (outcome.error, *fence)


_FENCE = "WHERE id = ? AND owner = ? AND attempts = ? AND state = 'running'"
_RELEASE = "owner = NULL, lease_expires_at = NULL"
_FINISH = {
    OutcomeKind.SUCCEEDED: f"UPDATE burrow_jobs SET state = 'succeeded', finished_at = ?, result = ?, {_RELEASE} {_FENCE}",
    OutcomeKind.FAILED: f"UPDATE burrow_jobs SET state = 'failed', finished_at = ?, last_error = ?, {_RELEASE} {_FENCE}",
    OutcomeKind.RETRY: f"UPDATE burrow_jobs SET state = 'queued', run_at = ?, last_error = ?, {_RELEASE} {_FENCE}",
    OutcomeKind.RELEASED: "UPDATE burrow_jobs SET state = 'queued', attempts = attempts - 1,"
    f" last_error = coalesce(?, last_error), {_RELEASE} {_FENCE}",
}
_EXTEND = f"UPDATE burrow_jobs SET lease_expires_at = ? {_FENCE}"
_INSERT_HISTORY = "INSERT INTO burrow_job_history (job_id, attempt, event, error, at) VALUES (?, ?, ?, ?, ?)"
