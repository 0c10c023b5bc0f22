"""A worker or the supervisor dies, or a job overstays: no job is lost or left running."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from typing import Any
from pathlib import Path

import psutil
import sqlalchemy as sa

from burrow.job import JobState
from burrow.backends.records import ClaimRequest
from burrow.backends.schema import jobs
from burrow.queue import JobQueue
from tests.supervisor.app import (
    Gate,
    Mark,
    announced,
    block_task,
    claim_nothing_task,
    deaf_task,
    record_task,
    slow_task,
    stuck_task,
)
from tests.conftest import POSTGRES_DSN, Database
from tests.proxy import proxy_to
from tests.reliability.audit import log_time
from tests.supervisor.helpers import Launcher, alive, write_config


def _ts(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))


def test_worker_killed_mid_job_is_retried_and_replaced(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    # A worker's first claim takes one job; once that ran quickly it claims a batch,
    # so the gated job arrives with 3 claimed behind it.
    record_task.enqueue(queue, Mark(str(ledger), "warm-up"))
    job_id = block_task.enqueue(queue, Gate(str(gates), "a"))
    behind = record_task.enqueue_many(queue, [Mark(str(ledger), str(i)) for i in range(3)])
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    supervisor.wait_ready()
    pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")
    assert pid in supervisor.worker_pids()

    os.kill(pid, signal.SIGKILL)
    exited = supervisor.wait_event("worker_exited", worker_pid=pid)[0]
    assert "signal 9" in exited["reason"]
    assert exited["jobs_settled"] == 4  # the running job and the 3 claimed behind it
    replacement = supervisor.wait_event("worker_started", count=2)[1]
    assert replacement["worker_pid"] != pid
    assert _ts(replacement) - _ts(exited) < dt.timedelta(seconds=1)

    (gates / "a.go").touch()
    supervisor.wait(lambda: queue.job(job_id).state is JobState.SUCCEEDED, 15, "the retried job to succeed")
    job = queue.job(job_id)
    assert job.attempts == 2
    assert block_task.result(queue, job_id) == "a done on attempt 2"
    history = queue.history(job_id)
    assert [(h.attempt, h.event) for h in history] == [(1, "retried")]
    assert "worker exited with signal 9" in (history[0].error or "")
    assert announced(gates, "a", 2) == replacement["worker_pid"]
    # Claimed but never started: released with the attempt given back, then run once.
    supervisor.wait(lambda: all(queue.job(i).state is JobState.SUCCEEDED for i in behind), 15, "the rest")
    assert {queue.job(i).attempts for i in behind} == {1}
    assert all(queue.history(i) == [] for i in behind)
    assert len(supervisor.workers()) == 1


def test_silent_worker_is_killed_and_its_job_retried(database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    job_id = block_task.enqueue(queue, Gate(str(gates), "a"))
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")

    os.kill(pid, signal.SIGSTOP)  # hung: no heartbeat from here on
    exited = supervisor.wait_event("worker_exited", worker_pid=pid, timeout=5)[0]
    assert "silent" in exited["reason"]
    (gates / "a.go").touch()
    supervisor.wait(lambda: queue.job(job_id).state is JobState.SUCCEEDED, 15, "the retried job to succeed")
    assert queue.job(job_id).attempts == 2
    assert "no heartbeat" in (queue.history(job_id)[0].error or "")


def test_long_job_keeps_its_lease(database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    """Heartbeats extend the lease: a job longer than lease_timeout is not reaped."""
    job_id = block_task.enqueue(queue, Gate(str(gates), "a"))
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")
    first = queue.backend.get(job_id)
    assert first is not None and first.started_at is not None and first.lease_expires_at is not None

    def extended_past_two_leases() -> bool:
        record = queue.backend.get(job_id)
        assert record is not None and record.state is JobState.RUNNING
        assert record.lease_expires_at is not None and first.started_at is not None
        return record.lease_expires_at - first.started_at > dt.timedelta(seconds=4)

    supervisor.wait(extended_past_two_leases, 10, "the lease to be extended")
    (gates / "a.go").touch()
    supervisor.wait(lambda: queue.job(job_id).state is JobState.SUCCEEDED, 15, "the job to succeed")
    assert queue.job(job_id).attempts == 1 and queue.history(job_id) == []
    assert supervisor.events("job_lease_expired") == []


def test_supervisor_killed_workers_exit_and_another_supervisor_finishes(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    blocked = [block_task.enqueue(queue, Gate(str(gates), name)) for name in ("a", "b")]
    config = write_config(tmp_path / "jobs.toml", database, workers=2, batch_size=1)
    first = launcher.start(config, name="first")
    first.wait_ready()
    first.wait(lambda: announced(gates, "a") and announced(gates, "b"), 15, "both jobs to run")
    quick = record_task.enqueue_many(queue, [Mark(str(ledger), str(i)) for i in range(20)])
    workers = first.workers()
    assert len(workers) == 2
    rows = sorted((p.role, p.pid) for p in queue.processes())
    assert rows == [("supervisor", first.pid), *sorted(("worker", w.pid) for w in workers)]

    first.proc.send_signal(signal.SIGKILL)
    assert first.wait_exit(10) == -signal.SIGKILL
    # Parent-death signal or pipe EOF: within about one heartbeat (200 ms).
    first.wait(lambda: not [w for w in workers if alive(w.pid)], 1.0, "orphaned workers to exit")
    assert {j.state for j in map(queue.job, blocked)} == {JobState.RUNNING}

    (gates / "a.go").touch()
    (gates / "b.go").touch()
    second = launcher.start(config, name="second")
    second.wait_ready()
    everything = blocked + quick
    second.wait(
        lambda: all(queue.job(i).state is JobState.SUCCEEDED for i in everything), 20, "every job to succeed"
    )
    assert queue.backend.counts()[JobState.RUNNING] == 0
    for job_id in blocked:
        assert queue.job(job_id).attempts == 2
        assert [h.event for h in queue.history(job_id)] == ["lease_expired"]
    reaped = {r["job_id"] for r in second.events("job_lease_expired")}
    assert set(blocked) <= reaped
    # The dead supervisor's row is forgotten once it is stale; the live one's stays.
    second.wait_event("process_presumed_dead")
    second.wait(
        lambda: {p.pid for p in queue.processes()} == {second.pid, *second.worker_pids()}, 5, "only the live rows"
    )
    assert sorted(line.split()[0] for line in ledger.read_text().splitlines()) == sorted(str(i) for i in range(20))

    second.send(signal.SIGTERM)
    assert second.wait_exit() == 0


def test_a_ctrl_c_drain_says_it_is_waiting_and_how_to_stop_at_once(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    """Ctrl-C with a job running: at once a line saying what the drain waits for and that
    a second Ctrl-C stops at once, then one every 2 s while it waits, never 30 s of silence."""
    block_task.enqueue(queue, Gate(str(gates), "a"))
    config = write_config(tmp_path / "jobs.toml", database, workers=1, batch_size=1, shutdown_timeout="30s")
    supervisor = launcher.start(config)
    supervisor.wait_ready()
    supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")
    sent = time.monotonic()
    supervisor.send(signal.SIGINT)
    [draining] = supervisor.wait_event("supervisor_draining", timeout=2)
    assert draining["running_jobs"] == 1
    assert draining["detail"] == (
        "no new jobs; waiting up to 30s for 1 running job to finish; press Ctrl-C again (a second SIGINT) to stop at once"
    )
    [still] = supervisor.wait_event("supervisor_still_draining", timeout=4)
    assert time.monotonic() - sent < 4 and still["running_jobs"] == 1 and "Ctrl-C again stops at once" in still["detail"]
    supervisor.send(signal.SIGINT)
    assert supervisor.wait_exit() == 130


def test_sigterm_drain_lets_running_jobs_finish(database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    blocked = [block_task.enqueue(queue, Gate(str(gates), name)) for name in ("a", "b")]
    config = write_config(tmp_path / "jobs.toml", database, workers=2, batch_size=1, shutdown_timeout="30s")
    supervisor = launcher.start(config)
    supervisor.wait_ready()
    supervisor.wait(lambda: announced(gates, "a") and announced(gates, "b"), 15, "both jobs to run")
    waiting = record_task.enqueue_many(queue, [Mark(str(ledger), str(i)) for i in range(5)])

    supervisor.send(signal.SIGTERM)
    supervisor.wait_event("supervisor_draining")
    (gates / "a.go").touch()
    (gates / "b.go").touch()
    assert supervisor.wait_exit() == 0

    for job_id in blocked:
        job = queue.job(job_id)
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    # Draining means no new claims: the jobs enqueued later are untouched.
    assert {(queue.job(i).state, queue.job(i).attempts) for i in waiting} == {(JobState.QUEUED, 0)}
    assert not ledger.exists()
    exits = [r["reason"] for r in supervisor.events("worker_exited")]
    assert exits == ["worker exited with exit status 0"] * 2  # both workers, each cleanly
    assert supervisor.events("supervisor_stopped")[0]["exit_code"] == 0
    assert queue.processes() == []  # a clean exit removes its row


def test_sigterm_shutdown_timeout_releases_the_unfinished_job(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    job_id = block_task.enqueue(queue, Gate(str(gates), "a"))
    config = write_config(tmp_path / "jobs.toml", database, workers=1, shutdown_timeout="500ms")
    supervisor = launcher.start(config)
    supervisor.wait_ready()
    pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")

    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    assert not alive(pid)
    exited = supervisor.events("worker_exited", worker_pid=pid)[0]
    assert exited["reason"] == "shutdown_timeout reached"
    job = queue.job(job_id)
    assert job.state is JobState.QUEUED  # released, not failed
    assert job.attempts == 0  # the interrupted attempt is given back
    assert [h.event for h in queue.history(job_id)] == ["released"]  # the interrupted run is recorded


def test_job_timeout_kills_and_replaces_the_worker(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    job_id = slow_task.enqueue(queue, 10.0)
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    supervisor.wait_ready()
    supervisor.wait(lambda: queue.job(job_id).state is JobState.FAILED, 15, "the job to fail")

    job = queue.job(job_id)
    assert job.attempts == 2  # max_retries 1: two runs
    assert "timeout" in (job.last_error or "")
    assert [(h.attempt, h.event) for h in queue.history(job_id)] == [(1, "retried"), (2, "failed")]
    killed = [r for r in supervisor.events("worker_exited") if "timeout" in r["reason"]]
    assert len(killed) == 2
    supervisor.wait_event("worker_started", count=3)
    supervisor.wait(lambda: len(supervisor.workers()) == 1, 5, "one live worker")
    assert not any(alive(r["worker_pid"]) for r in killed)


TIMEOUT_REASON = "timeout: the job ran longer than 0.5s"


def test_a_timed_out_job_records_where_it_was_stuck(database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    job_id = stuck_task.enqueue(queue, Gate(str(gates), "a"))
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")
    supervisor.wait(lambda: queue.job(job_id).state is JobState.FAILED, 15, "the job to fail")

    error = queue.job(job_id).last_error or ""
    lines = error.splitlines()
    assert lines[0] == f"{TIMEOUT_REASON} while running the job"
    # faulthandler's dump follows, the thread that ran the job first.
    assert lines[1].startswith("Current thread")
    assert "in stuck_in_a_known_place" in lines[2]
    assert [(h.attempt, h.event, h.error) for h in queue.history(job_id)] == [(1, "failed", error)]
    exited = supervisor.wait_event("worker_exited", worker_pid=pid)[0]
    assert exited["reason"] == TIMEOUT_REASON
    assert supervisor.events("worker_killed") == []  # SIGTERM was enough
    replacement = supervisor.wait_event("worker_started", count=2)[1]
    supervisor.wait(lambda: [w.pid for w in supervisor.workers()] == [replacement["worker_pid"]], 5, "the new worker alone")


def test_a_handler_deaf_to_sigterm_is_killed_after_the_grace(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    job_id = deaf_task.enqueue(queue, Gate(str(gates), "a"))
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")

    killed = supervisor.wait_event("worker_killed", worker_pid=pid)[0]
    assert killed["reason"] == TIMEOUT_REASON
    exited = supervisor.wait_event("worker_exited", worker_pid=pid)[0]
    assert exited["reason"] == TIMEOUT_REASON
    started = supervisor.events("job_started", job_id=job_id, attempt=1)[0]
    # SIGTERM at the 0.5 s timeout, SIGKILL a 1 s grace later (the loop looks every 0.25 s).
    assert 1.4 < (_ts(killed) - _ts(started)).total_seconds() < 5
    assert not alive(pid)

    supervisor.wait(lambda: queue.job(job_id).state is JobState.SUCCEEDED, 15, "the retried job to succeed")
    assert deaf_task.result(queue, job_id) == "a done on attempt 2"
    # No stack: SIG_IGN took the place of faulthandler's handler.
    expected = f"{TIMEOUT_REASON} while running the job"
    assert [(h.attempt, h.event, h.error) for h in queue.history(job_id)] == [(1, "retried", expected)]


def test_second_sigint_stops_at_once(database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    job_id = block_task.enqueue(queue, Gate(str(gates), "a"))
    config = write_config(tmp_path / "jobs.toml", database, workers=1, shutdown_timeout="30s")
    supervisor = launcher.start(config)
    supervisor.wait_ready()
    pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")

    supervisor.send(signal.SIGINT)
    supervisor.wait_event("supervisor_draining")
    supervisor.send(signal.SIGINT)
    assert supervisor.wait_exit(5) == 130
    assert not alive(pid)
    job = queue.job(job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)


def test_ctrl_c_on_the_process_group_drains(database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches every process of the group; workers leave it to the supervisor."""
    job_id = block_task.enqueue(queue, Gate(str(gates), "a"))
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=2, shutdown_timeout="30s"))
    supervisor.wait_ready()
    pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")

    os.killpg(supervisor.pid, signal.SIGINT)
    supervisor.wait_event("supervisor_draining")
    assert alive(pid)
    (gates / "a.go").touch()
    assert supervisor.wait_exit() == 0
    job = queue.job(job_id)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)


