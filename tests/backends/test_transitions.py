"""Each outcome kind does to its row exactly what transitions.TRANSITIONS says, on both
backends, alone and mixed in one batch (PostgreSQL has a plain path and a CTE path)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from burrow.job import JobState
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind
from burrow.backends.transitions import TRANSITIONS, Wake, change, plain_change
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
    [first] = q.backend.claim(ClaimRequest([task], 1, "owner", LEASE_S))
    assert q.backend.finish([Outcome(job_id, "owner", first.attempt, OutcomeKind.RETRY, error="earlier error")]) == []
    [second] = q.backend.claim(ClaimRequest([task], 1, "owner", LEASE_S))
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


def test_a_mixed_batch_names_the_change_most_of_it_shares() -> None:
    """PostgreSQL writes the rows of that change with the uniform UPDATE, beside the
    general one for the rest; only a change the uniform UPDATE can write is named."""
    ok = change(Outcome(1, "o", 1, OutcomeKind.SUCCEEDED))
    retry = change(Outcome(2, "o", 1, OutcomeKind.RETRY, error="boom"))
    failed = change(Outcome(3, "o", 1, OutcomeKind.FAILED, error="boom"))
    assert plain_change([retry, ok, failed, ok]) == ok
    assert plain_change([retry, retry, failed]) is None


def test_the_table_is_complete() -> None:
    assert set(TRANSITIONS) == set(OutcomeKind)
    assert {t.wake for t in TRANSITIONS.values()} <= set(Wake)


def test_one_unwritable_outcome_does_not_keep_the_others_out(clocked: JobQueue, clock: FakeClock) -> None:
    """The batch is split until the bad outcome stands alone; it is recorded as its job's
    failure (or, if even that cannot be written, left to the lease); the rest are written."""
    jobs = [_running_job(clocked, clock, f"split.{i}") for i in range(4)]
    good = [Outcome(job_id, "owner", attempt, OutcomeKind.SUCCEEDED, result=b"ok") for job_id, attempt, _ in jobs[:3]]
    bad_id, bad_attempt, _ = jobs[3]
    if clocked.backend.dialect == "postgresql":
        bad = Outcome(bad_id, "owner", bad_attempt, OutcomeKind.FAILED, error="a NUL \x00 PostgreSQL refuses")
    else:
        bad = Outcome(bad_id, "owner", 2**70, OutcomeKind.FAILED, error="an attempt no column holds")
    lost = clocked.backend.finish([good[0], bad, good[1], good[2]])
    assert {clocked.job(o.id).state for o in good} == {JobState.SUCCEEDED}
    info = clocked.job(bad_id)
    if clocked.backend.dialect == "postgresql":
        assert lost == []
        assert info.state is JobState.FAILED
        assert info.last_error is not None and info.last_error.startswith("burrow could not record this run's outcome (failed)")
    else:
        assert lost == [bad_id] and info.state is JobState.RUNNING  # left to its lease and the reaper


def test_delays_are_cut_to_a_year_before_they_reach_sql(clocked: JobQueue, clock: FakeClock) -> None:
    from burrow.retry import MAX_DELAY_S

    jobs = [_running_job(clocked, clock, f"delay.{i}") for i in range(3)]
    delays = [1e30, float("inf"), float("nan")]
    outcomes = [
        Outcome(job_id, "owner", attempt, OutcomeKind.RETRY, error="later", retry_in_s=delay)
        for (job_id, attempt, _), delay in zip(jobs, delays)
    ]
    assert clocked.backend.finish(outcomes) == []
    run_ats = [clocked.job(job_id).run_at for job_id, _, _ in jobs]
    assert run_ats == [clock.now + dt.timedelta(seconds=MAX_DELAY_S)] * 2 + [clock.now]


@pytest.mark.parametrize("cap", [float("inf"), 366 * 24 * 3600.0 + 1, float("nan")])
def test_a_backoff_cap_past_a_year_is_refused(cap: float) -> None:
    import burrow
    from burrow.errors import BurrowError

    with pytest.raises(BurrowError, match="with_backoff needs 0 <= base <= cap <= 31622400 seconds \\(a year\\)"):
        burrow.with_backoff(60, cap)
