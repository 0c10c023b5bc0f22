"""The operators' API: listing, counts, retry, cancel, delete, prune, processes (both backends)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sqlite3
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

import burrow
from burrow.backends.records import ClaimRequest, HistoryEvent, Outcome, OutcomeKind
from burrow.job import JobState
from burrow.errors import BurrowError, JobNotFound
from burrow.queue import JobQueue
from tests.backends.helpers import drain_all
from tests.conftest import POSTGRES_DSN, Database, FakeClock


def _fail(data: bytes) -> None:
    raise ValueError("boom")


def _fill(q: JobQueue) -> dict[str, list[int]]:
    """Two tasks' jobs in every state: ok.* succeed, bad.* fail, the rest stay queued or get cancelled."""
    if "ok.task" not in q.registrations:
        q.handle("ok.task", lambda data: None)
        q.handle("bad.task", _fail, burrow.with_max_retries(0))
    ids = {
        "ok": q.enqueue_many("ok.task", [{"n": i} for i in range(3)]),
        "bad": q.enqueue_many("bad.task", [{"n": i} for i in range(2)]),
        "queued": q.enqueue_many("other.task", [{"n": i} for i in range(2)]),
        "cancelled": [q.enqueue("other.task", {"n": 9})],
    }
    assert q.cancel(ids["cancelled"][0])
    assert drain_all(q) == 5
    return ids


# -- listing ------------------------------------------------------------------------


def test_listings_page_running_jobs_in_among_the_others(queue: JobQueue) -> None:
    """Running jobs sit in no listing index of their own kind (migration 10): every
    listing by task or state merges them in, newest first, and pages through them."""
    ids = queue.enqueue_many("mix.task", [{"n": i} for i in range(8)])
    other = queue.enqueue("other.task", {})
    running = {job.id for job in queue.backend.claim(ClaimRequest(["mix.task"], 8, "me", 60))[::2]}
    for job_id in set(ids) - running:
        assert queue.backend.finish([Outcome(job_id, "me", 1, OutcomeKind.RELEASED)]) == []
    newest = ids[::-1]
    listings: list[tuple[dict[str, Any], list[int]]] = [
        ({"task": "mix.task"}, newest),
        ({"state": ["queued", "running"], "task": "mix.task"}, newest),
        ({"state": ["running", "queued"]}, [other, *newest]),
    ]
    for filters, expected in listings:
        seen, before = [], None
        while page := queue.jobs(limit=3, before_id=before, **filters):
            seen += [job.id for job in page]
            before = page[-1].id
        assert seen == expected, filters
    assert [job.id for job in queue.jobs(state="running")] == sorted(running, reverse=True)
    assert [job.id for job in queue.jobs(state=["running", "succeeded"], task="mix.task")] == sorted(running, reverse=True)


def test_jobs_lists_newest_first_with_keyset_paging(queue: JobQueue) -> None:
    ids = queue.enqueue_many("list.task", [{"n": i} for i in range(7)])
    first = queue.jobs(limit=3)
    assert [j.id for j in first] == ids[::-1][:3]
    second = queue.jobs(limit=3, before_id=first[-1].id)
    assert [j.id for j in second] == ids[::-1][3:6]
    assert [j.id for j in queue.jobs(limit=3, before_id=second[-1].id)] == ids[:1]
    assert queue.jobs(before_id=ids[0]) == []
    job = queue.jobs(limit=1)[0]
    assert job == queue.job(job.id)  # the same JobInfo a read gives, payload included


def test_jobs_filters_by_state_and_task(queue: JobQueue) -> None:
    ids = _fill(queue)
    assert [j.id for j in queue.jobs(state="failed")] == ids["bad"][::-1]
    assert [j.id for j in queue.jobs(state=JobState.SUCCEEDED)] == ids["ok"][::-1]
    both = queue.jobs(state=["queued", "cancelled"])
    assert sorted(j.id for j in both) == sorted(ids["queued"] + ids["cancelled"])
    assert [j.id for j in queue.jobs(task="bad.task")] == ids["bad"][::-1]
    assert len(queue.jobs(task=["ok.task", "bad.task"])) == 5
    assert [j.id for j in queue.jobs(state="succeeded", task="bad.task")] == []
    failed = queue.jobs(state="failed")[0]
    assert failed.last_error is not None and failed.last_error.startswith("ValueError: boom")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state": "done"}, "unknown job state 'done'"),
        ({"state": ["failed", "nope"]}, "unknown job state 'nope'"),
        ({"limit": 0}, "limit must be an integer from 1 to 1000"),
        ({"limit": 1001}, "limit must be an integer from 1 to 1000"),
        ({"before_id": "7"}, "before_id must be a job id"),
        ({"task": "bad name"}, "invalid task name"),
    ],
)
def test_jobs_refuses_bad_filters(queue: JobQueue, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BurrowError, match=message):
        queue.jobs(**kwargs)


