"""burrow: a job queue whose jobs live in SQLite or PostgreSQL.

The one facade: every public name, imported from the module that defines it.
Nothing else in the package re-exports (docs/architecture.md, "The rooms").
"""

from burrow.aqueue import AsyncJobQueue, aconnect
from burrow.context import JobContext, ResultCapture, capture_result, current_job, with_result_capture
from burrow.errors import PermanentError, RetryAfter
from burrow.execution import JobHandlerFunc
from burrow.job import JobInfo, JobState
from burrow.options import (
    JobConfig,
    JobOption,
    with_backoff,
    with_concurrency,
    with_max_retries,
    with_priority,
    with_queue,
    with_timeout,
    with_unique,
)
from burrow.queue import JobQueue, connect
from burrow.schedule import Periodic, periodic
from burrow.tasks import (
    AsyncEnqueuer,
    AsyncResults,
    Enqueuer,
    HasJobs,
    Queue,
    ResultTask,
    TaskDefinition,
    define_result_task,
    define_task,
)
from burrow.version import __version__
from burrow.workflow import Step, Workflow

__all__ = [
    "AsyncEnqueuer",
    "AsyncJobQueue",
    "AsyncResults",
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
    "Periodic",
    "Queue",
    "ResultCapture",
    "ResultTask",
    "RetryAfter",
    "Step",
    "TaskDefinition",
    "Workflow",
    "__version__",
    "aconnect",
    "capture_result",
    "connect",
    "current_job",
    "define_result_task",
    "define_task",
    "periodic",
    "with_backoff",
    "with_max_retries",
    "with_priority",
    "with_concurrency",
    "with_queue",
    "with_result_capture",
    "with_timeout",
    "with_unique",
]
