"""burrow_processes: the supervisors and workers alive now, by their heartbeats.

Only for people and for cleaning up: no job depends on this table. A process that
stops heartbeating is forgotten; its jobs come back by lease expiry, not from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from burrow.backends.records import ProcessInfo
from burrow.backends.schema import processes
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
        statement = sa.delete(processes).where(processes.c.owner == owner)
        self._write("remove_process", lambda c: c.execute(statement))

    def reap_processes(self, stale_after_s: float) -> list[str]:
        """Forget processes that stopped heartbeating; their jobs come back by lease expiry."""
        statement = (
            sa.delete(processes).where(processes.c.heartbeat_at < self._at(-stale_after_s)).returning(processes.c.owner)
        )
        return self._write("reap_processes", lambda c: list(c.execute(statement).scalars()))

    def processes(self, stale_after_s: float) -> list[ProcessInfo]:
        """Every registered process, oldest first; stale if silent for ``stale_after_s``."""
        stale = processes.c.heartbeat_at < self._at(-stale_after_s)
        statement = sa.select(processes, sa.case((stale, True), else_=False).label("stale")).order_by(
            processes.c.started_at, processes.c.owner
        )
        rows = self._read("processes", lambda c: c.execute(statement).all())
        return [ProcessInfo(r.owner, r.host, r.pid, r.role, r.started_at, r.heartbeat_at, bool(r.stale)) for r in rows]
