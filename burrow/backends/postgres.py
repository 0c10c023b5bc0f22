"""PostgreSQL: the production backend, shared by many supervisors on many hosts.

Claims lock rows with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never
wait on each other; batched writes pass whole columns as arrays through
``unnest`` so a batch of any size is one statement, one round trip; enqueues
``NOTIFY`` so consumers wait on a socket instead of polling. Time comes from the
server's clock (``now()``) so hosts with skewed clocks agree on leases.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import select
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg

from burrow.backends.base import ClaimedJob, JobState, NewJob, Outcome, OutcomeKind
from burrow.backends.schema import Timestamp, apply_migrations, history, jobs
from burrow.backends.sql import Clock, SQLBackend
from burrow.errors import BackendError

# Any constant works; it only has to be the same in every burrow process.
MIGRATION_LOCK_KEY = 0x62757272  # "burr"
_NOTIFY_PAYLOAD_MAX = 7000  # PostgreSQL refuses payloads of 8000 bytes or more
_IDENTIFIER_MAX = 63  # bytes in a PostgreSQL name, channel names included


def normalize_dsn(dsn: str) -> sa.URL:
    """Accept postgres://, postgresql:// and postgresql+psycopg://; always drive psycopg 3."""
    url = sa.engine.make_url(dsn.replace("postgres://", "postgresql://", 1) if dsn.startswith("postgres://") else dsn)
    if url.get_backend_name() != "postgresql":
        raise BackendError(f"not a PostgreSQL DSN: {url.render_as_string(hide_password=True)}")
    return url.set(drivername="postgresql+psycopg")


def notify_channel(schema: str | None) -> str:
    """The NOTIFY channel of the queue in ``schema``: ``burrow:<schema>``, or a digest of it.

    A channel name is an identifier of at most 63 bytes: ``pg_notify`` refuses a
    longer one (every enqueue would fail) and ``LISTEN`` silently truncates it, so
    long schema names are hashed down. A clash could only cause a spurious
    wake-up, which consumers survive: they look for due jobs before running any.
    """
    channel = f"burrow:{schema or 'public'}"
    if len(channel.encode()) <= _IDENTIFIER_MAX:
        return channel
    return f"burrow:{hashlib.sha256(channel.encode()).hexdigest()[:48]}"


def _notice(tasks: Sequence[str]) -> str:
    """The NOTIFY payload: the tasks that got jobs, or "" ("look for yourselves") if too long."""
    payload = ",".join(tasks)
    return "" if len(payload.encode()) > _NOTIFY_PAYLOAD_MAX else payload


