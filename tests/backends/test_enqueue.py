"""Enqueueing: enqueue and enqueue_many (ids in order, one statement, all or
nothing, large batches), transactional enqueue, task options stored with the job,
enqueue_at and naive run_at, out-of-range priority or max_retries, and enqueueing
while another thread holds the backend's hot connection."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

import burrow
from burrow.job import JobState
from burrow.backends.records import ClaimRequest
from burrow.errors import BurrowError, PayloadEncodeError
from burrow.queue import JobQueue
from tests.backends.helpers import PDT, Item, total_jobs, typed_handler
from tests.conftest import POSTGRES_DSN, Database, FakeClock


def test_enqueue_many_returns_ids_in_order(queue: JobQueue) -> None:
    raw_ids = queue.enqueue_many("bulk.raw", [{"n": i} for i in range(25)])
    assert len(raw_ids) == 25
    assert raw_ids == sorted(raw_ids) and len(set(raw_ids)) == 25
    for i, job_id in enumerate(raw_ids):
        record = queue.backend.get(job_id)
        assert record is not None and burrow.codec.decode(record.payload) == {"n": i}

    received: dict[int, Item] = {}

    def handler(p: Item) -> None:
        received[burrow.current_job().id] = p

    task = burrow.define_task("bulk.typed", handler, burrow.with_priority(3))
    task.register(queue)
    items = [Item(f"i{i}", i) for i in range(30)]
    typed_ids = task.enqueue_many(queue, items)
    assert len(typed_ids) == 30 and len(set(typed_ids)) == 30
    assert all(queue.job(job_id).priority == 3 for job_id in typed_ids)
    assert task.enqueue_many(queue, []) == []
    assert queue.enqueue_many("bulk.raw", []) == []
    assert queue.drain() == 30
    assert received == dict(zip(typed_ids, items))
    assert queue.backend.counts()[JobState.QUEUED] == 25


@contextlib.contextmanager
def statements_sent(queue: JobQueue) -> Iterator[list[str]]:
    """The SQL the backend's held connection sends meanwhile, as the driver sees it:
    sqlite3's trace callback, or libpq's protocol trace (each Parse carries the text)."""
    b: Any = queue.backend
    b.ping()  # opens the held connection, the one enqueue uses
    driver = b._held.driver_connection
    sent: list[str] = []
    if b.dialect == "sqlite":
        driver.set_trace_callback(sent.append)
        try:
            yield sent
        finally:
            driver.set_trace_callback(None)
        return
    with tempfile.TemporaryFile("w+") as trace:
        driver.pgconn.trace(trace.fileno())
        driver.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        try:
            yield sent
        finally:
            driver.pgconn.untrace()
            trace.seek(0)
            sent += re.findall(r'^F\t\d+\tParse\t "\w*" "(.*?)" \d', trace.read(), re.MULTILINE | re.DOTALL)


def test_enqueue_many_is_one_statement(queue: JobQueue) -> None:
    with statements_sent(queue) as sent:
        ids = queue.enqueue_many("bulk.one", [{"n": i} for i in range(500)])
    inserts = [s for s in sent if "INSERT INTO" in s.upper() and "burrow_jobs" in s]
    assert len(ids) == 500
    assert len(inserts) == 1
    for i in range(0, 500, 7):
        record = queue.backend.get(ids[i])
        assert record is not None and burrow.codec.decode(record.payload) == {"n": i}


def test_enqueue_many_is_all_or_nothing(queue: JobQueue) -> None:
    task = burrow.define_task("bulk.atomic", typed_handler(Item, []))
    with pytest.raises(PayloadEncodeError):
        task.enqueue_many(queue, [Item("ok", 1)] * 50 + [Item("bad", 1, math.nan)])
    with pytest.raises(PayloadEncodeError):
        queue.enqueue_many("bulk.atomic", [b"x"] * 10 + [b"x" * (queue.max_payload_bytes + 1)])
    assert total_jobs(queue) == 0


def sqlalchemy_url(database: Database) -> str:
    """The same database as a DSN for the application's own SQLAlchemy engine."""
    if database.kind == "sqlite":
        return database.dsn
    return POSTGRES_DSN.replace("postgresql://", "postgresql+psycopg://", 1)


def test_transactional_enqueue(database: Database, queue: JobQueue) -> None:
    """The job exists if and only if the caller's transaction commits."""
    received: list[Item] = []
    task = burrow.define_task("tx.task", typed_handler(Item, received))
    task.register(queue)
    engine = sa.create_engine(sqlalchemy_url(database))
    try:
        with pytest.raises(RuntimeError, match="roll back"):
            with engine.begin() as conn:
                task.enqueue(queue, Item("rolled back", 1), conn=conn)
                queue.enqueue_many("tx.task", [{"name": "raw", "qty": 1, "price": 0.0}], conn=conn)
                raise RuntimeError("roll back")
        assert total_jobs(queue) == 0
        assert queue.drain() == 0

        with engine.begin() as conn:
            first = task.enqueue(queue, Item("committed", 1), conn=conn)
            second = queue.enqueue("tx.task", {"name": "raw", "qty": 2, "price": 0.0}, conn=conn)
        assert queue.job(first).state is JobState.QUEUED
        assert queue.drain() == 2
        assert received == [Item("committed", 1), Item("raw", 2)]
        assert queue.job(second).state is JobState.SUCCEEDED
    finally:
        engine.dispose()


