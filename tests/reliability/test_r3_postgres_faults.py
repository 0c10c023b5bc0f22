"""R3: PostgreSQL goes away under a running supervisor (a private cluster the test owns).

Short faults (terminated backends, a restart of about a second) run nothing
twice: outcomes wait in the supervisor's memory and are written when the
database is back. A long outage (longer than the lease) makes the supervisor
kill in-flight work before its leases could lapse, so a job is never running
in two places; it keeps running and every job finishes afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from burrow.job import JobState
from tests.reliability.app import Work, work_task
from tests.reliability.audit import Figures, audit, log_time
from tests.reliability.helpers import PrivateCluster, held_by, reliability_config, size, succeeded, timeout
from tests.supervisor.helpers import Launcher

HEARTBEAT_S = 0.25
REAP_S = 0.25


def _config(tmp_path: Path, database, lease_s: float, **extra):
    return reliability_config(
        tmp_path / "jobs.toml",
        database,
        heartbeat_interval=f"{int(HEARTBEAT_S * 1000)}ms",
        lease_timeout=f"{lease_s:g}s",
        reap_interval=f"{int(REAP_S * 1000)}ms",
        **extra,
    )


def _progress_after(q, supervisor, at_least: int, timeout_s: float = 30) -> float:
    """Wait for ``at_least`` more successes than now; the time it took."""
    start = time.time()
    target = succeeded(q) + at_least
    supervisor.wait(lambda: succeeded(q) >= target, timeout_s, f"{target} jobs to succeed")
    return time.time() - start


def _cpu_over(pid: int, seconds: float) -> float:
    """CPU seconds the process used in the next ``seconds`` (idle: a few ms)."""
    process = psutil.Process(pid)
    before = sum(process.cpu_times()[:2])
    time.sleep(seconds)
    return round(sum(process.cpu_times()[:2]) - before, 3)


@timeout(600, 120)
def test_terminated_backends_and_a_restart_run_nothing_twice(
    private_cluster: PrivateCluster, private_database, launcher: Launcher, tmp_path: Path
) -> None:
    jobs = size(1_000, 150)
    ledger = tmp_path / "ledger"
    figures = Figures("R3 terminate x3 + restart", "postgresql")
    q = private_database.connect()
    began = time.monotonic()
    try:
        supervisor = launcher.start(_config(tmp_path, private_database, 4.0, workers=2, batch_size=5))
        supervisor.wait_ready()
        ids = work_task.enqueue_many(q, [Work(str(ledger), sleep=0.01) for _ in range(jobs)])
        recover: list[float] = []
        faults = ["terminate", "terminate", "restart", "terminate"]
        for k, fault in enumerate(faults, start=1):
            supervisor.wait(lambda: succeeded(q) >= jobs * k // (len(faults) + 1), 60, f"progress before fault {k}")
            if fault == "terminate":
                figures.notes.setdefault("terminated_connections", []).append(private_cluster.terminate_all())
            else:
                down = time.monotonic()
                failures = len(supervisor.events("heartbeat_failed"))
                private_cluster.stop()
                # Down until the supervisor has felt it, not for a guessed time.
                supervisor.wait(lambda: len(supervisor.events("heartbeat_failed")) > failures, 10, "the outage to be seen")
                private_cluster.start()
                figures.notes["restart_down_s"] = round(time.monotonic() - down, 2)
            figures.faults += 1
            recover.append(_progress_after(q, supervisor, 5))
        supervisor.wait(lambda: succeeded(q) == jobs, 120, f"all {jobs} jobs to succeed")
        figures.notes["idle_cpu_s"] = idle_cpu = _cpu_over(supervisor.pid, 1.0)
        assert idle_cpu < 0.3, "the supervisor spins after losing its LISTEN connection"
        figures.recover_s = max(recover)
        figures.notes["recover_s_each"] = [round(r, 3) for r in recover]
        audit(figures, q, ids, ledger, supervisors=[supervisor], grace_s=REAP_S + HEARTBEAT_S)
        figures.seconds = time.monotonic() - began
        figures.report()
        figures.check()
        assert figures.reruns == 0, "an outage shorter than the lease re-ran a job"
        assert supervisor.proc.poll() is None
    finally:
        q.close()


@timeout(600, 120)
def test_an_outage_longer_than_the_lease_stops_work_before_the_lease_lapses(
    private_cluster: PrivateCluster, private_database, launcher: Launcher, tmp_path: Path
) -> None:
    lease_s = 3.0
    jobs = size(200, 40)
    ledger = tmp_path / "ledger"
    figures = Figures("R3 outage > lease", "postgresql")
    q = private_database.connect()
    began = time.monotonic()
    try:
        supervisor = launcher.start(_config(tmp_path, private_database, lease_s, workers=2, batch_size=1))
        supervisor.wait_ready()
        # Two jobs whose first run outlasts the outage, then short ones.
        ids = work_task.enqueue_many(q, [Work(str(ledger), sleep=0.05, first_run_sleep=30) for _ in range(2)])
        ids += work_task.enqueue_many(q, [Work(str(ledger), sleep=0.05) for _ in range(jobs - 2)])
        supervisor.wait(lambda: len(held_by(q, {w.pid for w in supervisor.workers()})) == 2, 10, "both long jobs in flight")

        stopped_at = time.time()
        private_cluster.stop()
        figures.faults += 1
        outage_s = lease_s + 1.5
        # The guard must act before the lease lapses: wait for it, then let the outage
        # run past the lease (its length is the fault being injected, not a guess).
        supervisor.wait(
            lambda: any("database unreachable" in r["reason"] for r in supervisor.events("worker_exited")),
            lease_s + 5,
            "the workers running jobs to be stopped",
        )
        time.sleep(max(0.0, stopped_at + outage_s - time.time()))
        assert supervisor.proc.poll() is None, "the supervisor gave up during the outage"
        private_cluster.start()
        started_at = time.time()
        recover = _progress_after(q, supervisor, 2)
        supervisor.wait(lambda: succeeded(q) == jobs, 120, f"all {jobs} jobs to succeed")

        guarded = [r for r in supervisor.events("worker_exited") if "database unreachable" in r["reason"]]
        assert guarded, "no in-flight work was stopped during the outage"
        for record in guarded:
            # Killed before the lease (extended at most a heartbeat before the outage) could lapse.
            assert log_time(record) < stopped_at + lease_s - HEARTBEAT_S, record
        figures.recover_s = recover
        figures.notes.update(
            outage_s=round(started_at - stopped_at, 2),
            workers_stopped=len(guarded),
            first_stop_after_s=round(min(log_time(r) for r in guarded) - stopped_at, 2),
            boot_failures_retried=sum("retrying" in r.get("detail", "") for r in supervisor.events("worker_boot_failed")),
        )
        audit(figures, q, ids, ledger, supervisors=[supervisor], grace_s=REAP_S + HEARTBEAT_S)
        figures.seconds = time.monotonic() - began
        figures.report()
        figures.check()
        assert figures.reruns >= 1  # the stopped runs ran again, and their history says so
        assert supervisor.proc.poll() is None
        assert q.backend.counts()[JobState.RUNNING] == 0
    finally:
        q.close()
