"""R2: a supervisor SIGKILLed while another runs on the same database.

Its workers are gone within one heartbeat interval (parent-death signal, pipe
EOF); the jobs it held come back once their lease expires and the surviving
supervisor's reaper sees it (heartbeat + lease + reap at worst), and re-run with
``lease_expired`` in their history. On SQLite the two supervisors share a file.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from burrow.queue import JobQueue
from tests.reliability.app import Work, work_task
from tests.reliability.audit import Figures, audit
from tests.reliability.helpers import (
    GRACE_S,
    HEARTBEAT_S,
    LEASE_S,
    REAP_S,
    held_by,
    reliability_config,
    size,
    succeeded,
    timeout,
)
from tests.supervisor.helpers import Launcher, alive

JOBS = size(1_000, 200)
KILLS = size(5, 2)
WORST_CASE_S = HEARTBEAT_S + LEASE_S + REAP_S


@timeout(600, 120)
def test_supervisor_kills_orphan_nothing_and_lose_nothing(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    figures = Figures("R2 supervisor kills", database.kind)
    began = time.monotonic()
    config = reliability_config(tmp_path / "jobs.toml", database, workers=2, batch_size=5)
    running = [launcher.start(config, name="s0"), launcher.start(config, name="s1")]
    for supervisor in running:
        supervisor.wait_ready()
    ids: list[int] = []
    deaths: dict[int, float] = {}
    orphan_s: list[float] = []
    recover: list[float] = []
    for k in range(1, KILLS + 1):
        # A wave of jobs per kill, so that each victim dies holding some.
        ids += work_task.enqueue_many(queue, [Work(str(ledger), sleep=0.01) for _ in range(JOBS // KILLS)])
        victim = running[0]
        workers = {w.pid for w in victim.wait(victim.workers, 10, "the victim's workers")}
        victim.wait(lambda: held_by(queue, workers), 30, f"the victim to hold jobs before kill {k}")
        killed_at = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        figures.faults += 1
        victim.wait(lambda: not [p for p in workers if alive(p)], 5, "the victim's workers to exit")
        gone_at = time.time()
        orphan_s.append(gone_at - killed_at)
        deaths.update(dict.fromkeys(workers, gone_at))
        assert victim.wait_exit(5) == -signal.SIGKILL
        held = held_by(queue, workers)
        victim.wait(lambda: not held_by(queue, workers), 10, "the victim's jobs to come back")
        recover.append(time.time() - killed_at)
        figures.notes.setdefault("held_at_kill", []).append(len(held))
        replacement = launcher.start(config, name=f"s{k + 1}")
        running = [running[1], replacement]
        replacement.wait_ready()
    running[0].wait(lambda: succeeded(queue) == len(ids), 120, f"all {len(ids)} jobs to succeed")
    figures.recover_s = max(recover)
    figures.notes["workers_gone_s"] = round(max(orphan_s), 3)
    figures.notes["recover_s_each"] = [round(r, 3) for r in recover]
    audit(figures, queue, ids, ledger, supervisors=launcher.started, grace_s=GRACE_S, deaths=deaths)
    figures.seconds = time.monotonic() - began
    figures.report()
    figures.check()
    # The parent-death signal is immediate; a heartbeat interval is the promise.
    assert max(orphan_s) <= HEARTBEAT_S + 0.1, orphan_s
    assert figures.recover_s <= WORST_CASE_S + 0.5, recover
    expired = {r["job_id"] for s in launcher.started for r in s.events("job_lease_expired")}
    assert len(expired) >= max(figures.notes["held_at_kill"])
