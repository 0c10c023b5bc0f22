"""burrow_job_history: the attempts that did not succeed, read and written outside the hot path.

A finish writes its history rows in its own statement, in each dialect's SQL (one
round trip with the outcomes: ``sqlite.py``, ``postgres.py``); what is here is the
rest: reading a job's history, and the rows of what an operator or the database
itself did (a requeue), and their removal with their job (a delete, a prune).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from burrow.backends.records import HistoryEntry, HistoryEvent
from burrow.backends.schema import history
from burrow.backends.sql.connection import SQLConnection


class HistorySQL(SQLConnection):
    """A job's history as ``q.history`` shows it (OperatorStore.history)."""

    def history(self, job_id: int) -> list[HistoryEntry]:
        statement = sa.select(history).where(history.c.job_id == job_id).order_by(history.c.id)
        rows = self._read("history", lambda c: c.execute(statement).all())
        return [
            HistoryEntry(r.job_id, r.attempt, HistoryEvent(r.event), r.error, r.at, r.host, r.pid, r.duration_s)
            for r in rows
        ]


def record_history(
    conn: sa.Connection, at: sa.ColumnElement[dt.datetime], entries: Sequence[tuple[int, int, HistoryEvent, str | None]]
) -> None:
    """History rows for what an operator or the database itself did (no worker, no duration),
    in ``conn``'s transaction, stamped ``at`` (the backend's now, as SQL)."""
    if entries:
        conn.execute(
            sa.insert(history).values(at=at),
            [{"job_id": j, "attempt": a, "event": e.value, "error": err} for j, a, e, err in entries],
        )


def delete_history(conn: sa.Connection, job_ids: Sequence[int]) -> None:
    """The history of jobs being deleted, in the transaction that deletes them."""
    conn.execute(sa.delete(history).where(history.c.job_id.in_(list(job_ids))))
