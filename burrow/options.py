"""Per-task settings and the options that build them, with the checks they share.

Kept apart from ``burrow.tasks`` so that the layers below the typed API (the
queue, the executor) can use them without importing ``tasks``, which re-exports
the queue: one direction of imports, no cycle.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from burrow.errors import BurrowError, InvalidTaskName
from burrow.retry import MAX_DELAY_S, RetryDefaults

TASK_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}")
DEFAULT_MAX_RETRIES = 3
DEFAULT_PRIORITY = 0


def _checked_name(name: str, what: str, error: type[BurrowError]) -> str:
    """Refuse names that would be ambiguous in logs, CLIs, configs, metrics and NOTIFY payloads."""
    if not isinstance(name, str) or TASK_NAME_PATTERN.fullmatch(name) is None:
        rule = "use letters, digits and _ . : - (at most 200, not starting with . : -)"
        raise error(f"invalid {what} name {name!r}: {rule}")
    return name


def check_task_name(name: str) -> str:
    return _checked_name(name, "task", InvalidTaskName)


@dataclass(frozen=True, slots=True)
class JobConfig:
    """Per-task settings. backoff and timeout None mean: the supervisor's defaults."""

    max_retries: int = DEFAULT_MAX_RETRIES
    priority: int = DEFAULT_PRIORITY
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None
    timeout_s: float | None = None
    unique: Callable[[Any], str | None] | None = None  # a payload's unique key (with_unique)
    queue: str | None = None  # the named queue its jobs go to (with_queue); None: "default"
    concurrency: int | None = None  # at most this many running at once, everywhere (with_concurrency)

    def backoff(self, defaults: RetryDefaults = RetryDefaults()) -> RetryDefaults:
        """This task's backoff: its own where it set one, else ``defaults`` (config ``[retry]``)."""
        if self.backoff_base_s is None and self.backoff_max_s is None:
            return defaults
        return RetryDefaults(
            defaults.base_s if self.backoff_base_s is None else self.backoff_base_s,
            defaults.max_s if self.backoff_max_s is None else self.backoff_max_s,
        )


# What a supervisor records of each task it handles (burrow_tasks.options, as JSON):
# everything but ``unique``, a function, of which only its presence is kept.
_REGISTERED = ("max_retries", "priority", "backoff_base_s", "backoff_max_s", "timeout_s", "queue", "concurrency")


def registered_options(config: JobConfig) -> str:
    """``config`` as the task registry stores it: a JSON object."""
    described: dict[str, Any] = {name: getattr(config, name) for name in _REGISTERED}
    described["unique"] = config.unique is not None
    return orjson.dumps(described).decode()


class RegisteredOptions:
    """The options supervisors registered for tasks this process has no definition of,
    each taken as read for TTL_S: a shell script's loop of enqueues makes one extra
    read, not one each. The sync and the async client each keep one; the read itself
    (a round trip, awaited or not) is theirs."""

    TTL_S = 10.0

    def __init__(self) -> None:
        self._configs: dict[str, tuple[float, JobConfig]] = {}  # task -> (good until, its options)

    def cached(self, task: str) -> JobConfig | None:
        """The task's options if read within TTL_S; None: read them (:meth:`remember`)."""
        entry = self._configs.get(task)
        return entry[1] if entry is not None and entry[0] > time.monotonic() else None

    def remember(self, task: str, text: str | None) -> JobConfig:
        """The registry's answer for ``task`` (None: no supervisor handles it, burrow's defaults)."""
        config = JobConfig() if text is None else config_of_registered(text)
        self._configs[task] = (time.monotonic() + self.TTL_S, config)
        return config


def config_of_registered(text: str) -> JobConfig:
    """The JobConfig a registry entry describes (no ``unique`` function: the key of a
    job enqueued without the task's definition is the one the call gives)."""
    described = orjson.loads(text)
    return JobConfig(**{name: described[name] for name in _REGISTERED if name in described})


