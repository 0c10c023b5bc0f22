"""The PostgreSQL backend against a real server (issue 3).

Every test works in a schema of its own (the ``postgres_schema`` fixture drops it
afterwards) or a database it creates and drops. Waits are bounded: threads are
joined with a timeout, and "has the other side got there yet" is polled with
``wait_until`` or answered by the server (a sentinel notification).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import linecache
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import sqlalchemy as sa
from psycopg import sql

import burrow
from burrow.job import JobState
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind, StatisticsRefresh
from burrow.backends import postgres_arrays as arrays
from burrow.backends.postgres import PostgresBackend
from burrow.backends.transitions import change, uniform_change
from burrow.backends.migrations import MIGRATIONS
from burrow.errors import BackendError
from burrow.queue import JobQueue
from tests.backends.helpers import insert_queued
from tests.conftest import POSTGRES_DSN, FakeClock
from tests.helpers import release, wait_until

pytestmark = pytest.mark.timeout(60)

Connect = Callable[..., JobQueue]


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
def connect(postgres_schema: str) -> Iterator[Connect]:
    """``burrow.connect`` into this test's schema (unless told otherwise); closes all."""
    opened: list[JobQueue] = []

    def open_queue(dsn: str = POSTGRES_DSN, *, schema: str | None = postgres_schema, **kwargs: Any) -> JobQueue:
        q = burrow.connect(dsn, schema=schema, **kwargs)
        opened.append(q)
        return q

    yield open_queue
    for q in opened:
        q.close()


