"""The fixed raw baseline: the textbook job-queue loop, written once, owing nothing to burrow.

``raw.py`` issues burrow's own statements, so when burrow's claim or finish gets
heavier that baseline slows down with it, and a ratio to it cannot show the loss.
This one is frozen: its own table (:data:`PG_DDL`, :data:`SQLITE_DDL`), its own
partial index on queued jobs and its own statements, none of them derived from
burrow's schema or SQL. Do not change it to follow burrow: its worth is that it
stays put, so that a figure measured against it today compares with one measured
against it next year.

The loop, per process, until the queue is empty:

- PostgreSQL: claim N in one statement (autocommit, so one round trip and one
  commit), ``WITH c AS MATERIALIZED (SELECT id ... WHERE state = 'queued' AND
  run_at <= now() ORDER BY priority DESC, id LIMIT N FOR UPDATE SKIP LOCKED)
  UPDATE ... SET state = 'running' ... FROM c ... RETURNING id, payload``; hand
  each payload (jsonb, decoded by psycopg) to a no-op function; then ONE
  ``UPDATE ... SET state = 'done' WHERE id = ANY(ids)`` for the batch.
  Statements are sent unprepared, the limit a literal, so the server plans each
  with the value it runs with.
- SQLite: ``BEGIN IMMEDIATE; UPDATE ... WHERE id IN (SELECT id ... LIMIT N)
  RETURNING id, payload; COMMIT``, the payload (JSON text) decoded and handed to
  the no-op, then ``BEGIN IMMEDIATE; UPDATE ... SET state = 'done' WHERE id IN
  (...); COMMIT``. WAL, ``synchronous = NORMAL``, SQLite's busy handler.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from typing import Any

from psycopg import sql

from benchmarks.target import Target

TABLE = "fixed_jobs"

PG_DDL = (
    """CREATE TABLE IF NOT EXISTS {t} (
    id          bigserial PRIMARY KEY,
    queue       text        NOT NULL DEFAULT 'default',
    task        text        NOT NULL,
    state       text        NOT NULL DEFAULT 'queued',
    priority    integer     NOT NULL DEFAULT 0,
    run_at      timestamptz NOT NULL DEFAULT now(),
    payload     jsonb       NOT NULL DEFAULT '{{}}',
    attempts    integer     NOT NULL DEFAULT 0,
    locked_by   text,
    locked_at   timestamptz,
    finished_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
)""",
    "CREATE INDEX IF NOT EXISTS fixed_jobs_queued_idx ON {t} (priority DESC, id) WHERE state = 'queued'",
)

SQLITE_DDL = (
    """CREATE TABLE IF NOT EXISTS fixed_jobs (
    id          INTEGER PRIMARY KEY,
    queue       TEXT    NOT NULL DEFAULT 'default',
    task        TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'queued',
    priority    INTEGER NOT NULL DEFAULT 0,
    run_at      REAL    NOT NULL,
    payload     TEXT    NOT NULL DEFAULT '{}',
    attempts    INTEGER NOT NULL DEFAULT 0,
    locked_by   TEXT,
    locked_at   REAL,
    finished_at REAL,
    created_at  REAL    NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS fixed_jobs_queued_idx ON fixed_jobs (priority DESC, id) WHERE state = 'queued'",
)

_PG_CLAIM = """
WITH c AS MATERIALIZED (
    SELECT id FROM {t}
    WHERE state = 'queued' AND run_at <= now()
    ORDER BY priority DESC, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
)
UPDATE {t} AS j
SET state = 'running', attempts = j.attempts + 1, locked_by = %s, locked_at = now()
FROM c WHERE j.id = c.id
RETURNING j.id, j.payload
"""

_PG_DONE = "UPDATE {t} SET state = 'done', finished_at = now() WHERE id = ANY(%s)"

