"""Results and job inspection: result tasks (typed, None, failed, cancelled), wait
(timeout, from another process), unknown jobs, result capture, async handlers, a job
enqueueing jobs, and JobInfo's times and attempts."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any, Optional

import pytest

import burrow
from burrow.job import JobState
from burrow.errors import BurrowError, JobCancelled, JobFailed, JobNotFinished, JobNotFound, WaitTimeout
from burrow.queue import JobQueue
from tests.backends.helpers import IST, UTC, Item, Pair, Summary, add, typed_handler
from tests.conftest import Database, FakeClock


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