@pytest.fixture
def other_schema(postgres_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A second private schema, for tests that need two apps on one database."""
    schema = f"burrow_test_{secrets.token_hex(6)}"
    yield schema
    postgres_admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def app_engine() -> Iterator[sa.Engine]:
    """The application's own engine, as an app would build it (no burrow options)."""
    engine = sa.create_engine(POSTGRES_DSN.replace("postgresql://", "postgresql+psycopg://", 1))
    yield engine
    engine.dispose()


def with_app_name(dsn: str, name: str) -> str:
    """Tag a DSN's connections so pg_stat_activity can find (and end) exactly them."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


def backend(q: JobQueue) -> PostgresBackend:
    assert isinstance(q.backend, PostgresBackend)
    return q.backend


def ignore(_: bytes) -> None:
    return None


@contextlib.contextmanager
def wire_messages(b: PostgresBackend) -> Iterator[list[str]]:
    """What the backend's hot-path connection sends to the server meanwhile: libpq's
    own protocol trace, one entry per frontend message type ("Query", "Execute", ...)."""
    b.ping()
    b._on_held("trace", lambda conn: None)  # hold the connection, so it is the one traced
    pgconn = b._held.driver_connection.pgconn
    sent: list[str] = []
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        try:
            yield sent
        finally:
            pgconn.untrace()
            trace.seek(0)
            sent += [line.split("\t")[2].strip() for line in trace if line.startswith("F\t")]


def notifications_until_sentinel(listen: psycopg.Connection[Any], channel: str) -> list[str]:
    """Payloads on ``channel`` up to a sentinel we send now.

    Notifications are delivered in commit order, so once the sentinel arrives
    every notification of an earlier commit has arrived too: no guessing how
    long to wait for "nothing".
    """
    sentinel = f"sentinel-{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as other:
        other.execute("SELECT pg_notify(%s, %s)", (channel, sentinel))
    payloads: list[str] = []
    for notify in listen.notifies(timeout=10):
        if notify.payload == sentinel:
            return payloads
        payloads.append(notify.payload)
    raise AssertionError(f"sentinel notification on {channel!r} did not arrive within 10 s")


@pytest.fixture
def listen(postgres_admin: psycopg.Connection[Any]) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """A raw psycopg connection in LISTEN on a channel."""
    conns: list[psycopg.Connection[Any]] = []

    def open_listener(channel: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(POSTGRES_DSN, autocommit=True)
        conns.append(conn)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return conn

    yield open_listener
    for conn in conns:
        conn.close()


class Waiter(threading.Thread):
    """A consumer thread blocked in ``q.wait_for_jobs``; records what it returned and when."""

    def __init__(self, q: JobQueue, timeout: float) -> None:
        super().__init__(daemon=True)
        self.q, self.timeout = q, timeout
        self.woke: bool | None = None
        self.elapsed: float | None = None
        self.error: BaseException | None = None
        self.started_at = 0.0

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            self.woke = self.q.wait_for_jobs(timeout=self.timeout)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        self.elapsed = time.monotonic() - self.started_at

    def blocked_in_select(self) -> bool:
        """True once the thread sleeps in select() inside wait_for_jobs: past its has_due check."""
        frame = sys._current_frames().get(self.ident or -1)
        return (
            frame is not None
            and frame.f_code.co_name == "wait_for_jobs"
            and "select.select(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        )

    def result(self) -> tuple[bool | None, float]:
        self.join(timeout=self.timeout + 5)
        assert not self.is_alive(), "wait_for_jobs did not return"
        if self.error is not None:
            raise self.error
        assert self.elapsed is not None
        return self.woke, self.elapsed


def terminate(admin: psycopg.Connection[Any], app_name: str) -> int:
    """End every server connection tagged ``app_name``; wait until the server has let them go."""
    ended = admin.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", (app_name,)
    ).fetchone()
    assert ended is not None
    remaining = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    wait_until(
        lambda: admin.execute(remaining, (app_name,)).fetchone() == (0,), timeout=10, what=f"{app_name} to disconnect"
    )
    return int(ended[0])


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


# -- 1. DSNs ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://", "postgresql+psycopg://"])
def test_every_postgres_dsn_spelling_connects(connect: Connect, scheme: str) -> None:
    dsn = POSTGRES_DSN.replace("postgresql://", scheme, 1)
    q = connect(dsn)
    assert backend(q).url.drivername == "postgresql+psycopg"
    q.handle("dsn.echo", ignore)
    job_id = q.enqueue("dsn.echo", {"scheme": scheme})
    assert q.drain() == 1
    assert q.job(job_id).state is JobState.SUCCEEDED


def test_a_non_postgres_dsn_is_refused() -> None:
    with pytest.raises(BackendError, match="not a PostgreSQL DSN"):
        PostgresBackend("mysql://root@localhost/db")


# -- 2. EXPLAIN --------------------------------------------------------------------------


def test_claim_uses_the_queued_partial_index_not_a_table_scan(
    connect: Connect, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """100,000 finished and 1,000 queued jobs: the claim reads the partial index.

    The plan is taken for the statement ``claim`` sends, with its parameters, both as the one-off plan a first execution gets
    and as the generic plan the server may reuse once psycopg has prepared it.
    """
    q = connect()
    jobs_table = sql.Identifier(postgres_schema, "burrow_jobs")
    postgres_admin.execute(
        sql.SQL(
            """
            INSERT INTO {} (task, priority, state, payload, attempts, max_retries, run_at, created_at, finished_at)
            SELECT CASE WHEN g % 2 = 0 THEN 'explain.mine' ELSE 'explain.other' END,
                   g % 7,
                   CASE WHEN g <= 100000 THEN 'succeeded' ELSE 'queued' END,
                   '\\x7b7d'::bytea,
                   CASE WHEN g <= 100000 THEN 1 ELSE 0 END,
                   3,
                   now() - interval '1 hour',
                   now() - interval '1 hour',
                   CASE WHEN g <= 100000 THEN now() END
            FROM generate_series(1, 101000) AS g
            """
        ).format(jobs_table)
    )
    postgres_admin.execute(sql.SQL("ANALYZE {}").format(jobs_table))
    assert q.backend.counts()[JobState.QUEUED] == 1000

    claimed = q.backend.claim(ClaimRequest(["explain.mine"], 10, "explainer", 30.0))
    assert len(claimed) == 10
    text = backend(q).claim_sql(10)  # the text claim sent, with the parameters it sends
    params = {"tasks": ["explain.mine"], "owner": "explainer", "lease_s": 30.0}

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        [[custom]] = conn.execute("EXPLAIN (FORMAT JSON) " + text, params).fetchall()
        # The same text prepared, and planned generically (as a reused prepared statement is).
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"

        conn.execute("PREPARE burrow_claim AS " + re.sub(r"%\((\w+)\)s", number, text))
        conn.execute("SET plan_cache_mode = force_generic_plan")
        arguments = ", ".join(f"%({name})s" for name in names)
        # EXECUTE's arguments cannot be server-side parameters: bind them client-side.
        explain_execute = f"EXPLAIN (FORMAT JSON) EXECUTE burrow_claim({arguments})"
        [[generic]] = psycopg.ClientCursor(conn).execute(explain_execute, params).fetchall()

    for label, plan in (("custom", custom[0]["Plan"]), ("generic", generic[0]["Plan"])):
        nodes = list(plan_nodes(plan))
        summary = [(n["Node Type"], n.get("Index Name") or n.get("Relation Name") or "") for n in nodes]
        assert ("Index Scan", "burrow_jobs_queued_idx") in summary, f"{label} plan: {summary}"
        scans = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "burrow_jobs"]
        assert not scans, f"{label} plan scans the table: {summary}"
        assert any(n["Node Type"] == "LockRows" for n in nodes), f"{label} plan: {summary}"


def test_a_burst_into_a_new_table_is_claimed_along_the_queued_index_once_analyzed(
    connect: Connect, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """40,000 jobs of three tasks into a table never analyzed: its statistics say none is
    queued, and the claim's plan sorts every one of them to pick 400. refresh_statistics
    analyzes the table; the claim then walks burrow_jobs_queued_idx in claim order."""
    q = connect()
    jobs_table = sql.Identifier(postgres_schema, "burrow_jobs")
    postgres_admin.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(jobs_table))
    insert_queued(postgres_schema, 40000, "'explain.' || (g %% 3)")
    text = backend(q).claim_sql(400)
    tasks = ["explain.0", "explain.1", "explain.2"]
    params = {"tasks": tasks, "owner": "explainer", "lease_s": 30.0}

    def plan() -> list[tuple[str, str]]:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            [[explained]] = conn.execute("EXPLAIN (FORMAT JSON) " + text, params).fetchall()
        return [(n["Node Type"], n.get("Index Name") or "") for n in plan_nodes(explained[0]["Plan"])]

    assert ("Sort", "") in plan(), "the planner no longer sorts here: refresh_statistics may be needless"
    refresh = wait_until(q.backend.refresh_statistics, 15.0, "the burst in the statistics views (insert_queued)")
    assert refresh == StatisticsRefresh(rows_in_statistics=0, live_rows=40000, analyzed=True)
    after = plan()
    assert ("Index Scan", "burrow_jobs_queued_idx") in after and ("Sort", "") not in after, after
    assert q.backend.refresh_statistics() is None  # caught up
    claimed = q.backend.claim(ClaimRequest(tasks, 400, "explainer", 30.0))
    assert [job.id for job in claimed] == list(range(1, 401))  # the oldest first, as claims go


def test_statistics_the_role_may_not_refresh_are_reported_unrefreshed(
    connect: Connect, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """A role that uses the tables but does not own them may not analyze them:
    refresh_statistics says so, and sends no ANALYZE (the server would skip it with a
    warning in its log, every time)."""
    connect()  # the tables, owned by the test's own role
    jobs_table = sql.Identifier(postgres_schema, "burrow_jobs")
    postgres_admin.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(jobs_table))
    insert_queued(postgres_schema, 20000, "'explain.other'")
    role = f"burrow_user_{secrets.token_hex(4)}"
    postgres_admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        postgres_admin.execute(sql.SQL("GRANT USAGE ON SCHEMA {0} TO {1}").format(
            sql.Identifier(postgres_schema), sql.Identifier(role)))
        postgres_admin.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {0} TO {1}").format(
            sql.Identifier(postgres_schema), sql.Identifier(role)))
        user = PostgresBackend(POSTGRES_DSN.replace("postgres@", f"{role}@", 1), schema=postgres_schema)
        try:
            refresh = wait_until(user.refresh_statistics, 15.0, "the burst in the statistics views (insert_queued)")
        finally:
            user.close()
        assert refresh == StatisticsRefresh(rows_in_statistics=0, live_rows=20000, analyzed=False, may_analyze=False)
        [(analyzes,)] = postgres_admin.execute(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = %s::regclass",
            (f'"{postgres_schema}"."burrow_jobs"',),
        ).fetchall()
        assert analyzes == 0
    finally:
        postgres_admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        postgres_admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        postgres_admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_statistics_another_session_is_refreshing_are_left_to_it(
    connect: Connect, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """Another session holds the table as an ANALYZE or VACUUM does (autovacuum, another
    supervisor): the ANALYZE is skipped, not waited for, and the statistics are still
    behind until that session is done."""
    q = connect()
    jobs_table = sql.Identifier(postgres_schema, "burrow_jobs")
    postgres_admin.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(jobs_table))
    insert_queued(postgres_schema, 20000, "'explain.locked'")
    with psycopg.connect(POSTGRES_DSN) as holder:
        holder.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(jobs_table))
        refresh = wait_until(q.backend.refresh_statistics, 15.0, "the burst in the statistics views (insert_queued)")
        assert refresh == StatisticsRefresh(rows_in_statistics=0, live_rows=20000, analyzed=False)
        holder.rollback()
    assert q.backend.refresh_statistics() == StatisticsRefresh(rows_in_statistics=0, live_rows=20000, analyzed=True)


def test_a_large_claim_on_a_small_table_marks_its_picks_by_the_key(
    connect: Connect, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """A claim of 1,000 among 3,000 queued jobs: the planner would rather hash-join the
    picks to a scan of the whole table than look each up by its key; the claim leaves
    it no join to choose (plain and limited claims alike)."""
    q = connect()
    q.enqueue_many("explain.big", list(range(3000)))
    postgres_admin.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(postgres_schema, "burrow_jobs")))
    params = {"tasks": ["explain.big"], "owner": "explainer", "lease_s": 30.0, "limited": [], "maxes": []}
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        for text in (backend(q).claim_sql(1000), backend(q).limited_claim_sql(1000)):
            [[plan]] = conn.execute("EXPLAIN (FORMAT JSON) " + text, params).fetchall()
            nodes = list(plan_nodes(plan[0]["Plan"]))
            summary = [(n["Node Type"], n.get("Index Name") or n.get("Relation Name") or "") for n in nodes]
            assert ("Seq Scan", "burrow_jobs") not in summary, summary
    assert len(q.backend.claim(ClaimRequest(["explain.big"], 1000, "explainer", 30.0))) == 1000


def test_a_finish_finds_its_rows_by_the_key_whatever_the_statistics(
    connect: Connect, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """Statistics taken while nothing ran, then 3,000 jobs running: the finish and the
    lease extension of 500 look their rows up by the key, not by walking the index of
    running jobs the statistics say holds one."""
    q = connect()
    b = q.backend
    q.enqueue_many("explain.finish", list(range(4000)))
    postgres_admin.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(postgres_schema, "burrow_jobs")))
    held = [job for _ in range(6) for job in b.claim(ClaimRequest(["explain.finish"], 500, "explainer", 300.0))]
    assert len(held) == 3000
    batch = held[:500]
    fences: dict[str, Any] = {
        "ids": arrays.ints([j.id for j in batch]),
        "owners": arrays.texts([j.owner for j in batch]),
        "attempts": arrays.ints([j.attempt for j in batch]),
    }
    finish = {**fences, "results": arrays.byteas([None] * 500), "errors": arrays.texts([None] * 500), "now": None,
              "done_channel": "explain", "done_ids": ""}
    succeeded = uniform_change([change(Outcome(batch[0].id, batch[0].owner, batch[0].attempt, OutcomeKind.SUCCEEDED))])
    assert succeeded is not None
    statements: list[tuple[str, dict[str, Any]]] = [
        (backend(q)._uniform_finish_sql(succeeded), finish),
        (backend(q)._extend_sql, {**fences, "lease_s": 30.0, "now": None}),
    ]
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        for text, params in statements:
            [[plan]] = conn.execute("EXPLAIN (FORMAT JSON) " + text, params).fetchall()
            scans = [n for n in plan_nodes(plan[0]["Plan"]) if "Scan" in n["Node Type"]]
            used = {n.get("Index Name") for n in scans if n.get("Relation Name") == "burrow_jobs"}
            assert used == {"burrow_jobs_pkey"}, used
    assert b.finish([Outcome(j.id, j.owner, j.attempt, OutcomeKind.SUCCEEDED) for j in batch]) == []
    assert b.extend_leases([(j.id, j.owner, j.attempt) for j in held[500:]], 30.0) == []


# -- 3. claim limits and concurrent claimers -----------------------------------------


def test_a_claim_of_n_never_returns_more_than_n(connect: Connect) -> None:
    q = connect()
    q.enqueue_many("limit.job", [{"i": i} for i in range(300)])
    for n in (1, 2, 7, 64, 100):
        batch = q.backend.claim(ClaimRequest(["limit.job"], n, f"owner-{n}", 30.0))
        assert len(batch) == n
        assert all(job.attempt == 1 and job.owner == f"owner-{n}" for job in batch)
    # 126 left: a claim of 200 gets them all and no more; then nothing.
    assert len(q.backend.claim(ClaimRequest(["limit.job"], 200, "owner-rest", 30.0))) == 126
    assert q.backend.claim(ClaimRequest(["limit.job"], 5, "owner-late", 30.0)) == []
    assert q.backend.counts()[JobState.RUNNING] == 300


def test_a_claim_takes_only_the_tasks_it_names(connect: Connect) -> None:
    q = connect()
    q.enqueue_many("mine", [1, 2, 3])
    q.enqueue_many("theirs", [4, 5], priority=100)
    batch = q.backend.claim(ClaimRequest(["mine", "unknown"], 10, "me", 30.0))
    assert sorted(job.task for job in batch) == ["mine"] * 3
    assert q.backend.claim(ClaimRequest([], 10, "me", 30.0)) == []


def test_concurrent_claimers_never_get_the_same_job(
    connect: Connect, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """Six claimers, each with its own engine, race through 900 jobs in batches of 13."""
    total, claimers, limit = 900, 6, 13
    producer = connect()
    job_ids = set(producer.enqueue_many("race", list(range(total))))
    queues = [connect() for _ in range(claimers)]
    start = threading.Barrier(claimers, timeout=10)
    batches: list[list[list[int]]] = [[] for _ in range(claimers)]
    errors: list[BaseException] = []

    def claim_all(index: int) -> None:
        try:
            start.wait()
            while batch := queues[index].backend.claim(ClaimRequest(["race"], limit, f"claimer-{index}", 60.0)):
                batches[index].append([job.id for job in batch])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors

    claimed = [job_id for mine in batches for batch in mine for job_id in batch]
    assert all(len(batch) <= limit for mine in batches for batch in mine)
    assert len(claimed) == len(set(claimed)) == total, "a job was claimed twice, or not at all"
    assert set(claimed) == job_ids
    assert sum(1 for mine in batches if mine) > 1, "the claimers did not overlap"
    owners = postgres_admin.execute(
        sql.SQL("SELECT owner, count(*), max(attempts) FROM {} GROUP BY owner").format(
            sql.Identifier(postgres_schema, "burrow_jobs")
        )
    ).fetchall()
    expected = {(f"claimer-{i}", sum(map(len, mine)), 1) for i, mine in enumerate(batches) if mine}
    assert set(owners) == expected


# -- 4. the fence ------------------------------------------------------------------


def test_a_process_that_lost_its_lease_cannot_touch_the_new_attempt(connect: Connect) -> None:
    clock = FakeClock()
    q = connect(clock=clock)
    b = q.backend
    job_id = q.enqueue("fenced", {"n": 1}, max_retries=3)

    [a_job] = b.claim(ClaimRequest(["fenced"], 1, "owner-a", 30.0))
    assert a_job.attempt == 1
    clock.advance(31)
    [reaped] = q.reap_expired()
    assert (reaped.id, reaped.attempt, reaped.state) == (job_id, 1, JobState.QUEUED)
    clock.advance(1)  # the default backoff after a first run
    [b_job] = b.claim(ClaimRequest(["fenced"], 1, "owner-b", 30.0))
    assert (b_job.id, b_job.attempt) == (job_id, 2)
    before = b.get(job_id)
    history_before = b.history(job_id)
    assert before is not None and before.state is JobState.RUNNING and before.owner == "owner-b"

    a = ("owner-a", 1)
    stale = [
        Outcome(job_id, *a, OutcomeKind.SUCCEEDED, result=b"from a"),
        Outcome(job_id, *a, OutcomeKind.RETRY, error="a retries", retry_in_s=5),
        Outcome(job_id, *a, OutcomeKind.FAILED, error="a fails"),
        Outcome(job_id, *a, OutcomeKind.RELEASED),
        Outcome(job_id, "owner-b", 1, OutcomeKind.SUCCEEDED),  # right owner, old attempt
        Outcome(job_id, "owner-a", 2, OutcomeKind.SUCCEEDED),  # new attempt, wrong owner
    ]
    for outcome in stale:
        assert b.finish([outcome]) == [job_id], outcome
        assert b.get(job_id) == before, outcome
    assert b.extend_leases([(job_id, *a)], 300.0) == [job_id]
    assert b.get(job_id) == before
    assert b.history(job_id) == history_before

    # The current attempt goes through: its lease moves, then it finishes.
    assert b.extend_leases([(job_id, "owner-b", 2)], 300.0) == []
    extended = b.get(job_id)
    assert extended is not None and extended.lease_expires_at == clock.now + dt.timedelta(seconds=300)
    assert b.finish([Outcome(job_id, "owner-b", 2, OutcomeKind.SUCCEEDED, result=b"from b")]) == []
    done = b.get(job_id)
    assert done is not None
    assert (done.state, done.attempts, done.result, done.owner) == (JobState.SUCCEEDED, 2, b"from b", None)
    # ... and A, late, still changes nothing.
    assert b.finish([Outcome(job_id, *a, OutcomeKind.FAILED, error="too late")]) == [job_id]
    assert b.get(job_id) == done


def test_a_batch_of_500_mixed_outcomes_is_one_statement(connect: Connect) -> None:
    q = connect()
    b = q.backend
    q.enqueue_many("batch", list(range(500)), max_retries=5)
    claimed = b.claim(ClaimRequest(["batch"], 500, "batcher", 60.0))
    assert len(claimed) == 500
    kinds = [OutcomeKind.SUCCEEDED, OutcomeKind.RETRY, OutcomeKind.FAILED, OutcomeKind.RELEASED]
    outcomes = [
        Outcome(
            job.id,
            job.owner,
            job.attempt,
            kinds[i % 4],
            result=f"r{job.id}".encode() if i % 4 == 0 else None,
            error=f"e{job.id}" if i % 4 in (1, 2) else None,
            retry_in_s=60 if i % 8 == 1 else 30.5,  # ints and floats mixed, as callers pass them
        )
        for i, job in enumerate(claimed)
    ]
    with wire_messages(backend(q)) as sent:
        assert b.finish(outcomes) == []
    # One statement, one round trip: no BEGIN or COMMIT around it (autocommit).
    assert [m for m in sent if m in ("Query", "Execute", "Sync")] == ["Execute", "Sync"], sent

    counts = b.counts()
    assert counts[JobState.SUCCEEDED] == counts[JobState.FAILED] == 125
    assert counts[JobState.QUEUED] == 250 and counts[JobState.RUNNING] == 0
    for i, outcome in enumerate(outcomes):
        record = b.get(outcome.id)
        assert record is not None and record.owner is None and record.lease_expires_at is None
        kind = kinds[i % 4]
        if kind is OutcomeKind.SUCCEEDED:
            assert (record.state, record.attempts, record.result) == (JobState.SUCCEEDED, 1, outcome.result)
        elif kind is OutcomeKind.RETRY:
            assert (record.state, record.attempts, record.last_error) == (JobState.QUEUED, 1, outcome.error)
            assert record.run_at > record.created_at
        elif kind is OutcomeKind.FAILED:
            assert (record.state, record.attempts, record.last_error) == (JobState.FAILED, 1, outcome.error)
            assert record.finished_at is not None
        else:
            assert (record.state, record.attempts) == (JobState.QUEUED, 0)
        events = [(h.attempt, h.event, h.error) for h in b.history(outcome.id)]
        expected = {OutcomeKind.RETRY: "retried", OutcomeKind.FAILED: "failed"}
        assert events == ([(1, expected[kind], outcome.error)] if kind in expected else [])


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of this test's own, for what depends on the oldest snapshot in the
    database: PostgreSQL prunes old row versions (making room on a page) only past
    every open transaction of the same database, and other tests or sessions on the
    shared one may hold one."""
    name = f"burrow_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sa.make_url(POSTGRES_DSN).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_claimed_and_finished_job_mostly_stays_on_its_page(own_database: str, connect: Connect) -> None:
    """The jobs table leaves half of each page free (migration 7), so the new row
    versions a claim and a finish write fit, nearly all, on the job's own page.

    With full pages every claimed job's new version went wherever the free space map
    pointed: beside millions of finished jobs, a different old page per job, so a page
    write and a full-page WAL image per job (the drain ran at 0.69-0.77 of the
    empty-table rate; benchmarks/README, "Table size"). A running row is larger than its
    queued one (owner, started_at, lease), so a few of the smallest rows still move."""
    q = connect(own_database, schema=None)
    with psycopg.connect(own_database, autocommit=True) as admin:
        jobs_table = sql.Identifier("burrow_jobs")
        [[options]] = admin.execute("SELECT reloptions FROM pg_class WHERE oid = 'burrow_jobs'::regclass").fetchall()
        assert options == ["fillfactor=50"]

        def pages() -> dict[int, int]:
            query = sql.SQL("SELECT id, (ctid::text::point)[0]::int FROM {}").format(jobs_table)
            return dict(admin.execute(query).fetchall())

        def stayed() -> float:
            now = pages()
            return sum(now[job_id] == page for job_id, page in inserted.items()) / len(inserted)

        q.enqueue_many("page.job", [{"account_id": i, "template": "welcome"} for i in range(300)])
        inserted = pages()
        assert len(set(inserted.values())) >= 5  # half-filled pages: about 55 jobs a page
        claimed = q.backend.claim(ClaimRequest(["page.job"], 300, f"{os.uname().nodename}:{os.getpid()}:pool:1", 30.0))
        assert len(claimed) == 300
        after_claim = stayed()
        # The queued versions the claim left dead make room again once pruned. PostgreSQL
        # prunes a page when a statement reads it and nothing else pins it, which a busy
        # server cannot promise this test: a VACUUM prunes them here for certain.
        admin.execute(sql.SQL("VACUUM {}").format(jobs_table))
        outcomes = [Outcome(job.id, job.owner, job.attempt, OutcomeKind.SUCCEEDED, result=b"{}") for job in claimed]
        assert q.backend.finish(outcomes) == []
        assert q.backend.counts()[JobState.SUCCEEDED] == 300
        after_finish = stayed()
        assert min(after_claim, after_finish) >= 0.75, (after_claim, after_finish)  # measured: 0.85, 0.82


# -- 5. LISTEN/NOTIFY --------------------------------------------------------------


def test_a_consumer_blocked_in_wait_for_jobs_wakes_on_enqueue(connect: Connect) -> None:
    consumer = connect()
    consumer.handle("wake.me", ignore)
    producer = connect()
    waiter = Waiter(consumer, timeout=10)
    waiter.start()
    wait_until(waiter.blocked_in_select, timeout=10, what="the consumer to block in select()")
    producer.enqueue("wake.me", {"hello": 1})
    woke, elapsed = waiter.result()
    assert woke is True
    assert elapsed < 2, f"woke after {elapsed:.2f}s"


def test_wait_for_jobs_ignores_other_tasks_and_times_out(connect: Connect) -> None:
    consumer = connect()
    consumer.handle("wanted", ignore)
    producer = connect()
    waiter = Waiter(consumer, timeout=0.5)
    waiter.start()
    wait_until(waiter.blocked_in_select, timeout=10, what="the consumer to block in select()")
    producer.enqueue("not.wanted", {})
    woke, elapsed = waiter.result()
    assert woke is False and elapsed >= 0.5


def test_wait_for_jobs_returns_at_once_when_work_is_already_due(connect: Connect) -> None:
    q = connect()
    q.handle("due", ignore)
    q.enqueue("due", {})
    started = time.monotonic()
    assert q.wait_for_jobs(timeout=10) is True
    assert time.monotonic() - started < 2


def test_enqueue_many_sends_one_notification(
    connect: Connect, listen: Callable[[str], psycopg.Connection[Any]]
) -> None:
    q = connect()
    channel = backend(q).channel
    listener = listen(channel)
    q.enqueue_many("notify.many", list(range(100)))
    assert notifications_until_sentinel(listener, channel) == ["notify.many"]
    q.enqueue("notify.one", {})
    assert notifications_until_sentinel(listener, channel) == ["notify.one"]


def test_a_job_requeued_for_now_notifies_and_a_later_retry_does_not(
    connect: Connect, listen: Callable[[str], psycopg.Connection[Any]]
) -> None:
    """Idle consumers sleep until a NOTIFY: a job given back or retried at once must
    wake them (an empty payload: "look for yourselves"), or it waits for their poll."""
    q = connect()
    b = q.backend
    channel = backend(q).channel
    q.enqueue_many("notify.requeue", list(range(3)))
    listener = listen(channel)
    first, second, third = b.claim(ClaimRequest(["notify.requeue"], 3, "owner", 30.0))
    b.finish([Outcome(first.id, first.owner, first.attempt, OutcomeKind.RETRY, error="later", retry_in_s=60)])
    assert notifications_until_sentinel(listener, channel) == []
    b.finish([Outcome(second.id, second.owner, second.attempt, OutcomeKind.RETRY, error="now", retry_in_s=0)])
    assert notifications_until_sentinel(listener, channel) == [""]
    b.finish([Outcome(third.id, third.owner, third.attempt, OutcomeKind.RELEASED)])
    assert notifications_until_sentinel(listener, channel) == [""]


def test_a_finish_notifies_the_ends_of_its_jobs_once(
    connect: Connect, listen: Callable[[str], psycopg.Connection[Any]]
) -> None:
    """What the async client's await_result sleeps on: one notification on the done
    channel per finish statement that ended a job, naming the batch's jobs; none for a
    batch that ended none. Cancelling a queued job notifies too."""
    q = connect()
    b = q.backend
    channel = backend(q).done_channel
    ids = q.enqueue_many("notify.done", list(range(6)))
    listener = listen(channel)
    jobs = b.claim(ClaimRequest(["notify.done"], 5, "owner", 30.0))
    ok, bad, retried = jobs[:2], jobs[2], jobs[3]
    b.finish([Outcome(j.id, j.owner, j.attempt, OutcomeKind.SUCCEEDED) for j in ok])  # uniform
    assert notifications_until_sentinel(listener, channel) == [f"{ok[0].id},{ok[1].id}"]
    b.finish([Outcome(retried.id, retried.owner, retried.attempt, OutcomeKind.RETRY, error="x", retry_in_s=60)])
    assert notifications_until_sentinel(listener, channel) == []
    mixed = [
        Outcome(bad.id, bad.owner, bad.attempt, OutcomeKind.FAILED, error="no"),
        Outcome(jobs[4].id, jobs[4].owner, jobs[4].attempt, OutcomeKind.RETRY, error="x", retry_in_s=60),
    ]
    b.finish(mixed)
    assert notifications_until_sentinel(listener, channel) == [f"{bad.id},{jobs[4].id}"]
    assert q.cancel(ids[5]) is True
    assert notifications_until_sentinel(listener, channel) == [str(ids[5])]


def test_hot_path_statements_are_prepared_but_never_planned_generically(connect: Connect) -> None:
    """Prepared, the server skips each run's parse; but a prepared statement's generic
    plan for the finish scans the table (14 ms -> 313 ms for 1,000 outcomes from the
    eleventh run): every run of one must be planned with its values."""
    q = connect()
    b = q.backend
    q.enqueue_many("prepared.custom", list(range(40)))
    for _ in range(20):
        jobs = b.claim(ClaimRequest(["prepared.custom"], 2, "owner", 30.0))
        assert b.finish([Outcome(j.id, j.owner, j.attempt, OutcomeKind.SUCCEEDED) for j in jobs]) == []
        assert b.extend_leases([(j.id, j.owner, j.attempt) for j in jobs], 30.0) == [j.id for j in jobs]
    rows = backend(q)._on_held(
        "count",
        lambda c: c.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements").fetchall(),
    )
    assert len(rows) == 3, rows  # the claim, the finish and the lease extension
    assert all(generic == 0 and custom >= 10 for _, generic, custom in rows), rows


def test_prepared_statements_survive_a_migration_that_changes_what_they_return(
    connect: Connect, postgres_schema: str, postgres_admin: psycopg.Connection[Any]
) -> None:
    """A rolling upgrade: another version's migration changes a column the claim and
    the finish return, while this backend holds them prepared. PostgreSQL refuses
    each later run of them on that session ("cached plan must not change result
    type"); the backend takes a fresh connection and runs the statement again, once,
    and loses nothing."""
    q = connect()
    b = q.backend
    ids = q.enqueue_many("stale.plan", list(range(40)))
    for _ in range(8):  # past psycopg's fifth run: prepared
        jobs = b.claim(ClaimRequest(["stale.plan"], 2, "owner", 30.0))
        assert b.finish([Outcome(j.id, j.owner, j.attempt, OutcomeKind.SUCCEEDED) for j in jobs]) == []
    assert backend(q)._on_held("count", lambda c: c.execute("SELECT count(*) FROM pg_prepared_statements").fetchone())[0] >= 2
    postgres_admin.execute(
        sql.SQL("ALTER TABLE {} ALTER COLUMN task TYPE varchar(250)").format(sql.Identifier(postgres_schema, "burrow_jobs"))
    )
    for _ in range(12):  # the claim of 2 whose plan returns the task's old type
        jobs = b.claim(ClaimRequest(["stale.plan"], 2, "owner", 30.0))
        assert len(jobs) == 2
        assert b.finish([Outcome(j.id, j.owner, j.attempt, OutcomeKind.SUCCEEDED) for j in jobs]) == []
    assert [q.job(i).state for i in ids] == [JobState.SUCCEEDED] * 40


def test_a_rolled_back_enqueue_sends_no_notification(
    connect: Connect, listen: Callable[[str], psycopg.Connection[Any]], app_engine: sa.Engine
) -> None:
    q = connect()
    channel = backend(q).channel
    listener = listen(channel)
    with pytest.raises(RuntimeError, match="abort"), app_engine.begin() as conn:
        q.enqueue_many("notify.rollback", list(range(10)), conn=conn)
        raise RuntimeError("abort")
    assert notifications_until_sentinel(listener, channel) == []
    assert q.backend.counts()[JobState.QUEUED] == 0


# -- 6. transactional enqueue ------------------------------------------------------


def test_transactional_enqueue_commits_and_rolls_back_with_the_caller(
    connect: Connect, postgres_schema: str, app_engine: sa.Engine
) -> None:
    """The statement runs on the app's connection, in burrow's schema, in the app's transaction."""
    q = connect()
    received: list[dict[str, int]] = []

    def ship(order: dict[str, int]) -> None:
        received.append(order)

    task = burrow.define_task("orders.ship", ship)
    task.register(q)
    orders = sa.Table(
        "app_orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema=postgres_schema
    )
    with app_engine.begin() as conn:
        orders.create(conn)

    with app_engine.begin() as conn:
        conn.execute(orders.insert().values(id=1))
        typed = task.enqueue(q, {"order": 1}, conn=conn)
        plain = q.enqueue("orders.ship", {"order": 2}, conn=conn)
        many = q.enqueue_many("orders.ship", [{"order": 3}, {"order": 4}], conn=conn)
        typed_many = task.enqueue_many(q, [{"order": 5}], conn=conn)
        # Inside the transaction: invisible to burrow's own connections.
        assert q.backend.get(typed) is None
    committed = [typed, plain, *many, *typed_many]
    assert [q.job(job_id).state for job_id in committed] == [JobState.QUEUED] * 5

    with pytest.raises(RuntimeError, match="abort"), app_engine.begin() as conn:
        conn.execute(orders.insert().values(id=2))
        rolled_back = [
            task.enqueue(q, {"order": 6}, conn=conn),
            q.enqueue("orders.ship", {"order": 7}, conn=conn),
            *q.enqueue_many("orders.ship", [{"order": 8}], conn=conn),
        ]
        raise RuntimeError("abort")
    assert all(q.backend.get(job_id) is None for job_id in rolled_back)
    assert q.backend.counts()[JobState.QUEUED] == 5
    with app_engine.connect() as conn:
        assert conn.execute(sa.select(orders.c.id)).scalars().all() == [1]
    assert q.drain() == 5
    assert sorted(o["order"] for o in received) == [1, 2, 3, 4, 5]


# -- 7. schemas ----------------------------------------------------------------------


def test_queues_in_two_schemas_do_not_see_each_other(connect: Connect, other_schema: str) -> None:
    a = connect()
    b = connect(schema=other_schema)
    ran: dict[str, list[int]] = {"a": [], "b": []}
    a.handle("shared.name", lambda data: ran["a"].append(int(data)))
    b.handle("shared.name", lambda data: ran["b"].append(int(data)))

    a_ids = a.enqueue_many("shared.name", [b"1", b"2", b"3"])
    b_ids = b.enqueue_many("shared.name", [b"10", b"20"])
    assert a_ids == [1, 2, 3] and b_ids == [1, 2]  # each schema has its own id sequence
    assert a.job(1).id == b.job(1).id and a.backend.get(3) is not None and b.backend.get(3) is None
    assert a.backend.counts()[JobState.QUEUED] == 3 and b.backend.counts()[JobState.QUEUED] == 2

    # B's consumer is not woken by A's enqueue (another channel).
    waiter = Waiter(b, timeout=0.5)
    b_drained = b.drain()
    waiter.start()
    wait_until(waiter.blocked_in_select, timeout=10, what="B's consumer to block")
    a.enqueue("shared.name", b"4")
    assert waiter.result()[0] is False

    assert b_drained == 2 and sorted(ran["b"]) == [10, 20]
    assert a.backend.counts()[JobState.QUEUED] == 4
    assert a.drain() == 4 and sorted(ran["a"]) == [1, 2, 3, 4]
    assert b.backend.counts()[JobState.SUCCEEDED] == 2


def test_a_schema_with_the_longest_name_enqueues_and_notifies(
    postgres_admin: psycopg.Connection[Any], listen: Callable[[str], psycopg.Connection[Any]]
) -> None:
    """63 bytes is a legal schema name; ``burrow:`` + it is not a legal channel name."""
    schema = f"burrow_test_{secrets.token_hex(4)}_".ljust(63, "x")
    try:
        with (
            burrow.connect(POSTGRES_DSN, schema=schema) as consumer,
            burrow.connect(POSTGRES_DSN, schema=schema) as producer,
        ):
            consumer.handle("long.name", ignore)
            listener = listen(backend(producer).channel)
            waiter = Waiter(consumer, timeout=10)
            waiter.start()
            wait_until(waiter.blocked_in_select, timeout=10, what="the consumer to block in select()")
            producer.enqueue("long.name", {})
            woke, elapsed = waiter.result()
            assert woke is True and elapsed < 2
            assert notifications_until_sentinel(listener, backend(producer).channel) == ["long.name"]
            assert consumer.drain() == 1
    finally:
        postgres_admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_a_schema_name_with_percent_signs_and_quotes_works_on_every_hot_path(
    postgres_admin: psycopg.Connection[Any],
) -> None:
    """The hot-path statements are %-format text for psycopg: a "%" (or "%s") in the
    schema name once broke every one of them; quotes must stay quoted."""
    schema = f"burrow_test_{secrets.token_hex(4)} 100%s %% \"odd\" 'q'"
    clock = FakeClock()
    try:
        with burrow.connect(POSTGRES_DSN, schema=schema, clock=clock) as q:
            q.handle("pct.ok", ignore)
            ids = q.enqueue_many("pct.ok", [{"n": n} for n in range(3)])
            assert q.drain() == 3  # claim, uniform finish
            assert {q.job(i).state for i in ids} == {JobState.SUCCEEDED}

            job_id = q.enqueue("pct.ok", {})
            [claimed] = q.claim(["pct.ok"], 1, lease_s=5)
            assert q.backend.extend_leases([(claimed.id, claimed.owner, claimed.attempt)], 5) == []
            clock.advance(60)
            [reaped] = q.reap_expired()
            assert reaped.id == job_id and q.job(job_id).state is JobState.QUEUED
            assert [h.event.value for h in q.history(job_id)] == ["lease_expired"]
            assert q.cancel(job_id) and q.job(job_id).state is JobState.CANCELLED
        with psycopg.connect(POSTGRES_DSN) as conn:
            count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "burrow_jobs"))
            assert conn.execute(count).fetchone() == (4,)
    finally:
        postgres_admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_a_separate_jobs_database(postgres_admin: psycopg.Connection[Any]) -> None:
    """Jobs may live in a database of their own (created and dropped here)."""
    name = f"burrow_test_db_{secrets.token_hex(4)}"
    postgres_admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = str(sa.engine.make_url(POSTGRES_DSN).set(database=name).render_as_string(hide_password=False))
        with burrow.connect(dsn, schema="jobs") as q:
            q.handle("elsewhere", ignore)
            job_id = q.enqueue("elsewhere", {})
            assert q.drain() == 1 and q.job(job_id).state is JobState.SUCCEEDED
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM jobs.burrow_jobs").fetchone() == (1,)
    finally:
        postgres_admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- 8. concurrent migrations -------------------------------------------------------

