"""Recycling, reload, resizing and systemd notifications, seen from outside the process."""

from __future__ import annotations

import signal
import socket
import sys
from collections import Counter
from pathlib import Path

import pytest

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.supervisor.app import (
    BROKEN,
    VERSION_ENV,
    Gate,
    Mark,
    Numbers,
    announced,
    block_task,
    hog_task,
    record_task,
    square_task,
    version_task,
)
from tests.supervisor.helpers import Launcher, SupervisorProcess, alive, run_cli, write_config

CLEAN_EXIT = "worker exited with exit status 0"


def _all_succeeded(q, ids: list[int]) -> bool:
    return all(q.job(job_id).state is JobState.SUCCEEDED for job_id in ids)


def test_max_jobs_per_worker_recycles_workers(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ids = record_task.enqueue_many(queue, [Mark(str(ledger), str(i)) for i in range(20)])
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=2, max_jobs_per_worker=5))
    supervisor.wait(lambda: _all_succeeded(queue, ids), 20, "every job to succeed")

    keys = Counter(line.split()[0] for line in ledger.read_text().splitlines())
    assert keys == Counter(str(i) for i in range(20))  # each ran exactly once
    assert {queue.job(job_id).attempts for job_id in ids} == {1}
    per_worker = Counter(r["worker_pid"] for r in supervisor.events("job_succeeded"))
    assert max(per_worker.values()) <= 5 and len(per_worker) >= 4
    # Every worker that reached 5 jobs was recycled and replaced (how the 20 jobs
    # split depends on claim sizes and timing; at least 4 workers ran them).
    full = sum(1 for n in per_worker.values() if n == 5)
    recycled = supervisor.wait_event("worker_recycling", count=full)
    assert full >= 1 and all("max_jobs_per_worker (5)" in r["reason"] for r in recycled)
    exits = supervisor.wait_event("worker_exited", count=full)
    assert all(r["reason"] == CLEAN_EXIT and r["level"] == "info" for r in exits)
    supervisor.wait_event("worker_started", count=2 + full)  # 2 at start, one per recycled
    supervisor.wait(lambda: len(supervisor.workers()) == 2, 5, "the pool back at 2 workers")


