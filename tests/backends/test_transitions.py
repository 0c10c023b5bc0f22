"""Each outcome kind does to its row exactly what transitions.TRANSITIONS says, on both
backends, alone and mixed in one batch (PostgreSQL has a plain path and a CTE path)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from burrow.backends.base import JobState, Outcome, OutcomeKind
from burrow.backends.transitions import TRANSITIONS, Wake
from burrow.queue import JobQueue
from tests.conftest import Database, FakeClock

DELAY_S = 7.5
LEASE_S = 10.0


@pytest.fixture
def clocked(database: Database, clock: FakeClock) -> Iterator[JobQueue]:
    q = database.connect(clock=clock)
    yield q
    q.close()


def _outcome(kind: OutcomeKind, job_id: int, attempt: int, error: str | None) -> Outcome:
    result = b"done" if kind is OutcomeKind.SUCCEEDED else None
    return Outcome(job_id, "owner", attempt, kind, result=result, error=error, retry_in_s=DELAY_S)


def _check(q: JobQueue, kind: OutcomeKind, job_id: int, attempt: int, error: str | None, at: dt.datetime,
           before: dt.datetime) -> None:
    t = TRANSITIONS[kind]
    info = q.job(job_id)
    assert info.state is t.state, kind
    assert info.attempts == attempt - (1 if t.gives_back_attempt else 0), kind
    assert info.finished_at == (at if t.finishes else None), kind
    assert info.run_at == (at + dt.timedelta(seconds=DELAY_S) if t.delays else before), kind
    assert info.result == (b"done" if kind is OutcomeKind.SUCCEEDED else None), kind
    assert info.last_error == (error if error is not None else "earlier error"), kind
    assert (info.owner, info.lease_expires_at) == (None, None), kind
    events = [(h.attempt, h.event, h.error) for h in q.history(job_id) if h.attempt == attempt]
    expected_event = t.history if t.history is not None and (error is not None or not t.history_needs_error) else None
    assert events == ([] if expected_event is None else [(attempt, expected_event, error)]), kind


KINDS = list(OutcomeKind)


def _running_job(q: JobQueue, clock: FakeClock, task: str) -> tuple[int, int, dt.datetime]:
    """A job running under "owner" on its second attempt, with an earlier error, and its run_at."""
    job_id = q.enqueue(task, {})
    [first] = q.backend.claim([task], 1, "owner", LEASE_S)
    assert q.backend.finish([Outcome(job_id, "owner", first.attempt, OutcomeKind.RETRY, error="earlier error")]) == []
    [second] = q.backend.claim([task], 1, "owner", LEASE_S)
    return job_id, second.attempt, q.job(job_id).run_at


# Success and release come with or without an error; the other kinds always carry one.
CASES = [(kind, True) for kind in KINDS] + [(OutcomeKind.SUCCEEDED, False), (OutcomeKind.RELEASED, False)]


@pytest.mark.parametrize(("kind", "with_error"), CASES, ids=[f"{k.value}-{e}" for k, e in CASES])
def test_each_kind_writes_its_transition(clocked: JobQueue, clock: FakeClock, kind: OutcomeKind, with_error: bool) -> None:
    job_id, attempt, run_at = _running_job(clocked, clock, f"t.{kind.value}")
    if TRANSITIONS[kind].needs_expired_lease:
        clock.advance(LEASE_S + 1)
    clock.advance(1)
    error = f"{kind.value} error" if with_error else None
    assert clocked.backend.finish([_outcome(kind, job_id, attempt, error)]) == []
    _check(clocked, kind, job_id, attempt, error, clock.now, run_at)


def test_every_kind_in_one_batch(clocked: JobQueue, clock: FakeClock) -> None:
    jobs = {kind: _running_job(clocked, clock, f"b.{kind.value}") for kind in KINDS}
    clock.advance(LEASE_S + 1)  # every lease expired: the reapers' kinds may write too
    outcomes = [_outcome(kind, job_id, attempt, f"{kind.value} error") for kind, (job_id, attempt, _) in jobs.items()]
    assert clocked.backend.finish(outcomes) == []
    for kind, (job_id, attempt, run_at) in jobs.items():
        _check(clocked, kind, job_id, attempt, f"{kind.value} error", clock.now, run_at)


@pytest.mark.parametrize("kind", [k for k in KINDS if TRANSITIONS[k].needs_expired_lease])
def test_a_reapers_write_needs_the_lease_still_expired(clocked: JobQueue, clock: FakeClock, kind: OutcomeKind) -> None:
    job_id, attempt, _ = _running_job(clocked, clock, f"e.{kind.value}")
    assert clocked.backend.finish([_outcome(kind, job_id, attempt, "reaped")]) == [job_id]
    assert clocked.job(job_id).state is JobState.RUNNING


def test_the_table_is_complete() -> None:
    assert set(TRANSITIONS) == set(OutcomeKind)
    assert {t.wake for t in TRANSITIONS.values()} <= set(Wake)