def test_counts_by_task_lists_every_state(queue: JobQueue) -> None:
    _fill(queue)
    counts = queue.counts_by_task()
    assert list(counts) == ["bad.task", "ok.task", "other.task"]
    assert counts["ok.task"] == {**dict.fromkeys(JobState, 0), JobState.SUCCEEDED: 3}
    assert counts["bad.task"][JobState.FAILED] == 2
    assert counts["other.task"] == {**dict.fromkeys(JobState, 0), JobState.QUEUED: 2, JobState.CANCELLED: 1}
    assert queue.backend.counts_by_task(active_only=True) == {"other.task": {JobState.QUEUED: 2}}
    assert queue.counts()[JobState.SUCCEEDED] == 3


# -- retry ----------------------------------------------------------------------------


def test_retry_puts_a_failed_job_back_as_new(queue: JobQueue) -> None:
    ids = _fill(queue)
    job_id = ids["bad"][0]
    assert queue.retry(job_id) is True
    info = queue.job(job_id)
    assert (info.state, info.attempts, info.last_error, info.result) == (JobState.QUEUED, 0, None, None)
    assert (info.started_at, info.finished_at, info.owner) == (None, None, None)
    history = queue.history(job_id)
    assert [(h.attempt, h.event) for h in history] == [(1, HistoryEvent.FAILED), (1, HistoryEvent.REQUEUED)]
    assert history[0].error is not None and history[0].error.startswith("ValueError: boom")
    assert history[1].error == "retried by an operator"
    # It runs again as a first attempt, and can be retried again.
    assert drain_all(queue) == 1
    assert queue.job(job_id).attempts == 1
    assert queue.retry(job_id) is True and queue.retry(ids["cancelled"][0]) is True


def test_retry_of_other_states_is_false(queue: JobQueue) -> None:
    ids = _fill(queue)
    assert queue.retry(ids["ok"][0]) is False
    assert queue.retry(ids["queued"][0]) is False
    [running] = queue.backend.claim(ClaimRequest(["other.task"], 1, "owner", 30))
    assert queue.retry(running.id) is False
    with pytest.raises(JobNotFound):
        queue.retry(10_000_000)


def test_retry_all_by_state_and_task(queue: JobQueue) -> None:
    ids = _fill(queue)
    more_bad = queue.enqueue_many("bad.task", [{"n": i} for i in range(3)])
    assert drain_all(queue) == 3
    queue.handle("odd.task", _fail, burrow.with_max_retries(0))
    odd = queue.enqueue("odd.task", {})
    assert drain_all(queue) == 1
    assert queue.retry_all(task="odd.task") == 1
    assert queue.job(odd).state is JobState.QUEUED
    assert queue.retry_all() == 5
    assert {queue.job(i).state for i in ids["bad"] + more_bad} == {JobState.QUEUED}
    assert queue.retry_all(state="cancelled") == 1
    assert queue.retry_all() == 0
    for bad in ("succeeded", ["failed", "cancelled"], []):
        with pytest.raises(BurrowError, match="only failed or cancelled jobs can be retried, not state"):
            queue.retry_all(state=bad)  # type: ignore[arg-type]


# -- cancel and delete -----------------------------------------------------------------


def test_cancel_of_queued_running_finished_and_unknown(queue: JobQueue) -> None:
    ids = _fill(queue)
    assert queue.cancel(ids["queued"][0]) is True
    assert queue.job(ids["queued"][0]).state is JobState.CANCELLED
    assert queue.cancel(ids["ok"][0]) is False
    with pytest.raises(JobNotFound):
        queue.cancel(10_000_000)


def test_a_drained_handler_that_stops_when_asked_ends_its_job_cancelled(queue: JobQueue, database: Database) -> None:
    """As under a supervisor: a handler that sees its cancel request and returns has
    stopped when asked, so the drain writes the cancel, not a success with its result."""
    operator = database.connect()
    try:
        def polite(data: bytes) -> None:
            assert operator.cancel(burrow.current_job().id) is True  # an operator, meanwhile
            assert burrow.current_job().cancel_requested
            burrow.capture_result(b'"stopped when asked"')

        queue.handle("polite.task", polite)
        job_id = queue.enqueue("polite.task", {})
        assert queue.drain() == 1
        info = queue.job(job_id)
        assert (info.state, info.result, info.attempts) == (JobState.CANCELLED, None, 1)
        [entry] = queue.history(job_id)
        assert (entry.event, entry.error) == (HistoryEvent.CANCELLED, "cancelled at an operator's request (q.cancel)")
    finally:
        operator.close()


