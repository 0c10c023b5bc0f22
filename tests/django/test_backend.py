"""BurrowBackend in the enqueuing process, on SQLite and PostgreSQL: what enqueue
stores, transactions, result ids, Django's validation, signals and checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

ALIASES = ["default", "pg"]


@pytest.fixture(params=ALIASES)
def alias(request: pytest.FixtureRequest, django_project: Path) -> str:
    return str(request.param)


def _jobs(alias: str) -> Any:
    from burrow.django.compat import task_backends

    return task_backends[alias].jobs


def _job_id(result_id: str) -> int:
    return int(result_id.split("-")[0])


def test_enqueue_stores_one_job_and_reads_back(alias: str) -> None:
    from burrow.django.compat import TaskResultStatus
    from djshop.tasks import add, send

    result = add.using(backend=alias).enqueue(2, b=3)
    assert result.status == TaskResultStatus.READY and result.backend == alias
    assert result.args == [2] and result.kwargs == {"b": 3}
    again = add.using(backend=alias).get_result(result.id)
    assert (again.id, again.status, again.args, again.kwargs) == (result.id, TaskResultStatus.READY, [2], {"b": 3})
    assert again.errors == [] and again.worker_ids == [] and again.enqueued_at is not None
    job = _jobs(alias).get(_job_id(result.id))
    assert (job.task, job.priority, job.queue, job.max_retries) == ("djshop.tasks.add", 0, "default", 0)

    run_after = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    mail = send.using(backend=alias, run_after=run_after).enqueue("a@example.com")
    job = _jobs(alias).get(_job_id(mail.id))
    assert (job.task, job.priority, job.queue, job.run_at) == ("djshop.tasks.send", 10, "mail", run_after)
    low = send.using(backend=alias, priority=-100).enqueue("b@example.com")
    assert _jobs(alias).get(_job_id(low.id)).priority == -100
    again = send.using(backend=alias).get_result(low.id)  # the task as it was enqueued
    assert (again.task.priority, again.task.queue_name, again.task.backend) == (-100, "mail", alias)


def test_retries_come_from_the_backend_option_and_the_task(django_project: Path) -> None:
    from djshop.tasks import add, fails_twice_then_gives_up

    assert _jobs("default").get(_job_id(add.enqueue(1, 1).id)).max_retries == 0  # Django's default: none
    assert _jobs("default").get(_job_id(add.using(backend="retrying").enqueue(1, 1).id)).max_retries == 2
    assert _jobs("default").get(_job_id(fails_twice_then_gives_up.enqueue().id)).max_retries == 1


def test_unknown_and_malformed_ids_do_not_exist(alias: str) -> None:
    from burrow.django.compat import TaskResultDoesNotExist, task_backends
    from djshop.tasks import add

    backend = task_backends[alias]
    real = add.using(backend=alias).enqueue(1, 2).id
    job_id, nonce = real.split("-")
    for bad in ["", "x", "1", "0-0000000000000000", f"{job_id}-{'0' * 16}", f"{job_id}-{nonce}x",
                f"{int(job_id) + 1000}-{nonce}", f" {real}", "9" * 30 + "-" + nonce]:
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(bad)
    with pytest.raises(TaskResultDoesNotExist):
        add.using(backend=alias).get_result("nope")


def test_enqueue_is_part_of_the_transaction(alias: str) -> None:
    from django.db import transaction

    from burrow.django.compat import TaskResultDoesNotExist, task_backends
    from djshop.models import Order
    from djshop.tasks import add

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic(using=alias):
        Order.objects.using(alias).create(note="rolled back")
        lost = add.using(backend=alias).enqueue(1, 1)
        raise Rollback
    with pytest.raises(TaskResultDoesNotExist):
        task_backends[alias].get_result(lost.id)

    with transaction.atomic(using=alias):
        Order.objects.using(alias).create(note="committed")
        kept = add.using(backend=alias).enqueue(1, 1)
        # Not committed yet: burrow's own connections cannot see it.
        with pytest.raises(TaskResultDoesNotExist):
            task_backends[alias].get_result(kept.id)
    assert task_backends[alias].get_result(kept.id).args == [1, 1]
    # A result id is never handed out twice, even when the job id is (SQLite gives the
    # rolled-back row's id to the next insert).
    assert kept.id != lost.id
    with pytest.raises(TaskResultDoesNotExist):
        task_backends[alias].get_result(lost.id)


def test_sqlite_enqueue_is_one_insert(django_project: Path) -> None:
    from django.db import connections, transaction

    from djshop.tasks import add

    statements: list[str] = []
    with transaction.atomic(using="default"):
        connection = connections["default"]
        connection.ensure_connection()
        raw: sqlite3.Connection = connection.connection
        raw.set_trace_callback(statements.append)
        try:
            add.enqueue(1, 2)
        finally:
            raw.set_trace_callback(None)
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1 and "burrow_jobs" in inserts[0], statements


def test_a_dsn_backend_enqueues_outside_django(django_project: Path) -> None:
    from django.db import transaction

    from burrow.django.compat import task_backends
    from djshop.tasks import add

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        result = add.using(backend="by_dsn").enqueue(4, 4)
        raise Rollback
    # Not part of Django's transaction: it stays.
    assert task_backends["by_dsn"].get_result(result.id).args == [4, 4]


def test_invalid_tasks_are_refused_as_django_says(alias: str) -> None:
    from burrow.django.compat import InvalidTask, tasks_module
    from djshop.tasks import add

    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid"):
        add.using(backend=alias, queue_name="nope")
    with pytest.raises(InvalidTask, match="aware"):
        add.using(backend=alias, run_after=dt.datetime(2030, 1, 1))
    with pytest.raises(InvalidTask, match="priority"):
        add.using(backend=alias, priority=101)
    with pytest.raises(InvalidTask, match="module level"):
        tasks_module().task(backend=alias)(lambda: None)
    with pytest.raises(InvalidTask, match="invalid queue name"):
        add.using(backend="retrying", queue_name="bad queue")  # QUEUES [] takes any: burrow's rule
    with pytest.raises(TypeError):
        add.using(backend=alias).enqueue(object(), 1)  # not JSON: Django's normalize_json


def test_task_enqueued_signal(alias: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from djshop.tasks import add

    signals = tmp_path / "signals.txt"
    monkeypatch.setenv("BURROW_DJANGO_SIGNALS", str(signals))
    result = add.using(backend=alias).enqueue(1, 2)
    assert signals.read_text().splitlines() == [f"task_enqueued BurrowBackend READY {result.id}"]


def test_async_enqueue_and_results(alias: str) -> None:
    from burrow.django.compat import TaskResultStatus
    from djshop.tasks import sleepy_add

    task = sleepy_add.using(backend=alias)

    async def main() -> tuple[Any, Any]:
        result = await task.aenqueue(1, 2)
        again = await task.aget_result(result.id)
        await again.arefresh()
        return result, again

    result, again = asyncio.run(main())
    assert again.id == result.id and again.status == TaskResultStatus.READY


def test_backend_features() -> None:
    from burrow.django import BurrowBackend

    assert BurrowBackend.supports_defer and BurrowBackend.supports_async_task
    assert BurrowBackend.supports_get_result and BurrowBackend.supports_priority


def test_checks(django_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.apps import apps

    from burrow.django import BurrowBackend
    from burrow.django.compat import task_backends

    assert list(task_backends["default"].check(databases=["default"])) == []
    assert list(task_backends["pg"].check(databases=["pg"])) == []
    bad_alias = BurrowBackend("x", {"OPTIONS": {"DATABASE": "nope"}})
    assert [m.id for m in bad_alias.check()] == ["burrow.E002"]
    fresh = BurrowBackend("y", {"OPTIONS": {"DSN": f"sqlite:///{tmp_path / 'new.db'}"}})
    assert [m.id for m in fresh.check()] == []  # database checks only when asked for
    assert [m.id for m in fresh.check(databases=["default"])] == ["burrow.W001"]
    monkeypatch.setattr(apps, "is_installed", lambda name: name != "burrow.django")
    assert [m.id for m in task_backends["default"].check()] == ["burrow.E001"]


def test_import_burrow_stays_light() -> None:
    import subprocess
    import sys

    code = "import burrow, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'django_tasks')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_jobs_in_a_postgresql_schema_of_their_own(django_project: Path) -> None:
    from django.db import connections, transaction

    from burrow.django.compat import TaskResultDoesNotExist, task_backends
    from djshop.tasks import add

    result = add.using(backend="pg_schema").enqueue(7, 8)
    assert task_backends["pg_schema"].get_result(result.id).args == [7, 8]
    with connections["pg"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobs.burrow_jobs WHERE id = %s", [int(result.id.split("-")[0])])
        assert cursor.fetchone()[0] == 1

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic(using="pg"):
        lost = add.using(backend="pg_schema").enqueue(1, 1)
        raise Rollback
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["pg_schema"].get_result(lost.id)
