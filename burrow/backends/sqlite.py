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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from burrow.backends.records import CLAIM_COLUMNS, ClaimRequest, Outcome, SchemaStatus, StatisticsRefresh, owner_host_pid
from burrow.job import NewJob
from burrow.backends.deadline import DEFAULT_TIMEOUTS, Timeouts
from burrow.backends.migrations import LATEST_VERSION, apply_migrations
from burrow.backends.schema import UNIQUE_WHERE, UTC, jobs
from burrow.backends.sql.backend import SQLBackend
from burrow.backends.sql.connection import Clock
from burrow.backends.transitions import Change, change, split_batch, uniform_assignments
from burrow.errors import BackendError

_INSERT_ROWS = 500  # 9 parameters a row (NewJob's fields, id, created_at); SQLite allows 32,766 in a statement
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
        raise BackendError(
            f"cannot open SQLite database {str(path.absolute())!r}: directory {str(path.absolute().parent)!r} does not exist"
        )


def _create_private(path: Path) -> None:
    """Create the file mode 0600 so jobs are private; SQLite gives -wal/-shm the same mode."""
    _check_directory(path)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _enable_wal(cursor: Any, wait_s: float) -> None:
    """Switch the file to WAL, waiting out other connections switching it too.

    The switch needs an exclusive lock and does not call the busy handler, so
    processes opening a new database together would get "database is locked" at
    once; retry with a short backoff. A file already in WAL mode (every open after
    the first) passes on the first try.
    """
    _retry_while_locked(lambda: cursor.execute("PRAGMA journal_mode = WAL"), pause_s=0.001, max_pause_s=0.05, wait_s=wait_s)


