"""A demo app for ``conf/jobs.toml``: jobs flow in the log seconds after start.

Every two seconds a periodic job, ``demo.produce``, enqueues a few jobs of the
other tasks: ``demo.add`` (a result task) and ``demo.flaky``, which fails now and
then so that retries show. Only public API: registering has no side effects, and
the periodic job is enqueued once per slot however many supervisors run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import burrow


@dataclass
class Numbers:
    a: int
    b: int


@dataclass
class Greeting:
    name: str


@dataclass
class Batch:
    size: int


def add(numbers: Numbers) -> int:
    return numbers.a + numbers.b


def flaky(greeting: Greeting) -> None:
    if random.random() < 0.3:
        raise RuntimeError(f"flaky failure greeting {greeting.name} (it will be retried)")


add_task = burrow.define_result_task("demo.add", add)
flaky_task = burrow.define_task("demo.flaky", flaky, burrow.with_max_retries(3), burrow.with_backoff(0.5, 5))


class DemoApp:
    """Satisfies burrow.HasJobs: named in conf/jobs.toml as ``burrow.demo:app``."""

    def register_jobs(self, q: burrow.Queue) -> None:
        add_task.register(q)
        flaky_task.register(q)

        # A job that enqueues jobs needs a queue: the one its handler was registered
        # on (in a worker, that worker's own connection to the database).
        def produce(batch: Batch) -> None:
            job = burrow.current_job()
            add_task.enqueue_many(q, [Numbers(job.id, i) for i in range(batch.size)])
            flaky_task.enqueue(q, Greeting(f"batch of job {job.id}"))

        produce_task = burrow.define_task("demo.produce", produce, burrow.with_priority(10))
        produce_task.register(q)
        burrow.periodic(produce_task, Batch(size=3), every=2).register(q)


app = DemoApp()
