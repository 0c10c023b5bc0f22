"""The typed task API: what an application writes against.

A task is a name, a handler and options. The payload type P is read from the
handler's first parameter annotation, so the handler's signature is the one source
of truth for what the job carries; a result task also reads R from its return
annotation. Nothing here imports a backend or the queue: a ``Queue`` is a protocol,
which ``burrow.queue.JobQueue`` implements.
"""

from __future__ import annotations

import datetime as dt
import inspect
import typing
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, Unpack, overload, runtime_checkable

from burrow import codec
from burrow.context import capture_result
from burrow.errors import BurrowError, PayloadEncodeError, PermanentError, ResultEncodeError
from burrow.execution import JobHandlerFunc
from burrow.job import UNSET, EnqueueKeywords, EnqueueOptions, KeyedKeywords, ManyKeywords, keyed_payloads, unique_keys
from burrow.options import JobConfig, JobOption, apply_options, check_task_name

P = TypeVar("P")
R = TypeVar("R")


# -- protocols --------------------------------------------------------------------


@runtime_checkable
class Enqueuer(Protocol):
    """What a producer needs: put jobs in, take queued ones back out.

    The options are :class:`burrow.job.EnqueueOptions`' fields as keywords
    (priority, max_retries, run_at, delay, unique_key, queue); ``conn`` enqueues
    inside that SQLAlchemy transaction.
    """

    def enqueue(self, type_name: str, payload: Any, *, conn: Any = None, **options: Unpack[EnqueueKeywords]) -> int: ...

    def enqueue_at(
        self, type_name: str, payload: Any, run_at: dt.datetime, *, conn: Any = None, **options: Unpack[KeyedKeywords]
    ) -> int: ...

    def enqueue_many(
        self,
        type_name: str,
        payloads: Iterable[Any],
        *,
        unique_keys: Sequence[str | None] | None = None,
        conn: Any = None,
        **options: Unpack[ManyKeywords],
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

# The payload type P of each handler a typed task registered (the handler is the key,
# so a queue's Registration needs no field for it); read by payload_type_of.
_PAYLOAD_TYPES: weakref.WeakKeyDictionary[Callable[..., Any], Any] = weakref.WeakKeyDictionary()


def payload_type_of(handler: Callable[..., Any]) -> Any | None:
    """P of a handler registered by a typed task (``Any``: plain JSON); None for a raw
    ``q.handle`` handler, whose payload is bytes burrow does not read."""
    return _PAYLOAD_TYPES.get(handler)



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


@runtime_checkable
class AsyncEnqueuer(Protocol):
    """What an async producer needs (``burrow.AsyncJobQueue``): the checked options'
    enqueue, awaited."""

    async def enqueue_options(
        self,
        type_name: str,
        payloads: Sequence[Any],
        options: EnqueueOptions,
        keys: Sequence[str | None] | None = None,
        *,
        conn: Any = None,
        config: JobConfig | None = None,
    ) -> list[int]: ...


@runtime_checkable
class AsyncResults(Protocol):
    """What reading results from async code needs (``burrow.AsyncJobQueue``)."""

    async def result(self, job_id: int) -> bytes | None: ...

    async def wait(self, job_id: int, timeout: float) -> Any: ...


@dataclass(frozen=True, slots=True)
class TaskDefinition(Generic[P]):
    """A named, typed task. Register it on a queue that runs it; enqueue from anywhere."""

    name: str
    handler: Callable[[P], Any]
    config: JobConfig = field(default_factory=JobConfig)
    payload_type: Any = Any

    def register(self, q: Queue) -> None:
        handler = self._raw_handler()
        _PAYLOAD_TYPES[handler] = self.payload_type  # what --check decodes schedules into
        q.handle(self.name, handler, *self._options())

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
        """JSON bytes, checked by the worker's strict decode (PayloadEncodeError if not)."""
        return codec.encode_payload(payload, self.payload_type)

    def unique_key(self, payload: P) -> str | None:
        """The payload's key under this task's ``with_unique``, None without one."""
        return unique_keys(EnqueueOptions(), self.config, [payload])[0]

    def enqueue(self, q: Enqueuer, payload: P, *, conn: Any = None, **options: Unpack[EnqueueKeywords]) -> int:
        """Encode with P's type and enqueue with this task's options; the call's win.

        ``unique_key`` overrides the task's ``with_unique`` key for this job.
        """
        return self._enqueue(q, [payload], EnqueueOptions.of(options), None, conn)[0]

    def enqueue_at(
        self, q: Enqueuer, payload: P, run_at: dt.datetime, *, conn: Any = None, **options: Unpack[KeyedKeywords]
    ) -> int:
        return self.enqueue(q, payload, run_at=run_at, conn=conn, **options)

    def enqueue_in(
        self, q: Enqueuer, payload: P, delay: dt.timedelta | float, *, conn: Any = None, **options: Unpack[KeyedKeywords]
    ) -> int:
        """Enqueue to run ``delay`` (a timedelta or seconds) from now."""
        return self.enqueue(q, payload, delay=delay, conn=conn, **options)

    def enqueue_many(
        self,
        q: Enqueuer,
        payloads: Iterable[P],
        *,
        unique_keys: Sequence[str | None] | None = None,
        conn: Any = None,
        **options: Unpack[ManyKeywords],
    ) -> list[int]:
        """All in one transaction; every payload is encoded before anything is stored.

        ``unique_keys`` (one per payload, None for none) overrides ``with_unique``'s;
        position by position, the new job's id or the id of the job already holding
        that payload's key.
        """
        listed = keyed_payloads(self.name, payloads, unique_keys)
        return self._enqueue(q, listed, EnqueueOptions.of(options), unique_keys, conn)

    def _enqueue(
        self,
        q: Enqueuer,
        payloads: Sequence[P],
        options: EnqueueOptions,
        keys: Sequence[str | None] | None,
        conn: Any,
    ) -> list[int]:
        """Keys from the typed payloads, then the bytes under this task's options.

        A JobQueue takes the checked options as they are (``enqueue_options``); any
        other Enqueuer gets them as keywords.
        """
        if keys is None:
            keys = unique_keys(options, self.config, payloads)
        data = [self.encode(p) for p in payloads]
        direct = getattr(q, "enqueue_options", None)
        if direct is not None:
            ids: list[int] = direct(self.name, data, options, keys, conn=conn, config=self.config)
            return ids
        merged = options.over(self.config)
        if len(data) == 1:
            return [q.enqueue(self.name, data[0], conn=conn, **merged._replace(unique_key=keys[0]).keywords())]
        many = typing.cast(ManyKeywords, merged._replace(unique_key=UNSET).keywords())
        return q.enqueue_many(self.name, data, unique_keys=keys, conn=conn, **many)

    # -- from async code (burrow.AsyncJobQueue) -------------------------------------

    async def aenqueue(
        self, aq: AsyncEnqueuer, payload: P, *, conn: Any = None, **options: Unpack[EnqueueKeywords]
    ) -> int:
        """:meth:`enqueue`, awaited: the same options, checks and errors. ``conn``: a
        SQLAlchemy ``AsyncConnection`` (the job exists if and only if it commits)."""
        return (await self._aenqueue(aq, [payload], EnqueueOptions.of(options), None, conn))[0]

    async def aenqueue_many(
        self,
        aq: AsyncEnqueuer,
        payloads: Iterable[P],
        *,
        unique_keys: Sequence[str | None] | None = None,
        conn: Any = None,
        **options: Unpack[ManyKeywords],
    ) -> list[int]:
        """:meth:`enqueue_many`, awaited."""
        listed = keyed_payloads(self.name, payloads, unique_keys)
        return await self._aenqueue(aq, listed, EnqueueOptions.of(options), unique_keys, conn)

    async def _aenqueue(
        self,
        aq: AsyncEnqueuer,
        payloads: Sequence[P],
        options: EnqueueOptions,
        keys: Sequence[str | None] | None,
        conn: Any,
    ) -> list[int]:
        if keys is None:
            keys = unique_keys(options, self.config, payloads)
        data = [self.encode(p) for p in payloads]
        return await aq.enqueue_options(self.name, data, options, keys, conn=conn, config=self.config)


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

    async def aresult(self, aq: AsyncResults, job_id: int) -> R:
        """:meth:`result`, awaited: JobNotFinished, JobFailed or JobCancelled otherwise."""
        return self.decode_result(await aq.result(job_id))

    async def await_result(self, aq: AsyncResults, job_id: int, timeout: float) -> R:
        """:meth:`wait`, awaited, without blocking the loop (WaitTimeout after ``timeout`` s)."""
        finished = await aq.wait(job_id, timeout)  # a JobInfo, succeeded
        return self.decode_result(finished.result)


def _encode_result(value: Any, result_type: Any) -> bytes:
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




# burrow promised its users these names in ``burrow.tasks`` too (README, "The API"); they live in their own modules
# now and ``burrow`` is the facade. Resolved on first use, so that importing this
# module loads neither the queue nor a backend (no import circle).
_MOVED = {
    "JobContext": "burrow.context",
    "ResultCapture": "burrow.context",
    "capture_result": "burrow.context",
    "current_job": "burrow.context",
    "with_result_capture": "burrow.context",
    "PermanentError": "burrow.errors",
    "RetryAfter": "burrow.errors",
    "JobInfo": "burrow.job",
    "JobState": "burrow.job",
    "JobQueue": "burrow.queue",
    "connect": "burrow.queue",
    "Periodic": "burrow.schedule",
    "periodic": "burrow.schedule",
    "with_backoff": "burrow.options",
    "with_concurrency": "burrow.options",
    "with_max_retries": "burrow.options",
    "with_priority": "burrow.options",
    "with_queue": "burrow.options",
    "with_timeout": "burrow.options",
    "with_unique": "burrow.options",
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'burrow.tasks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(home), name)
