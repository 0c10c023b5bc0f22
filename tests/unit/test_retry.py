"""Backoff and the retry-or-fail decision (burrow.retry), without a database."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from burrow.retry import MAX_DELAY_S, Fail, Retry, backoff_delay_s, decide


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


@pytest.mark.parametrize(("rand", "factor"), [(0.0, 0.5), (0.25, 0.625), (0.5, 0.75), (0.999, 0.9995), (1.0, 1.0)])
def test_the_jitter_scales_the_capped_delay_by_a_half_to_one(rand: float, factor: float) -> None:
    assert backoff_delay_s(1, 10.0, 100.0, fixed(rand)) == pytest.approx(10.0 * factor)
    assert backoff_delay_s(3, 10.0, 100.0, fixed(rand)) == pytest.approx(40.0 * factor)
    assert backoff_delay_s(5, 10.0, 100.0, fixed(rand)) == pytest.approx(100.0 * factor)  # capped


def test_the_delay_doubles_per_attempt_up_to_the_cap() -> None:
    top = fixed(1.0)
    assert [backoff_delay_s(attempt, 1.0, 20.0, top) for attempt in range(1, 8)] == [1, 2, 4, 8, 16, 20, 20]
    assert backoff_delay_s(0, 3.0, 20.0, top) == 3.0  # no attempt below the first
    assert backoff_delay_s(1, 0.0, 0.0, top) == 0.0


def test_the_exponent_and_the_delay_are_capped() -> None:
    """Without the caps, 2 ** (attempt - 1) for a large attempt overflows a float, and a
    delay past year 9999 cannot be stored: a delay is never more than MAX_DELAY_S."""
    top = fixed(1.0)
    assert backoff_delay_s(63, 1.0, math.inf, top) == MAX_DELAY_S
    assert backoff_delay_s(1_000_000, 1.0, math.inf, top) == MAX_DELAY_S
    assert backoff_delay_s(1_000_000, 1.0, 3600.0, top) == 3600.0
    assert backoff_delay_s(20, 1e-12, math.inf, top) == 1e-12 * 2.0**19


@given(
    st.integers(-5, 100_000),
    st.floats(0, 1e6),
    st.floats(0, 1e7),
    st.floats(0, 1, exclude_max=True),
)
def test_the_delay_is_within_half_to_all_of_the_capped_delay(
    attempt: int, base: float, extra: float, rand: float
) -> None:
    max_s = base + extra
    capped = min(max_s, base * 2 ** min(max(attempt - 1, 0), 62))
    delay = backoff_delay_s(attempt, base, max_s, fixed(rand))
    assert capped / 2 <= delay <= capped


def test_decide_fails_a_permanent_error_at_once() -> None:
    assert decide(1, 5, permanent=True, base_s=1.0, max_s=10.0, rand=fixed(0.0)) == Fail()
    assert decide(1, 0, permanent=True, base_s=1.0, max_s=10.0) == Fail()


def test_decide_fails_when_the_retries_are_spent() -> None:
    """max_retries counts runs after the first: run max_retries + 1 is the last."""
    assert decide(4, 3, permanent=False, base_s=1.0, max_s=10.0) == Fail()
    assert decide(1, 0, permanent=False, base_s=1.0, max_s=10.0) == Fail()
    assert decide(100, 3, permanent=False, base_s=1.0, max_s=10.0) == Fail()


def test_decide_retries_otherwise_after_the_jittered_backoff() -> None:
    assert decide(1, 3, permanent=False, base_s=2.0, max_s=10.0, rand=fixed(1.0)) == Retry(2.0)
    assert decide(3, 3, permanent=False, base_s=2.0, max_s=10.0, rand=fixed(1.0)) == Retry(8.0)
    assert decide(3, 3, permanent=False, base_s=2.0, max_s=10.0, rand=fixed(0.0)) == Retry(4.0)
    assert decide(3, 3, permanent=False, base_s=2.0, max_s=5.0, rand=fixed(0.5)) == Retry(3.75)
    retry = decide(2, 3, permanent=False, base_s=2.0, max_s=10.0)
    assert isinstance(retry, Retry) and 2.0 <= retry.delay_s <= 4.0
