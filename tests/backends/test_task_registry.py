"""The task registry (burrow_tasks), on both backends: which due jobs no live supervisor
would run, and the options an enqueue without the task's definition takes."""

from __future__ import annotations

import burrow
from burrow.job import JobState
from burrow.options import JobConfig, registered_options
from burrow.queue import JobQueue
from tests.conftest import FakeClock

A = "host-a:1:supervisor:x"
B = "host-b:2:supervisor:y"
STALE_S = 30.0


def _supervisor(q: JobQueue, owner: str, **tasks: JobConfig) -> None:
    """What a starting supervisor writes: its process row, then the tasks it handles."""
    q.backend.register_process(owner, owner.partition(":")[0], 1, "supervisor")
    q.backend.register_tasks(owner, {name.replace("_", "."): registered_options(c) for name, c in tasks.items()})


def test_due_jobs_of_tasks_no_live_supervisor_handles_are_named(clocked: JobQueue, clock: FakeClock) -> None:
    _supervisor(clocked, A, math_add=JobConfig())
    clocked.enqueue_many("math.add", [{}, {}])
    clocked.enqueue_many("math.ad", [{}, {}, {}])  # a typo: nobody runs these
    clocked.enqueue("math.ad", {}, delay=60)  # not due yet: not waiting on anyone now
    clocked.enqueue("reports.build", {})
    assert clocked.unhandled(STALE_S) == {"math.ad": 3, "reports.build": 1}

    # A second supervisor takes reports.build; then A falls silent and its tasks with it.
    clock.advance(20)
    _supervisor(clocked, B, reports_build=JobConfig())
    assert clocked.unhandled(STALE_S) == {"math.ad": 3}
    clock.advance(20)
    assert clocked.unhandled(STALE_S) == {"math.ad": 3, "math.add": 2}
    assert clocked.backend.reap_processes(STALE_S) == [A]
    assert clocked.backend.task_options("math.add") is None  # gone with its process row
    clocked.backend.remove_process(B)
    assert clocked.backend.task_options("reports.build") is None
    # Running and finished jobs are never "unhandled".
    [claimed] = clocked.claim(["math.ad"], 1)
    assert clocked.job(claimed.id).state is JobState.RUNNING
    assert clocked.unhandled(STALE_S)["math.ad"] == 2


def test_a_registration_replaces_the_last_one_of_its_supervisor(clocked: JobQueue) -> None:
    _supervisor(clocked, A, old_task=JobConfig(), kept=JobConfig())
    clocked.enqueue_many("old.task", [{}])
    clocked.backend.register_tasks(A, {"kept": registered_options(JobConfig())})  # a reload dropped old.task
    assert clocked.unhandled(STALE_S) == {"old.task": 1}


def test_an_enqueue_without_the_tasks_definition_takes_its_registered_options(
    clocked: JobQueue, clock: FakeClock
) -> None:
    _supervisor(clocked, A, reports_build=JobConfig(max_retries=1, priority=5, queue="reports"))
    clock.advance(1)
    _supervisor(clocked, B, reports_build=JobConfig(max_retries=2, priority=5, queue="reports"))
    job = clocked.job(clocked.enqueue("reports.build", {}))  # the newest registration
    assert (job.queue, job.priority, job.max_retries) == ("reports", 5, 2)
    # An explicit option of the call still wins; a task never registered gets burrow's defaults.
    job = clocked.job(clocked.enqueue("reports.build", {}, priority=-1, queue="urgent"))
    assert (job.queue, job.priority, job.max_retries) == ("urgent", -1, 2)
    assert clocked.job(clocked.enqueue("other.task", {})).queue == "default"


def test_a_local_definition_comes_before_the_registry(queue: JobQueue) -> None:
    _supervisor(queue, A, local_task=JobConfig(queue="registered"))
    queue.handle("local.task", lambda data: None, burrow.with_queue("local"), burrow.with_max_retries(0))
    job = queue.job(queue.enqueue("local.task", {}))
    assert (job.queue, job.max_retries) == ("local", 0)


def test_registered_options_round_trip() -> None:
    from burrow.options import config_of_registered

    config = JobConfig(max_retries=2, priority=-3, backoff_base_s=0.5, backoff_max_s=9.0, timeout_s=3.5,
                       queue="reports", concurrency=4, unique=lambda p: "k")  # fmt: skip
    back = config_of_registered(registered_options(config))
    assert back == JobConfig(max_retries=2, priority=-3, backoff_base_s=0.5, backoff_max_s=9.0, timeout_s=3.5,
                             queue="reports", concurrency=4)  # fmt: skip
