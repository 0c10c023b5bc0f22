"""Frames on the supervisor <-> worker pipes.

A frame is a 4-byte big-endian length and an orjson-encoded JSON object whose
``"t"`` key names the message type. JSON rather than pickle because a worker runs
application code: whatever crosses the pipe must be data the supervisor can
inspect and refuse, never objects it would have to trust. The length cap is
checked on the header, before the body is read, so a corrupt or hostile stream
cannot make the supervisor buffer gigabytes; any malformed frame is a
:class:`ProtocolError` and the supervisor replaces that worker.

This is the hot path of every job (claimed, result, heartbeat), so decoding works
on one growing buffer and hands orjson memoryview slices instead of copies.

Messages (docs/architecture.md). Worker -> supervisor: ``hello`` (first, with
``"v"`` and ``"pid"``), ``ready``, ``claimed`` (the claim's ``"owner"``, its
``"jobs"``, and ``"since"``: the monotonic time the claim began, from which the
outage guard ages the leases), ``heartbeat``, ``progress`` (the latest
``current_job().progress`` of a running job, sent before a heartbeat), ``result``
(with ``"cancel_seen"`` when the handler was told of a cancel request).
Supervisor -> worker: ``wake``, ``stop``, ``cancel``.

Every message is made and read here, in both directions, so that the two ends
cannot drift apart: a field the worker writes and the supervisor reads is named
in one file. The makers are plain functions returning the dict a pipe end
encodes; the readers check what a worker, running application code, may have
got wrong, and raise ProtocolError for it.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from burrow.backends.records import ClaimedJob, Outcome, OutcomeKind, stopped_when_asked
from burrow.errors import ProtocolError

__all__ = [
    "CANCEL",
    "CLAIMED",
    "HEARTBEAT",
    "HELLO",
    "MAX_FRAME_BYTES",
    "PROGRESS",
    "PROTOCOL_VERSION",
    "READY",
    "RESULT",
    "STOP",
    "WAKE",
    "FrameDecoder",
    "cancel",
    "cancelled_id",
    "check_hello",
    "claimed",
    "claimed_jobs",
    "decode_result",
    "encode_frame",
    "heartbeat",
    "hello",
    "outcome_frame",
    "progress",
    "progress_of",
    "read_frame",
    "ready",
    "stop",
    "wake",
    "write_frame",
]

# 2: a result that is not small UTF-8 text crosses as base64 ("result_b64"), not hex.
PROTOCOL_VERSION: Final = 2
# burrow/config.py's MAX_RESULT_BYTES (the largest max_result_size) is sized so that a
# result's base64 and the frame's other fields fit in one frame of this cap.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024

HELLO: Final = "hello"
READY: Final = "ready"
CLAIMED: Final = "claimed"
HEARTBEAT: Final = "heartbeat"
PROGRESS: Final = "progress"  # {"id", "attempt", "f": fraction, "m": message or null}
RESULT: Final = "result"
WAKE: Final = "wake"
STOP: Final = "stop"
CANCEL: Final = "cancel"  # {"id": job}: a claimed job not to start (cancelled meanwhile)

# Results up to this size that are UTF-8 cross the pipe as JSON strings, the rest as
# base64 (see outcome_frame); escaped, such a string is at most 6 x 64 KiB.
_TEXT_RESULT_MAX_BYTES = 64 * 1024

# What a worker may report; the EXPIRED_* kinds are a reaper's, never a worker's.
_WORKER_OUTCOMES = frozenset(
    {OutcomeKind.SUCCEEDED, OutcomeKind.RETRY, OutcomeKind.FAILED, OutcomeKind.RELEASED, OutcomeKind.SNOOZED}
)

_HEADER: Final = struct.Struct(">I")
_HEADER_SIZE: Final = _HEADER.size


def encode_frame(message: Mapping[str, object]) -> bytes:
    """One frame, ready for ``os.write``; refuses what the reader would refuse."""
    if type(message) is not dict:
        message = dict(message)
    if type(message.get("t")) is not str:
        raise ProtocolError(f'a frame needs a string type tag under "t", got {message.get("t")!r}')
    try:
        body = orjson.dumps(message)
    except orjson.JSONEncodeError as exc:
        raise ProtocolError(f"cannot encode {message['t']!r} frame: {exc}") from exc
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(f"{message['t']!r} frame of {len(body)} bytes is over the {MAX_FRAME_BYTES} byte cap")
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Bytes in, whole messages out, in order; keeps a partial frame for the next feed.

    After a ProtocolError the stream has lost its framing and the decoder must be
    thrown away along with the pipe.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held of a frame not yet complete."""
        return len(self._buffer)

    @property
    def needed(self) -> int:
        """Bytes still missing before the next header or frame is complete (>= 1).

        A blocking reader asks for exactly this much, so it never reads past a
        frame and never leaves a decoded message where ``select`` cannot see it.
        """
        buffer = self._buffer
        if len(buffer) < _HEADER_SIZE:
            return _HEADER_SIZE - len(buffer)
        size: int = _HEADER.unpack_from(buffer)[0]
        return _HEADER_SIZE + size - len(buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
        """Every message completed by ``data``; an empty list while a frame is partial."""
        buffer = self._buffer
        if buffer:
            buffer += data
            source: bytes | bytearray | memoryview = buffer
        else:
            source = data  # common case: whole frames arrive together, decode in place
        messages: list[dict[str, Any]] = []
        end = len(source)
        pos = 0
        with memoryview(source) as view:
            while end - pos >= _HEADER_SIZE:
                (size,) = _HEADER.unpack_from(view, pos)
                if size > MAX_FRAME_BYTES:
                    raise ProtocolError(f"frame length {size} is over the {MAX_FRAME_BYTES} byte cap")
                start = pos + _HEADER_SIZE
                if end - start < size:
                    break
                pos = start + size
                messages.append(_decode_body(view[start:pos]))
            if source is not buffer and pos < end:
                buffer += view[pos:]
        if source is buffer and pos:
            del buffer[:pos]  # after the view is released: an exported bytearray cannot shrink
        return messages


def _decode_body(body: memoryview) -> dict[str, Any]:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    finally:
        body.release()
    if type(message) is not dict:
        raise ProtocolError(f"frame is a JSON {type(message).__name__}, not an object")
    if type(message.get("t")) is not str:
        raise ProtocolError('frame has no string type tag under "t"')
    return message


def write_frame(fd: int, message: Mapping[str, object]) -> None:
    """Write one whole frame to a blocking fd; BrokenPipeError means the peer is gone.

    A write can be cut short by a signal, so this loops until every byte is out.
    """
    data = encode_frame(message)
    written = os.write(fd, data)
    if written == len(data):
        return
    with memoryview(data) as view:
        while written < len(data):
            written += os.write(fd, view[written:])


def read_frame(fd: int, decoder: FrameDecoder) -> dict[str, Any] | None:
    """Block until one message arrives; None when the peer closed between frames."""
    while True:
        chunk = os.read(fd, decoder.needed)
        if not chunk:
            if decoder.pending:
                raise ProtocolError(f"truncated frame: pipe closed after {decoder.pending} bytes of a frame")
            return None
        messages = decoder.feed(chunk)
        if messages:
            return messages[0]


def hello(pid: int | None = None, *, owner: str | None = None) -> dict[str, object]:
    """A worker's first message: its protocol version and pid; and its lease owner,
    with which the supervisor gives back claims the worker dies before announcing."""
    message: dict[str, object] = {"t": HELLO, "v": PROTOCOL_VERSION, "pid": os.getpid() if pid is None else pid}
    if owner is not None:
        message["owner"] = owner
    return message


def check_hello(message: Mapping[str, Any]) -> int:
    """The worker's pid, once its first message proves it speaks our protocol.

    A worker from an older install (a reload that raced an upgrade) is refused
    here rather than misread later.
    """
    if message.get("t") != HELLO:
        raise ProtocolError(f"expected a hello frame first, got {message.get('t')!r}")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"worker speaks protocol {message.get('v')!r}, supervisor speaks {PROTOCOL_VERSION}")
    pid = message.get("pid")
    if type(pid) is not int or pid <= 0:
        raise ProtocolError(f"hello frame has no valid pid: {pid!r}")
    return pid