def test_a_killed_workers_unique_key_is_not_leaked(database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    """A job that dies with its worker and has no retries left fails, and its key is free."""
    job_id = queue.enqueue("sv.block", block_task.encode(Gate(str(gates), "u")), max_retries=0, unique_key="only-one")
    assert queue.enqueue("sv.block", block_task.encode(Gate(str(gates), "u2")), unique_key="only-one") == job_id
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    supervisor.wait_ready()
    pid = supervisor.wait(lambda: announced(gates, "u"), 15, "the job to run")
    os.kill(pid, signal.SIGKILL)
    supervisor.wait(lambda: queue.job(job_id).state is JobState.FAILED, 15, "the job to fail")
    again = queue.enqueue("sv.block", block_task.encode(Gate(str(gates), "u3")), unique_key="only-one")
    assert again != job_id
    assert queue.job(again).state in (JobState.QUEUED, JobState.RUNNING)


def _heartbeat_of(q, pid: int) -> dt.datetime | None:
    """When the process row of ``pid`` was last heartbeated (the supervisor's: every tick)."""
    return next((p.heartbeat_at for p in q.processes() if p.pid == pid), None)


def test_a_job_whose_lease_is_lost_is_stopped_at_once(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path, clock
) -> None:
    """Another supervisor whose clock says the lease ran out reaps the job and claims it:
    the worker still running it is stopped within a heartbeat or two and replaced, and
    its supervisor writes nothing for that attempt (the job belongs to the new owner)."""
    ledger = tmp_path / "ledger"
    other = database.connect(clock=clock)  # clock: 2030, long past any lease taken now
    try:
        # A quick first job, so that the worker's next claim takes the gated job and the
        # two behind it in one batch (see test_worker_killed_mid_job_is_retried_and_replaced).
        warm_up = record_task.enqueue(queue, Mark(str(ledger), "warm-up"))
        job_id = block_task.enqueue(queue, Gate(str(gates), "a"))
        behind = record_task.enqueue_many(queue, [Mark(str(ledger), str(i)) for i in range(2)])
        supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
        supervisor.wait_ready()
        pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")
        supervisor.wait(lambda: queue.job(warm_up).state is JobState.SUCCEEDED, 5, "the warm-up job's outcome")
        assert all(queue.job(i).state is JobState.RUNNING for i in behind)  # claimed with it, not started

        reaped = {r.id: r.state for r in other.reap_expired()}
        assert reaped == {i: JobState.QUEUED for i in (job_id, *behind)}
        clock.advance(3600)  # past the reaper's backoff
        (taken,) = other.backend.claim(ClaimRequest(["sv.block"], 1, "another-supervisor", 3600.0))
        assert (taken.id, taken.attempt) == (job_id, 2)
        ids = [job_id, *behind]
        before = {i: (queue.backend.get(i), queue.history(i)) for i in ids}

        claimed_at = time.time()

        # Stopped the way a timed-out worker is: SIGTERM first, which dumps its stack.
        exited = supervisor.wait_event("worker_exited", worker_pid=pid)[0]
        assert log_time(exited) - claimed_at < 1.0  # the next lease extension (every 200 ms) found it
        assert exited["reason"] == f"lease lost: job {job_id} belongs to another process now"
        assert "in block" in exited["stack"]
        assert supervisor.events("worker_killed") == []  # SIGTERM was enough
        assert exited["jobs_settled"] == 0  # all three were taken over: nothing to write
        replacement = supervisor.wait_event("worker_started", count=2)[1]
        supervisor.wait(lambda: [w.pid for w in supervisor.workers()] == [replacement["worker_pid"]], 5, "the new worker")
        assert not alive(pid)

        # Several heartbeats later: logged once, and nothing written for the old attempt.
        exited_at = _heartbeat_of(queue, supervisor.pid)
        assert exited_at is not None
        supervisor.wait(
            lambda: (_heartbeat_of(queue, supervisor.pid) or exited_at) - exited_at > dt.timedelta(seconds=1),
            10,
            "five more heartbeats",
        )
        lost = sorted((r["job_id"], r["task"], r["attempt"], r["worker_pid"]) for r in supervisor.events("job_lease_lost"))
        assert lost == [(job_id, "sv.block", 1, pid), *((i, "sv.record", 1, pid) for i in behind)]  # once each
        assert {i: (queue.backend.get(i), queue.history(i)) for i in ids} == before
        assert queue.job(job_id).owner == "another-supervisor"
        assert [h.event for h in queue.history(job_id)] == ["lease_expired"]
        assert supervisor.events("job_retried") == supervisor.events("job_failed") == []
        assert supervisor.proc.poll() is None
    finally:
        other.close()


def test_a_lost_job_claimed_behind_the_running_one_is_stopped_when_it_starts(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    """Only the second job of a batch is taken away (by hand, as nothing in burrow does
    that alone): the first finishes as usual, the worker is stopped as the second starts."""
    ledger = tmp_path / "ledger"
    warm_up = record_task.enqueue(queue, Mark(str(ledger), "warm-up"))
    first = block_task.enqueue(queue, Gate(str(gates), "a"))
    second = block_task.enqueue(queue, Gate(str(gates), "b"))
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    supervisor.wait_ready()
    pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the first job to run")
    supervisor.wait(lambda: queue.job(warm_up).state is JobState.SUCCEEDED, 5, "the warm-up job's outcome")
    assert queue.job(second).owner == queue.job(first).owner  # one batch

    backend: Any = queue.backend  # its engine, to break the fence by hand
    with backend._engine.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == second).values(owner="someone-else"))
    before = (queue.backend.get(second), queue.history(second))
    supervisor.wait_event("job_lease_lost", job_id=second, worker_pid=pid)
    assert alive(pid)  # the job it runs is still its own
    (gates / "a.go").touch()

    exited = supervisor.wait_event("worker_exited", worker_pid=pid)[0]
    assert exited["reason"] == f"lease lost: job {second} belongs to another process now"
    supervisor.wait(lambda: queue.job(first).state is JobState.SUCCEEDED, 5, "the first job's outcome")
    assert (queue.job(first).attempts, queue.history(first)) == (1, [])
    supervisor.wait_event("worker_started", count=2)
    assert (queue.backend.get(second), queue.history(second)) == before
    assert len(supervisor.events("job_lease_lost")) == 1
    (gates / "b.go").touch()


