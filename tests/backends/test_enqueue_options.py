"""One definition of what an enqueue means (burrow.job.EnqueueOptions): every option
works the same on every enqueue path (q.enqueue, q.enqueue_many, the typed task's
methods, periodic jobs), a call's option wins over the task's, the task's over
burrow's defaults, and a bad option is refused with the same error before anything
is stored, on both databases."""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import burrow
from burrow.errors import BurrowError
from burrow.job import (
    UNSET,
    EnqueueKeywords,
    EnqueueOptions,
    JobKeywords,
    KeyedKeywords,
    ManyKeywords,
)
from burrow.queue import JobQueue
from tests.conftest import FakeClock


@dataclass
class Mail:
    to: str


def send(p: Mail) -> None:
    pass


def mail_key(p: Mail | dict[str, Any]) -> str:
    """with_unique sees the payload as the enqueue was given it: typed, or raw JSON."""
    return f"to:{p.to if isinstance(p, Mail) else p['to']}"


mail_task = burrow.define_task(
    "opts.mail", send, burrow.with_priority(7), burrow.with_max_retries(1), burrow.with_queue("mail"),
    burrow.with_unique(mail_key),
)  # fmt: skip

# Each enqueue path, as one job of mail_task with the given options; -> its id.
Path = Callable[[JobQueue, dict[str, Any]], int]


def _raw(q: JobQueue, options: dict[str, Any]) -> int:
    return q.enqueue("opts.mail", {"to": "a@x"}, **options)


def _raw_many(q: JobQueue, options: dict[str, Any]) -> int:
    key = options.pop("unique_key", UNSET)
    keys = None if key is UNSET else [key]
    return q.enqueue_many("opts.mail", [{"to": "a@x"}], unique_keys=keys, **options)[0]


def _task(q: JobQueue, options: dict[str, Any]) -> int:
    return mail_task.enqueue(q, Mail("a@x"), **options)


def _task_many(q: JobQueue, options: dict[str, Any]) -> int:
    key = options.pop("unique_key", UNSET)
    keys = None if key is UNSET else [key]
    return mail_task.enqueue_many(q, [Mail("a@x")], unique_keys=keys, **options)[0]


PATHS = {"q.enqueue": _raw, "q.enqueue_many": _raw_many, "task.enqueue": _task, "task.enqueue_many": _task_many}


def test_the_keyword_types_list_exactly_the_options() -> None:
    """A new option is a field of EnqueueOptions and of one keywords TypedDict: these agree."""
    assert set(typing.get_type_hints(EnqueueKeywords)) == set(EnqueueOptions._fields)
    assert set(typing.get_type_hints(ManyKeywords)) == set(EnqueueOptions._fields) - {"unique_key"}
    assert set(typing.get_type_hints(KeyedKeywords)) == set(typing.get_type_hints(JobKeywords)) | {"unique_key"}


def test_merging_with_a_task_keeps_every_option_the_call_gave() -> None:
    """EnqueueOptions.over fills only what the call left out, from the task; whatever
    else the call gave (any option, one added later too) is carried as it was."""
    at = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    given = EnqueueOptions(priority=-2, max_retries=9, run_at=at, unique_key="k", queue="elsewhere")
    assert given.over(mail_task.config) == given
    assert EnqueueOptions(run_at=at).over(mail_task.config) == EnqueueOptions(7, 1, at, None, UNSET, "mail")
    assert EnqueueOptions(delay=5).over(mail_task.config).delay == 5


@pytest.mark.parametrize("path", PATHS)
def test_each_option_means_the_same_on_every_path(clocked: JobQueue, clock: FakeClock, path: str) -> None:
    enqueue = PATHS[path]
    mail_task.register(clocked)
    in_an_hour = clock.now + dt.timedelta(hours=1)
    job_id = enqueue(clocked, {"priority": -3, "max_retries": 9, "queue": "bulk", "unique_key": "k1", "run_at": in_an_hour})
    job = clocked.job(job_id)
    assert (job.priority, job.max_retries, job.queue, job.unique_key, job.run_at) == (-3, 9, "bulk", "k1", in_an_hour)
    delayed = clocked.job(enqueue(clocked, {"delay": 90, "unique_key": None}))
    assert delayed.run_at == clock.now + dt.timedelta(seconds=90) and delayed.unique_key is None


@pytest.mark.parametrize("path", PATHS)
def test_the_tasks_options_fill_what_a_call_leaves_out(queue: JobQueue, path: str) -> None:
    mail_task.register(queue)  # a raw enqueue takes the options of the task registered here
    job = queue.job(PATHS[path](queue, {}))
    assert (job.priority, job.max_retries, job.queue, job.unique_key) == (7, 1, "mail", "to:a@x")
    # The task's key is held: the same payload gets the same job.
    assert PATHS[path](queue, {}) == job.id


def test_burrows_defaults_fill_what_neither_gives(queue: JobQueue) -> None:
    job = queue.job(queue.enqueue("opts.unknown", {}))
    assert (job.priority, job.max_retries, job.queue, job.unique_key) == (0, 3, "default", None)


def test_a_typed_task_brings_its_options_to_a_queue_it_is_not_registered_on(queue: JobQueue) -> None:
    job = queue.job(mail_task.enqueue(queue, Mail("b@x"), priority=1))
    assert (job.priority, job.max_retries, job.queue, job.unique_key) == (1, 1, "mail", "to:b@x")


def test_periodic_jobs_take_options_too(queue: JobQueue) -> None:
    schedule = burrow.periodic(mail_task, Mail("c@x"), every=60, queue="cron", priority=2)
    assert schedule.options == EnqueueOptions(priority=2, max_retries=1, queue="cron")
    raw = burrow.periodic("opts.other", {}, every=60)
    assert raw.options == EnqueueOptions()


BAD: list[tuple[dict[str, Any], str]] = [
    ({"priority": 2**31}, "priority must be an integer"),
    ({"max_retries": -1}, "max_retries must be an integer"),
    ({"queue": "no spaces"}, "invalid queue name"),
    ({"unique_key": ""}, "a unique key must be a string"),
    ({"delay": -1}, "delay must be 0 to"),
    ({"run_at": dt.datetime(2030, 1, 1)}, "is naive"),
    ({"run_at": dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), "delay": 5}, "pass run_at or delay, not both"),
    ({"priorty": 1}, "unknown enqueue option 'priorty'"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("options", "message"), BAD, ids=[m for _, m in BAD])
def test_a_bad_option_stores_nothing(queue: JobQueue, path: str, options: dict[str, Any], message: str) -> None:
    if "_many" in path and "unique_key" in options:
        pytest.skip("enqueue_many takes unique keys per payload (unique_keys)")
    with pytest.raises(BurrowError, match=message):
        PATHS[path](queue, dict(options))
    assert sum(queue.counts().values()) == 0


def test_unique_keys_of_enqueue_many_are_one_per_payload(queue: JobQueue) -> None:
    with pytest.raises(BurrowError, match="2 unique keys for 1 payloads"):
        mail_task.enqueue_many(queue, [Mail("a@x")], unique_keys=["a", "b"])
    ids = mail_task.enqueue_many(queue, [Mail("a@x"), Mail("b@x"), Mail("c@x")], unique_keys=["same", "same", None])
    assert ids[0] == ids[1] != ids[2]
    assert [queue.job(i).unique_key for i in ids] == ["same", "same", None]
