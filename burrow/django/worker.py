"""The worker side: burrow's supervisor running Django tasks.

``manage.py burrow_worker`` sets Django up in the supervisor, before any fork, so
every worker has it. Each job's task is its ``module_path``, imported the first time
a worker needs it; a path that does not import, or names something that is not a
Task, fails that job at once (a PermanentError naming the path), never the worker.

The supervisor registers the tasks it found at start (every ``tasks`` module of the
installed apps); a worker also takes up queued jobs of tasks nobody registered
(``DjangoJobQueue.claim``), once it sees their payload is a Django task's.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from django.db import close_old_connections
from django.utils import timezone
from django.utils.module_loading import import_string

from burrow.backends.records import ALL_QUEUES, ClaimedJob, QueueFilter
from burrow.context import capture_result, current_job
from burrow.django import results
from burrow.django.compat import Task, TaskContext, TaskResultStatus, normalize_json, task_finished, task_started
from burrow.errors import PermanentError
from burrow.job import JobState
from burrow.options import JobOption, with_timeout
from burrow.queue import JobQueue

log = structlog.get_logger("burrow.django")

_LOOK_FOR_UNKNOWN_S = 1.0  # how often an idle worker looks for jobs of tasks nobody registered


class TaskNotFound(PermanentError):
    """A job's task path does not import, or is not a Django Task: it fails at once."""


_resolved: dict[str, Task | TaskNotFound] = {}


def resolve(path: str) -> Task:
    """The Task at ``path`` (its module_path), imported once per process."""
    found = _resolved.get(path)
    if found is None:
        try:
            target = import_string(path)
        except Exception as exc:  # ImportError, and whatever the module raises as it is imported
            found = TaskNotFound(f"task {path!r} does not import: {type(exc).__name__}: {exc}")
        else:
            if isinstance(target, Task):
                found = target
            else:
                found = TaskNotFound(f"task {path!r} is a {type(target).__name__}, not a Django Task (use @task)")
        _resolved[path] = found
    if isinstance(found, TaskNotFound):
        error = TaskNotFound(str(found))
        error.add_note(f"{results.NOTE_PREFIX}{TaskNotFound.__module__}.{TaskNotFound.__qualname__}")
        raise error
    return found


def run_job(payload: bytes) -> None:
    """A Django task's job: the burrow handler every task path is registered with."""
    from burrow.django.backend import BurrowBackend

    job = current_job()
    data = results.decode_payload(payload)
    if data is None:
        raise PermanentError(f"job {job.id} of {job.task!r} is not a Django task's (its payload has no {results.PAYLOAD_MARK!r})")
    task = _bound(resolve(job.task), data.get("backend"))
    backend = task.get_backend()
    history: list[Any] = []
    if job.attempt > 1 and isinstance(backend, BurrowBackend):
        history = backend.jobs.history(job.id)  # the worker ids and errors of earlier attempts
    now = timezone.now()
    errors, worker_ids = results.attempts_of(JobState.RUNNING, job.attempt, None, history)
    worker_ids[-1] = results.worker_id(None, socket.gethostname(), os.getpid())
    result = results.TaskResult(
        task=task,
        id=results.result_id(job.id, str(data.get("nonce", ""))),
        status=TaskResultStatus.RUNNING,
        enqueued_at=None,
        started_at=now,
        finished_at=None,
        last_attempted_at=now,
        args=data.get("args", []),
        kwargs=data.get("kwargs", {}),
        backend=task.backend,
        errors=errors,
        worker_ids=worker_ids,
    )
    task_started.send(type(backend), task_result=result)
    close_old_connections()
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
        value = normalize_json(value)
    except BaseException as exc:
        kind = type(exc)
        exc.add_note(f"{results.NOTE_PREFIX}{kind.__module__}.{kind.__qualname__}")
        if job.is_last_attempt:
            object.__setattr__(result, "finished_at", timezone.now())
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            error = results.TaskError(
                exception_class_path=f"{kind.__module__}.{kind.__qualname__}", traceback="".join(traceback.format_exception(exc))
            )
            result.errors.append(error)
            task_finished.send(type(backend), task_result=result)
        raise
    finally:
        close_old_connections()
    capture_result(orjson.dumps(value))
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "_return_value", value)
    task_finished.send(type(backend), task_result=result)


SERVED_ALIAS: str | None = None  # the TASKS alias this worker serves (runner.run_worker sets it)
_bound_tasks: dict[tuple[str, str], Task] = {}


def _bound(task: Task, alias: object) -> Task:
    """``task`` on the backend its job was enqueued on (``.using(backend=...)``), when this
    process knows that alias; else on the one this worker serves."""
    from burrow.django.compat import task_backends

    wanted = alias if isinstance(alias, str) and alias in task_backends.settings else SERVED_ALIAS
    if wanted is None or wanted == task.backend:
        return task
    key = (task.module_path, wanted)
    if key not in _bound_tasks:
        _bound_tasks[key] = task.using(backend=wanted)
    return _bound_tasks[key]


def task_options(task: Task) -> list[JobOption]:
    timeout = getattr(task, "timeout", None)
    return [with_timeout(timeout)] if timeout else []


class DjangoJobQueue(JobQueue):
    """The supervisor's queue: every task found at start registered with ``run_job``;
    in a worker, jobs of tasks nobody registered are taken up too (see ``claim``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Replaced, never changed in place: the prefetching thread claims too.
        self._adopted: tuple[str, ...] = ()
        self._foreign: set[str] = set()  # unregistered tasks whose jobs are not Django tasks'
        self._look_at = 0.0

    def register(self, tasks: dict[str, Task]) -> None:
        for path, task in sorted(tasks.items()):
            self.handle(path, run_job, *task_options(task))

    def claim(
        self, tasks: Sequence[str], limit: int, lease_s: float | None = None, queues: QueueFilter = ALL_QUEUES
    ) -> list[ClaimedJob]:
        batch = super().claim([*tasks, *self._adopted], limit, lease_s, queues)
        if batch or time.monotonic() < self._look_at:
            return batch
        self._look_at = time.monotonic() + _LOOK_FOR_UNKNOWN_S
        if not self._adopt():
            return batch
        return super().claim([*tasks, *self._adopted], limit, lease_s, queues)

    def _adopt(self) -> bool:
        """Take up the unregistered tasks of due queued jobs that are Django tasks' (a
        task in a module no app's ``tasks`` imports, or a path that no longer imports);
        True if there are new ones."""
        adopted = False
        for name in self.backend.unhandled(self.lease_s):
            if name in self._registry or name in self._foreign:
                continue
            newest = self.backend.list_jobs([JobState.QUEUED], [name], None, 1)
            if not newest or results.decode_payload(newest[0].payload) is None:
                self._foreign.add(name)
                continue
            self.handle(name, run_job)
            self._adopted = (*self._adopted, name)
            adopted = True
            log.info("django_task_taken_up", task=name)
        return adopted
