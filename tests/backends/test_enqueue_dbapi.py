"""``Backend.enqueue_dbapi``: burrow's INSERT on a caller's own DB-API connection (as
Django's, for burrow.django), inside the caller's transaction, on both backends."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest

from burrow.backends.sqlite import database_path
from burrow.errors import BackendError
from burrow.job import JobState, NewJob
from burrow.queue import JobQueue
from tests.conftest import Database


def _raw(database: Database) -> Any:
    """A driver connection of the caller's own, with a transaction open on it."""
    if database.kind == "sqlite":
        lite = sqlite3.connect(database_path(database.dsn), isolation_level=None, timeout=10)
        lite.execute("BEGIN")
        return lite
    conn = psycopg.connect(database.dsn, autocommit=False)
    if database.schema:
        conn.execute(f'SET search_path TO "{database.schema}"')  # what the caller's may be; burrow qualifies its names
    return conn


def _job(task: str = "dbapi.task") -> NewJob:
    return NewJob(task, b'{"n": 1}', 5, 0, None, queue="mail")


def test_the_job_exists_iff_the_callers_transaction_commits(database: Database, queue: JobQueue) -> None:
    raw = _raw(database)
    try:
        [lost] = queue.backend.enqueue_dbapi(raw, [_job()])
        raw.rollback() if database.kind == "postgresql" else raw.execute("ROLLBACK")
        assert queue.backend.get(lost) is None
        if database.kind == "sqlite":
            raw.execute("BEGIN")
        ids = queue.backend.enqueue_dbapi(raw, [_job(), _job("dbapi.other")])
        assert queue.backend.get(ids[0]) is None  # not committed yet: another connection cannot see it
        raw.commit() if database.kind == "postgresql" else raw.execute("COMMIT")
    finally:
        raw.close()
    jobs = [queue.job(job_id) for job_id in ids]
    assert [(j.task, j.state, j.priority, j.queue) for j in jobs] == [
        ("dbapi.task", JobState.QUEUED, 5, "mail"),
        ("dbapi.other", JobState.QUEUED, 5, "mail"),
    ]
    assert queue.enqueue("dbapi.task", {"n": 2}) > max(ids)


def test_driver_errors_are_backend_errors(database: Database, queue: JobQueue) -> None:
    raw = _raw(database)
    raw.close()
    with pytest.raises(BackendError):
        queue.backend.enqueue_dbapi(raw, [_job()])
    assert queue.backend.enqueue_dbapi(raw, []) == []
