"""Scheduling on both backends: unique jobs, delays, snoozes, periodic slots."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import pytest

import burrow
from burrow.backends.records import ClaimRequest, HistoryEvent
from burrow.job import JobState
from burrow.errors import BurrowError, JobFailed
from burrow.queue import JobQueue
from tests.backends.helpers import race, rows
from tests.conftest import Database, FakeClock


@dataclass
class Signup:
    user_id: int
    email: str


def welcome(p: Signup) -> None:
    pass


welcome_task = burrow.define_task("sched.welcome", welcome, burrow.with_unique(lambda p: f"user:{p.user_id}"))


# -- unique jobs ------------------------------------------------------------------------


def test_a_held_unique_key_returns_the_holders_id(database: Database, queue: JobQueue) -> None:
    first = queue.enqueue("sched.mail", {"to": "a"}, unique_key="k1")
    assert queue.enqueue("sched.mail", {"to": "b"}, unique_key="k1") == first
    assert queue.enqueue_at("sched.mail", {}, dt.datetime.now(dt.timezone.utc), unique_key="k1") == first
    assert queue.enqueue("sched.other", {}, unique_key="k1") != first  # keys are per task
    assert queue.enqueue("sched.mail", {}, unique_key="k2") != first
    assert queue.enqueue("sched.mail", {}) != queue.enqueue("sched.mail", {})  # no key: no uniqueness
    assert queue.job(first).unique_key == "k1"
    assert rows(database, "SELECT count(*) FROM burrow_jobs WHERE unique_key = 'k1'") == [(2,)]


def test_with_unique_keys_typed_payloads_and_enqueue_many_by_position(queue: JobQueue) -> None:
    welcome_task.register(queue)
    a = welcome_task.enqueue(queue, Signup(1, "a@x"))
    assert welcome_task.enqueue(queue, Signup(1, "other@x")) == a
    ids = welcome_task.enqueue_many(queue, [Signup(2, "b"), Signup(1, "a"), Signup(3, "c"), Signup(2, "b2")])
    assert ids[1] == a and ids[3] == ids[0] and len({ids[0], ids[2], a}) == 3
    assert welcome_task.enqueue(queue, Signup(1, "x"), unique_key="explicit") not in ids
    assert sum(queue.counts().values()) == 4


@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
def test_the_key_is_free_again_once_the_job_ends(queue: JobQueue, ending: str) -> None:
    def handler(data: bytes) -> None:
        if ending == "failed":
            raise ValueError("no")

    queue.handle("sched.free", handler, burrow.with_max_retries(0))
    first = queue.enqueue("sched.free", {}, unique_key="k")
    if ending == "cancelled":
        assert queue.cancel(first)
    else:
        assert queue.drain() == 1
    assert queue.job(first).state == ending
    second = queue.enqueue("sched.free", {}, unique_key="k")
    assert second != first
    assert queue.enqueue("sched.free", {}, unique_key="k") == second


def test_a_running_job_holds_its_key(queue: JobQueue) -> None:
    first = queue.enqueue("sched.run", {}, unique_key="k")
    [claimed] = queue.backend.claim(ClaimRequest(["sched.run"], 1, "owner", 30))
    assert claimed.id == first
    assert queue.enqueue("sched.run", {}, unique_key="k") == first


@pytest.mark.parametrize("key", ["", "x" * 201, 7])
def test_bad_unique_keys_are_refused(queue: JobQueue, key: Any) -> None:
    with pytest.raises(BurrowError, match="a unique key must be a string of 1 to 200 characters"):
        queue.enqueue("sched.mail", {}, unique_key=key)
    assert sum(queue.counts().values()) == 0


def _enqueue_same_key(go: Callable[[], None], database: Database, times: int) -> set[int]:
    q = database.connect()
    try:
        go()
        return {q.enqueue("sched.race", {"n": i}, unique_key="the-one") for i in range(times)}
    finally:
        q.close()


def test_four_processes_enqueueing_one_key_get_one_job(database: Database) -> None:
    database.connect().close()  # migrated before the race
    ids = set().union(*race(_enqueue_same_key, database, 250))
    assert len(ids) == 1
    with database.connect() as q:
        assert q.counts()[JobState.QUEUED] == 1


# -- delays -------------------------------------------------------------------------------


def test_delay_holds_the_job_back(clocked: JobQueue, clock: FakeClock) -> None:
    later = clocked.enqueue("sched.later", {}, delay=30)
    assert clocked.job(later).run_at == clock.now + dt.timedelta(seconds=30)
    task: burrow.TaskDefinition[Any] = burrow.define_task("sched.later", lambda p: None)
    in_a_minute = task.enqueue_in(clocked, {}, dt.timedelta(minutes=1))
    assert clocked.job(in_a_minute).run_at == clock.now + dt.timedelta(minutes=1)
    many = task.enqueue_many(clocked, [{}, {}], delay=dt.timedelta(seconds=5))
    assert {clocked.job(i).run_at for i in many} == {clock.now + dt.timedelta(seconds=5)}
    at = clock.now + dt.timedelta(hours=1)
    assert clocked.job(task.enqueue_many(clocked, [{}], run_at=at)[0]).run_at == at
    assert clocked.backend.claim(ClaimRequest(["sched.later"], 10, "o", 30)) == []
    clock.advance(5)
    assert len(clocked.backend.claim(ClaimRequest(["sched.later"], 10, "o", 30))) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay": 5, "run_at": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)}, "pass run_at or delay, not both"),
        ({"delay": -1}, "delay must be 0 to"),
        ({"delay": float("nan")}, "delay must be 0 to"),
        ({"delay": "5s"}, "delay must be 0 to"),
    ],
)
def test_bad_delays_are_refused(queue: JobQueue, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BurrowError, match=message):
        queue.enqueue("sched.later", {}, **kwargs)


# -- snooze -----------------------------------------------------------------------------------


def test_retry_after_snoozes_without_spending_an_attempt(clocked: JobQueue, clock: FakeClock) -> None:
    runs: list[int] = []

    def handler(data: bytes) -> None:
        runs.append(burrow.current_job().attempt)
        if len(runs) < 3:
            raise burrow.RetryAfter(60)

    clocked.handle("sched.snooze", handler, burrow.with_max_retries(0))
    job_id = clocked.enqueue("sched.snooze", {})
    assert clocked.drain() == 1
    info = clocked.job(job_id)
    assert (info.state, info.attempts, info.snoozes) == (JobState.QUEUED, 0, 1)
    assert info.run_at == clock.now + dt.timedelta(seconds=60)
    assert clocked.drain() == 0
    clock.advance(60)
    assert clocked.drain() == 1
    clock.advance(60)
    assert clocked.drain() == 1
    assert runs == [1, 1, 1]  # max_retries=0, yet three runs: snoozes are not attempts
    done = clocked.job(job_id)
    assert (done.state, done.attempts, done.snoozes) == (JobState.SUCCEEDED, 1, 2)
    assert [(h.attempt, h.event) for h in clocked.history(job_id)] == [(1, HistoryEvent.SNOOZED)] * 2


def test_a_job_snoozed_a_thousand_times_fails(database: Database, queue: JobQueue) -> None:
    def handler(data: bytes) -> None:
        raise burrow.RetryAfter(0)

    queue.handle("sched.forever", handler)
    job_id = queue.enqueue("sched.forever", {})
    rows(database, f"UPDATE burrow_jobs SET snoozes = 999 WHERE id = {job_id}")
    assert queue.drain(max_jobs=1) == 1
    assert queue.job(job_id).snoozes == 1000
    assert queue.drain(max_jobs=1) == 1
    info = queue.job(job_id)
    assert info.state is JobState.FAILED
    with pytest.raises(JobFailed, match="snoozed more than 1000 times"):
        queue.result(job_id)


def test_bad_retry_after_is_the_handlers_error() -> None:
    for bad in (-1, float("inf"), "60", True):
        with pytest.raises(BurrowError, match="RetryAfter takes 0 to"):
            burrow.RetryAfter(bad)  # type: ignore[arg-type]


# -- periodic slots -------------------------------------------------------------------------


def tick(p: dict[str, Any]) -> None:
    pass


tick_task = burrow.define_task("sched.tick", tick)


def test_each_slot_is_enqueued_once_across_processes(database: Database, clock: FakeClock) -> None:
    clock.now = dt.datetime(2030, 1, 1, 0, 0, 3, tzinfo=dt.timezone.utc)
    queues = [database.connect(clock=clock) for _ in range(2)]
    try:
        for q in queues:
            burrow.periodic(tick_task, {"n": 1}, every=10).register(q)
        # First sight: the schedule starts at the current slot, without a job.
        assert [q.enqueue_due_slots() for q in queues] == [[], []]
        clock.advance(7)  # 00:00:10, the next slot
        enqueued = [q.enqueue_due_slots() for q in queues]
        assert sorted(len(ids) for ids in enqueued) == [0, 1]
        [job_id] = enqueued[0] or enqueued[1]
        assert queues[0].job(job_id).run_at == dt.datetime(2030, 1, 1, 0, 0, 10, tzinfo=dt.timezone.utc)
        assert [q.enqueue_due_slots() for q in queues] == [[], []]
        # Down for 35 s: one catch-up slot (the latest), not three.
        clock.advance(35)
        caught_up = [job for q in queues for job in q.enqueue_due_slots()]
        assert len(caught_up) == 1
        assert queues[1].job(caught_up[0]).run_at == dt.datetime(2030, 1, 1, 0, 0, 40, tzinfo=dt.timezone.utc)
        [schedule] = queues[0].backend.schedules()
        assert (schedule.name, schedule.task, schedule.spec) == ("sched.tick every 10s", "sched.tick", "every 10s")
        assert schedule.next_slot == dt.datetime(2030, 1, 1, 0, 0, 50, tzinfo=dt.timezone.utc)
        assert queues[0].counts()[JobState.QUEUED] == 2
    finally:
        for q in queues:
            q.close()


def test_periodic_takes_the_tasks_options_and_a_name(clocked: JobQueue, clock: FakeClock) -> None:
    task = burrow.define_task("sched.opts", tick, burrow.with_priority(7), burrow.with_max_retries(1))
    burrow.periodic(task, {"a": 1}, cron="* * * * *", name="every-minute").register(clocked)
    with pytest.raises(BurrowError, match="already registered"):
        burrow.periodic(task, {"a": 2}, cron="* * * * *", name="every-minute").register(clocked)
    clocked.enqueue_due_slots()
    clock.advance(60)
    [job_id] = clocked.enqueue_due_slots()
    info = clocked.job(job_id)
    assert (info.task, info.priority, info.max_retries, info.payload) == ("sched.opts", 7, 1, b'{"a":1}')


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "takes cron= or every=, exactly one"),
        ({"cron": "* * * * *", "every": 5}, "takes cron= or every=, exactly one"),
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"cron": "* * *"}, "bad cron expression"),
        ({"every": 0.5}, "every must be at least 1 second"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"every": 5, "timezone": "Europe/Berlin"}, "a timezone applies to cron= only"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(BurrowError, match=message):
        burrow.periodic(tick_task, {}, **kwargs)
