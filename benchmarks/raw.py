"""The raw-SQL baseline: burrow's claim, completion and insert statements, issued directly.

No burrow code runs here, only sqlite3 or psycopg. The statements are the ones
burrow's backends issue (docs/architecture.md, "Storage"), written out by hand:

- PostgreSQL claim: ``WITH picked AS MATERIALIZED (SELECT id ... ORDER BY ... LIMIT n
  FOR UPDATE SKIP LOCKED) UPDATE ... WHERE id = ANY(ARRAY(SELECT id FROM picked))
  RETURNING``, one transaction;
  completion: one ``UPDATE ... FROM unnest(arrays)`` per batch, fenced on (id, owner,
  attempts). Each is a single statement sent in autocommit mode, one round trip
  and one commit, as burrow sends them (no BEGIN/COMMIT round trips around
  them). Prepared from their sixth run, as burrow's are, under
  ``plan_cache_mode = force_custom_plan``, so the server plans each run with the
  values it will run with.
- SQLite claim: ``BEGIN IMMEDIATE; UPDATE ... WHERE id IN (SELECT id ... LIMIT n)
  RETURNING ...; COMMIT``; completion: ``BEGIN IMMEDIATE``, one fenced
  ``executemany``, ``COMMIT``.
- Enqueue: one transaction per call, each job's id known by its position: on
  PostgreSQL one statement that draws ids from the sequence, inserts from
  ``unnest`` and sends ``pg_notify``; on SQLite, under the write lock, the largest id
  read and one multi-row ``INSERT`` with the next ids.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import time
from typing import Any

from psycopg import sql

from benchmarks.target import NOOP, UTC, Target, sqlite_stamp

LEASE_S = 30.0

_PG_CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT id FROM {t}
    WHERE state = 'queued' AND run_at <= now() AND task = ANY(%s)
    ORDER BY priority DESC, run_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
)
UPDATE {t} AS j
SET state = 'running', attempts = j.attempts + 1, owner = %s, started_at = now(),
    lease_expires_at = now() + make_interval(secs => %s)
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.task, j.payload, j.priority, j.attempts, j.max_retries, j.run_at, j.snoozes
"""

_PG_COMPLETE = """
UPDATE {t} AS j
SET state = 'succeeded', attempts = attempts - 0, finished_at = now(), result = v.result,
    last_error = coalesce(v.error, j.last_error), owner = NULL, lease_expires_at = NULL
FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::bytea[], %s::text[]) AS v(id, owner, attempt, result, error)
WHERE j.id = v.id AND j.owner = v.owner AND j.attempts = v.attempt AND j.state = 'running'
RETURNING j.id
"""

_SQLITE_CLAIM = """
UPDATE burrow_jobs
SET state = 'running', attempts = attempts + 1, owner = ?, started_at = ?, lease_expires_at = ?
WHERE id IN (
    SELECT id FROM burrow_jobs
    WHERE state = 'queued' AND run_at <= ? AND task IN (?)
    ORDER BY priority DESC, run_at, id
    LIMIT ?
)
RETURNING id, task, payload, priority, attempts, max_retries, run_at, snoozes
"""

_SQLITE_COMPLETE = """
UPDATE burrow_jobs
SET state = 'succeeded', attempts = attempts - 0, finished_at = ?, result = ?, last_error = coalesce(?, last_error),
    owner = NULL, lease_expires_at = NULL
WHERE id = ? AND owner = ? AND attempts = ? AND state = 'running'
"""

# Ids drawn position by position, as burrow draws them (so each id is known by its job).
_PG_ENQUEUE = """
WITH v AS (
    SELECT * FROM unnest(%(task)s::varchar[], %(payload)s::bytea[], %(priority)s::int[],
                         %(max_retries)s::int[], %(run_at)s::timestamptz[])
           WITH ORDINALITY AS v(task, payload, priority, max_retries, run_at, n)
), numbered AS (
    SELECT n, nextval(%(seq)s::regclass) AS id FROM (SELECT n FROM v ORDER BY n) AS o
), inserted AS (
    INSERT INTO {t} (id, task, payload, priority, max_retries, run_at, state, attempts, created_at)
    SELECT numbered.id, v.task, v.payload, v.priority, v.max_retries, coalesce(v.run_at, now()), 'queued', 0, now()
    FROM v JOIN numbered USING (n)
    RETURNING id
), notified AS (
    SELECT pg_notify(%(channel)s, %(notice)s)
)
SELECT numbered.n, inserted.id FROM inserted JOIN numbered USING (id)
UNION ALL SELECT NULL, NULL FROM notified
"""
# The ids after the largest one handed out: in the table, or before the last delete
# (burrow_id_floor, migration 8).
_SQLITE_NEXT_ID = (
    "SELECT max((SELECT coalesce(max(id), 0) FROM burrow_jobs),"
    " coalesce((SELECT max_id FROM burrow_id_floor WHERE name = 'burrow_jobs'), 0)) + 1"
)
_SQLITE_COLUMNS = "(id, task, payload, priority, max_retries, run_at, created_at)"


def raw_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:raw:{secrets.token_hex(4)}"


