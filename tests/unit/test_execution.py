"""burrow.execution and the JSON log renderer: no outcome and no log line can raise.

A job's failure may carry text no UTF-8 encoder takes (a surrogate-escaped file
name), megabytes of message, or a result over ``max_result_size``; each must end
as that job's outcome, because in a worker an exception here is the worker's death.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from typing import Any

import orjson
import structlog

import burrow
from burrow.backends.records import ClaimedJob, OutcomeKind
from burrow.execution import MAX_ERROR_CHARS, Registration, describe_error, execute
from burrow.logging import _orjson_dumps, encodable
from burrow.options import JobConfig

SURROGATE = os.fsdecode(b"\xff")  # "\udcff"


def _job(max_retries: int = 3) -> ClaimedJob:
    return ClaimedJob(7, "t.job", b"{}", 0, 1, max_retries, "owner")


def _registration(handler: Any) -> Registration:
    return Registration("t.job", handler, JobConfig())


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_encodable_spells_out_lone_surrogates_only() -> None:
    assert encodable("plain") == "plain"
    assert encodable("naïve ✓") == "naïve ✓"
    assert encodable(f"bad name {SURROGATE}") == "bad name \\udcff"
    encodable(f"a{SURROGATE}b\ud800").encode()  # no longer raises


def test_the_json_renderer_never_raises() -> None:
    line = _orjson_dumps(
        {"event": f"e{SURROGATE}", 3: "int key", "big": 2**80, "odd": Unprintable(), "deep": [{"k": SURROGATE}]}
    )
    assert json.loads(line) == {
        "event": "e\\udcff",
        "3": "int key",
        "big": str(2**80),
        "odd": "<Unprintable: str() failed: RuntimeError>",
        "deep": [{"k": "\\udcff"}],
    }
    nested: list[Any] = []
    cursor = nested
    for _ in range(1000):  # past orjson's nesting limit
        cursor.append([])
        cursor = cursor[0]
    assert json.loads(_orjson_dumps({"event": "deep", "v": nested}))["event"] == "deep"


def test_a_surrogate_in_a_permanent_error_fails_the_job_and_logs_one_line() -> None:
    stream = io.StringIO()
    # configure_logging's processors, with no logger cached (a cached proxy outlives the test).
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ],
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    try:

        def handler(_: bytes) -> None:
            raise burrow.PermanentError(f"bad name {SURROGATE}")

        outcome = execute(_job(), _registration(handler), interruptible=False)
    finally:
        structlog.reset_defaults()
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.startswith("PermanentError: bad name \\udcff\n")
    orjson.dumps(outcome.error)  # encodable: a frame and a database can carry it
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is JSON
    [failed] = [line for line in lines if line["event"] == "job_failed"]
    assert failed["error"] == "PermanentError: bad name \\udcff"
    assert (failed["job_id"], failed["task"], failed["attempt"]) == (7, "t.job", 1)


def test_a_huge_error_keeps_its_head_and_tail() -> None:
    try:
        raise ValueError("x" * 5_000_000)
    except ValueError as exc:
        text = describe_error(exc)
    assert len(text) < MAX_ERROR_CHARS + 100
    assert text.startswith("ValueError: xxx") and "characters cut" in text
    assert text.rstrip().endswith("x")  # the traceback's last line: the message again


def test_an_exception_whose_str_fails_is_still_described() -> None:
    def handler(_: bytes) -> None:
        raise Unprintable()

    outcome = execute(_job(), _registration(handler), interruptible=False)
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None and outcome.error.startswith("Unprintable: <exception str() failed>")


def test_a_result_over_max_result_bytes_fails_at_once() -> None:
    def handler(_: bytes) -> None:
        burrow.capture_result(b"x" * 101)

    outcome = execute(_job(), _registration(handler), max_result_bytes=100)
    assert (outcome.kind, outcome.result) == (OutcomeKind.FAILED, None)
    assert outcome.error == "result too large: 101 bytes, over max_result_size (100 bytes)"
    outcome = execute(_job(), _registration(handler), max_result_bytes=101)
    assert (outcome.kind, outcome.result) == (OutcomeKind.SUCCEEDED, b"x" * 101)


def test_a_log_line_that_fails_is_the_jobs_failure_not_an_exception() -> None:
    """A processor of the application's that raises (here on every line): the job
    fails by its policy with burrow's error, and execute() returns."""

    def broken(_: Any, __: str, event_dict: Any) -> Any:
        raise OSError("the log stream is gone")

    structlog.configure(
        processors=[broken], logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False
    )
    try:
        outcome = execute(_job(max_retries=0), _registration(lambda _: None), interruptible=False)
    finally:
        structlog.reset_defaults()
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("burrow could not record the job's outcome: OSError: the log stream is gone")


