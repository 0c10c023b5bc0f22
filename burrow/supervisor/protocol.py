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

Messages (DESIGN.md section 5). Worker -> supervisor: ``hello`` (first, with
``"v"`` and ``"pid"``), ``ready``, ``claimed`` (the claim's ``"owner"``, its
``"jobs"``, and ``"since"``: the monotonic time the claim began, from which the
outage guard ages the leases), ``heartbeat``, ``result``.
Supervisor -> worker: ``wake``, ``stop``, ``cancel``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any, Final

import orjson

from burrow.errors import ProtocolError

__all__ = [
    "CANCEL",
    "CLAIMED",
    "HEARTBEAT",
    "HELLO",
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "READY",
    "RESULT",
    "STOP",
    "WAKE",
    "FrameDecoder",
    "check_hello",
    "encode_frame",
    "hello",
    "read_frame",
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
RESULT: Final = "result"
WAKE: Final = "wake"
STOP: Final = "stop"
CANCEL: Final = "cancel"  # {"id": job}: a claimed job not to start (cancelled meanwhile)

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


def hello(pid: int | None = None) -> dict[str, object]:
    """A worker's first message: its protocol version and pid."""
    return {"t": HELLO, "v": PROTOCOL_VERSION, "pid": os.getpid() if pid is None else pid}


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
