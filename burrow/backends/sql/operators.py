"""burrow_queues and burrow_audit: paused queues, and the record of operators' actions.

A pause is a row in ``burrow_queues`` that every claim reads (the dialects' claims
leave out the jobs of paused queues: ``paused_queues_sql``), so every supervisor
stops claiming the queue at its next claim, and the state survives restarts.

Each operator action writes its ``burrow_audit`` row with :func:`record_audit` in
the action's own transaction: the row exists if and only if the action changed
something and committed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from burrow.backends.records import Audit, AuditEntry
from burrow.backends.schema import audit as audit_table
from burrow.backends.schema import jobs, queues
from burrow.backends.sql.connection import SQLConnection
from burrow.job import JobState


def record_audit(conn: sa.Connection, now: dt.datetime | sa.ColumnElement[dt.datetime], entry: Audit | None, count: int) -> None:
    """Write ``entry`` (if any) with ``count`` jobs, in ``conn``'s transaction."""
    if entry is None:
        return
    conn.execute(
        sa.insert(audit_table).values(
            at=now, actor=entry.actor[:255], action=entry.action, job_id=entry.job_id,
            queue=entry.queue, filter=entry.filter, count=count,
        )
    )


class OperatorsSQL(SQLConnection):
    """Paused queues, running a job now, and the audit trail (OperatorStore)."""

    def set_paused(self, queue: str, paused: bool, audit: Audit | None = None) -> bool:
        """Pause or resume ``queue`` (a row of its own, kept after a resume); True if
        its state changed. The audit row is written either way: the operator asked."""

        def write(conn: sa.Connection) -> bool:
            before = conn.execute(sa.select(queues.c.paused).where(queues.c.name == queue).with_for_update()).scalar()
            now = self._now()
            if before is None:
                conn.execute(sa.insert(queues).values(name=queue, paused=paused, updated_at=now, updated_by=audit and audit.actor[:255]))
            else:
                conn.execute(
                    sa.update(queues)
                    .where(queues.c.name == queue)
                    .values(paused=paused, updated_at=now, updated_by=audit and audit.actor[:255])
                )
            record_audit(conn, now, audit, 0)
            if not paused:
                self._notify(conn, [])  # idle claimers look at once
            return bool(before) != paused

        return self._write("pause_queue" if paused else "resume_queue", write)

    def queue_rows(self) -> list[tuple[str, bool, dt.datetime, str | None]]:
        """Every queue an operator ever paused: (name, paused, updated_at, updated_by)."""
        statement = sa.select(queues.c.name, queues.c.paused, queues.c.updated_at, queues.c.updated_by).order_by(queues.c.name)
        rows = self._read("queues", lambda c: c.execute(statement).all())
        return [(r.name, bool(r.paused), r.updated_at, r.updated_by) for r in rows]

    def paused_queues(self) -> list[str]:
        statement = sa.select(queues.c.name).where(queues.c.paused.is_(True)).order_by(queues.c.name)
        return self._read("paused_queues", lambda c: list(c.execute(statement).scalars()))

    def run_now(self, job_id: int, audit: Audit | None = None) -> bool:
        """A queued job due later (scheduled, retrying, snoozed) made due now; False for
        any other job (due already, running, finished)."""

        def write(conn: sa.Connection) -> bool:
            now = self._now()
            statement = (
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value, jobs.c.run_at > now)
                .values(run_at=now)
                .returning(jobs.c.task)
            )
            task = conn.execute(statement).scalar()
            if task is None:
                return False
            record_audit(conn, now, audit, 1)
            self._notify(conn, [task])
            return True

        return self._write("run_now", write)

    def add_audit(self, entry: Audit, count: int) -> None:
        """An action that changed nothing in a transaction of its own (a retry-all that
        found no job): recorded alone."""
        self._write("audit", lambda c: record_audit(c, self._now(), entry, count))

    def audit_entries(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        """Newest first, keyset-paged by id."""
        statement = sa.select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
        if before_id is not None:
            statement = statement.where(audit_table.c.id < before_id)
        rows = self._read("audit", lambda c: c.execute(statement).all())
        return [AuditEntry(**row._asdict()) for row in rows]

    def prune_audit(self, before: dt.datetime) -> int:
        statement = sa.delete(audit_table).where(audit_table.c.at < before)
        return self._write("prune_audit", lambda c: c.execute(statement).rowcount)