MIGRATE_CHILD = """
import os, select, sys
import burrow
open(sys.argv[1], "w").close()  # ready
if not select.select([sys.stdin], [], [], 60)[0]:  # the start barrier: every child is imported and waiting
    sys.exit("no go signal within 60 s")
q = burrow.connect(os.environ["BURROW_DATABASE_DSN"], schema=os.environ["BURROW_DATABASE_SCHEMA"])
q.close()
"""


def test_processes_starting_together_apply_each_migration_once(
    postgres_schema: str, postgres_admin: psycopg.Connection[Any], tmp_path: Path
) -> None:
    exists = "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s"
    assert postgres_admin.execute(exists, (postgres_schema,)).fetchone() == (0,)
    env = {**os.environ, "BURROW_DATABASE_DSN": POSTGRES_DSN, "BURROW_DATABASE_SCHEMA": postgres_schema}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_CHILD, str(tmp_path / f"ready{i}")],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    try:
        wait_until(lambda: all((tmp_path / f"ready{i}").exists() for i in range(4)), timeout=30, what="children")
        release(children)
        results = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    for child, (_, stderr) in zip(children, results):
        assert child.returncode == 0, stderr

    rows = postgres_admin.execute(
        sql.SQL("SELECT version, count(*) FROM {} GROUP BY version ORDER BY version").format(
            sql.Identifier(postgres_schema, "burrow_schema_version")
        )
    ).fetchall()
    assert rows == [(version, 1) for version, _ in MIGRATIONS]


