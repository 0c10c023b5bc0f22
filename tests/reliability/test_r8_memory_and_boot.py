"""R8: a leaking handler's worker is recycled at the memory cap; a worker that
cannot boot stops the supervisor with exit code 3 instead of a respawn loop.

Boot failure is made the way it happens in production: the database becomes
unusable for new connections while the supervisor's own, older connections
still work (SQLite: its directory moved away; PostgreSQL: the role loses LOGIN).
A worker pings the database before it says hello, so it fails its boot; the
supervisor, whose own ping still works, concludes that respawning cannot help.
"""

from __future__ import annotations

import collections
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from burrow.job import JobState
from burrow.queue import JobQueue
from burrow.supervisor.supervisor import ExitCode
from tests.conftest import POSTGRES_DSN, Database
from tests.reliability.app import Leak, Work, leak_task, work_task
from tests.reliability.audit import Figures, audit
from tests.reliability.helpers import GRACE_S, reliability_config, size, succeeded
from tests.supervisor.helpers import Launcher

LEAK_MB = 40
CAP_MB = 150


@pytest.mark.timeout(120)
def test_a_leaking_handler_gets_its_worker_recycled(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    jobs = size(30, 8)
    ledger = tmp_path / "ledger"
    figures = Figures("R8 memory cap", database.kind)
    began = time.monotonic()
    config = reliability_config(
        tmp_path / "jobs.toml", database, workers=1, batch_size=1, max_worker_memory=f"{CAP_MB}MB"
    )
    supervisor = launcher.start(config)
    supervisor.wait_ready()
    ids = leak_task.enqueue_many(queue, [Leak(str(ledger), LEAK_MB) for _ in range(jobs)])
    supervisor.wait(lambda: succeeded(queue) == jobs, 60, "every leaking job to succeed")
    per_worker = collections.Counter(leak_task.result(queue, job_id) for job_id in ids)
    recycled = supervisor.events("worker_recycling")
    figures.faults = len(recycled)
    figures.notes.update(jobs_per_worker=sorted(per_worker.values()), workers=len(per_worker))
    audit(figures, queue, ids, ledger, supervisors=[supervisor], grace_s=GRACE_S)
    figures.seconds = time.monotonic() - began
    figures.report()
    figures.check()
    assert recycled and all(f"max_worker_memory ({CAP_MB * 1_000_000})" in r["reason"] for r in recycled)
    # A worker is checked before each claim: it never holds more than a cap's worth of leaks.
    assert max(per_worker.values()) <= CAP_MB // LEAK_MB + 1
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    # Every recycled worker and the last one exited on their own, none was killed.
    exits = [r["reason"] for r in supervisor.events("worker_exited")]
    assert exits == ["worker exited with exit status 0"] * (len(recycled) + 1)


@pytest.fixture
def boot_breaker(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """(database, break_it) where break_it() makes new connections fail, old ones not."""
    kind = request.param
    if kind == "sqlite":
        directory = tmp_path / "db"
        directory.mkdir()
        database = Database("sqlite", f"sqlite:///{directory / 'jobs.db'}", None)
        yield database, lambda: directory.rename(tmp_path / "db-moved")
        return
    admin = request.getfixturevalue("postgres_admin")
    role = f"rl_boot_{secrets.token_hex(4)}"
    schema = f"rl_boot_{secrets.token_hex(4)}"
    admin.execute(f'CREATE ROLE "{role}" LOGIN')
    admin.execute(f'GRANT CREATE ON DATABASE "{psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN)["dbname"]}" TO "{role}"')
    dsn = POSTGRES_DSN.replace("postgres@", f"{role}@", 1)
    try:
        yield Database("postgresql", dsn, schema), lambda: admin.execute(f'ALTER ROLE "{role}" NOLOGIN')
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE "{role}"')


@pytest.mark.timeout(60)
@pytest.mark.parametrize("boot_breaker", ["sqlite", "postgresql"], indirect=True)
def test_a_worker_that_cannot_boot_stops_the_supervisor_with_exit_code_3(
    boot_breaker: Any, launcher: Launcher, tmp_path: Path
) -> None:
    database, break_it = boot_breaker
    ledger = tmp_path / "ledger"
    figures = Figures("R8 worker boot failure", database.kind)
    q = database.connect()
    began = time.monotonic()
    try:
        supervisor = launcher.start(reliability_config(tmp_path / "jobs.toml", database, workers=2))
        supervisor.wait_ready()
        ids = work_task.enqueue_many(q, [Work(str(ledger)) for _ in range(5)])
        supervisor.wait(lambda: succeeded(q) == 5, 20, "the first jobs")
        break_it()
        victim = supervisor.workers()[0].pid
        os.kill(victim, signal.SIGKILL)
        figures.faults = 1
        code = supervisor.wait_exit(20)
        started = supervisor.events("worker_started")
        failed = supervisor.events("worker_boot_failed")
        figures.notes.update(exit_code=code, workers_started=len(started), boot_errors=[r.get("error") for r in failed][:1])
        audit(figures, q, ids, ledger, supervisors=[supervisor], grace_s=GRACE_S)
        figures.seconds = time.monotonic() - began
        figures.report()
        figures.check()
        assert code == ExitCode.WORKER_BOOT_FAILED == 3
        assert len(started) == 3, "respawned more than once: a crash loop"
        assert any("stopping" in r.get("detail", "") for r in failed)
        assert supervisor.events("supervisor_stopped")[0]["exit_code"] == 3
        assert q.backend.counts()[JobState.RUNNING] == 0
    finally:
        q.close()
