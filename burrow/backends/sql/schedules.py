"""burrow_schedules: which slot of each periodic job was enqueued last.

Moving a schedule's row forward and inserting its job are one transaction, which
is what makes every slot run once however many supervisors look at it.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from burrow.backends.records import ScheduleInfo
from burrow.backends.schema import schedules
from burrow.backends.sql.connection import SQLConnection
from burrow.job import NewJob


class SchedulesSQL(SQLConnection):
    """Periodic jobs (ScheduleStore)."""

    def enqueue_slot(
        self, name: str, spec: str, slot: dt.datetime, next_slot: dt.datetime, job: NewJob
    ) -> int | None:
        """Enqueue ``job`` for ``slot`` of schedule ``name``, unless a process already did.

        The schedule's row says which slot was enqueued last; moving it forward and
        inserting the job are one transaction, and only one process can move it past
        a given slot (the row lock; SQLite's single writer), so each slot is enqueued
        once. The first time a schedule is seen, its row starts at the current slot
        without a job: the first run is the next slot, not one from before it existed.
        Returns the job's id, or None.
        """

        def write(conn: sa.Connection) -> int | None:
            now = self._now()
            values = {"name": name, "task": job.task, "spec": spec, "last_slot": slot, "next_slot": next_slot}
            if conn.execute(self._dialect_insert(schedules).on_conflict_do_nothing().values(**values, updated_at=now)).rowcount == 1:
                return None
            moved = conn.execute(
                sa.update(schedules)
                .where(schedules.c.name == name, sa.or_(schedules.c.last_slot.is_(None), schedules.c.last_slot < slot))
                .values(**values, updated_at=now)
            ).rowcount
            if moved != 1:
                return None
            [job_id] = self._insert(conn.connection.driver_connection, [job], own_transaction=False)
            return job_id

        return self._write("enqueue_slot", write, retry=False)

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule a supervisor has seen, with its last and next slot."""
        statement = sa.select(schedules).order_by(schedules.c.name)
        rows = self._read("schedules", lambda c: c.execute(statement).all())
        return [ScheduleInfo(r.name, r.task, r.spec, r.last_slot, r.next_slot) for r in rows]
