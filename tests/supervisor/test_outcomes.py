"""A worker never dies of an outcome: odd error text, huge errors and huge results
end as the job's failure (or success), in the same worker."""

from __future__ import annotations

import signal
from pathlib import Path

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.supervisor.app import (
    Numbers,
    bad_name_task,
    binary_result_task,
    huge_error_task,
    square_task,
    text_result_task,
)
from tests.supervisor.helpers import Launcher, write_config

MIB = 1 << 20
DEFAULT_MAX_RESULT = 8 * MIB


def test_odd_errors_and_big_results_do_not_kill_the_worker(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1, batch_size=1))
    supervisor.wait_ready()
    [started] = supervisor.events("worker_started")
    pid = started["worker_pid"]

    bad_name = bad_name_task.enqueue(queue, 0)
    huge_error = huge_error_task.enqueue(queue, 20)  # 20 MiB of message: over the pipe's frame cap
    too_big = text_result_task.enqueue(queue, 17 * MIB)  # over the frame cap, let alone the result cap
    just_under = binary_result_task.enqueue(queue, DEFAULT_MAX_RESULT - 1)  # not UTF-8: base64 on the pipe
    normal = square_task.enqueue(queue, Numbers(3, 1))
    finished = (JobState.FAILED, JobState.SUCCEEDED)
    ids = [bad_name, huge_error, too_big, just_under, normal]
    supervisor.wait(lambda: all(queue.job(i).state in finished for i in ids), 60, "every job to finish")

    job = queue.job(bad_name)
    assert (job.state, job.attempts) == (JobState.FAILED, 1)  # permanent: no retry
    assert (job.last_error or "").startswith("PermanentError: bad name \\udcff\n")  # the surrogate spelled out
    [logged] = supervisor.events("job_failed", job_id=bad_name)
    assert logged["error"] == "PermanentError: bad name \\udcff"

    job = queue.job(huge_error)
    assert (job.state, job.attempts) == (JobState.FAILED, 1)
    error = job.last_error or ""
    assert error.startswith("ValueError: xxx") and "characters cut" in error and len(error) < 200_000

    job = queue.job(too_big)
    assert (job.state, job.attempts) == (JobState.FAILED, 1)  # it would be as big next time: failed at once
    size = 17 * MIB + 2  # the JSON string's quotes
    assert job.last_error == (
        f"result too large: {size} bytes, over max_result_size ({DEFAULT_MAX_RESULT} bytes)"
    )
    assert job.result is None

    job = queue.job(just_under)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    assert queue.result(just_under) == b"\xff" * (DEFAULT_MAX_RESULT - 1)
    assert square_task.result(queue, normal) == 10

    # One worker ran them all and is still there.
    assert [r["worker_pid"] for r in supervisor.events("worker_started")] == [pid]
    assert supervisor.events("worker_exited") == [] and supervisor.events("worker_crashed") == []
    assert {r["worker_pid"] for r in supervisor.events("job_started")} == {pid}
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