_SQLITE_CLAIM = """
UPDATE fixed_jobs
SET state = 'running', attempts = attempts + 1, locked_by = ?, locked_at = ?
WHERE id IN (
    SELECT id FROM fixed_jobs
    WHERE state = 'queued' AND run_at <= ?
    ORDER BY priority DESC, id
    LIMIT ?
)
RETURNING id, payload
"""

_SQLITE_DONE = "UPDATE fixed_jobs SET state = 'done', finished_at = ? WHERE id IN ({marks})"


def handle(payload: Any) -> None:
    """The job: nothing."""


def _pg_table(target: Target) -> sql.Identifier:
    return sql.Identifier(target.schema or "public", TABLE)


def fill(target: Target, n: int) -> None:
    """Empty the fixed table (creating it the first time) and insert ``n`` due jobs."""
    if target.kind == "postgresql":
        t = _pg_table(target)
        with target.admin() as conn:
            for statement in PG_DDL:
                conn.execute(sql.SQL(statement).format(t=t))
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(t))
            if n:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (task, payload, run_at) SELECT 'bench.noop', '{{}}', now() - interval '1 second'"
                        " FROM generate_series(1, %s)"
                    ).format(t),
                    (n,),
                )
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(t))
        return
    now = time.time()
    with target.admin() as conn:
        for statement in SQLITE_DDL:
            conn.execute(statement)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM fixed_jobs")
        if n:
            conn.execute(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
                " INSERT INTO fixed_jobs (task, payload, run_at, created_at) SELECT 'bench.noop', '{}', ?, ? FROM c",
                (n, now - 1.0, now),
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class FixedQueue:
    """One process's connection running the textbook loop (see the module docstring)."""

    def __init__(self, target: Target) -> None:
        self.kind = target.kind
        self.worker = f"{socket.gethostname()}:{os.getpid()}:fixed:{secrets.token_hex(4)}"
        self._claims: dict[int, str] = {}
        self._dones: dict[int, str] = {}
        if self.kind == "postgresql":
            self.conn: Any = target.pg_connect(prepare_threshold=None, autocommit=True)
            self._table = _pg_table(target)
            self._done = sql.SQL(_PG_DONE).format(t=self._table).as_string(self.conn)
        else:
            self.conn = target.sqlite_connect()

    def close(self) -> None:
        self.conn.close()

    def claim_loop(self, batch: int, deadline: float, result: bytes | None = None) -> int:
        """Claim ``batch``, run them, mark them done; until ``deadline`` or an empty claim.
        ``result`` is not written (the textbook loop stores none)."""
        return self._pg_loop(batch, deadline) if self.kind == "postgresql" else self._sqlite_loop(batch, deadline)

    def _pg_loop(self, batch: int, deadline: float) -> int:
        claim = self._claims.get(batch)
        if claim is None:
            claim = sql.SQL(_PG_CLAIM).format(t=self._table, limit=sql.Literal(batch)).as_string(self.conn)
            self._claims[batch] = claim
        cur = self.conn.cursor()
        done = 0
        while time.monotonic() < deadline:
            rows = cur.execute(claim, (self.worker,)).fetchall()
            if not rows:
                break
            for _, payload in rows:
                handle(payload)
            cur.execute(self._done, ([r[0] for r in rows],))
            done += len(rows)
        cur.close()
        return done

    def _sqlite_loop(self, batch: int, deadline: float) -> int:
        conn = self.conn
        done = 0
        while time.monotonic() < deadline:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(_SQLITE_CLAIM, (self.worker, now, now, batch)).fetchall()
            conn.execute("COMMIT")
            if not rows:
                break
            for _, payload in rows:
                handle(json.loads(payload))
            n = len(rows)
            done_sql = self._dones.get(n)
            if done_sql is None:
                done_sql = self._dones[n] = _SQLITE_DONE.format(marks=", ".join("?" * n))
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(done_sql, (time.time(), *(r[0] for r in rows)))
            conn.execute("COMMIT")
            done += n
        return done