def _retry_while_locked(run: Callable[[], object], *, pause_s: float, max_pause_s: float, wait_s: float) -> None:
    """``run()`` until it does not fail with "database is locked", pausing between
    tries (doubling up to ``max_pause_s``), for at most ``wait_s`` (the call timeout)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            run()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, max_pause_s)


def create_engine(path: Path, timeouts: Timeouts) -> sa.Engine:
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
        cursor.execute(f"PRAGMA busy_timeout = {int(timeouts.call_s * 1000)}")
        _enable_wal(cursor, timeouts.call_s)
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

    def __init__(self, dsn: str, *, clock: Clock | None = None, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.path = database_path(dsn)
        super().__init__(create_engine(self.path, timeouts), clock=clock, timeouts=timeouts)
        self._write_engine = self._engine.execution_options(burrow_write=True)

    def _begin_write(self) -> contextlib.AbstractContextManager[sa.Connection]:
        return self._write_engine.begin()

    def _configure_held(self, connection: Any) -> None:
        # Hot-path writes wait for the lock in _begin_immediate; its only other use,
        # ping's SELECT 1, reads no table and so takes no lock.
        connection.execute("PRAGMA busy_timeout = 0")

    def _settle(
        self, execute: Callable[[str, tuple[Any, ...]], Any], ended_ids: Sequence[int], *, deleted: bool = False
    ) -> None:
        """Workflows on SQLite: what PostgreSQL's triggers do (migration 12), done by the
        statements that end jobs, in their transaction (SQLite's one writer needs no
        locks). Not a trigger here: SQLite runs a row trigger's program for every row an
        UPDATE touches before it reads the trigger's WHEN, and that cost every finish
        about a tenth of its CPU, workflows or not. The cheap test first: with no step
        waiting anywhere (one probe of the state index), there is nothing to settle."""
        ids = (orjson.dumps(list(ended_ids)).decode(),) if deleted else ()
        if deleted:
            execute(_UNLINK_DELETED, ids)
        if execute(_ANY_WAITING, ()).fetchone() is None:
            return  # the usual finish: nothing more than the probe
        ids = ids or (orjson.dumps(list(ended_ids)).decode(),)
        now = (_stamp(self.now()),)
        cancelled = [row[0] for row in execute(_CASCADE_CANCEL, now + ids).fetchall()]
        everything = (orjson.dumps([*ended_ids, *cancelled]).decode(),)
        execute(_RELEASE, now + now + everything)

    def schema_status(self) -> SchemaStatus:
        """A missing file is reported, not created (opening it would create it)."""
        if not self.path.exists():
            return SchemaStatus(False, 0, LATEST_VERSION)
        return super().schema_status()

    def refresh_statistics(self) -> StatisticsRefresh | None:
        """Nothing to refresh: without statistics SQLite still claims along the queued
        index, or per task along the task index, stopping at the claim's limit (its
        sorter gives up on a task's range once the limit is full), so a claim costs the
        same beside a backlog of 100,000 or 500,000 (benchmarks/README.md, "fifth pass")."""
        return None

    def migrate(self) -> None:
        """BEGIN IMMEDIATE is the lock: a second process waits, then finds nothing to do."""
        self._write("migrate", lambda conn: apply_migrations(conn, self.now()))

    def _dialect_insert(self, table: sa.Table) -> Any:
        return sqlite_dialect.insert(table)

    def _insert(self, connection: Any, new_jobs: Sequence[NewJob], *, own_transaction: bool) -> list[int]:
        """Multi-row INSERTs with ids we choose, so each job's id is known by its position.

        SQLite's RETURNING order is unspecified, and ids read back sorted match the
        payloads only while every row is inserted. Under the write lock nobody else
        inserts, so the ids after the largest one are ours to hand out: the lock is
        taken first (BEGIN IMMEDIATE, or in a caller's transaction a write that
        changes nothing), then the largest id is read. At most _INSERT_ROWS rows a
        statement: SQLite caps a statement's parameters.
        """
        now = _stamp(self.now())
        if own_transaction:
            _begin_immediate(connection, self.timeouts.call_s)
        else:
            connection.execute(_TAKE_WRITE_LOCK)
        first_id = connection.execute(_NEXT_ID).fetchone()[0]
        ids = list(range(first_id, first_id + len(new_jobs)))
        unique = any(job.unique_key is not None for job in new_jobs)
        inserted: set[int] = set()
        for start in range(0, len(new_jobs), _INSERT_ROWS):
            chunk = new_jobs[start : start + _INSERT_ROWS]
            params = _insert_params(ids[start:], chunk, now, _stamp)
            rows = connection.execute(_insert_sql(len(chunk), unique), params)
            if unique:
                inserted.update(row[0] for row in rows)
        if unique:
            # A job skipped for its unique key gets the id of the job holding the key; under
            # the write lock that job cannot have finished since the INSERT saw it.
            skipped = [(i, job) for i, job in enumerate(new_jobs) if ids[i] not in inserted]
            holders = self._key_holders(connection, [job for _, job in skipped])
            for i, job in skipped:
                ids[i] = holders[job.task, job.unique_key]
        if own_transaction:
            connection.execute("COMMIT")
        return ids

    def _retire_ids(self, conn: sa.Connection) -> None:
        """Before a delete, keep the largest id handed out (migration 8): the next
        enqueue starts after it even when the newest job is the one deleted."""
        conn.exec_driver_sql(_RAISE_ID_FLOOR)

    def _key_holders(self, connection: Any, skipped: Sequence[NewJob]) -> dict[tuple[str, str | None], int]:
        """The queued or running job that holds each (task, unique key) of ``skipped``."""
        holders: dict[tuple[str, str | None], int] = {}
        for task, key in {(job.task, job.unique_key) for job in skipped}:
            row = connection.execute(_KEY_HOLDER, (task, key)).fetchone()
            if row is None:
                raise BackendError(f"sqlite: enqueue failed: unique key {key!r} of {task!r} has no holder")
            holders[task, key] = row[0]
        return holders

    def _contains(self, text: str) -> sa.ColumnElement[bool]:
        """SQLite reads a blob cast to text as UTF-8; its lower() folds ASCII letters."""
        needle = sa.func.lower(sa.literal(text, sa.Text))
        payload = sa.func.lower(sa.cast(jobs.c.payload, sa.Text))
        return sa.or_(sa.func.instr(payload, needle) > 0, sa.func.instr(sa.func.lower(jobs.c.last_error), needle) > 0)

    def _claim(self, request: ClaimRequest, limited: Mapping[str, int]) -> Callable[[Any], list[Any]]:
        """Select and mark in one statement; the write lock makes the subquery safe.

        A task with a concurrency limit gets a pick of its own, of at most its free
        slots: the running jobs are counted under the same write lock, so no other
        claimer can start one in between (SQLite's single writer does what
        PostgreSQL needs an advisory lock for).
        """
        queues, limit = request.queues, request.limit
        free_tasks = [task for task in request.tasks if task not in limited]
        now = self.now()
        head = (request.owner, _stamp(now), _stamp(now + dt.timedelta(seconds=request.lease_s)))

        def claim(conn: sqlite3.Connection) -> list[Any]:
            _begin_immediate(conn, self.timeouts.call_s)
            picks: list[int] = []  # the task count of each pick (its limit is a parameter)
            params: list[Any] = []
            if free_tasks:
                picks.append(len(free_tasks))
                params += (_stamp(now), *free_tasks, *queues.names, limit)
            if limited:
                running = dict(conn.execute(_count_running_sql(len(limited)), list(limited)).fetchall())
                for task, most in limited.items():
                    if (free := most - running.get(task, 0)) > 0:
                        picks.append(1)
                        params += (_stamp(now), task, *queues.names, min(free, limit))
            rows = []
            if picks:
                statement = _claim_sql(tuple(picks), len(queues.names), queues.exclude)
                rows = conn.execute(statement, (*head, *params, limit)).fetchall()
            conn.execute("COMMIT")
            return rows

        return claim

    def _finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Fenced executemanys for the whole batch, whatever its kinds, in one transaction.

        SQLite has no network round trip to save, so per-row statements run at C
        speed through executemany; what each kind writes comes from
        ``transitions.change``. The rows of the batch's plain change (its successes)
        take the uniform UPDATE, the rest the general one (``transitions.split_batch``).
        When every row matched (the usual case) that is all; when some fence failed
        the transaction is redone row by row, to learn which outcomes were written.
        """
        if not outcomes:
            return []
        now = self.now()
        stamp = _stamp(now)
        changes = [change(o) for o in outcomes]
        # change() has capped every delay, so no row below can overflow a timestamp; a
        # value SQLite cannot bind is refused in _on_held, like any other call's.
        split = split_batch(changes)
        groups: list[tuple[str, Sequence[int], list[tuple[Any, ...]]]] = []
        if split.plain is not None:
            picked = outcomes if not split.rest else [outcomes[i] for i in split.picked]
            groups.append((_uniform_finish_sql(split.plain), split.picked, _fenced(picked, split.plain, stamp)))
        if split.rest:
            rows = [_finish_params(outcomes[i], changes[i], now, stamp) for i in split.rest]
            groups.append((_FINISH, split.rest, rows))

        def write(conn: sqlite3.Connection) -> list[int]:
            _begin_immediate(conn, self.timeouts.call_s)
            if all(conn.executemany(statement, rows).rowcount == len(rows) for statement, _, rows in groups):
                written = [i for _, indices, _ in groups for i in indices]
            else:
                conn.rollback()
                _begin_immediate(conn, self.timeouts.call_s)
                written = [
                    i for statement, indices, rows in groups
                    for i, row in zip(indices, rows) if conn.execute(statement, row).rowcount == 1
                ]
            entries = []
            for i in written:
                if (event := changes[i].event) is not None:
                    o = outcomes[i]
                    entries.append((o.id, o.attempt, event, o.error, stamp, *owner_host_pid(o.owner), o.duration_s))
            if entries:
                conn.executemany(_INSERT_HISTORY, entries)
            self._settle(conn.execute, [outcomes[i].id for i in written])
            conn.execute("COMMIT")
            return [outcomes[i].id for i in written]

        written = set(self._on_held("finish", write))
        return [o.id for o in outcomes if o.id not in written]

    def extend_leases(self, fences: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        if not fences:
            return []
        until = _stamp(self.now() + dt.timedelta(seconds=lease_s))

        def extend(conn: sqlite3.Connection) -> list[int]:
            _begin_immediate(conn, self.timeouts.call_s)
            lost = [f[0] for f in fences if conn.execute(_EXTEND, (until, *f)).rowcount != 1]
            conn.execute("COMMIT")
            return lost

        return self._on_held("extend_leases", extend)


def _begin_immediate(conn: sqlite3.Connection, wait_s: float) -> None:
    """Take the write lock for a hot-path transaction, trying again every 0.2 ms.

    SQLite's own busy handler sleeps 1, 2, 5, 10, ... 100 ms between tries, so
    under steady contention a waiting process backs off further and further while
    the others keep taking the lock: a claimer starved for a whole second among
    four, and a worker waiting out a 2 ms flush slept 3 ms or more. The held
    connection therefore has no busy timeout (``_configure_held``) and retries here
    at a fine, constant grain, bounded by the same call timeout.
    """
    _retry_while_locked(
        lambda: conn.execute("BEGIN IMMEDIATE"), pause_s=_LOCK_RETRY_S, max_pause_s=_LOCK_RETRY_S, wait_s=wait_s
    )


def _stamp(value: dt.datetime) -> str:
    """A UTC datetime as SQLAlchemy stores it in SQLite (see schema.Timestamp): fixed width,
    so stamps compare as text in time order."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


# -- the statements: columns from job.NewJob and records.CLAIM_COLUMNS, outcomes from
# transitions.change ------------------------------------------------------------------

# Every NewJob field is its column, written as given, but run_at: a stamp, or now
# (NewJob says None for "now, by the backend's clock"). A new field needs no edit here.
_INSERT_COLUMNS = ("id", *NewJob._fields, "created_at")


def _params_builder() -> Callable[[Sequence[int], Sequence[NewJob], str, Callable[[dt.datetime], str]], list[Any]]:
    """``insert_params(ids, jobs, now, stamp)``: the flat parameters of _insert_sql's rows.

    Written out from NewJob's fields once, at import, as ``collections.namedtuple``
    writes its classes: the loop unpacks each job into locals, which is what a
    hand-written loop does; reading the fields generically (``*job``, then putting
    run_at's stamp in its place) cost half as much again per job, 130 -> 195 ns.
    """
    names = NewJob._fields
    values = ", ".join("now if run_at is None else stamp(run_at)" if name == "run_at" else name for name in names)
    source = (
        "def insert_params(ids, jobs, now, stamp):\n"
        "    params = []\n"
        f"    for job_id, ({', '.join(names)},) in zip(ids, jobs):\n"
        f"        params += (job_id, {values}, now)\n"
        "    return params\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - the text is made of NewJob's field names only
    return namespace["insert_params"]


_insert_params = _params_builder()
_TAKE_WRITE_LOCK = "UPDATE burrow_jobs SET id = id WHERE 0"  # starts a write transaction, changes nothing
# The ids after the largest one handed out: in the table, or before the last delete.
_NEXT_ID = (
    "SELECT max((SELECT coalesce(max(id), 0) FROM burrow_jobs),"
    " coalesce((SELECT max_id FROM burrow_id_floor WHERE name = 'burrow_jobs'), 0)) + 1"
)
_RAISE_ID_FLOOR = (
    "UPDATE burrow_id_floor SET max_id = max(max_id, (SELECT coalesce(max(id), 0) FROM burrow_jobs))"
    " WHERE name = 'burrow_jobs'"
)


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int, unique: bool) -> str:
    """``unique``: some job has a unique key; a row whose key is held is skipped, and the
    ids of the rows inserted come back."""
    values = ", ".join(["(" + ", ".join("?" * len(_INSERT_COLUMNS)) + ")"] * rows)
    statement = f"INSERT INTO burrow_jobs ({', '.join(_INSERT_COLUMNS)}) VALUES {values}"
    return statement + f" ON CONFLICT (task, unique_key) WHERE {UNIQUE_WHERE} DO NOTHING RETURNING id" if unique else statement


_KEY_HOLDER = f"SELECT id FROM burrow_jobs WHERE task = ? AND unique_key = ? AND {UNIQUE_WHERE}"


# Every claim leaves the jobs of paused queues (q.pause_queue); SQLite runs the
# subquery once per statement (it is not correlated) into an ephemeral index.
_NOT_PAUSED = " AND queue NOT IN (SELECT name FROM burrow_queues WHERE paused)"


@functools.cache
def _claim_sql(picks: tuple[int, ...], queue_count: int, exclude: bool) -> str:
    """Mark the jobs the picks select; each pick is given by its task count (its limit
    is a parameter, so the text, and this cache, do not vary with free slots).

    One pick (the usual claim) is the plain ordered scan of the queued index. Several
    (tasks with concurrency limits, each with its own) are joined, and the whole is
    put back in claim order and cut to the claim's limit.
    """
    queue = ""
    if queue_count:
        queue = f" AND queue {'NOT IN' if exclude else 'IN'} ({', '.join('?' * queue_count)})"
    queue += _NOT_PAUSED

    def pick(task_count: int) -> str:
        return (
            f"SELECT id, priority, run_at FROM burrow_jobs WHERE state = 'queued' AND run_at <= ?"
            f" AND task IN ({', '.join('?' * task_count)}){queue} ORDER BY priority DESC, run_at, id LIMIT ?"
        )

    if len(picks) > 1:
        union = " UNION ALL ".join(f"SELECT * FROM ({pick(task_count)})" for task_count in picks)
        chosen = f"SELECT id FROM ({union}) ORDER BY priority DESC, run_at, id LIMIT ?"
    else:
        chosen = f"SELECT id FROM ({pick(picks[0])}) LIMIT ?"
    return f"""
        UPDATE burrow_jobs
        SET state = 'running', attempts = attempts + 1, owner = ?, started_at = ?, lease_expires_at = ?
        WHERE id IN ({chosen})
        RETURNING {", ".join(CLAIM_COLUMNS)}
    """


@functools.cache
def _count_running_sql(task_count: int) -> str:
    return (
        "SELECT task, count(*) FROM burrow_jobs WHERE state = 'running'"
        f" AND task IN ({', '.join('?' * task_count)}) GROUP BY task"
    )


def _fenced(outcomes: Sequence[Outcome], c: Change, stamp: str) -> list[tuple[Any, ...]]:
    """A uniform finish's parameters for each outcome of change ``c``: the stamp if it
    finishes, the result and error, then the fence."""
    head = (stamp,) if c.finishes else ()
    return [(*head, o.result, o.error, o.id, o.owner, o.attempt) for o in outcomes]


def _finish_params(outcome: Outcome, c: Change, now: dt.datetime, stamp: str) -> tuple[Any, ...]:
    """_FINISH's parameters for ``outcome``: its change's values, then its fence."""
    run_at = None if c.delay_s is None else _stamp(now + dt.timedelta(seconds=c.delay_s))
    return (
        c.state, c.give_back, c.snooze, stamp if c.finishes else None, run_at, outcome.result, outcome.error,
        outcome.id, outcome.owner, outcome.attempt, stamp, c.expired_only,
    )


_FENCE = "id = ? AND owner = ? AND attempts = ? AND state = 'running'"
# Every kind in one statement: finished_at and run_at are NULL when the kind does
# not set them (a running job has no finished_at; coalesce keeps run_at).
# A cancelled job never goes back to the queue: queued reads cancelled, finished now.
# (SQLite evaluates every SET expression against the row as it was: state is the old one.)
_FINISH = f"""
UPDATE burrow_jobs
SET state = CASE WHEN ?1 = 'queued' AND cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE ?1 END,
    attempts = attempts - ?2, snoozes = snoozes + ?3,
    finished_at = CASE WHEN ?1 = 'queued' AND cancel_requested_at IS NOT NULL THEN ?11 ELSE ?4 END,
    run_at = coalesce(?5, run_at), result = ?6, last_error = coalesce(?7, last_error),
    owner = NULL, lease_expires_at = NULL
WHERE id = ?8 AND owner = ?9 AND attempts = ?10 AND state = 'running' AND (NOT ?12 OR lease_expires_at < ?11)
"""


@functools.cache
def _uniform_finish_sql(c: Change) -> str:
    """A batch whose outcomes all change their row alike (see transitions.uniform_change)."""
    return f"""
UPDATE burrow_jobs
SET {uniform_assignments(c, "?")}, result = ?, last_error = coalesce(?, last_error), owner = NULL, lease_expires_at = NULL
WHERE {_FENCE}
"""


_EXTEND = f"UPDATE burrow_jobs SET lease_expires_at = ? WHERE {_FENCE}"

# Workflows (SQLiteBackend._settle). The ids come as one JSON array (json_each), so no
# number of them meets SQLite's limit on variables.
_UNLINK_DELETED = """DELETE FROM burrow_deps WHERE child_id IN (SELECT value FROM json_each(?1))"""
# The listing index's own condition spelled out, or SQLite's planner cannot use that
# partial index and scans the table (a probe per finish batch: it must stay a seek).
_ANY_WAITING = "SELECT 1 FROM burrow_jobs WHERE state = 'waiting' AND state NOT IN ('succeeded', 'running') LIMIT 1"
# Every waiting step downstream of a parent that failed, was cancelled or is gone,
# through edges that do not ignore a failure: cancelled, naming the first cause.
_CASCADE_CANCEL = """
WITH RECURSIVE doomed(id, cause) AS (
    SELECT d.child_id,
           CASE WHEN p.state = 'cancelled' AND p.last_error LIKE 'parent job % %' THEN p.last_error
                ELSE 'parent job ' || d.parent_id || ' ' || coalesce(p.state, 'deleted') END
    FROM burrow_deps AS d
    JOIN burrow_jobs AS c ON c.id = d.child_id AND c.state = 'waiting'
    LEFT JOIN burrow_jobs AS p ON p.id = d.parent_id
    WHERE d.parent_id IN (SELECT value FROM json_each(?2)) AND NOT d.ignore_failure
      AND (p.id IS NULL OR p.state IN ('failed', 'cancelled'))
    UNION
    SELECT d.child_id, doomed.cause
    FROM doomed JOIN burrow_deps AS d ON d.parent_id = doomed.id
    JOIN burrow_jobs AS c ON c.id = d.child_id AND c.state = 'waiting'
    WHERE NOT d.ignore_failure
)
UPDATE burrow_jobs SET state = 'cancelled', finished_at = ?1,
    last_error = (SELECT min(cause) FROM doomed WHERE doomed.id = burrow_jobs.id)
WHERE state = 'waiting' AND id IN (SELECT id FROM doomed)
RETURNING id
"""
# Waiting children of the jobs that ended whose parents have all ended as they need:
# queued, due now plus their delay (strftime's milliseconds padded to microseconds).
_RELEASE = """
UPDATE burrow_jobs
SET state = 'queued',
    run_at = max(run_at, (
        SELECT CASE WHEN max(delay_s) > 0
                    THEN strftime('%Y-%m-%d %H:%M:%f', ?1, '+' || max(delay_s) || ' seconds') || '000'
                    ELSE ?2 END
        FROM burrow_deps WHERE child_id = burrow_jobs.id))
WHERE state = 'waiting'
  AND id IN (SELECT child_id FROM burrow_deps WHERE parent_id IN (SELECT value FROM json_each(?3)))
  AND NOT EXISTS (
      SELECT 1 FROM burrow_deps AS d LEFT JOIN burrow_jobs AS p ON p.id = d.parent_id
      WHERE d.child_id = burrow_jobs.id
        AND NOT (coalesce(p.state = 'succeeded', 0)
                 OR (d.ignore_failure AND (p.id IS NULL OR p.state IN ('failed', 'cancelled')))))
"""
_INSERT_HISTORY = (
    "INSERT INTO burrow_job_history (job_id, attempt, event, error, at, host, pid, duration_s)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