def test_delete_removes_the_job_and_its_history(queue: JobQueue, database: Database) -> None:
    ids = _fill(queue)
    failed = ids["bad"][0]
    assert queue.history(failed) != []
    assert queue.delete(failed) is True
    with pytest.raises(JobNotFound):
        queue.job(failed)
    assert queue.history(failed) == []
    assert queue.delete(ids["queued"][0]) is True
    [running] = queue.backend.claim(ClaimRequest(["other.task"], 1, "owner", 30))
    assert queue.delete(running.id) is False
    assert queue.job(running.id).state is JobState.RUNNING
    with pytest.raises(JobNotFound):
        queue.delete(failed)


def test_the_id_of_a_deleted_or_pruned_job_is_never_handed_out_again(database: Database, clock: FakeClock) -> None:
    """A caller may hold a job's id long after the job is gone (a result to look up, a
    link in the admin): it must get JobNotFound, never another job. SQLite hands out
    the ids after the largest one in the table, so deleting the newest job freed its
    id until migration 8 kept the largest id ever handed out."""
    q = database.connect(clock=clock)
    other = database.connect()
    try:
        q.handle("id.task", lambda data: None)
        first = q.enqueue("id.task", {})
        newest = q.enqueue("id.task", {})
        assert q.delete(newest) is True
        after_delete = q.enqueue("id.task", {})
        assert after_delete > newest
        assert drain_all(q) == 2
        clock.advance(3600)
        assert q.prune(60) == 2
        for gone in (first, newest, after_delete):
            with pytest.raises(JobNotFound):
                q.job(gone)
        # Another connection (another process) sees the same floor: it lives in the database.
        after_prune = other.enqueue_many("id.task", [{}, {}])
        assert min(after_prune) > after_delete
    finally:
        other.close()
        q.close()


# -- prune ---------------------------------------------------------------------------------


def test_prune_deletes_old_finished_jobs_and_keeps_the_rest(database: Database, clock: FakeClock) -> None:
    q = database.connect(clock=clock)
    try:
        old = _fill(q)
        clock.advance(3600)
        recent = _fill(q)
        assert q.prune(dt.timedelta(minutes=30), states=["failed"]) == 2
        assert q.prune(1800) == 4  # seconds; the old succeeded and cancelled jobs
        for job_id in old["ok"] + old["bad"] + old["cancelled"]:
            with pytest.raises(JobNotFound):
                q.job(job_id)
            assert q.history(job_id) == []
        for job_id in old["queued"] + recent["ok"] + recent["bad"] + recent["cancelled"]:
            q.job(job_id)
        with pytest.raises(BurrowError, match=r"only finished jobs \(succeeded, failed, cancelled\) can be pruned, not state"):
            q.prune(0, states=["queued"])
        with pytest.raises(BurrowError, match="older_than must not be negative"):
            q.prune(-1)
    finally:
        q.close()


PRUNE_JOBS = 100_000


def _bulk_finished(database: Database, n: int) -> None:
    """``n`` succeeded jobs written straight into the table: enqueueing them would take minutes."""
    sql = (
        "INSERT INTO burrow_jobs (task, priority, state, payload, attempts, max_retries, run_at, created_at, finished_at)"
        " SELECT 'bulk.task', 0, 'succeeded', {payload}, 1, 3, {old}, {old}, {old} FROM {series}"
    )
    if database.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(database.dsn.removeprefix("sqlite:///"))) as conn:
            old = "'2020-01-01 00:00:00.000000'"
            series = f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s)"
            conn.execute(sql.format(payload="X'7B7D'", old=old, series=series))
            conn.commit()
        return
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{database.schema}"')
        conn.execute(sql.format(payload="'\\x7b7d'::bytea", old="'2020-01-01'::timestamptz", series=f"generate_series(1, {n})"))


