"""Many jobs through a few workers: all succeed once, results come back typed."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.supervisor.app import Numbers, async_square_task, slow_task, square_task
from tests.supervisor.helpers import Launcher, write_config

JOBS = 1_000
ASYNC_JOBS = 100


@pytest.mark.parametrize("workers", [2, 4])
def test_result_jobs_through_workers(database, queue: JobQueue, launcher: Launcher, tmp_path: Path, workers: int) -> None:
    ids = square_task.enqueue_many(queue, [Numbers(i, 1) for i in range(JOBS)])
    async_ids = async_square_task.enqueue_many(queue, [Numbers(i, 2) for i in range(ASYNC_JOBS)])
    config = write_config(tmp_path / "jobs.toml", database, workers=1)
    supervisor = launcher.start(config, "--workers", str(workers))
    supervisor.wait_ready()
    total = JOBS + ASYNC_JOBS
    supervisor.wait(lambda: queue.backend.counts()[JobState.SUCCEEDED] == total, 60, f"{total} jobs to succeed")

    counts = queue.backend.counts()
    assert counts[JobState.SUCCEEDED] == total and sum(counts.values()) == total
    assert [square_task.result(queue, job_id) for job_id in ids] == [i * i + 1 for i in range(JOBS)]
    assert [async_square_task.result(queue, job_id) for job_id in async_ids] == [i * i + 2 for i in range(ASYNC_JOBS)]
    assert all(queue.job(job_id).attempts == 1 for job_id in ids[:: JOBS // 50])
    assert len(supervisor.worker_pids()) == workers  # --workers overrode the file
    ran_in = {r["worker_pid"] for r in supervisor.events("job_succeeded")}
    assert ran_in <= supervisor.worker_pids() and len(ran_in) >= 2

    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


def test_slow_jobs_are_not_hoarded_by_one_worker(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    """batch_size 100, jobs of 200 ms: each worker claims one at a time, so both work.

    A worker claiming a full batch would take all 8 jobs and run them in turn
    (1.6 s) while the other idled; the claim size follows the jobs' pace instead.
    """
    config = write_config(tmp_path / "jobs.toml", database, workers=2, batch_size=100)
    supervisor = launcher.start(config)
    supervisor.wait_ready()
    slow_task.enqueue_many(queue, [0.2] * 8)
    supervisor.wait(lambda: queue.backend.counts()[JobState.SUCCEEDED] == 8, 30, "8 slow jobs to succeed")

    per_worker = Counter(r["worker_pid"] for r in supervisor.events("job_succeeded"))
    assert sum(per_worker.values()) == 8 and len(per_worker) == 2 and min(per_worker.values()) >= 2, per_worker
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
