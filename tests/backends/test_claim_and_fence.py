"""Claiming and fencing: claim order and size, drain claiming only registered tasks
and honouring max_jobs, a lost lease fenced off, a finish batch reporting only the
lost outcomes, dequeue, and Ctrl-C during a drain."""

from __future__ import annotations

import datetime as dt

import pytest
import structlog

import burrow
from burrow.job import JobState
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind
from burrow.queue import JobQueue
from tests.backends.helpers import Item, typed_handler
from tests.conftest import Database, FakeClock


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


def test_claim_returns_at_most_n(clocked: JobQueue) -> None:
    ids = clocked.enqueue_many("claim.task", [{} for _ in range(5)])
    backend = clocked.backend
    assert backend.claim(ClaimRequest(["claim.task"], 0, "owner", 30)) == []
    assert backend.claim(ClaimRequest([], 5, "owner", 30)) == []
    first = backend.claim(ClaimRequest(["claim.task"], 2, "owner", 30))
    assert [job.id for job in first] == ids[:2]
    rest = backend.claim(ClaimRequest(["claim.task", "other.task"], 10, "owner", 30))
    assert [job.id for job in rest] == ids[2:]
    assert backend.claim(ClaimRequest(["claim.task"], 10, "owner", 30)) == []
    assert all(job.attempt == 1 and job.owner == "owner" for job in first + rest)
    assert backend.counts()[JobState.RUNNING] == 5


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


def test_lost_lease_is_fenced(clocked: JobQueue, clock: FakeClock) -> None:
    backend = clocked.backend
    job_id = clocked.enqueue("fence.task", {"n": 1}, max_retries=3)
    [a] = backend.claim(ClaimRequest(["fence.task"], 1, "owner-A", 10))
    assert (a.id, a.attempt, a.owner) == (job_id, 1, "owner-A")
    record = backend.get(job_id)
    assert record is not None
    assert (record.owner, record.lease_expires_at) == ("owner-A", clock.now + dt.timedelta(seconds=10))

    clock.advance(5)
    assert backend.extend_leases([(job_id, "owner-A", 1)], 10) == []
    assert clocked.reap_expired() == []
    clock.advance(10.5)
    [reaped] = clocked.reap_expired()
    assert (reaped.id, reaped.task, reaped.attempt, reaped.state) == (job_id, "fence.task", 1, JobState.QUEUED)
    assert clocked.reap_expired() == []
    requeued = clocked.job(job_id)
    assert (requeued.state, requeued.attempts) == (JobState.QUEUED, 1)
    # Retried like any failed run: the default backoff (1 s) with its jitter.
    assert clock.now + dt.timedelta(seconds=0.5) <= requeued.run_at <= clock.now + dt.timedelta(seconds=1)
    assert requeued.last_error is not None and "lease expired" in requeued.last_error
    assert backend.claim(ClaimRequest(["fence.task"], 1, "owner-B", 10)) == []
    clock.advance(1)

    [b] = backend.claim(ClaimRequest(["fence.task"], 1, "owner-B", 10))
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


@pytest.mark.parametrize("outcome", [OutcomeKind.SUCCEEDED, OutcomeKind.RETRY, OutcomeKind.FAILED, OutcomeKind.RELEASED])
def test_a_stale_attempt_of_the_same_owner_is_fenced(clocked: JobQueue, clock: FakeClock, outcome: OutcomeKind) -> None:
    """The attempt is part of the fence: a supervisor that retried a job and claimed it
    again must not let the first run's late outcome or lease extension touch the second."""
    backend = clocked.backend
    job_id = clocked.enqueue("fence.again", {"n": 1}, max_retries=3)
    [first] = backend.claim(ClaimRequest(["fence.again"], 1, "owner-A", 10))
    assert backend.finish([Outcome(job_id, "owner-A", first.attempt, OutcomeKind.RETRY, error="once", retry_in_s=0)]) == []
    [second] = backend.claim(ClaimRequest(["fence.again"], 1, "owner-A", 10))
    assert (second.id, second.owner, second.attempt) == (job_id, "owner-A", first.attempt + 1)
    before = backend.get(job_id), backend.history(job_id)

    clock.advance(3)
    stale = Outcome(job_id, "owner-A", first.attempt, outcome, result=b'"late"', error="late", retry_in_s=0)
    assert backend.finish([stale]) == [job_id]
    assert backend.extend_leases([(job_id, "owner-A", first.attempt)], 60) == [job_id]
    assert (backend.get(job_id), backend.history(job_id)) == before

    assert backend.extend_leases([(job_id, "owner-A", second.attempt)], 60) == []
    assert backend.finish([Outcome(job_id, "owner-A", second.attempt, OutcomeKind.SUCCEEDED, result=b'"ok"')]) == []
    done = clocked.job(job_id)
    assert (done.state, done.attempts, done.result) == (JobState.SUCCEEDED, 2, b'"ok"')


