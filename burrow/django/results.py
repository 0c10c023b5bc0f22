"""A burrow job as Django sees it: its TaskResult (status, errors per attempt, worker
ids, return value), and the payload and result id that tie the two together.

The result id is ``"<job id>-<nonce>"``: the nonce is random and stored in the job's
payload, so an id is never handed out twice, even where the database gives a job
id again (SQLite reuses the id of a row whose enqueue was rolled back).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any

import orjson

from burrow.backends.records import HistoryEntry, HistoryEvent, owner_host_pid
from burrow.django.compat import Task, TaskError, TaskResult, TaskResultStatus
from burrow.job import JobInfo, JobState

PAYLOAD_MARK = "django_task"  # a payload key no other burrow job has: this job is a Django task's
_RESULT_ID = re.compile(r"([1-9][0-9]{0,18})-([0-9a-f]{16})")
# The note the worker adds to a task's exception: its class's path, which the error
# text (burrow's "Name: message" line and traceback) does not otherwise carry.
NOTE_PREFIX = "burrow.django exception class: "
_NOTE = re.compile("^" + re.escape(NOTE_PREFIX) + r"(\S+)$", re.MULTILINE)
CANCELLED_CLASS = "burrow.errors.JobCancelled"
OTHER_CLASS = "burrow.errors.JobFailed"  # an attempt that ended without the task raising (a lost lease)

_STATUS = {
    JobState.WAITING: TaskResultStatus.READY,  # a burrow workflow step waiting for its parents
    JobState.QUEUED: TaskResultStatus.READY,
    JobState.RUNNING: TaskResultStatus.RUNNING,
    JobState.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    JobState.FAILED: TaskResultStatus.FAILED,
    JobState.CANCELLED: TaskResultStatus.FAILED,
}
_FAILED_ATTEMPT = {HistoryEvent.RETRIED, HistoryEvent.FAILED, HistoryEvent.LEASE_EXPIRED, HistoryEvent.CANCELLED}


def new_nonce() -> str:
    return secrets.token_hex(8)


def result_id(job_id: int, nonce: str) -> str:
    return f"{job_id}-{nonce}"


def parse_result_id(text: object) -> tuple[int, str] | None:
    """(job id, nonce) of a result id; None for anything that is not one."""
    match = _RESULT_ID.fullmatch(text) if isinstance(text, str) else None
    return None if match is None else (int(match[1]), match[2])


def encode_payload(nonce: str, alias: str, args: Sequence[Any], kwargs: dict[str, Any]) -> bytes:
    """A Django task's job payload: the mark, the result id's nonce, the TASKS alias
    it was enqueued on, and the arguments (JSON already: Django checked them)."""
    return orjson.dumps({PAYLOAD_MARK: 1, "nonce": nonce, "backend": alias, "args": list(args), "kwargs": kwargs})


def decode_payload(payload: bytes) -> dict[str, Any] | None:
    """The payload of a Django task's job; None for any other job's."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get(PAYLOAD_MARK) != 1:
        return None
    return data


def task_error(text: str) -> TaskError:
    """A TaskError from the error burrow recorded for an attempt."""
    notes = _NOTE.findall(text)
    path = notes[-1] if notes else OTHER_CLASS
    return TaskError(exception_class_path=path, traceback=_NOTE.sub("", text).rstrip())


def worker_id(owner: str | None, host: str | None = None, pid: int | None = None) -> str:
    """One attempt's worker, as ``host:pid``."""
    if owner is not None:
        host, pid = owner_host_pid(owner)
    return f"{host or '?'}:{pid if pid is not None else '?'}"


def attempts_of(
    state: JobState, attempts: int, owner: str | None, history: Sequence[HistoryEntry]
) -> tuple[list[TaskError], list[str]]:
    """The errors of the failed attempts and the worker of every attempt, since the
    job was last put back in the queue by an operator (which starts it over)."""
    start = max((i + 1 for i, h in enumerate(history) if h.event is HistoryEvent.REQUEUED), default=0)
    failed = [h for h in history[start:] if h.event in _FAILED_ATTEMPT]
    errors = [task_error(h.error or h.event.value) for h in failed]
    by_attempt = {h.attempt: worker_id(None, h.host, h.pid) for h in failed}
    if state is JobState.CANCELLED and not any(h.event is HistoryEvent.CANCELLED for h in failed):
        errors.append(TaskError(exception_class_path=CANCELLED_CLASS, traceback=f"{CANCELLED_CLASS}: the job was cancelled in burrow"))
    current = worker_id(owner) if owner else "?"
    ids = [by_attempt.get(n, current if n == attempts else "?") for n in range(1, attempts + 1)]
    return errors, ids


def task_result(
    task: Task, alias: str, info: JobInfo, nonce: str, payload: dict[str, Any], history: Sequence[HistoryEntry]
) -> TaskResult:
    errors, worker_ids = attempts_of(info.state, info.attempts, info.owner, history)
    result = TaskResult(
        task=task,
        id=result_id(info.id, nonce),
        status=_STATUS[info.state],
        enqueued_at=info.created_at,
        started_at=info.started_at,
        finished_at=info.finished_at if info.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED) else None,
        last_attempted_at=info.started_at,
        args=payload.get("args", []),
        kwargs=payload.get("kwargs", {}),
        backend=alias,
        errors=errors,
        worker_ids=worker_ids,
    )
    if info.state is JobState.SUCCEEDED and info.result is not None:
        object.__setattr__(result, "_return_value", orjson.loads(info.result))
    return result


def needs_history(info: JobInfo) -> bool:
    """Whether the job's history has anything a TaskResult shows (most jobs: no)."""
    return info.attempts > 1 or info.state in (JobState.FAILED, JobState.CANCELLED) or (
        info.state is JobState.QUEUED and info.attempts > 0
    )
