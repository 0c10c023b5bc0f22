"""Flow control at the claim, on both backends: named queues and concurrency limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

import pytest

import burrow
from burrow.job import JobState
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind, QueueFilter
from burrow.errors import BurrowError
from burrow.queue import JobQueue
from tests.backends.helpers import race, rows
from tests.conftest import POSTGRES_DSN, Database

# -- named queues ------------------------------------------------------------------------


def test_jobs_go_to_their_queue(queue: JobQueue) -> None:
    reports: burrow.TaskDefinition[Any] = burrow.define_task("fc.report", lambda p: None, burrow.with_queue("reports"))
    plain = queue.enqueue("fc.plain", {})
    routed = reports.enqueue(queue, {})
    explicit = queue.enqueue("fc.plain", {}, queue="mail")
    [many] = reports.enqueue_many(queue, [{}])
    assert [queue.job(i).queue for i in (plain, routed, explicit, many)] == ["default", "reports", "mail", "reports"]
    with pytest.raises(BurrowError, match="invalid queue name 'no spaces'"):
        queue.enqueue("fc.plain", {}, queue="no spaces")
    with pytest.raises(BurrowError, match="invalid queue name"):
        burrow.with_queue("")


def test_a_claim_takes_its_queues_only(queue: JobQueue) -> None:
    tasks = ["fc.a", "fc.b"]
    mail = [queue.enqueue("fc.a", {}, queue="mail", priority=p) for p in (1, 5)]
    bulk = [queue.enqueue("fc.b", {}, queue="bulk") for _ in range(3)]
    other = queue.enqueue("fc.a", {})
    only_mail = queue.backend.claim(ClaimRequest(tasks, 10, "o1", 30, queues=QueueFilter(("mail",), exclude=False)))
    assert [j.id for j in only_mail] == [mail[1], mail[0]]  # priority orders jobs within a queue
    but_bulk = queue.backend.claim(ClaimRequest(tasks, 10, "o2", 30, queues=QueueFilter(("bulk", "mail"), exclude=True)))
    assert [j.id for j in but_bulk] == [other]
    assert sorted(j.id for j in queue.backend.claim(ClaimRequest(tasks, 10, "o3", 30))) == bulk


# -- concurrency limits ------------------------------------------------------------------


def _running(queue: JobQueue, task: str) -> int:
    return sum(1 for job in queue.jobs(task=task, state="running", limit=1000))


def test_a_limited_task_runs_at_most_n_and_does_not_block_others(queue: JobQueue) -> None:
    queue.handle("fc.api", lambda data: None, burrow.with_concurrency(2))
    queue.handle("fc.free", lambda data: None)
    api = queue.enqueue_many("fc.api", [{"n": i} for i in range(6)])
    free = queue.enqueue_many("fc.free", [{"n": i} for i in range(3)])
    first = queue.claim(["fc.api", "fc.free"], 10)
    assert sorted(j.id for j in first) == sorted(api[:2] + free)  # in order, and the others pass
    assert queue.claim(["fc.api", "fc.free"], 10) == []
    done = [j for j in first if j.task == "fc.api"][0]
    assert queue.backend.finish([Outcome(done.id, done.owner, done.attempt, OutcomeKind.SUCCEEDED)]) == []
    [next_one] = queue.claim(["fc.api", "fc.free"], 10)
    assert next_one.id == api[2]
    assert _running(queue, "fc.api") == 2
    assert queue.drain() == 0  # drain claims through the same limit: nothing free to start


def _claim_repeatedly(go: Callable[[], None], database: Database, tries: int) -> list[int]:
    q = database.connect()
    try:
        q.handle("fc.race", lambda data: None, burrow.with_concurrency(2))
        go()
        got = []
        for _ in range(tries):
            got += [j.id for j in q.claim(["fc.race"], 3)]  # claimed and held: never finished
        return got
    finally:
        q.close()


def test_concurrent_claimers_never_start_more_than_the_limit(database: Database) -> None:
    with database.connect() as q:
        q.enqueue_many("fc.race", [{"n": i} for i in range(30)])
    claimed = [job_id for got in race(_claim_repeatedly, database, 20) for job_id in got]
    assert len(claimed) == 2 and len(set(claimed)) == 2
    with database.connect() as q:
        assert q.counts()[JobState.RUNNING] == 2


# -- the access paths -------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_queue_and_limited_claims_use_their_indexes(database: Database) -> None:
    """A flood in one queue, a few jobs in another: the few are found without wading
    through the flood, and a limited task's pick is an ordered range of its own."""
    with database.connect() as q:
        q.enqueue_many("fc.plan", [{}] * 20_000, queue="bulk")
        q.enqueue_many("fc.plan", [{}] * 5, queue="mail")
        q.enqueue_many("fc.limited", [{}] * 5)
        rows(database, "ANALYZE burrow_jobs")
        backend: Any = q.backend
        named = backend.claim_sql(10, QueueFilter(("mail",), exclude=False))
        limited = backend.limited_claim_sql(10)
        plan_named = _explain(database, named, {"tasks": ["fc.plan"], "queues": ["mail"], "owner": "o", "lease_s": 30.0})
        assert "burrow_jobs_queue_idx" in plan_named
        params = {"tasks": ["fc.plan"], "queues": [], "limited": ["fc.limited"], "maxes": [2], "owner": "o", "lease_s": 30.0}
        assert "burrow_jobs_task_queued_idx" in _explain(database, limited, params)


def _explain(database: Database, statement: str, params: dict[str, Any]) -> str:
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{database.schema}"')
        plan = conn.execute("EXPLAIN " + statement, {**params, "now": None}).fetchall()  # EXPLAIN runs nothing
        return "\n".join(row[0] for row in plan)
