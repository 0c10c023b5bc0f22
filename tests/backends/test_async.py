"""The async client (burrow.aconnect, burrow.AsyncJobQueue, task.aenqueue...) in the
contract suite: on both databases it means what the sync API means (the same options,
checks and errors), and on PostgreSQL it never blocks the loop, stays within its
pool, survives cancelled calls and wakes on a job's end, not on a poll.

Each test runs its coroutine with ``asyncio.run``; nothing sleeps to synchronise:
waits are on conditions, with bounded deadlines.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import burrow
from burrow.backends.postgres_async import AsyncPostgres
from burrow.errors import (
    BurrowError,
    InvalidTaskName,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    PayloadEncodeError,
    PermanentError,
    WaitTimeout,
)
from burrow.job import JobState
from burrow.options import JobConfig, registered_options
from burrow.queue import JobQueue
from tests.backends.helpers import Pair, add, total_jobs
from tests.conftest import POSTGRES_DSN, Database

T = TypeVar("T")

add_task = burrow.define_result_task("async.add", add, burrow.with_priority(3), burrow.with_queue("math"))


@dataclass
class Mail:
    to: str


def send(p: Mail) -> None:
    pass


def fail(p: Mail) -> int:
    raise PermanentError("refused")


mail_task = burrow.define_task(
    "async.mail", send, burrow.with_max_retries(1), burrow.with_unique(lambda p: f"to:{p.to}")
)
fail_task = burrow.define_result_task("async.fail", fail)


def run(database: Database, body: Callable[[burrow.AsyncJobQueue], Awaitable[T]], **kwargs: Any) -> T:
    """``body(aq)`` on a fresh loop with a client of ``database``, closed afterwards."""

    async def main() -> T:
        async with await burrow.aconnect(database.dsn, schema=database.schema, **kwargs) as aq:
            return await asyncio.wait_for(body(aq), 60)

    return asyncio.run(main())


@pytest.fixture
def q(database: Database) -> Iterator[JobQueue]:
    """A sync queue on the same database, running the tasks above (drain)."""
    queue = database.connect()
    for task in (add_task, mail_task, fail_task):
        task.register(queue)
    yield queue
    queue.close()


# -- 1. the same enqueue ----------------------------------------------------------


def test_every_option_means_what_it_means_on_the_sync_path(database: Database, q: JobQueue) -> None:
    run_at = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)

    async def body(aq: burrow.AsyncJobQueue) -> list[int]:
        return [
            await add_task.aenqueue(aq, Pair(1, 2)),  # the task's defaults
            await add_task.aenqueue(aq, Pair(1, 2), priority=9, max_retries=0, queue="other", run_at=run_at),
            await aq.enqueue("raw.echo", {"any": "json"}, queue="mail", unique_key="k1"),
            await aq.enqueue("raw.echo", {"any": "json"}, unique_key="k1"),  # the holder's id
            *await add_task.aenqueue_many(aq, [Pair(1, 1), Pair(2, 2)], delay=dt.timedelta(hours=1)),
            *await aq.enqueue_many("raw.echo", [1, 2], unique_keys=["k2", None], priority=-1),
            await mail_task.aenqueue(aq, Mail("a@x")),
            await mail_task.aenqueue(aq, Mail("a@x")),  # with_unique's key: the holder's id
        ]

    before = q.backend.now()
    ids = run(database, body)
    sync_ids = [
        add_task.enqueue(q, Pair(1, 2)),
        add_task.enqueue(q, Pair(1, 2), priority=9, max_retries=0, queue="other", run_at=run_at),
        q.enqueue("raw.echo", {"any": "json"}, queue="mail", unique_key="s1"),
    ]
    assert ids[3] == ids[2] and ids[9] == ids[8]
    jobs = [q.job(job_id) for job_id in ids]
    shape = [(j.task, j.priority, j.max_retries, j.queue, j.unique_key) for j in jobs]
    assert shape == [
        ("async.add", 3, 3, "math", None),
        ("async.add", 9, 0, "other", None),
        ("raw.echo", 0, 3, "mail", "k1"),
        ("raw.echo", 0, 3, "mail", "k1"),
        ("async.add", 3, 3, "math", None),
        ("async.add", 3, 3, "math", None),
        ("raw.echo", -1, 3, "default", "k2"),
        ("raw.echo", -1, 3, "default", None),
        ("async.mail", 0, 1, "default", "to:a@x"),
        ("async.mail", 0, 1, "default", "to:a@x"),
    ]
    sync = [q.job(job_id) for job_id in sync_ids]
    for a, s in zip(jobs, sync):
        assert (a.task, a.priority, a.max_retries, a.queue, a.payload) == (s.task, s.priority, s.max_retries, s.queue, s.payload)
    assert jobs[1].run_at == run_at
    hour = dt.timedelta(hours=1)
    assert before + hour - dt.timedelta(seconds=5) <= jobs[4].run_at <= q.backend.now() + hour
    assert jobs[4].run_at == jobs[5].run_at


def test_a_raw_enqueue_takes_the_tasks_registered_options(database: Database, q: JobQueue) -> None:
    """As JobQueue.enqueue (tests/backends/test_task_registry.py): without the task's
    definition, the options a supervisor that handles it registered; a call's own win."""
    owner = "host-a:1:supervisor:x"
    q.backend.register_process(owner, "host-a", 1, "supervisor")
    q.backend.register_tasks(owner, {"reports.build": registered_options(JobConfig(max_retries=2, priority=5, queue="reports"))})

    async def body(aq: burrow.AsyncJobQueue) -> list[int]:
        return [
            await aq.enqueue("reports.build", {}),
            await aq.enqueue("reports.build", {}, priority=-1, queue="urgent"),
            await aq.enqueue("other.task", {}),
        ]

    registered, overridden, other = (q.job(job_id) for job_id in run(database, body))
    assert (registered.queue, registered.priority, registered.max_retries) == ("reports", 5, 2)
    assert (overridden.queue, overridden.priority, overridden.max_retries) == ("urgent", -1, 2)
    assert (other.queue, other.priority, other.max_retries) == ("default", 0, 3)


