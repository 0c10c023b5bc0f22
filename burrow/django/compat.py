"""Django's Tasks framework, wherever this install has it: ``django.tasks`` (Django 6.0
and newer), else the ``django_tasks`` backport (Django 5.2, the same API). The only
module of burrow.django that knows there are two."""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, Task, TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    TASKS_APP: str | None = None  # part of Django: no app to install
except ImportError:  # Django 5.2: the backport
    from django_tasks import DEFAULT_TASK_BACKEND_ALIAS, TaskContext, TaskResult, TaskResultStatus, task_backends
    from django_tasks.base import Task
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

    TASKS_APP = "django_tasks"


def tasks_module() -> Any:
    """The package the application imports ``task`` from: django.tasks or django_tasks."""
    import importlib

    return importlib.import_module(Task.__module__.rpartition(".")[0])


__all__ = [
    "BaseTaskBackend",
    "DEFAULT_TASK_BACKEND_ALIAS",
    "InvalidTask",
    "TASKS_APP",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
    "tasks_module",
]
