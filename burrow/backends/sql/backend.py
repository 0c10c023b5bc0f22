"""SQLBackend: every table's statements on one connection, what both dialects build on.

One class per table (``jobs`` and ``workflows`` on it, ``history``, ``processes``, ``schedules``,
``stats``), each on :class:`~burrow.backends.sql.connection.SQLConnection`, so a
table's SQL is read in one place; this puts them together behind the whole
``Backend`` contract (see docs/architecture.md on the storage contract). The
dialects subclass it and fill in the hot path.
"""

from __future__ import annotations

from burrow.backends.sql.history import HistorySQL
from burrow.backends.sql.operators import OperatorsSQL
from burrow.backends.sql.processes import ProcessesSQL
from burrow.backends.sql.schedules import SchedulesSQL
from burrow.backends.sql.stats import StatsSQL
from burrow.backends.sql.workflows import WorkflowsSQL


class SQLBackend(WorkflowsSQL, HistorySQL, OperatorsSQL, ProcessesSQL, SchedulesSQL, StatsSQL):
    """The shared half of a Backend; the dialects add migrate, _insert, _claim, _finish
    and extend_leases, and their own ways of waiting and notifying."""
