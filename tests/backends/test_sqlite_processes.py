"""Two OS processes drain one SQLite file at the same time: every job runs once.

Each process is a fresh interpreter (``python -c``) with its own connections; they
are released together (the parent closes their stdin) so that they really contend for the write
lock. Each handler appends its job id to its process's ledger with O_APPEND, so
the ledgers are the record of what ran, independent of the database.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import burrow
from burrow.job import JobState
from tests.helpers import release, wait_until

JOBS = 2000
PROCESSES = 2

CHILD = r"""
import os, select, sys
from pathlib import Path

import structlog

import burrow

dsn, ledger, ready = sys.argv[1:4]
structlog.configure(processors=[structlog.processors.JSONRenderer()], logger_factory=structlog.ReturnLoggerFactory())
q = burrow.connect(dsn)
fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def handler(data: bytes) -> None:
    os.write(fd, b"%d\n" % burrow.current_job().id)


q.handle("proc.ledger", handler, burrow.with_max_retries(0))
Path(ready).touch()
if not select.select([sys.stdin], [], [], 60)[0]:  # the start barrier: released when the parent closes our stdin
    sys.exit("no go signal within 60 s")
ran = q.drain()
os.close(fd)
q.close()
print(ran)
"""


def test_two_processes_drain_one_sqlite_file(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
    with burrow.connect(dsn) as q:
        ids = q.enqueue_many("proc.ledger", [{"n": i} for i in range(JOBS)])
    assert len(set(ids)) == JOBS

    ledgers = [tmp_path / f"ledger-{i}.txt" for i in range(PROCESSES)]
    readies = [tmp_path / f"ready-{i}" for i in range(PROCESSES)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, dsn, str(ledger), str(ready)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ledger, ready in zip(ledgers, readies)
    ]
    try:
        wait_until(
            lambda: all(r.exists() for r in readies) or any(c.poll() is not None for c in children),
            timeout=60,
            what="both processes ready",
        )
        release(children)
        outputs = [child.communicate(timeout=90) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)

    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
    ran = [int(out.split()[-1]) for out, _ in outputs]
    runs = [[int(line) for line in ledger.read_text().split()] for ledger in ledgers]

    # What each process says it ran is what its ledger holds.
    assert [len(r) for r in runs] == ran
    # Both took part: a queue drained by one process alone would prove nothing.
    assert all(n > 0 for n in ran), ran
    counts = collections.Counter(job_id for r in runs for job_id in r)
    assert sorted(counts) == sorted(ids), "a job never ran, or an unknown one did"
    assert [job_id for job_id, n in counts.items() if n > 1] == [], "a job ran twice"

    with burrow.connect(dsn) as q:
        assert q.backend.counts()[JobState.SUCCEEDED] == JOBS
        assert sum(q.backend.counts().values()) == JOBS
        assert {q.job(job_id).attempts for job_id in ids[:: JOBS // 50]} == {1}
