"""The one exception hierarchy of burrow.

Every error burrow raises derives from :class:`BurrowError`, so an application can
catch burrow's failures without catching its own. Each class's docstring is its
default message; a raised instance usually carries a sharper one that names the
job, task, key or value at fault.
"""

from __future__ import annotations

from burrow.retry import MAX_DELAY_S


class BurrowError(Exception):
    """burrow failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(BurrowError):
    """The configuration is invalid."""


class InvalidTaskName(BurrowError):
    """A task name must match ``[A-Za-z0-9_][A-Za-z0-9_.:-]*`` and be at most 200 characters."""


class DuplicateTask(BurrowError):
    """A handler is already registered for this task name on this queue."""


class TaskNotRegistered(BurrowError):
    """No handler is registered for this task name."""


class PayloadEncodeError(BurrowError):
    """The payload cannot be encoded as JSON; nothing was stored."""


class JobNotFound(BurrowError, LookupError):
    """No job has this id."""


class JobNotFinished(BurrowError):
    """The job has not finished yet, so it has no result."""


class JobFailed(BurrowError):
    """The job failed: its retries are spent or it raised a permanent error."""


class JobCancelled(BurrowError):
    """The job was cancelled before it ran."""


class WaitTimeout(BurrowError, TimeoutError):
    """The job did not finish within the time given."""


class LeaseLost(BurrowError):
    """This process no longer holds the job's lease; another attempt owns it."""


class BackendError(BurrowError):
    """The database could not be reached or refused the operation."""


class ProtocolError(BurrowError):
    """A malformed frame crossed a supervisor/worker pipe."""


class PermanentError(BurrowError):
    """The job can never succeed; it is failed at once, without retries."""


class PayloadDecodeError(PermanentError):
    """The stored payload cannot be decoded into the handler's payload type.

    ``fields`` names each bad field and what was wrong with it ("$.a: expected int,
    got str"), never its value: a job's stored error is the message and these lines,
    not the decoder's traceback (burrow.execution.describe_error).
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class ResultEncodeError(PermanentError):
    """The handler's return value cannot be encoded as JSON; it would not be next time
    either, so the job fails at once."""


class RetryAfter(BurrowError):
    """Not now: run the job again after ``seconds``, without spending an attempt.

    A handler raises it to snooze its job (a rate limit, a resource not ready). The
    job goes back to the queue; a job snoozed more than 1,000 times is failed, so a
    bug cannot snooze forever.
    """

    MAX_SECONDS = MAX_DELAY_S

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= self.MAX_SECONDS:
            raise BurrowError(f"RetryAfter takes 0 to {self.MAX_SECONDS:g} seconds, got {seconds!r}")
        super().__init__(f"retry after {seconds:g}s")
        self.seconds = float(seconds)