BAD: list[tuple[str, Callable[[Any], Any], Callable[[Any], Awaitable[Any]], type[Exception]]] = [
    ("priority", lambda q: q.enqueue("t.x", {}, priority=2**40),
     lambda aq: aq.enqueue("t.x", {}, priority=2**40), BurrowError),
    ("unknown option", lambda q: q.enqueue("t.x", {}, prio=1),
     lambda aq: aq.enqueue("t.x", {}, prio=1), BurrowError),
    ("naive run_at", lambda q: q.enqueue("t.x", {}, run_at=dt.datetime(2030, 1, 1)),
     lambda aq: aq.enqueue("t.x", {}, run_at=dt.datetime(2030, 1, 1)), BurrowError),
    ("run_at and delay", lambda q: q.enqueue("t.x", {}, run_at=dt.datetime.now(dt.timezone.utc), delay=1),
     lambda aq: aq.enqueue("t.x", {}, run_at=dt.datetime.now(dt.timezone.utc), delay=1), BurrowError),
    ("task name", lambda q: q.enqueue("bad name", {}),
     lambda aq: aq.enqueue("bad name", {}), InvalidTaskName),
    ("payload", lambda q: q.enqueue("t.x", {"x": object()}),
     lambda aq: aq.enqueue("t.x", {"x": object()}), PayloadEncodeError),
    ("typed payload", lambda q: add_task.enqueue_many(q, [Pair(1, 2), Pair(1, 2**70)]),
     lambda aq: add_task.aenqueue_many(aq, [Pair(1, 2), Pair(1, 2**70)]), PayloadEncodeError),
    ("queue", lambda q: mail_task.enqueue(q, Mail("a"), queue="no queue"),
     lambda aq: mail_task.aenqueue(aq, Mail("a"), queue="no queue"), BurrowError),
    ("keys", lambda q: q.enqueue_many("t.x", [1, 2], unique_keys=["a"]),
     lambda aq: aq.enqueue_many("t.x", [1, 2], unique_keys=["a"]), BurrowError),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[case[0] for case in BAD])
