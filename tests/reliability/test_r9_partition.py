"""R9: a network partition between one host and PostgreSQL, with a second host still connected.

Supervisor A reaches the database through a proxy; supervisor B connects
directly. While both run jobs, the proxy blackholes A's connections: every
packet is swallowed, nothing is refused, so each of A's calls returns only at
its deadline. B's reaper sees A's leases lapse and runs those jobs again. The
promise under test: A stops its in-flight runs before its leases can lapse (no
job runs in two places at once), neither supervisor dies, and once the
partition heals every job succeeds with each re-run in its history.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from burrow.config import load_config
from burrow.queue import JobQueue
from burrow.supervisor.services import guard
from tests.conftest import POSTGRES_DSN, Database
from tests.proxy import proxy_to
from tests.reliability.app import Work, work_task
from tests.reliability.audit import Figures, audit, log_time
from tests.reliability.helpers import held_by, reliability_config, size, succeeded, timeout
from tests.supervisor.helpers import Launcher

HEARTBEAT_S = 0.5
LEASE_S = 8.0  # room for the guard's margin: two heartbeats and a 3 s worst call
REAP_S = 0.5
GUARD_REASON = "database unreachable: stopped before the lease could lapse"
PG_HOST, PG_PORT = "127.0.0.1", 5432


def _ran_by(ledger: Path, pids: set[int]) -> int:
    """How many runs the ledger shows started by these worker pids."""
    if not ledger.exists():
        return 0
    return sum(1 for line in ledger.read_text().splitlines() if line.startswith("S ") and int(line.split()[3]) in pids)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@timeout(600, 150)
def test_a_partitioned_host_stops_its_runs_before_another_host_takes_them(
    database: Database, queue: JobQueue, launcher: Launcher, tmp_path: Path
) -> None:
    assert f"{PG_HOST}:{PG_PORT}" in POSTGRES_DSN
    jobs = size(600, 150)  # enough that work is left when the partition heals
    partition_s = size(20, 12)
    ledger = tmp_path / "ledger"
    figures = Figures("R9 partition", "postgresql")
    clocks = dict(batch_size=1, heartbeat_interval=f"{int(HEARTBEAT_S * 1000)}ms",
                  lease_timeout=f"{LEASE_S:g}s", reap_interval=f"{int(REAP_S * 1000)}ms")
    began = time.monotonic()
    with proxy_to((PG_HOST, PG_PORT)) as proxy:
        behind_proxy = Database("postgresql", proxy.dsn(database.dsn), database.schema)
        config_a = reliability_config(tmp_path / "a.toml", behind_proxy, workers=3, **clocks)
        guard_after_s = guard.guard_after_s(load_config(config_a, environ={}).supervisor)
        a = launcher.start(config_a, name="a")
        a.wait_ready()
        # Two jobs whose first run outlasts the partition, both in A's hands before
        # B starts: A is sure to be holding leases when the partition begins.
        long_runs = [Work(str(ledger), sleep=0.3, first_run_sleep=60) for _ in range(2)]
        ids = work_task.enqueue_many(queue, long_runs)
        a_workers = {w.pid for w in a.workers()}
        a.wait(lambda: len(held_by(queue, a_workers)) == 2, 15, "A to run both long jobs")
        b = launcher.start(reliability_config(tmp_path / "b.toml", database, workers=2, **clocks), name="b")
        b.wait_ready()
        ids += work_task.enqueue_many(queue, [Work(str(ledger), sleep=0.3) for _ in range(jobs - 2)])
        a.wait(lambda: _ran_by(ledger, a_workers) >= 4, 30, "A's third worker to run short jobs")

        cut_at = time.time()
        proxy.blackhole()
        figures.faults += 1
        guarded = a.wait(
            lambda: [r for r in a.events("worker_exited") if r["reason"] == GUARD_REASON],
            guard_after_s + 10,
            "A to stop its in-flight runs",
        )
        # B goes on alone meanwhile, and takes over what A held once the leases lapse.
        done_before = succeeded(queue)
        time.sleep(max(0.0, cut_at + partition_s - time.time()))  # the length of the fault injected
        done_during = succeeded(queue) - done_before
        assert a.proc.poll() is None, "supervisor A gave up during the partition"
        proxy.restore()
        healed_at = time.time()
        started_before = len(a.events("job_started"))
        a.wait(lambda: len(a.events("job_started")) > started_before, 30, "A to run jobs again")
        figures.recover_s = log_time(a.events("job_started")[started_before]) - healed_at
        b.wait(lambda: succeeded(queue) == jobs, 120, f"all {jobs} jobs to succeed")

        for record in guarded:
            # Stopped before the lease (extended at most a heartbeat before the cut) could lapse.
            assert log_time(record) < cut_at + LEASE_S - HEARTBEAT_S, record
        assert done_during > 0, "supervisor B made no progress during A's partition"
        assert a.proc.poll() is None and b.proc.poll() is None
        figures.notes.update(
            partition_s=partition_s,
            guard_after_s=round(guard_after_s, 2),
            workers_stopped=len(guarded),
            first_stop_after_s=round(min(log_time(r) for r in guarded) - cut_at, 2),
            succeeded_during_partition=done_during,
            expired_leases_reaped_by_b=len(b.events("job_lease_expired")),
        )
        audit(figures, queue, ids, ledger, supervisors=[a, b], grace_s=REAP_S + HEARTBEAT_S)
        figures.seconds = time.monotonic() - began
        figures.report()
        figures.check()
