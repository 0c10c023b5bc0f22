"""The typed task API: what an application writes against.

A task is a name, a handler and options. The payload type P is read from the
handler's first parameter annotation, so the handler's signature is the one source
of truth for what the job carries; a result task also reads R from its return
annotation. Nothing here imports a backend: a ``Queue`` is a protocol, and
``JobQueue`` (the implementation over a database) is only re-exported.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar, overload, runtime_checkable

from burrow import codec
from burrow.context import (
    JobContext,
    ResultCapture,
    capture_result,
    current_job,
    with_result_capture,
)
from burrow.errors import BurrowError, InvalidTaskName, PermanentError
from burrow.retry import DEFAULT_BACKOFF_BASE_S, DEFAULT_BACKOFF_MAX_S

P = TypeVar("P")
R = TypeVar("R")

# A raw handler receives the stored payload bytes; it may be ``async def``.
JobHandlerFunc = Callable[[bytes], None | Awaitable[None]]

TASK_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}")


def check_task_name(name: str) -> str:
    """Refuse names that would be ambiguous in logs, CLIs and NOTIFY payloads."""
    if not isinstance(name, str) or TASK_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidTaskName(
            f"invalid task name {name!r}: use letters, digits and _ . : - (at most 200, not starting with . : -)"
        )
    return name


# -- options ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobConfig:
    """Per-task settings. backoff and timeout None mean: the supervisor's defaults."""

    max_retries: int = 3
    priority: int = 0
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None
    timeout_s: float | None = None

    def backoff(self, default_base_s: float = DEFAULT_BACKOFF_BASE_S, default_max_s: float = DEFAULT_BACKOFF_MAX_S) -> tuple[float, float]:
        base = self.backoff_base_s if self.backoff_base_s is not None else default_base_s
        cap = self.backoff_max_s if self.backoff_max_s is not None else default_max_s
        return base, cap


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
    """Retry delay in seconds: min(cap, base * 2**(attempt-1)), times a jitter in [0.5, 1]."""
    if not (0 <= base <= cap):
        raise BurrowError(f"with_backoff needs 0 <= base <= cap, got base={base!r} cap={cap!r}")
    return lambda config: replace(config, backoff_base_s=float(base), backoff_max_s=float(cap))


def with_timeout(seconds: float) -> JobOption:
    """Kill a run that takes longer than ``seconds`` (enforced by supervisor workers)."""
    if not seconds > 0:
        raise BurrowError(f"with_timeout needs a positive number of seconds, got {seconds!r}")
    return lambda config: replace(config, timeout_s=float(seconds))


def apply_options(options: Iterable[JobOption], config: JobConfig | None = None) -> JobConfig:
    config = config or JobConfig()
    for option in options:
        if not callable(option):
            raise BurrowError(f"not a job option: {option!r} (use burrow.with_max_retries(...) and friends)")
        config = option(config)
    return config


# -- protocols --------------------------------------------------------------------


@runtime_checkable
class Enqueuer(Protocol):
    """What a producer needs: put jobs in, take queued ones back out."""

    def enqueue(
        self,
        type_name: str,
        payload: Any,
        *,
        priority: int | None = None,
        max_retries: int | None = None,
        run_at: dt.datetime | None = None,
        conn: Any = None,
    ) -> int: ...

    def enqueue_at(self, type_name: str, payload: Any, run_at: dt.datetime, *, conn: Any = None) -> int: ...

    def enqueue_many(
        self,
        type_name: str,
        payloads: Iterable[Any],
        *,
        priority: int | None = None,
        max_retries: int | None = None,
        conn: Any = None,
    ) -> list[int]: ...

    def dequeue(self, job_id: int) -> bool: ...


@runtime_checkable
class Queue(Enqueuer, Protocol):
    """An Enqueuer that can also run jobs: handlers are registered on it."""

    def handle(self, type_name: str, handler: JobHandlerFunc, *options: JobOption) -> None: ...

    def job(self, job_id: int) -> Any: ...

    def result(self, job_id: int) -> bytes | None: ...


@runtime_checkable
class HasJobs(Protocol):
    """An application object that registers its tasks on a queue (named in config `apps`)."""

    def register_jobs(self, q: Queue) -> None: ...


# -- typed tasks ------------------------------------------------------------------


def _payload_type(fn: Callable[..., Any]) -> Any:
    """P from the handler's first parameter annotation; Any (plain JSON) if none."""
    parameters = list(inspect.signature(fn).parameters.values())
    if not parameters:
        raise BurrowError(f"handler {fn!r} must take the payload as its first parameter")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise BurrowError(f"cannot read the annotations of handler {fn!r}: {exc}") from exc
    return hints.get(parameters[0].name, Any)


def _return_type(fn: Callable[..., Any]) -> Any:
    hints = typing.get_type_hints(fn)
    return hints.get("return", Any)


