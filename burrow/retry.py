"""Backoff and the retry-or-fail decision, as pure functions.

Kept free of I/O so that the worker, the in-process drain and the lease reaper all
decide the same way, and so the decision is testable without a database.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_MAX_S = 3600.0
# The longest any retry or snooze waits: a year. A cap above it (or infinite) is
# refused when the option is made; a delay above it is cut down to it before it
# reaches SQL, where a timestamp past year 9999 would make a whole batch unwritable.
MAX_DELAY_S = 366 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RetryDefaults:
    """A backoff: base and cap in seconds. The defaults here are config ``[retry] base, max``'s."""

    base_s: float = DEFAULT_BACKOFF_BASE_S
    max_s: float = DEFAULT_BACKOFF_MAX_S


def backoff_delay_s(attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before the run after ``attempt``: min(max, base * 2**(attempt-1)) times a jitter in [0.5, 1].

    The jitter spreads retries of jobs that failed together (a dependency that was
    down) so they do not all come back in the same instant.
    """
    exponent = min(max(attempt - 1, 0), 62)  # 2**62 seconds is already past any cap
    delay = min(max_s, MAX_DELAY_S, base_s * (2**exponent))
    return delay * (0.5 + 0.5 * rand())


@dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float


@dataclass(frozen=True, slots=True)
class Fail:
    pass


Decision = Retry | Fail


def decide(
    attempt: int,
    max_retries: int,
    *,
    permanent: bool,
    base_s: float,
    max_s: float,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What becomes of a job whose run number ``attempt`` failed.

    ``max_retries`` counts runs after the first, so a job may run max_retries + 1
    times; a permanent error never retries.
    """
    if permanent or attempt > max_retries:
        return Fail()
    return Retry(backoff_delay_s(attempt, base_s, max_s, rand))
