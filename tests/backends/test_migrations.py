"""Migrations: connect migrates a new database once, also when many connect together."""

from __future__ import annotations

import threading

from burrow.backends.base import JobState
from burrow.queue import JobQueue
from tests.backends.helpers import rows
from tests.conftest import Database


def test_connect_migrates_once(database: Database) -> None:
    with database.connect() as first:
        job_id = first.enqueue("mig.task", {"a": 1})
        with database.connect() as second:
            assert second.job(job_id).state is JobState.QUEUED
    assert rows(database, "SELECT version FROM burrow_schema_version") == [(1,)]


CONNECTORS = 8


def test_concurrent_connects_migrate_once(database: Database) -> None:
    """Processes starting together on a new database: one migrates, none fails."""
    errors: list[BaseException] = []
    queues: list[JobQueue] = []
    barrier = threading.Barrier(CONNECTORS)

    def connect() -> None:
        try:
            barrier.wait(timeout=10)
            queues.append(database.connect())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(CONNECTORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert len(queues) == CONNECTORS
        job_id = queues[0].enqueue("mig.task", {})
        assert queues[-1].job(job_id).state is JobState.QUEUED
    finally:
        for q in queues:
            q.close()
    assert rows(database, "SELECT version FROM burrow_schema_version") == [(1,)]
