"""Claiming ahead (PostgreSQL): a worker claims its next batch while it runs the current one.

Seen from outside, in the jobs' rows: with one worker, every claim is one
transaction, so its jobs share one ``started_at`` (the server's ``now()``), which
outcomes written later keep. A row's state is no witness: a job reported but not
yet written by the supervisor's outbox still reads ``running``.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from benchmarks.delay_proxy import DelayProxy
from burrow.job import JobState
from burrow.queue import JobQueue
from burrow.supervisor.worker import MOST_AHEAD
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


class Far:
    """The test's database, reached through a proxy that delays every round trip."""

    def __init__(self, dsn: str, schema: str | None) -> None:
        self.dsn, self.schema = dsn, schema


def pg_address(dsn: str) -> tuple[str, int]:
    url = urlsplit(dsn)
    return url.hostname or "127.0.0.1", url.port or 5432


def running_claims(admin: psycopg.Connection[Any], database: Database) -> Counter[str]:
    """Running jobs per claim owner."""
    rows = admin.execute(
        f'SELECT owner, count(*) FROM "{database.schema}".burrow_jobs WHERE state = %s GROUP BY owner', ["running"]
    ).fetchall()
    return Counter({owner: count for owner, count in rows})


def claims(admin: psycopg.Connection[Any], database: Database) -> list[tuple[float, int]]:
    """(when, how many jobs) of each claim so far, oldest first (one worker: one claim per started_at)."""
    rows = admin.execute(
        f'SELECT extract(epoch FROM started_at)::float8, count(*) FROM "{database.schema}".burrow_jobs'
        " WHERE started_at IS NOT NULL GROUP BY started_at ORDER BY started_at"
    ).fetchall()
    return [(when, count) for when, count in rows]


def states(queue: JobQueue, ids: list[int]) -> Counter[tuple[JobState, int]]:
    return Counter((info.state, info.attempts) for info in map(queue.job, ids))


def test_short_jobs_have_the_next_batch_claimed_while_one_runs(
    pg: Database, pg_queue: JobQueue, postgres_admin: psycopg.Connection[Any], launcher: Launcher, tmp_path: Path
) -> None:
    ids = slow_task.enqueue_many(pg_queue, [0.01] * 300)  # 10 ms each: a batch of 10 is 100 ms
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", pg, workers=1, batch_size=BATCH))
    supervisor.wait(lambda: states(pg_queue, ids) == Counter({(JobState.SUCCEEDED, 1): 300}), 30, "every job once")
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    made = claims(postgres_admin, pg)
    # Without claiming ahead, a claim comes after the previous claim's jobs ran
    # (10 ms of sleep each); the first claim ahead comes as its batch starts.
    assert any(nxt - when < count * 0.01 / 2 for (when, count), (nxt, _) in zip(made, made[1:])), made
    # Never more than one batch ahead: the claim after next waits for this batch to run.
    assert all(after - when >= count * 0.0095 for (when, count), (after, _) in zip(made, made[2:])), made
    # A claim returns long before a batch of 100 ms has run: never more than batch_size.
    assert all(count <= BATCH for _, count in made), made


def test_a_distant_database_gets_larger_claims_ahead_and_no_more(
    pg: Database, pg_queue: JobQueue, postgres_admin: psycopg.Connection[Any], launcher: Launcher, tmp_path: Path
) -> None:
    """Through a 30 ms round trip a batch of 10 near-instant jobs runs long before the
    claim ahead returns: the job loop waits for it, so the claims ahead grow, up to
    MOST_AHEAD times the claim size, and every job still runs once."""
    ids = slow_task.enqueue_many(pg_queue, [0.0] * 1500)
    with DelayProxy(pg_address(pg.dsn), rtt_ms=30) as proxy:
        far = Far(proxy.dsn(pg.dsn), pg.schema)
        supervisor = launcher.start(write_config(tmp_path / "jobs.toml", far, workers=1, batch_size=BATCH))
        supervisor.wait(lambda: states(pg_queue, ids) == Counter({(JobState.SUCCEEDED, 1): 1500}), 60, "every job once")
        supervisor.send(signal.SIGTERM)
        assert supervisor.wait_exit() == 0
    counts = [count for _, count in claims(postgres_admin, pg)]
    assert max(counts) > BATCH, counts
    assert max(counts) <= MOST_AHEAD * BATCH, counts


def test_a_stopping_worker_hands_back_the_batch_it_claimed_ahead(
    pg: Database, pg_queue: JobQueue, postgres_admin: psycopg.Connection[Any], launcher: Launcher, tmp_path: Path
) -> None:
    ids = slow_task.enqueue_many(pg_queue, [0.01] * 500)
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", pg, workers=1, batch_size=BATCH))
    # Short jobs seen (the first claim is 1 job), so each batch has the next one claimed ahead.
    supervisor.wait(lambda: len(claims(postgres_admin, pg)) >= 4, 20, "a few batches claimed")
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
    supervisor.wait(lambda: states(pg_queue, ids) == Counter({(JobState.SUCCEEDED, 1): 6}), 30, "every slow job once")
    made = claims(postgres_admin, pg)
    # One job a claim, each claimed after its predecessor ran its 200 ms: none ahead.
    assert [count for _, count in made] == [1] * 6, made
    assert all(later - earlier >= 0.19 for (earlier, _), (later, _) in zip(made, made[1:])), made
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
