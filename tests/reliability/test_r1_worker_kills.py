"""R1: workers SIGKILLed at random while jobs run. Every job succeeds; a dead
worker's jobs are back within 1 s; every extra run is in the job's history."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.reliability.app import Work, work_task
from tests.reliability.audit import Figures, audit, log_time
from tests.reliability.helpers import GRACE_S, held_by, kill, reliability_config, size, succeeded, timeout
from tests.supervisor.helpers import Launcher

JOBS = size(2_000, 200)
KILLS = size(50, 5)


@timeout(600, 120)
def test_random_worker_kills_lose_nothing(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    figures = Figures("R1 worker kills", database.kind)
    rng = random.Random(1)
    began = time.monotonic()
    config = reliability_config(tmp_path / "jobs.toml", database, workers=3, batch_size=5)
    supervisor = launcher.start(config)
    supervisor.wait_ready()
    ids = work_task.enqueue_many(queue, [Work(str(ledger), sleep=0.004) for _ in range(JOBS)])
    recover: list[float] = []
    for k in range(1, KILLS + 1):
        # Spread the kills over the run: the k-th once k/(KILLS+1) of the jobs are done.
        supervisor.wait(lambda: succeeded(queue) >= JOBS * k // (KILLS + 1), 60, f"progress before kill {k}")
        victims = supervisor.wait(supervisor.workers, 10, "a live worker to kill")
        pid = rng.choice(victims).pid
        killed_at = time.time()
        kill(pid, signal.SIGKILL)
        figures.faults += 1
        exited = supervisor.wait_event("worker_exited", worker_pid=pid, timeout=10)[0]
        assert "signal 9" in exited["reason"]
        # Back means: not running under the dead worker any more (queued again, or re-run).
        supervisor.wait(lambda: not held_by(queue, {pid}), 10, f"worker {pid}'s jobs to come back")
        back_at = time.time()
        recover.append(max(log_time(exited), back_at) - killed_at)
    supervisor.wait(lambda: succeeded(queue) == JOBS, 120, f"all {JOBS} jobs to succeed")
    figures.recover_s = max(recover)
    figures.notes["recover_s_each"] = [round(r, 3) for r in recover]
    # Kills that landed between a claim's commit and its announcement.
    figures.notes["unannounced_claims_released"] = len(supervisor.events("unannounced_claims_released"))
    audit(figures, queue, ids, ledger, supervisors=[supervisor], grace_s=GRACE_S)
    figures.seconds = time.monotonic() - began
    figures.report()
    figures.check()
    assert figures.recover_s < 1.0, figures.notes
    assert queue.backend.counts()[JobState.RUNNING] == 0
    supervisor.wait(lambda: len(supervisor.workers()) == 3, 10, "the pool back at 3 workers")


def test_release_owner_gives_back_only_what_the_dead_owner_still_runs(database) -> None:
    """The backend half of "back within 1 s": claims a worker died before announcing.

    A worker killed between its claim's commit and its ``claimed`` message leaves
    jobs its supervisor never heard of; after writing the worker's reported
    outcomes, the supervisor hands its owner to release_owner. Those jobs never
    ran, so they go back with the attempt returned and no history; nothing of
    another owner, and nothing already finished, is touched.
    """
    from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind

    with database.connect() as q:
        backend = q.backend
        ids = q.enqueue_many("r1.job", [{"n": n} for n in range(6)])
        dead = backend.claim(ClaimRequest(["r1.job"], 3, "host:1:worker:dead", 30))
        alive_claims = backend.claim(ClaimRequest(["r1.job"], 2, "host:2:worker:alive", 30))
        assert backend.finish([Outcome(dead[0].id, dead[0].owner, dead[0].attempt, OutcomeKind.SUCCEEDED)]) == []
        assert sorted(backend.release_owner("host:1:worker:dead")) == sorted(j.id for j in dead[1:])
        for job in dead[1:]:
            info = q.job(job.id)
            assert (info.state, info.attempts) == (JobState.QUEUED, 0) and q.history(job.id) == []
        assert q.job(dead[0].id).state is JobState.SUCCEEDED
        assert {q.job(j.id).state for j in alive_claims} == {JobState.RUNNING}
        assert backend.release_owner("host:1:worker:dead") == []
        assert len(ids) == 6
