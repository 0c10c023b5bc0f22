"""burrow_processes and burrow_tasks: the supervisors and workers alive now, by their
heartbeats, and the tasks each supervisor handles.

No job's fate depends on these tables. A process that stops heartbeating is
forgotten, with its tasks; its jobs come back by lease expiry, not from here. The
tasks say which due jobs nobody would run, and give an enqueue that lacks a task's
definition the task's options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from burrow.backends.records import ProcessInfo
from burrow.backends.schema import jobs, processes, tasks
from burrow.backends.sql.connection import SQLConnection


class ProcessesSQL(SQLConnection):
    """The process registry (ProcessStore)."""

    def register_process(self, owner: str, host: str, pid: int, role: str) -> None:
        def register(conn: sa.Connection) -> None:
            now = self.now()
            conn.execute(sa.delete(processes).where(processes.c.owner == owner))
            conn.execute(
                sa.insert(processes).values(owner=owner, host=host, pid=pid, role=role, started_at=now, heartbeat_at=now)
            )

        self._write("register_process", register)

    def heartbeat_processes(self, owners: Sequence[str]) -> list[str]:
        """Refresh these processes' rows in one statement; the owners whose row is gone
        (reaped as stale by another supervisor while this one was cut off)."""
        statement = (
            sa.update(processes)
            .where(processes.c.owner.in_(list(owners)))
            .values(heartbeat_at=self._now())
            .returning(processes.c.owner)
        )
        found = set(self._write("heartbeat_processes", lambda c: list(c.execute(statement).scalars())))
        return [owner for owner in owners if owner not in found]

    def remove_process(self, owner: str) -> None:
        def remove(conn: sa.Connection) -> None:
            conn.execute(sa.delete(tasks).where(tasks.c.owner == owner))
            conn.execute(sa.delete(processes).where(processes.c.owner == owner))

        self._write("remove_process", remove)

    def reap_processes(self, stale_after_s: float) -> list[str]:
        """Forget processes that stopped heartbeating, and the tasks they handled; their
        jobs come back by lease expiry."""
        statement = (
            sa.delete(processes).where(processes.c.heartbeat_at < self._at(-stale_after_s)).returning(processes.c.owner)
        )

        def reap(conn: sa.Connection) -> list[str]:
            owners = list(conn.execute(statement).scalars())
            if owners:
                conn.execute(sa.delete(tasks).where(tasks.c.owner.in_(owners)))
            return owners

        return self._write("reap_processes", reap)

    def register_tasks(self, owner: str, options: Mapping[str, str]) -> None:
        """The tasks ``owner`` handles now (task -> its options as JSON), in place of
        the ones it registered before (a reload may drop some)."""
        def register(conn: sa.Connection) -> None:
            now = self.now()
            conn.execute(sa.delete(tasks).where(tasks.c.owner == owner))
            if options:
                rows = [{"owner": owner, "task": t, "options": o, "registered_at": now} for t, o in options.items()]
                conn.execute(sa.insert(tasks), rows)

        self._write("register_tasks", register)

    def _handled(self, stale_after_s: float) -> sa.Select[tuple[str]]:
        """The tasks some live process (heartbeat within ``stale_after_s``) handles."""
        return (
            sa.select(tasks.c.task)
            .join(processes, processes.c.owner == tasks.c.owner)
            .where(processes.c.heartbeat_at >= self._at(-stale_after_s))
        )

    def task_options(self, task: str) -> str | None:
        """The options (JSON) ``task`` was last registered with, by a process still
        registered (rows go with their process); None if none handles it."""
        statement = (
            sa.select(tasks.c.options).where(tasks.c.task == task).order_by(tasks.c.registered_at.desc()).limit(1)
        )
        return self._read("task_options", lambda c: c.execute(statement).scalar_one_or_none())

    def unhandled(self, stale_after_s: float) -> dict[str, int]:
        """Due queued jobs by task, for the tasks no live process handles: jobs that
        would wait forever (a typo in a task name, an app not deployed)."""
        handled = self._handled(stale_after_s).where(tasks.c.task == jobs.c.task)
        statement = (
            sa.select(jobs.c.task, sa.func.count())
            .where(jobs.c.state == sa.literal_column("'queued'"), jobs.c.run_at <= self._now(), ~handled.exists())
            .group_by(jobs.c.task)
            .order_by(jobs.c.task)
        )
        return dict(self._read("unhandled", lambda c: c.execute(statement).all()))

    def processes(self, stale_after_s: float) -> list[ProcessInfo]:
        """Every registered process, oldest first; stale if silent for ``stale_after_s``."""
        stale = processes.c.heartbeat_at < self._at(-stale_after_s)
        statement = sa.select(processes, sa.case((stale, True), else_=False).label("stale")).order_by(
            processes.c.started_at, processes.c.owner
        )
        rows = self._read("processes", lambda c: c.execute(statement).all())
        return [ProcessInfo(r.owner, r.host, r.pid, r.role, r.started_at, r.heartbeat_at, bool(r.stale)) for r in rows]
