"""The examples of Django's Tasks documentation, run against BurrowBackend with
`manage.py burrow_worker` running them (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.django.conftest import Worker, wait_until

pytest.importorskip("django")


def _docs() -> Any:
    import importlib

    return importlib.import_module("djshop.docs_tasks")


def _finished(result: Any) -> Any:
    def done() -> bool:
        result.refresh()
        return bool(result.is_finished)

    wait_until(done, 30, f"{result.task.name} to finish")
    return result


def test_defining_and_enqueueing(worker: tuple[str, Worker], django_project: Path) -> None:
    from burrow.django.compat import TaskResultStatus

    alias, _ = worker
    docs = _docs()
    email_users = docs.email_users.using(backend=alias)
    result = email_users.enqueue(
        emails=["user@example.com"],
        subject="You have a message",
        message="Hello there!",
    )
    assert result.status == TaskResultStatus.READY
    _finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 1  # send_mail's count
    mails = "".join(p.read_text() for p in (django_project / "mail").glob("*.log"))
    assert "Subject: You have a message" in mails and "Hello there!" in mails


def test_task_options_priority_queue_and_using(worker: tuple[str, Worker]) -> None:
    from burrow.django.compat import TaskResultStatus

    alias, _ = worker
    docs = _docs()
    task = docs.email_users_emails_queue.using(backend=alias)
    assert (task.priority, task.queue_name) == (2, "emails")
    modified = docs.calculate_meaning_of_life.using(backend=alias).using(priority=10)
    assert modified.priority == 10
    result = modified.enqueue()
    assert _finished(result).return_value == 42
    sent = _finished(task.enqueue(emails=["a@example.com"], subject="s", message="m"))
    assert sent.status == TaskResultStatus.SUCCESSFUL


def test_run_after_defers(worker: tuple[str, Worker]) -> None:
    from burrow.django.compat import TaskResultStatus

    alias, _ = worker
    docs = _docs()
    later = docs.calculate_meaning_of_life.using(backend=alias, run_after=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    result = later.enqueue()
    soon = _finished(docs.calculate_meaning_of_life.using(backend=alias).enqueue())  # ran meanwhile
    assert soon.return_value == 42
    result.refresh()
    assert result.status == TaskResultStatus.READY


def test_task_context(worker: tuple[str, Worker]) -> None:
    alias, _ = worker
    result = _finished(
        _docs().email_users_with_context.using(backend=alias).enqueue(
            emails=["user@example.com"], subject="You have a message", message="Hello there!"
        )
    )
    assert result.return_value == 1 and result.attempts == 1 and len(result.worker_ids) == 1


def test_transactions_on_commit(worker: tuple[str, Worker]) -> None:
    from django.db import transaction

    from djshop.models import Order as Thing

    alias, _ = worker
    my_task = _docs().my_task.using(backend=alias)
    enqueued: list[Any] = []
    with transaction.atomic(using=alias):
        thing = Thing.objects.using(alias).create(note="1")
        transaction.on_commit(lambda: enqueued.append(partial(my_task.enqueue, thing_num=thing.id)()), using=alias)
    [result] = enqueued
    assert _finished(result).return_value == thing.id


def test_results_by_id(worker: tuple[str, Worker]) -> None:
    from burrow.django.compat import TaskResultStatus, task_backends

    alias, _ = worker
    task = _docs().calculate_meaning_of_life.using(backend=alias)
    result_id = task.enqueue().id
    backend = task_backends[alias]  # default_task_backend, for the "default" alias
    result = backend.get_result(result_id)
    _finished(result)
    assert task.get_result(result_id).return_value == 42
    assert result.status == TaskResultStatus.SUCCESSFUL and result.is_finished


def test_exceptions_on_results(worker: tuple[str, Worker]) -> None:
    alias, _ = worker
    from djshop.tasks import boom

    result = _finished(boom.using(backend=alias).enqueue("from the docs"))
    assert result.errors[0].exception_class is ValueError
    assert "from the docs" in result.errors[0].traceback
