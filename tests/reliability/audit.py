"""The end-of-scenario audit, and the figures each scenario reports.

The ledger (written by the handlers in ``app.py``) says which runs really
happened; burrow's tables say what burrow believes. The audit holds one against
the other:

- every job enqueued is accounted for: in the state the scenario expects;
- no job is ``running`` with a lease that expired more than reap interval +
  heartbeat interval ago (the reaper should have had it by then): "stuck";
- every run beyond the first is recorded: for each attempt number, the ledger's
  runs with that number are at most the history entries with that number, plus
  one for the run that succeeded (a release gives the attempt number back, so a
  number can legitimately be used twice, each time with a history entry);
  JobInfo.attempts is at least the highest attempt in the ledger;
- no two runs of one job overlap in time (a run ends at its ``E`` line, or when
  its worker exited as the supervisor logged it, or as the test saw it die);
- no zombie or orphaned worker: every worker any supervisor started is either
  gone or a live child of a live supervisor.

Figures are printed (``pytest -s``) and appended as JSON lines to the file named
by BURROW_RELIABILITY_REPORT, if set.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from burrow.job import JobState
from burrow.backends.sql.backend import SQLBackend
from burrow.queue import JobQueue
from tests.supervisor.helpers import SupervisorProcess, alive

REPORT_ENV = "BURROW_RELIABILITY_REPORT"


@dataclass(frozen=True)
class Run:
    job_id: int
    attempt: int
    pid: int
    start: float
    end: float | None = None


def read_ledger(path: Path) -> dict[int, list[Run]]:
    """Runs per job id, in start order; an ``E`` line closes the open run of its (job, attempt, pid)."""
    runs: dict[int, list[Run]] = collections.defaultdict(list)
    if not path.exists():
        return runs
    open_runs: dict[tuple[int, int, int], int] = {}
    for line in path.read_text().splitlines():
        kind, job, attempt, pid, at = line.split()
        key = (int(job), int(attempt), int(pid))
        if kind == "S":
            open_runs[key] = len(runs[key[0]])
            runs[key[0]].append(Run(key[0], key[1], key[2], float(at)))
        else:
            index = open_runs.pop(key)
            run = runs[key[0]][index]
            runs[key[0]][index] = Run(run.job_id, run.attempt, run.pid, run.start, float(at))
    return runs


def log_time(record: Mapping[str, Any]) -> float:
    """A log line's timestamp as unix time."""
    return dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def worker_exits(supervisors: Iterable[SupervisorProcess]) -> dict[int, float]:
    return {r["worker_pid"]: log_time(r) for s in supervisors for r in s.events("worker_exited")}


@dataclass
class Figures:
    scenario: str
    backend: str
    jobs: int = 0
    faults: int = 0
    lost: int = 0
    stuck: int = 0
    unrecorded_reruns: int = 0
    reruns: int = 0
    overlapping_runs: int = 0
    orphans: int = 0
    zombies: int = 0
    recover_s: float | None = None  # the worst time to recover of the scenario's faults
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def report(self) -> None:
        data = asdict(self)
        if self.recover_s is not None:
            data["recover_s"] = round(self.recover_s, 3)
        data["seconds"] = round(self.seconds, 1)
        line = json.dumps(data, sort_keys=False)
        print(f"\nRELIABILITY {line}")
        path = os.environ.get(REPORT_ENV)
        if path:
            with open(path, "a") as f:
                f.write(line + "\n")

    def check(self) -> None:
        """The promise: nothing lost, stuck, run unrecorded, run twice at once, or left behind."""
        bad = {
            k: getattr(self, k)
            for k in ("lost", "stuck", "unrecorded_reruns", "overlapping_runs", "orphans", "zombies")
            if getattr(self, k)
        }
        assert not bad, f"{self.scenario}[{self.backend}] audit failed: {bad}; notes: {self.notes}"


