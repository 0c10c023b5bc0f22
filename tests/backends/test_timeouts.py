"""Every database call is bounded, also when the network stops answering (PostgreSQL
behind a proxy that blackholes or mutes the connection), and a claim whose answer
was lost leaves no job stranded under an owner nobody knows."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from burrow.backends import backend_for
from burrow.job import JobState
from burrow.backends.records import ClaimRequest
from burrow.backends.deadline import Timeouts
from burrow.errors import BackendError
from burrow.queue import JobQueue
from tests.conftest import POSTGRES_DSN
from tests.helpers import wait_until
from tests.proxy import Proxy, proxy_to

T = TypeVar("T")
CALL_S = 1.0


@pytest.fixture
def proxied(postgres_schema: str) -> Iterator[tuple[Proxy, JobQueue]]:
    with proxy_to(("127.0.0.1", 5432)) as proxy:
        backend = backend_for(proxy.dsn(POSTGRES_DSN), schema=postgres_schema, timeouts=Timeouts(1.0, CALL_S, CALL_S))
        backend.migrate()
        q = JobQueue(backend, lease_s=30)
        try:
            yield proxy, q
        finally:
            proxy.restore()
            q.close()


def test_a_call_into_a_blackhole_fails_within_its_deadline(proxied: tuple[Proxy, JobQueue]) -> None:
    proxy, q = proxied
    job_id = q.enqueue("t.deadline", {})
    proxy.blackhole()
    for read in (lambda: q.job(job_id), lambda: q.backend.claim(ClaimRequest(["t.deadline"], 1, "o", 30))):
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"no answer within 1s|not tried|connection timeout expired"):
            read()
        assert time.monotonic() - started < CALL_S + 1.5
    proxy.restore()
    assert _answered(lambda: q.job(job_id)).state is JobState.QUEUED


def _answered(call: Callable[[], T]) -> T:
    """``call()`` once the backend tries again: after a call ran out its deadline, the
    next ones fail at once for a deadline's length (its quiet window)."""
    answer = wait_until(lambda: _or_none(call), timeout=10, interval=0.05, what="the database to answer again")
    assert answer is not None
    return answer


def _or_none(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except BackendError:
        return None


def test_a_claim_whose_answer_was_lost_gives_its_jobs_back(proxied: tuple[Proxy, JobQueue]) -> None:
    """The claim commits, its answer never comes: the next claim first releases what that
    one took (its own owner), attempt given back, so a job with no retries still runs."""
    proxy, q = proxied
    job_id = q.enqueue("t.orphan", {}, max_retries=0)
    q.claim(["t.nothing"], 1)  # opens the held connection before the answers stop
    proxy.mute()
    with pytest.raises(BackendError):
        q.claim(["t.orphan"], 1)
    proxy.restore()
    stranded = _answered(lambda: q.job(job_id))
    assert (stranded.state, stranded.attempts) == (JobState.RUNNING, 1)  # committed, unseen
    [job] = q.claim(["t.orphan"], 1)
    assert (job.id, job.attempt) == (job_id, 1)  # released first, then claimed as a first run
    assert q.history(job_id) == []
