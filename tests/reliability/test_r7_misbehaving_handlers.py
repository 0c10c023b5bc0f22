"""R7: handlers that misbehave in every way we could think of.

Each ends as a recorded retry and failure (or, for the stdout flood, a success),
the supervisor keeps running (a later normal job succeeds), it drains and exits
0 on SIGTERM, and no process is left behind (the launcher fixture checks the
process table for anything mentioning the test's directory).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.reliability.app import MISBEHAVING, Misbehave, Work, work_task
from tests.reliability.audit import Figures, audit, read_ledger
from tests.reliability.helpers import GRACE_S, reliability_config
from tests.supervisor.helpers import Launcher, alive

# name -> (task in MISBEHAVING, what the job's last error says, its history)
CASES = {
    "base_exception": ("base_exception", "BaseException: a handler raised BaseException", ["retried", "failed"]),
    "system_exit": ("system_exit", "SystemExit: 7", ["retried", "failed"]),
    "keyboard_interrupt": ("keyboard_interrupt", "KeyboardInterrupt", ["retried", "failed"]),
    "nul_in_error": ("nul_in_error", "ValueError: a NUL \\x00 in the message", ["retried", "failed"]),
    "os_exit_0": ("exit_without_result", "worker exited with exit status 0 while running the job", ["retried", "failed"]),
    "segfault": ("segfault", "worker exited with signal 11 (SIGSEGV) while running the job", ["retried", "failed"]),
    "gil_held": ("hold_the_gil", "(no heartbeat) while running the job", ["retried", "failed"]),
    "ignores_sigterm": ("ignore_sigterm", "timeout: the job ran longer than 1s", ["failed"]),
    "forks_grandchild": ("fork_grandchild", "RuntimeError: forked grandchild", ["retried", "failed"]),
    "forks_daemon": ("fork_grandchild", "RuntimeError: forked grandchild", ["retried", "failed"]),
    "closes_pipe": ("close_the_pipe", "worker exited with exit status 4 while running the job", ["retried", "failed"]),
    # The stream broke: an announcement may be lost with it, so such a worker's jobs can
    # also come back by lease expiry (and fail there, the retry spent).
    "corrupts_pipe": ("corrupt_the_pipe", "", ["retried", "failed"]),
    "truncated_frame": ("truncate_a_frame", "worker exited with exit status 1 while running the job", ["retried", "failed"]),
    # Permanent: the same value would not encode on the next attempt either.
    "unencodable_result": ("unencodable_result", "ResultEncodeError: cannot encode the result", ["failed"]),
    "stdout_100mb": ("flood_stdout", "", []),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(CASES))
def test_misbehaving_handler(database, queue: JobQueue, launcher: Launcher, tmp_path: Path, case: str) -> None:
    task_name, error, events = CASES[case]
    task = MISBEHAVING[task_name]
    ledger = tmp_path / "ledger"
    directory = tmp_path / "handler"
    directory.mkdir()
    if case == "forks_daemon":
        (directory / "daemonize").touch()
    figures = Figures(f"R7 {case}", database.kind)
    began = time.monotonic()
    config = reliability_config(tmp_path / "jobs.toml", database, workers=1, batch_size=1)
    stdout = tmp_path / "stdout"
    if case == "stdout_100mb":
        supervisor = launcher.start(config, stdout=stdout)
    else:
        supervisor = launcher.start(config)
    supervisor.wait_ready()
    job_id = task.enqueue(queue, Misbehave(str(ledger), str(directory)))
    if case == "ignores_sigterm":
        pid = int(supervisor.wait(lambda: _read(directory / "ignoring"), 10, "the handler to ignore SIGTERM"))
        os.kill(pid, signal.SIGTERM)
        supervisor.wait(lambda: (directory / "got_sigterm").exists(), 10, "the handler to receive SIGTERM")
        assert alive(pid), "SIGTERM was not ignored"
    final = JobState.SUCCEEDED if case == "stdout_100mb" else JobState.FAILED
    supervisor.wait(lambda: queue.job(job_id).state is final, 30, f"the job to be {final}")
    normal = work_task.enqueue(queue, Work(str(ledger)))
    supervisor.wait(lambda: queue.job(normal).state is JobState.SUCCEEDED, 20, "a later normal job to succeed")
    assert supervisor.proc.poll() is None, "the supervisor died"

    job = queue.job(job_id)
    history = queue.history(job_id)
    if case == "corrupts_pipe":
        assert [h.event for h in history][-1] in ("failed", "lease_expired")
        assert all("protocol error: frame length" in (h.error or "") or h.event == "lease_expired" for h in history)
    else:
        assert [h.event for h in history] == events
    if error:
        assert error in (job.last_error or ""), job.last_error
        assert all(error in (h.error or "") for h in history)
    runs = read_ledger(ledger).get(job_id, [])
    figures.faults = len(runs)
    if case == "stdout_100mb":
        assert stdout.stat().st_size >= 100_000_000
        stdout.unlink()
    if case.startswith("forks_"):
        grandchildren = [int(line) for line in (directory / "grandchildren").read_text().split()]
        assert len(grandchildren) == 2

    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit(20) == 0
    if case.startswith("forks_"):
        supervisor.wait(lambda: not [p for p in grandchildren if alive(p)], 5, "the grandchildren to be gone")
    audit(
        figures,
        queue,
        [job_id, normal],
        ledger,
        supervisors=[supervisor],
        expect={job_id: final, normal: JobState.SUCCEEDED},
        grace_s=GRACE_S,
    )
    figures.seconds = time.monotonic() - began
    figures.report()
    figures.check()


def _read(path: Path) -> str | None:
    try:
        return path.read_text() or None
    except FileNotFoundError:
        return None
