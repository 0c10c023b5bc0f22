"""Retries: max_retries + 1 runs, zero retries, the default backoff and its cap,
the jitter that spreads retries, permanent errors, an expired lease with its retries
spent, and SystemExit raised by a handler."""

from __future__ import annotations

import datetime as dt

import pytest

import burrow
from burrow.job import JobState
from burrow.backends.records import ClaimRequest
from burrow.errors import JobFailed
from burrow.queue import JobQueue
from tests.backends.helpers import Item, drain_all
from tests.conftest import FakeClock


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


JITTERED = 20


def test_retry_jitter_spreads_jobs_that_failed_together(clocked: JobQueue, clock: FakeClock) -> None:
    """Jobs that failed in the same instant (a dependency was down) must not all come
    back in the same instant: each retry's delay gets its own jitter in [0.5, 1]."""

    def handler(p: int) -> None:
        raise ConnectionError("dependency down")

    task = burrow.define_task("jitter.task", handler, burrow.with_backoff(10, 100))
    task.register(clocked)
    ids = task.enqueue_many(clocked, list(range(JITTERED)))
    failed_at = clock.now
    assert clocked.drain() == JITTERED
    run_ats = [clocked.job(job_id).run_at for job_id in ids]
    # attempt 1: 10 s, jitter [0.5, 1]
    assert all(failed_at + dt.timedelta(seconds=5) <= r <= failed_at + dt.timedelta(seconds=10) for r in run_ats)
    assert len(set(run_ats)) >= 10, run_ats
    assert max(run_ats) - min(run_ats) >= dt.timedelta(seconds=1), run_ats


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


def test_expired_lease_with_spent_retries_fails(clocked: JobQueue, clock: FakeClock) -> None:
    backend = clocked.backend
    job_id = clocked.enqueue("fence.spent", {}, max_retries=0)
    backend.claim(ClaimRequest(["fence.spent"], 1, "owner-A", 10))
    clock.advance(11)
    [reaped] = clocked.reap_expired()
    assert (reaped.id, reaped.state) == (job_id, JobState.FAILED)
    info = clocked.job(job_id)
    assert (info.state, info.attempts, info.finished_at) == (JobState.FAILED, 1, clock.now)
    assert backend.claim(ClaimRequest(["fence.spent"], 1, "owner-B", 10)) == []
    with pytest.raises(JobFailed, match="lease expired"):
        clocked.result(job_id)


def test_system_exit_in_a_handler_is_that_jobs_failure(queue: JobQueue) -> None:
    def handler(data: bytes) -> None:
        raise SystemExit(3)

    queue.handle("exit.task", handler, burrow.with_max_retries(0))
    job_id = queue.enqueue("exit.task", {})
    assert queue.drain() == 1
    info = queue.job(job_id)
    assert info.state is JobState.FAILED
    assert info.last_error is not None and info.last_error.startswith("SystemExit: 3")
