"""The backend against a plain-dict model, one random operation sequence at a time.

Hypothesis drives enqueue, scheduled enqueue, dequeue, batch claims by several
owners, completions, failures (through the real retry policy), releases, lease
extensions, clock jumps and reaps, each on a fresh database whose clock is a
FakeClock. After every step the whole table must equal the model: no job lost
or invented, none claimed while another owner's attempt holds it, claims in
priority order, attempts never above max_retries + 1.

BURROW_HYPOTHESIS_EXAMPLES sets the number of examples (default 25).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import burrow
from burrow.backends.records import ClaimRequest, ClaimedJob, Outcome, OutcomeKind
from burrow.job import JobState
from burrow.execution import RetryDefaults, failure_outcome
from burrow.options import JobConfig
from tests.conftest import BACKENDS, POSTGRES_DSN, FakeClock

TASKS = ["sm.a", "sm.b", "sm.c"]
OWNERS = ["owner-1", "owner-2", "owner-3"]
LEASE_S = 30.0
CONFIG = JobConfig(backoff_base_s=1.0, backoff_max_s=8.0)
EXAMPLES = int(os.environ.get("BURROW_HYPOTHESIS_EXAMPLES", "25"))

SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class ModelJob:
    task: str
    priority: int
    max_retries: int
    run_at: dt.datetime
    state: JobState = JobState.QUEUED
    attempts: int = 0
    owner: str | None = None
    lease_expires_at: dt.datetime | None = None


class QueueMachine(RuleBasedStateMachine):
    # Set by machine_for(): hypothesis builds the machine from its class, without arguments.
    kind: ClassVar[str]
    admin: ClassVar[psycopg.Connection[Any]]

    def __init__(self) -> None:
        super().__init__()
        kind = self.kind
        self.clock = FakeClock()
        self.tmp: str | None = None
        self.schema: str | None = None
        if kind == "sqlite":
            self.tmp = tempfile.mkdtemp(prefix="burrow-sm-")
            dsn = f"sqlite:///{self.tmp}/jobs.db"
        else:
            self.schema = f"burrow_sm_{secrets.token_hex(6)}"
            dsn = POSTGRES_DSN
        self.q = burrow.connect(dsn, schema=self.schema, clock=self.clock)
        self.backend = self.q.backend
        self.model: dict[int, ModelJob] = {}
        # Every claim this test was handed, including ones whose lease was since lost.
        self.claims: list[ClaimedJob] = []

    def teardown(self) -> None:
        self.q.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if self.schema is not None:
            self.admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    # -- helpers ------------------------------------------------------------------

    @property
    def now(self) -> dt.datetime:
        return self.clock.now

    def holds(self, job: ClaimedJob) -> bool:
        """Whether the fence (id, owner, attempt) of ``job`` still holds in the model."""
        m = self.model[job.id]
        return m.state is JobState.RUNNING and m.owner == job.owner and m.attempts == job.attempt

    def _add(self, ids: list[int], task: str, priority: int, max_retries: int, run_at: dt.datetime) -> None:
        assert not set(ids) & set(self.model), "enqueue reused an id"
        assert ids == sorted(ids)
        for job_id in ids:
            self.model[job_id] = ModelJob(task, priority, max_retries, run_at)

    def _finish(self, job: ClaimedJob, outcome: Outcome, *, keep: bool = False) -> bool:
        """Send ``outcome`` for ``job``; True if its fence held (so the model must change).

        ``keep`` leaves the claim in play, as a late duplicate message would: once
        the job is claimed again under the same attempt number, only the owner
        tells the two apart.
        """
        lost = self.backend.finish([outcome])
        held = self.holds(job)
        assert lost == ([] if held else [job.id])
        if not keep:
            self.claims.remove(job)
        return held

    # -- rules --------------------------------------------------------------------

    @initialize(
        jobs=st.lists(
            st.tuples(st.sampled_from(TASKS), st.integers(-2, 2), st.integers(0, 2), st.sampled_from([0, 0, 0, 10])),
            min_size=2,
            max_size=12,
        )
    )
    def populate(self, jobs: list[tuple[str, int, int, int]]) -> None:
        """Start with work queued, so that claims have something to choose among."""
        for task, priority, max_retries, delay_s in jobs:
            run_at = self.now + dt.timedelta(seconds=delay_s)
            job_id = self.q.enqueue(task, {}, priority=priority, max_retries=max_retries, run_at=run_at)
            self._add([job_id], task, priority, max_retries, run_at)

    @rule(
        task=st.sampled_from(TASKS),
        priority=st.integers(-2, 2),
        max_retries=st.integers(0, 2),
        n=st.integers(1, 3),
    )
    def enqueue(self, task: str, priority: int, max_retries: int, n: int) -> None:
        ids = self.q.enqueue_many(task, [{"i": i} for i in range(n)], priority=priority, max_retries=max_retries)
        assert len(ids) == n
        self._add(ids, task, priority, max_retries, self.now)

    @rule(task=st.sampled_from(TASKS), delay_s=st.integers(1, 90))
    def enqueue_at(self, task: str, delay_s: int) -> None:
        """A future job, with the defaults of a task this queue has no handler for."""
        run_at = self.now + dt.timedelta(seconds=delay_s)
        job_id = self.q.enqueue_at(task, {"at": delay_s}, run_at)
        self._add([job_id], task, JobConfig().priority, JobConfig().max_retries, run_at)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def dequeue(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.model)), label="job")
        m = self.model[job_id]
        expected = m.state is JobState.QUEUED
        assert self.q.dequeue(job_id) is expected
        if expected:
            m.state = JobState.CANCELLED

    @rule(tasks=st.sets(st.sampled_from(TASKS), min_size=1), limit=st.integers(1, 5), owner=st.sampled_from(OWNERS))
    def claim(self, tasks: set[str], limit: int, owner: str) -> None:
        due = sorted(
            (
                (-m.priority, m.run_at, job_id)
                for job_id, m in self.model.items()
                if m.state is JobState.QUEUED and m.run_at <= self.now and m.task in tasks
            ),
        )
        expected = [job_id for _, _, job_id in due[:limit]]
        claimed = self.backend.claim(ClaimRequest(sorted(tasks), limit, owner, LEASE_S))
        # In claim order: priority desc, then run_at, then id, among due queued jobs.
        assert [job.id for job in claimed] == expected
        for job in claimed:
            m = self.model[job.id]
            assert m.state is JobState.QUEUED, f"job {job.id} claimed while {m.state}"
            assert (job.task, job.priority, job.max_retries, job.owner) == (m.task, m.priority, m.max_retries, owner)
            assert job.attempt == m.attempts + 1
            m.state, m.owner, m.attempts = JobState.RUNNING, owner, job.attempt
            m.lease_expires_at = self.now + dt.timedelta(seconds=LEASE_S)
            # A kept (released) claim by the same owner at the same attempt is this very fence.
            self.claims = [c for c in self.claims if (c.id, c.owner, c.attempt) != (job.id, job.owner, job.attempt)]
            self.claims.append(job)

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self.claims), label="claim")
        result = f"r{job.id}.{job.attempt}".encode()
        if self._finish(job, Outcome(job.id, job.owner, job.attempt, OutcomeKind.SUCCEEDED, result=result)):
            m = self.model[job.id]
            m.state, m.owner, m.lease_expires_at = JobState.SUCCEEDED, None, None
            record = self.backend.get(job.id)
            assert record is not None and record.result == result and record.finished_at == self.now

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), permanent=st.booleans())
    def fail(self, data: st.DataObject, permanent: bool) -> None:
        job = data.draw(st.sampled_from(self.claims), label="claim")
        outcome = failure_outcome(job, CONFIG, RetryDefaults(), f"error {job.id}.{job.attempt}", permanent=permanent)
        gives_up = permanent or job.attempt > job.max_retries
        assert outcome.kind is (OutcomeKind.FAILED if gives_up else OutcomeKind.RETRY)
        if not self._finish(job, outcome):
            return
        m = self.model[job.id]
        m.owner, m.lease_expires_at = None, None
        if outcome.kind is OutcomeKind.FAILED:
            m.state = JobState.FAILED
            return
        m.state = JobState.QUEUED
        record = self.backend.get(job.id)
        assert record is not None
        expected = self.now + dt.timedelta(seconds=outcome.retry_in_s)
        assert abs(record.run_at - expected) <= dt.timedelta(milliseconds=1)
        assert record.run_at > self.now
        m.run_at = record.run_at  # the database's rounding of the delay decides ties

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self.claims), label="claim")
        if self._finish(job, Outcome(job.id, job.owner, job.attempt, OutcomeKind.RELEASED), keep=True):
            m = self.model[job.id]
            m.state, m.owner, m.lease_expires_at = JobState.QUEUED, None, None
            m.attempts -= 1

    @precondition(lambda self: self.claims)
    @rule(data=st.data())
    def extend(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self.claims), label="claim")
        lost = self.backend.extend_leases([(job.id, job.owner, job.attempt)], LEASE_S)
        if self.holds(job):
            assert lost == []
            self.model[job.id].lease_expires_at = self.now + dt.timedelta(seconds=LEASE_S)
        else:
            assert lost == [job.id]

    @rule(seconds=st.sampled_from([0.25, 1, 5, 20, 31, 60]), then_reap=st.booleans())
    def advance(self, seconds: float, then_reap: bool) -> None:
        """Move the clock (past every lease at 31 s and more), and maybe reap."""
        self.clock.advance(seconds)
        if then_reap:
            self._reap()

    def _reap(self) -> None:
        expected = {}
        for job_id, m in self.model.items():
            if m.state is JobState.RUNNING and m.lease_expires_at is not None and m.lease_expires_at < self.now:
                expected[job_id] = JobState.QUEUED if m.attempts <= m.max_retries else JobState.FAILED
        reaped = self.q.reap_expired()
        assert {r.id: r.state for r in reaped} == expected
        assert len(reaped) == len(expected)
        for r in reaped:
            m = self.model[r.id]
            assert (r.task, r.attempt) == (m.task, m.attempts)
            m.state, m.owner, m.lease_expires_at = r.state, None, None
            if r.state is JobState.QUEUED:
                # Retried with the default backoff (1 s doubling), jittered into [0.5, 1] of it.
                delay_s = min(3600.0, 2.0 ** (m.attempts - 1))
                run_at = self.q.job(r.id).run_at
                assert self.now + dt.timedelta(seconds=delay_s / 2) <= run_at <= self.now + dt.timedelta(seconds=delay_s)
                m.run_at = run_at

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def table_matches_model(self) -> None:
        counts = self.backend.counts()
        assert sum(counts.values()) == len(self.model), "a job appeared or vanished"
        expected_counts = dict.fromkeys(JobState, 0)
        for job_id, m in self.model.items():
            expected_counts[m.state] += 1
            record = self.backend.get(job_id)
            assert record is not None, f"job {job_id} lost"
            assert (record.task, record.state, record.priority, record.max_retries, record.attempts, record.owner) == (
                m.task,
                m.state,
                m.priority,
                m.max_retries,
                m.attempts,
                m.owner,
            ), f"job {job_id}"
            assert record.attempts <= record.max_retries + 1
            if m.state is JobState.QUEUED:
                assert record.run_at == m.run_at, f"job {job_id}"
            if m.state is JobState.RUNNING:
                assert record.lease_expires_at == m.lease_expires_at, f"job {job_id}"
            else:
                assert record.lease_expires_at is None
        assert counts == expected_counts

    @invariant()
    def one_live_claim_per_running_job(self) -> None:
        live = [job.id for job in self.claims if self.holds(job)]
        assert len(live) == len(set(live))
        running = {job_id for job_id, m in self.model.items() if m.state is JobState.RUNNING}
        assert set(live) == running


def machine_for(kind: str, admin: psycopg.Connection[Any]) -> type[QueueMachine]:
    """QueueMachine bound to one backend, as the class hypothesis instantiates."""
    return type(f"QueueMachine_{kind}", (QueueMachine,), {"kind": kind, "admin": admin})


@pytest.mark.parametrize("kind", BACKENDS)
def test_backend_matches_model(kind: str, postgres_admin: psycopg.Connection[Any]) -> None:
    run_state_machine_as_test(machine_for(kind, postgres_admin), settings=SETTINGS)
