"""burrow_jobs: the statements both dialects share, written once in SQLAlchemy Core.

The dialects differ where it matters for speed or locking (inserting, claiming,
batched finishing, lease extension, waiting for work); those live in
``sqlite.py`` and ``postgres.py`` with the reason at the spot, behind the hooks
this class leaves them (``_insert``, ``_claim``, ``_finish``, ``extend_leases``).
Everything here is the same SQL on both.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import structlog

from burrow.backends.sql.history import delete_history, record_history
from burrow.backends.records import (
    CANCEL_NOTICE,
    Audit,
    JOB_COLUMNS,
    ClaimedJob,
    ClaimRequest,
    ExpiredLease,
    HistoryEvent,
    Outcome,
    OutcomeKind,
    claimed_jobs,
)
from burrow.backends.schema import jobs, queues
from burrow.backends.sql.connection import SQLConnection
from burrow.backends.sql.operators import record_audit
from burrow.errors import BackendError
from burrow.job import JobInfo, JobState, NewJob

log = structlog.get_logger("burrow")



# A literal, not a parameter: a prepared statement's generic plan can only use the
# partial index (WHERE state = 'queued') when the value is in the SQL text.
_IS_QUEUED = jobs.c.state == sa.literal_column("'queued'")
_IS_RUNNING = jobs.c.state == sa.literal_column("'running'")  # the reaper's partial index
# The listing indexes' conditions (schema.py), as literals a partial index matches.
_NOT_RUNNING = jobs.c.state != sa.literal_column("'running'")
# The claims' condition (the dialects write it in their own claim SQL too).
_NOT_PAUSED_QUEUE = jobs.c.queue.not_in(sa.select(queues.c.name).where(queues.c.paused.is_(True)).scalar_subquery())
_LISTED = jobs.c.state.not_in([sa.literal_column("'succeeded'"), sa.literal_column("'running'")])


# Retention keeps a workflow's jobs together: a step goes only once no job of its
# workflow is still to run (so no finished parent goes while a child waits for it).
_member = jobs.alias("member")
_WORKFLOW_ENDED = sa.or_(
    jobs.c.workflow_id.is_(None),
    ~sa.exists().where(
        _member.c.workflow_id == jobs.c.workflow_id,
        _member.c.state.in_([JobState.WAITING.value, JobState.QUEUED.value, JobState.RUNNING.value]),
    ),
)


class JobsSQL(SQLConnection):
    """The jobs' store: enqueue, claim, finish and leases (JobStore), and reading and
    repairing jobs (OperatorStore, with ``history.HistorySQL``)."""

    # -- enqueue ------------------------------------------------------------------

    def enqueue(self, new_jobs: Sequence[NewJob], conn: sa.Connection | None = None) -> list[int]:
        """Insert ``new_jobs`` and wake consumers; the ids in ``new_jobs`` order.

        One insert path per dialect (``_insert``), on this process's held
        connection (one statement, a fraction of the client CPU of SQLAlchemy's
        execution layer), or through the pool if another thread holds it, or on
        the caller's connection inside the caller's transaction (a transactional
        enqueue: the jobs exist if and only if that transaction commits).
        """
        if not new_jobs:
            return []
        _check_aware(new_jobs)
        if conn is not None:
            with self._errors("enqueue"), self._driver_errors("enqueue"):
                return self._insert(conn.connection.driver_connection, new_jobs, own_transaction=False)
        if not self._held_lock.locked():
            return self._on_held("enqueue", lambda c: self._insert(c, new_jobs, own_transaction=True), retry=False)
        return self._write(
            "enqueue",
            lambda c: self._insert(c.connection.driver_connection, new_jobs, own_transaction=False),
            retry=False,
        )

    def enqueue_dbapi(self, dbapi_connection: Any, new_jobs: Sequence[NewJob]) -> list[int]:
        """Insert ``new_jobs`` on a caller's own DB-API connection (sqlite3, or psycopg 3),
        inside the transaction the caller has open there and will end; the ids in order.

        For callers that hold no SQLAlchemy connection but a driver's, such as Django's
        connection of an alias (burrow.django): the same INSERT as :meth:`enqueue`'s,
        so the jobs exist if and only if the caller's transaction commits. The caller
        must have a transaction open (on SQLite the id is chosen under the write lock
        that transaction takes).
        """
        if not new_jobs:
            return []
        _check_aware(new_jobs)
        with self._errors("enqueue"), self._driver_errors("enqueue"):
            return self._insert(dbapi_connection, new_jobs, own_transaction=False)

    def claim(self, request: ClaimRequest) -> list[ClaimedJob]:
        """Pick and mark up to ``request.limit`` jobs on the held connection (the
        dialect's ``_claim`` says how); of ``request.limits``, those of the tasks asked for.

        Never retried here: a claim whose commit went through before the connection
        dropped has jobs under its owner its caller never saw; a second claim under
        the same owner would hide them. The caller releases the owner instead.
        """
        tasks = request.tasks
        if not tasks or request.limit <= 0:
            return []
        limited = {task: n for task, n in (request.limits or {}).items() if task in tasks}
        claim = self._claim(request, limited)
        return claimed_jobs(self._on_held("claim", claim, retry=False), request.owner)

    def _claim(self, request: ClaimRequest, limited: Mapping[str, int]) -> Callable[[Any], list[Any]]:
        """The claim as a function of the held DBAPI connection, returning claimed rows;
        ``limited`` holds the concurrency limits of the tasks the request names."""
        raise NotImplementedError

    def finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Write outcomes in one round trip (``_finish``); the ids whose fence no longer held.

        A batch the database refuses for its data (not for being away) is split in
        halves until the outcome at fault stands alone; that one is written as its
        job's failure, saying why, and every other outcome is written as it was.
        One unwritable outcome must not keep a supervisor's every later batch out
        of the database (its jobs' leases would lapse and they would run again).
        """
        try:
            return self._finish(outcomes)
        except BackendError as exc:
            if not outcomes or not self._refused_data(exc):
                raise
            if len(outcomes) > 1:
                middle = len(outcomes) // 2
                return self.finish(outcomes[:middle]) + self.finish(outcomes[middle:])
            return self._finish_unwritable(outcomes[0], exc)

    def _refused_data(self, exc: BackendError) -> bool:
        """Whether the database refused what was sent (bad data: PEP 249's DataError,
        IntegrityError, ProgrammingError...), not failed to answer (OperationalError,
        InterfaceError: a lock, a timeout, a lost connection): only then can writing
        less of it succeed. Values Python could not even bind count as refused."""
        cause = exc.__cause__
        if isinstance(cause, sa.exc.DBAPIError):
            cause = cause.orig
        if isinstance(cause, (OverflowError, ValueError, TypeError)):
            return True
        dbapi = self._base_engine.dialect.loaded_dbapi
        return isinstance(cause, dbapi.Error) and not isinstance(cause, (dbapi.OperationalError, dbapi.InterfaceError))

    def _finish_unwritable(self, outcome: Outcome, exc: BackendError) -> list[int]:
        """The job of an outcome the database refused: failed, with the reason."""
        reason = f"burrow could not record this run's outcome ({outcome.kind.value}): {exc}"
        log.error("outcome_unwritable", job_id=outcome.id, attempt=outcome.attempt, error=str(exc))
        failed = Outcome(outcome.id, outcome.owner, outcome.attempt, OutcomeKind.FAILED, error=reason[:2000])
        try:
            return self._finish([failed])
        except BackendError as again:
            # Even that refused: leave the job to its lease, whose reaper records it.
            log.error("outcome_dropped", job_id=outcome.id, attempt=outcome.attempt, error=str(again))
            return [outcome.id]

    def _finish(self, outcomes: Sequence[Outcome]) -> list[int]:
        raise NotImplementedError

    def record_progress(self, rows: Sequence[tuple[int, str, int, float, str | None]]) -> None:
        """The latest progress of running jobs, (id, owner, attempt, fraction, message)
        each, fenced like every write of an attempt: one executemany, one transaction."""
        if not rows:
            return
        statement = (
            sa.update(jobs)
            .where(
                jobs.c.id == sa.bindparam("b_id"), jobs.c.owner == sa.bindparam("b_owner"),
                jobs.c.attempts == sa.bindparam("b_attempt"), _IS_RUNNING,
            )
            .values(progress=sa.bindparam("b_fraction"), progress_message=sa.bindparam("b_message"))
        )
        values = [
            {"b_id": i, "b_owner": owner, "b_attempt": attempt, "b_fraction": fraction, "b_message": message}
            for i, owner, attempt, fraction, message in rows
        ]
        self._write("progress", lambda c: c.execute(statement, values))

    def extend_leases(self, fences: Sequence[tuple[int, str, int]], lease_s: float) -> list[int]:
        raise NotImplementedError

    # -- cancel, read -------------------------------------------------------------

    def cancel(self, job_id: int, audit: Audit | None = None) -> bool:
        """Queued or waiting -> cancelled (a workflow's downstream with it: migration 12's
        trigger); a running or finished job is left alone (zero rows)."""
        statement = (
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.state.in_([JobState.QUEUED.value, JobState.WAITING.value]))
            .values(state=JobState.CANCELLED.value, finished_at=self._now())
        )

        def cancel(conn: sa.Connection) -> bool:
            if conn.execute(statement).rowcount != 1:
                return False
            record_audit(conn, self._now(), audit, 1)
            self._settle(conn.exec_driver_sql, [job_id])
            self._ended(conn, [job_id])
            return True

        return self._write("cancel", cancel)

    def request_cancel(self, job_id: int, audit: Audit | None = None) -> bool:
        """Mark a running job for its supervisor to stop (it polls, and on PostgreSQL a
        notification wakes it); True if the job was running."""

        def request(conn: sa.Connection) -> bool:
            statement = (
                sa.update(jobs)
                .where(jobs.c.id == job_id, _IS_RUNNING, jobs.c.cancel_requested_at.is_(None))
                .values(cancel_requested_at=self._now())
            )
            if conn.execute(statement).rowcount == 1:
                record_audit(conn, self._now(), audit, 1)
                self._notify(conn, [CANCEL_NOTICE])
                return True
            found = conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
            if found == JobState.RUNNING.value:  # asked already
                record_audit(conn, self._now(), audit, 1)
                return True
            return False

        return self._write("request_cancel", request)

    def cancel_requests(self, job_ids: Sequence[int]) -> list[int]:
        if not job_ids:
            return []
        statement = sa.select(jobs.c.id).where(
            jobs.c.id.in_(list(job_ids)), _IS_RUNNING, jobs.c.cancel_requested_at.is_not(None)
        )
        return self._read("cancel_requests", lambda c: list(c.execute(statement).scalars()))

    def get(self, job_id: int) -> JobInfo | None:
        statement = sa.select(*[jobs.c[name] for name in JOB_COLUMNS]).where(jobs.c.id == job_id)
        row = self._read("get", lambda c: c.execute(statement).one_or_none())
        return None if row is None else job_info(row)


    def counts(self) -> dict[JobState, int]:
        statement = sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state)
        rows = self._read("counts", lambda c: c.execute(statement).all())
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(state): n for state, n in rows})
        return counts

    def has_due(self, tasks: Sequence[str]) -> bool:
        statement = (
            sa.select(jobs.c.id)
            .where(_IS_QUEUED, jobs.c.run_at <= self._now(), self._task_filter(tasks), _NOT_PAUSED_QUEUE)
            .limit(1)
        )
        return self._read("has_due", lambda c: c.execute(statement).first() is not None)

    def _task_filter(self, tasks: Sequence[str]) -> sa.ColumnElement[bool]:
        return jobs.c.task.in_(list(tasks))

    def wait_for_jobs(self, timeout_s: float, tasks: Sequence[str] = ()) -> bool:
        """Poll for due work with a short, growing interval, up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        pause = 0.005
        while True:
            if tasks and self.has_due(tasks):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.1)

    # -- leases -------------------------------------------------------------------

    def expired_leases(self, limit: int = 1000) -> list[ExpiredLease]:
        """Running jobs whose owner stopped extending the lease, oldest expiry first.

        Only read: the caller decides each job's fate (retry with its backoff, or
        fail when its retries are spent) and writes it with :meth:`finish` as an
        ``EXPIRED_*`` outcome, which re-checks the expiry under the row lock, so a
        lease extended in between, or a second reaper, changes nothing.
        """
        statement = (
            sa.select(
                jobs.c.id, jobs.c.task, jobs.c.owner, jobs.c.attempts, jobs.c.max_retries, jobs.c.cancel_requested_at
            )
            .where(_IS_RUNNING, jobs.c.lease_expires_at < self._now())
            .order_by(jobs.c.lease_expires_at)
            .limit(limit)
        )
        rows = self._read("expired_leases", lambda c: c.execute(statement).all())
        return [
            ExpiredLease(r.id, r.task, r.owner, r.attempts, r.max_retries, r.cancel_requested_at is not None)
            for r in rows
        ]

    def release_owner(self, owner: str) -> list[int]:
        """Give back what ``owner`` (and each of its claims, ``owner/N``) still holds:
        queued again, the attempt returned.

        Two callers. The supervisor, after it wrote every outcome a dead worker
        reported: a job still ``running`` under that worker was claimed but never
        announced (the worker died between the claim's commit and its ``claimed``
        message), so it never ran; without this it waited out its lease and was
        charged an attempt. And a claimer whose claim failed without an answer:
        the commit may have gone through, leaving jobs under that claim's owner
        that nobody will run. The release is a fenced RELEASED outcome, like any other.
        """
        prefix = owner + "/"
        mine = sa.or_(jobs.c.owner == owner, sa.func.substr(jobs.c.owner, 1, len(prefix)) == prefix)
        statement = sa.select(jobs.c.id, jobs.c.owner, jobs.c.attempts).where(_IS_RUNNING, mine)
        rows = self._read("release_owner", lambda c: c.execute(statement).all())
        outcomes = [Outcome(r.id, r.owner, r.attempts, OutcomeKind.RELEASED) for r in rows]
        lost = set(self.finish(outcomes))
        return [o.id for o in outcomes if o.id not in lost]

    # -- operators ----------------------------------------------------------------

    def list_jobs(
        self,
        states: Sequence[str] | None,
        tasks: Sequence[str] | None,
        before_id: int | None,
        limit: int,
        after_id: int | None = None,
    ) -> list[JobInfo]:
        """Newest first, keyset-paged by id.

        A state filter is served by burrow_jobs_state_idx, a task filter by
        burrow_jobs_task_idx; succeeded jobs, left out of the state index, are
        listed by walking the primary key, where nearly every row is one. Neither
        index holds running jobs (migration 10): they come from the running index,
        a few rows, merged in.

        ``after_id``: the ``limit`` jobs just newer than it instead (the same indexes,
        walked the other way), still returned newest first: the page before a page.
        """
        statement = self.list_jobs_statement(states, tasks, before_id, limit, after_id)
        rows = self._read("list_jobs", lambda c: c.execute(statement).all())
        found = [job_info(row) for row in rows]
        return found[::-1] if after_id is not None else found

    def list_jobs_statement(
        self,
        states: Sequence[str] | None,
        tasks: Sequence[str] | None,
        before_id: int | None,
        limit: int,
        after_id: int | None = None,
    ) -> sa.Select[Any]:
        """The listing's statement, apart so that a test can EXPLAIN it (ids descending;
        ascending from ``after_id`` when it is given)."""
        columns = [jobs.c[name] for name in JOB_COLUMNS]
        by_task = [jobs.c.task.in_(list(tasks))] if tasks else []

        def order(column: Any) -> Any:
            return column.asc() if after_id is not None else column.desc()

        def newest(*terms: sa.ColumnElement[bool]) -> sa.Select[Any]:
            if before_id is not None:
                terms += (jobs.c.id < before_id,)
            if after_id is not None:
                terms += (jobs.c.id > after_id,)
            return sa.select(*columns).where(*terms).order_by(order(jobs.c.id)).limit(limit)

        if not states and not tasks:
            return newest()
        branches = []
        others = [state for state in states or () if state != JobState.RUNNING.value]
        if others:
            # The index's own condition restated: SQLite uses a partial index only
            # when the query's terms contain it, it proves no more.
            listed = () if JobState.SUCCEEDED.value in others else (_LISTED,)
            branches.append(newest(jobs.c.state.in_(others), *listed, *by_task))
        elif not states:
            branches.append(newest(_NOT_RUNNING, *by_task))
        if not states or JobState.RUNNING.value in states:
            branches.append(newest(_IS_RUNNING, *by_task))
        if len(branches) == 1:
            return branches[0]
        merged = sa.union_all(*(sa.select(branch.subquery()) for branch in branches)).subquery()
        return sa.select(*[merged.c[name] for name in JOB_COLUMNS]).order_by(order(merged.c.id)).limit(limit)

    def search_jobs(
        self,
        text: str,
        states: Sequence[str] | None,
        tasks: Sequence[str] | None,
        before_id: int | None,
        limit: int,
        window: int,
    ) -> tuple[list[JobInfo], int | None]:
        """Jobs whose payload (its bytes as text) or last error holds ``text``, case
        aside (ASCII letters), newest first, among the ``window`` newest ids below
        ``before_id``; and the id where the window stopped (None: it reached the
        oldest job). The window's end is found on the primary key (an index-only
        range), then the same range is walked newest first until ``limit`` match."""

        def search(conn: sa.Connection) -> tuple[list[JobInfo], int | None]:
            ids = sa.select(jobs.c.id).order_by(jobs.c.id.desc()).offset(window).limit(1)
            if before_id is not None:
                ids = ids.where(jobs.c.id < before_id)
            end = conn.execute(ids).scalar()
            terms: list[sa.ColumnElement[bool]] = [self._contains(text)]
            if end is not None:
                terms.append(jobs.c.id > end)
            if before_id is not None:
                terms.append(jobs.c.id < before_id)
            if states:
                terms.append(jobs.c.state.in_(list(states)))
            if tasks:
                terms.append(jobs.c.task.in_(list(tasks)))
            statement = (
                sa.select(*[jobs.c[name] for name in JOB_COLUMNS]).where(*terms).order_by(jobs.c.id.desc()).limit(limit)
            )
            return [job_info(row) for row in conn.execute(statement).all()], end

        return self._read("search_jobs", search)

    def _contains(self, text: str) -> sa.ColumnElement[bool]:
        """The payload's bytes as text, or the last error, hold ``text`` (ASCII case aside)."""
        raise NotImplementedError

    def counts_by_task(self, *, active_only: bool = False) -> dict[str, dict[JobState, int]]:
        """task -> state -> count. ``active_only`` counts waiting, queued and running jobs
        only, from their partial indexes, cheap however many finished jobs the table holds."""
        statement = sa.select(jobs.c.task, jobs.c.state, sa.func.count()).group_by(jobs.c.task, jobs.c.state)
        if active_only:
            active = [JobState.WAITING.value, JobState.QUEUED.value, JobState.RUNNING.value]
            statement = statement.where(jobs.c.state.in_(active))
        rows = self._read("counts_by_task", lambda c: c.execute(statement).all())
        counts: dict[str, dict[JobState, int]] = {}
        for task, state, n in rows:
            counts.setdefault(task, {})[JobState(state)] = n
        return counts

    def active_by_queue(self) -> dict[str, dict[JobState, int]]:
        """queue -> queued and running counts, from the partial indexes (cheap)."""
        statement = (
            sa.select(jobs.c.queue, jobs.c.state, sa.func.count())
            .where(jobs.c.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
            .group_by(jobs.c.queue, jobs.c.state)
        )
        rows = self._read("active_by_queue", lambda c: c.execute(statement).all())
        counts: dict[str, dict[JobState, int]] = {}
        for queue, state, n in rows:
            counts.setdefault(queue, {})[JobState(state)] = n
        return counts

    def requeue(
        self, job_ids: Sequence[int], from_states: Sequence[JobState], note: str, audit: Audit | None = None
    ) -> list[int]:
        """Put finished jobs of ``from_states`` back in the queue as new: due now, attempts 0,
        error, result and times cleared; each leaves a ``requeued`` history entry (with the
        attempts it had) so its past attempts stay readable. The ids requeued."""
        if not job_ids:
            return []

        def requeue(conn: sa.Connection) -> list[int]:
            picked = conn.execute(
                sa.select(jobs.c.id, jobs.c.task, jobs.c.attempts)
                .where(jobs.c.id.in_(list(job_ids)), jobs.c.state.in_([s.value for s in from_states]))
                .with_for_update()
            ).all()
            if not picked:
                return []
            now = self._now()
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id.in_([r.id for r in picked]))
                .values(
                    state=JobState.QUEUED.value, attempts=0, run_at=now, started_at=None, finished_at=None,
                    last_error=None, result=None, owner=None, lease_expires_at=None, progress=None,
                    progress_message=None,
                )
            )
            record_history(conn, self._now(), [(r.id, r.attempts, HistoryEvent.REQUEUED, note) for r in picked])
            self._requeued(conn, [r.id for r in picked])
            record_audit(conn, now, audit, len(picked))
            self._notify(conn, sorted({r.task for r in picked}))
            return [r.id for r in picked]

        return self._write("requeue", requeue)

    def _settle(
        self, execute: Callable[[str, tuple[Any, ...]], Any], ended_ids: Sequence[int], *, deleted: bool = False
    ) -> None:
        """In the transaction that ended ``ended_ids`` (or ``deleted`` them): their waiting
        workflow children released or cancelled. PostgreSQL's triggers do it (migration
        12), so this does nothing there; SQLite does it here (sqlite.py says why).
        ``execute(sql, params)`` runs a statement on that transaction's connection."""

    def _requeued(self, conn: sa.Connection, job_ids: Sequence[int]) -> None:
        """In the requeue's transaction: what else a requeue changes (workflows.py)."""

    def ids_in(self, state: JobState, tasks: Sequence[str] | None, after_id: int, up_to_id: int, limit: int) -> list[int]:
        """Ids of jobs in ``state`` (of ``tasks``) in (after_id, up_to_id], ascending: bulk
        actions walk the jobs that existed when they began, a batch at a time."""
        statement = (
            sa.select(jobs.c.id)
            .where(jobs.c.state == state.value, jobs.c.id > after_id, jobs.c.id <= up_to_id)
            .order_by(jobs.c.id)
            .limit(limit)
        )
        if tasks:
            statement = statement.where(jobs.c.task.in_(list(tasks)))
        return self._read("ids_in", lambda c: list(c.execute(statement).scalars()))

    def max_id(self) -> int:
        return self._read("max_id", lambda c: c.execute(sa.select(sa.func.coalesce(sa.func.max(jobs.c.id), 0))).scalar_one())

    def _retire_ids(self, conn: sa.Connection) -> None:
        """In a transaction about to delete jobs: make sure no id handed out so far is
        handed out again. PostgreSQL's sequence never goes back; SQLite overrides this."""

    def delete_job(self, job_id: int, audit: Audit | None = None) -> bool | None:
        """Delete a job that is not running, and its history: True; False if it is running;
        None if there is no such job."""

        def delete(conn: sa.Connection) -> bool | None:
            state = conn.execute(sa.select(jobs.c.state).where(jobs.c.id == job_id).with_for_update()).scalar()
            if state is None:
                return None
            if state == JobState.RUNNING.value:
                return False
            self._retire_ids(conn)
            delete_history(conn, [job_id])
            conn.execute(sa.delete(jobs).where(jobs.c.id == job_id))
            self._settle(conn.exec_driver_sql, [job_id], deleted=True)
            record_audit(conn, self._now(), audit, 1)
            return True

        return self._write("delete", delete)

    def prune(
        self,
        finished_before: dt.datetime,
        states: Sequence[JobState],
        batch: int = 1000,
        max_rows: int | None = None,
        audit: Audit | None = None,
    ) -> int:
        """Delete jobs of ``states`` finished before the cutoff, with their history
        (and ``audit``'s row in each batch's transaction, with the batch's count).

        At most ``batch`` jobs a transaction, the longest finished first (an index
        range: burrow_jobs_finished_idx), so that no lock is held for long and a prune
        of millions never stalls claims and finishes; at most ``max_rows`` in all
        (None: until none is left).
        """
        total = 0
        state_values = [s.value for s in states]
        while max_rows is None or total < max_rows:

            def delete_batch(conn: sa.Connection) -> int:
                self._retire_ids(conn)
                picked = (
                    sa.select(jobs.c.id)
                    .where(jobs.c.state.in_(state_values), jobs.c.finished_at < finished_before, _WORKFLOW_ENDED)
                    .order_by(jobs.c.finished_at)
                    .limit(batch)
                    .scalar_subquery()
                )
                ids = list(conn.execute(sa.delete(jobs).where(jobs.c.id.in_(picked)).returning(jobs.c.id)).scalars())
                if ids:
                    delete_history(conn, ids)
                    self._settle(conn.exec_driver_sql, ids, deleted=True)
                    record_audit(conn, self._now(), audit, len(ids))
                return len(ids)

            deleted = self._write("prune", delete_batch)
            total += deleted
            if deleted < batch:
                break
        return total


def _check_aware(new_jobs: Sequence[NewJob]) -> None:
    for job in new_jobs:
        if job.run_at is not None and job.run_at.tzinfo is None:
            raise ValueError(f"naive datetime {job.run_at!r}: burrow needs timezone-aware datetimes")


def job_info(row: sa.Row[Any]) -> JobInfo:
    values = row._asdict()
    values["state"] = JobState(values["state"])
    return JobInfo(**values)

