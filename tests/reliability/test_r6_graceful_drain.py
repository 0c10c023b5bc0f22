"""R6: SIGTERM drains. STOPPING=1 within 100 ms, no claim after it, running jobs
finish (or are released at shutdown_timeout), and when the supervisor has exited
nothing is left ``running``; a second supervisor then finishes everything."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.reliability.app import Work, work_task
from tests.reliability.audit import Figures, audit, read_ledger
from tests.reliability.helpers import GRACE_S, NotifyListener, reliability_config, succeeded, timeout
from tests.supervisor.helpers import Launcher

RACE_S = 0.02


@timeout(300, 60)
def test_sigterm_drains_without_claiming_and_leaves_nothing_running(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    figures = Figures("R6 graceful drain", database.kind)
    notify = NotifyListener(tmp_path / "notify.sock")
    began = time.monotonic()
    try:
        config = reliability_config(tmp_path / "jobs.toml", database, workers=2, batch_size=5, shutdown_timeout="1s")
        supervisor = launcher.start(config, env={"NOTIFY_SOCKET": str(notify.path)})
        supervisor.wait(lambda: notify.times("READY", "1"), 20, "READY=1")
        # One job that outlives shutdown_timeout on its first run, then short ones.
        (long_id,) = work_task.enqueue_many(queue, [Work(str(ledger), sleep=0.05, first_run_sleep=30)])
        supervisor.wait(lambda: long_id in read_ledger(ledger), 10, "the long job to start")
        ids = [long_id] + work_task.enqueue_many(queue, [Work(str(ledger), sleep=0.05) for _ in range(40)])
        supervisor.wait(lambda: succeeded(queue) >= 5, 20, "some jobs to succeed")

        term_at = time.time()
        supervisor.send(signal.SIGTERM)
        figures.faults += 1
        stopping_at = supervisor.wait(lambda: notify.times("STOPPING", "1"), 5, "STOPPING=1")[0]
        assert supervisor.wait_exit(10) == 0
        exited_at = time.time()
        supervisor.wait(lambda: queue.backend.counts()[JobState.RUNNING] == 0, 5, "no job running")
        back_s = time.time() - exited_at

        records = [queue.job(job_id) for job_id in ids]
        claims = [r.started_at.timestamp() for r in records if r.started_at is not None]
        # A worker already past its stop check when STOP arrives finishes that one claim:
        # a race no worker can close without a handshake, so a few ms are allowed.
        claimed_after = [t for t in claims if t > stopping_at + RACE_S]
        raced = [t for t in claims if stopping_at < t <= stopping_at + RACE_S]
        long_job = queue.job(long_id)
        assert long_job.state is JobState.QUEUED and long_job.attempts == 0
        assert [h.event for h in queue.history(long_id)] == ["released"]
        unfinished = sum(r.state is JobState.QUEUED for r in records)
        figures.notes.update(
            stopping_after_ms=round((stopping_at - term_at) * 1000, 1),
            claimed_after_stopping=len(claimed_after),
            claims_racing_the_stop=len(raced),
            unfinished_at_exit=unfinished,
            back_in_queue_after_exit_s=round(back_s, 3),
        )

        second = launcher.start(config, name="second")
        second.wait(lambda: succeeded(queue) == len(ids), 60, "every job to succeed")
        figures.recover_s = back_s
        audit(figures, queue, ids, ledger, supervisors=[supervisor, second], grace_s=GRACE_S)
        figures.seconds = time.monotonic() - began
        figures.report()
        figures.check()
        assert stopping_at - term_at < 0.1, figures.notes
        assert not claimed_after, f"jobs claimed after STOPPING=1: {claimed_after}"
        assert back_s <= 1.0
        assert unfinished > 0  # the drain really left work behind, and it was all given back
    finally:
        notify.close()
