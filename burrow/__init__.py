"""burrow: a job queue whose jobs live in SQLite or PostgreSQL.

This module re-exports the public API; every name is the same object as in
``burrow.tasks``.
"""

from burrow.context import JobContext
from burrow.tasks import (
    Enqueuer,
    HasJobs,
    JobConfig,
    JobHandlerFunc,
    JobInfo,
    JobOption,
    JobQueue,
    JobState,
    PermanentError,
    Queue,
    ResultCapture,
    ResultTask,
    TaskDefinition,
    capture_result,
    connect,
    current_job,
    define_result_task,
    define_task,
    with_backoff,
    with_max_retries,
    with_priority,
    with_result_capture,
    with_timeout,
)

__all__ = [
    "Enqueuer",
    "HasJobs",
    "JobConfig",
    "JobContext",
    "JobHandlerFunc",
    "JobInfo",
    "JobOption",
    "JobQueue",
    "JobState",
    "PermanentError",
    "Queue",
    "ResultCapture",
    "ResultTask",
    "TaskDefinition",
    "capture_result",
    "connect",
    "current_job",
    "define_result_task",
    "define_task",
    "with_backoff",
    "with_max_retries",
    "with_priority",
    "with_result_capture",
    "with_timeout",
]