JobOption = Callable[[JobConfig], JobConfig]


def _int_option(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BurrowError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def check_max_retries(n: int) -> int:
    """``n`` if it is a valid max_retries (0 to 1,000,000); a BurrowError naming it if not."""
    return _int_option("max_retries", n, 0, 1_000_000)


def check_priority(n: int) -> int:
    """``n`` if it is a valid priority (a 32-bit integer, the column's type); a BurrowError if not."""
    return _int_option("priority", n, -(2**31), 2**31 - 1)


def with_max_retries(n: int) -> JobOption:
    """Retry a failing job up to ``n`` times after its first run (so n + 1 runs at most)."""
    n = check_max_retries(n)
    return lambda config: replace(config, max_retries=n)


def with_priority(n: int) -> JobOption:
    """Higher runs first; the default is 0 and negative values are allowed."""
    n = check_priority(n)
    return lambda config: replace(config, priority=n)


def with_backoff(base: float, cap: float) -> JobOption:
    """Retry delay in seconds: min(cap, base * 2**(attempt-1)), times a jitter in [0.5, 1].

    ``cap`` is at most a year (retry.MAX_DELAY_S): a job that should wait longer is a
    job that should be enqueued later.
    """
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (base, cap))
    if not (numbers and 0 <= base <= cap <= MAX_DELAY_S):
        raise BurrowError(
            f"with_backoff needs 0 <= base <= cap <= {MAX_DELAY_S:.0f} seconds (a year), got base={base!r} cap={cap!r}"
        )
    return lambda config: replace(config, backoff_base_s=float(base), backoff_max_s=float(cap))


def with_timeout(seconds: float) -> JobOption:
    """Kill a run that takes longer than ``seconds`` (enforced by supervisor workers)."""
    if not seconds > 0:
        raise BurrowError(f"with_timeout needs a positive number of seconds, got {seconds!r}")
    return lambda config: replace(config, timeout_s=float(seconds))


def with_unique(key: Callable[[Any], str | None]) -> JobOption:
    """Enqueue nothing while a job of this task with the same key is queued or running.

    ``key`` maps the payload (as given to enqueue: the typed payload for a task, the raw
    value for ``q.enqueue``) to a key string, or None for a job without a key. Enqueue
    then returns the id of the job that holds the key.
    """
    if not callable(key):
        raise BurrowError(f"with_unique takes a function of the payload, got {key!r}")
    return lambda config: replace(config, unique=key)


MAX_UNIQUE_KEY = 200


def check_queue_name(name: str) -> str:
    """A queue name follows the task-name pattern."""
    return _checked_name(name, "queue", BurrowError)


def with_queue(name: str) -> JobOption:
    """Put this task's jobs in the named queue, which a pool of workers of its own may
    serve (``[[supervisor.pools]]``); without it, jobs go to the "default" queue."""
    name = check_queue_name(name)
    return lambda config: replace(config, queue=name)


def with_concurrency(n: int) -> JobOption:
    """At most ``n`` jobs of this task run at once, across every supervisor on the
    database; the rest wait queued, in order, without holding up other tasks."""
    n = _int_option("with_concurrency", n, 1, 1_000_000)
    return lambda config: replace(config, concurrency=n)


def check_unique_key(key: object) -> str | None:
    """``key`` if it is a valid unique key (a string of 1 to 200 characters) or None."""
    if key is None or (isinstance(key, str) and 0 < len(key) <= MAX_UNIQUE_KEY):
        return key
    raise BurrowError(f"a unique key must be a string of 1 to {MAX_UNIQUE_KEY} characters (or None), got {key!r}")


def apply_options(options: Iterable[JobOption], config: JobConfig | None = None) -> JobConfig:
    config = config or JobConfig()
    for option in options:
        if not callable(option):
            raise BurrowError(f"not a job option: {option!r} (use burrow.with_max_retries(...) and friends)")
        config = option(config)
    return config