def test_a_bad_enqueue_fails_the_same_way_and_stores_nothing(database: Database, q: JobQueue, case: Any) -> None:
    _, sync_call, async_call, error = case
    with pytest.raises(error) as sync_error:
        sync_call(q)

    async def body(aq: burrow.AsyncJobQueue) -> None:
        with pytest.raises(error) as async_error:
            await async_call(aq)
        assert str(async_error.value) == str(sync_error.value)

    run(database, body)
    assert total_jobs(q) == 0


# -- 2. results, waiting, cancelling ------------------------------------------------


def test_results_and_their_errors_as_the_sync_api(database: Database, q: JobQueue) -> None:
    async def body(aq: burrow.AsyncJobQueue) -> None:
        done = await add_task.aenqueue(aq, Pair(2, 3))
        failed = await fail_task.aenqueue(aq, Mail("x"))
        cancelled = await add_task.aenqueue(aq, Pair(0, 0))
        with pytest.raises(JobNotFinished):
            await add_task.aresult(aq, done)
        with pytest.raises(WaitTimeout):
            await add_task.await_result(aq, done, timeout=0.05)
        assert await aq.cancel(cancelled) is True
        assert (await aq.job(cancelled)).state is JobState.CANCELLED
        await asyncio.to_thread(q.drain)
        assert await add_task.aresult(aq, done) == 5
        assert await add_task.await_result(aq, done, timeout=5) == 5
        with pytest.raises(JobFailed, match="refused"):
            await fail_task.aresult(aq, failed)
        with pytest.raises(JobFailed, match="refused"):
            await fail_task.await_result(aq, failed, timeout=5)
        with pytest.raises(JobCancelled):
            await add_task.await_result(aq, cancelled, timeout=5)
        assert await aq.cancel(done) is False
        with pytest.raises(JobNotFound):
            await aq.job(10**9)
        with pytest.raises(JobNotFound):
            await aq.cancel(10**9)
        info = await aq.job(done)
        assert info == q.job(done)

    run(database, body)


def test_cancel_of_a_running_job_is_a_request(database: Database, q: JobQueue) -> None:
    job_id = add_task.enqueue(q, Pair(1, 1))
    [claimed] = q.claim(["async.add"], 1)

    async def body(aq: burrow.AsyncJobQueue) -> None:
        assert await aq.cancel(claimed.id) is True
        assert await aq.cancel(claimed.id) is True  # asked already, still running
        info = await aq.job(job_id)
        assert info.state is JobState.RUNNING and info.cancel_requested_at is not None

    run(database, body)


