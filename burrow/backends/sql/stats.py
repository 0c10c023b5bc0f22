"""burrow_stats: jobs finished per minute and task, added to by every process.

Counts are upserts that add, so supervisors on many hosts can write the same
minute of the same task without reading it first (see ``burrow.stats``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from burrow.backends.records import ThroughputRow
from burrow.backends.schema import stats
from burrow.backends.sql.connection import SQLConnection


class StatsSQL(SQLConnection):
    """The throughput chart's counts (StatsStore)."""

    def add_stats(self, rows: Sequence[ThroughputRow]) -> None:
        """Add per-minute counts to what other processes counted, in one statement."""
        if not rows:
            return
        insert = self._dialect_insert(stats)
        statement = insert.on_conflict_do_update(
            index_elements=[stats.c.minute, stats.c.task],
            set_={name: stats.c[name] + insert.excluded[name] for name in ("succeeded", "failed", "retried")},
        )
        values = [
            {"minute": r.minute, "task": r.task, "succeeded": r.succeeded, "failed": r.failed, "retried": r.retried}
            for r in rows
        ]
        self._write("add_stats", lambda c: c.execute(statement, values))

    def stats_since(self, since: dt.datetime, tasks: Sequence[str] | None = None) -> list[ThroughputRow]:
        statement = sa.select(stats).where(stats.c.minute >= since).order_by(stats.c.minute, stats.c.task)
        if tasks:
            statement = statement.where(stats.c.task.in_(list(tasks)))
        rows = self._read("stats_since", lambda c: c.execute(statement).all())
        return [ThroughputRow(r.minute, r.task, r.succeeded, r.failed, r.retried) for r in rows]

    def prune_stats(self, before: dt.datetime) -> int:
        statement = sa.delete(stats).where(stats.c.minute < before)
        return self._write("prune_stats", lambda c: c.execute(statement).rowcount)
