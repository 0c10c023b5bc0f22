"""Write the first release's database, schema and data, as the upgrade test loads it.

Run with the first release (commit b1b8523) on the path, never with the current code:

    git worktree add /tmp/burrow-v1 b1b8523
    PYTHONPATH=/tmp/burrow-v1 python tests/backends/data/make_first_release.py tests/backends/data

It writes ``first_release.sqlite.sql`` (``iterdump`` of a SQLite file) and
``first_release.postgresql.sql`` (``pg_dump --inserts`` of a schema, its name
replaced by ``__SCHEMA__``), and ``first_release.expected.json``: every job and
history row as the first release read them back, which the upgraded database
must still give.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

import burrow
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind

POSTGRES_DSN = os.environ.get("BURROW_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
UTC = dt.timezone.utc
SCHEMA = "burrow_first_release"


def fill(q: burrow.JobQueue) -> list[int]:
    """One job in every state and history kind the first release could leave."""
    b = q.backend
    later = dt.datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    ids = [
        q.enqueue("v1.queued", {"n": 1}, priority=5),
        q.enqueue("v1.scheduled", {"n": 2}, run_at=later),
        q.enqueue("v1.succeeds", {"n": 3}),
        q.enqueue("v1.binary", {"n": 4}),
        q.enqueue("v1.retried", {"n": 5}, max_retries=2),
        q.enqueue("v1.fails", {"n": 6}, max_retries=1),
        q.enqueue("v1.running", {"n": 7}),
        q.enqueue("v1.cancelled", {"n": 8}),
        q.enqueue("v1.released", {"n": 9}),
    ]
    tasks = ["v1.succeeds", "v1.binary", "v1.retried", "v1.fails", "v1.running", "v1.released"]
    claimed = {job.task: job for job in b.claim(ClaimRequest(tasks, 10, "v1-owner", 30.0))}

    def outcome(task: str, kind: OutcomeKind, **kw: object) -> Outcome:
        job = claimed[task]
        return Outcome(job.id, job.owner, job.attempt, kind, **kw)  # type: ignore[arg-type]

    b.finish([
        outcome("v1.succeeds", OutcomeKind.SUCCEEDED, result=b'{"sum": 3}'),
        outcome("v1.binary", OutcomeKind.SUCCEEDED, result=bytes(range(256))),
        outcome("v1.retried", OutcomeKind.RETRY, error="ValueError: first try\nTraceback ...", retry_in_s=0),
        outcome("v1.fails", OutcomeKind.RETRY, error="OSError: once", retry_in_s=0),
        outcome("v1.released", OutcomeKind.RELEASED, error="released: shutdown_timeout reached"),
    ])
    again = {job.task: job for job in b.claim(ClaimRequest(["v1.retried", "v1.fails"], 10, "v1-owner", 30.0))}
    b.finish([
        Outcome(again["v1.retried"].id, "v1-owner", 2, OutcomeKind.SUCCEEDED, result=b"42"),
        Outcome(again["v1.fails"].id, "v1-owner", 2, OutcomeKind.FAILED, error="OSError: twice\nTraceback ..."),
    ])
    q.dequeue(ids[7])
    b.register_process("v1-host:1:supervisor:abcd", "v1-host", 1, "supervisor")
    return ids


def expected(q: burrow.JobQueue, ids: list[int]) -> dict[str, object]:
    def stamp(value: dt.datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    jobs = []
    for job_id in ids:
        info = q.job(job_id)
        record = q.backend.get(job_id)
        assert record is not None
        jobs.append({
            "id": info.id, "task": info.task, "state": str(info.state), "priority": info.priority,
            "attempts": info.attempts, "max_retries": info.max_retries, "run_at": stamp(info.run_at),
            "created_at": stamp(info.created_at), "started_at": stamp(info.started_at),
            "finished_at": stamp(info.finished_at), "last_error": info.last_error,
            "result": None if info.result is None else base64.b64encode(info.result).decode(),
            "payload": base64.b64encode(record.payload).decode(), "owner": record.owner,
            "history": [[h.attempt, h.event, h.error, stamp(h.at)] for h in q.history(job_id)],
        })
    return {"jobs": jobs}


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v1.db"
        q = burrow.connect(f"sqlite:///{path}")
        ids = fill(q)
        sqlite_expected = expected(q, ids)
        q.close()
        with sqlite3.connect(path) as conn:
            (out / "first_release.sqlite.sql").write_text("\n".join(conn.iterdump()) + "\n")

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    q = burrow.connect(POSTGRES_DSN, schema=SCHEMA)
    pg_ids = fill(q)
    pg_expected = expected(q, pg_ids)
    q.close()
    dump = subprocess.run(
        ["pg_dump", "--schema", SCHEMA, "--inserts", "--no-owner", "--no-privileges", "--no-comments", POSTGRES_DSN],
        check=True, capture_output=True, text=True,
    ).stdout
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA "{SCHEMA}" CASCADE')
    lines = [line for line in dump.splitlines() if line and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\"))]
    text = re.sub(rf"\b{SCHEMA}\b", "__SCHEMA__", "\n".join(lines)) + "\n"
    (out / "first_release.postgresql.sql").write_text(text)
    (out / "first_release.expected.json").write_text(
        json.dumps({"sqlite": sqlite_expected, "postgresql": pg_expected}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