def test_max_worker_memory_recycles_after_the_job(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    hog_id = hog_task.enqueue(queue, 100)
    rest = square_task.enqueue_many(queue, [Numbers(i, 0) for i in range(3)])
    config = write_config(tmp_path / "jobs.toml", database, workers=1, max_worker_memory="80MB")
    supervisor = launcher.start(config)
    supervisor.wait(lambda: _all_succeeded(queue, [hog_id, *rest]), 20, "every job to succeed")

    hog_pid = hog_task.result(queue, hog_id)
    assert queue.job(hog_id).attempts == 1
    recycling = supervisor.wait_event("worker_recycling", worker_pid=hog_pid)[0]
    assert "max_worker_memory (80000000)" in recycling["reason"]
    exited = supervisor.wait_event("worker_exited", worker_pid=hog_pid)[0]
    assert exited["reason"] == CLEAN_EXIT
    # The jobs claimed with the hog were released, not run by the bloated worker.
    ran_in = {r["job_id"]: r["worker_pid"] for r in supervisor.events("job_succeeded")}
    assert all(ran_in[job_id] != hog_pid for job_id in rest)
    assert [square_task.result(queue, job_id) for job_id in rest] == [0, 1, 4]
    assert {queue.job(job_id).attempts for job_id in rest} == {1}
    assert not alive(hog_pid)


def _start_versioned(database, launcher: Launcher, tmp_path: Path) -> tuple[Path, Path, SupervisorProcess]:
    """A ready supervisor of 2 workers whose app code reads its version from a file
    the test rewrites before a SIGHUP; (that file, the config, the supervisor)."""
    version_file = tmp_path / "version"
    version_file.write_text("1")
    config = write_config(tmp_path / "jobs.toml", database, workers=2, batch_size=1)
    supervisor = launcher.start(config, env={VERSION_ENV: str(version_file)})
    supervisor.wait_ready()
    return version_file, config, supervisor


def test_sighup_reloads_config_and_code(database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    version_file, config, supervisor = _start_versioned(database, launcher, tmp_path)
    first = version_task.enqueue(queue, 0)
    supervisor.wait(lambda: queue.job(first).state is JobState.SUCCEEDED, 15, "the first job")
    assert version_task.result(queue, first) == "1"
    old = {w.pid for w in supervisor.workers()}
    assert len(old) == 2
    long_job = block_task.enqueue(queue, Gate(str(gates), "a"))
    busy = supervisor.wait(lambda: announced(gates, "a"), 15, "a long job to run")

    version_file.write_text("2")
    write_config(config, database, workers=3, batch_size=1)
    supervisor.send(signal.SIGHUP)
    supervisor.wait_event("supervisor_reloaded", generation=1)
    new = {r["worker_pid"] for r in supervisor.wait_event("worker_started", count=3, generation=1)}
    for pid in old - {busy}:
        assert supervisor.wait_event("worker_exited", worker_pid=pid)[0]["reason"] == CLEAN_EXIT
    second = version_task.enqueue(queue, 0)
    supervisor.wait(lambda: queue.job(second).state is JobState.SUCCEEDED, 15, "the second job")
    assert version_task.result(queue, second) == "2"
    assert {r["worker_pid"] for r in supervisor.events("job_succeeded", job_id=second)} <= new

    # The old worker busy at the reload finishes its job, then leaves.
    assert alive(busy)
    (gates / "a.go").touch()
    assert supervisor.wait_event("worker_exited", worker_pid=busy)[0]["reason"] == CLEAN_EXIT
    # Logged as the exit is reaped; the outcome is written up to flush_interval later.
    supervisor.wait(lambda: queue.job(long_job).state is not JobState.RUNNING, 5, "the long job's outcome")
    job = queue.job(long_job)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    supervisor.wait(lambda: {w.pid for w in supervisor.workers()} == new, 5, "only the new generation alive")


def test_sighup_with_a_broken_config_keeps_running(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    config = write_config(tmp_path / "jobs.toml", database, workers=2)
    supervisor = launcher.start(config)
    supervisor.wait_ready()
    before = {w.pid for w in supervisor.workers()}
    write_config(config, database, workers=2, lease_timeout="forever")
    supervisor.send(signal.SIGHUP)
    failed = supervisor.wait_event("reload_failed")[0]
    assert "[supervisor] lease_timeout" in failed["error"]
    assert supervisor.events("supervisor_reloaded") == []
    assert {w.pid for w in supervisor.workers()} == before
    job_id = square_task.enqueue(queue, Numbers(3, 0))
    supervisor.wait(lambda: queue.job(job_id).state is JobState.SUCCEEDED, 15, "a job after the failed reload")


def test_sighup_with_broken_app_code_keeps_the_old_workers_and_code(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    """register_jobs raising what app code raises (a KeyError, not a BurrowError) is a
    failed reload like a bad config: logged, and the running workers and code go on."""
    version_file, _, supervisor = _start_versioned(database, launcher, tmp_path)
    long_job = block_task.enqueue(queue, Gate(str(gates), "a"))
    busy = supervisor.wait(lambda: announced(gates, "a"), 15, "a long job to run")
    before = {w.pid for w in supervisor.workers()}
    assert busy in before and len(before) == 2

    version_file.write_text(BROKEN)
    supervisor.send(signal.SIGHUP)
    failed = supervisor.wait_event("reload_failed")[0]
    assert "register_jobs failed: KeyError: 'queue_name'" in failed["error"]
    assert supervisor.events("supervisor_reloaded") == []
    assert {w.pid for w in supervisor.workers()} == before

    (gates / "a.go").touch()
    supervisor.wait(lambda: queue.job(long_job).state is JobState.SUCCEEDED, 15, "the long job")
    assert (queue.job(long_job).attempts, queue.history(long_job)) == (1, [])
    after = version_task.enqueue(queue, 0)
    supervisor.wait(lambda: queue.job(after).state is JobState.SUCCEEDED, 15, "a job after the failed reload")
    assert version_task.result(queue, after) == "1"  # the old code still runs it
    assert {w.pid for w in supervisor.workers()} == before
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    assert supervisor.events("worker_exited", reason=CLEAN_EXIT) == supervisor.events("worker_exited")


def test_a_start_with_broken_app_code_is_one_line_and_exit_2(database, tmp_path: Path) -> None:
    version_file = tmp_path / "version"
    version_file.write_text(BROKEN)
    config = write_config(tmp_path / "jobs.toml", database)
    for check in ([], ["--check"]):
        done = run_cli(
            [sys.executable, "-m", "burrow.supervisor", "-c", str(config), *check],
            env={VERSION_ENV: str(version_file)},
            timeout=30,
        )
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.splitlines()
        assert line.startswith("burrow: ") and "register_jobs failed: KeyError: 'queue_name'" in line, line


def test_sigttin_adds_and_sigttou_removes_a_worker(database, launcher: Launcher, tmp_path: Path) -> None:
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=2))
    supervisor.wait_ready()
    assert len(supervisor.workers()) == 2

    supervisor.send(signal.SIGTTIN)
    supervisor.wait_event("workers_resized", target=3)
    supervisor.wait(lambda: len(supervisor.workers()) == 3, 10, "3 live workers")
    three = {w.pid for w in supervisor.workers()}

    supervisor.send(signal.SIGTTOU)
    supervisor.wait_event("workers_resized", target=2)
    supervisor.wait(lambda: len(supervisor.workers()) == 2, 10, "2 live workers")
    (removed,) = three - {w.pid for w in supervisor.workers()}
    assert supervisor.wait_event("worker_exited", worker_pid=removed)[0]["reason"] == CLEAN_EXIT

    supervisor.send(signal.SIGTTOU)
    supervisor.wait_event("workers_resized", target=1)
    supervisor.send(signal.SIGTTOU)  # never below one worker (one at a time: equal signals coalesce)
    supervisor.wait_event("workers_resized", count=2, target=1)
    supervisor.wait(lambda: len(supervisor.workers()) == 1, 10, "1 live worker")
    assert len(supervisor.events("worker_started")) == 3

    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


class NotifySocket:
    """The systemd end of sd_notify: a bound datagram socket that collects messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def receive(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def having(self, key: str, value: str | None = None) -> list[dict[str, str]]:
        return [m for m in self.receive() if key in m and (value is None or m[key] == value)]

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_sd_notify(database, launcher: Launcher, tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        supervisor = launcher.start(
            write_config(tmp_path / "jobs.toml", database, workers=2), env={"NOTIFY_SOCKET": str(notify.path)}
        )
        supervisor.wait(lambda: notify.having("READY", "1"), 20, "READY=1")
        assert len(supervisor.workers()) == 2  # ready once the workers are up
        supervisor.wait_ready()
        status = supervisor.wait(lambda: notify.having("STATUS"), 5, "STATUS=")
        assert "workers" in status[0]["STATUS"] and "\n" not in status[0]["STATUS"]
        supervisor.wait(lambda: len(notify.having("WATCHDOG", "1")) >= 2, 5, "WATCHDOG=1 every tick")

        supervisor.send(signal.SIGHUP)
        reloading = supervisor.wait(lambda: notify.having("RELOADING", "1"), 5, "RELOADING=1")
        assert int(reloading[0]["MONOTONIC_USEC"]) > 0
        supervisor.wait(lambda: len(notify.having("READY", "1")) >= 2, 10, "READY=1 after the reload")
        order = [next(iter(m)) for m in notify.receive()]
        assert order.index("RELOADING") < len(order) - 1 - order[::-1].index("READY")

        supervisor.send(signal.SIGTERM)
        supervisor.wait(lambda: notify.having("STOPPING", "1"), 5, "STOPPING=1")
        assert supervisor.wait_exit() == 0
    finally:
        notify.close()
