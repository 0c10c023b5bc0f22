"""Security: secrets stay out of logs and ``ps``, files are private, SQL is bound,
the systemd unit is hardened, and WATCHDOG=1 means "the database answers"."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import secrets
import shutil
import signal
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.conftest import Database
from tests.reliability.app import Secret, Work, secret_task, work_task
from tests.reliability.helpers import (
    HEARTBEAT_S,
    NotifyListener,
    PrivateCluster,
    reliability_config,
    succeeded,
)
from tests.supervisor.helpers import REPO, Launcher

PASSWORD = "S3cretPw"
BACKENDS_DIR = REPO / "burrow" / "backends"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_failing_run_logs_neither_the_password_nor_the_payload(
    database, queue: JobQueue, launcher: Launcher, tmp_path: Path, postgres_admin: Any
) -> None:
    """PostgreSQL here trusts any password, so a DSN with one works; it must never show."""
    app_name = f"rl_sec_{secrets.token_hex(4)}"
    dsn = database.dsn.replace("postgres@", f"postgres:{PASSWORD}@", 1) + f"?application_name={app_name}"
    secret = Database("postgresql", dsn, database.schema)
    canary = f"CARD-{secrets.token_hex(8)}"
    ledger = tmp_path / "ledger"
    supervisor = launcher.start(reliability_config(tmp_path / "jobs.toml", secret, workers=2, batch_size=1))
    supervisor.wait_ready()
    for process in [psutil.Process(supervisor.pid), *supervisor.workers()]:
        assert PASSWORD not in " ".join(process.cmdline()), "the password shows in ps"
    ids = secret_task.enqueue_many(queue, [Secret(str(ledger), canary, fail=i % 2 == 0) for i in range(10)])
    ids.append(queue.enqueue("rl.leak", {"ledger": str(ledger), "megabytes": canary}))  # does not decode
    ids.append(queue.enqueue("rl.secret", {"ledger": str(ledger), "card": canary, "fail": canary}))
    # Break things while it runs: a worker killed mid-job, every connection cut.
    supervisor.wait(lambda: succeeded(queue) >= 1, 20, "a job to succeed")
    os.kill(supervisor.workers()[0].pid, signal.SIGKILL)
    postgres_admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app_name,)
    )
    supervisor.wait(
        lambda: all(queue.job(i).state in (JobState.SUCCEEDED, JobState.FAILED) for i in ids), 30, "every job to end"
    )
    assert sum(queue.job(i).state is JobState.FAILED for i in ids) >= 5
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    log = supervisor.log_path.read_text()
    assert "job_failed" in log and "worker_exited" in log  # it really was a failing run
    assert PASSWORD not in log
    assert canary not in log


@pytest.mark.timeout(60)
def test_a_new_sqlite_database_and_its_wal_and_shm_are_0600(launcher: Launcher, tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    database = Database("sqlite", f"sqlite:///{path}", None)
    previous = os.umask(0o022)  # the supervisor inherits it: a permissive one
    try:
        supervisor = launcher.start(reliability_config(tmp_path / "jobs.toml", database, workers=1))
    finally:
        os.umask(previous)
    supervisor.wait_ready()
    with database.connect() as q:
        job_id = work_task.enqueue(q, Work(str(tmp_path / "ledger")))
        supervisor.wait(lambda: q.job(job_id).state is JobState.SUCCEEDED, 20, "a job to run")
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o600" for f in files}
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0


# -- SQL is bound -------------------------------------------------------------------

# The only SQL built from Python values: a PRAGMA whose value is a module constant.
ALLOWED_INTERPOLATION = {("sqlite.py", "f'PRAGMA busy_timeout = {int(timeouts.call_s * 1000)}'")}
SQL_SINKS = {"text", "exec_driver_sql", "execute", "executescript", "literal_column"}


def _interpolated(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return not (isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        # psycopg's sql.SQL(...).format(sql.Identifier(...)) quotes; str.format does not.
        return not (isinstance(node.func.value, ast.Call) and ast.unparse(node.func.value.func) in ("sql.SQL", "SQL"))
    return False


def test_backends_build_no_sql_from_strings() -> None:
    found = []
    for path in sorted(BACKENDS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in SQL_SINKS and _interpolated(node.args[0]):
                found.append((path.name, ast.unparse(node.args[0])))
    assert set(found) <= ALLOWED_INTERPOLATION, f"SQL built by interpolation: {sorted(set(found) - ALLOWED_INTERPOLATION)}"
    assert found, "the scan found not even the PRAGMA: it is looking in the wrong place"


def _wire_trace(pgconn: Any, enqueue: Callable[[], object]) -> str:
    """What libpq sent while ``enqueue`` ran: the protocol trace, without timestamps."""
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        try:
            enqueue()
        finally:
            pgconn.untrace()
        trace.seek(0)
        return trace.read()


def _assert_notify_is_bound(wire: str, task: str, channel: str) -> None:
    [text] = re.findall(r'^F\t\d+\tParse\t "\w*" "(.*?)" \d', wire, re.MULTILINE | re.DOTALL)
    assert re.search(r"pg_notify\(\$\d+, \$\d+\)", text), text
    assert task not in text and "burrow:" not in text
    [bind] = [line for line in wire.splitlines() if line.startswith("F\t") and "\tBind\t" in line]
    assert f"'{task}'" in bind and f"'{channel}'" in bind


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_notify_sends_channel_and_payload_as_bound_parameters(database, queue: JobQueue) -> None:
    """Task names and the channel reach pg_notify as parameters, never in the SQL text:
    on the held connection (a plain enqueue) and on a caller's connection (a
    transactional enqueue), both seen in libpq's protocol trace."""
    channel = f"burrow:{database.schema}"
    queue.backend.ping()
    backend: Any = queue.backend  # the held and the base connection, for libpq traces
    held = backend._held.driver_connection.pgconn
    _assert_notify_is_bound(_wire_trace(held, lambda: queue.enqueue("sec.notify_me", {"x": 1})), "sec.notify_me", channel)
    with backend._base_engine.begin() as conn:
        callers = conn.connection.driver_connection.pgconn
        wire = _wire_trace(callers, lambda: queue.enqueue("sec.notify_in_tx", {"x": 2}, conn=conn))
    _assert_notify_is_bound(wire, "sec.notify_in_tx", channel)


