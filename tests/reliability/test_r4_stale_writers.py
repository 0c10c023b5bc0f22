"""R4: a process that lost its lease writes anyway, and nothing changes, every time.

Forced interleavings through the backend API, on an injected clock: A claims,
its lease runs out, the reaper requeues (or fails) the job, maybe B claims it
and maybe B finishes, extends or releases it; A's late writes (success, retry,
failure, release, lease extension) are placed anywhere after the reap. Every
one of A's writes must leave the row and its history exactly as they were and
report the job as lost. Hypothesis picks the interleavings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from burrow.job import JobState
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind
from burrow.queue import JobQueue
from tests.conftest import FakeClock
from tests.reliability.audit import Figures
from tests.reliability.helpers import size

LEASE_S = 30.0
EXAMPLES = size(300, 40)
A_OPS = ["succeed", "retry", "fail", "release", "extend"]
B_ACTIONS = ["none", "claim", "extend", "succeed", "retry", "fail", "release"]

@pytest.fixture
def clocked(database, clock: FakeClock) -> Iterator[JobQueue]:
    q = database.connect(clock=clock)
    yield q
    q.close()


def _outcome(op: str, job_id: int, owner: str, attempt: int, result: bytes = b'"stale"') -> Outcome:
    kind = {
        "succeed": OutcomeKind.SUCCEEDED,
        "retry": OutcomeKind.RETRY,
        "fail": OutcomeKind.FAILED,
        "release": OutcomeKind.RELEASED,
    }[op]
    return Outcome(
        job_id,
        owner,
        attempt,
        kind,
        result=result if kind is OutcomeKind.SUCCEEDED else None,
        error=f"stale {op}" if kind is not OutcomeKind.SUCCEEDED else None,
        retry_in_s=1.0 if kind is OutcomeKind.RETRY else 0.0,
    )


def _snapshot(q: JobQueue, job_id: int) -> tuple[object, object]:
    return q.backend.get(job_id), q.backend.history(job_id)


def test_a_writer_that_lost_its_lease_changes_nothing(database, clocked: JobQueue, clock: FakeClock) -> None:
    """Hypothesis picks the interleavings; the figures of all its examples are reported and checked."""
    figures = Figures("R4 stale writers", database.kind)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        max_retries=st.integers(0, 2),
        b_action=st.sampled_from(B_ACTIONS),
        a_ops=st.lists(st.tuples(st.sampled_from(A_OPS), st.integers(0, 2)), min_size=1, max_size=6),
        batch_with_b=st.booleans(),
    )
    def example(max_retries: int, b_action: str, a_ops: list[tuple[str, int]], batch_with_b: bool) -> None:
        started = time.monotonic()
        backend = clocked.backend
        figures.jobs += 1
        task, other = f"r4.job{figures.jobs}", f"r4.other{figures.jobs}"  # each example its own jobs
        job_id = clocked.enqueue(task, {"n": 1}, max_retries=max_retries)
        clocked.enqueue(other, {"n": 2})
        (a,) = backend.claim(ClaimRequest([task], 1, "A", LEASE_S))
        clock.advance(LEASE_S + 1)
        reaped = clocked.reap_expired()
        # Earlier examples' jobs left running under B are reaped too.
        assert [r.state for r in reaped if r.id == job_id] == [JobState.QUEUED if max_retries >= 1 else JobState.FAILED]
        clock.advance(1)  # the reaper's retry waits out the default backoff (at most 1 s after a first run)
        b = None

        def stale_writes(position: int) -> None:
            for op, where in a_ops:
                if where != position:
                    continue
                before = _snapshot(clocked, job_id)
                if op == "extend":
                    lost = backend.extend_leases([(job_id, "A", a.attempt)], LEASE_S)
                elif batch_with_b and b is not None and op != "release":
                    # A's stale outcome in the same batch as a live one for another job.
                    (o,) = backend.claim(ClaimRequest([other], 1, "C", LEASE_S)) or [None]
                    outcomes = [_outcome(op, job_id, "A", a.attempt)]
                    if o is not None:
                        outcomes.append(_outcome("succeed", o.id, "C", o.attempt))
                    lost = backend.finish(outcomes)
                    if o is not None:
                        assert backend.get(o.id).state is JobState.SUCCEEDED
                else:
                    lost = backend.finish([_outcome(op, job_id, "A", a.attempt)])
                figures.faults += 1
                assert lost == [job_id], f"A's stale {op} was not reported lost"
                if _snapshot(clocked, job_id) != before:
                    figures.lost += 1
                    raise AssertionError(f"A's stale {op} changed job {job_id}")

        stale_writes(0)
        if b_action != "none" and max_retries >= 1:
            (b,) = backend.claim(ClaimRequest([task], 1, "B", LEASE_S))
            assert b.attempt == a.attempt + 1
            stale_writes(1)
            if b_action == "extend":
                assert backend.extend_leases([(job_id, "B", b.attempt)], LEASE_S) == []
            elif b_action != "claim":
                assert backend.finish([_outcome(b_action, job_id, "B", b.attempt, b'"B"')]) == []
            stale_writes(2)
            record = backend.get(job_id)
            expected = {
                "claim": JobState.RUNNING,
                "extend": JobState.RUNNING,
                "succeed": JobState.SUCCEEDED,
                "retry": JobState.QUEUED,
                "fail": JobState.FAILED,
                "release": JobState.QUEUED,
            }[b_action]
            assert record is not None and record.state is expected
            if expected is JobState.SUCCEEDED:
                assert record.result == b'"B"' and record.owner is None
            if expected is JobState.RUNNING:
                assert record.owner == "B"
        else:
            stale_writes(1)
            stale_writes(2)
        figures.seconds += time.monotonic() - started

    example()
    figures.report()
    figures.check()
    assert figures.faults > 0, "no stale write was tried"