def test_a_handlers_own_log_lines_carry_the_job() -> None:
    """burrow's logging adds job_id, task and attempt to whatever a handler logs, and
    to nothing logged outside a job; a field the line names itself is kept."""
    from burrow.logging import configure_logging

    stream = io.StringIO()
    configure_logging(format="json", level="info", stream=stream)
    try:
        logger = structlog.get_logger("app")

        def handler(_: bytes) -> None:
            logger.info("resizing", width=640)
            logger.info("for another job", job_id=99)

        outcome = execute(_job(), _registration(handler), interruptible=False)
        logger.info("outside")
    finally:
        structlog.reset_defaults()
    assert outcome.kind is OutcomeKind.SUCCEEDED
    lines = {line["event"]: line for line in map(json.loads, stream.getvalue().splitlines())}
    assert {k: lines["resizing"][k] for k in ("job_id", "task", "attempt", "width")} == {
        "job_id": 7, "task": "t.job", "attempt": 1, "width": 640
    }
    assert lines["for another job"]["job_id"] == 99
    assert (lines["job_started"]["job_id"], lines["job_succeeded"]["task"]) == (7, "t.job")
    assert "job_id" not in lines["outside"]


def _raise_at_one_place(message: str, note: str | None = None) -> None:
    exc = KeyError(message)
    if note is not None:
        exc.add_note(note)
    raise exc


def _raise_chained(message: str) -> None:
    try:
        _raise_at_one_place(message)
    except KeyError as inner:
        raise RuntimeError(f"wrapped {message}") from inner


def _raise_group(message: str) -> None:
    raise ExceptionGroup("several", [ValueError(message), TypeError("t")])


class _AppError(Exception):
    """An application's own error: its name is written with its module."""


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


def _raise_shaped(shape: str) -> None:
    """Errors whose last line traceback writes each its own way, all from one line."""
    errors: dict[str, Callable[[], object]] = {
        "empty": RuntimeError,
        "app": lambda: _AppError("in the app"),
        "unprintable": _Unprintable,
        "os": lambda: OSError(2, "no such file"),
        "syntax": lambda: compile("def broken(:\n", "job.py", "exec"),
    }
    raise errors[shape]()  # type: ignore[misc]  # "syntax" raises while building it


def test_a_failure_at_a_known_place_reads_as_a_fresh_one() -> None:
    """Failures at the same lines reuse their stack's text (a retry storm formats it
    once); every error still reads exactly as Python would write it, with its own
    message and notes, and chained errors and groups are written whole."""
    for raiser, messages in (
        (_raise_at_one_place, ["order 1", "order 2", "ordre\u00e9 3"]),
        (lambda m: _raise_at_one_place(m, note=f"note for {m}"), ["a", "b"]),
        (_raise_chained, ["x", "y"]),
        (_raise_group, ["g1", "g2"]),
    ):
        texts = _texts(raiser, messages)
        for cached, full in texts:
            assert cached == full
        assert len({cached for cached, _ in texts}) == len(messages)  # each names its own message


def _texts(raiser: Callable[[str], object], arguments: list[str]) -> list[tuple[str, str]]:
    """For each argument, the text of what ``raiser`` raised: through the stack cache,
    and written whole."""
    from burrow.execution import _full_traceback_text, _traceback_text

    texts = []
    for argument in arguments:
        try:
            raiser(argument)
        except BaseException as exc:  # noqa: BLE001 - any of the shapes the tests raise
            texts.append((_traceback_text(exc), _full_traceback_text(exc)))
    return texts


def test_a_cached_stack_ends_with_the_line_python_writes() -> None:
    """The error's own line, written without the traceback module on a cached stack,
    reads as Python writes it for every kind of error: an empty message, an
    application's class (named with its module), a __str__ that raises, an OSError's
    errno, a syntax error's lines."""
    shapes = ["empty", "app", "unprintable", "os", "syntax"]
    texts = _texts(_raise_shaped, shapes * 2)  # the second round finds each stack cached
    for cached, full in texts:
        assert cached == full
    assert "test_execution._AppError: in the app" in texts[1][0]
    assert texts[2][0].endswith("_Unprintable: <exception str() failed>\n")
