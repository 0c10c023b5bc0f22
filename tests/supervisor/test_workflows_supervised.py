"""A workflow through the real supervisor: 1 -> 1,000 -> 1. The sink starts once,
after every middle step, and sees all 1,000 results (both backends)."""

from __future__ import annotations

from pathlib import Path

import burrow
from burrow.job import JobState
from burrow.queue import JobQueue
from tests.supervisor.app import Numbers, gather_task, square_task
from tests.supervisor.helpers import Launcher, write_config

MIDDLE = 1000


def test_a_fan_out_and_in_of_a_thousand(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    supervisor = launcher.start(write_config(tmp_path / "jobs.toml", database, workers=2))
    supervisor.wait_ready()
    wf = burrow.Workflow("fan")
    root = wf.add(square_task, Numbers(1, 0))
    middle = [wf.add(square_task, Numbers(i, 0), after=[root]) for i in range(MIDDLE)]
    sink = wf.add(gather_task, Numbers(0, 0), after=middle)
    ids = wf.enqueue(queue)
    assert gather_task.wait(queue, ids[sink], timeout=60) == {"parents": MIDDLE, "sum": sum(i * i for i in range(MIDDLE))}
    done = queue.job(ids[sink])
    assert done.attempts == 1 and len(supervisor.events("job_started", job_id=ids[sink])) == 1
    last_parent = max(queue.job(ids[m]).finished_at for m in middle)  # type: ignore[type-var]
    assert done.started_at is not None and last_parent is not None and done.started_at >= last_parent
    assert {j.state for j in queue.workflow("fan")} == {JobState.SUCCEEDED}
