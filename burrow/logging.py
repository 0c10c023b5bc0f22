"""The one structlog configuration: JSON lines for machines, console for people.

Every process of a supervisor tree uses it; workers inherit it over fork and bind
their pid. Each job's lines carry job_id, task and attempt: burrow's own lines name
them, and :func:`add_job_fields` adds them to a handler's (burrow.execution).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict

from burrow.context import running_job

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


_MAX_DEPTH = 32  # nesting kept when a line has to be rebuilt; deeper values are shown as text


def encodable(text: str) -> str:
    """``text`` as UTF-8 can carry it: lone surrogates spelled out (``\\udcff``).

    A surrogate-escaped file name (``os.fsdecode`` of bytes that are not UTF-8)
    holds lone surrogates, which no UTF-8 encoder accepts: orjson, the pipe's
    frames and PostgreSQL all refuse them. Logs and job errors use this.
    """
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="backslashreplace").decode()
    return text


def _orjson_dumps(value: Any, **_: Any) -> str:
    """One JSON line; never raises, so that no log call can fail the code that made it.

    orjson refuses lone surrogates in strings, integers past 64 bits, keys that
    are not strings and nesting past 254 levels, and ``default=str`` covers none
    of them; a line it refuses is rebuilt from plain, encodable parts.
    """
    try:
        return orjson.dumps(value, default=str).decode()
    except Exception:  # orjson.JSONEncodeError (a TypeError), or whatever a value's __str__ raised
        pass
    try:
        return orjson.dumps(_plain(value, 0)).decode()
    except Exception as exc:
        return orjson.dumps({"event": "log_line_unencodable", "error": encodable(_text(exc))}).decode()


def _plain(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth < _MAX_DEPTH:
        if isinstance(value, dict):
            return {encodable(k if isinstance(k, str) else _text(k)): _plain(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_plain(v, depth + 1) for v in value]
    return encodable(_text(value))


def _text(value: object) -> str:
    """str(value), or what it is when its __str__ fails too."""
    try:
        return str(value)
    except Exception as exc:  # an object's own __str__ can raise anything
        return f"<{type(value).__name__}: str() failed: {type(exc).__name__}>"


def add_job_fields(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: job_id, task and attempt of the job running now on every
    line logged inside it (a handler's own lines too), unless the line names them.

    Read from the job's context when a line is written, rather than bound per job
    (``bind_contextvars`` and its reset cost 3.8 us a job, measured in
    benchmarks/README.md, whether or not the job logs anything). An application that
    configures structlog itself adds this processor to keep the fields.
    """
    job = running_job()
    if job is not None:
        event_dict.setdefault("job_id", job.id)
        event_dict.setdefault("task", job.task)
        event_dict.setdefault("attempt", job.attempt)
    return event_dict


def configure_logging(
    format: Literal["console", "json"] | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for this process; ``format=None`` picks console on a TTY."""
    stream = stream or sys.stderr
    if format is None:
        format = "console" if stream.isatty() else "json"
    tail: list[Any]
    if format == "json":
        tail = [json_line]
    else:
        tail = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=stream.isatty()),
        ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, add_job_fields, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        # One write per line: print() writes the message and its newline separately, and
        # stderr is unbuffered, so lines from the supervisor and its workers (one shared
        # stream) interleaved mid-line and broke the JSON.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def json_line(logger: Any, method_name: str, event_dict: EventDict) -> str:
    """The JSON format's last processor: what structlog's ``add_log_level``,
    ``TimeStamper(fmt="iso", utc=True)``, ``format_exc_info`` and ``JSONRenderer``
    write, in one call.

    At burrow's default level each job writes two lines (job_started,
    job_succeeded), and those four processors were 2.4 us of a line's 6.5 in one
    process; in a drain the two lines doubled a worker's CPU per job
    (benchmarks/README.md, "seventh pass"). Exceptions go through
    ``format_exc_info`` as before; the time is written as ``TimeStamper`` writes it,
    its date and seconds formatted once a second.
    """
    event_dict["level"] = _LEVEL_OF.get(method_name, method_name)
    event_dict["timestamp"] = _utc_stamp()
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
    return _orjson_dumps(event_dict)


# As structlog's add_log_level names them: warn is the stdlib's old alias, and
# exception() is error() with the traceback.
_LEVEL_OF = {"warn": "warning", "exception": "error"}


def _utc_stamp() -> str:
    return utc_stamp_of(time.time_ns() // 1000)


# The second last stamped and its text up to the seconds: one tuple, replaced whole, so
# that a thread reading it as another stamps the next second never mixes the two.
_second: tuple[int, str] = (-1, "")


def utc_stamp_of(micros_since_epoch: int) -> str:
    """That time as ``datetime.fromtimestamp(t, timezone.utc).isoformat()`` writes it,
    with ``Z`` for ``+00:00`` (and, like it, no fraction on a whole second): structlog's
    ``TimeStamper(fmt="iso", utc=True)``."""
    global _second
    seconds, micros = divmod(micros_since_epoch, 1_000_000)
    cached = _second
    if cached[0] != seconds:
        cached = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{cached[1]}.{micros:06d}Z" if micros else f"{cached[1]}Z"