@dataclass(frozen=True, slots=True)
class TaskDefinition(Generic[P]):
    """A named, typed task. Register it on a queue that runs it; enqueue from anywhere."""

    name: str
    handler: Callable[[P], Any]
    config: JobConfig = field(default_factory=JobConfig)
    payload_type: Any = Any

    def register(self, q: Queue) -> None:
        q.handle(self.name, self._raw_handler(), *self._options())

    def _options(self) -> tuple[JobOption, ...]:
        config = self.config
        return (lambda _: config,)

    def _raw_handler(self) -> JobHandlerFunc:
        fn, payload_type = self.handler, self.payload_type
        if inspect.iscoroutinefunction(fn):

            async def run_async(data: bytes) -> None:
                await fn(codec.decode(data, payload_type))

            return run_async

        def run(data: bytes) -> None:
            fn(codec.decode(data, payload_type))

        return run

    def encode(self, payload: P) -> bytes:
        return codec.encode(payload, self.payload_type)

    def enqueue(self, q: Enqueuer, payload: P, *, run_at: dt.datetime | None = None, conn: Any = None) -> int:
        """Encode with P's type and enqueue with this task's priority and retries."""
        return q.enqueue(
            self.name,
            self.encode(payload),
            priority=self.config.priority,
            max_retries=self.config.max_retries,
            run_at=run_at,
            conn=conn,
        )

    def enqueue_at(self, q: Enqueuer, payload: P, run_at: dt.datetime, *, conn: Any = None) -> int:
        return self.enqueue(q, payload, run_at=run_at, conn=conn)

    def enqueue_many(self, q: Enqueuer, payloads: Iterable[P], *, conn: Any = None) -> list[int]:
        """All in one INSERT statement; every payload is encoded before anything is stored."""
        encoded = [self.encode(p) for p in payloads]
        return q.enqueue_many(
            self.name, encoded, priority=self.config.priority, max_retries=self.config.max_retries, conn=conn
        )


@dataclass(frozen=True, slots=True)
class ResultTask(TaskDefinition[P], Generic[P, R]):
    """A task whose handler's return value is stored and read back as R."""

    result_type: Any = Any

    def _raw_handler(self) -> JobHandlerFunc:
        fn, payload_type, result_type = self.handler, self.payload_type, self.result_type
        if inspect.iscoroutinefunction(fn):

            async def run_async(data: bytes) -> None:
                value = await fn(codec.decode(data, payload_type))
                capture_result(_encode_result(value, result_type))

            return run_async

        def run(data: bytes) -> None:
            capture_result(_encode_result(fn(codec.decode(data, payload_type)), result_type))

        return run

    def decode_result(self, data: bytes | None) -> R:
        if data is None:
            raise BurrowError(f"task {self.name!r} stored no result")
        try:
            return typing.cast(R, codec.decode(data, self.result_type))
        except PermanentError as exc:
            raise BurrowError(f"task {self.name!r}: stored result does not decode: {exc}") from exc

    def result(self, q: Queue, job_id: int) -> R:
        """The typed result; JobNotFinished, JobFailed or JobCancelled otherwise."""
        return self.decode_result(q.result(job_id))

    def wait(self, q: Queue, job_id: int, timeout: float) -> R:
        """Block until the job finished (WaitTimeout, a TimeoutError, after ``timeout`` s)."""
        wait = getattr(q, "wait", None)
        if wait is None:
            raise BurrowError(f"{type(q).__name__} cannot wait for jobs")
        wait(job_id, timeout)
        return self.result(q, job_id)


def _encode_result(value: Any, result_type: Any) -> bytes:
    from burrow.errors import PayloadEncodeError, ResultEncodeError

    try:
        return codec.encode(value, result_type)
    except PayloadEncodeError as exc:
        raise ResultEncodeError(f"cannot encode the result: {exc}") from exc


def define_task(name: str, handler: Callable[[P], Any], *options: JobOption) -> TaskDefinition[P]:
    """A task whose payload type is ``handler``'s first parameter annotation."""
    return TaskDefinition(check_task_name(name), handler, apply_options(options), _payload_type(handler))


@overload
def define_result_task(
    name: str, handler: Callable[[P], Coroutine[Any, Any, R]], *options: JobOption
) -> ResultTask[P, R]: ...
@overload
def define_result_task(name: str, handler: Callable[[P], R], *options: JobOption) -> ResultTask[P, R]: ...
def define_result_task(name: str, handler: Callable[[P], Any], *options: JobOption) -> ResultTask[P, Any]:
    """A task whose return value (its return annotation R) is stored as the job's result."""
    return ResultTask(
        check_task_name(name), handler, apply_options(options), _payload_type(handler), _return_type(handler)
    )


# Implementations and context helpers live in their own modules; these are the same
# objects, importable from here as the design promises.
from burrow.queue import JobInfo, JobQueue, connect  # noqa: E402

__all__ = [
    "Enqueuer",
    "HasJobs",
    "JobConfig",
    "JobContext",
    "JobHandlerFunc",
    "JobInfo",
    "JobOption",
    "JobQueue",
    "PermanentError",
    "Queue",
    "ResultCapture",
    "ResultTask",
    "TaskDefinition",
    "apply_options",
    "capture_result",
    "check_task_name",
    "connect",
    "current_job",
    "define_result_task",
    "define_task",
    "with_backoff",
    "with_max_retries",
    "with_priority",
    "with_result_capture",
    "with_timeout",
]
