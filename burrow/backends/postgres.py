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
import re
import select
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
import structlog
from psycopg import sql
from sqlalchemy.dialects import postgresql as pg

from burrow.backends.records import (
    ALL_QUEUES, CLAIM_COLUMNS, ClaimRequest, Outcome, QueueFilter, StatisticsRefresh, owner_host_pid
)
from burrow.job import NewJob
from burrow.backends import postgres_arrays as arrays
from burrow.backends.deadline import CUSTOM_PLANS, DEFAULT_TIMEOUTS, Timeouts
from burrow.backends.migrations import apply_migrations
from burrow.backends.schema import UNIQUE_WHERE, Timestamp, history, jobs, queues
from burrow.backends.sql.backend import SQLBackend
from burrow.backends.sql.connection import Clock
from burrow.backends.transitions import Change, change, split_batch, uniform_assignments
from burrow.errors import BackendError

log = structlog.get_logger("burrow")

# Any constant works; it only has to be the same in every burrow process.
MIGRATION_LOCK_KEY = 0x62757272  # "burr"
_NOTIFY_PAYLOAD_MAX = 7000  # PostgreSQL refuses payloads of 8000 bytes or more
_IDENTIFIER_MAX = 63  # bytes in a PostgreSQL name, channel names included
_UNIQUE_ATTEMPTS = 5  # inserts of a job whose unique key's holder keeps finishing meanwhile


def normalize_dsn(dsn: str) -> sa.URL:
    """Accept postgres://, postgresql:// and postgresql+psycopg://; always drive psycopg 3."""
    url = sa.engine.make_url(dsn.replace("postgres://", "postgresql://", 1) if dsn.startswith("postgres://") else dsn)
    if url.get_backend_name() != "postgresql":
        raise BackendError(f"not a PostgreSQL DSN: {url.render_as_string(hide_password=True)}")
    return url.set(drivername="postgresql+psycopg")


def notify_channel(schema: str | None, prefix: str = "burrow") -> str:
    """The NOTIFY channel of the queue in ``schema``: ``burrow:<schema>``, or a digest of it.

    A channel name is an identifier of at most 63 bytes: ``pg_notify`` refuses a
    longer one (every enqueue would fail) and ``LISTEN`` silently truncates it, so
    long schema names are hashed down. A clash could only cause a spurious
    wake-up, which consumers survive: they look for due jobs before running any.
    """
    channel = f"{prefix}:{schema or 'public'}"
    if len(channel.encode()) <= _IDENTIFIER_MAX:
        return channel
    return f"{prefix}:{hashlib.sha256(channel.encode()).hexdigest()[:48]}"


def done_channel(schema: str | None) -> str:
    """The channel that finishes notify with the ids of the jobs they ended: what an
    async client's ``await_result`` listens on (docs/architecture.md, "How a job flows")."""
    return notify_channel(schema, "burrow_done")


def done_notice(ids: Sequence[int]) -> str:
    """A finish's notification payload: its jobs' ids, or "" ("look for yourselves") if too long."""
    payload = ",".join(map(str, ids))
    return "" if len(payload) > _NOTIFY_PAYLOAD_MAX else payload


def _notice(tasks: Sequence[str]) -> str:
    """The NOTIFY payload: the tasks that got jobs, or "" ("look for yourselves") if too long."""
    payload = ",".join(tasks)
    return "" if len(payload.encode()) > _NOTIFY_PAYLOAD_MAX else payload