def test_await_result_wakes_when_the_job_ends(database: Database, q: JobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL by the finish's notification: the re-read every RECHECK_S is out of reach."""
    monkeypatch.setattr("burrow.backends.postgres_async.RECHECK_S", 600.0)
    ids = add_task.enqueue_many(q, [Pair(i, i) for i in range(3)])

    async def body(aq: burrow.AsyncJobQueue) -> list[int]:
        waiters = [asyncio.create_task(add_task.await_result(aq, job_id, timeout=30)) for job_id in ids]
        await asyncio.sleep(0)  # let them start (the result does not depend on it)
        await asyncio.to_thread(q.drain)
        drained = time.monotonic()
        values = await asyncio.gather(*waiters)
        assert time.monotonic() - drained < 5
        return values

    assert run(database, body) == [0, 2, 4]


# -- 3. transactional enqueue ---------------------------------------------------------


def _async_engine(database: Database) -> AsyncEngine:
    if database.kind == "sqlite":
        return create_async_engine(database.dsn.replace("sqlite://", "sqlite+aiosqlite://", 1))
    return create_async_engine(POSTGRES_DSN.replace("postgresql://", "postgresql+psycopg://", 1))


def test_a_transactional_enqueue_exists_iff_its_transaction_commits(database: Database, q: JobQueue) -> None:
    orders = sa.Table("app_orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema=database.schema)

    async def body(aq: burrow.AsyncJobQueue) -> tuple[list[int], list[int]]:
        engine = _async_engine(database)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(orders.create)
            async with engine.begin() as conn:
                await conn.execute(orders.insert().values(id=1))
                committed = [
                    await add_task.aenqueue(aq, Pair(1, 2), conn=conn),
                    await aq.enqueue("raw.echo", {"order": 1}, conn=conn),
                    *await add_task.aenqueue_many(aq, [Pair(3, 4), Pair(5, 6)], conn=conn),
                ]
                assert await aq.backend.get(committed[0]) is None  # not visible before the commit
            rolled_back: list[int] = []
            with pytest.raises(RuntimeError, match="abort"):
                async with engine.begin() as conn:
                    await conn.execute(orders.insert().values(id=2))
                    rolled_back.append(await add_task.aenqueue(aq, Pair(7, 8), conn=conn))
                    rolled_back += await aq.enqueue_many("raw.echo", [1, 2], conn=conn)
                    raise RuntimeError("abort")
            async with engine.connect() as conn:
                assert (await conn.execute(sa.select(orders.c.id))).scalars().all() == [1]
            with pytest.raises(BurrowError, match="AsyncConnection"):
                await aq.enqueue("raw.echo", {}, conn=object())
            return committed, rolled_back
        finally:
            await engine.dispose()

    committed, rolled_back = run(database, body)
    assert [q.job(job_id).state for job_id in committed] == [JobState.QUEUED] * 4
    for job_id in rolled_back:
        with pytest.raises(JobNotFound):
            q.job(job_id)
    assert total_jobs(q) == 4
    assert q.drain() == 3  # raw.echo has no handler here


def _order_workflow(name: str, first: int) -> tuple[burrow.Workflow, list[burrow.Step]]:
    """a -> b, and c after both (whatever they end as)."""
    wf = burrow.Workflow(name)
    a = wf.add(add_task, Pair(first, 1))
    b = wf.add(add_task, Pair(first, 2), after=[a])
    c = wf.add(add_task, Pair(first, 3), after=[a, b], ignore_parent_failure=True)
    return wf, [a, b, c]


def test_a_workflow_from_the_loop_is_stored_as_the_sync_one(database: Database, q: JobQueue) -> None:
    """Workflow.aenqueue: the same rows, edges and states as enqueue, all in one
    transaction: the client's own, or the caller's (nothing of it after a rollback)."""

    async def body(aq: burrow.AsyncJobQueue) -> tuple[list[int], list[int], list[int]]:
        own, own_steps = _order_workflow("async-own", 10)
        ids = await own.aenqueue(aq)
        engine = _async_engine(database)
        try:
            committed, committed_steps = _order_workflow("async-committed", 20)
            async with engine.begin() as conn:
                in_transaction = await committed.aenqueue(aq, conn=conn)
                assert await aq.backend.get(in_transaction[committed_steps[0]]) is None  # not before the commit
            rolled_back, rolled_back_steps = _order_workflow("async-rolled-back", 30)
            gone: dict[burrow.Step, int] = {}
            with pytest.raises(RuntimeError, match="abort"):
                async with engine.begin() as conn:
                    gone.update(await rolled_back.aenqueue(aq, conn=conn))
                    raise RuntimeError("abort")
            with pytest.raises(BurrowError, match="AsyncConnection"):
                await _order_workflow("async-bad", 40)[0].aenqueue(aq, conn=object())
        finally:
            await engine.dispose()
        return (
            [ids[s] for s in own_steps],
            [in_transaction[s] for s in committed_steps],
            [gone[s] for s in rolled_back_steps],
        )

    own, committed, rolled_back = run(database, body)
    for name, ids in (("async-own", own), ("async-committed", committed)):
        jobs = q.workflow(name)
        assert [j.id for j in jobs] == ids
        assert [j.state for j in jobs] == [JobState.QUEUED, JobState.WAITING, JobState.WAITING]
        assert [j.parents for j in jobs] == [(), (ids[0],), (ids[0], ids[1])]
        assert {(j.priority, j.queue) for j in jobs} == {(3, "math")}  # the typed task's options
    for job_id in rolled_back:
        with pytest.raises(JobNotFound):
            q.job(job_id)
    assert q.drain() == 6  # each step released by its parents, in order
    assert [q.job(i).result for i in own] == [b"11", b"12", b"13"]


# -- 4. PostgreSQL: the loop, the pool, cancellation --------------------------------


@pytest.fixture
def pg(postgres_schema: str) -> Database:
    return Database("postgresql", POSTGRES_DSN, postgres_schema)


def test_500_concurrent_enqueues_never_hold_the_loop_up(pg: Database) -> None:
    """A 5 ms ticker on the same loop is never late by more than 50 ms, and at most
    pool_size connections are ever out.

    A round is 500 concurrent enqueues; up to three rounds, and one must keep the
    ticker on time: on a shared 2-core machine the OS may not run this process for
    50 ms now and then, which no code can prevent, while a client that blocked the
    loop (a synchronous round trip per call) is late in every round, by far."""

    async def body(aq: burrow.AsyncJobQueue) -> list[tuple[float, int, int]]:
        assert isinstance(aq.backend, AsyncPostgres)
        pool = aq.backend.pool
        rounds: list[tuple[float, int, int]] = []
        for _ in range(3):
            worst, most_out, stop = 0.0, 0, asyncio.Event()

            async def ticker() -> None:
                nonlocal worst, most_out
                loop = asyncio.get_running_loop()
                while not stop.is_set():
                    due = loop.time() + 0.005
                    await asyncio.sleep(0.005)
                    worst = max(worst, loop.time() - due)
                    most_out = max(most_out, pool.checked_out)

            tick = asyncio.create_task(ticker())
            ids = await asyncio.gather(*(add_task.aenqueue(aq, Pair(i, i)) for i in range(500)))
            stop.set()
            await tick
            rounds.append((worst, most_out, len(set(ids))))
            if worst < 0.050:
                break
        return rounds

    # The objects of 500 waiting calls outlive the young generations, and so start full
    # collections, which walk every object of this process (pytest's and every library's):
    # 40-60 ms on a loaded 2-core machine, with no burrow code running. Frozen, as
    # latency-minded services do after start-up, those objects are not walked again,
    # and what is measured is burrow's share of the loop.
    gc.collect()
    gc.freeze()
    try:
        rounds = run(pg, body, pool_size=5)
    finally:
        gc.unfreeze()
    shown = [f"{worst * 1000:.1f} ms" for worst, _, _ in rounds]
    assert rounds[-1][0] < 0.050, f"the ticker was late by {shown} in each round"
    assert all(1 <= most_out <= 5 and distinct == 500 for _, most_out, distinct in rounds), rounds


def _server_sessions(admin: psycopg.Connection[Any], app: str) -> list[tuple[str, str | None]]:
    return admin.execute(
        "SELECT state, wait_event_type FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
        (app,),
    ).fetchall()


def test_a_cancelled_enqueue_leaves_nothing_checked_out_or_open(
    pg: Database, postgres_admin: psycopg.Connection[Any]
) -> None:
    """Enqueues stuck behind a table lock are cancelled (a client gone, a wait_for): the
    pool has nothing out, the server no transaction of theirs, and the pool serves on."""
    app = f"burrow_cancel_{pg.schema}"[:60]
    dsn = f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}application_name={app}"
    blocker = psycopg.connect(POSTGRES_DSN, autocommit=False)

    async def body(aq: burrow.AsyncJobQueue) -> None:
        assert isinstance(aq.backend, AsyncPostgres)
        pool = aq.backend.pool
        await add_task.aenqueue(aq, Pair(0, 0))  # warm: a connection in the pool
        blocker.execute(f'LOCK TABLE "{pg.schema}".burrow_jobs IN ACCESS EXCLUSIVE MODE')
        stuck = [asyncio.create_task(add_task.aenqueue(aq, Pair(i, i))) for i in range(3)]
        timed_out = asyncio.create_task(asyncio.wait_for(add_task.aenqueue(aq, Pair(9, 9)), 0.2))
        deadline = time.monotonic() + 20
        while sum(1 for _, wait in _server_sessions(postgres_admin, app) if wait == "Lock") < 4:
            assert time.monotonic() < deadline, _server_sessions(postgres_admin, app)
            await asyncio.sleep(0.01)
        for task in stuck:
            task.cancel()
        results = await asyncio.gather(*stuck, timed_out, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results[:3]), results
        assert isinstance(results[3], TimeoutError), results
        assert pool.checked_out == 0
        blocker.rollback()  # the lock goes; nothing of the cancelled calls may be waiting
        deadline = time.monotonic() + 20
        while any(state != "idle" for state, _ in _server_sessions(postgres_admin, app)):
            assert time.monotonic() < deadline, _server_sessions(postgres_admin, app)
            await asyncio.sleep(0.01)
        ids = await asyncio.gather(*(add_task.aenqueue(aq, Pair(i, i)) for i in range(20)))
        assert len(set(ids)) == 20 and pool.checked_out == 0
        assert len(_server_sessions(postgres_admin, app)) <= pool.size + 1  # + the LISTEN one, if any

    try:
        run(Database("postgresql", dsn, pg.schema), body, pool_size=4)
    finally:
        blocker.close()
    with psycopg.connect(POSTGRES_DSN) as conn:
        count = conn.execute(f'SELECT count(*) FROM "{pg.schema}".burrow_jobs').fetchone()
    assert count is not None and count[0] == 21  # the cancelled ones were cancelled on the server too


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_pool_size_is_checked(database: Database, size: Any) -> None:
    with pytest.raises(BurrowError, match="pool_size"):
        asyncio.run(burrow.aconnect(database.dsn, schema=database.schema, pool_size=size))


def test_a_closed_client_refuses_calls(database: Database) -> None:
    async def main() -> None:
        aq = await burrow.aconnect(database.dsn, schema=database.schema)
        await aq.close()
        with pytest.raises((BurrowError, RuntimeError)):
            await aq.enqueue("t.x", {})

    asyncio.run(main())


def test_a_lost_listen_connection_is_replaced(pg: Database, postgres_admin: psycopg.Connection[Any]) -> None:
    """The LISTEN connection terminated under a waiter: it reads its job and listens anew."""
    app = f"burrow_listen_{pg.schema}"[:60]
    dsn = f"{POSTGRES_DSN}?application_name={app}"
    q = pg.connect()
    add_task.register(q)

    async def body(aq: burrow.AsyncJobQueue) -> int:
        job_id = await add_task.aenqueue(aq, Pair(20, 22))
        waiter = asyncio.create_task(add_task.await_result(aq, job_id, timeout=30))
        deadline = time.monotonic() + 20
        listening = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'LISTEN%%'"
        while not postgres_admin.execute(listening, (app,)).fetchall():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        listener = aq.backend._listener  # type: ignore[attr-defined]
        postgres_admin.execute(f"SELECT pg_terminate_backend(pid) FROM ({listening}) AS l", (app,))
        while not listener.dead:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await asyncio.to_thread(q.drain)
        return await waiter

    try:
        assert run(Database("postgresql", dsn, pg.schema), body) == 42
    finally:
        q.close()