GUARD_REASON = "database unreachable: stopped before the lease could lapse"


def test_a_job_stopped_by_the_outage_guard_is_released_not_charged(
    postgres_schema: str, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    """The database goes away under a job on its last attempt (max_retries=0): the
    guard stops it before its lease can lapse, and once the database is back the
    job is queued again with that attempt given back, and re-run; never failed."""
    host, port = "127.0.0.1", 5432
    assert f"{host}:{port}" in POSTGRES_DSN
    q = Database("postgresql", POSTGRES_DSN, postgres_schema).connect()  # the test's own way in
    try:
        with proxy_to((host, port)) as proxy:
            behind_proxy = Database("postgresql", proxy.dsn(POSTGRES_DSN), postgres_schema)
            config = write_config(
                tmp_path / "jobs.toml", behind_proxy, workers=1, lease_timeout="3s", heartbeat_interval="500ms"
            )
            job_id = q.enqueue("sv.block", block_task.encode(Gate(str(gates), "a")), max_retries=0)
            supervisor = launcher.start(config)
            supervisor.wait_ready()
            pid = supervisor.wait(lambda: announced(gates, "a"), 15, "the job to run")
            (gates / "a.1.pid").unlink()  # so that its next run announces itself afresh

            proxy.cut()
            exited = supervisor.wait_event("worker_exited", worker_pid=pid, timeout=10)[0]
            assert exited["reason"] == GUARD_REASON
            assert q.job(job_id).state is JobState.RUNNING  # nothing can be written yet
            proxy.restore()

            rerun = supervisor.wait(lambda: announced(gates, "a"), 30, "the job to run again")
            assert rerun != pid
            job = q.job(job_id)
            assert (job.state, job.attempts) == (JobState.RUNNING, 1)  # the stopped run's attempt given back
            [released] = q.history(job_id)
            assert (released.attempt, released.event) == (1, "released")
            assert released.error == f"released: {GUARD_REASON}"
            (gates / "a.go").touch()
            supervisor.wait(lambda: q.job(job_id).state is JobState.SUCCEEDED, 15, "the re-run to succeed")
            assert q.job(job_id).attempts == 1
            assert supervisor.events("job_failed") == [] and supervisor.events("job_lease_expired") == []
            supervisor.send(signal.SIGTERM)
            assert supervisor.wait_exit() == 0
    finally:
        q.close()


def test_a_claimed_frame_with_no_jobs_is_a_protocol_error(
    database, queue: JobQueue, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    """Sent by a worker with nothing in flight, the supervisor died of an IndexError
    looking for the running job; now the worker is replaced and the supervisor goes on."""
    job_id = claim_nothing_task.enqueue(queue, Gate(str(gates), "c"))
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=1))
    supervisor.wait_ready()
    pid = supervisor.wait(lambda: announced(gates, "c"), 15, "the job to run")
    [error] = supervisor.wait_event("worker_protocol_error", worker_pid=pid)
    assert error["error"] == "a claimed frame must name at least one job"
    exited = supervisor.wait_event("worker_exited", worker_pid=pid)[0]
    assert exited["reason"] == "protocol error: a claimed frame must name at least one job"
    supervisor.wait(lambda: queue.job(job_id).state is JobState.SUCCEEDED, 5, "the job's reported outcome")
    assert claim_nothing_task.result(queue, job_id) == "reported"  # the frame before the bad one counts
    assert supervisor.wait_event("worker_started", count=2)[1]["worker_pid"] != pid
    assert supervisor.proc.poll() is None
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