# -- systemd ------------------------------------------------------------------------


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is not installed: apt-get install systemd (CI needs it)", pytrace=False)
    return found


def test_the_unit_passes_systemd_analyze_verify() -> None:
    done = subprocess.run(
        [_systemd_analyze(), "verify", str(REPO / "conf" / "burrow.service")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_unit_scores_ok_or_better_in_systemd_analyze_security() -> None:
    done = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", str(REPO / "conf" / "burrow.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for burrow\.service: ([\d.]+) (\w+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    exposure, rating = float(match[1]), match[2]
    print(f"\nsystemd-analyze security: {exposure} {rating}")
    assert rating in ("SAFE", "OK"), f"exposure {exposure} {rating}"


# -- WATCHDOG=1 only after a database heartbeat ---------------------------------------


def _watchdog_gap(notify: NotifyListener, start: float, end: float) -> list[float]:
    return [t for t in notify.times("WATCHDOG", "1") if start <= t <= end]


def _wait_for_watchdog_silence(supervisor: Any, notify: NotifyListener, while_: str) -> None:
    """Until no WATCHDOG=1 has come for five heartbeat intervals (bounded): the outage
    has lasted long enough for the assertions below to have a window to look at."""
    supervisor.wait(
        lambda: time.time() - max(notify.times("WATCHDOG", "1"), default=0.0) >= 5 * HEARTBEAT_S,
        10,
        f"WATCHDOG=1 to stop while {while_}",
    )


@pytest.mark.timeout(90)
def test_watchdog_stops_while_postgres_is_down(
    private_cluster: PrivateCluster, private_database, launcher: Launcher, tmp_path: Path
) -> None:
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        config = reliability_config(tmp_path / "jobs.toml", private_database, workers=1)
        supervisor = launcher.start(config, env={"NOTIFY_SOCKET": str(notify.path)})
        supervisor.wait(lambda: len(notify.times("WATCHDOG", "1")) >= 3, 20, "WATCHDOG=1 every tick")
        stopped_at = time.time()
        private_cluster.stop()
        _wait_for_watchdog_silence(supervisor, notify, "the database was down")
        restarted_at = time.time()
        private_cluster.start()
        supervisor.wait(lambda: _watchdog_gap(notify, restarted_at, time.time() + 1), 10, "WATCHDOG=1 again")
        # One tick already under way when the server stopped may still succeed.
        during = _watchdog_gap(notify, stopped_at + 2 * HEARTBEAT_S, restarted_at)
        assert not during, f"WATCHDOG=1 sent while the database was down: {during}"
        assert supervisor.events("heartbeat_failed")
        supervisor.send(signal.SIGTERM)
        assert supervisor.wait_exit() == 0
    finally:
        notify.close()


@pytest.mark.timeout(90)
def test_watchdog_stops_while_sqlite_is_locked_by_another_process(launcher: Launcher, tmp_path: Path) -> None:
    """SQLite cannot go down; it can stop answering writes (another process holds the lock)."""
    database = Database("sqlite", f"sqlite:///{tmp_path / 'jobs.db'}", None)
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        config = reliability_config(tmp_path / "jobs.toml", database, workers=1)
        supervisor = launcher.start(config, env={"NOTIFY_SOCKET": str(notify.path)})
        supervisor.wait(lambda: len(notify.times("WATCHDOG", "1")) >= 3, 20, "WATCHDOG=1 every tick")
        with contextlib.closing(sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)) as conn:
            conn.execute("BEGIN EXCLUSIVE")
            locked_at = time.time()
            _wait_for_watchdog_silence(supervisor, notify, "the database was locked")
            unlocked_at = time.time()
            conn.execute("ROLLBACK")
        supervisor.wait(lambda: _watchdog_gap(notify, unlocked_at, time.time() + 1), 10, "WATCHDOG=1 again")
        during = _watchdog_gap(notify, locked_at + 2 * HEARTBEAT_S, unlocked_at)
        assert not during, f"WATCHDOG=1 sent while the database was locked: {during}"
        supervisor.send(signal.SIGTERM)
        assert supervisor.wait_exit() == 0
    finally:
        notify.close()

