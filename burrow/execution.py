"""Run one claimed job and say how it ended.

The in-process ``drain`` and the supervisor's workers both run jobs through
:func:`execute`, so a job behaves the same wherever it runs: the same context
binding, result capture, error text, retry decision and log events.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import CodeType, TracebackType
from typing import Any

import structlog

from burrow import retry
from burrow.backends.records import ClaimedJob, ExpiredLease, Outcome, OutcomeKind
from burrow.context import JobContext, ResultCapture, enter_job, leave_job
from burrow.errors import BurrowError, PayloadDecodeError, PermanentError, RetryAfter
from burrow.logging import encodable
from burrow.options import JobConfig
from burrow.retry import RetryDefaults

log = structlog.get_logger("burrow")

# A raw handler receives the stored payload bytes; it may be ``async def``.
JobHandlerFunc = Callable[[bytes], None | Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Registration:
    """A handler registered on a queue under a task name, with its options."""

    task: str
    handler: JobHandlerFunc
    config: JobConfig


def execute(
    job: ClaimedJob,
    registration: Registration,
    defaults: RetryDefaults = RetryDefaults(),
    *,
    interruptible: bool = True,
    max_result_bytes: int | None = None,
    cancel_check: Callable[[], bool] | None = None,
    results_of: Callable[[int], Mapping[int, bytes | None]] | None = None,
    progress: Callable[[int, int, float, str | None], None] | None = None,
) -> Outcome:
    """Run ``job``'s handler and return its outcome; never raises for a handler's failure,
    nor for burrow's own work around it (a log line, the error's text).

    ``interruptible`` lets KeyboardInterrupt through (a person pressed Ctrl-C on an
    in-process drain); a worker passes False because its SIGINT belongs to the
    supervisor, so anything a handler raises there is that job's failure.
    ``max_result_bytes`` (a worker's ``max_result_size``) fails a job whose result
    is larger, at once: it would be as large on every attempt. ``cancel_check``
    answers the handler's ``current_job().cancel_requested``, ``results_of`` (the
    backend's ``parent_results``) its ``current_job().parent_results``; ``progress``
    takes its ``current_job().progress(...)``.
    """
    capture = ResultCapture()
    started = time.perf_counter()
    # Plain set/reset rather than context managers: this runs once per job, and
    # per-job overhead is what caps a worker's throughput on short jobs. A handler's
    # log lines get the job's fields from burrow.logging.add_job_fields.
    job_tokens = enter_job(
        JobContext(job.id, job.task, job.attempt, job.max_retries, cancel_check, results_of, progress), capture
    )
    try:
        return _execute(job, registration, defaults, capture, started, interruptible, max_result_bytes)
    except Exception as exc:
        # Not the handler's failure (_execute catches those) but burrow's, around it:
        # the job's failure all the same, never the death of the worker running it.
        return _not_recorded(job, registration, defaults, exc, started)
    finally:
        leave_job(job_tokens)


def _execute(
    job: ClaimedJob,
    registration: Registration,
    defaults: RetryDefaults,
    capture: ResultCapture,
    started: float,
    interruptible: bool,
    max_result_bytes: int | None,
) -> Outcome:
    # Bound once: each call through structlog's lazy proxy resolves it again.
    logger = log.bind(job_id=job.id, task=job.task, attempt=job.attempt)
    logger.info("job_started")
    try:
        _run(registration.handler, job.payload)
    except RetryAfter as exc:
        return _snoozed(job, exc, started)
    except KeyboardInterrupt as exc:
        if interruptible:
            raise
        return _failed(job, registration, defaults, exc, started)
    except BaseException as exc:  # SystemExit too: a handler's exit is its job's failure
        return _failed(job, registration, defaults, exc, started)
    duration_s = time.perf_counter() - started
    data = capture.data
    if max_result_bytes is not None and data is not None and len(data) > max_result_bytes:
        error = f"result too large: {len(data)} bytes, over max_result_size ({max_result_bytes} bytes)"
        return failure_outcome(job, registration.config, defaults, error, permanent=True, duration_s=duration_s)
    logger.info("job_succeeded", duration_ms=round(duration_s * 1000, 3))
    return Outcome(job.id, job.owner, job.attempt, OutcomeKind.SUCCEEDED, result=data, duration_s=duration_s)


def _run(handler: JobHandlerFunc, payload: bytes) -> None:
    outcome = handler(payload)
    if outcome is not None and inspect.isawaitable(outcome):  # most handlers return None
        asyncio.run(_await(outcome))


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


# Of a handler's error in ``last_error`` (and on the worker's pipe, whose frames are
# capped): the message and traceback of any real failure fit many times over.
MAX_ERROR_CHARS = 64 * 1024


def describe_error(exc: BaseException) -> str:
    """The error line, then the traceback: what an operator needs in ``last_error``.

    A NUL is spelled out: PostgreSQL text cannot hold one, and a handler's
    message with one made the whole batch of outcomes unwritable, every retry.
    So are lone surrogates (a surrogate-escaped file name in the message), which
    no UTF-8 encoder takes: they made the worker's log line and its frame to the
    supervisor fail, and the worker die. A text over MAX_ERROR_CHARS keeps its
    head (the message) and its tail (where the traceback ends).
    """
    message = _str(exc)
    head = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, PayloadDecodeError) and exc.fields:
        # The payload's fault, not the code's: the bad fields say all; the traceback
        # would be burrow's own frames and the decoder's exception groups.
        body = "\n".join(f"  {field}" for field in exc.fields)
    else:
        body = _traceback_text(exc).rstrip()
    text = encodable(head + "\n" + body).replace("\x00", "\\x00")
    if len(text) <= MAX_ERROR_CHARS:
        return text
    keep = MAX_ERROR_CHARS // 2
    return f"{text[:keep]}\n... ({len(text) - 2 * keep} characters cut) ...\n{text[-keep:]}"


# The stack part of recent tracebacks, by where each frame stood (see _traceback_text).
_STACKS: dict[tuple[tuple[CodeType, int], ...], str] = {}
_STACKS_MAX = 256


def _traceback_text(exc: BaseException) -> str:
    """The traceback as Python prints it, without the ``^^^^`` lines under each frame.

    Placing the carets re-parses every frame's source line: it was a third of a
    worker's time in the retry benchmark (benchmarks/README.md), and the frame's
    line already says where the error is. Jobs that fail alike (a dependency down)
    fail at the same lines: the stack's text, which reading the source makes the
    dearest part (about 35 us of a failure's 68), is kept by the code and line of
    every frame, and only the last line, the exception's own, is written anew. An
    exception with a cause or a context, or a group, is written whole every time.
    """
    if exc.__cause__ is not None or exc.__context__ is not None or isinstance(exc, BaseExceptionGroup):
        return _full_traceback_text(exc)
    key = tuple((tb.tb_frame.f_code, tb.tb_lineno) for tb in _tracebacks(exc.__traceback__))
    stack = _STACKS.get(key)
    if stack is not None:
        return stack + _exception_line(exc)
    text = _full_traceback_text(exc)
    last = _exception_line(exc)
    if text.endswith(last):
        if len(_STACKS) >= _STACKS_MAX:
            _STACKS.clear()
        _STACKS[key] = text[: len(text) - len(last)]
    return text


def _exception_line(exc: BaseException) -> str:
    """The traceback's last line, as ``traceback.format_exception_only`` writes it.

    That builds a ``TracebackException`` for it: 3.5 us, a quarter of a failure's own
    cost in a worker. Most exceptions need only their type's name and their message;
    a syntax error's lines and an exception's notes are left to the traceback module.
    """
    cls = type(exc)
    module = cls.__module__
    if isinstance(exc, SyntaxError) or hasattr(exc, "__notes__") or not isinstance(module, str):
        return "".join(traceback.format_exception_only(exc))
    name = cls.__qualname__ if module in ("__main__", "builtins") else f"{module}.{cls.__qualname__}"
    message = _str(exc)
    return f"{name}: {message}\n" if message else f"{name}\n"


def _tracebacks(tb: TracebackType | None) -> Iterator[TracebackType]:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def _full_traceback_text(exc: BaseException) -> str:
    top = traceback.TracebackException.from_exception(exc)
    pending, seen = [top], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for frame in current.stack:
            frame.colno = None
        pending += [chained for chained in (current.__cause__, current.__context__) if chained is not None]
        pending += current.exceptions or []
    return "".join(top.format())


def _str(exc: BaseException) -> str:
    """str(exc); an exception whose __str__ raises still gets described (as traceback does)."""
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


def failure_outcome(
    job: ClaimedJob,
    config: JobConfig,
    defaults: RetryDefaults,
    error: str,
    *,
    permanent: bool,
    duration_s: float | None = None,
) -> Outcome:
    """Retry or fail ``job`` for ``error``, by its policy; used for deaths and timeouts too."""
    outcome = _decided(job, config, defaults, error, permanent=permanent, duration_s=duration_s)
    if outcome.kind is OutcomeKind.RETRY:
        log.warning("job_retried", job_id=job.id, task=job.task, attempt=job.attempt,
                    retry_in_s=round(outcome.retry_in_s, 3), error=error.splitlines()[0])
    else:
        log.error("job_failed", job_id=job.id, task=job.task, attempt=job.attempt, error=error.splitlines()[0])
    return outcome


def _decided(
    job: ClaimedJob, config: JobConfig, defaults: RetryDefaults, error: str, *, permanent: bool, duration_s: float | None
) -> Outcome:
    """The RETRY or FAILED outcome ``job``'s retry policy gives for ``error``; no log line."""
    backoff = config.backoff(defaults)
    decision = retry.decide(job.attempt, job.max_retries, permanent=permanent, base_s=backoff.base_s, max_s=backoff.max_s)
    if isinstance(decision, retry.Retry):
        return Outcome(
            job.id, job.owner, job.attempt, OutcomeKind.RETRY, error=error, retry_in_s=decision.delay_s, duration_s=duration_s
        )
    return Outcome(job.id, job.owner, job.attempt, OutcomeKind.FAILED, error=error, duration_s=duration_s)


def _failed(
    job: ClaimedJob, registration: Registration, defaults: RetryDefaults, exc: BaseException, started: float
) -> Outcome:
    duration_s = time.perf_counter() - started
    log.debug("job_errored", job_id=job.id, task=job.task, attempt=job.attempt, duration_ms=round(duration_s * 1000, 3))
    permanent = isinstance(exc, PermanentError)
    return failure_outcome(
        job, registration.config, defaults, describe_error(exc), permanent=permanent, duration_s=duration_s
    )


def _not_recorded(
    job: ClaimedJob, registration: Registration, defaults: RetryDefaults, exc: Exception, started: float
) -> Outcome:
    """The job's outcome when burrow failed around its handler (a log line could not be
    written, say): retried or failed by its policy, with burrow's error as the job's.

    Built without failure_outcome's log line, which may be what failed; the line
    here is tried once, and its own failure ignored.
    """
    error = "burrow could not record the job's outcome: " + describe_error(exc)
    outcome = _decided(
        job, registration.config, defaults, error, permanent=False, duration_s=time.perf_counter() - started
    )
    with contextlib.suppress(Exception):
        log.error("job_not_recorded", job_id=job.id, task=job.task, attempt=job.attempt, error=error.splitlines()[0])
    return outcome


LEASE_EXPIRED = "lease expired: the process holding the job stopped heartbeating"


def lease_expired_outcome(job: ExpiredLease, config: JobConfig, defaults: RetryDefaults) -> Outcome:
    """A reaper's verdict on a job whose owner vanished: retried with its backoff, or
    failed when that run was its last, as if the run had failed."""
    backoff = config.backoff(defaults)
    decision = retry.decide(job.attempt, job.max_retries, permanent=False, base_s=backoff.base_s, max_s=backoff.max_s)
    if isinstance(decision, retry.Retry):
        return Outcome(job.id, job.owner, job.attempt, OutcomeKind.EXPIRED_RETRY, error=LEASE_EXPIRED,
                       retry_in_s=decision.delay_s)
    return Outcome(job.id, job.owner, job.attempt, OutcomeKind.EXPIRED_FAILED, error=LEASE_EXPIRED)


MAX_SNOOZES = 1000


def _snoozed(job: ClaimedJob, exc: RetryAfter, started: float) -> Outcome:
    """Back to the queue after ``exc.seconds``, the attempt given back; failed once the
    job has been snoozed MAX_SNOOZES times, so a handler cannot snooze forever."""
    duration_s = time.perf_counter() - started
    if job.snoozes >= MAX_SNOOZES:
        error = f"snoozed more than {MAX_SNOOZES} times (RetryAfter): failed so that it cannot snooze forever"
        log.error("job_failed", job_id=job.id, task=job.task, attempt=job.attempt, error=error)
        return Outcome(job.id, job.owner, job.attempt, OutcomeKind.FAILED, error=error, duration_s=duration_s)
    log.info("job_snoozed", job_id=job.id, task=job.task, attempt=job.attempt, retry_in_s=exc.seconds)
    return Outcome(
        job.id, job.owner, job.attempt, OutcomeKind.SNOOZED, retry_in_s=exc.seconds, duration_s=duration_s
    )


class CancelCheck:
    """``current_job().cancel_requested`` for the job running now: the database asked at
    most once a second, and a request once seen stays seen. One per process, pointed at
    each job in turn (:meth:`for_job`): nothing is built per job on the hot path."""

    INTERVAL_S = 1.0

    def __init__(self, ask: Callable[[int], bool]) -> None:
        self._ask = ask
        self.for_job(0)

    def for_job(self, job_id: int) -> CancelCheck:
        self._job_id = job_id
        self._asked_mono = -self.INTERVAL_S
        self._requested = False
        return self

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._requested and now - self._asked_mono >= self.INTERVAL_S:
            self._asked_mono = now
            try:
                self._requested = self._ask(self._job_id)
            except BurrowError:
                return False  # the database is away: keep working, the supervisor decides
        return self._requested

    def seen(self, job_id: int) -> bool:
        """Whether job ``job_id``'s handler was told of a cancel request: it stopped when
        asked, so its outcome is the cancel's, whatever it returned."""
        return self._requested and self._job_id == job_id


def released(job: ClaimedJob) -> Outcome:
    """Give a claimed, never started job back to the queue, with its attempt."""
    return Outcome(job.id, job.owner, job.attempt, OutcomeKind.RELEASED)
