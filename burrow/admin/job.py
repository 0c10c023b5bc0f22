"""``/jobs/{id}``: one job. Its fields, error with traceback, payload and result
shown safely whatever their bytes, and every attempt with where it ran and how it
ended; an unknown id is the 404 page.

Everything below the crumbs is one fragment (``/parts/jobs/{id}``) that the refresh
script fetches again every few seconds while the job is not finished: its state and
actions, progress bar and message, times, error, result and attempts (and the
payload, which sits among them). The fragment of a finished job carries no refresh
attribute, so the page stops asking.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from burrow.admin import paths, web
from burrow.backends.records import HistoryEntry, HistoryEvent, owner_host_pid
from burrow.job import FIELDS, FINISHED_STATES, JobInfo, JobState

SHOWN_CHARS = 64 * 1024  # beyond this a payload is cut: a page is no place for a blob
HEX_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Shown:
    """Stored bytes as the page shows them: pretty JSON, text, or a hex dump."""

    kind: str  # "json", "text" or "binary"
    text: str
    size: int
    cut: bool  # only the beginning is shown


def show_bytes(data: bytes) -> Shown:
    """JSON indented; other UTF-8 as text; anything else as a hex dump of its start.

    The template escapes whatever this returns, so bytes holding markup stay text.
    """
    try:
        text = orjson.dumps(orjson.loads(data), option=orjson.OPT_INDENT_2).decode()
        kind = "json"
    except orjson.JSONDecodeError:
        try:
            text, kind = data.decode("utf-8"), "text"
        except UnicodeDecodeError:
            return Shown("binary", hexdump(data[:HEX_BYTES]), len(data), len(data) > HEX_BYTES)
    return Shown(kind, text[:SHOWN_CHARS], len(data), len(text) > SHOWN_CHARS)


def hexdump(data: bytes) -> str:
    """16 bytes a line: offset, hex, and the printable ASCII ("." for the rest)."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        ascii_ = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One row of the attempts table: a run, or an operator's retry between runs."""

    attempt: int | None  # None for an operator's retry, which is no run
    outcome: str
    host: str | None
    pid: int | None
    duration_s: float | None
    at: dt.datetime | None  # when it ended (started, for the one running)
    error: str | None
    note: str | None = None


def attempts(job: JobInfo, history: list[HistoryEntry]) -> list[Attempt]:
    """The history's attempts, and the current one if it is running or succeeded: the
    history records only attempts that ended without success (and operators' retries)."""
    rows = []
    for h in history:
        if h.event is HistoryEvent.REQUEUED:
            rows.append(Attempt(None, str(h.event), None, None, None, h.at, None, h.error))
        else:
            rows.append(Attempt(h.attempt, str(h.event), h.host, h.pid, h.duration_s, h.at, h.error))
    if job.state is JobState.RUNNING:
        host, pid = owner_host_pid(job.owner) if job.owner else (None, None)
        rows.append(Attempt(job.attempts, "running", host, pid, None, job.started_at, None))
    elif job.state is JobState.SUCCEEDED and job.started_at and job.finished_at:
        duration = (job.finished_at - job.started_at).total_seconds()
        rows.append(Attempt(job.attempts, "succeeded", None, None, duration, job.finished_at, None))
    return rows


def job_view(request: Request) -> dict[str, Any]:
    """The job's data, read through JobQueue (the job, then its history): what the
    page and its live fragment render."""
    q = web.queue(request)
    job_id = web.job_id(request)
    job = q.job(job_id)  # JobNotFound: the 404 page
    return {
        "job": job,
        # A finished job does not change by itself any more: its fragment stops the refresh.
        "finished": job.state in FINISHED_STATES,
        "fields": FIELDS,
        "payload": show_bytes(job.payload),
        "result": None if job.result is None else show_bytes(job.result),
        "attempts": attempts(job, q.history(job_id)),
        # Where the forms come back to: the page, also when the fragment rendered them.
        "back": paths.relative(request, "job", job_id=job_id),
        "list": paths.relative(request, "jobs", {"task": job.task}),
    }


def job_page(request: Request) -> Response:
    return web.render(request, "job.html", {"nav": "jobs", **job_view(request)})


def job_part(request: Request) -> Response:
    return web.render(request, "job_body.html", job_view(request), whole=False)


routes = [
    Route("/jobs/{job_id:int}", job_page, name="job"),
    Route("/parts/jobs/{job_id:int}", job_part, name="job_part"),
]
