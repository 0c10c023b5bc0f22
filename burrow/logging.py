"""The one structlog configuration: JSON lines for machines, console for people.

Every process of a supervisor tree uses it; workers inherit it over fork and bind
their pid. Each job's lines carry job_id, task and attempt because the job runs
inside ``bound_contextvars`` (see burrow.execution).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import orjson
import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(
    format: Literal["console", "json"] | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for this process; ``format=None`` picks console on a TTY."""
    stream = stream or sys.stderr
    if format is None:
        format = "console" if stream.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        # One write per line: print() writes the message and its newline separately, and
        # stderr is unbuffered, so lines from the supervisor and its workers (one shared
        # stream) interleaved mid-line and broke the JSON.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
