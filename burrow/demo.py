"""A demo app for ``conf/jobs.toml``: jobs flow in the log seconds after start.

``demo.produce`` is a small producer: each run enqueues a few jobs of the other
tasks and schedules itself again two seconds later. ``demo.flaky`` fails now and
then, so retries show; ``demo.add`` is a result task.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import burrow
from burrow.backends.base import JobState


@dataclass
class Numbers:
    a: int
    b: int


@dataclass
class Greeting:
    name: str


def add(numbers: Numbers) -> int:
    return numbers.a + numbers.b


def flaky(greeting: Greeting) -> None:
    if random.random() < 0.3:
        raise RuntimeError(f"flaky failure greeting {greeting.name} (it will be retried)")


add_task = burrow.define_result_task("demo.add", add)
flaky_task = burrow.define_task("demo.flaky", flaky, burrow.with_max_retries(3), burrow.with_backoff(0.5, 5))


@dataclass
class Round:
    number: int


def produce(round_: Round) -> None:
    q = _queue
    assert q is not None
    add_task.enqueue_many(q, [Numbers(round_.number, i) for i in range(3)])
    flaky_task.enqueue(q, Greeting(f"round {round_.number}"))
    produce_task.enqueue_at(q, Round(round_.number + 1), dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2))


produce_task = burrow.define_task("demo.produce", produce, burrow.with_priority(10))
_queue: burrow.JobQueue | None = None


class DemoApp:
    def register_jobs(self, q: burrow.Queue) -> None:
        global _queue
        add_task.register(q)
        flaky_task.register(q)
        produce_task.register(q)
        if isinstance(q, burrow.JobQueue):
            _queue = q
            if not q.backend.has_due(["demo.produce"]) and q.backend.counts()[JobState.QUEUED] == 0:
                produce_task.enqueue(q, Round(1))


app = DemoApp()
