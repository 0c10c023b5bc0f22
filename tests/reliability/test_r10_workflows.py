"""R10: workflows under faults. Fan-out/fan-in workflows run on two supervisors
while workers are SIGKILLed and one supervisor is killed outright: every sink is
released once, starts only after every middle step's last run ended, and runs once
(a run beyond the first only after a fault of its own, recorded in its history)."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import burrow
from burrow.job import JobState
from burrow.queue import JobQueue
from tests.reliability.app import Work, work_task
from tests.reliability.audit import Figures, audit, read_ledger
from tests.reliability.helpers import GRACE_S, kill, reliability_config, size, succeeded, timeout
from tests.supervisor.helpers import Launcher

WORKFLOWS = size(30, 8)
MIDDLE = size(30, 10)


@timeout(600, 150)
def test_workflow_sinks_run_once_under_worker_and_supervisor_kills(
    database, queue: JobQueue, launcher: Launcher, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    figures = Figures("R10 workflows", database.kind)
    rng = random.Random(10)
    began = time.monotonic()
    config = reliability_config(tmp_path / "jobs.toml", database, workers=2, batch_size=4)
    first, second = launcher.start(config, name="first"), launcher.start(config, name="second")
    first.wait_ready()
    second.wait_ready()
    sinks: dict[int, list[int]] = {}  # sink -> its middle steps
    ids: list[int] = []
    for _ in range(WORKFLOWS):
        wf = burrow.Workflow()
        root = wf.add(work_task, Work(str(ledger), sleep=0.002))
        middle = [wf.add(work_task, Work(str(ledger), sleep=0.005), after=[root]) for _ in range(MIDDLE)]
        sink = wf.add(work_task, Work(str(ledger)), after=middle)
        stored = wf.enqueue(queue)
        sinks[stored[sink]] = [stored[step] for step in middle]
        ids += stored.values()
    total = len(ids)
    for k in range(1, 4):  # worker kills spread over the run
        first.wait(lambda: succeeded(queue) >= total * k // 5, 60, f"progress before kill {k}")
        kill(rng.choice(first.wait(first.workers, 10, "a live worker")).pid, signal.SIGKILL)
        figures.faults += 1
    first.wait(lambda: succeeded(queue) >= total * 4 // 5, 60, "progress before the supervisor kill")
    doomed = {p.pid for p in first.workers()}  # the live ones: the earlier kills' exits are logged
    first.kill_group()  # the supervisor and its workers, at once: leases run out, second reaps
    killed_at = time.time()
    figures.faults += 1
    second.wait(lambda: succeeded(queue) == total, 120, f"all {total} jobs to succeed")
    audit(figures, queue, ids, ledger, supervisors=[first, second], grace_s=GRACE_S, deaths=dict.fromkeys(doomed, killed_at))
    runs = read_ledger(ledger)
    for sink_id, parent_ids in sinks.items():
        assert queue.job(sink_id).state is JobState.SUCCEEDED
        sink_runs = runs[sink_id]
        last_parent_end = max(r.end or r.start for p in parent_ids for r in runs[p])
        assert sink_runs[0].start >= last_parent_end, f"sink {sink_id} started before its parents ended"
        extra = len(sink_runs) - 1
        assert extra <= len(queue.history(sink_id)), f"sink {sink_id} ran {len(sink_runs)} times, {extra} unrecorded"
    figures.notes["workflows"], figures.notes["steps_each"] = WORKFLOWS, MIDDLE + 2
    figures.notes["sink_runs"] = sum(len(runs[s]) for s in sinks)
    figures.seconds = time.monotonic() - began
    figures.report()
    figures.check()
