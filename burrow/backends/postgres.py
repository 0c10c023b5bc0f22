"""PostgreSQL: the production backend, shared by many supervisors on many hosts.

Claims lock rows with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never
wait on each other; batched writes pass whole columns as arrays through
``unnest`` so a batch of any size is one statement with a fixed text (which
psycopg prepares server-side after a few runs); enqueues ``NOTIFY`` so consumers
wait on a socket instead of polling. Time comes from the server's clock (``now()``)
so hosts with skewed clocks agree on leases.
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

from burrow.backends.base import ClaimedJob, JobState, Outcome, OutcomeKind
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


class PostgresBackend(SQLBackend):
    dialect = "postgresql"

    def __init__(self, dsn: str, *, schema: str | None = None, clock: Clock | None = None) -> None:
        self.url = normalize_dsn(dsn)
        engine = sa.create_engine(self.url, hide_parameters=True, pool_size=5, max_overflow=5)
        super().__init__(engine, schema=schema, clock=clock)
        self.channel = notify_channel(schema)
        self._listener: Listener | None = None

    # -- time: the server's clock unless a test injected one ---------------------

    def _now(self) -> sa.ColumnElement[dt.datetime]:
        if self._clock is not None:
            return super()._now()
        return sa.func.now(type_=Timestamp)

    def _at(self, delay_s: float) -> sa.ColumnElement[dt.datetime]:
        if self._clock is not None:
            return super()._at(delay_s)
        return sa.type_coerce(sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, delay_s), Timestamp)

    def _plus_seconds(self, seconds: sa.ColumnElement[Any]) -> sa.ColumnElement[dt.datetime]:
        base = super()._now() if self._clock is not None else sa.func.now()
        return sa.type_coerce(base + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds), Timestamp)

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
        """Pick and mark up to ``limit`` jobs in one statement (see :meth:`claim_statement`)."""
        if not tasks or limit <= 0:
            return []
        statement = self.claim_statement(tasks, limit, owner, lease_s)
        rows = self._write("claim", lambda c: c.execute(statement).all())
        claimed = [ClaimedJob(r.id, r.task, r.payload, r.priority, r.attempts, r.max_retries, r.run_at, owner) for r in rows]
        claimed.sort(key=lambda j: (-j.priority, j.run_at, j.id))  # RETURNING order is unspecified
        return claimed

    def claim_statement(self, tasks: Sequence[str], limit: int, owner: str, lease_s: float) -> sa.Update:
        """Pick with SKIP LOCKED in a MATERIALIZED CTE, then mark, in one statement.

        The CTE is materialized so the LIMIT applies once: ``WHERE id IN (SELECT
        ... LIMIT n FOR UPDATE SKIP LOCKED)`` may be re-evaluated by the planner
        and lock (and claim) more than n rows. A method of its own so that the
        plan can be inspected (``EXPLAIN``) on exactly the statement claims run.

        The state and the limit are literals in the text, not parameters: psycopg
        prepares a statement after a few runs, and the server may then reuse a
        generic plan, which can use the partial index only if ``state = 'queued'``
        is visible to the planner, and which sizes the join by the limit (a
        parameter's guess is a tenth of the table: a hash join over all of it).
        """
        now = self._now()
        picked = (
            sa.select(jobs.c.id)
            .where(
                jobs.c.state == sa.literal(JobState.QUEUED.value, literal_execute=True),
                jobs.c.run_at <= now,
                self._task_filter(tasks),
            )
            .order_by(jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)
            .limit(sa.literal(limit, sa.Integer, literal_execute=True))
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        return (
            sa.update(jobs)
            .where(jobs.c.id == picked.c.id)
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
            "b_ids": [o.id for o in outcomes],
            "b_owners": [o.owner for o in outcomes],
            "b_attempts": [o.attempt for o in outcomes],
            "b_kinds": [o.kind.value for o in outcomes],
            "b_delays": [float(o.retry_in_s) for o in outcomes],  # psycopg refuses a list mixing int and float
            "b_results": [o.result for o in outcomes],
            "b_errors": [o.error for o in outcomes],
        }
        statement = self._finish_statement()

        def write(conn: sa.Connection) -> list[int]:
            written = set(conn.execute(statement, params).scalars())
            return [o.id for o in outcomes if o.id not in written]

        return self._write("finish", write)

    def _finish_statement(self) -> sa.Select[tuple[int]]:
        """``WITH written AS (UPDATE ... RETURNING), logged AS (INSERT INTO history
        SELECT ... FROM written) SELECT id FROM written``.

        The history insert reads the UPDATE's RETURNING rows, so only attempts
        that were really written leave history; its events are those of
        ``sql.history_entry`` (retried, failed, released with a reason), which the
        SQLite backend uses.
        """
        v = _unnest(
            ("b_ids", "id", sa.BigInteger),
            ("b_owners", "owner", sa.String),
            ("b_attempts", "attempt", sa.Integer),
            ("b_kinds", "kind", sa.String),
            ("b_delays", "delay_s", sa.Float),
            ("b_results", "result", sa.LargeBinary),
            ("b_errors", "error", sa.Text),
        )
        now = self._now()
        kind = v.c.kind
        written = (
            sa.update(jobs)
            .where(_fenced(v))
            .values(
                state=sa.case(
                    (kind == OutcomeKind.SUCCEEDED.value, JobState.SUCCEEDED.value),
                    (kind == OutcomeKind.FAILED.value, JobState.FAILED.value),
                    else_=JobState.QUEUED.value,
                ),
                attempts=sa.case((kind == OutcomeKind.RELEASED.value, jobs.c.attempts - 1), else_=jobs.c.attempts),
                finished_at=sa.case(
                    (kind.in_([OutcomeKind.SUCCEEDED.value, OutcomeKind.FAILED.value]), now), else_=None
                ),
                run_at=sa.case((kind == OutcomeKind.RETRY.value, self._plus_seconds(v.c.delay_s)), else_=jobs.c.run_at),
                result=v.c.result,
                last_error=sa.func.coalesce(v.c.error, jobs.c.last_error),
                owner=None,
                lease_expires_at=None,
            )
            .returning(jobs.c.id, v.c.attempt, v.c.kind, v.c.error)
            .cte("written")
        )
        logged = (
            sa.insert(history)
            .from_select(
                ["job_id", "attempt", "event", "error", "at"],
                sa.select(
                    written.c.id,
                    written.c.attempt,
                    sa.case(
                        (written.c.kind == OutcomeKind.RETRY.value, "retried"),
                        (written.c.kind == OutcomeKind.RELEASED.value, "released"),
                        else_="failed",
                    ),
                    written.c.error,
                    now,
                ).where(
                    sa.or_(
                        written.c.kind.in_([OutcomeKind.RETRY.value, OutcomeKind.FAILED.value]),
                        sa.and_(written.c.kind == OutcomeKind.RELEASED.value, written.c.error.is_not(None)),
                    )
                ),
            )
            .cte("logged")
        )
        return sa.select(written.c.id).add_cte(logged)

    def extend_leases(self, fences: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        """Push out every lease in one statement; fenced like finish."""
        if not fences:
            return []
        v = _unnest(
            ("b_ids", "id", sa.BigInteger), ("b_owners", "owner", sa.String), ("b_attempts", "attempt", sa.Integer)
        )
        statement = sa.update(jobs).where(_fenced(v)).values(lease_expires_at=self._at(lease_s)).returning(jobs.c.id)
        params = {
            "b_ids": [f[0] for f in fences],
            "b_owners": [f[1] for f in fences],
            "b_attempts": [f[2] for f in fences],
        }
        written = set(self._write("extend_leases", lambda c: c.execute(statement, params).scalars().all()))
        return [job_id for job_id, _, _ in fences if job_id not in written]

    # -- notifications ------------------------------------------------------------

    def _notify(self, conn: sa.Connection, tasks: Sequence[str]) -> None:
        """One NOTIFY per statement, delivered at commit (so never for a rolled-back enqueue)."""
        payload = ",".join(tasks)
        if len(payload.encode()) > _NOTIFY_PAYLOAD_MAX:
            payload = ""  # "something arrived": listeners check for themselves
        conn.execute(sa.select(sa.func.pg_notify(self.channel, payload)))

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


def _unnest(*columns: tuple[str, str, Any]) -> Any:
    """``unnest(:a, :b, ...) AS v(x, y, ...)``: a batch as one array per column.

    Parameter names carry a ``b_`` prefix: in an UPDATE, SQLAlchemy reserves
    bind names equal to a column name (``attempts``) for the SET clause and
    refuses to compile the statement.
    """
    function = sa.func.unnest(*(sa.bindparam(param, type_=pg.ARRAY(type_)) for param, _, type_ in columns))
    return function.table_valued(*(sa.column(name, type_) for _, name, type_ in columns), name="v").render_derived()


def _fenced(v: Any) -> sa.ColumnElement[bool]:
    return sa.and_(
        jobs.c.id == v.c.id,
        jobs.c.owner == v.c.owner,
        jobs.c.attempts == v.c.attempt,
        jobs.c.state == JobState.RUNNING.value,
    )
