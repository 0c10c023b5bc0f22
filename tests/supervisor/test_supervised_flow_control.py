"""Flow control through real supervisors: named queues with pools of their own,
cancelling running jobs, and a concurrency limit across two supervisors."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from burrow.backends.records import CANCELLED_BY_OPERATOR, HistoryEvent
from burrow.job import JobState
from burrow.queue import JobQueue
from tests.conftest import Database
from tests.helpers import wait_until
from tests.supervisor.app import (
    Gate,
    Mark,
    Numbers,
    Span,
    announced,
    bulk_task,
    limited_task,
    mail_task,
    polite_task,
    sleepy_task,
    square_task,
)
from tests.supervisor.helpers import Launcher, SupervisorProcess, alive, write_config


def _with_pool(config: Path, queues: list[str], workers: int) -> Path:
    quoted = ", ".join(f'"{q}"' for q in queues)
    pool = f"[[supervisor.pools]]\nqueues = [{quoted}]\nworkers = {workers}\nbatch_size = 1\n\n"
    config.write_text(config.read_text().replace("[retry]", pool + "[retry]", 1))
    return config


def test_a_mail_job_starts_within_a_second_of_a_flood_in_bulk(database: Database, launcher: Launcher, tmp_path: Path) -> None:
    ledger, mail_ledger = tmp_path / "bulk", tmp_path / "mail"
    config = _with_pool(write_config(tmp_path / "jobs.toml", database, workers=2), ["mail"], 1)
    with database.connect() as q:
        bulk_task.enqueue_many(q, [Span(str(ledger), str(i), 0.3) for i in range(200)])
        supervisor = launcher.start(config)
        supervisor.wait_ready()
        supervisor.wait(lambda: ledger.exists(), 15, "the bulk flood to be under way")
        enqueued = time.time()
        job_id = mail_task.enqueue(q, Mark(str(mail_ledger), "reset-password"))
        supervisor.wait(lambda: q.job(job_id).state is JobState.SUCCEEDED, 5, "the mail job")
        started = q.job(job_id).started_at
        assert started is not None and started.timestamp() - enqueued < 1.0
        assert q.counts()[JobState.QUEUED] > 150  # the flood is still there, behind its own two workers
        [ready] = supervisor.events("supervisor_ready")
        assert "mail 1/1 (mail)" in ready["pools"] and "default 2/2 (other queues)" in ready["pools"]
        assert sorted(p.role for p in q.processes()) == ["supervisor", "worker", "worker", "worker:mail"]


def _running_alone(
    q: JobQueue, task: Any, gate: Gate, launcher: Launcher, tmp_path: Path, database: Database
) -> tuple[int, SupervisorProcess, int]:
    """A gated job and a one-worker supervisor: (the job's id, the supervisor, the pid of
    the worker running it) once the job has announced itself."""
    job_id = task.enqueue(q, gate)
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    supervisor.wait_ready()
    pid = supervisor.wait(lambda: announced(Path(gate.directory), gate.name), 15, "the job to run")
    return job_id, supervisor, pid


def test_cancelling_a_stuck_job_ends_it_within_two_seconds(database: Database, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    with database.connect() as q:
        job_id, supervisor, pid = _running_alone(q, sleepy_task, Gate(str(gates), "s"), launcher, tmp_path, database)
        asked = time.monotonic()
        assert q.cancel(job_id) is True
        supervisor.wait(lambda: q.job(job_id).state is JobState.CANCELLED, 2.0, "the job to be cancelled")
        assert time.monotonic() - asked < 2.0
        supervisor.wait(lambda: not alive(pid), 5, "its worker to be stopped")
        supervisor.wait_event("worker_started", count=2)  # replaced
        info = q.job(job_id)
        assert (info.attempts, info.finished_at is not None) == (1, True)
        [entry] = q.history(job_id)
        assert (entry.event, entry.attempt) == (HistoryEvent.CANCELLED, 1)
        assert entry.error == "cancelled at an operator's request (q.cancel)"
        assert announced(gates, "s", 2) is None  # never retried
        assert q.cancel(job_id) is False  # finished
        assert "cancelled" in supervisor.events("worker_exited", worker_pid=pid)[0]["reason"]


def test_a_handler_that_looks_stops_by_itself(database: Database, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    with database.connect() as q:
        job_id, supervisor, pid = _running_alone(q, polite_task, Gate(str(gates), "p"), launcher, tmp_path, database)
        assert q.cancel(job_id) is True
        supervisor.wait(lambda: q.job(job_id).state is JobState.CANCELLED, 2.0, "the job to be cancelled")
        square = square_task.enqueue(q, Numbers(3, 1))
        supervisor.wait(lambda: q.job(square).state is JobState.SUCCEEDED, 5, "the next job")
        assert alive(pid) and supervisor.worker_pids() == {pid}, supervisor.tail()  # it stopped in time: no kill
        assert q.job(job_id).result is None  # its late "stopped when asked" was dropped


def test_a_handler_that_sees_the_cancel_before_its_supervisor_ends_cancelled(
    database: Database, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    """The supervisor frozen (SIGSTOP) while the cancel is asked: the handler sees it
    first and returns, and its result reaches a supervisor that has not polled for
    cancels yet. The job still ends cancelled, never succeeded with its result; and
    the worker, whose heartbeats piled up in the pipe meanwhile, is not taken for silent."""
    with database.connect() as q:
        job_id, supervisor, pid = _running_alone(q, polite_task, Gate(str(gates), "p"), launcher, tmp_path, database)
        os.kill(supervisor.pid, signal.SIGSTOP)
        try:
            assert q.cancel(job_id) is True
            wait_until(lambda: (gates / "p.saw").exists(), 5, "the handler to see the cancel")
        finally:
            os.kill(supervisor.pid, signal.SIGCONT)
        supervisor.wait(lambda: q.job(job_id).state is JobState.CANCELLED, 5, "the job to be cancelled")
        info = q.job(job_id)
        assert (info.result, info.attempts) == (None, 1)
        [entry] = q.history(job_id)
        assert (entry.event, entry.error) == (HistoryEvent.CANCELLED, CANCELLED_BY_OPERATOR)
        assert alive(pid) and supervisor.worker_pids() == {pid}, supervisor.tail()  # it stopped in time: no kill


def test_a_concurrency_limit_holds_across_two_supervisors(database: Database, launcher: Launcher, tmp_path: Path) -> None:
    ledger = tmp_path / "spans"
    config = write_config(tmp_path / "jobs.toml", database, workers=3)
    with database.connect() as q:
        ids = limited_task.enqueue_many(q, [Span(str(ledger), str(i), 0.2) for i in range(12)])
        first, second = launcher.start(config), launcher.start(config)
        for supervisor in (first, second):
            supervisor.wait_ready()
        # Six workers in two supervisors could run them: only the limit keeps it to two.
        assert len(first.worker_pids() | second.worker_pids()) == 6
        first.wait(lambda: all(q.job(i).state is JobState.SUCCEEDED for i in ids), 30, "every limited job")
    spans = sorted((float(start), float(end)) for _, start, end, _ in (line.split() for line in ledger.read_text().splitlines()))
    assert len(spans) == 12
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 2, f"{peak} ran at once"
