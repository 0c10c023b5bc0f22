"""Several supervisors on one PostgreSQL schema: each job runs once unless its holder died."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.supervisor.app import Mark, record_task
from tests.supervisor.helpers import Launcher, alive, write_config

JOBS = 2_000

pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


def _ledger(path: Path) -> Counter[str]:
    return Counter(line.split()[0] for line in path.read_text().splitlines()) if path.exists() else Counter()


def test_two_supervisors_run_every_job_exactly_once(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    config = write_config(tmp_path / "jobs.toml", database, workers=2)
    one = launcher.start(config, name="one")
    two = launcher.start(config, name="two")
    one.wait_ready()
    two.wait_ready()
    record_task.enqueue_many(queue, [Mark(str(ledger), str(i)) for i in range(JOBS)])
    one.wait(lambda: queue.backend.counts()[JobState.SUCCEEDED] == JOBS, 60, f"{JOBS} jobs to succeed")

    assert _ledger(ledger) == Counter(str(i) for i in range(JOBS))
    by_supervisor = [len(s.events("job_succeeded")) for s in (one, two)]
    assert sum(by_supervisor) == JOBS and min(by_supervisor) > 0  # both did work
    for supervisor in (one, two):
        supervisor.send(signal.SIGTERM)
        assert supervisor.wait_exit() == 0


def test_a_killed_supervisors_jobs_are_finished_by_the_other(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    """Jobs of 2 ms: each supervisor's workers claim about 0.1 s of work at a time, so
    the two share the queue and the victim is mid-run when killed. (Jobs of
    microseconds are claimed hundreds at a time, several claim sizes ahead: one
    supervisor could take nearly all 2,000 before the other's first claim.)"""
    ledger = tmp_path / "ledger"
    ids = record_task.enqueue_many(queue, [Mark(str(ledger), str(i), seconds=0.002) for i in range(JOBS)])
    config = write_config(tmp_path / "jobs.toml", database, workers=2)
    victim = launcher.start(config, name="victim")
    survivor = launcher.start(config, name="survivor")
    victim.wait(lambda: len(victim.events("job_succeeded")) >= 200, 30, "the victim to be mid-run")
    victim_workers = victim.workers()

    victim.proc.send_signal(signal.SIGKILL)
    assert victim.wait_exit(10) == -signal.SIGKILL
    victim.wait(lambda: not [w for w in victim_workers if alive(w.pid)], 2, "the victim's workers to exit")
    survivor.wait(lambda: queue.backend.counts()[JobState.SUCCEEDED] == JOBS, 60, f"{JOBS} jobs to succeed")

    assert queue.backend.counts()[JobState.RUNNING] == 0
    ran = _ledger(ledger)
    assert set(ran) == {str(i) for i in range(JOBS)}
    # At least once: a job ran twice only if the dead supervisor held it, and its
    # history says so.
    for key, times in ran.items():
        if times > 1:
            job_id = ids[int(key)]
            assert times == 2 and queue.job(job_id).attempts == 2
            assert [h.event for h in queue.history(job_id)] == ["lease_expired"]
    expired = {r["job_id"] for r in survivor.events("job_lease_expired")}
    assert expired, "the victim held no job when killed"
    assert all(queue.job(job_id).state is JobState.SUCCEEDED for job_id in expired)
    survivor.send(signal.SIGTERM)
    assert survivor.wait_exit() == 0