# -- 9. connection loss ---------------------------------------------------------------


def test_claims_and_finishes_reconnect_after_the_server_ends_the_connections(
    connect: Connect, postgres_admin: psycopg.Connection[Any]
) -> None:
    app_name = f"burrow_test_{secrets.token_hex(4)}"
    q = connect(with_app_name(POSTGRES_DSN, app_name))
    runs: list[int] = []
    q.handle("survivor", lambda data: runs.append(int(data)))
    ids = q.enqueue_many("survivor", [str(i).encode() for i in range(20)])
    q.wait_for_jobs(timeout=0.01)  # opens the LISTEN connection too
    assert terminate(postgres_admin, app_name) >= 2

    batch = q.claim(["survivor"], 5)  # under an owner of its own, released if the claim fails
    assert len(batch) == 5
    assert terminate(postgres_admin, app_name) >= 1
    outcomes = [Outcome(job.id, job.owner, job.attempt, OutcomeKind.SUCCEEDED) for job in batch]
    assert q.backend.finish(outcomes) == []
    assert terminate(postgres_admin, app_name) >= 1
    assert q.drain() == 15  # claims and finishes, over fresh connections

    records = [q.backend.get(job_id) for job_id in ids]
    assert all(r is not None and (r.state, r.attempts) == (JobState.SUCCEEDED, 1) for r in records)
    assert sorted(runs) == list(range(5, 20))  # the 15 the first claim did not take, each once
    assert all(q.backend.history(job_id) == [] for job_id in ids)