class PostgresBackend(SQLBackend):
    dialect = "postgresql"

    watched = True  # calls run under the deadline watchdog (see deadline.py)

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        clock: Clock | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        pooled: bool = False,
        listen_dsn: str | None = None,
    ) -> None:
        self.url = normalize_dsn(dsn)
        # A pooler in transaction mode (PgBouncer) between us and the server: nothing
        # may rest on the session (README, "PgBouncer"). Found out by ourselves when
        # the pooler refuses the options startup parameter (see _connect).
        self.pooled = pooled
        self.listen_url = None if listen_dsn is None else normalize_dsn(listen_dsn)
        engine = sa.create_engine(
            self.url,
            hide_parameters=True,
            pool_size=5,
            max_overflow=5,
            pool_timeout=timeouts.call_s,
            # Nothing prepared, on any connection (see _configure_held): a pooled one
            # becomes the held one, and the migrations run one INSERT six times. Nor
            # may any be through a pooler in transaction mode: the next transaction
            # may run on a server connection that never saw the PREPARE.
            connect_args={**timeouts.postgres_connect_args(pooled=pooled), "prepare_threshold": None},
        )
        sa.event.listen(engine, "do_connect", self._connect)
        super().__init__(engine, schema=schema, clock=clock, timeouts=timeouts)
        self.channel = notify_channel(schema)
        self.done_channel = done_channel(schema)
        self._listener: Listener | None = None
        # The hot-path statements are psycopg %-format text: a "%" in a quoted
        # schema name must be doubled, or it reads as a placeholder.
        names = {
            "jobs": self._qualified(jobs.name).replace("%", "%%"),
            "queues": self._qualified(queues.name).replace("%", "%%"),
            "history": self._qualified(history.name).replace("%", "%%"),
            "id_seq": _quote_literal(self._qualified(f"{jobs.name}_id_seq")).replace("%", "%%"),
            "now": "now()" if clock is None else "%(now)s::timestamptz",
            "fenced": _FENCED,
            "returning": ", ".join(f"j.{column}" for column in CLAIM_COLUMNS),
            "set": _FINISH_SET,
        }
        self._jobs, self._now_sql, self._returning = names["jobs"], names["now"], names["returning"]
        self._paused = _NOT_PAUSED.format(queues=names["queues"])
        self._claims: dict[tuple[str, int, bool | None], str] = {}
        # Advisory locks are per database: the key is the schema's, so two queues on
        # one server do not share their limits' locks.
        self._lock_key = int.from_bytes(hashlib.sha256(self.channel.encode()).digest()[:4], "big", signed=True)
        self._finish_sql = _FINISH.format(**names)
        # {uniform_set} stays a placeholder in both, filled per change (_with_change).
        self._finish_uniform = _FINISH_UNIFORM.format(uniform=_uniform_update(names["jobs"], ""))
        self._finish_split = _FINISH_SPLIT.format(**names, plain=_uniform_update(names["jobs"], "p_"))
        self._changed_finishes: dict[tuple[bool, Change], str] = {}
        self._enqueue_sql = {
            False: _ENQUEUE.format(**names, on_conflict=""),
            True: _ENQUEUE.format(**names, on_conflict=_ON_UNIQUE_CONFLICT),
        }
        self._key_holders_sql = _KEY_HOLDERS.format(**names)
        self._extend_sql = _EXTEND.format(**names)
        self._cancel_requests_sql = _CANCEL_REQUESTS.format(**names)
        self._analyze_sql = _ANALYZE_JOBS.format(**names)

    def _connect(self, dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        """Every new connection of the engine: without the ``options`` startup parameter
        (the server-side statement timeout) when the DSN is a pooler, and the pooler found
        out when it refuses that parameter, as PgBouncer does unless told to ignore it."""
        if self.pooled:
            cparams.pop("options", None)
        try:
            return dialect.connect(*cargs, **cparams)
        except psycopg.OperationalError as exc:
            if "options" not in cparams or "unsupported startup parameter" not in str(exc):
                raise
        if not self.pooled:
            self.pooled = True
            log.warning(
                "pooler_found",
                detail="the server refused the options startup parameter, as PgBouncer does: treating the DSN as"
                " a pooler in transaction mode; set [database] pooled = true to say so",
            )
        cparams.pop("options", None)
        return dialect.connect(*cargs, **cparams)

    @property
    def listens(self) -> bool:
        """Whether this backend has a LISTEN connection: always on a direct DSN; through a
        pooler only on ``listen_dsn`` (a pooler hands LISTEN's session to others)."""
        return self.listen_url is not None or not self.pooled

    def listen_conninfo(self) -> str:
        """What LISTEN connects to: ``listen_dsn``, else the DSN (only when :attr:`listens`)."""
        url = self.listen_url or self.url
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _qualified(self, name: str) -> str:
        """A table's or sequence's name as our SQL text spells it: quoted, in our schema."""
        return f"{_quote_ident(self.schema)}.{_quote_ident(name)}" if self.schema else _quote_ident(name)

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
            conn.execute(sa.select(sa.func.set_config("statement_timeout", "0", True)))  # indexes take their time
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            if self.schema:
                conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
                # The frozen migrations name tables without a schema.
                conn.execute(sa.select(sa.func.set_config("search_path", _quote_ident(self.schema), True)))
            apply_migrations(conn, self.now())

        self._write("migrate", migrate, bounded=False)

    def refresh_statistics(self) -> StatisticsRefresh | None:
        """ANALYZE the jobs table when the planner's statistics of it count a tenth of
        its live rows or fewer (and it holds ANALYZE_MIN_ROWS at least).

        Statistics of a table never analyzed, or analyzed while nearly empty, say the
        queue is empty, and for a claim's ``task = ANY(...)`` the planner then takes
        the task index and sorts every queued job of those tasks to find the first
        few hundred: each claim costs the whole backlog. A burst of 100,000 jobs into
        a new table drained at 0.55 of the rate of the same burst analyzed, 400,000
        at 0.22 (benchmarks/README.md, "fifth pass"), until autovacuum got to it, up
        to a minute later. Analyzed, the claim walks the queued index in claim order.
        The live rows are the statistics views' count of committed rows, so an
        ANALYZE that ran while a burst was still being inserted (it counts none of
        it) is followed by another once the burst is in.
        """

        def refresh(conn: sa.Connection) -> StatisticsRefresh | None:
            def counts() -> tuple[int, int, bool]:
                in_statistics, live, owner = conn.exec_driver_sql(_JOBS_ROWS, {"jobs": self._qualified(jobs.name)}).one()
                return max(int(in_statistics), 0), int(live), bool(owner)

            in_statistics, live, owner = counts()
            if not _statistics_behind(in_statistics, live):
                return None
            if not owner:  # the server would skip it with a warning in its log
                return StatisticsRefresh(in_statistics, live, analyzed=False, may_analyze=False)
            conn.exec_driver_sql(self._analyze_sql, {})
            after, live_after, _ = counts()
            return StatisticsRefresh(in_statistics, live, analyzed=not _statistics_behind(after, live_after))

        return self._write("refresh_statistics", refresh)

    # -- claim --------------------------------------------------------------------

    def _task_filter(self, tasks: Sequence[str]) -> sa.ColumnElement[bool]:
        # One array parameter: the statement text does not change with the task list.
        return jobs.c.task == sa.any_(sa.bindparam("tasks", list(tasks), type_=pg.ARRAY(sa.String)))

    def _claim(self, request: ClaimRequest, limited: Mapping[str, int]) -> Callable[[Any], list[Any]]:
        """Pick and mark in one statement (see :meth:`claim_sql`).

        With limited tasks, a short transaction instead: try-locks (a transaction-scoped
        advisory lock per limited task; a task another claimer holds is left for this
        round, never waited for), then, under a snapshot taken after the locks, the
        claim counting each locked task's running jobs (:meth:`limited_claim_sql`).
        Only claims start jobs, and two claims of a limited task never overlap, so the
        count cannot be overtaken: the limit holds across every supervisor.
        """
        queues, limit = request.queues, request.limit
        params: dict[str, Any] = {
            "tasks": [task for task in request.tasks if task not in limited],
            "queues": list(queues.names),
            "owner": request.owner,
            "lease_s": float(request.lease_s),
            "now": self._clock_now(),
        }
        if not limited:
            statement = self.claim_sql(limit, queues)

            def claim(conn: psycopg.Connection[Any]) -> list[Any]:
                return conn.execute(statement, params).fetchall()

        else:
            statement = self.limited_claim_sql(limit, queues)

            def claim(conn: psycopg.Connection[Any]) -> list[Any]:
                with conn.transaction():
                    names = sorted(limited)
                    row = conn.execute(_TRY_LOCKS, {"tasks": names, "key": self._lock_key}).fetchone()
                    held = [task for task in names if task in ((row and row[0]) or ())]
                    params.update(limited=held, maxes=[limited[task] for task in held])
                    return conn.execute(statement, params).fetchall()

        return claim

    def _contains(self, text: str) -> sa.ColumnElement[bool]:
        """The payload as encode(payload, 'escape'): never an error, whatever its bytes
        (convert_from would fail on a raw-bytes task's); bytes of 128 and up read as
        \\ooo there, so the needle is escaped the same way."""
        needle = sa.func.lower(sa.literal(_escape_encoded(text), sa.Text))
        payload = sa.func.lower(sa.func.encode(jobs.c.payload, "escape"))
        error = sa.func.lower(jobs.c.last_error)
        plain = sa.func.lower(sa.literal(text, sa.Text))
        return sa.or_(sa.func.strpos(payload, needle) > 0, sa.func.strpos(error, plain) > 0)

    def claim_sql(self, limit: int, queues: QueueFilter = ALL_QUEUES) -> str:
        """Pick with SKIP LOCKED in a MATERIALIZED CTE, then mark, in one statement.

        The CTE is materialized so the LIMIT applies once: ``WHERE id IN (SELECT
        ... LIMIT n FOR UPDATE SKIP LOCKED)`` may be re-evaluated by the planner
        and lock (and claim) more than n rows. A method of its own so that the
        plan can be inspected (``EXPLAIN``) on exactly the statement claims run.

        The state and the limit are literals in the text, not parameters, and no
        run is planned generically (see _configure_held): a generic plan can use
        the partial index only if ``state = 'queued'`` is visible to the planner,
        and it sizes the join by a guess of a tenth of the table for a parameter
        limit (a hash join over all of it: batch-1000 claims fell from about 37,000
        to 2,000 jobs/s when the raw baseline let psycopg prepare this statement
        under the server's default plan cache mode).
        """
        return self._claim_text(_CLAIM, limit, queues)

    def limited_claim_sql(self, limit: int, queues: QueueFilter = ALL_QUEUES) -> str:
        """The claim with a pick of its own for each limited task, of at most its free
        slots, beside the plain pick of the other tasks; the picks are put back in
        claim order and cut to ``limit``. Each limited pick is an ordered range of
        burrow_jobs_task_queued_idx, so a backlog of a throttled task costs nothing."""
        return self._claim_text(_LIMITED_CLAIM, limit, queues)

    def _claim_text(self, template: str, limit: int, queues: QueueFilter) -> str:
        """``template`` rendered for this schema, limit and queue filter, once each."""
        key = (template, limit, queues.exclude if queues.names else None)
        statement = self._claims.get(key)
        if statement is None:
            statement = self._claims[key] = template.format(
                jobs=self._jobs, now=self._now_sql, limit=int(limit), returning=self._returning,
                queue=_queue_predicate(queues) + self._paused,
            )
        return statement

    # -- fenced batch writes ------------------------------------------------------

    def _finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """All outcomes, and their history rows, in one statement (one round trip).

        What each kind writes comes from ``transitions.change`` as arrays of
        values, so one statement serves every kind. Fenced on (id, owner,
        attempt): rows whose fence fails are simply not joined; RETURNING tells
        which were written, and the rest are reported as lost (and leave no
        history).
        """
        if not outcomes:
            return []
        changes = [change(o) for o in outcomes]
        params: dict[str, Any] = {
            "now": self._clock_now(),
            # Jobs that end wake the clients awaiting them (one notification a statement).
            "done_channel": self.done_channel,
            "done_ids": done_notice([o.id for o in outcomes]),
        }
        split = split_batch(changes)
        if split.plain is not None and not split.rest:
            statement = self._uniform_finish_sql(split.plain)
            params.update(_fenced_arrays(outcomes))
        elif split.plain is not None:
            statement = self._split_finish_sql(split.plain)
            params.update(_fenced_arrays([outcomes[i] for i in split.picked], prefix="p_"))
            params.update(self._general_arrays([outcomes[i] for i in split.rest], [changes[i] for i in split.rest]))
        else:
            statement = self._finish_sql
            params.update(self._general_arrays(outcomes, changes))

        def write(conn: psycopg.Connection[Any]) -> set[int]:
            return {row[0] for row in conn.execute(statement, params).fetchall() if row[0] is not None}

        written = self._on_held("finish", write)
        return [o.id for o in outcomes if o.id not in written]

    def _general_arrays(self, outcomes: Sequence[Outcome], changes: Sequence[Change]) -> dict[str, Any]:
        """The general UPDATE's parameters: each row's change as arrays of its values."""
        hosts_pids = [owner_host_pid(o.owner) for o in outcomes]
        return {
            **_fenced_arrays(outcomes),
            "states": arrays.texts([c.state for c in changes]),
            "give_backs": arrays.ints([c.give_back for c in changes]),
            "snoozes": arrays.ints([c.snooze for c in changes]),
            "finishes": arrays.booleans([c.finishes for c in changes]),
            "delays": arrays.numbers([c.delay_s for c in changes]),
            "events": arrays.texts([c.event for c in changes]),
            "wakes": arrays.booleans([c.wakes for c in changes]),
            "expired_only": arrays.booleans([c.expired_only for c in changes]),
            "durations": arrays.numbers([o.duration_s for o in outcomes]),
            "hosts": arrays.texts([h for h, _ in hosts_pids]),
            "pids": arrays.numbers([p for _, p in hosts_pids]),
            "channel": self.channel,
        }

    def _split_finish_sql(self, plain: Change) -> str:
        """A mixed batch's statement, its ``plain`` rows' change written into the text."""
        return self._with_change(split=True, c=plain)

    def _uniform_finish_sql(self, c: Change) -> str:
        """A batch whose outcomes all change their row alike (see transitions.uniform_change):
        the change written into the text, and one CTE only, for the done notification
        (the mixed statement's CTEs plan in several times its cost)."""
        return self._with_change(split=False, c=c)

    def _with_change(self, *, split: bool, c: Change) -> str:
        """The split or the uniform finish with the uniform UPDATE's change ``c`` written
        in; a few changes occur, so each text is built once."""
        statement = self._changed_finishes.get((split, c))
        if statement is None:
            template = self._finish_split if split else self._finish_uniform
            statement = template.replace("{uniform_set}", uniform_assignments(c, self._now_sql))
            self._changed_finishes[split, c] = statement
        return statement

    def extend_leases(self, fences: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        """Push out every lease in one statement; fenced like finish."""
        if not fences:
            return []
        params = {
            "ids": arrays.ints([f[0] for f in fences]),
            "owners": arrays.texts([f[1] for f in fences]),
            "attempts": arrays.ints([f[2] for f in fences]),
            "lease_s": float(lease_s),
            "now": self._clock_now(),
        }

        def extend(conn: psycopg.Connection[Any]) -> set[int]:
            return {row[0] for row in conn.execute(self._extend_sql, params).fetchall()}

        written = self._on_held("extend_leases", extend)
        return [job_id for job_id, _, _ in fences if job_id not in written]

    def cancel_requests(self, job_ids: Sequence[int]) -> list[int]:
        """Asked every half second with every job the supervisor holds: one fixed text
        on the held connection, not a statement compiled for this many ids."""
        if not job_ids:
            return []
        params = {"ids": arrays.ints(job_ids)}

        def read(conn: psycopg.Connection[Any]) -> list[int]:
            return [row[0] for row in conn.execute(self._cancel_requests_sql, params).fetchall()]

        return self._on_held("cancel_requests", read)

    def _configure_held(self, connection: Any) -> None:
        """Autocommit; prepared statements, each run planned with its own values.

        Each hot-path write is one statement, atomic on its own; in a transaction
        psycopg sends BEGIN, the statement, then COMMIT: three round trips where
        one does (one commit either way).

        psycopg prepares a statement on its sixth run, which saves the server its
        parse and analysis at every run after (a no-op job's claim and finish, in
        one process: 25.0 -> 23.0 us of server CPU; benchmarks/README.md). But
        after five more runs the server may switch a prepared statement to a
        generic plan, and for these joins against ``unnest`` of a batch that plan
        scans the table (a finish of 1,000 outcomes went from 14 ms to 313 ms at
        the eleventh run). So statements are prepared only on a session that shows
        ``plan_cache_mode = force_custom_plan`` (sent in the startup ``options``,
        see Timeouts.postgres_connect_args), where every run is planned with its
        real values, as an unprepared statement is. A pooler in transaction mode
        never shows it (it refuses the startup options, or drops them), and there
        nothing may rest on the session: nothing is prepared through it.
        """
        connection.autocommit = True
        connection.prepare_threshold = None
        if not self.pooled:
            row = connection.execute("SHOW plan_cache_mode").fetchone()
            if row is not None and row[0] == CUSTOM_PLANS:
                connection.prepare_threshold = _PREPARE_AFTER_RUNS

    def _held_is_stale(self, exc: Exception) -> bool:
        """A statement prepared before a migration changed the columns it returns
        (a rolling upgrade: another version migrated the schema): PostgreSQL refuses
        every later run of it, on this session, until the session ends."""
        return getattr(exc, "sqlstate", None) == _FEATURE_NOT_SUPPORTED and "cached plan must not change" in str(exc)

    def _clock_now(self) -> dt.datetime | None:
        """The injected clock's time for ``%(now)s``; None (unused) on the server's clock."""
        return self._clock() if self._clock is not None else None

    # -- notifications ------------------------------------------------------------

    def _notify(self, conn: sa.Connection, tasks: Sequence[str]) -> None:
        """One NOTIFY per statement, delivered at commit (so never for a rolled-back enqueue)."""
        conn.execute(sa.select(sa.func.pg_notify(self.channel, _notice(tasks))))

    def _ended(self, conn: sa.Connection, job_ids: Sequence[int]) -> None:
        """What a finish sends for the jobs it ended, for a job ended elsewhere (a queued cancel)."""
        conn.execute(sa.select(sa.func.pg_notify(self.done_channel, done_notice(job_ids))))

    def _dialect_insert(self, table: sa.Table) -> Any:
        return pg.insert(table)

    def _insert(self, connection: Any, new_jobs: Sequence[NewJob], *, own_transaction: bool) -> list[int]:
        """The jobs and their NOTIFY in one statement, each job's id returned with its position.

        Held connections are in autocommit, so there the statement is its own
        transaction: one round trip, one commit. In a caller's transaction the
        NOTIFY is delivered when (if) that transaction commits. A job skipped for a
        unique key another job holds gets that job's id; if the holder finished
        between the insert and the lookup, the job is inserted again.
        """
        ids: list[int | None] = [None] * len(new_jobs)
        pending = list(range(len(new_jobs)))
        for _ in range(self.unique_attempts):
            batch = [new_jobs[i] for i in pending]
            unique = any(job.unique_key is not None for job in batch)
            params = self.insert_params(batch)
            for position, job_id in connection.execute(self._enqueue_sql[unique], params):
                if position is not None:
                    ids[pending[position - 1]] = job_id
            skipped = [i for i in pending if ids[i] is None]
            if skipped:
                holders = self._key_holders(connection, [new_jobs[i] for i in skipped])
                for i in skipped:
                    ids[i] = holders.get((new_jobs[i].task, new_jobs[i].unique_key))
            pending = [i for i in skipped if ids[i] is None]
            if not pending:
                return [job_id for job_id in ids if job_id is not None]
        raise BackendError(f"postgresql: enqueue failed: unique keys kept changing hands ({len(pending)} jobs)")

    unique_attempts = _UNIQUE_ATTEMPTS

    def insert_params(self, batch: Sequence[NewJob]) -> dict[str, Any]:
        """The parameters of ``_enqueue_sql`` for ``batch`` (the async client's too)."""
        return {
            **{column: [job[i] for job in batch] for i, column in enumerate(NewJob._fields)},
            "now": self._clock_now(),
            "channel": self.channel,
            "notice": _notice(sorted({j.task for j in batch})),
        }

    def key_holder_params(self, skipped: Sequence[NewJob]) -> dict[str, Any]:
        return {"tasks": [j.task for j in skipped], "keys": [j.unique_key for j in skipped]}

    def _key_holders(self, connection: Any, skipped: Sequence[NewJob]) -> dict[tuple[str, str | None], int]:
        """The queued or running job that holds each (task, unique key) of ``skipped``."""
        rows = connection.execute(self._key_holders_sql, self.key_holder_params(skipped))
        return {(task, key): job_id for task, key, job_id in rows}

    def listener(self) -> Listener:
        """A LISTEN connection whose socket a selector can watch (one per process)."""
        if not self.listens:
            raise BackendError("postgresql: no LISTEN through a pooler: set [database] listen_dsn")
        if self._listener is None or self._listener.closed:
            self._listener = Listener(self.listen_conninfo(), self.channel, self.timeouts)
        return self._listener

    def wait_for_jobs(self, timeout_s: float, tasks: Sequence[str] = ()) -> bool:
        """Sleep on the LISTEN socket until a notification or the timeout.

        LISTEN is set up before the check for due jobs, so a job enqueued between
        the check and the wait still wakes us. A listener the server dropped while
        we were not waiting is replaced (the check covers what it missed); one
        lost during the wait ends the wait early, as a notification would, since
        jobs may have arrived unseen: the caller's next claim reconnects. Through
        a pooler without ``listen_dsn``: polls, as on SQLite.
        """
        if not self.listens:
            return super().wait_for_jobs(timeout_s, tasks)
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

    def __init__(self, conninfo: str, channel: str, timeouts: Timeouts) -> None:
        try:
            # Without the options startup parameter (the statement timeout): LISTEN is one
            # statement, and a PgBouncer in session mode, a listen_dsn's usual way in, refuses it.
            self._conn = psycopg.connect(conninfo, autocommit=True, **timeouts.postgres_connect_args(pooled=True))
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


# The held connection prepares a statement on its sixth run (psycopg's default), so a
# claim of a size seldom asked for stays unprepared: its limit is a literal in the text.
_PREPARE_AFTER_RUNS = 5

# The jobs table's rows as its statistics count them (reltuples: at its last ANALYZE
# or VACUUM; -1 before either) and as the statistics views count them now, and
# whether our role may analyze it (it owns the table, directly or through a role
# it belongs to; a superuser belongs to every role).
_JOBS_ROWS = """
SELECT c.reltuples, s.n_live_tup, pg_has_role(c.relowner, 'USAGE')
FROM pg_class AS c JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid = %(jobs)s::regclass
"""
# Another session's ANALYZE (autovacuum's) is under way: that one will do.
_ANALYZE_JOBS = "ANALYZE (SKIP_LOCKED) {jobs}"
# Statistics are refreshed once the table holds this many times the rows they count,
# and at least this many (a claim's sort of fewer queued jobs costs a few milliseconds).
ANALYZE_GROWTH = 10
ANALYZE_MIN_ROWS = 20_000


def _statistics_behind(rows_in_statistics: int, live_rows: int) -> bool:
    return live_rows >= max(ANALYZE_MIN_ROWS, ANALYZE_GROWTH * rows_in_statistics)


_FEATURE_NOT_SUPPORTED = "0A000"  # SQLSTATE of "cached plan must not change result type"

# Hot-path statements: {jobs} and {history} are the quoted table names in the
# backend's schema; {now} is now() (the server's clock) or a test's clock.
#
# The fence finds each row by its key, whatever the statistics say. Written plainly
# (j.state = 'running'), it let the planner walk the partial index of running jobs
# and hash the batch against every entry: planned for the one row statistics taken
# while nothing ran promise, a finish of 500 among 30,000 running took 15 ms, and
# among 6,000 5.8-6.9 against 4.5-4.9 ms by key (benchmarks/README.md, "third
# pass"). So the state test is one no index predicate matches (lower(): the states
# are lower-case by the table's CHECK), and the ids come as an array the planner
# cannot size, which makes the key's index scan the cheapest path on any table.
_FENCED = (
    "j.id = v.id AND j.owner = v.owner AND j.attempts = v.attempt AND lower(j.state) = 'running'"
    " AND j.id = ANY(ARRAY(SELECT unnest(%(ids)s::bigint[])))"
)

# The claims mark their picks through ``id = ANY(ARRAY(...))``, an index scan of the
# key whatever the planner guesses: joined to the picks instead (FROM picked WHERE
# j.id = picked.id), a claim of 400 on a table of 30,000 rows was planned as a hash
# join over a scan of the whole table.
_CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT id FROM {jobs}
    WHERE state = 'queued' AND run_at <= {now} AND task = ANY(%(tasks)s::varchar[]){queue}
    ORDER BY priority DESC, run_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
)
UPDATE {jobs} AS j
SET state = 'running', attempts = j.attempts + 1, owner = %(owner)s, started_at = {now},
    lease_expires_at = {now} + make_interval(secs => %(lease_s)s)
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING {returning}
"""

# The limited tasks whose lock this claim got (pg_try_advisory_xact_lock: never waits).
_TRY_LOCKS = """
SELECT array_agg(task) FROM unnest(%(tasks)s::varchar[]) AS t(task)
WHERE pg_try_advisory_xact_lock(%(key)s, hashtext(task))
"""

_LIMITED_CLAIM = """
WITH running AS MATERIALIZED (
    SELECT task, count(*) AS n FROM {jobs}
    WHERE state = 'running' AND task = ANY(%(limited)s::varchar[])
    GROUP BY task
), caps AS MATERIALIZED (
    SELECT l.task, greatest(l.most - coalesce(r.n, 0), 0) AS free
    FROM unnest(%(limited)s::varchar[], %(maxes)s::int[]) AS l(task, most) LEFT JOIN running r USING (task)
), free_pick AS MATERIALIZED (
    SELECT id, priority, run_at FROM {jobs}
    WHERE state = 'queued' AND run_at <= {now} AND task = ANY(%(tasks)s::varchar[]){queue}
    ORDER BY priority DESC, run_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), limited_pick AS MATERIALIZED (
    SELECT p.id, p.priority, p.run_at FROM caps CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM {jobs}
        WHERE state = 'queued' AND run_at <= {now} AND task = caps.task{queue}
        ORDER BY priority DESC, run_at, id
        LIMIT least(caps.free, {limit})
        FOR UPDATE SKIP LOCKED
    ) AS p
), picked AS (
    SELECT id FROM (SELECT * FROM free_pick UNION ALL SELECT * FROM limited_pick) AS both_picks
    ORDER BY priority DESC, run_at, id
    LIMIT {limit}
)
UPDATE {jobs} AS j
SET state = 'running', attempts = j.attempts + 1, owner = %(owner)s, started_at = {now},
    lease_expires_at = {now} + make_interval(secs => %(lease_s)s)
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING {returning}
"""

# What an outcome writes, for every kind: the values come from transitions.change.
# A cancelled job never goes back to the queue: queued reads cancelled, finished now.
_FINISH_SET = """state = CASE WHEN v.state = 'queued' AND j.cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE v.state END,
    attempts = j.attempts - v.give_back, snoozes = j.snoozes + v.snooze,
    finished_at = CASE WHEN v.finishes OR (v.state = 'queued' AND j.cancel_requested_at IS NOT NULL) THEN {now} END,
    run_at = CASE WHEN v.delay_s IS NULL THEN j.run_at ELSE {now} + make_interval(secs => v.delay_s) END,
    result = v.result, last_error = coalesce(v.error, j.last_error), owner = NULL, lease_expires_at = NULL"""

# The history insert reads the UPDATE's RETURNING rows, so only attempts that were
# really written leave history. Jobs back in the queue and due now wake idle
# consumers, as an enqueue does (an empty payload: "look for yourselves"), or they
# would sleep until their idle poll. The notification goes out at the statement's
# commit, in the same round trip.
_FINISH_CTES = """written AS (
    UPDATE {jobs} AS j
    SET {set}
    FROM unnest(%(ids)s::bigint[], %(owners)s::text[], %(attempts)s::int[], %(states)s::text[],
                %(give_backs)s::int[], %(snoozes)s::int[], %(finishes)s::bool[], %(delays)s::float8[], %(results)s::bytea[],
                %(errors)s::text[], %(events)s::text[], %(wakes)s::bool[], %(expired_only)s::bool[],
                %(hosts)s::text[], %(pids)s::int[], %(durations)s::float8[])
         AS v(id, owner, attempt, state, give_back, snooze, finishes, delay_s, result, error, event, wakes, expired_only,
              host, pid, duration_s)
    WHERE {fenced} AND (NOT v.expired_only OR j.lease_expires_at < {now})
    RETURNING j.id, v.attempt, v.event, v.error, v.wakes, v.host, v.pid, v.duration_s, j.state AS new_state
), logged AS (
    INSERT INTO {history} (job_id, attempt, event, error, at, host, pid, duration_s)
    SELECT id, attempt, event, error, {now}, host, pid, duration_s FROM written WHERE event IS NOT NULL
), notified AS (
    SELECT pg_notify(%(channel)s, '') FROM written WHERE wakes LIMIT 1
)""".replace("{set}", _FINISH_SET)
_ENDED = "new_state IN ('succeeded', 'failed', 'cancelled')"
_FINISH = (
    "WITH "
    + _FINISH_CTES
    + """, done AS (
    SELECT pg_notify(%(done_channel)s, %(done_ids)s) FROM written WHERE {ended} LIMIT 1
)
SELECT id FROM written UNION ALL SELECT NULL FROM notified UNION ALL SELECT NULL FROM done
""".replace("{ended}", _ENDED)
)

# The uniform UPDATE: the rows of the {p}-prefixed arrays all change alike, and the
# change, {uniform_set}, is written into the text (transitions.uniform_assignments).
_UNIFORM_UPDATE = """UPDATE {jobs} AS j
    SET {uniform_set}, result = v.result, last_error = coalesce(v.error, j.last_error), owner = NULL,
        lease_expires_at = NULL
    FROM unnest(%({p}ids)s::bigint[], %({p}owners)s::text[], %({p}attempts)s::int[], %({p}results)s::bytea[],
                %({p}errors)s::text[])
         AS v(id, owner, attempt, result, error)
    WHERE {fenced}
    RETURNING j.id, j.state AS new_state"""


def _uniform_update(jobs: str, prefix: str) -> str:
    """The uniform UPDATE over the arrays named with ``prefix``; {uniform_set} left to fill."""
    fenced = _FENCED.replace("%(ids)s", f"%({prefix}ids)s")
    return _UNIFORM_UPDATE.format(jobs=jobs, p=prefix, fenced=fenced, uniform_set="{uniform_set}")


# A mixed batch whose outcomes mostly change their row alike (successes beside a few
# retries): those rows (the p_ arrays) take the uniform UPDATE, the rest the general
# one, in one statement, one round trip. The general UPDATE cost 14.4-15.0 us a row
# against 11.3 for the uniform one (benchmarks/README.md, "sixth pass"). The two touch
# different rows. {plain} is _uniform_update's text.
_FINISH_SPLIT = (
    """
