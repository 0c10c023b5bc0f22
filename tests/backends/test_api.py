"""The public API: exported names, JobInfo's fields, protocols, option validation,
the README's worked example end to end, registering a name twice, and task names."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

import burrow
import burrow.tasks
from burrow.job import JobState
from burrow.errors import BackendError, BurrowError, DuplicateTask, InvalidTaskName
from burrow.queue import JobQueue
from tests.backends.helpers import UTC, Item, Pair, add, total_jobs, typed_handler


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
    "JobState",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_api_name_is_exported_and_is_the_tasks_object(name: str) -> None:
    # burrow is the facade; the public API promised every name in burrow.tasks too, where the
    # names defined elsewhere resolve lazily to the same objects.
    assert name in burrow.__all__
    assert getattr(burrow, name) is getattr(burrow.tasks, name)


def test_jobinfo_has_the_promised_fields() -> None:
    # The promised fields come first, in this order; operators' extras follow.
    assert [f.name for f in dataclasses.fields(burrow.JobInfo)][:12] == [
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


@pytest.mark.parametrize(
    "dsn", ["postgresql://u:p@h:port/db", "postgres", "postgresql:/x", "mysql://h/db", "sqlite://"]
)
def test_a_dsn_burrow_cannot_read_is_a_backend_error(dsn: str) -> None:
    with pytest.raises(BackendError) as caught:
        burrow.connect(dsn)
    assert "\n" not in str(caught.value) and "p@" not in str(caught.value)