def test_a_consumer_whose_listen_connection_drops_wakes_and_listens_again(
    connect: Connect, postgres_admin: psycopg.Connection[Any]
) -> None:
    consumer = connect()
    consumer.handle("relisten", ignore)
    producer = connect()
    waiter = Waiter(consumer, timeout=10)
    waiter.start()
    wait_until(waiter.blocked_in_select, timeout=10, what="the consumer to block in select()")
    listener = backend(consumer)._listener
    assert listener is not None
    postgres_admin.execute("SELECT pg_terminate_backend(%s)", (listener._conn.info.backend_pid,))
    woke, elapsed = waiter.result()
    assert woke is True and elapsed < 2  # jobs may have arrived unseen: the caller should look

    waiter = Waiter(consumer, timeout=10)
    waiter.start()
    wait_until(waiter.blocked_in_select, timeout=10, what="the consumer to block again")
    producer.enqueue("relisten", {})
    woke, elapsed = waiter.result()
    assert woke is True and elapsed < 2


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.one_of(st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\x00"))), max_size=8),
    numbers=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=8),
    floats=st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), max_size=8),
    blobs=st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=8),
)
def test_array_literals_reach_postgresql_as_the_values_they_were(texts, numbers, floats, blobs) -> None:
    """The batched statements send their columns as literals: any text (quotes, commas,
    braces, backslashes, the word NULL), any int or float, and any bytes (a result)
    comes back unchanged."""
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        got = conn.execute(
            "SELECT %s::text[], %s::bigint[], %s::float8[], %s::bool[], %s::bytea[]",
            (arrays.texts(texts), arrays.numbers(numbers), arrays.numbers(floats), arrays.booleans([True, False]),
             arrays.byteas(blobs)),
        ).fetchone()
    assert got == (texts, numbers, floats, [True, False], blobs)
