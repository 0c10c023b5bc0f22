"""BurrowBackend: Django's task backend interface over burrow's jobs table.

Enqueue is one INSERT (burrow's own, ``Backend.enqueue_dbapi``) on Django's
connection of the ``DATABASE`` alias, inside ``transaction.atomic``: the job exists
if and only if the caller's transaction commits. Results are read by burrow from
any process. The worker is ``manage.py burrow_worker`` (burrow/django/worker.py).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core import checks
from django.utils import timezone
from django.utils.module_loading import import_string

from burrow.django import results
from burrow.django.compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)
from burrow.django.databases import Location, backend_of, location_of
from burrow.backends.contract import Backend
from burrow.errors import BurrowError
from burrow.job import NewJob
from burrow.options import TASK_NAME_PATTERN, check_max_retries, check_queue_name

APP = "burrow.django"
DEFAULT_MAX_RETRIES = 0  # Django's meaning of a failure: the task failed


@dataclass(frozen=True, slots=True, kw_only=True)
class BurrowTask(Task):
    """Django's Task with burrow's per-task options, which Django 6.1's ``@task(...)``
    (and the backport's) hands to the backend's ``task_class``: ``max_retries``
    (retries after the first run; default: the backend's ``MAX_RETRIES``) and
    ``timeout`` (seconds; the worker stops a longer run)."""

    max_retries: int | None = None
    timeout: float | None = None


# Every task made for a burrow backend in this process, by backend alias: what the
# worker registers at start (Django makes each Task through validate_task).
_seen: dict[str, dict[str, Task]] = {}
_seen_lock = threading.Lock()


def seen_tasks() -> dict[str, Task]:
    """Every task path made for any burrow backend in this process (a task may be
    enqueued on another alias with ``.using(backend=...)``: its path is the same)."""
    with _seen_lock:
        return {path: task for tasks in _seen.values() for path, task in tasks.items()}


class BurrowBackend(BaseTaskBackend):
    """``TASKS = {"default": {"BACKEND": "burrow.django.BurrowBackend", "OPTIONS": {...}}}``.

    OPTIONS: ``DATABASE`` (a DATABASES alias, default "default") or ``DSN`` (a
    database of its own, not part of Django's transactions), ``SCHEMA`` (PostgreSQL),
    ``MAX_RETRIES`` (default 0).
    """

    task_class = BurrowTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.max_retries = check_max_retries(self.options.get("MAX_RETRIES", DEFAULT_MAX_RETRIES))
        self._location: Location | None = None

    # -- where the jobs are ---------------------------------------------------------

    @property
    def location(self) -> Location:
        if self._location is None:
            self._location = location_of(self.options)
        return self._location

    @property
    def jobs(self) -> Backend:
        """burrow's backend on the jobs' database (its own connections, by DSN)."""
        return backend_of(self.location)

    # -- Django's interface ---------------------------------------------------------

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if TASK_NAME_PATTERN.fullmatch(task.module_path) is None:
            raise InvalidTask(f"burrow cannot store task {task.module_path!r}: its path is not a burrow task name")
        try:
            check_queue_name(task.queue_name)
            if getattr(task, "max_retries", None) is not None:
                check_max_retries(task.max_retries)
        except BurrowError as exc:
            raise InvalidTask(str(exc)) from None
        timeout = getattr(task, "timeout", None)
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidTask(f"timeout must be a positive number of seconds, got {timeout!r}")
        with _seen_lock:
            _seen.setdefault(self.alias, {})[task.module_path] = task

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        nonce = results.new_nonce()
        result = TaskResult(
            task=task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )  # checks that args and kwargs are JSON (Django's normalize_json)
        max_retries = getattr(task, "max_retries", None)
        row = NewJob(
            task=task.module_path,
            payload=results.encode_payload(nonce, self.alias, result.args, result.kwargs),
            priority=task.priority,
            max_retries=self.max_retries if max_retries is None else max_retries,
            run_at=_aware(task.run_after),
            queue=task.queue_name,
        )
        [job_id] = self._insert(row)
        object.__setattr__(result, "id", results.result_id(job_id, nonce))
        object.__setattr__(result, "enqueued_at", timezone.now())
        task_enqueued.send(type(self), task_result=result)
        return result

    def _insert(self, row: NewJob) -> list[int]:
        location = self.location
        if location.alias is None:
            return self.jobs.enqueue([row])
        from django.db import connections, transaction

        # savepoint=False: inside the caller's atomic block nothing is added; outside
        # one, the INSERT (and on SQLite the id read before it) is its own transaction.
        with transaction.atomic(using=location.alias, savepoint=False):
            connection = connections[location.alias]
            connection.ensure_connection()
            return self.jobs.enqueue_dbapi(connection.connection, [row])

    def get_result(self, result_id: str) -> TaskResult:
        parsed = results.parse_result_id(result_id)
        if parsed is None:
            raise TaskResultDoesNotExist(f"no task result {result_id!r}: not a burrow result id")
        job_id, nonce = parsed
        jobs = self.jobs
        info = jobs.get(job_id)
        payload = None if info is None else results.decode_payload(info.payload)
        if info is None or payload is None or payload.get("nonce") != nonce:
            raise TaskResultDoesNotExist(f"no task result {result_id!r}")
        try:
            task = import_string(info.task)
        except ImportError as exc:
            raise TaskResultDoesNotExist(f"task result {result_id!r}: its task {info.task!r} does not import: {exc}") from None
        if not isinstance(task, Task):
            raise TaskResultDoesNotExist(f"task result {result_id!r}: {info.task!r} is not a task")
        task = _as_enqueued(task, self.alias, info.priority, info.queue)
        history = jobs.history(job_id) if results.needs_history(info) else []
        return results.task_result(task, self.alias, info, nonce, payload, history)

    def check(self, **kwargs: Any) -> Iterable[checks.CheckMessage]:
        """A missing app, a bad DATABASE or DSN, and (when Django asks for database
        checks) a jobs database that is not migrated."""
        from django.apps import apps

        if not apps.is_installed(APP):
            yield checks.Error(
                f"TASKS[{self.alias!r}] uses burrow.django.BurrowBackend, but {APP!r} is not in INSTALLED_APPS",
                hint=f"add {APP!r} to INSTALLED_APPS: `manage.py migrate` then creates burrow's tables",
                id="burrow.E001",
            )
        try:
            location = self.location
        except Exception as exc:  # ConnectionDoesNotExist, ImproperlyConfigured
            yield checks.Error(f"TASKS[{self.alias!r}] OPTIONS: {exc}", id="burrow.E002")
            return
        databases = kwargs.get("databases") or ()
        if not databases or (location.alias is not None and location.alias not in databases):
            return  # database checks run only when asked for (migrate, check --database)
        try:
            status = self.jobs.schema_status()
        except BurrowError as exc:
            yield checks.Error(f"TASKS[{self.alias!r}]: the jobs database cannot be read: {exc}", id="burrow.E003")
            return
        if status.version < status.latest:
            yield checks.Warning(
                f"TASKS[{self.alias!r}]: burrow's tables are at version {status.version} of {status.latest}",
                hint="run `manage.py migrate`" + (f" --database {location.alias}" if location.alias else ""),
                id="burrow.W001",
            )


def _as_enqueued(task: Task, alias: str, priority: int, queue: str) -> Task:
    """The task as its job was enqueued (``.using(...)``): on this backend, so that
    ``refresh()`` reads here, with the job's priority and queue where they differ."""
    changes: dict[str, Any] = {}
    if task.backend != alias:
        changes["backend"] = alias
    if task.priority != priority:
        changes["priority"] = priority
    if task.queue_name != queue:
        changes["queue_name"] = queue
    if not changes:
        return task
    try:
        return task.using(**changes)
    except InvalidTask:  # changed by an operator past Django's rules: the task's own values
        return task.using(backend=alias) if task.backend != alias else task


def _aware(run_after: dt.datetime | None) -> dt.datetime | None:
    """run_after as burrow stores it: aware (a naive one, allowed without USE_TZ, is in
    the current time zone)."""
    if run_after is None or timezone.is_aware(run_after):
        return run_after
    return timezone.make_aware(run_after)