class PostgresBackend(SQLBackend):
    dialect = "postgresql"

    def __init__(self, dsn: str, *, schema: str | None = None, clock: Clock | None = None) -> None:
        self.url = normalize_dsn(dsn)
        engine = sa.create_engine(self.url, hide_parameters=True, pool_size=5, max_overflow=5)
        super().__init__(engine, schema=schema, clock=clock)
        self.channel = notify_channel(schema)
        self._listener: Listener | None = None
        names = {
            "jobs": self._table_name(jobs),
            "history": self._table_name(history),
            "now": "now()" if clock is None else "%(now)s::timestamptz",
            "fenced": _FENCED,
        }
        self._jobs, self._now_sql = names["jobs"], names["now"]
        self._claims: dict[int, str] = {}
        self._finish_sql = _FINISH.format(**names)
        self._succeed_sql = _SUCCEED.format(**names)
        self._enqueue_sql = _ENQUEUE.format(**names)
        self._extend_sql = _EXTEND.format(**names)

    # -- time: the server's clock unless a test injected one ---------------------

    def _now(self) -> sa.ColumnElement[dt.datetime]:
        if self._clock is not None:
            return super()._now()
        return sa.func.now(type_=Timestamp)

    def _at(self, delay_s: float) -> sa.ColumnElement[dt.datetime]:
        if self._clock is not None:
            return super()._at(delay_s)
        return sa.type_coerce(sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, delay_s), Timestamp)

    # -- schema -------------------------------------------------------------------

    def migrate(self) -> None:
        """Apply migrations under a transaction-scoped advisory lock.

        Processes starting together queue on the lock; the first applies each
        migration, the rest find the version already current.
        """

        def migrate(conn: sa.Connection) -> None:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            if self.schema:
                conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
            apply_migrations(conn, self.now())

        self._write("migrate", migrate)

    # -- claim --------------------------------------------------------------------

    def _task_filter(self, tasks: Sequence[str]) -> sa.ColumnElement[bool]:
        # One array parameter: the statement text does not change with the task list.
        return jobs.c.task == sa.any_(sa.bindparam("tasks", list(tasks), type_=pg.ARRAY(sa.String)))

    def claim(self, tasks: Sequence[str], limit: int, owner: str, lease_s: float) -> list[ClaimedJob]:
        """Pick and mark up to ``limit`` jobs in one statement (see :meth:`claim_sql`)."""
        if not tasks or limit <= 0:
            return []
        statement = self.claim_sql(limit)
        params = {"tasks": list(tasks), "owner": owner, "lease_s": float(lease_s), "now": self._clock_now()}

        def claim(conn: psycopg.Connection[Any]) -> list[Any]:
            return conn.execute(statement, params).fetchall()  # unprepared: see _configure_held

        rows = self._on_held("claim", claim)
        rows.sort(key=lambda r: (-r[3], r[6], r[0]))  # RETURNING order is unspecified
        return [ClaimedJob(r[0], r[1], r[2], r[3], r[4], r[5], owner) for r in rows]

    def claim_sql(self, limit: int) -> str:
        """Pick with SKIP LOCKED in a MATERIALIZED CTE, then mark, in one statement.

        The CTE is materialized so the LIMIT applies once: ``WHERE id IN (SELECT
        ... LIMIT n FOR UPDATE SKIP LOCKED)`` may be re-evaluated by the planner
        and lock (and claim) more than n rows. A method of its own so that the
        plan can be inspected (``EXPLAIN``) on exactly the statement claims run.

        The state and the limit are literals in the text, not parameters, and the
        statement is sent unprepared: a generic plan can use the partial index only
        if ``state = 'queued'`` is visible to the planner, and it sizes the join by
        a guess of a tenth of the table for a parameter limit (a hash join over all
        of it: batch-1000 claims fell from about 37,000 to 2,000 jobs/s when the raw
        baseline let psycopg prepare this statement).
        """
        statement = self._claims.get(limit)
        if statement is None:
            statement = self._claims[limit] = _CLAIM.format(jobs=self._jobs, now=self._now_sql, limit=int(limit))
        return statement

    # -- fenced batch writes ------------------------------------------------------

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """All outcomes, and their history rows, in one statement (one round trip).

        Fenced on (id, owner, attempt): rows whose fence fails are simply not
        joined; RETURNING tells which were written, and the rest are reported as
        lost (and leave no history).
        """
        if not outcomes:
            return []
        params = {
            "ids": [o.id for o in outcomes],
            "owners": [o.owner for o in outcomes],
            "attempts": [o.attempt for o in outcomes],
            "kinds": [o.kind.value for o in outcomes],
            "delays": [float(o.retry_in_s) for o in outcomes],  # psycopg refuses a list mixing int and float
            "results": [o.result for o in outcomes],
            "errors": [o.error for o in outcomes],
            "now": self._clock_now(),
            "channel": self.channel,
        }

        # The usual batch is all successes: they need neither the history insert nor
        # the notification, and the plain UPDATE plans in a fraction of the time.
        statement = self._succeed_sql if all(o.kind is OutcomeKind.SUCCEEDED for o in outcomes) else self._finish_sql

        def write(conn: psycopg.Connection[Any]) -> set[int]:
            return {row[0] for row in conn.execute(statement, params) if row[0] is not None}

        written = self._on_held("finish", write)
        return [o.id for o in outcomes if o.id not in written]

    def extend_leases(self, fences: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        """Push out every lease in one statement; fenced like finish."""
        if not fences:
            return []
        params = {
            "ids": [f[0] for f in fences],
            "owners": [f[1] for f in fences],
            "attempts": [f[2] for f in fences],
            "lease_s": float(lease_s),
            "now": self._clock_now(),
        }

        def extend(conn: psycopg.Connection[Any]) -> set[int]:
            return {row[0] for row in conn.execute(self._extend_sql, params)}

        written = self._on_held("extend_leases", extend)
        return [job_id for job_id, _, _ in fences if job_id not in written]

    def _configure_held(self, connection: Any) -> None:
        """Autocommit, and no server-side prepared statements.

        Each hot-path write is one statement, atomic on its own; in a transaction
        psycopg sends BEGIN, the statement, then COMMIT: three round trips where
        one does (one commit either way). psycopg prepares a statement after five
        runs, and after five more the server may switch to a generic plan; for
        these joins against ``unnest`` of a batch that plan scans the table (a
        finish of 1,000 outcomes went from 14 ms to 313 ms at the eleventh run),
        so every statement here is planned with its real values.
        """
        connection.autocommit = True
        connection.prepare_threshold = None

    def _clock_now(self) -> dt.datetime | None:
        """The injected clock's time for ``%(now)s``; None (unused) on the server's clock."""
        return self._clock() if self._clock is not None else None

    # -- notifications ------------------------------------------------------------

    def _notify(self, conn: sa.Connection, tasks: Sequence[str]) -> None:
        """One NOTIFY per statement, delivered at commit (so never for a rolled-back enqueue)."""
        conn.execute(sa.select(sa.func.pg_notify(self.channel, _notice(tasks))))

    def _insert_held(self, connection: Any, new_jobs: Sequence[NewJob]) -> list[int]:
        """The jobs and their NOTIFY in one autocommit statement: one round trip, one commit."""
        params = {
            "tasks": [j.task for j in new_jobs],
            "priorities": [j.priority for j in new_jobs],
            "payloads": [j.payload for j in new_jobs],
            "max_retries": [j.max_retries for j in new_jobs],
            "run_ats": [j.run_at for j in new_jobs],
            "now": self._clock_now(),
            "channel": self.channel,
            "notice": _notice(sorted({j.task for j in new_jobs})),
        }
        ids = [row[0] for row in connection.execute(self._enqueue_sql, params) if row[0] is not None]
        ids.sort()  # ids are drawn in the ORDER BY ordinality, so ascending is new_jobs order
        return ids

    def listener(self) -> Listener:
        """A LISTEN connection whose socket a selector can watch (one per process)."""
        if self._listener is None or self._listener.closed:
            self._listener = Listener(self.url, self.channel)
        return self._listener

    def wait_for_jobs(self, timeout_s: float, tasks: Sequence[str] = ()) -> bool:
        """Sleep on the LISTEN socket until a notification or the timeout.

        LISTEN is set up before the check for due jobs, so a job enqueued between
        the check and the wait still wakes us. A listener the server dropped while
        we were not waiting is replaced (the check covers what it missed); one
        lost during the wait ends the wait early, as a notification would, since
        jobs may have arrived unseen: the caller's next claim reconnects.
        """
        try:
            listener = self.listener()
            listener.poll()  # drop old news: only what arrives from now on counts
        except BackendError:
            listener = self.listener()
        if tasks and self.has_due(tasks):
            return True
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([listener], [], [], remaining)
            if ready:
                try:
                    woken = listener.poll()
                except BackendError:
                    return True
                if not tasks or any(not p or set(p.split(",")) & set(tasks) for p in woken):
                    return True
        return False

    def after_fork(self) -> None:
        super().after_fork()
        self._listener = None  # the parent's socket stays the parent's

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        super().close()


class Listener:
    """A dedicated autocommit psycopg connection in LISTEN; its socket is select()able."""

    def __init__(self, url: sa.URL, channel: str) -> None:
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True)
            # LISTEN takes an identifier, not a parameter; psycopg quotes it.
            self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            raise BackendError(f"postgresql: LISTEN failed: {str(exc).strip().splitlines()[0]}") from exc
        self._fileno = self._conn.fileno()

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def fileno(self) -> int:
        """The socket's number, remembered: a selector must still be able to unregister
        a listener whose connection was lost, and psycopg raises for a lost one."""
        return self._fileno

    def poll(self) -> list[str]:
        """Payloads received so far, without blocking; [] if none."""
        try:
            return [n.payload for n in self._conn.notifies(timeout=0)]
        except psycopg.Error as exc:
            self.close()
            raise BackendError(f"postgresql: LISTEN connection lost: {str(exc).strip().splitlines()[0]}") from exc

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()