WITH plain AS (
    {plain}
), """
    + _FINISH_CTES
    + """, done AS (
    SELECT pg_notify(%(done_channel)s, %(done_ids)s)
    FROM (SELECT new_state FROM written UNION ALL SELECT new_state FROM plain) AS ended
    WHERE {ended} LIMIT 1
)
SELECT id FROM written UNION ALL SELECT id FROM plain UNION ALL SELECT NULL FROM notified UNION ALL SELECT NULL FROM done
""".replace("{ended}", _ENDED)
)

# A batch whose outcomes all change their row alike: {uniform} is _uniform_update's
# text. The rows it ended notify the done channel, once. In a CTE of its own: with
# pg_notify in the UPDATE's RETURNING list instead, the finish's new row versions often
# left their pages (tests/backends/test_postgres.py, the page test, failed 3 runs in 7).
_FINISH_UNIFORM = """
WITH written AS (
    {uniform}
), done AS (
    SELECT pg_notify(%(done_channel)s, %(done_ids)s) FROM written WHERE {ended} LIMIT 1
)
SELECT id FROM written UNION ALL SELECT NULL FROM done
""".replace("{ended}", _ENDED)


def _fenced_arrays(outcomes: Sequence[Outcome], prefix: str = "") -> dict[str, str]:
    """What every finish sends of each outcome: its fence, result and error."""
    return {
        f"{prefix}ids": arrays.ints([o.id for o in outcomes]),
        f"{prefix}owners": arrays.texts([o.owner for o in outcomes]),
        f"{prefix}attempts": arrays.ints([o.attempt for o in outcomes]),
        f"{prefix}results": arrays.byteas([o.result for o in outcomes]),
        f"{prefix}errors": arrays.texts([o.error for o in outcomes]),
    }


def _array_cast(name: str) -> str:
    """The array type a NewJob field's values are sent as: its column's type, without
    a length (a cast to varchar(n) would silently cut a value the column refuses)."""
    return re.sub(r"\(\d+\)", "", jobs.c[name].type.compile(dialect=pg.dialect())) + "[]"


# The insert is built from NewJob's fields and their columns' types, so a new job
# field needs no edit here. Each comes as one array parameter of the same name;
# run_at's None means now, by {now}.
_NEW_ARRAYS = ", ".join(f"%({name})s::{_array_cast(name)}" for name in NewJob._fields)
_NEW_COLUMNS = ", ".join(NewJob._fields)
_NEW_VALUES = ", ".join("coalesce(v.run_at, {now})" if name == "run_at" else f"v.{name}" for name in NewJob._fields)

# Ids are drawn from the sequence in the CTE, position by position, so each comes
# back with the position of the job it belongs to (INSERT ... RETURNING cannot name
# its source rows, and its order is unspecified).
_ENQUEUE = f"""
WITH v AS (
    SELECT * FROM unnest({_NEW_ARRAYS})
           WITH ORDINALITY AS v({_NEW_COLUMNS}, n)
), numbered AS (
    SELECT n, nextval({{id_seq}}::regclass) AS id FROM (SELECT n FROM v ORDER BY n) AS o
), inserted AS (
    INSERT INTO {{jobs}} (id, {_NEW_COLUMNS}, state, attempts, created_at)
    SELECT numbered.id, {_NEW_VALUES}, 'queued', 0, {{now}}
    FROM v JOIN numbered USING (n) ORDER BY n
    {{on_conflict}}
    RETURNING id
), notified AS (
    SELECT pg_notify(%(channel)s, %(notice)s)
)
SELECT numbered.n, inserted.id FROM inserted JOIN numbered USING (id)
UNION ALL SELECT NULL, NULL FROM notified
"""

# A row whose (task, unique key) a queued or running job holds is skipped.
_ON_UNIQUE_CONFLICT = f"ON CONFLICT (task, unique_key) WHERE {UNIQUE_WHERE} DO NOTHING"

_KEY_HOLDERS = f"""
SELECT task, unique_key, id FROM {{jobs}}
WHERE (task, unique_key) IN (SELECT * FROM unnest(%(tasks)s::varchar[], %(keys)s::varchar[])) AND {UNIQUE_WHERE}
"""

_CANCEL_REQUESTS = """
SELECT id FROM {jobs}
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running' AND cancel_requested_at IS NOT NULL
"""

_EXTEND = """
UPDATE {jobs} AS j
SET lease_expires_at = {now} + make_interval(secs => %(lease_s)s)
FROM unnest(%(ids)s::bigint[], %(owners)s::text[], %(attempts)s::int[]) AS v(id, owner, attempt)
WHERE {fenced}
RETURNING j.id
"""


# Every claim leaves the jobs of paused queues (q.pause_queue): the planner hashes the
# few paused names once per statement (a hashed SubPlan), a lookup per row it scans.
_NOT_PAUSED = " AND queue NOT IN (SELECT name FROM {queues} WHERE paused)"


def _queue_predicate(queues: QueueFilter) -> str:
    """The claim's queue condition: none for every queue, else in or not in %(queues)s."""
    if not queues.names:
        return ""
    return " AND queue <> ALL(%(queues)s::varchar[])" if queues.exclude else " AND queue = ANY(%(queues)s::varchar[])"


def _escape_encoded(text: str) -> str:
    """``text``'s UTF-8 bytes as PostgreSQL's encode(..., 'escape') writes them: a
    backslash doubled, a byte of 128 and up (and a NUL) as a backslash and 3 octal digits."""
    out = []
    for byte in text.encode("utf-8"):
        if byte == 0x5C:
            out.append("\\\\")
        elif byte >= 0x80 or byte == 0:
            out.append(f"\\{byte:03o}")
        else:
            out.append(chr(byte))
    return "".join(out)


def _quote_ident(name: str) -> str:
    """An identifier quoted as the server reads it. Not SQLAlchemy's quoting: its
    psycopg dialect doubles every "%" for its own %-format statements, which is
    wrong in a parameter's value (the search_path) and doubled twice in ours."""
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