def audit(
    figures: Figures,
    q: JobQueue,
    ids: Sequence[int],
    ledger: Path,
    *,
    supervisors: Sequence[SupervisorProcess] = (),
    expect: JobState | Mapping[int, JobState | set[JobState]] = JobState.SUCCEEDED,
    grace_s: float,
    deaths: Mapping[int, float] | None = None,
) -> Figures:
    """Fill ``figures`` from the database, the ledger and the process table.

    ``grace_s`` is reap interval + heartbeat interval: how long past its lease a
    job may stay ``running`` before it counts as stuck. ``deaths`` gives the
    time of death of workers no supervisor logged (their supervisor was killed).
    """
    runs = read_ledger(ledger)
    ends = {**worker_exits(supervisors), **(deaths or {})}
    backend = q.backend
    assert isinstance(backend, SQLBackend)  # the audit reads the tables directly
    now = backend.now()
    rows, histories = _tables(backend)
    figures.jobs = len(ids)
    problems: list[str] = []
    for job_id in ids:
        wanted = expect if isinstance(expect, JobState) else expect[job_id]
        wanted_set = {wanted} if isinstance(wanted, JobState) else set(wanted)
        row = rows.get(job_id)
        if row is None:
            figures.lost += 1
            problems.append(f"job {job_id} is gone")
            continue
        state, attempts, lease_expires_at = JobState(row.state), row.attempts, row.lease_expires_at
        job_runs = runs.get(job_id, [])
        history = histories.get(job_id, [])
        if len(job_runs) > 1 or history:
            # Through the public API, as a user would look: JobInfo and q.history().
            info = q.job(job_id)
            state, attempts = info.state, info.attempts
            history = [(h.attempt, h.event) for h in q.history(job_id)]
        if state not in wanted_set:
            figures.lost += 1
            problems.append(f"job {job_id} is {state}, expected {sorted(wanted_set)}")
        if (
            state is JobState.RUNNING
            and lease_expires_at is not None
            and lease_expires_at < now - dt.timedelta(seconds=grace_s)
        ):
            figures.stuck += 1
            problems.append(f"job {job_id} running, lease expired at {lease_expires_at}")
        if state is JobState.SUCCEEDED and not job_runs:
            figures.lost += 1
            problems.append(f"job {job_id} succeeded without a run in the ledger")
        recorded = collections.Counter(attempt for attempt, _ in history)
        if state is JobState.SUCCEEDED:
            recorded[attempts] += 1
        ran = collections.Counter(r.attempt for r in job_runs)
        unrecorded = sum(max(0, n - recorded[attempt]) for attempt, n in ran.items())
        if job_runs and max(ran) > attempts:
            unrecorded = max(unrecorded, 1)
        if unrecorded:
            problems.append(f"job {job_id}: runs {sorted(ran.items())}, history {history}")
        figures.unrecorded_reruns += unrecorded
        figures.reruns += max(0, len(job_runs) - 1)
        for before, after in zip(job_runs, job_runs[1:]):
            if before.pid == after.pid:
                continue  # one worker runs one job at a time
            end = before.end if before.end is not None else ends.get(before.pid)
            if end is not None and after.start < end:
                figures.overlapping_runs += 1
                problems.append(f"job {job_id}: run by {after.pid} began while {before.pid}'s was going on")
    figures.orphans, figures.zombies = leftovers(supervisors)
    if problems:
        figures.notes["problems"] = problems[:10]
    return figures


def _tables(backend: SQLBackend) -> tuple[dict[int, Any], dict[int, list[tuple[int, str]]]]:
    """Every job row and history row, in two reads (the per-job API is used where it matters)."""
    import sqlalchemy as sa

    from burrow.backends.schema import history, jobs

    with backend._engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(jobs.c.id, jobs.c.state, jobs.c.attempts, jobs.c.lease_expires_at))}
        histories: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
        for h in conn.execute(sa.select(history.c.job_id, history.c.attempt, history.c.event).order_by(history.c.id)):
            histories[h.job_id].append((h.attempt, h.event))
    return rows, histories


def leftovers(supervisors: Sequence[SupervisorProcess]) -> tuple[int, int]:
    """(orphaned workers, unreaped workers) across these supervisors."""
    live_parents = {s.pid for s in supervisors if s.proc.poll() is None}
    orphans = 0
    for pid in {pid for s in supervisors for pid in s.worker_pids()}:
        if not alive(pid):
            continue
        try:
            parent = psutil.Process(pid).ppid()
        except psutil.NoSuchProcess:
            continue
        if parent not in live_parents:
            orphans += 1
    zombies = sum(len(s.zombies()) for s in supervisors if s.proc.poll() is None)
    return orphans, zombies
