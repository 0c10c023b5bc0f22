"""Where a benchmark's jobs live: a temporary SQLite file or a private PostgreSQL schema.

A :class:`Target` is plain data (it crosses into spawned processes) plus helpers
the harness uses between measurements: emptying and filling the jobs table
server-side (so a fill of 100,000 jobs takes a fraction of a second and no
measurement pays for the previous one's dead rows), and cheap "anything left?"
polls. None of this is on a measured path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import postgres_dsn

UTC = dt.timezone.utc
NOOP = "bench.noop"
EMPTY_PAYLOAD = b"{}"


def sqlite_stamp(when: dt.datetime) -> str:
    """A UTC datetime as SQLAlchemy stores it in SQLite (fixed width, so it sorts)."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_sqlite_stamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Target:
    kind: str  # "sqlite" | "postgresql"
    dsn: str  # burrow's DSN
    schema: str | None = None
    path: str | None = None  # SQLite file
    workdir: str = ""

    # -- lifecycle ----------------------------------------------------------------

    @classmethod
    def create(cls, kind: str) -> Target:
        workdir = tempfile.mkdtemp(prefix=f"burrow-bench-{kind}-")
        if kind == "sqlite":
            path = os.path.join(workdir, "bench.db")
            return cls(kind, f"sqlite:///{path}", path=path, workdir=workdir)
        schema = f"bench_{os.getpid()}_{secrets.token_hex(3)}"
        return cls(kind, postgres_dsn(), schema=schema, workdir=workdir)

    def migrate(self) -> None:
        """burrow creates its tables (and the schema) the way an application would."""
        import burrow

        burrow.connect(self.dsn, schema=self.schema).close()

    def drop_indexes(self, names: Sequence[str]) -> None:
        """What an index costs: the benchmark's schema without it (benchmarks.split)."""
        with self.admin() as conn:
            for name in names:
                if self.kind == "postgresql":
                    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(self.schema or "public", name)))
                else:
                    conn.execute(f'DROP INDEX "{name}"')

    def destroy(self) -> None:
        if self.kind == "postgresql":
            with contextlib.suppress(psycopg.Error), self.admin() as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema or "")))
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- raw connections ----------------------------------------------------------

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema or "public", "burrow_jobs")

    @property
    def history_table(self) -> sql.Identifier:
        return sql.Identifier(self.schema or "public", "burrow_job_history")

    @property
    def sequence(self) -> str:
        """The jobs' id sequence, as nextval's regclass text."""
        return f'"{self.schema or "public"}"."burrow_jobs_id_seq"'

    @property
    def channel(self) -> str:
        return f"burrow:{self.schema or 'public'}"

    def pg_connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn.replace("postgresql+psycopg://", "postgresql://"), **kwargs)

    def sqlite_connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path or "", isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextlib.contextmanager
    def admin(self) -> Iterator[Any]:
        """An autocommit connection for the harness's own statements."""
        if self.kind == "postgresql":
            conn = self.pg_connect(autocommit=True)
        else:
            conn = self.sqlite_connect()  # type: ignore[assignment]
        try:
            yield conn
        finally:
            conn.close()

    # -- filling and draining -----------------------------------------------------

    def reset(self, n: int = 0, task: str = NOOP, payload: bytes = EMPTY_PAYLOAD,
              special: bytes | None = None, every: int = 0, max_retries: int = 3) -> None:
        """Empty the tables, then insert ``n`` due jobs; every ``every``-th gets ``special``."""
        special = payload if special is None or every <= 0 else special
        every = every if every > 0 else 1
        if self.kind == "postgresql":
            with self.admin() as conn:
                conn.execute(sql.SQL("TRUNCATE {}, {} RESTART IDENTITY").format(self.table, self.history_table))
                if n:
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (task, priority, state, payload, attempts, max_retries, run_at, created_at)"
                            " SELECT %s, 0, 'queued', CASE WHEN g %% %s = 0 THEN %s::bytea ELSE %s::bytea END, 0, %s,"
                            " now() - interval '1 second', now() FROM generate_series(1, %s) AS g"
                        ).format(self.table),
                        (task, every, special, payload, max_retries, n),
                    )
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(self.table))
            return
        now = dt.datetime.now(UTC)
        with self.admin() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM burrow_jobs")
            conn.execute("DELETE FROM burrow_job_history")
            if n:
                conn.execute(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
                    " INSERT INTO burrow_jobs (task, priority, state, payload, attempts, max_retries, run_at, created_at)"
                    " SELECT ?, 0, 'queued', CASE WHEN x % ? = 0 THEN ? ELSE ? END, 0, ?, ?, ? FROM c",
                    (n, task, every, special, payload, max_retries,
                     sqlite_stamp(now - dt.timedelta(seconds=1)), sqlite_stamp(now)),
                )
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- a table that already holds many finished jobs (PostgreSQL) ---------------

    def add_finished(self, n: int, first: int = 1, state: str | None = None, spread: int | None = None,
                     varied: bool = False) -> None:
        """Insert ``n`` finished jobs as a day of production leaves them, and their history.

        Job ``g`` (``first`` to ``first + n - 1``) is, by ``g % 100``: failed for 0-1
        (4 attempts, an error, 4 history rows: 3 retried and the failure), cancelled
        for 2 (never started), succeeded after one retry for 3 (1 history row), else
        succeeded at the first attempt; ``state`` forces one state (a top-up). Tasks
        rotate over four names, one of them the drain's; payloads are about 60 bytes
        of JSON; results are empty (no-op tasks). Finished between 23 and 2 hours ago,
        in id order over ``spread`` jobs (default ``n``): none is past burrow's default
        retention (24 h succeeded and cancelled, 7 days failed), all are past 1 hour.

        ``varied``: payloads of 60 to 460 bytes (a "note" of 0 to 400 characters spread
        evenly over the jobs, by a multiplicative hash of ``g``) instead of about 60, as
        an application's payloads vary: each page's room left over under the
        fillfactor then varies too, and many pages keep room for a small new job.
        """
        assert self.kind == "postgresql"
        spread = spread or n
        with self.admin() as conn, conn.transaction():
            before = conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(self.table)).fetchone()[0]
            conn.execute(
                sql.SQL(
                    "WITH r AS ("
                    " SELECT g, coalesce(%(state)s::text, CASE WHEN g %% 100 < 2 THEN 'failed'"
                    "   WHEN g %% 100 = 2 THEN 'cancelled' ELSE 'succeeded' END) AS state,"
                    "  now() - interval '23 hours' + (g %% %(spread)s)::float8 / %(spread)s * interval '21 hours' AS at,"
                    "  CASE WHEN %(varied)s THEN ', \"note\": \"' || repeat('x', ((g * 2654435761) %% 401)::int) || '\"'"
                    "   ELSE '' END AS note"
                    " FROM generate_series(%(first)s::bigint, %(first)s::bigint + %(n)s - 1) AS g)"
                    " INSERT INTO {} (task, priority, state, payload, attempts, max_retries, run_at, created_at,"
                    "  started_at, finished_at, last_error)"
                    " SELECT (ARRAY['app.send_email', 'app.resize_image', 'app.sync_account', %(noop)s])[1 + g %% 4],"
                    "  0, state,"
                    "  convert_to('{{\"account_id\": ' || g || ', \"template\": \"welcome\", \"locale\": \"en_GB\"'"
                    "   || note || '}}', 'UTF8'),"
                    "  CASE state WHEN 'failed' THEN 4 WHEN 'cancelled' THEN 0 ELSE CASE WHEN g %% 100 = 3 THEN 2 ELSE 1 END END,"
                    "  3, at - interval '3 seconds', at - interval '3 seconds',"
                    "  CASE WHEN state = 'cancelled' THEN NULL ELSE at - interval '40 milliseconds' END, at,"
                    "  CASE WHEN state = 'failed' THEN 'RuntimeError: upstream answered 503 Service Unavailable"
                    " (account ' || g || ')' END"
                    " FROM r ORDER BY g"
                ).format(self.table),
                {"state": state, "spread": spread, "first": first, "n": n, "noop": NOOP, "varied": varied},
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (job_id, attempt, event, error, at, host, pid, duration_s)"
                    " SELECT j.id, a, CASE WHEN a = j.attempts AND j.state = 'failed' THEN 'failed' ELSE 'retried' END,"
                    "  j.last_error, j.finished_at - (j.attempts - a) * interval '1 second', 'worker-host-1', 4242, 0.04"
                    " FROM {} AS j, generate_series(1, j.attempts) AS a"
                    " WHERE j.id > %s AND j.attempts > 1 AND (a < j.attempts OR j.state = 'failed')"
                ).format(self.history_table, self.table),
                (before,),
            )

    def vacuum_analyze(self) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(self.table))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(self.history_table))

    def drop_above(self, above_id: int) -> None:
        """Delete the jobs after ``above_id`` and their history (a drain's own jobs)."""
        assert self.kind == "postgresql"
        with self.admin() as conn, conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE job_id > %s").format(self.history_table), (above_id,))
            conn.execute(sql.SQL("DELETE FROM {} WHERE id > %s").format(self.table), (above_id,))

    def max_id(self) -> int:
        with self.admin() as conn:
            return int(conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(self.table)).fetchone()[0])

    def refill(self, n: int, above_id: int, task: str = NOOP, payload: bytes = EMPTY_PAYLOAD) -> None:
        """Like :meth:`reset` but the jobs up to ``above_id`` stay: delete the rest, insert
        ``n`` due jobs (ids after ``above_id``), ``VACUUM ANALYZE``."""
        assert self.kind == "postgresql"
        self.drop_above(above_id)
        with self.admin() as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (task, priority, state, payload, attempts, max_retries, run_at, created_at)"
                    " SELECT %s, 0, 'queued', %s, 0, 3, now() - interval '1 second', now() FROM generate_series(1, %s)"
                ).format(self.table),
                (task, payload, n),
            )
        self.vacuum_analyze()

    def add_jobs(self, n: int, task: str = NOOP, payload: bytes = EMPTY_PAYLOAD) -> None:
        """Insert ``n`` more due jobs without emptying anything (and wake PostgreSQL listeners)."""
        if self.kind == "postgresql":
            with self.admin() as conn, conn.transaction():
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (task, priority, state, payload, attempts, max_retries, run_at, created_at)"
                        " SELECT %s, 0, 'queued', %s, 0, 3, now(), now() FROM generate_series(1, %s)"
                    ).format(self.table),
                    (task, payload, n),
                )
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, task))
            return
        now = sqlite_stamp(dt.datetime.now(UTC))
        with self.admin() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
                " INSERT INTO burrow_jobs (task, priority, state, payload, attempts, max_retries, run_at, created_at)"
                " SELECT ?, 0, 'queued', ?, 0, 3, ?, ? FROM c",
                (n, task, payload, now, now),
            )
            conn.execute("COMMIT")

    def cancel_queued(self) -> None:
        """Mark every queued job cancelled (the harness ending a backlog it will not wait for)."""
        with self.admin() as conn:
            if self.kind == "postgresql":
                conn.execute(sql.SQL("UPDATE {} SET state = 'cancelled' WHERE state = 'queued'").format(self.table))
            else:
                conn.execute("UPDATE burrow_jobs SET state = 'cancelled' WHERE state = 'queued'")

    def unfinished(self, conn: Any) -> bool:
        """Whether any job is queued or running; two probes of the partial indexes, no count."""
        if self.kind == "postgresql":
            query = sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM {t} WHERE state = 'queued') OR EXISTS (SELECT 1 FROM {t} WHERE state = 'running')"
            ).format(t=self.table)
            return bool(conn.execute(query).fetchone()[0])
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM burrow_jobs WHERE state = 'queued')"
            " OR EXISTS (SELECT 1 FROM burrow_jobs WHERE state = 'running')"
        ).fetchone()
        return bool(row[0])

    def counts(self) -> dict[str, int]:
        with self.admin() as conn:
            if self.kind == "postgresql":
                rows = conn.execute(sql.SQL("SELECT state, count(*) FROM {} GROUP BY state").format(self.table)).fetchall()
            else:
                rows = conn.execute("SELECT state, count(*) FROM burrow_jobs GROUP BY state").fetchall()
        return {state: n for state, n in rows}

    def span(self, above_id: int = 0) -> tuple[int, float, int]:
        """(succeeded jobs, seconds from the first claim to the last finish, total attempts);
        ``above_id``: of the jobs after that id only (PostgreSQL), not the old rows kept below it."""
        with self.admin() as conn:
            if self.kind == "postgresql":
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at)), sum(attempts)"
                        " FROM {} WHERE state = 'succeeded' AND id > %s"
                    ).format(self.table),
                    (above_id,),
                ).fetchone()
                return int(row[0]), float(row[1] or 0.0), int(row[2] or 0)
            row = conn.execute(
                "SELECT count(*), min(started_at), max(finished_at), sum(attempts) FROM burrow_jobs WHERE state = 'succeeded'"
            ).fetchone()
            if not row[0]:
                return 0, 0.0, 0
            seconds = (parse_sqlite_stamp(row[2]) - parse_sqlite_stamp(row[1])).total_seconds()
            return int(row[0]), seconds, int(row[3])

    def last_finished(self, above_id: int = 0) -> float:
        """The latest ``finished_at`` (of the jobs after ``above_id``), as a Unix time."""
        with self.admin() as conn:
            if self.kind == "postgresql":
                row = conn.execute(
                    sql.SQL("SELECT extract(epoch FROM max(finished_at)) FROM {} WHERE id > %s").format(self.table),
                    (above_id,),
                ).fetchone()
                return float(row[0] or 0.0)
            row = conn.execute("SELECT max(finished_at) FROM burrow_jobs").fetchone()
            return parse_sqlite_stamp(row[0]).timestamp() if row[0] else 0.0

    def settings(self) -> dict[str, Any]:
        """What the database is set to for durability, for the JSON report."""
        with self.admin() as conn:
            if self.kind == "postgresql":
                names = ("server_version", "synchronous_commit", "fsync", "wal_level", "shared_buffers", "autovacuum",
                         "checkpoint_timeout", "max_wal_size", "full_page_writes")
                return {n: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0] for n in names}
            return {
                "sqlite_version": sqlite3.sqlite_version,
                "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": "NORMAL (set by burrow on every connection)",
                "path": str(Path(self.path or "")),
            }

