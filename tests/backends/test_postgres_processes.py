"""Four OS processes drain 5,000 jobs from one PostgreSQL queue (issue 3).

Each process claims batches, writes what it got to a ledger of its own (one JSON
line per batch: the ids and their priorities, in claim order) and finishes the
batch. The ledgers must show every job claimed exactly once and every batch in
priority order.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import burrow
from burrow.job import JobState
from tests.conftest import POSTGRES_DSN
from tests.helpers import release, wait_until

pytestmark = pytest.mark.timeout(60)

JOBS = 5000
PROCESSES = 4
BATCH = 50

CLAIMER = """
import json, os, select, sys
import burrow
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind
from burrow.queue import new_owner

index, ready, ledger, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
q = burrow.connect(os.environ["BURROW_DATABASE_DSN"], schema=os.environ["BURROW_DATABASE_SCHEMA"])
owner = new_owner("claimer" + index)
open(ready, "w").close()
if not select.select([sys.stdin], [], [], 60)[0]:  # the start barrier: everyone connected, nobody claiming yet
    sys.exit("no go signal within 60 s")
with open(ledger, "w") as out:
    while batch := q.backend.claim(ClaimRequest(["crowd"], batch_size, owner, 120.0)):
        ids, priorities, attempts = [j.id for j in batch], [j.priority for j in batch], [j.attempt for j in batch]
        out.write(json.dumps({"ids": ids, "priorities": priorities, "attempts": attempts}) + "\\n")
        out.flush()  # on disk before the jobs are finished
        lost = q.backend.finish([Outcome(j.id, j.owner, j.attempt, OutcomeKind.SUCCEEDED) for j in batch])
        if lost:
            sys.exit(f"lost {lost}")
q.close()
"""


def test_four_processes_claim_5000_jobs_each_exactly_once_in_priority_order(
    postgres_schema: str, postgres_admin: psycopg.Connection[Any], tmp_path: Path
) -> None:
    rng = random.Random(3)
    by_priority: dict[int, list[int]] = defaultdict(list)
    for n in range(JOBS):
        by_priority[rng.randint(-20, 20)].append(n)
    with burrow.connect(POSTGRES_DSN, schema=postgres_schema) as q:
        job_priority = {}
        for priority, payloads in by_priority.items():
            for job_id in q.enqueue_many("crowd", payloads, priority=priority):
                job_priority[job_id] = priority
    assert len(job_priority) == JOBS

    env = {**os.environ, "BURROW_DATABASE_DSN": POSTGRES_DSN, "BURROW_DATABASE_SCHEMA": postgres_schema}
    ledgers = [tmp_path / f"ledger{i}.jsonl" for i in range(PROCESSES)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(i), str(tmp_path / f"ready{i}"), str(ledgers[i]), str(BATCH)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        wait_until(
            lambda: all((tmp_path / f"ready{i}").exists() for i in range(PROCESSES)), timeout=30, what="claimers"
        )
        release(children)
        results = [child.communicate(timeout=45) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
    for child, (_, stderr) in zip(children, results):
        assert child.returncode == 0, stderr

    claims: Counter[int] = Counter()
    busy = 0
    for ledger in ledgers:
        batches = [json.loads(line) for line in ledger.read_text().splitlines()]
        busy += bool(batches)
        for batch in batches:
            ids, priorities = batch["ids"], batch["priorities"]
            assert 0 < len(ids) <= BATCH
            assert priorities == sorted(priorities, reverse=True), f"batch out of priority order: {priorities}"
            assert priorities == [job_priority[job_id] for job_id in ids]
            assert batch["attempts"] == [1] * len(ids)
            claims.update(ids)
    assert set(claims) == set(job_priority), "some jobs were never claimed"
    twice = {job_id: n for job_id, n in claims.items() if n > 1}
    assert not twice, f"claimed more than once: {twice}"
    assert busy > 1, "only one process got work: the claims did not run concurrently"

    states = postgres_admin.execute(
        sql.SQL("SELECT state, attempts, count(*) FROM {} GROUP BY state, attempts").format(
            sql.Identifier(postgres_schema, "burrow_jobs")
        )
    ).fetchall()
    assert states == [(JobState.SUCCEEDED.value, 1, JOBS)]