# Hot-path statements: {jobs} and {history} are the quoted table names in the
# backend's schema; {now} is now() (the server's clock) or a test's clock.
_FENCED = "j.id = v.id AND j.owner = v.owner AND j.attempts = v.attempt AND j.state = 'running'"

_CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT id FROM {jobs}
    WHERE state = 'queued' AND run_at <= {now} AND task = ANY(%(tasks)s::varchar[])
    ORDER BY priority DESC, run_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
)
UPDATE {jobs} AS j
SET state = 'running', attempts = j.attempts + 1, owner = %(owner)s, started_at = {now},
    lease_expires_at = {now} + make_interval(secs => %(lease_s)s)
FROM picked WHERE j.id = picked.id
RETURNING j.id, j.task, j.payload, j.priority, j.attempts, j.max_retries, j.run_at
"""

# The history insert reads the UPDATE's RETURNING rows, so only attempts that were
# really written leave history; its events are those of sql.history_entry (retried,
# failed, released with a reason), which the SQLite backend uses. Jobs back in the
# queue and due now wake idle consumers, as an enqueue does (an empty payload: "look
# for yourselves"), or they would sleep until their idle poll; a later retry wakes
# nobody. The notification goes out at the statement's commit, in the same round trip.
_FINISH = """
WITH written AS (
    UPDATE {jobs} AS j
    SET state = CASE v.kind WHEN 'succeeded' THEN 'succeeded' WHEN 'failed' THEN 'failed' ELSE 'queued' END,
        attempts = CASE WHEN v.kind = 'released' THEN j.attempts - 1 ELSE j.attempts END,
        finished_at = CASE WHEN v.kind IN ('succeeded', 'failed') THEN {now} END,
        run_at = CASE WHEN v.kind = 'retry' THEN {now} + make_interval(secs => v.delay_s) ELSE j.run_at END,
        result = v.result,
        last_error = coalesce(v.error, j.last_error),
        owner = NULL,
        lease_expires_at = NULL
    FROM unnest(%(ids)s::bigint[], %(owners)s::text[], %(attempts)s::int[], %(kinds)s::text[],
                %(delays)s::float8[], %(results)s::bytea[], %(errors)s::text[])
         AS v(id, owner, attempt, kind, delay_s, result, error)
    WHERE {fenced}
    RETURNING j.id, v.attempt, v.kind, v.delay_s, v.error
), logged AS (
    INSERT INTO {history} (job_id, attempt, event, error, at)
    SELECT id, attempt, CASE kind WHEN 'retry' THEN 'retried' WHEN 'released' THEN 'released' ELSE 'failed' END,
           error, {now}
    FROM written
    WHERE kind IN ('retry', 'failed') OR (kind = 'released' AND error IS NOT NULL)
), notified AS (
    SELECT pg_notify(%(channel)s, '') FROM written
    WHERE kind = 'released' OR (kind = 'retry' AND delay_s <= 0)
    LIMIT 1
)
SELECT id FROM written UNION ALL SELECT NULL FROM notified
"""

# Only successes: the same writes as _FINISH makes for them.
_SUCCEED = """
UPDATE {jobs} AS j
SET state = 'succeeded', finished_at = {now}, result = v.result, owner = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::bigint[], %(owners)s::text[], %(attempts)s::int[], %(results)s::bytea[])
     AS v(id, owner, attempt, result)
WHERE {fenced}
RETURNING j.id
"""

_ENQUEUE = """
WITH inserted AS (
    INSERT INTO {jobs} (task, priority, state, payload, attempts, max_retries, run_at, created_at)
    SELECT v.task, v.priority, 'queued', v.payload, 0, v.max_retries, coalesce(v.run_at, {now}), {now}
    FROM unnest(%(tasks)s::varchar[], %(priorities)s::int[], %(payloads)s::bytea[], %(max_retries)s::int[],
                %(run_ats)s::timestamptz[]) WITH ORDINALITY AS v(task, priority, payload, max_retries, run_at, n)
    ORDER BY v.n
    RETURNING id
), notified AS (
    SELECT pg_notify(%(channel)s, %(notice)s)
)
SELECT id FROM inserted UNION ALL SELECT NULL FROM notified
"""

_EXTEND = """
UPDATE {jobs} AS j
SET lease_expires_at = {now} + make_interval(secs => %(lease_s)s)
FROM unnest(%(ids)s::bigint[], %(owners)s::text[], %(attempts)s::int[]) AS v(id, owner, attempt)
WHERE {fenced}
RETURNING j.id
"""
