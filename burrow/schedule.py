"""Periodic jobs: slot arithmetic (pure) and the ``Periodic`` registration.

A schedule is a rule that maps a time to its slot: the latest instant at or before
it when the job is due. Every host computes the same slots (``every`` counts whole
intervals since the Unix epoch; ``cron`` is read by croniter in the schedule's time
zone), so the database can make each slot happen once: the supervisor that moves a
schedule's ``last_slot`` forward is the one that enqueues that slot's job, in the
same transaction (``Backend.enqueue_slot``). There is no leader and no extra
process; a supervisor that was down enqueues only the latest slot it missed.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Unpack

from burrow import codec
from burrow.errors import BurrowError
from burrow.job import EnqueueOptions, JobKeywords
from burrow.options import check_task_name

if TYPE_CHECKING:
    from burrow.tasks import Queue, TaskDefinition

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
MAX_NAME = 200


class SlotRule(Protocol):
    """When a schedule's jobs are due."""

    def latest(self, now: dt.datetime) -> dt.datetime:
        """The latest slot at or before ``now``."""

    def after(self, slot: dt.datetime) -> dt.datetime:
        """The first slot strictly after ``slot``."""

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Every:
    """Every ``interval_s`` seconds, on whole multiples of it since the epoch (UTC)."""

    interval_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s >= 1):
            raise BurrowError(f"every must be at least 1 second, got {self.interval_s!r}")

    def latest(self, now: dt.datetime) -> dt.datetime:
        elapsed = (now - EPOCH).total_seconds()
        return EPOCH + dt.timedelta(seconds=math.floor(elapsed / self.interval_s) * self.interval_s)

    def after(self, slot: dt.datetime) -> dt.datetime:
        return self.latest(slot) + dt.timedelta(seconds=self.interval_s)

    def describe(self) -> str:
        return f"every {self.interval_s:g}s"


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression in a time zone: 5 fields, or 6 with seconds first.

    Across a daylight-saving change a time that does not exist runs at the first
    time after it, and a fixed time that happens twice (the hour repeated when the
    clocks go back) runs once, as cron daemons do; expressions whose hour field is
    ``*`` follow real time through the repeated hour.
    """

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        from croniter import croniter

        fields = self.expression.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(self.expression, second_at_beginning=len(fields) == 6):
            raise BurrowError(
                f"bad cron expression {self.expression!r}: use 5 fields (minute hour day month weekday), "
                "or 6 with seconds first"
            )
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise BurrowError(f"unknown time zone {self.timezone!r} (use an IANA name such as 'Europe/Berlin')") from None

    def _iter(self, start: dt.datetime) -> Any:
        from croniter import croniter

        seconds_first = len(self.expression.split()) == 6
        return croniter(self.expression, start.astimezone(zoneinfo.ZoneInfo(self.timezone)), second_at_beginning=seconds_first)

    def _repeats_by_wall_clock(self) -> bool:
        """Whether the hour field names fixed hours (then a repeated wall-clock time runs once)."""
        fields = self.expression.split()
        hour = fields[2] if len(fields) == 6 else fields[1]
        return hour != "*"

    def latest(self, now: dt.datetime) -> dt.datetime:
        it = self._iter(now + dt.timedelta(microseconds=1))
        slot: dt.datetime = it.get_prev(dt.datetime)
        if self._repeats_by_wall_clock() and slot.fold == 1:
            earlier: dt.datetime = it.get_prev(dt.datetime)
            if earlier.replace(fold=0) == slot.replace(fold=0):
                slot = earlier  # the second pass through a repeated hour: the first counts
        return slot.astimezone(UTC)

    def after(self, slot: dt.datetime) -> dt.datetime:
        it = self._iter(slot)
        nxt: dt.datetime = it.get_next(dt.datetime)
        local_slot = slot.astimezone(zoneinfo.ZoneInfo(self.timezone))
        if self._repeats_by_wall_clock() and nxt.replace(tzinfo=None) == local_slot.replace(tzinfo=None, fold=0):
            nxt = it.get_next(dt.datetime)  # the same wall-clock time again, an hour later: skip it
        return nxt.astimezone(UTC)

    def describe(self) -> str:
        return f"cron {self.expression} ({self.timezone})"


def slot_rule(*, cron: str | None, every: dt.timedelta | float | None, timezone: str = "UTC") -> SlotRule:
    """The rule for ``cron`` or ``every`` (exactly one of them)."""
    if (cron is None) == (every is None):
        raise BurrowError("a periodic job takes cron= or every=, exactly one")
    if cron is not None:
        if not isinstance(cron, str):
            raise BurrowError(f"cron must be a string, got {cron!r}")
        return Cron(cron, timezone)
    seconds = every.total_seconds() if isinstance(every, dt.timedelta) else every
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise BurrowError(f"every must be a timedelta or seconds, got {every!r}")
    if timezone != "UTC":
        raise BurrowError("every= counts from the epoch in UTC: a timezone applies to cron= only")
    return Every(float(seconds))


@dataclass(frozen=True, slots=True)
class Periodic:
    """A job enqueued once per slot of ``rule``, under ``name`` (the database's key).

    Register it from ``register_jobs`` (``.register(q)``), as a task is.
    """

    name: str
    task: str
    payload: bytes
    rule: SlotRule
    options: EnqueueOptions = EnqueueOptions()  # the task's, for a typed task; a string's: the registered task's

    def register(self, q: Queue) -> None:
        add = getattr(q, "add_schedule", None)
        if add is None:
            raise BurrowError(f"{type(q).__name__} cannot run periodic jobs")
        add(self)

    def describe(self) -> str:
        """The name, and the task and rule where the name does not already say them."""
        default = f"{self.task} {self.rule.describe()}"
        return self.name if self.name == default else f"{self.name} ({default})"


def periodic(
    task: TaskDefinition[Any] | str,
    payload: Any,
    *,
    cron: str | None = None,
    every: dt.timedelta | float | None = None,
    name: str | None = None,
    timezone: str = "UTC",
    **options: Unpack[JobKeywords],
) -> Periodic:
    """Enqueue ``task`` with ``payload`` once per slot of ``cron`` or ``every``, however many
    supervisors run. ``name`` keys the schedule in the database (default: the task and
    the rule); give one when a task has several schedules with different payloads.
    ``options`` (priority, max_retries, queue) override the task's for these jobs."""
    rule = slot_rule(cron=cron, every=every, timezone=timezone)
    given = EnqueueOptions.of(options)
    if isinstance(task, str):
        task_name, data = check_task_name(task), codec.encode(payload)
    else:
        task_name, data, given = task.name, task.encode(payload), given.over(task.config)
    name = name if name is not None else f"{task_name} {rule.describe()}"
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise BurrowError(f"a schedule name must be a string of 1 to {MAX_NAME} characters, got {name!r}")
    return Periodic(name, task_name, data, rule, given)
