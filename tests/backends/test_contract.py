"""The contract of DESIGN.md sections 3 and 4, on SQLite and on PostgreSQL.

Every test here (but the SQLite-specific ones at the end) takes the ``database`` or
``queue`` fixture and so runs once per backend, against a real database file or a
real server. Time-dependent behaviour runs on the injected ``FakeClock``; nothing
sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import math
import os
import re
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypedDict

import psycopg
import pytest
import sqlalchemy as sa

import burrow
import burrow.tasks
from burrow.backends.base import JobState, Outcome, OutcomeKind
from burrow.errors import (
    BackendError,
    BurrowError,
    DuplicateTask,
    InvalidTaskName,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    JobNotFound,
    PayloadEncodeError,
    WaitTimeout,
)
from burrow.queue import JobQueue
from tests.conftest import POSTGRES_DSN, Database, FakeClock

UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
PDT = dt.timezone(dt.timedelta(hours=-7))


# -- payload types (module level: handlers' annotations are resolved here) --------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Point(TypedDict):
    x: int
    y: int


@dataclass
class Item:
    name: str
    qty: int
    price: float = 0.0


@dataclass
class Order:
    id: int
    items: list[Item]
    meta: dict[str, list[int]]
    note: Optional[str]
    when: dt.datetime
    color: Color
    level: Level
    where: Point
    gift: Optional[Item] = None


@dataclass
class Pair:
    a: int
    b: int


@dataclass
class Summary:
    total: int
    product: int
    pair: Pair
    at: dt.datetime


ORDER = Order(
    id=7,
    items=[Item("pen", 2, 1.25), Item("ink", 1, 7.5)],
    meta={"bins": [1, 2, 3], "empty": []},
    note=None,
    when=dt.datetime(2031, 3, 4, 5, 6, 7, 890123, tzinfo=IST),
    color=Color.GREEN,
    level=Level.HIGH,
    where={"x": -3, "y": 4},
    gift=Item("card", 1),
)


# -- helpers ----------------------------------------------------------------------


def rows(database: Database, sql: str) -> list[tuple[Any, ...]]:
    """Read burrow's tables behind its back, with the database's own driver."""
    if database.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(database.dsn.removeprefix("sqlite:///"))) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{database.schema}"')
        return conn.execute(sql).fetchall()


def total_jobs(q: JobQueue) -> int:
    return sum(q.backend.counts().values())


def drain_all(q: JobQueue) -> int:
    """Drain until a drain runs nothing (retries with zero backoff come straight back)."""
    ran = 0
    for _ in range(100):
        n = q.drain()
        if n == 0:
            return ran
        ran += n
    raise AssertionError("drain never ran dry")


def typed_handler(payload_type: Any, sink: list[Any]) -> Callable[[Any], None]:
    """A handler annotated with ``payload_type`` that records what it received."""

    def handler(p: Any) -> None:
        sink.append(p)

    handler.__annotations__ = {"p": payload_type, "return": None}
    return handler


@pytest.fixture
def clocked(database: Database, clock: FakeClock) -> Iterator[JobQueue]:
    """A queue whose every timestamp comes from ``clock``."""
    q = database.connect(clock=clock)
    yield q
    q.close()


# -- public API -------------------------------------------------------------------

API_NAMES = [
    "Queue",
    "Enqueuer",
    "HasJobs",
    "JobHandlerFunc",
    "TaskDefinition",
    "define_task",
    "ResultTask",
    "define_result_task",
    "ResultCapture",
    "with_result_capture",
    "capture_result",
    "JobConfig",
    "JobOption",
    "with_max_retries",
    "with_priority",
    "with_backoff",
    "with_timeout",
    "connect",
    "JobQueue",
    "JobInfo",
    "current_job",
    "PermanentError",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_api_name_is_exported_and_is_the_tasks_object(name: str) -> None:
    assert getattr(burrow, name) is getattr(burrow.tasks, name)
    assert name in burrow.__all__
    assert name in burrow.tasks.__all__


def test_jobinfo_has_the_promised_fields() -> None:
    assert [f.name for f in dataclasses.fields(burrow.JobInfo)] == [
        "id",
        "task",
        "state",
        "priority",
        "attempts",
        "max_retries",
        "run_at",
        "created_at",
        "started_at",
        "finished_at",
        "last_error",
        "result",
    ]


def test_options_are_validated() -> None:
    for bad in (
        lambda: burrow.with_max_retries(-1),
        lambda: burrow.with_max_retries(True),
        lambda: burrow.with_priority(2**31),
        lambda: burrow.with_priority(1.5),  # type: ignore[arg-type]
        lambda: burrow.with_backoff(2, 1),
        lambda: burrow.with_backoff(-1, 1),
        lambda: burrow.with_timeout(0),
        lambda: burrow.define_task("opts.bad", typed_handler(Item, []), "not an option"),  # type: ignore[arg-type]
        lambda: burrow.define_task("opts.noparams", lambda: None),  # type: ignore[arg-type, misc]
    ):
        with pytest.raises(BurrowError):
            bad()
    config = burrow.define_task(
        "opts.ok",
        typed_handler(Item, []),
        burrow.with_max_retries(0),
        burrow.with_priority(-5),
        burrow.with_backoff(0.5, 2),
        burrow.with_timeout(1.5),
    ).config
    assert config == burrow.JobConfig(max_retries=0, priority=-5, backoff_base_s=0.5, backoff_max_s=2.0, timeout_s=1.5)
    assert burrow.JobConfig() == burrow.JobConfig(max_retries=3, priority=0)


class App:
    def __init__(self, task: burrow.TaskDefinition[Any]) -> None:
        self.task = task

    def register_jobs(self, q: burrow.Queue) -> None:
        self.task.register(q)


def test_protocols_are_runtime_checkable(queue: JobQueue) -> None:
    assert isinstance(queue, burrow.Queue)
    assert isinstance(queue, burrow.Enqueuer)
    app = App(burrow.define_task("app.noop", typed_handler(Item, [])))
    assert isinstance(app, burrow.HasJobs)
    assert not isinstance(object(), burrow.HasJobs)
    assert not isinstance(object(), burrow.Queue)
    app.register_jobs(queue)
    assert "app.noop" in queue.registrations


def test_design_example_end_to_end(queue: JobQueue) -> None:
    seen: list[Item] = []
    resize_task = burrow.define_task(
        "images.resize", typed_handler(Item, seen), burrow.with_max_retries(5), burrow.with_priority(10)
    )

    def add(p: Pair) -> int:
        return p.a + p.b

    add_task = burrow.define_result_task("math.add", add)

    class DesignApp:
        def register_jobs(self, q: burrow.Queue) -> None:
            resize_task.register(q)
            add_task.register(q)

    DesignApp().register_jobs(queue)
    job_id = resize_task.enqueue(queue, Item("a.png", 640))
    later = add_task.enqueue_at(queue, Pair(1, 2), dt.datetime.now(UTC) + dt.timedelta(hours=1))
    assert queue.dequeue(later) is True
    raw: list[bytes] = []
    queue.handle("raw.echo", raw.append, burrow.with_max_retries(0))
    raw_id = queue.enqueue("raw.echo", {"any": "json"})
    job_id2 = add_task.enqueue(queue, Pair(1, 2))
    assert queue.drain() == 3
    assert seen == [Item("a.png", 640)]
    assert [burrow.codec.decode(b) for b in raw] == [{"any": "json"}]
    assert add_task.result(queue, job_id2) == 3
    assert add_task.wait(queue, job_id2, timeout=10) == 3
    info = queue.job(job_id)
    assert (info.id, info.task, info.state, info.priority, info.attempts, info.max_retries) == (
        job_id,
        "images.resize",
        JobState.SUCCEEDED,
        10,
        1,
        5,
    )
    assert queue.job(raw_id).max_retries == 0
    assert queue.job(later).state == "cancelled"


# -- typed payloads ---------------------------------------------------------------

PAYLOAD_CASES = [
    pytest.param(Order, ORDER, id="nested-dataclass"),
    pytest.param(list[Item], [Item("a", 1), Item("b", 2, 0.5)], id="list"),
    pytest.param(dict[str, list[int]], {"a": [1, 2], "b": []}, id="dict"),
    pytest.param(Optional[Item], None, id="optional-none"),
    pytest.param(Optional[Item], Item("x", 3), id="optional-some"),
    pytest.param(dt.datetime, dt.datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=PDT), id="datetime"),
    pytest.param(Color, Color.RED, id="enum"),
    pytest.param(Level, Level.LOW, id="int-enum"),
    pytest.param(Point, {"x": 1, "y": 2}, id="typeddict"),
    pytest.param(Any, {"a": [1, 2.5, None, True, "é\u0000"], "b": {"c": {}}}, id="plain-json"),
    pytest.param(int, 2**64 - 1, id="uint64-max"),
    pytest.param(int, -(2**63), id="int64-min"),
]


@pytest.mark.parametrize(("payload_type", "value"), PAYLOAD_CASES)
def test_typed_payload_round_trips(queue: JobQueue, payload_type: Any, value: Any) -> None:
    received: list[Any] = []
    task = burrow.define_task("typed.roundtrip", typed_handler(payload_type, received))
    task.register(queue)
    job_id = task.enqueue(queue, value)
    assert queue.drain() == 1
    assert received == [value]
    assert type(received[0]) is type(value)
    assert queue.job(job_id).state is JobState.SUCCEEDED


def test_unannotated_handler_receives_plain_json(queue: JobQueue) -> None:
    received = []

    def handler(p):  # noqa: ANN001 - no annotation: P is plain JSON
        received.append(p)

    task = burrow.define_task("plain.json", handler)
    task.register(queue)
    task.enqueue(queue, {"list": [1, "two", 3.5, None], "flag": False})
    queue.enqueue("plain.json", [1, {"k": "v"}])
    assert queue.drain() == 2
    assert received == [{"list": [1, "two", 3.5, None], "flag": False}, [1, {"k": "v"}]]


def test_aware_datetimes_keep_their_offset(queue: JobQueue) -> None:
    received: list[Order] = []
    task = burrow.define_task("typed.order", typed_handler(Order, received))
    task.register(queue)
    task.enqueue(queue, ORDER)
    queue.drain()
    assert received[0].when == ORDER.when
    assert received[0].when.utcoffset() == dt.timedelta(hours=5, minutes=30)


def test_async_handlers_typed_and_raw(queue: JobQueue) -> None:
    seen: list[tuple[Any, int, str, int]] = []

    async def typed(p: Item) -> None:
        job = burrow.current_job()
        seen.append((p, job.id, job.task, job.attempt))

    async def raw(data: bytes) -> None:
        job = burrow.current_job()
        seen.append((data, job.id, job.task, job.attempt))

    async def double(p: Pair) -> Pair:
        return Pair(p.a * 2, p.b * burrow.current_job().attempt)

    typed_task = burrow.define_task("async.typed", typed)
    typed_task.register(queue)
    queue.handle("async.raw", raw)
    double_task = burrow.define_result_task("async.double", double)
    double_task.register(queue)

    typed_id = typed_task.enqueue(queue, Item("a", 1))
    raw_id = queue.enqueue("async.raw", b"\x00raw bytes")
    double_id = double_task.enqueue(queue, Pair(2, 3))
    assert queue.drain() == 3
    assert sorted(seen, key=lambda s: s[1]) == [
        (Item("a", 1), typed_id, "async.typed", 1),
        (b"\x00raw bytes", raw_id, "async.raw", 1),
    ]
    assert double_task.result(queue, double_id) == Pair(4, 3)


def test_a_job_can_enqueue_jobs(queue: JobQueue) -> None:
    seen: list[int] = []

    def countdown(p: int) -> None:
        seen.append(p)
        if p > 0:
            countdown_task.enqueue(queue, p - 1)

    countdown_task = burrow.define_task("chain.countdown", countdown)
    countdown_task.register(queue)
    countdown_task.enqueue(queue, 12)
    assert queue.drain() == 13
    assert seen == list(range(12, -1, -1))
    assert queue.backend.counts()[JobState.SUCCEEDED] == 13


def test_system_exit_in_a_handler_is_that_jobs_failure(queue: JobQueue) -> None:
    def handler(data: bytes) -> None:
        raise SystemExit(3)

    queue.handle("exit.task", handler, burrow.with_max_retries(0))
    job_id = queue.enqueue("exit.task", {})
    assert queue.drain() == 1
    info = queue.job(job_id)
    assert info.state is JobState.FAILED
    assert info.last_error is not None and info.last_error.startswith("SystemExit: 3")


def test_ctrl_c_during_drain_leaves_no_job_running(queue: JobQueue) -> None:
    ran: list[int] = []
    interrupt = [True]

    def handler(p: int) -> None:
        ran.append(p)
        if p == 2 and interrupt.pop():
            raise KeyboardInterrupt

    task = burrow.define_task("ctrlc.task", handler)
    task.register(queue)
    ids = task.enqueue_many(queue, [1, 2, 3, 4])
    with pytest.raises(KeyboardInterrupt):
        queue.drain()
    assert ran == [1, 2]
    states = [queue.job(job_id) for job_id in ids]
    assert states[0].state is JobState.SUCCEEDED
    assert [(s.state, s.attempts) for s in states[2:]] == [(JobState.QUEUED, 0), (JobState.QUEUED, 0)]
    assert states[1].state is JobState.QUEUED
    assert queue.backend.counts()[JobState.RUNNING] == 0
    ran.clear()
    assert queue.drain() == 3
    assert ran == [2, 3, 4]


# -- refused payloads -------------------------------------------------------------

UNENCODABLE = [
    pytest.param(object(), id="object"),
    pytest.param(math.nan, id="nan"),
    pytest.param({"deep": [1, math.inf]}, id="nested-inf"),
    pytest.param(2**64, id="int-over-64-bit"),
    pytest.param(-(2**63) - 1, id="int-under-64-bit"),
    pytest.param(dt.datetime(2030, 1, 1, 12, 0), id="naive-datetime"),
    pytest.param({"when": dt.datetime(2030, 1, 1, 12, 0)}, id="nested-naive-datetime"),
]


@pytest.mark.parametrize("value", UNENCODABLE)
def test_unencodable_payload_stores_nothing(queue: JobQueue, value: Any) -> None:
    with pytest.raises(PayloadEncodeError) as raised:
        queue.enqueue("raw.job", value)
    assert isinstance(raised.value, BurrowError)
    with pytest.raises(PayloadEncodeError):
        queue.enqueue_many("raw.job", [{"ok": 1}, value, {"ok": 2}])
    untyped = burrow.define_task("untyped.job", typed_handler(Any, []))
    with pytest.raises(PayloadEncodeError):
        untyped.enqueue(queue, value)
    with pytest.raises(PayloadEncodeError):
        untyped.enqueue_many(queue, [{"ok": 1}, value])
    assert total_jobs(queue) == 0


def test_unencodable_typed_payload_stores_nothing(queue: JobQueue) -> None:
    task = burrow.define_task("typed.order", typed_handler(Order, []))
    for bad in (
        dataclasses.replace(ORDER, when=dt.datetime(2030, 1, 1)),
        dataclasses.replace(ORDER, items=[Item("nan", 1, math.nan)]),
        dataclasses.replace(ORDER, id=2**70),
    ):
        with pytest.raises(PayloadEncodeError):
            task.enqueue(queue, bad)
        with pytest.raises(PayloadEncodeError):
            task.enqueue_many(queue, [ORDER, bad])
    assert total_jobs(queue) == 0


def test_payload_over_the_size_cap_is_refused(database: Database) -> None:
    with database.connect(max_payload_bytes=100) as q:
        q.enqueue("raw.job", b"x" * 100)
        with pytest.raises(PayloadEncodeError, match="100-byte cap"):
            q.enqueue("raw.job", b"x" * 101)
        assert total_jobs(q) == 1


def test_stored_payload_that_does_not_decode_fails_at_once(queue: JobQueue) -> None:
    received: list[Item] = []
    task = burrow.define_task("typed.item", typed_handler(Item, received), burrow.with_max_retries(3))
    task.register(queue)
    wrong_shape = queue.enqueue("typed.item", {"name": 1})
    not_json = queue.enqueue("typed.item", b"{not json")
    assert drain_all(queue) == 2
    assert received == []
    for job_id in (wrong_shape, not_json):
        info = queue.job(job_id)
        assert info.state is JobState.FAILED
        assert info.attempts == 1
        assert info.max_retries == 3
        assert info.last_error is not None
        assert info.last_error.startswith("PayloadDecodeError: cannot decode payload into Item")
        assert [e.event for e in queue.history(job_id)] == ["failed"]


# -- registration -----------------------------------------------------------------


def test_registering_a_name_twice_is_refused(queue: JobQueue) -> None:
    task = burrow.define_task("dup.task", typed_handler(Item, []))
    task.register(queue)
    with pytest.raises(DuplicateTask) as raised:
        task.register(queue)
    assert isinstance(raised.value, BurrowError)
    with pytest.raises(DuplicateTask):
        queue.handle("dup.task", lambda data: None)
    queue.handle("dup.raw", lambda data: None)
    with pytest.raises(DuplicateTask):
        queue.handle("dup.raw", lambda data: None)


def test_enqueue_without_local_handler_and_drain_claims_only_registered(queue: JobQueue) -> None:
    elsewhere = queue.enqueue("runs.elsewhere", {"x": 1})
    remote_task = burrow.define_task("runs.elsewhere.typed", typed_handler(Item, []))
    elsewhere_typed = remote_task.enqueue(queue, Item("x", 1))
    received: list[Item] = []
    burrow.define_task("runs.here", typed_handler(Item, received)).register(queue)
    here = queue.enqueue("runs.here", {"name": "h", "qty": 1, "price": 0.0})
    assert queue.drain() == 1
    assert received == [Item("h", 1)]
    assert queue.job(here).state is JobState.SUCCEEDED
    for job_id in (elsewhere, elsewhere_typed):
        info = queue.job(job_id)
        assert (info.state, info.attempts, info.started_at) == (JobState.QUEUED, 0, None)


# -- ordering ---------------------------------------------------------------------


def test_claim_order_is_priority_then_run_at_then_id(clocked: JobQueue, clock: FakeClock) -> None:
    order: list[str] = []
    clocked.handle("ordered", lambda data: order.append(burrow.codec.decode(data)))
    now = clock.now
    ago = lambda s: now - dt.timedelta(seconds=s)  # noqa: E731
    # Insertion (id) order deliberately disagrees with run_at order.
    clocked.enqueue("ordered", "p0-late", run_at=ago(1))
    clocked.enqueue("ordered", "p5-late", priority=5, run_at=ago(1))
    clocked.enqueue("ordered", "p5-early-first", priority=5, run_at=ago(5))
    clocked.enqueue("ordered", "p5-early-second", priority=5, run_at=ago(5))
    clocked.enqueue("ordered", "neg", priority=-3, run_at=ago(100))
    clocked.enqueue("ordered", "p0-early", run_at=ago(10))
    clocked.enqueue("ordered", "p0-now")
    clocked.enqueue("ordered", "p9-future", priority=9, run_at=now + dt.timedelta(seconds=1))
    expected = ["p5-early-first", "p5-early-second", "p5-late", "p0-early", "p0-late", "p0-now", "neg"]

    # One job per claim: the database's ORDER BY decides, not a sort after it.
    while clocked.drain(max_jobs=1):
        pass
    assert order == expected

    # A batch claim runs in the same order.
    order.clear()
    clocked.handle("ordered.batch", lambda data: order.append(burrow.codec.decode(data)))
    for label, priority, age in [("b", 1, 0), ("a", 1, 3), ("c", 0, 9), ("top", 2, 0)]:
        clocked.enqueue("ordered.batch", label, priority=priority, run_at=ago(age))
    assert clocked.drain() == 4
    assert order == ["top", "a", "b", "c"]


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


# -- scheduling -------------------------------------------------------------------


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


# -- dequeue ----------------------------------------------------------------------


def test_dequeue_cancels_only_jobs_that_have_not_started(clocked: JobQueue, clock: FakeClock) -> None:
    runs: list[int] = []

    def handler(p: Item) -> None:
        runs.append(burrow.current_job().id)
        if p.name == "flaky" and burrow.current_job().attempt == 1:
            raise RuntimeError("first run fails")

    task = burrow.define_task("dq.task", handler)
    task.register(clocked)

    queued = task.enqueue(clocked, Item("queued", 1))
    assert clocked.dequeue(queued) is True
    info = clocked.job(queued)
    assert info.state is JobState.CANCELLED
    assert info.finished_at == clock.now
    assert clocked.dequeue(queued) is False
    assert clocked.drain() == 0
    assert runs == []

    done = task.enqueue(clocked, Item("done", 1))
    assert clocked.drain() == 1
    assert clocked.dequeue(done) is False
    assert clocked.job(done).state is JobState.SUCCEEDED

    running = task.enqueue(clocked, Item("running", 1))
    [claimed] = clocked.backend.claim(["dq.task"], 1, "someone-else", 30)
    assert claimed.id == running
    assert clocked.dequeue(running) is False
    assert clocked.job(running).state is JobState.RUNNING

    flaky = task.enqueue(clocked, Item("flaky", 1))
    assert clocked.drain() == 1
    waiting = clocked.job(flaky)
    assert (waiting.state, waiting.attempts) == (JobState.QUEUED, 1)
    assert waiting.run_at > clock.now
    assert clocked.dequeue(flaky) is True
    assert clocked.job(flaky).state is JobState.CANCELLED
    clock.advance(3600)
    assert clocked.drain() == 0
    assert runs == [done, flaky]


def test_dequeue_of_a_failed_job_is_false(queue: JobQueue) -> None:
    def handler(p: Item) -> None:
        raise burrow.PermanentError("never")

    task = burrow.define_task("dq.failed", handler)
    task.register(queue)
    job_id = task.enqueue(queue, Item("a", 1))
    queue.drain()
    assert queue.dequeue(job_id) is False
    assert queue.job(job_id).state is JobState.FAILED


# -- retries ----------------------------------------------------------------------


def test_failing_job_runs_max_retries_plus_one_times(queue: JobQueue) -> None:
    contexts: list[tuple[int, int, bool]] = []

    def handler(p: Item) -> None:
        job = burrow.current_job()
        contexts.append((job.attempt, job.max_retries, job.is_last_attempt))
        raise ValueError(f"boom {p.qty}")

    task = burrow.define_task("retry.task", handler, burrow.with_max_retries(2), burrow.with_backoff(0, 0))
    task.register(queue)
    job_id = task.enqueue(queue, Item("a", 42))
    assert drain_all(queue) == 3
    assert contexts == [(1, 2, False), (2, 2, False), (3, 2, True)]
    info = queue.job(job_id)
    assert info.state is JobState.FAILED
    assert info.attempts == 3
    assert info.max_retries == 2
    assert info.finished_at is not None
    assert info.last_error is not None
    assert info.last_error.startswith("ValueError: boom 42")
    assert "Traceback" in info.last_error
    history = queue.history(job_id)
    assert [(h.job_id, h.attempt, h.event) for h in history] == [
        (job_id, 1, "retried"),
        (job_id, 2, "retried"),
        (job_id, 3, "failed"),
    ]
    assert all(h.error is not None and "ValueError: boom 42" in h.error for h in history)
    assert all(h.at.utcoffset() == dt.timedelta(0) for h in history)
    with pytest.raises(JobFailed, match="boom 42"):
        queue.result(job_id)


def test_zero_retries_means_one_run(queue: JobQueue) -> None:
    runs: list[int] = []

    def handler(data: bytes) -> None:
        runs.append(burrow.current_job().attempt)
        raise RuntimeError("once")

    queue.handle("retry.none", handler, burrow.with_max_retries(0))
    job_id = queue.enqueue("retry.none", {})
    assert drain_all(queue) == 1
    assert runs == [1]
    assert (queue.job(job_id).state, queue.job(job_id).attempts) == (JobState.FAILED, 1)


def test_default_backoff_delays_the_retry(clocked: JobQueue, clock: FakeClock) -> None:
    attempts: list[int] = []

    def handler(p: Item) -> None:
        attempts.append(burrow.current_job().attempt)
        if burrow.current_job().attempt <= 2:
            raise ConnectionError("service down")

    task = burrow.define_task("backoff.task", handler)
    task.register(clocked)
    job_id = task.enqueue(clocked, Item("a", 1))

    failed_at = clock.now
    assert clocked.drain() == 1
    info = clocked.job(job_id)
    assert (info.state, info.attempts) == (JobState.QUEUED, 1)
    assert info.last_error is not None and info.last_error.startswith("ConnectionError: service down")
    # attempt 1: base 1 s, jitter [0.5, 1]
    assert failed_at + dt.timedelta(seconds=0.5) <= info.run_at <= failed_at + dt.timedelta(seconds=1)
    clock.now = info.run_at - dt.timedelta(microseconds=1)
    assert clocked.drain() == 0
    clock.now = info.run_at

    failed_at = clock.now
    assert clocked.drain() == 1
    info = clocked.job(job_id)
    # attempt 2: 2 s, jitter [0.5, 1]
    assert failed_at + dt.timedelta(seconds=1) <= info.run_at <= failed_at + dt.timedelta(seconds=2)
    clock.now = info.run_at - dt.timedelta(microseconds=1)
    assert clocked.drain() == 0
    clock.now = info.run_at

    assert clocked.drain() == 1
    assert attempts == [1, 2, 3]
    info = clocked.job(job_id)
    assert (info.state, info.attempts) == (JobState.SUCCEEDED, 3)


def test_with_backoff_caps_the_delay(clocked: JobQueue, clock: FakeClock) -> None:
    def handler(p: Item) -> None:
        raise RuntimeError("always")

    task = burrow.define_task("backoff.capped", handler, burrow.with_max_retries(10), burrow.with_backoff(10, 15))
    task.register(clocked)
    job_id = task.enqueue(clocked, Item("a", 1))
    for attempt in range(1, 5):
        failed_at = clock.now
        assert clocked.drain() == 1
        run_at = clocked.job(job_id).run_at
        expected = min(15.0, 10.0 * 2 ** (attempt - 1))
        assert failed_at + dt.timedelta(seconds=expected / 2) <= run_at <= failed_at + dt.timedelta(seconds=expected)
        clock.now = run_at


def test_permanent_error_fails_at_once(queue: JobQueue) -> None:
    class Gone(burrow.PermanentError):
        pass

    runs: list[int] = []

    def handler(p: Item) -> None:
        runs.append(burrow.current_job().attempt)
        raise (burrow.PermanentError("no such user") if p.qty == 1 else Gone("deleted"))

    task = burrow.define_task("perm.task", handler, burrow.with_max_retries(3), burrow.with_backoff(0, 0))
    task.register(queue)
    first = task.enqueue(queue, Item("a", 1))
    second = task.enqueue(queue, Item("b", 2))
    assert drain_all(queue) == 2
    assert runs == [1, 1]
    for job_id, head in ((first, "PermanentError: no such user"), (second, "Gone: deleted")):
        info = queue.job(job_id)
        assert (info.state, info.attempts) == (JobState.FAILED, 1)
        assert info.last_error is not None and info.last_error.startswith(head)


# -- results ----------------------------------------------------------------------


def add(p: Pair) -> int:
    return p.a + p.b


def summarize(p: Pair) -> Summary:
    if p.a < 0:
        raise burrow.PermanentError("negative")
    return Summary(p.a + p.b, p.a * p.b, p, dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=IST))


def test_result_task_returns_typed_values(queue: JobQueue) -> None:
    add_task = burrow.define_result_task("math.add", add)
    summary_task = burrow.define_result_task("math.summary", summarize)
    add_task.register(queue)
    summary_task.register(queue)
    add_id = add_task.enqueue(queue, Pair(1, 2))
    summary_id = summary_task.enqueue(queue, Pair(3, 4))
    with pytest.raises(JobNotFinished) as raised:
        add_task.result(queue, add_id)
    assert isinstance(raised.value, BurrowError)
    assert queue.drain() == 2
    assert add_task.result(queue, add_id) == 3
    assert add_task.wait(queue, add_id, timeout=5) == 3
    summary = summary_task.result(queue, summary_id)
    assert summary == Summary(7, 12, Pair(3, 4), dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=IST))
    assert summary.at.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert summary_task.wait(queue, summary_id, timeout=5) == summary
    assert queue.job(add_id).result == b"3"
    assert queue.result(add_id) == b"3"


def test_result_task_returning_none(queue: JobQueue) -> None:
    def touch(p: Pair) -> None:
        return None

    def maybe(p: Pair) -> Optional[Pair]:
        return p if p.a else None

    touch_task = burrow.define_result_task("math.touch", touch)
    maybe_task = burrow.define_result_task("math.maybe", maybe)
    touch_task.register(queue)
    maybe_task.register(queue)
    touched = touch_task.enqueue(queue, Pair(1, 2))
    nothing, something = maybe_task.enqueue_many(queue, [Pair(0, 1), Pair(1, 1)])
    assert queue.drain() == 3
    assert touch_task.result(queue, touched) is None
    assert touch_task.wait(queue, touched, timeout=5) is None
    assert maybe_task.result(queue, nothing) is None
    assert maybe_task.result(queue, something) == Pair(1, 1)


def test_result_of_a_plain_task_is_none(queue: JobQueue) -> None:
    task = burrow.define_task("plain.noresult", typed_handler(Item, []))
    task.register(queue)
    job_id = task.enqueue(queue, Item("a", 1))
    queue.drain()
    assert queue.result(job_id) is None
    assert queue.job(job_id).result is None


def test_result_of_failed_and_cancelled_jobs(queue: JobQueue) -> None:
    summary_task = burrow.define_result_task("math.summary", summarize)
    summary_task.register(queue)
    failed = summary_task.enqueue(queue, Pair(-1, 2))
    cancelled = summary_task.enqueue_at(queue, Pair(1, 2), dt.datetime.now(UTC) + dt.timedelta(days=1))
    assert queue.dequeue(cancelled)
    assert queue.drain() == 1
    for call in (lambda: summary_task.result(queue, failed), lambda: summary_task.wait(queue, failed, 5)):
        with pytest.raises(JobFailed, match="negative") as raised:
            call()
        assert isinstance(raised.value, BurrowError)
    for call in (lambda: summary_task.result(queue, cancelled), lambda: summary_task.wait(queue, cancelled, 5)):
        with pytest.raises(JobCancelled) as cancelled_raised:
            call()
        assert isinstance(cancelled_raised.value, BurrowError)


def test_wait_times_out_with_a_timeout_error(queue: JobQueue) -> None:
    add_task = burrow.define_result_task("math.add", add)
    job_id = add_task.enqueue(queue, Pair(1, 2))
    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        add_task.wait(queue, job_id, timeout=0.3)
    elapsed = time.monotonic() - started
    assert isinstance(raised.value, BurrowError)
    assert isinstance(raised.value, WaitTimeout)
    assert 0.3 <= elapsed < 1.5
    assert queue.job(job_id).state is JobState.QUEUED


def test_wait_returns_when_another_process_finishes_the_job(database: Database, queue: JobQueue) -> None:
    add_task = burrow.define_result_task("math.add", add)
    job_id = add_task.enqueue(queue, Pair(20, 22))
    with database.connect() as worker:
        add_task.register(worker)
        thread = threading.Thread(target=worker.drain)
        thread.start()
        try:
            assert add_task.wait(queue, job_id, timeout=30) == 42
        finally:
            thread.join(timeout=30)
    assert not thread.is_alive()


def test_unknown_job_is_job_not_found(queue: JobQueue) -> None:
    for call in (queue.job, queue.result, lambda i: queue.wait(i, 1)):
        with pytest.raises(JobNotFound) as raised:
            call(987654321)
        assert isinstance(raised.value, BurrowError)
    add_task = burrow.define_result_task("math.add", add)
    with pytest.raises(JobNotFound):
        add_task.result(queue, 987654321)


def test_result_capture_directly() -> None:
    with pytest.raises(BurrowError, match="no ResultCapture bound"):
        burrow.capture_result(b"nowhere")
    with pytest.raises(BurrowError, match="outside a running job"):
        burrow.current_job()
    outer = burrow.ResultCapture()
    assert outer.data is None
    with burrow.with_result_capture(outer) as bound:
        assert bound is outer
        burrow.capture_result(b"first")
        inner = burrow.ResultCapture()
        with burrow.with_result_capture(inner):
            burrow.capture_result(bytearray(b"inner"))  # type: ignore[arg-type]
        burrow.capture_result(b"second")
    assert inner.data == b"inner"
    assert isinstance(inner.data, bytes)
    assert outer.data == b"second"
    with pytest.raises(BurrowError):
        burrow.capture_result(b"after")


def test_raw_handler_can_capture_a_result(queue: JobQueue) -> None:
    queue.handle("raw.capture", lambda data: burrow.capture_result(data[::-1]))
    queue.handle("raw.nocapture", lambda data: None)
    captured = queue.enqueue("raw.capture", b"abc")
    plain = queue.enqueue("raw.nocapture", b"abc")
    assert queue.drain() == 2
    assert queue.result(captured) == b"cba"
    assert queue.job(captured).result == b"cba"
    assert queue.result(plain) is None


# -- bulk -------------------------------------------------------------------------


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


def test_drain_max_jobs(queue: JobQueue) -> None:
    queue.handle("bulk.count", lambda data: None)
    queue.enqueue_many("bulk.count", [{} for _ in range(25)])
    assert queue.drain(max_jobs=0) == 0
    assert queue.drain(max_jobs=7) == 7
    counts = queue.backend.counts()
    assert (counts[JobState.SUCCEEDED], counts[JobState.QUEUED], counts[JobState.RUNNING]) == (7, 18, 0)
    assert queue.drain(max_jobs=13) == 13
    assert queue.drain() == 5
    assert queue.drain() == 0
    assert queue.backend.counts()[JobState.SUCCEEDED] == 25


# -- JobInfo ----------------------------------------------------------------------


def test_jobinfo_times_and_attempts(clocked: JobQueue, clock: FakeClock) -> None:
    task = burrow.define_task("info.task", typed_handler(Item, []))
    task.register(clocked)
    enqueued_at = clock.now
    job_id = task.enqueue(clocked, Item("a", 1))
    info = clocked.job(job_id)
    assert (info.id, info.task, info.state, info.priority, info.attempts, info.max_retries) == (
        job_id,
        "info.task",
        JobState.QUEUED,
        0,
        0,
        3,
    )
    assert info.created_at == enqueued_at and info.run_at == enqueued_at
    for value in (info.created_at, info.run_at):
        assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)
    assert (info.started_at, info.finished_at, info.last_error, info.result) == (None, None, None, None)

    clock.advance(5)
    assert clocked.drain() == 1
    info = clocked.job(job_id)
    assert info.state is JobState.SUCCEEDED and info.state == "succeeded"
    assert info.attempts == 1
    assert info.started_at == clock.now and info.finished_at == clock.now
    assert info.created_at == enqueued_at
    for value in (info.started_at, info.finished_at):
        assert value is not None and value.utcoffset() == dt.timedelta(0)


def test_jobinfo_times_with_the_real_clock(queue: JobQueue) -> None:
    task = burrow.define_task("info.real", typed_handler(Item, []))
    task.register(queue)
    job_id = task.enqueue(queue, Item("a", 1))
    queue.drain()
    info = queue.job(job_id)
    assert info.started_at is not None and info.finished_at is not None
    assert info.created_at <= info.started_at <= info.finished_at
    for value in (info.created_at, info.run_at, info.started_at, info.finished_at):
        assert value.utcoffset() == dt.timedelta(0)
        assert abs(value - dt.datetime.now(UTC)) < dt.timedelta(minutes=5)


# -- migrations and names ---------------------------------------------------------


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


BAD_NAMES = ["has space", "quote'd", 'double"quote', "nul\x00byte", "", ".leading", "-leading", "semi;colon", "x" * 201]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_invalid_task_names_are_refused(queue: JobQueue, name: str) -> None:
    handler = typed_handler(Item, [])
    with pytest.raises(InvalidTaskName) as raised:
        burrow.define_task(name, handler)
    assert isinstance(raised.value, BurrowError)
    with pytest.raises(InvalidTaskName):
        burrow.define_result_task(name, add)
    with pytest.raises(InvalidTaskName):
        queue.handle(name, lambda data: None)
    with pytest.raises(InvalidTaskName):
        queue.enqueue(name, {})
    with pytest.raises(InvalidTaskName):
        queue.enqueue_many(name, [{}])
    assert total_jobs(queue) == 0
    assert name not in queue.registrations


def test_valid_task_names_are_accepted(queue: JobQueue) -> None:
    for name in ("a" * 200, "ns.task:v1-x_y", "_private", "9lives"):
        burrow.define_task(name, typed_handler(Item, [])).register(queue)
        job_id = queue.enqueue(name, {"name": "n", "qty": 1, "price": 0.0})
        assert queue.job(job_id).task == name
    assert queue.drain() == 4


# -- fencing through the backend API ----------------------------------------------


def test_claim_returns_at_most_n(clocked: JobQueue) -> None:
    ids = clocked.enqueue_many("claim.task", [{} for _ in range(5)])
    backend = clocked.backend
    assert backend.claim(["claim.task"], 0, "owner", 30) == []
    assert backend.claim([], 5, "owner", 30) == []
    first = backend.claim(["claim.task"], 2, "owner", 30)
    assert [job.id for job in first] == ids[:2]
    rest = backend.claim(["claim.task", "other.task"], 10, "owner", 30)
    assert [job.id for job in rest] == ids[2:]
    assert backend.claim(["claim.task"], 10, "owner", 30) == []
    assert all(job.attempt == 1 and job.owner == "owner" for job in first + rest)
    assert backend.counts()[JobState.RUNNING] == 5


def test_lost_lease_is_fenced(clocked: JobQueue, clock: FakeClock) -> None:
    backend = clocked.backend
    job_id = clocked.enqueue("fence.task", {"n": 1}, max_retries=3)
    [a] = backend.claim(["fence.task"], 1, "owner-A", 10)
    assert (a.id, a.attempt, a.owner) == (job_id, 1, "owner-A")
    record = backend.get(job_id)
    assert record is not None
    assert (record.owner, record.lease_expires_at) == ("owner-A", clock.now + dt.timedelta(seconds=10))

    clock.advance(5)
    assert backend.extend_leases([(job_id, "owner-A", 1)], 10) == []
    assert backend.reap_expired() == []
    clock.advance(10.5)
    [reaped] = backend.reap_expired()
    assert (reaped.id, reaped.task, reaped.attempt, reaped.state) == (job_id, "fence.task", 1, JobState.QUEUED)
    assert backend.reap_expired() == []
    requeued = clocked.job(job_id)
    assert (requeued.state, requeued.attempts, requeued.run_at) == (JobState.QUEUED, 1, clock.now)
    assert requeued.last_error is not None and "lease expired" in requeued.last_error

    [b] = backend.claim(["fence.task"], 1, "owner-B", 10)
    assert (b.id, b.attempt, b.owner) == (job_id, 2, "owner-B")

    stale = Outcome(job_id, "owner-A", 1, OutcomeKind.SUCCEEDED, result=b"from A")
    assert backend.finish([stale]) == [job_id]
    assert backend.finish([Outcome(job_id, "owner-A", 2, OutcomeKind.FAILED, error="A again")]) == [job_id]
    assert backend.finish([Outcome(job_id, "owner-B", 1, OutcomeKind.RETRY, error="old attempt")]) == [job_id]
    assert backend.extend_leases([(job_id, "owner-A", 1)], 10) == [job_id]
    record = backend.get(job_id)
    assert record is not None
    assert (record.state, record.owner, record.attempts, record.result) == (JobState.RUNNING, "owner-B", 2, None)
    assert record.lease_expires_at == clock.now + dt.timedelta(seconds=10)
    assert record.last_error is not None and "lease expired" in record.last_error

    assert backend.finish([Outcome(job_id, "owner-B", 2, OutcomeKind.SUCCEEDED, result=b"from B")]) == []
    done = clocked.job(job_id)
    assert (done.state, done.attempts, done.result, done.finished_at) == (JobState.SUCCEEDED, 2, b"from B", clock.now)
    # Finished: no fence holds any more, not even the winner's.
    assert backend.finish([Outcome(job_id, "owner-B", 2, OutcomeKind.FAILED, error="late")]) == [job_id]
    assert backend.extend_leases([(job_id, "owner-B", 2)], 10) == [job_id]
    assert clocked.job(job_id).state is JobState.SUCCEEDED
    assert [(h.attempt, h.event) for h in clocked.history(job_id)] == [(1, "lease_expired")]


def test_finish_batch_reports_only_the_lost(clocked: JobQueue, clock: FakeClock) -> None:
    backend = clocked.backend
    ids = clocked.enqueue_many("fence.batch", [{} for _ in range(4)], max_retries=5)
    claimed = backend.claim(["fence.batch"], 4, "me", 30)
    assert [job.id for job in claimed] == ids
    outcomes = [
        Outcome(ids[0], "me", 1, OutcomeKind.SUCCEEDED, result=b"r"),
        Outcome(ids[1], "me", 1, OutcomeKind.RETRY, error="again", retry_in_s=7),
        Outcome(ids[2], "me", 1, OutcomeKind.FAILED, error="bad"),
        Outcome(ids[3], "me", 1, OutcomeKind.RELEASED),
        Outcome(ids[3] + 1000, "me", 1, OutcomeKind.SUCCEEDED),
    ]
    assert backend.finish(outcomes) == [ids[3] + 1000]
    states = [clocked.job(job_id) for job_id in ids]
    assert [(s.state, s.attempts) for s in states] == [
        (JobState.SUCCEEDED, 1),
        (JobState.QUEUED, 1),
        (JobState.FAILED, 1),
        (JobState.QUEUED, 0),
    ]
    assert states[0].result == b"r"
    assert states[1].run_at == clock.now + dt.timedelta(seconds=7)
    assert states[1].last_error == "again" and states[2].last_error == "bad"
    assert states[3].run_at == clock.now
    assert [(h.job_id, h.event) for i in ids for h in clocked.history(i)] == [(ids[1], "retried"), (ids[2], "failed")]


def test_expired_lease_with_spent_retries_fails(clocked: JobQueue, clock: FakeClock) -> None:
    backend = clocked.backend
    job_id = clocked.enqueue("fence.spent", {}, max_retries=0)
    backend.claim(["fence.spent"], 1, "owner-A", 10)
    clock.advance(11)
    [reaped] = backend.reap_expired()
    assert (reaped.id, reaped.state) == (job_id, JobState.FAILED)
    info = clocked.job(job_id)
    assert (info.state, info.attempts, info.finished_at) == (JobState.FAILED, 1, clock.now)
    assert backend.claim(["fence.spent"], 1, "owner-B", 10) == []
    with pytest.raises(JobFailed, match="lease expired"):
        clocked.result(job_id)


# -- SQLite specifics -------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with burrow.connect("sqlite:///relative.db") as q:
        job_id = q.enqueue("rel.task", {})
    assert (tmp_path / "relative.db").is_file()
    with burrow.connect(f"sqlite:///{tmp_path / 'relative.db'}") as q:
        assert q.job(job_id).task == "rel.task"


def test_sqlite_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    dsn = f"sqlite:///{path}"
    assert dsn.startswith("sqlite:////")
    with burrow.connect(dsn) as q:
        q.enqueue("abs.task", {})
        assert q.backend.counts()[JobState.QUEUED] == 1
    assert path.is_file()


def test_sqlite_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(BackendError) as raised:
        burrow.connect(f"sqlite:///{missing / 'jobs.db'}")
    assert str(missing) in str(raised.value)
    assert not missing.exists()


def test_sqlite_refuses_memory_and_schema(tmp_path: Path) -> None:
    with pytest.raises(BackendError):
        burrow.connect("sqlite:///:memory:")
    with pytest.raises(BackendError):
        burrow.connect(f"sqlite:///{tmp_path / 'x.db'}", schema="nope")


def test_sqlite_files_are_private_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    with umask(0o022), burrow.connect(f"sqlite:///{path}") as q:
        q.handle("priv.task", lambda data: None)
        q.enqueue("priv.task", {})
        assert q.drain() == 1
        files = [path] + [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        assert Path(f"{path}-wal") in files
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_large_enqueue_many_keeps_payload_order(queue: JobQueue) -> None:
    """More rows than one SQLite statement takes (it is split, in one transaction):
    the ids still come back in payload order, and the jobs are claimed in it."""
    ids = queue.enqueue_many("bulk.large", [{"n": i} for i in range(1_234)])
    assert len(ids) == 1_234 and ids == sorted(ids)
    for i in (0, 499, 500, 501, 999, 1_000, 1_233):
        record = queue.backend.get(ids[i])
        assert record is not None and burrow.codec.decode(record.payload) == {"n": i}
    claimed = queue.backend.claim(["bulk.large"], 1_234, "large", 30.0)
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