def test_task_options_are_stored_with_the_job(queue: JobQueue) -> None:
    task = burrow.define_task("opts.task", typed_handler(Item, []), burrow.with_priority(7), burrow.with_max_retries(5))
    job_id = task.enqueue(queue, Item("a", 1))
    info = queue.job(job_id)
    assert (info.priority, info.max_retries) == (7, 5)
    # Registered options also apply to raw enqueues of that name on this queue.
    task.register(queue)
    raw_id = queue.enqueue("opts.task", {"name": "b", "qty": 2, "price": 0.0})
    assert (queue.job(raw_id).priority, queue.job(raw_id).max_retries) == (7, 5)
    explicit = queue.enqueue("opts.task", {"name": "c", "qty": 3, "price": 0.0}, priority=-2, max_retries=0)
    assert (queue.job(explicit).priority, queue.job(explicit).max_retries) == (-2, 0)
    default = queue.enqueue("opts.unregistered", {})
    assert (queue.job(default).priority, queue.job(default).max_retries) == (0, 3)


def test_enqueue_at_is_not_claimed_before_its_time(clocked: JobQueue, clock: FakeClock) -> None:
    received: list[Item] = []
    task = burrow.define_task("later.task", typed_handler(Item, received))
    task.register(clocked)
    run_at = clock.now + dt.timedelta(seconds=60)
    job_id = task.enqueue_at(clocked, Item("later", 1), run_at.astimezone(PDT))
    raw_id = clocked.enqueue_at("later.task", {"name": "raw", "qty": 2, "price": 0.0}, run_at)
    info = clocked.job(job_id)
    assert info.run_at == run_at
    assert info.run_at.utcoffset() == dt.timedelta(0)
    assert clocked.drain() == 0
    clock.advance(59)
    assert clocked.drain() == 0
    assert not clocked.backend.has_due(["later.task"])
    clock.advance(2)
    assert clocked.backend.has_due(["later.task"])
    assert clocked.drain() == 2
    assert received == [Item("later", 1), Item("raw", 2)]
    assert clocked.job(raw_id).state is JobState.SUCCEEDED


def test_naive_run_at_is_refused(queue: JobQueue) -> None:
    naive = dt.datetime(2030, 1, 1, 12, 0)
    task = burrow.define_task("naive.task", typed_handler(Item, []))
    with pytest.raises(BurrowError, match="naive"):
        task.enqueue_at(queue, Item("a", 1), naive)
    with pytest.raises(BurrowError, match="naive"):
        queue.enqueue_at("naive.task", {}, naive)
    with pytest.raises(BurrowError, match="naive"):
        queue.enqueue("naive.task", {}, run_at=naive)
    assert total_jobs(queue) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 2**31}, r"priority must be an integer from -2147483648 to 2147483647, got 2147483648"),
        ({"priority": -(2**31) - 1}, r"priority must be an integer from"),
        ({"priority": True}, r"priority must be an integer from .*, got True"),
        ({"priority": 1.5}, r"priority must be an integer from .*, got 1.5"),
        ({"max_retries": -1}, r"max_retries must be an integer from 0 to 1000000, got -1"),
        ({"max_retries": "3"}, r"max_retries must be an integer from 0 to 1000000, got '3'"),
    ],
)
def test_an_out_of_range_priority_or_max_retries_is_refused_before_storing(
    queue: JobQueue, options: dict[str, Any], message: str
) -> None:
    """The same one-line error as with_priority / with_max_retries give, on both
    backends (PostgreSQL's int4 column would refuse only some of these, SQLite none)."""
    with pytest.raises(BurrowError, match=message):
        queue.enqueue("range.checked", {}, **options)
    with pytest.raises(BurrowError, match=message):
        queue.enqueue_many("range.checked", [{}, {}], **options)
    assert sum(queue.backend.counts().values()) == 0
    stored = queue.backend.get(queue.enqueue("range.checked", {}, priority=2**31 - 1))
    assert stored is not None and stored.priority == 2**31 - 1


def test_a_large_enqueue_many_keeps_payload_order(queue: JobQueue) -> None:
    """More rows than one SQLite statement takes (it is split, in one transaction):
    the ids still come back in payload order, and the jobs are claimed in it."""
    ids = queue.enqueue_many("bulk.large", [{"n": i} for i in range(1_234)])
    assert len(ids) == 1_234 and ids == sorted(ids)
    for i in (0, 499, 500, 501, 999, 1_000, 1_233):
        record = queue.backend.get(ids[i])
        assert record is not None and burrow.codec.decode(record.payload) == {"n": i}
    claimed = queue.backend.claim(ClaimRequest(["bulk.large"], 1_234, "large", 30.0))
    assert [job.id for job in claimed] == ids


def test_enqueue_while_another_thread_holds_the_hot_connection(queue: JobQueue) -> None:
    """Threads enqueueing together must not queue on the one held connection: an
    enqueue that finds it busy goes through the pool, with the same result."""
    b: Any = queue.backend
    with b._held_lock:  # as if another thread were mid-claim or mid-enqueue
        ids = queue.enqueue_many("busy.held", [{"n": i} for i in range(3)])
    assert ids == sorted(ids) and len(ids) == 3
    assert [burrow.codec.decode(b.get(i).payload) for i in ids] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert queue.backend.counts()[JobState.QUEUED] == 3