# -- worker -> supervisor -------------------------------------------------------


def ready(since: float) -> dict[str, object]:
    """A claim found nothing; ``since`` is when it began (CLOCK_MONOTONIC, the supervisor's
    clock too), so that a notification that came in meanwhile still wakes the worker."""
    return {"t": READY, "since": since}


def claimed(jobs: Sequence[ClaimedJob], since: float) -> dict[str, object]:
    """The jobs of one claim, in the order the worker runs them (see claimed_jobs)."""
    return {
        "t": CLAIMED,
        "owner": jobs[0].owner,  # this claim's own: the worker's owner/N
        "since": since,  # the leases are at least this fresh
        "jobs": [[j.id, j.attempt, j.task, j.max_retries] for j in jobs],
    }


def heartbeat() -> dict[str, object]:
    return {"t": HEARTBEAT}


def progress(job_id: int, attempt: int, fraction: float, message: str | None) -> dict[str, object]:
    return {"t": PROGRESS, "id": job_id, "attempt": attempt, "f": fraction, "m": message}


def progress_of(message: Mapping[str, Any]) -> tuple[int, int, float, str | None]:
    """A progress frame's (job id, attempt, fraction, message), checked: the worker runs
    application code, and what it sends is written to the database."""
    job_id, attempt, fraction, text = message.get("id"), message.get("attempt"), message.get("f"), message.get("m")
    if type(job_id) is not int or type(attempt) is not int:
        raise ProtocolError(f"progress frame without a job id and attempt: {dict(message)!r:.200}")
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction <= 1:
        raise ProtocolError(f"progress of job {job_id} is not a fraction from 0 to 1: {fraction!r:.50}")
    if text is not None and (not isinstance(text, str) or len(text) > 200):
        raise ProtocolError(f"progress message of job {job_id} is not a string of at most 200 characters")
    return job_id, attempt, float(fraction), text


