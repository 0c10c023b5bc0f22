"""The task registry through a real supervisor: it records the tasks it handles, names
the due jobs nobody handles in its log once, and takes its tasks away when it stops."""

from __future__ import annotations

import signal
from pathlib import Path

import orjson

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.supervisor.app import Numbers, square_task
from tests.supervisor.helpers import Launcher, write_config


def test_a_supervisor_names_the_jobs_no_one_handles_and_registers_its_own(
    database, queue: JobQueue, launcher: Launcher, tmp_path: Path
) -> None:
    typo = queue.enqueue_many("sv.sqaure", [{"a": 1}, {"a": 2}])
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    supervisor.wait_ready()
    handled = square_task.enqueue(queue, Numbers(2, 0))  # never named
    supervisor.wait(lambda: queue.job(handled).state is JobState.SUCCEEDED, 15, "the handled job")

    [warning] = supervisor.wait_event("jobs_unhandled", timeout=20)
    assert (warning["task"], warning["due_jobs"], warning["level"]) == ("sv.sqaure", len(typo), "warning")
    assert queue.unhandled() == {"sv.sqaure": 2}
    options = orjson.loads(queue.backend.task_options(square_task.name) or "null")
    assert options["max_retries"] == square_task.config.max_retries and options["queue"] == square_task.config.queue

    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    assert queue.backend.task_options(square_task.name) is None  # gone with the supervisor's row
    assert queue.unhandled() == {"sv.sqaure": 2}