class RawQueue:
    """One process's direct connection, running the baseline loops."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.kind = target.kind
        self.owner = raw_owner()
        self._insert_cache: dict[int, Any] = {}
        if self.kind == "postgresql":
            self.conn: Any = target.pg_connect(prepare_threshold=None)
            # Claims and completions are single statements: autocommit, like burrow's hot path;
            # prepared, but never planned generically, as burrow's held connection does (a generic
            # plan for the claim hash-joins the whole table: measured here, batch 1000 fell from
            # ~37,000 to ~2,000 jobs/s over four rounds).
            self.claim_conn: Any = target.pg_connect(autocommit=True)
            self.claim_conn.execute("SET plan_cache_mode = force_custom_plan")
            self._claims: dict[int, str] = {}
            self.complete_sql = sql.SQL(_PG_COMPLETE).format(t=target.table).as_string(self.conn)
            self.enqueue_sql = sql.SQL(_PG_ENQUEUE).format(t=target.table).as_string(self.conn)
        else:
            self.conn = target.sqlite_connect()

    def close(self) -> None:
        self.conn.close()
        if self.kind == "postgresql":
            self.claim_conn.close()

    # -- claim + complete ---------------------------------------------------------

    def claim_loop(self, batch: int, deadline: float, result: bytes | None = None) -> int:
        """Claim ``batch`` jobs and complete them, until ``deadline`` or an empty claim."""
        return self._pg_loop(batch, deadline, result) if self.kind == "postgresql" else self._sqlite_loop(batch, deadline, result)

    def claim_sql(self, batch: int) -> str:
        """The limit is a literal, as burrow renders it: a generic plan for ``LIMIT $n`` guesses a
        tenth of the table and hash-joins all of it."""
        if batch not in self._claims:
            self._claims[batch] = sql.SQL(_PG_CLAIM).format(t=self.target.table, limit=sql.Literal(batch)).as_string(self.conn)
        return self._claims[batch]

    def _pg_loop(self, batch: int, deadline: float, result: bytes | None) -> int:
        conn, claim, complete, owner = self.claim_conn, self.claim_sql(batch), self.complete_sql, self.owner
        cur = conn.cursor()
        tasks = [NOOP]
        done = 0
        while time.monotonic() < deadline:
            cur.execute(claim, (tasks, owner, LEASE_S))
            rows = cur.fetchall()
            if not rows:
                break
            n = len(rows)
            cur.execute(complete, ([r[0] for r in rows], [owner] * n, [r[4] for r in rows], [result] * n, [None] * n))
            cur.fetchall()
            done += n
        cur.close()
        return done

    def _sqlite_loop(self, batch: int, deadline: float, result: bytes | None) -> int:
        conn, owner = self.conn, self.owner
        done = 0
        while time.monotonic() < deadline:
            now = dt.datetime.now(UTC)
            stamp = sqlite_stamp(now)
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                _SQLITE_CLAIM, (owner, stamp, sqlite_stamp(now + dt.timedelta(seconds=LEASE_S)), stamp, NOOP, batch)
            ).fetchall()
            conn.execute("COMMIT")
            if not rows:
                break
            finished = sqlite_stamp(dt.datetime.now(UTC))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_SQLITE_COMPLETE, [(finished, result, None, r[0], owner, r[4]) for r in rows])
            conn.execute("COMMIT")
            done += len(rows)
        return done

    # -- enqueue ------------------------------------------------------------------

    def enqueue(self, n: int, payload: bytes = b"{}") -> list[int]:
        """``n`` jobs in one transaction, ids by position, as burrow inserts them: on PostgreSQL
        one statement drawing ids from the sequence (and NOTIFY); on SQLite, under the write
        lock, the largest id read and a multi-row INSERT with the next ids."""
        if self.kind == "postgresql":
            arrays = {
                "task": [NOOP] * n, "payload": [payload] * n, "priority": [0] * n, "max_retries": [3] * n,
                "run_at": [None] * n, "seq": self.target.sequence, "channel": self.target.channel, "notice": NOOP,
            }
            with self.conn.cursor() as cur:
                cur.execute(self.enqueue_sql, arrays)
                rows = cur.fetchall()
            self.conn.commit()
            ids = [0] * n
            for position, job_id in rows:
                if position is not None:
                    ids[position - 1] = job_id
            return ids
        statement = self._insert_cache.get(n)
        if statement is None:
            values = ", ".join(["(?, ?, ?, 0, 3, ?, ?)"] * n)
            statement = "INSERT INTO burrow_jobs " + _SQLITE_COLUMNS + " VALUES " + values
            self._insert_cache[n] = statement
        now = sqlite_stamp(dt.datetime.now(UTC))
        self.conn.execute("BEGIN IMMEDIATE")
        first = self.conn.execute(_SQLITE_NEXT_ID).fetchone()[0]
        params: list[Any] = []
        for job_id in range(first, first + n):  # id, task, payload, run_at, created_at
            params += (job_id, NOOP, payload, now, now)
        self.conn.execute(statement, params)
        self.conn.execute("COMMIT")
        return list(range(first, first + n))
