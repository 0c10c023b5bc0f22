"""`manage.py burrow_worker` running Django tasks, on SQLite and PostgreSQL (one
worker subprocess per database for the module): results, errors per attempt,
retries with the context's attempt, async tasks, bad task paths, cancels,
signals, the ORM inside a task."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.django.conftest import PROJECT, Worker, child_env, wait_until

pytest.importorskip("django")


def _finished(result: Any, timeout: float = 30.0) -> Any:
    def done() -> bool:
        result.refresh()
        return bool(result.is_finished)

    wait_until(done, timeout, f"task result {result.id} to finish")
    return result


def test_a_task_runs_and_its_result_is_read_from_here(worker: tuple[str, Worker]) -> None:
    from burrow.django.compat import TaskResultStatus
    from djshop.tasks import add

    alias, _ = worker
    result = _finished(add.using(backend=alias).enqueue(2, 3))
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5
    assert result.errors == [] and len(result.worker_ids) == 1 and result.attempts == 1
    assert result.started_at is not None and result.finished_at is not None and result.enqueued_at is not None
    again = add.using(backend=alias).get_result(result.id)
    assert again.return_value == 5 and again.worker_ids == result.worker_ids


def test_async_task(worker: tuple[str, Worker]) -> None:
    from djshop.tasks import sleepy_add

    alias, _ = worker
    assert _finished(sleepy_add.using(backend=alias).enqueue(20, 22)).return_value == 42


def test_a_failing_task_is_failed_with_its_error(worker: tuple[str, Worker]) -> None:
    from burrow.django.compat import TaskResultStatus
    from djshop.tasks import boom

    alias, _ = worker
    result = _finished(boom.using(backend=alias).enqueue("bad news"))
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1  # no retries by default
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError" and error.exception_class is ValueError
    assert "ValueError: bad news" in error.traceback and "djshop/tasks.py" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value


def test_retries_with_the_context_attempt(worker: tuple[str, Worker]) -> None:
    from burrow.django.compat import TaskResultStatus
    from djshop.tasks import fails_twice_then_gives_up, flaky

    alias, _ = worker
    result = _finished(flaky.using(backend=alias).enqueue(succeed_on=3))  # max_retries=2 on the task
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 3
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"] * 2
    seen = result.return_value
    assert seen["attempt"] == 3 and seen["id"] == result.id
    assert len(seen["worker_ids"]) == 3 and seen["errors"] == ["builtins.RuntimeError"] * 2

    gave_up = _finished(fails_twice_then_gives_up.using(backend=alias).enqueue())  # max_retries=1
    assert gave_up.status == TaskResultStatus.FAILED and gave_up.attempts == 2
    assert [e.exception_class_path for e in gave_up.errors] == ["builtins.KeyError"] * 2


def test_running_status(worker: tuple[str, Worker], tmp_path: Path) -> None:
    from burrow.django.compat import TaskResultStatus
    from djshop.tasks import wait_for_file

    alias, _ = worker
    go = tmp_path / "go"
    result = wait_for_file.using(backend=alias).enqueue(str(go))

    def running() -> bool:
        result.refresh()
        return bool(result.status == TaskResultStatus.RUNNING)

    wait_until(running, 30, "the task to run")
    assert result.started_at is not None and result.finished_at is None and len(result.worker_ids) == 1
    go.touch()
    assert _finished(result).return_value == "done"


def test_the_orm_inside_a_task(worker: tuple[str, Worker]) -> None:
    from djshop.models import Order
    from djshop.tasks import make_order

    alias, _ = worker
    order_id = _finished(make_order.using(backend=alias).enqueue("from a worker", using=alias)).return_value
    assert Order.objects.using(alias).get(id=order_id).note == "from a worker"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("djshop.nowhere.task", "does not import: ModuleNotFoundError"),
        ("djshop.tasks.missing", "does not import: ImportError"),
        ("djshop.tasks.not_a_task", "is a function, not a Django Task"),
    ],
)
def test_a_bad_task_path_fails_its_job_not_the_worker(worker: tuple[str, Worker], path: str, message: str) -> None:
    from burrow.django.compat import task_backends
    from burrow.job import JobState
    from djshop.tasks import add

    alias, running = worker
    jobs = task_backends[alias].jobs
    payload = orjson.dumps({"django_task": 1, "nonce": "0" * 16, "backend": alias, "args": [], "kwargs": {}})
    from burrow.job import NewJob

    [job_id] = jobs.enqueue([NewJob(path, payload, 0, 3, None)])
    info = wait_until(lambda: (j := jobs.get(job_id)) and j.state in (JobState.FAILED, JobState.SUCCEEDED) and j, 30, path)
    assert info.state is JobState.FAILED and info.attempts == 1  # at once, whatever its max_retries
    assert message in (info.last_error or "")
    assert running.process.poll() is None
    assert _finished(add.using(backend=alias).enqueue(1, 1)).return_value == 2  # the worker still works


def test_a_job_cancelled_in_burrow_reads_failed(worker: tuple[str, Worker]) -> None:
    from burrow.django.compat import TaskResultStatus, task_backends
    from djshop.tasks import add

    alias, _ = worker
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    result = add.using(backend=alias, run_after=later).enqueue(1, 2)
    assert task_backends[alias].jobs.cancel(int(result.id.split("-")[0]))
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == ["burrow.errors.JobCancelled"]


def test_signals_in_the_worker(worker: tuple[str, Worker]) -> None:
    from djshop.tasks import add

    alias, _ = worker
    path = Path(os.environ["BURROW_DJANGO_SIGNALS_DIR"]) / f"{alias}.txt"
    result = _finished(add.using(backend=alias).enqueue(3, 4))
    lines = wait_until(
        lambda: [line for line in path.read_text().splitlines() if line.endswith(result.id)] if path.exists() else [],
        10, "the signals",
    )
    assert lines == [f"task_started BurrowBackend RUNNING {result.id}", f"task_finished BurrowBackend SUCCESSFUL {result.id}"]


def test_queue_option_limits_the_worker(django_project: Path) -> None:
    from burrow.django.compat import TaskResultStatus
    from djshop.tasks import add, send

    mail = send.enqueue("c@example.com")
    other = add.enqueue(5, 5)
    running = Worker("--queue", "mail", "--workers", "1")
    try:
        assert _finished(mail).return_value == {"to": "c@example.com", "subject": "hi"}
        other.refresh()
        assert other.status == TaskResultStatus.READY
    finally:
        assert running.stop() == 0, running.output()
    bad = Worker("--queue", "nope")
    assert bad.process.wait(60) != 0
    assert "not in TASKS['default']['QUEUES']" in bad.output()
    assert (PROJECT / "manage.py").exists()


def test_periodic_django_task_from_the_jobs_toml(django_project: Path, tmp_path: Path) -> None:
    from burrow.django.compat import task_backends
    from burrow.job import JobState

    config = tmp_path / "jobs.toml"
    config.write_text(
        '[[schedule]]\ntask = "djshop.tasks.add"\nevery = "1s"\nname = "adder"\npayload = { a = 20, b = 22 }\n'
    )
    check = subprocess.run(
        [sys.executable, "manage.py", "burrow_worker", "-c", str(config), "--check"],
        cwd=PROJECT, env=child_env(), capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0 and "schedule: adder (djshop.tasks.add every 1s)" in check.stdout, check.stderr
    jobs = task_backends["default"].jobs
    before = {job.id for job in jobs.list_jobs(None, ["djshop.tasks.add"], None, 1000)}
    running = Worker("-c", str(config), "--workers", "1")
    try:

        def periodic_result() -> Any:
            for job in jobs.list_jobs([JobState.SUCCEEDED], ["djshop.tasks.add"], None, 50):
                if job.id not in before and orjson.loads(job.payload)["kwargs"] == {"a": 20, "b": 22}:
                    return job
            return None

        job = wait_until(periodic_result, 30, "a periodic job to run")
        assert orjson.loads(job.result) == 42 and job.max_retries == 0
    finally:
        assert running.stop() == 0, running.output()

    config.write_text('[[schedule]]\ntask = "djshop.tasks.nothing"\nevery = "1s"\n')
    bad = subprocess.run(
        [sys.executable, "manage.py", "burrow_worker", "-c", str(config), "--check"],
        cwd=PROJECT, env=child_env(), capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and "'djshop.tasks.nothing' does not import" in bad.stderr


def test_a_task_timeout_stops_the_run(worker: tuple[str, Worker]) -> None:
    from burrow.django.compat import TaskResultStatus
    from djshop.tasks import add, too_slow

    alias, running = worker
    result = _finished(too_slow.using(backend=alias).enqueue())
    assert result.status == TaskResultStatus.FAILED
    assert "timeout" in result.errors[-1].traceback.lower(), result.errors
    assert _finished(add.using(backend=alias).enqueue(2, 2)).return_value == 4  # a new worker took over


def test_a_task_found_only_when_its_job_comes(worker: tuple[str, Worker]) -> None:
    import importlib

    alias, _ = worker
    shout = importlib.import_module("djshop.extra").shout
    assert _finished(shout.using(backend=alias).enqueue("hey")).return_value == "HEY"


def test_other_jobs_are_left_alone(worker: tuple[str, Worker]) -> None:
    """A burrow job of a task nobody handles, not a Django task's: the Django worker
    leaves it queued for whoever runs it."""
    from burrow.django.compat import task_backends
    from burrow.job import JobState, NewJob
    from djshop.tasks import add

    alias, _ = worker
    jobs = task_backends[alias].jobs
    [job_id] = jobs.enqueue([NewJob("reports.build", b'{"month": 3}', 0, 3, None)])
    # Long enough for an idle worker to have looked (it looks once a second) twice.
    deadline_job = add.using(backend=alias, run_after=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2.5)).enqueue(0, 1)
    assert _finished(deadline_job).return_value == 1
    info = jobs.get(job_id)
    assert info.state is JobState.QUEUED and info.attempts == 0
    assert jobs.cancel(job_id)  # out of the other tests' way


def test_a_task_whose_worker_dies_runs_again(worker: tuple[str, Worker]) -> None:
    import importlib

    from burrow.django.compat import TaskResultStatus

    alias, _ = worker
    dies_once = importlib.import_module("djshop.extra").dies_once
    result = _finished(dies_once.using(backend=alias).enqueue(), timeout=60)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
    assert len(result.worker_ids) == 2 and len(result.errors) == 1
    assert result.worker_ids[0] != result.worker_ids[1]  # another worker process


def test_pools_from_the_jobs_toml(django_project: Path, tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text('[[supervisor.pools]]\nname = "mailers"\nqueues = ["mail"]\nworkers = 1\n')
    check = subprocess.run(
        [sys.executable, "manage.py", "burrow_worker", "-c", str(config), "--check"],
        cwd=PROJECT, env=child_env(), capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "queues:   every queue no pool names" in check.stdout and "pool:     mailers, 1 workers: mail" in check.stdout
    both = subprocess.run(
        [sys.executable, "manage.py", "burrow_worker", "-c", str(config), "--queue", "mail", "--check"],
        cwd=PROJECT, env=child_env(), capture_output=True, text=True, timeout=60,
    )
    assert both.returncode != 0 and "--queue and [[supervisor.pools]]" in both.stderr
