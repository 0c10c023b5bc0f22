"""The running job's context and result capture, carried by contextvars.

Go passes a ``ctx`` to every handler; Python has contextvars for the same purpose.
Handlers keep a plain signature (``def handler(payload: P)``) and reach the job's
identity through :func:`current_job`, which also works inside ``async def``
handlers because asyncio copies the context into the task it runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

import orjson

from burrow.errors import BurrowError


@dataclass(frozen=True, slots=True)
class JobContext:
    """Who the running job is: what a handler may want to log or branch on."""

    id: int
    task: str
    attempt: int
    max_retries: int
    cancel_check: Callable[[], bool] | None = field(default=None, repr=False, compare=False)
    results_of: Callable[[int], Mapping[int, bytes | None]] | None = field(default=None, repr=False, compare=False)
    # Where progress(...) goes: (job id, attempt, fraction, message). The supervisor's
    # worker keeps the latest and sends it with its heartbeat; a drain writes it.
    progress_sink: Callable[[int, int, float, str | None], None] | None = field(default=None, repr=False, compare=False)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt > self.max_retries

    @property
    def cancel_requested(self) -> bool:
        """Whether an operator asked to cancel this job (``q.cancel``) while it runs.

        A long handler may look now and then and stop cleanly; if it does not, its
        supervisor stops its worker two seconds after the request. Asking reads the
        database, at most once a second: call it between units of work.
        """
        return self.cancel_check is not None and self.cancel_check()

    @property
    def parent_results(self) -> dict[int, Any]:
        """A workflow step's parents and their results: {parent job id: its result as
        decoded JSON, None if it had none (or, for a step that ignores its parents'
        failures, if it did not succeed)}; {} for a job that is not a step. Read from
        the database when asked (one query for all parents), so only steps that look pay."""
        if self.results_of is None:
            return {}
        return {parent: None if data is None else orjson.loads(data) for parent, data in self.results_of(self.id).items()}
    def progress(self, fraction: float, message: str | None = None) -> None:
        """Say how far the job got: ``fraction`` from 0 to 1, and an optional short
        ``message`` ("340 of 850 rows"; cut at 200 characters).

        Cheap to call often: no database round trip per call. Under a supervisor
        the worker keeps the latest value and the supervisor writes it with its
        heartbeat (at most once a heartbeat per job); ``JobInfo.progress`` and
        ``progress_message`` read it, and the admin shows a bar."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or math.isnan(fraction):
            raise BurrowError(f"progress must be a number from 0 to 1, got {fraction!r}")
        if not 0 <= fraction <= 1:
            raise BurrowError(f"progress must be from 0 to 1, got {fraction!r}")
        if message is not None and not isinstance(message, str):
            raise BurrowError(f"a progress message must be a string, got {type(message).__name__}")
        if self.progress_sink is not None:
            # Cut, without NULs, and valid UTF-8 (a lone surrogate could not cross the pipe).
            text = None if message is None else message[:PROGRESS_MESSAGE_MAX].replace("\x00", "")
            text = None if text is None else text.encode("utf-8", "replace").decode("utf-8")
            self.progress_sink(self.id, self.attempt, float(fraction), text)


PROGRESS_MESSAGE_MAX = 200  # burrow_jobs.progress_message is VARCHAR(200)


@dataclass(slots=True)
class ResultCapture:
    """A slot a handler's result is written into; ``data`` is None until captured.

    It is a mutable object bound in a contextvar (not the bytes themselves) so that
    a write from a copied context, such as an asyncio task, is still seen by the
    worker that bound it.
    """

    data: bytes | None = None


_current_job: ContextVar[JobContext | None] = ContextVar("burrow_current_job", default=None)
_result_capture: ContextVar[ResultCapture | None] = ContextVar("burrow_result_capture", default=None)


def current_job() -> JobContext:
    """The context of the job this code runs in; a BurrowError outside a job."""
    job = _current_job.get()
    if job is None:
        raise BurrowError("current_job() called outside a running job")
    return job


def running_job() -> JobContext | None:
    """The context of the job this code runs in, None outside one (for log lines)."""
    return _current_job.get()


@contextlib.contextmanager
def job_context(job: JobContext) -> Iterator[JobContext]:
    """Bind ``job`` as the current job for the duration of the block."""
    token = _current_job.set(job)
    try:
        yield job
    finally:
        _current_job.reset(token)


@contextlib.contextmanager
def with_result_capture(capture: ResultCapture) -> Iterator[ResultCapture]:
    """Bind ``capture`` so that :func:`capture_result` inside the block fills it."""
    token = _result_capture.set(capture)
    try:
        yield capture
    finally:
        _result_capture.reset(token)


_JobTokens = tuple["Token[JobContext | None]", "Token[ResultCapture | None]"]


def enter_job(job: JobContext, capture: ResultCapture) -> _JobTokens:
    """Bind ``job`` and ``capture`` at once; undo with :func:`leave_job`.

    The two context managers above do the same, at several times the cost, which
    counts in a worker's loop running tens of thousands of short jobs a second.
    """
    return _current_job.set(job), _result_capture.set(capture)


def leave_job(tokens: _JobTokens) -> None:
    _result_capture.reset(tokens[1])
    _current_job.reset(tokens[0])


def capture_result(data: bytes) -> None:
    """Store ``data`` as the running job's result; a BurrowError if nothing is bound."""
    capture = _result_capture.get()
    if capture is None:
        raise BurrowError("capture_result() called with no ResultCapture bound (use with_result_capture)")
    capture.data = bytes(data)