def test_reap_expired_takes_at_most_limit_oldest_expiry_first(clocked: JobQueue, clock: FakeClock) -> None:
    """A reaper's turn is bounded: a host that held thousands of jobs is reaped in slices."""
    backend = clocked.backend
    ids = clocked.enqueue_many("fence.task", [{"n": n} for n in range(5)])
    for n, job_id in enumerate(ids):
        [claimed] = backend.claim(ClaimRequest(["fence.task"], 1, f"owner-{n}", 10 + n))  # job n expires n s after job 0
        assert claimed.id == job_id
    clock.advance(20)
    assert [job.id for job in clocked.reap_expired(limit=2)] == ids[:2]
    assert [job.id for job in clocked.reap_expired(limit=2)] == ids[2:4]
    assert [job.id for job in clocked.reap_expired(limit=2)] == ids[4:]
    assert clocked.reap_expired(limit=2) == []


def test_finish_batch_reports_only_the_lost(clocked: JobQueue, clock: FakeClock) -> None:
    backend = clocked.backend
    ids = clocked.enqueue_many("fence.batch", [{} for _ in range(4)], max_retries=5)
    claimed = backend.claim(ClaimRequest(["fence.batch"], 4, "me", 30))
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
    [claimed] = clocked.backend.claim(ClaimRequest(["dq.task"], 1, "someone-else", 30))
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


def test_drain_keeps_every_lease_of_a_slow_batch_alive(database: Database, clock: FakeClock) -> None:
    """Jobs that ran but whose outcomes are not written yet keep their leases too: a
    reaper elsewhere finds nothing to take, and every result is recorded."""
    q = database.connect(clock=clock, lease_s=10)
    reaper = database.connect(clock=clock)
    try:
        reaped: list[int] = []

        def slow(data: bytes) -> None:
            clock.advance(6)  # each job takes 6 s of a 10 s lease
            reaped.extend(job.id for job in reaper.reap_expired())

        q.handle("slow.batch", slow)
        ids = q.enqueue_many("slow.batch", [{"n": i} for i in range(3)])
        assert q.drain() == 3
        assert reaped == []
        assert {q.job(i).state for i in ids} == {JobState.SUCCEEDED}
        assert all(q.history(i) == [] for i in ids)
    finally:
        q.close()
        reaper.close()


def test_drain_does_not_run_or_count_a_job_whose_lease_was_lost(database: Database, clock: FakeClock) -> None:
    q = database.connect(clock=clock, lease_s=10)
    reaper = database.connect(clock=clock)
    try:
        ran: list[int] = []

        def stalls(data: bytes) -> None:
            ran.append(burrow.current_job().id)
            clock.advance(11)  # past the lease of the jobs claimed behind it
            reaper.reap_expired()

        q.handle("stall.batch", stalls)
        first, second = q.enqueue_many("stall.batch", [{"n": 1}, {"n": 2}])
        with structlog.testing.capture_logs() as logs:
            assert q.drain(max_jobs=2) == 0
        assert ran == [first]
        lost = {entry["job_id"] for entry in logs if entry["event"] == "job_lease_lost"}
        assert lost == {first, second}
        assert [h.event for h in q.history(first)] == ["lease_expired"]
    finally:
        q.close()
        reaper.close()


@pytest.mark.parametrize("lost_kind", [OutcomeKind.SUCCEEDED, OutcomeKind.RETRY])
def test_a_mixed_batch_writes_all_but_the_lost_whichever_part_they_are_in(
    clocked: JobQueue, clock: FakeClock, lost_kind: OutcomeKind
) -> None:
    """A batch of successes with a few retries is written in two parts (the successes by
    the uniform UPDATE, the rest by the general one); an outcome whose fence fails in
    either part is reported, and every other is written as its kind says."""
    backend = clocked.backend
    ids = clocked.enqueue_many("fence.mixed", [{} for _ in range(20)], max_retries=5)
    claimed = backend.claim(ClaimRequest(["fence.mixed"], 20, "me", 30))
    kinds = [OutcomeKind.RETRY if i % 5 == 0 else OutcomeKind.SUCCEEDED for i in range(20)]
    lost = next(i for i, kind in enumerate(kinds) if kind is lost_kind and i > 0)
    outcomes = [
        Outcome(job.id, "someone else" if i == lost else "me", job.attempt, kind,
                result=b"r" if kind is OutcomeKind.SUCCEEDED else None,
                error="again" if kind is OutcomeKind.RETRY else None)
        for i, (job, kind) in enumerate(zip(claimed, kinds))
    ]
    assert backend.finish(outcomes) == [ids[lost]]
    states = [clocked.job(job_id) for job_id in ids]
    expected = [
        JobState.RUNNING if i == lost else JobState.QUEUED if kind is OutcomeKind.RETRY else JobState.SUCCEEDED
        for i, kind in enumerate(kinds)
    ]
    assert [s.state for s in states] == expected
    retried = [i for i, kind in enumerate(kinds) if kind is OutcomeKind.RETRY and i != lost]
    assert all(states[i].last_error == "again" and states[i].result is None for i in retried)
    assert [len(clocked.history(ids[i])) for i in retried] == [1] * len(retried)
    assert all(states[i].result == b"r" for i, kind in enumerate(kinds) if kind is OutcomeKind.SUCCEEDED and i != lost)