def test_prune_of_a_hundred_thousand_jobs_goes_in_batches(database: Database, queue: JobQueue) -> None:
    _bulk_finished(database, PRUNE_JOBS)
    keep = queue.enqueue("keep.task", {})
    limits: list[list[Any]] = []  # each job DELETE's parameters: its LIMIT is its most rows

    def count(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM") and "burrow_jobs " in statement.split("WHERE")[0]:
            limits.append(list(parameters.values() if isinstance(parameters, dict) else parameters))

    engine = queue.backend._base_engine  # type: ignore[attr-defined]
    sa.event.listen(engine, "after_cursor_execute", count)
    try:
        assert queue.prune(dt.timedelta(days=1)) == PRUNE_JOBS
    finally:
        sa.event.remove(engine, "after_cursor_execute", count)
    assert len(limits) == PRUNE_JOBS // 1000 + 1  # a statement per 1,000; the last finds none left
    assert all(1000 in parameters for parameters in limits), limits[0]
    assert queue.job(keep).state is JobState.QUEUED
    assert queue.counts()[JobState.SUCCEEDED] == 0


# -- processes and history -----------------------------------------------------------------


def test_processes_with_their_staleness(database: Database, clock: FakeClock) -> None:
    q = database.connect(clock=clock)
    try:
        q.backend.register_process("host-a:1:supervisor:x", "host-a", 1, "supervisor")
        clock.advance(10)
        q.backend.register_process("host-b:2:supervisor:y", "host-b", 2, "supervisor")
        [a, b] = q.processes(stale_after_s=5)
        assert (a.owner, a.host, a.pid, a.role, a.stale) == ("host-a:1:supervisor:x", "host-a", 1, "supervisor", True)
        assert (b.host, b.stale, b.heartbeat_at) == ("host-b", False, clock.now)
        assert [p.stale for p in q.processes()] == [False, False]  # default: the 30 s lease
        # A pool's workers carry its name, up to 200 characters, whole.
        role = "worker:" + "p" * 200
        q.backend.register_process("host-c:3:worker:z", "host-c", 3, role)
        assert [p.role for p in q.processes() if p.pid == 3] == [role]
    finally:
        q.close()


def test_history_says_where_an_attempt_ran_and_how_long(queue: JobQueue) -> None:
    ids = _fill(queue)
    [entry] = queue.history(ids["bad"][0])
    assert (entry.host, entry.pid) == (socket.gethostname(), os.getpid())
    assert entry.duration_s is not None and 0 < entry.duration_s < 5


# -- the listing's plan ------------------------------------------------------------------


def _plan(database: Database, q: JobQueue, **filters: Any) -> str:
    statement = q.backend.list_jobs_statement(filters.get("states"), filters.get("tasks"), None, 50)  # type: ignore[attr-defined]
    engine = q.backend._base_engine  # type: ignore[attr-defined]
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    if database.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(database.dsn.removeprefix("sqlite:///"))) as conn:
            return "\n".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {compiled}"))
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{database.schema}"')
        conn.execute("ANALYZE burrow_jobs")
        return "\n".join(row[0] for row in conn.execute(f"EXPLAIN {compiled}"))


def test_listings_use_their_indexes_among_many_finished_jobs(database: Database, queue: JobQueue) -> None:
    _bulk_finished(database, 20_000)
    _fill(queue)
    assert "burrow_jobs_state_idx" in _plan(database, queue, states=["failed"])
    assert "burrow_jobs_task_idx" in _plan(database, queue, tasks=["bad.task"])


# -- throughput -------------------------------------------------------------------------------


def test_throughput_per_minute_from_drain_and_from_several_writers(database: Database, clock: FakeClock) -> None:
    clock.now = dt.datetime(2030, 1, 1, 12, 0, 30, tzinfo=dt.timezone.utc)
    q = database.connect(clock=clock)
    try:
        _fill(q)  # 3 succeeded, 2 failed
        clock.advance(60)
        q.handle("flaky.task", _fail, burrow.with_max_retries(1), burrow.with_backoff(0, 0))
        q.enqueue("flaky.task", {})
        assert drain_all(q) == 2  # one retried, then failed
        points = q.throughput(minutes=3)
        assert [p.minute for p in points] == [
            dt.datetime(2030, 1, 1, 11, 59, tzinfo=dt.timezone.utc),
            dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc),
            dt.datetime(2030, 1, 1, 12, 1, tzinfo=dt.timezone.utc),
        ]
        assert [(p.succeeded, p.failed, p.retried) for p in points] == [(0, 0, 0), (3, 2, 0), (0, 1, 1)]
        assert [(p.succeeded, p.failed) for p in q.throughput(minutes=2, task="bad.task")] == [(0, 2), (0, 0)]
        # Counts from another process add up.
        from burrow.backends.records import ThroughputRow

        q.backend.add_stats([ThroughputRow(dt.datetime(2030, 1, 1, 12, 1, tzinfo=dt.timezone.utc), "ok.task", 5, 0, 0)])
        assert q.throughput(minutes=1)[0].succeeded == 5
        with pytest.raises(BurrowError, match="minutes must be an integer"):
            q.throughput(minutes=0)
    finally:
        q.close()
