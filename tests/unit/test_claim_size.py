"""How many jobs a worker claims next, from the pace of its last batch."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from burrow.supervisor.worker import MOST_AHEAD, next_ahead_factor, next_claim_size


def test_short_jobs_get_the_whole_batch() -> None:
    assert next_claim_size(100, 0.002, 100) == 100  # 20 us a job
    assert next_claim_size(3, 0.0001, 100) == 100  # a partial batch of quick jobs


def test_slow_jobs_are_claimed_one_at_a_time() -> None:
    assert next_claim_size(1, 0.2, 100) == 1
    assert next_claim_size(1, 5.0, 100) == 1


def test_the_claim_covers_about_a_tenth_of_a_second_of_work() -> None:
    assert next_claim_size(10, 0.1, 100) == 10  # 10 ms a job
    assert next_claim_size(1, 0.025, 100) == 4


def test_nothing_measured_claims_the_batch_size() -> None:
    assert next_claim_size(0, 0.0, 50) == 50


@given(st.integers(0, 10_000), st.floats(0, 3600, allow_nan=False), st.integers(1, 10_000))
def test_always_between_one_and_batch_size(ran: int, elapsed_s: float, batch_size: int) -> None:
    assert 1 <= next_claim_size(ran, elapsed_s, batch_size) <= batch_size


def test_a_wait_for_the_batch_claimed_ahead_grows_the_next_one_to_cover_it() -> None:
    # The batch ran 2 ms, then the loop waited 6 ms more for the claim: 4 times as much.
    assert next_ahead_factor(1.0, 0.002, 0.006) == 4.0
    assert next_ahead_factor(1.0, 0.002, 0.001) == 1.5
    assert next_ahead_factor(3.0, 0.002, 0.004) == MOST_AHEAD  # never past MOST_AHEAD


def test_without_a_wait_the_factor_falls_back_to_one() -> None:
    factor = float(MOST_AHEAD)
    for _ in range(100):
        factor = next_ahead_factor(factor, 0.002, 0.0)
    assert factor == 1.0
    assert next_ahead_factor(2.0, 0.01, 0.0005) < 2.0  # a wait within a tenth of the batch is no wait


@given(st.floats(1, MOST_AHEAD), st.floats(0, 3600, allow_nan=False), st.floats(0, 3600, allow_nan=False))
def test_the_factor_stays_between_one_and_most_ahead(factor: float, ran_s: float, waited_s: float) -> None:
    assert 1.0 <= next_ahead_factor(factor, ran_s, waited_s) <= MOST_AHEAD
