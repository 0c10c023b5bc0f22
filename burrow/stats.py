"""Jobs finished per minute and task: counted in memory, written now and then.

The admin's throughput chart reads these rows (``q.throughput``) instead of every
job of the last hour. A supervisor counts the outcomes it writes and adds its
counts to the database on each heartbeat, in one statement; a count that could not
be written is kept and added next time.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from burrow.backends.contract import StatsStore
from burrow.backends.records import OutcomeKind, ThroughputRow
from burrow.errors import BackendError

# Outcome kinds as the chart counts them; released and snoozed runs are neither.
_COLUMN = {
    OutcomeKind.SUCCEEDED: "succeeded",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.EXPIRED_FAILED: "failed",
    OutcomeKind.RETRY: "retried",
    OutcomeKind.EXPIRED_RETRY: "retried",
}


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    """One minute (its start, UTC) of one task, or of all tasks."""

    minute: dt.datetime
    succeeded: int = 0
    failed: int = 0
    retried: int = 0


def minute_of(at: dt.datetime) -> dt.datetime:
    return at.replace(second=0, microsecond=0)


class StatsCounter:
    """Outcomes counted by (minute, task, column) until :meth:`take` hands them over."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[dt.datetime, str, str]] = Counter()

    def count_many(self, tally: Mapping[tuple[str, OutcomeKind], int], at: dt.datetime) -> None:
        """Add a batch's outcomes, by (task, kind), to minute ``at``'s counts."""
        minute = minute_of(at)
        for (task, kind), n in tally.items():
            column = _COLUMN.get(kind)
            if column is not None:
                self._counts[minute, task, column] += n

    def take(self) -> list[ThroughputRow]:
        """The counts so far, as rows to add; the counter starts again from zero."""
        rows: dict[tuple[dt.datetime, str], dict[str, int]] = {}
        for (minute, task, column), n in self._counts.items():
            rows.setdefault((minute, task), {"succeeded": 0, "failed": 0, "retried": 0})[column] += n
        self._counts.clear()
        return [ThroughputRow(minute, task, **by_column) for (minute, task), by_column in sorted(rows.items())]

    def give_back(self, rows: list[ThroughputRow]) -> None:
        """Rows the database did not take: counted again, added next time."""
        for row in rows:
            for column in ("succeeded", "failed", "retried"):
                if n := getattr(row, column):
                    self._counts[row.minute, row.task, column] += n

    def flush(self, store: StatsStore) -> None:
        """Add the counts so far to the store's; if it is away they are kept, for next
        time, and its BackendError goes on to the caller."""
        rows = self.take()
        try:
            store.add_stats(rows)
        except BackendError:
            self.give_back(rows)
            raise


def throughput_points(store: StatsStore, first: dt.datetime, minutes: int, tasks: Sequence[str]) -> list[ThroughputPoint]:
    """Every minute from ``first`` (a minute's start) for ``minutes``, oldest first, with
    the jobs of ``tasks`` (all if empty) finished in it, from the store's counts."""
    points = {first + dt.timedelta(minutes=i): [0, 0, 0] for i in range(minutes)}
    for row in store.stats_since(first, tasks):
        totals = points.get(minute_of(row.minute))
        if totals is not None:
            totals[0] += row.succeeded
            totals[1] += row.failed
            totals[2] += row.retried
    return [ThroughputPoint(minute, *totals) for minute, totals in points.items()]
