"""Bad input that the existing suites did not cover yet.

Already covered elsewhere (not repeated here): malformed and unknown config keys,
bad durations and sizes (tests/unit/test_config.py); unreachable DSNs at the
command line (tests/supervisor/test_supervisor_command.py); task names with quotes, NUL or
spaces (tests/backends/test_api.py); payloads with NaN or integers beyond 64
bits, payloads over max_payload_bytes (tests/backends/test_payloads.py);
truncated, oversized and junk pipe frames, fuzzed with hypothesis
(tests/unit/test_protocol.py), and the same coming from a live worker (test_r7:
corrupts_pipe, truncated_frame).
"""

from __future__ import annotations

import datetime as dt
import time
import traceback
from pathlib import Path

import pytest

import burrow
from burrow.errors import BackendError, BurrowError
from burrow.job import JobState
from burrow.queue import JobQueue
from tests.reliability.app import Work, work_task
from tests.reliability.audit import Figures, audit
from tests.reliability.helpers import GRACE_S, LEASE_S, REAP_S, reliability_config
from tests.supervisor.helpers import Launcher

PASSWORD = "Wr0ngDsnPw"


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test",  # nothing listens there
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/no_such_database_here",
        f"postgresql://no_such_role:{PASSWORD}@127.0.0.1:5432/test",
        f"postgres://postgres:{PASSWORD}@127.0.0.1:5432/test?sslmode=bogus",
        f"mysql://root:{PASSWORD}@127.0.0.1/test",
        "sqlite:////nonexistent-dir/jobs.db",
        "sqlite:///:memory:",
        "sqlite://",
        "not a url at all",
    ],
    ids=["refused", "no-database", "no-role", "bad-option", "mysql", "sqlite-no-dir", "sqlite-memory", "sqlite-empty", "garbage"],
)
def test_wrong_dsns_fail_with_one_burrow_error_and_no_password(dsn: str) -> None:
    with pytest.raises(BurrowError) as raised:
        burrow.connect(dsn)
    assert isinstance(raised.value, BackendError), repr(raised.value)
    message = str(raised.value)
    assert "\n" not in message and message
    assert PASSWORD not in "".join(traceback.format_exception(raised.value)), "the password leaked"


@pytest.mark.timeout(60)
def test_a_task_nobody_handles_stays_queued_and_is_never_lost(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    """Jobs of a task no running app registers: never claimed, never reaped, never lost."""
    ledger = tmp_path / "ledger"
    figures = Figures("bad input: unknown task in the table", database.kind)
    began = time.monotonic()
    orphans = queue.enqueue_many("rl.nobody_handles_this", [{"n": n} for n in range(5)])
    orphans += [queue.enqueue("rl.nobody.either", b"\x00\xff not even json")]
    supervisor = launcher.start(reliability_config(tmp_path / "jobs.toml", database, workers=2))
    supervisor.wait_ready()
    known = work_task.enqueue_many(queue, [Work(str(ledger)) for _ in range(20)])
    supervisor.wait(lambda: all(queue.job(i).state is JobState.SUCCEEDED for i in known), 20, "the known jobs")
    # A lease and two reaps later, still untouched. The supervisor's process row is
    # heartbeated by the same tick that reaps: once its heartbeat is that far on,
    # the reaper has had its chances.
    until = queue.backend.now() + dt.timedelta(seconds=LEASE_S + 2 * REAP_S)
    supervisor.wait(
        lambda: any(p.role == "supervisor" and p.heartbeat_at >= until for p in queue.processes()),
        LEASE_S + 2 * REAP_S + 10,
        "a lease and two reaps to pass",
    )
    for job_id in orphans:
        job = queue.job(job_id)
        assert (job.state, job.attempts, job.started_at) == (JobState.QUEUED, 0, None)
        assert queue.history(job_id) == []
    expect = {**dict.fromkeys(orphans, JobState.QUEUED), **dict.fromkeys(known, JobState.SUCCEEDED)}
    audit(figures, queue, orphans + known, ledger, supervisors=[supervisor], expect=expect, grace_s=GRACE_S)
    figures.seconds = time.monotonic() - began
    figures.report()
    figures.check()
