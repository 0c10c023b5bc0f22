"""Claiming ahead (PostgreSQL): a worker claims its next batch while it runs the current one.

Seen from outside, in the jobs' rows: every claim has its own owner (``<worker>/N``),
so two claims of one worker running at once are two owners with one prefix.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.conftest import Database, make_database
from tests.supervisor.app import slow_task
from tests.supervisor.helpers import Launcher, write_config

BATCH = 10


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    return make_database("postgresql", tmp_path, request)


@pytest.fixture
def pg_queue(pg: Database) -> Any:
    q = pg.connect()
    yield q
    q.close()


def running_claims(admin: psycopg.Connection[Any], database: Database) -> Counter[str]:
    """Running jobs per claim owner."""
    rows = admin.execute(
        f'SELECT owner, count(*) FROM "{database.schema}".burrow_jobs WHERE state = %s GROUP BY owner', ["running"]
    ).fetchall()
    return Counter({owner: count for owner, count in rows})


def two_claims_of_one_worker(admin: psycopg.Connection[Any], database: Database) -> list[str] | None:
    owners = sorted(running_claims(admin, database))
    workers = {owner.rsplit("/", 1)[0] for owner in owners}
    return owners if len(owners) >= 2 and len(workers) == 1 else None


def states(queue: JobQueue, ids: list[int]) -> Counter[tuple[JobState, int]]:
    return Counter((info.state, info.attempts) for info in map(queue.job, ids))


def test_short_jobs_have_the_next_batch_claimed_while_one_runs(
    pg: Database, pg_queue: JobQueue, postgres_admin: psycopg.Connection[Any], launcher: Launcher, tmp_path: Path
) -> None:
    ids = slow_task.enqueue_many(pg_queue, [0.01] * 300)  # 10 ms each: a batch of 10 is 100 ms
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", pg, workers=1, batch_size=BATCH))
    owners = supervisor.wait(lambda: two_claims_of_one_worker(postgres_admin, pg), 20, "two claims running at once")
    assert len(owners) == 2  # never more than one batch ahead
    supervisor.wait(lambda: states(pg_queue, ids) == Counter({(JobState.SUCCEEDED, 1): 300}), 30, "every job once")
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_a_stopping_worker_hands_back_the_batch_it_claimed_ahead(
    pg: Database, pg_queue: JobQueue, postgres_admin: psycopg.Connection[Any], launcher: Launcher, tmp_path: Path
) -> None:
    ids = slow_task.enqueue_many(pg_queue, [0.01] * 500)
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", pg, workers=1, batch_size=BATCH))
    supervisor.wait(lambda: two_claims_of_one_worker(postgres_admin, pg), 20, "two claims running at once")
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0

    assert running_claims(postgres_admin, pg) == Counter()
    ended = states(pg_queue, ids)
    # Nothing lost: each job ran once or is back in the queue with its attempt given back.
    assert set(ended) <= {(JobState.SUCCEEDED, 1), (JobState.QUEUED, 0)}, ended
    assert sum(ended.values()) == 500
    # The rest of the running batch (at most BATCH - 1 jobs) and the whole batch
    # claimed ahead were handed back.
    assert ended[(JobState.QUEUED, 0)] >= BATCH, ended
    [exited] = supervisor.events("worker_exited")
    assert exited["reason"] == "worker exited with exit status 0"


def test_slow_jobs_are_never_claimed_ahead(
    pg: Database, pg_queue: JobQueue, postgres_admin: psycopg.Connection[Any], launcher: Launcher, tmp_path: Path
) -> None:
    ids = slow_task.enqueue_many(pg_queue, [0.2] * 6)  # 200 ms each: claimed one at a time
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", pg, workers=1, batch_size=BATCH))
    most = 0

    def done() -> bool:
        nonlocal most
        most = max(most, sum(running_claims(postgres_admin, pg).values()))
        return states(pg_queue, ids) == Counter({(JobState.SUCCEEDED, 1): 6})

    supervisor.wait(done, 30, "every slow job once")
    assert most == 1  # one job claimed at a time, none ahead
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
