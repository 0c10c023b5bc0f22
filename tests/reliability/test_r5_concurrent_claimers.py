"""R5: four OS processes claim from one queue at once.

Zero double claims (the ledger and the table agree: each job claimed once,
attempts 1) and zero "database is locked" (or any other) errors reaching the
user, on PostgreSQL (SKIP LOCKED) and on SQLite (BEGIN IMMEDIATE + busy timeout).
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import time
from pathlib import Path

from burrow.job import JobState
from burrow.queue import JobQueue
from tests.helpers import release, wait_until
from tests.reliability.audit import Figures, audit
from tests.reliability.helpers import GRACE_S, size, timeout
from tests.supervisor.helpers import REPO

PROCESSES = 4
JOBS = {"postgresql": size(60_000, 6_000), "sqlite": size(15_000, 1_500)}


@timeout(900, 120)
def test_four_claimers_never_share_a_job(database, queue: JobQueue, tmp_path: Path) -> None:
    jobs = JOBS[database.kind]
    ledger = tmp_path / "ledger"
    figures = Figures("R5 concurrent claimers", database.kind)
    began = time.monotonic()
    procs = []
    try:
        ids: list[int] = []
        for start in range(0, jobs, 5_000):
            ids += queue.enqueue_many("r5.job", [{"n": n} for n in range(start, min(jobs, start + 5_000))])
        outs = []
        for n in range(PROCESSES):
            out = tmp_path / f"claimer{n}.json"
            spec = tmp_path / f"claimer{n}.spec.json"
            spec.write_text(
                json.dumps(
                    {"dsn": database.dsn, "schema": database.schema, "task": "r5.job", "batch": 10,
                     "ready": str(tmp_path / f"claimer{n}.ready"), "ledger": str(ledger), "out": str(out)}
                )
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.reliability.claimer", str(spec)], cwd=REPO, stdin=subprocess.PIPE
                )
            )
            outs.append(out)
        ready = [tmp_path / f"claimer{n}.ready" for n in range(PROCESSES)]
        wait_until(lambda: all(r.exists() for r in ready), timeout=60, what="every claimer connected")
        claim_began = time.monotonic()
        release(procs)
        for proc in procs:
            assert proc.wait(timeout=600) == 0
        claim_s = time.monotonic() - claim_began
        results = [json.loads(out.read_text()) for out in outs]

        per_job = collections.Counter(job_id for r in results for job_id in r["claimed"])
        doubles = sum(n - 1 for n in per_job.values() if n > 1)
        errors = [e for r in results for e in r["errors"]]
        locked = [e for e in errors if "locked" in e.lower()]
        figures.notes.update(
            double_claims=doubles,
            locked_errors=len(locked),
            other_errors=len(errors) - len(locked),
            per_process=[len(r["claimed"]) for r in results],
            claims_per_s=round(jobs / claim_s),
        )
        audit(figures, queue, ids, ledger, grace_s=GRACE_S)
        figures.seconds = time.monotonic() - began
        figures.report()
        figures.check()
        assert doubles == 0, "a job was claimed twice"
        assert not errors, errors[:5]
        assert set(per_job) == set(ids)
        assert queue.backend.counts()[JobState.SUCCEEDED] == jobs
        # Every claimer got real work, and none was starved: SQLite's busy handler backs
        # a waiting process off to 100 ms sleeps, and once left one claimer with nothing.
        fair = jobs / PROCESSES
        assert min(figures.notes["per_process"]) >= fair / 5, f"a claimer was starved: {figures.notes['per_process']}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
