"""Pipe frames: round trips in any chunking, and nothing but ProtocolError on junk."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from burrow.errors import ProtocolError
from burrow.supervisor.protocol import (
    HELLO,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    READY,
    FrameDecoder,
    check_hello,
    encode_frame,
    hello,
    read_frame,
    write_frame,
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
messages = st.builds(
    lambda tag, rest: {**rest, "t": tag},
    st.text(),
    st.dictionaries(st.text(), json_values, max_size=5),
)


def chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """``data`` split at the given offsets (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:]):
        yield data[start:end]


@given(st.lists(messages, min_size=1, max_size=5), st.lists(st.integers(0, 10**6), max_size=20))
def test_round_trip_in_any_chunking(sent: list[dict[str, Any]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(m) for m in sent)
    decoder = FrameDecoder()
    received = [m for chunk in chunks(stream, cuts) for m in decoder.feed(chunk)]
    assert received == sent
    assert decoder.pending == 0


@given(st.binary(max_size=200), st.lists(st.integers(0, 1000), max_size=5))
def test_junk_decodes_or_raises_protocol_error(junk: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder()
    try:
        for chunk in chunks(junk, cuts):
            for message in decoder.feed(chunk):
                assert isinstance(message, dict) and isinstance(message["t"], str)
    except ProtocolError:
        pass


@given(st.binary(max_size=64))
def test_framed_junk_raises_protocol_error_or_is_a_message(body: bytes) -> None:
    try:
        [message] = FrameDecoder().feed(struct.pack(">I", len(body)) + body)
    except ProtocolError:
        return
    assert isinstance(message["t"], str)


def test_feed_keeps_a_bytearray_from_the_caller_intact() -> None:
    frame = bytearray(encode_frame({"t": "x"}) * 2)
    decoder = FrameDecoder()
    assert decoder.feed(frame[:7]) == []
    assert decoder.feed(frame[7:]) == [{"t": "x"}, {"t": "x"}]
    assert decoder.feed(frame) == [{"t": "x"}, {"t": "x"}]


def test_oversized_length_is_refused_before_the_body() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack(">I", MAX_FRAME_BYTES)[:3]) == []
    with pytest.raises(ProtocolError, match="over the"):
        decoder.feed(struct.pack(">I", MAX_FRAME_BYTES + 1)[3:])
    with pytest.raises(ProtocolError, match="over the"):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'"t"', "JSON str, not an object"),
        (b'{"x": 1}', 'no string type tag under "t"'),
        (b'{"t": 3}', 'no string type tag under "t"'),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies(body: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)


def test_encode_refuses_what_the_reader_would() -> None:
    with pytest.raises(ProtocolError, match='type tag under "t"'):
        encode_frame({"x": 1})
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode_frame({"t": "x", "v": object()})
    with pytest.raises(ProtocolError, match="cannot encode"):
        encode_frame({"t": "x", "v": 2**64})
    with pytest.raises(ProtocolError, match="byte cap"):
        encode_frame({"t": "x", "v": "a" * MAX_FRAME_BYTES})


def test_encode_is_length_then_orjson() -> None:
    frame = encode_frame({"t": READY, "n": 1})
    body = orjson.dumps({"t": READY, "n": 1})
    assert frame == struct.pack(">I", len(body)) + body


def test_hello_carries_version_and_pid() -> None:
    message = hello()
    assert message == {"t": HELLO, "v": PROTOCOL_VERSION, "pid": os.getpid()}
    assert check_hello(message) == os.getpid()
    with pytest.raises(ProtocolError, match="protocol 0"):
        check_hello({"t": HELLO, "v": 0, "pid": 1})
    with pytest.raises(ProtocolError, match="expected a hello"):
        check_hello({"t": READY})
    with pytest.raises(ProtocolError, match="no valid pid"):
        check_hello({"t": HELLO, "v": PROTOCOL_VERSION, "pid": "1"})


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_write_and_read_over_a_pipe(pipe: tuple[int, int]) -> None:
    r, w = pipe
    sent: list[dict[str, object]] = [{"t": READY}, {"t": "result", "id": 7, "ok": True, "result": "x" * 10_000}]
    for message in sent:
        write_frame(w, message)
    os.close(w)
    decoder = FrameDecoder()
    assert [read_frame(r, decoder), read_frame(r, decoder)] == sent
    assert read_frame(r, decoder) is None


def test_large_frame_through_a_pipe_with_a_reader_thread(pipe: tuple[int, int]) -> None:
    r, w = pipe
    message = {"t": "result", "result": "y" * (1 << 20)}  # far above the pipe buffer
    got: list[dict[str, Any] | None] = []
    reader = threading.Thread(target=lambda: got.append(read_frame(r, FrameDecoder())))
    reader.start()
    write_frame(w, message)
    reader.join(timeout=10)
    assert got == [message]


def test_truncated_frame_at_eof(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, encode_frame({"t": READY, "pad": "z" * 100})[:-5])
    os.close(w)
    with pytest.raises(ProtocolError, match="truncated frame"):
        read_frame(r, FrameDecoder())


def test_truncated_header_at_eof(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"\x00\x00")
    os.close(w)
    with pytest.raises(ProtocolError, match="truncated frame"):
        read_frame(r, FrameDecoder())


def test_write_to_a_closed_pipe_raises_broken_pipe(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(r)
    with pytest.raises(BrokenPipeError):
        write_frame(w, {"t": READY})


def test_progress_frames_are_checked() -> None:
    from burrow.supervisor.protocol import progress, progress_of

    assert progress_of(progress(7, 2, 0.5, "half")) == (7, 2, 0.5, "half")
    assert progress_of(progress(7, 2, 1, None)) == (7, 2, 1.0, None)
    for bad in (
        {"t": "progress", "id": "7", "attempt": 1, "f": 0.5, "m": None},
        {"t": "progress", "id": 7, "attempt": 1, "f": 1.5, "m": None},
        {"t": "progress", "id": 7, "attempt": 1, "f": True, "m": None},
        {"t": "progress", "id": 7, "attempt": 1, "f": 0.5, "m": "x" * 201},
        {"t": "progress", "id": 7, "attempt": 1, "f": 0.5, "m": 3},
    ):
        with pytest.raises(ProtocolError):
            progress_of(bad)


def test_a_handler_that_saw_a_cancel_reports_a_cancelled_job() -> None:
    """A handler told of a cancel request stopped when asked: however it returned, the
    supervisor writes the cancel (its result dropped), and a worker still cannot name
    a cancelled outcome itself."""
    from burrow.backends.records import CANCELLED_BY_OPERATOR, Outcome, OutcomeKind
    from burrow.supervisor.protocol import decode_result, outcome_frame

    done = Outcome(7, "w", 2, OutcomeKind.SUCCEEDED, result=b'"stopped when asked"', duration_s=0.25)
    assert decode_result(outcome_frame(done), "w") == done
    cancelled = decode_result(outcome_frame(done, cancel_seen=True), "w")
    assert (cancelled.kind, cancelled.result, cancelled.error, cancelled.attempt) == (
        OutcomeKind.CANCELLED, None, CANCELLED_BY_OPERATOR, 2
    )
    released = Outcome(7, "w", 2, OutcomeKind.RELEASED)
    assert decode_result(outcome_frame(released, cancel_seen=True), "w").kind is OutcomeKind.RELEASED
    with pytest.raises(ProtocolError):
        decode_result({"t": "result", "id": 7, "attempt": 2, "kind": "cancelled"}, "w")
