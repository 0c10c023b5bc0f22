"""The tasks the tests enqueue (autodiscovered by `manage.py burrow_worker`)."""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

from burrow.django.compat import tasks_module

task = tasks_module().task


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="mail", priority=10)
def send(to: str, subject: str = "hi") -> dict[str, Any]:
    return {"to": to, "subject": subject}


@task
def boom(message: str) -> None:
    raise ValueError(message)


@task
async def sleepy_add(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a + b


@task(takes_context=True, max_retries=2)
def flaky(context: Any, succeed_on: int) -> dict[str, Any]:
    """Fails until its attempt ``succeed_on``; returns what its context said."""
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} fails")
    return {
        "attempt": context.attempt,
        "id": context.task_result.id,
        "worker_ids": context.task_result.worker_ids,
        "errors": [e.exception_class_path for e in context.task_result.errors],
    }


@task(max_retries=1)
def fails_twice_then_gives_up() -> None:
    raise KeyError("always")


@task
def where() -> dict[str, Any]:
    return {"pid": os.getpid()}


@task
def wait_for_file(path: str, timeout: float = 20.0) -> str:
    """Runs until ``path`` exists (the test's signal), so the test sees it RUNNING."""
    import time

    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return "done"


@task(timeout=1)
def too_slow() -> None:
    import time

    time.sleep(60)


@task
def make_order(note: str, using: str = "default") -> int:
    from .models import Order

    return Order.objects.using(using).create(note=note).id


def not_a_task() -> None:
    """A plain function: a job naming it fails (the resolver says it is not a Task)."""


def _record(signal_name: str) -> Any:
    """A receiver that appends "<signal> <sender> <status> <id>" to $BURROW_DJANGO_SIGNALS."""

    def receiver(sender: type, task_result: Any, **kwargs: Any) -> None:
        path = os.environ.get("BURROW_DJANGO_SIGNALS")
        if path:
            with open(path, "a") as file:
                file.write(f"{signal_name} {sender.__name__} {task_result.status} {task_result.id}\n")

    return receiver


_receivers = {name: _record(name) for name in ("task_enqueued", "task_started", "task_finished")}
for _name, _receiver in _receivers.items():
    getattr(importlib.import_module(tasks_module().__name__ + ".signals"), _name).connect(_receiver)