def outcome_frame(outcome: Outcome, *, cancel_seen: bool = False) -> dict[str, Any]:
    """The ``result`` frame of an outcome (read back by decode_result).

    ``cancel_seen``: the handler was told of an operator's cancel request before it
    ended. The supervisor then writes the job cancelled, as it would have had it seen
    the request first; a worker never reports a cancelled outcome itself.

    A small UTF-8 result goes as a JSON string, which costs nothing to make. Any
    other goes as base64 (``result_b64``), 4/3 of its size whatever its bytes: as
    a JSON string, text can grow sixfold (a control character is six bytes
    escaped) and hex doubles, so a result well under ``max_result_size`` could
    make a frame over the pipe's cap. With base64, max_result_size may be up to
    burrow.config.MAX_RESULT_BYTES (12 MiB less the rest of the frame's room) and the
    frame still fits in MAX_FRAME_BYTES.
    """
    frame: dict[str, Any] = {
        "t": RESULT,
        "id": outcome.id,
        "attempt": outcome.attempt,
        "kind": outcome.kind.value,
    }
    result = outcome.result
    if result is not None:
        if len(result) <= _TEXT_RESULT_MAX_BYTES:
            try:
                frame["result"] = result.decode()
            except UnicodeDecodeError:
                frame["result_b64"] = base64.b64encode(result).decode("ascii")
        else:
            frame["result_b64"] = base64.b64encode(result).decode("ascii")
    if outcome.error is not None:
        frame["error"] = outcome.error
    if outcome.retry_in_s:
        frame["retry_in_s"] = outcome.retry_in_s
    if outcome.duration_s is not None:
        frame["duration"] = outcome.duration_s
    if cancel_seen:
        frame["cancel_seen"] = True
    return frame


def claimed_jobs(entries: Any, owner: Any) -> list[ClaimedJob]:
    """A claimed frame's jobs, each ``[id, attempt, task, max_retries]``; ProtocolError if
    it names none (the first would be taken as running) or any is malformed."""
    if type(owner) is not str:
        raise ProtocolError(f"a claimed frame's owner is a {type(owner).__name__}, not a string")
    if type(entries) is not list or not entries:
        raise ProtocolError("a claimed frame must name at least one job")
    jobs = []
    for entry in entries:
        if type(entry) is not list or len(entry) != 4:
            raise ProtocolError("a claimed frame's job must be [id, attempt, task, max_retries]")
        job_id, attempt, task, max_retries = entry
        if type(job_id) is not int or type(attempt) is not int or type(task) is not str or type(max_retries) is not int:
            raise ProtocolError("a claimed frame's job must be [id, attempt, task, max_retries]")
        jobs.append(ClaimedJob(job_id, task, b"", 0, attempt, max_retries, owner))
    return jobs


def decode_result(message: dict[str, Any], owner: str) -> Outcome:
    """A result frame's outcome, for the claim ``owner`` it was made under; ProtocolError
    (or the KeyError, TypeError, ValueError of a missing or mistyped field) if malformed,
    or if it is an outcome only a reaper may write."""
    text = message.get("result")
    data = text.encode() if type(text) is str else _result_bytes(message)  # the common case, without a call
    kind = OutcomeKind(message["kind"])
    if kind not in _WORKER_OUTCOMES:
        raise ProtocolError(f"a worker cannot report a {kind.value!r} outcome")
    duration = message.get("duration")
    outcome = Outcome(
        message["id"],
        owner,
        message["attempt"],
        kind,
        result=data,
        error=message.get("error"),
        retry_in_s=float(message.get("retry_in_s", 0.0)),
        duration_s=float(duration) if duration is not None else None,
    )
    if message.get("cancel_seen") is True and kind is not OutcomeKind.RELEASED:
        return stopped_when_asked(outcome)
    return outcome


def _result_bytes(message: dict[str, Any]) -> bytes | None:
    """A result frame's result: a JSON string's UTF-8, or base64 (outcome_frame)."""
    text, packed = message.get("result"), message.get("result_b64")
    if text is not None:
        if type(text) is not str:
            raise ProtocolError(f"a result frame's result is a {type(text).__name__}, not a string")
        return text.encode()
    if packed is not None:
        if type(packed) is not str:
            raise ProtocolError(f"a result frame's result_b64 is a {type(packed).__name__}, not a string")
        try:
            return base64.b64decode(packed, validate=True)
        except binascii.Error as exc:
            raise ProtocolError(f"a result frame's result_b64 is not base64: {exc}") from None
    return None


# -- supervisor -> worker -------------------------------------------------------


def wake() -> dict[str, object]:
    """New jobs were notified: an idle worker claims now rather than at its next poll."""
    return {"t": WAKE}


def stop() -> dict[str, object]:
    """Finish the job running and exit."""
    return {"t": STOP}


def cancel(job_id: int) -> dict[str, object]:
    """A claimed job not to start: an operator cancelled it meanwhile."""
    return {"t": CANCEL, "id": job_id}


def cancelled_id(message: Mapping[str, Any]) -> int | None:
    """The job a cancel frame names; None for any other frame or a malformed id."""
    if message["t"] == CANCEL and isinstance(job_id := message.get("id"), int):
        return job_id
    return None
