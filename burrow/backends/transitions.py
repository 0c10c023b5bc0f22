"""What each outcome kind does to its job's row: the one table both dialects write from.

One rule stands beside the table: a job whose cancellation was requested while it
ran never goes back to the queue; where the table says queued, it is cancelled
(and finished) instead. Both dialects' statement spell it out next to the state.

Both backends run one kind-agnostic, fenced UPDATE for a whole batch of outcomes
(``sqlite.py`` and ``postgres.py`` each write it once, in their own SQL). Every
difference between kinds is a value in that statement, computed here from
:data:`TRANSITIONS` by :func:`change`: the new state, whether the attempt is given
back, whether the job is finished or delayed, which history event it leaves and
whether consumers are woken. A new outcome kind is one new row in the table.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from burrow.backends.records import HistoryEvent, Outcome, OutcomeKind
from burrow.job import JobState
from burrow.retry import MAX_DELAY_S


class Wake(enum.Enum):
    """Whether writing the outcome tells idle consumers to look for jobs."""

    NEVER = "never"
    ALWAYS = "always"
    WHEN_DUE = "when_due"  # only when the job is due at once (a retry without delay)


@dataclass(frozen=True, slots=True)
class Transition:
    """The row after an outcome of one kind. Every transition also clears the lease
    (owner, lease_expires_at), stores the outcome's result (None but on success) and
    keeps the last error unless the outcome carries a new one."""

    state: JobState
    gives_back_attempt: bool = False  # attempts - 1: the run does not count
    finishes: bool = False  # finished_at = now
    delays: bool = False  # run_at = now + the outcome's retry_in_s
    snoozes: bool = False  # snoozes + 1
    history: HistoryEvent | None = None
    history_needs_error: bool = False  # leave history only if the outcome has an error
    wake: Wake = Wake.NEVER
    needs_expired_lease: bool = False  # a reaper's write: only while the lease is still expired


TRANSITIONS: Mapping[OutcomeKind, Transition] = {
    OutcomeKind.SUCCEEDED: Transition(JobState.SUCCEEDED, finishes=True),
    OutcomeKind.FAILED: Transition(JobState.FAILED, finishes=True, history=HistoryEvent.FAILED),
    OutcomeKind.RETRY: Transition(JobState.QUEUED, delays=True, history=HistoryEvent.RETRIED, wake=Wake.WHEN_DUE),
    # Claimed but never started: no history. Started and cut short by shutdown: its
    # attempt is given back, but it ran, so it leaves a "released" entry.
    OutcomeKind.RELEASED: Transition(
        JobState.QUEUED,
        gives_back_attempt=True,
        history=HistoryEvent.RELEASED,
        history_needs_error=True,
        wake=Wake.ALWAYS,
    ),
    # RetryAfter: later, and the run does not count.
    OutcomeKind.SNOOZED: Transition(
        JobState.QUEUED,
        gives_back_attempt=True,
        delays=True,
        snoozes=True,
        history=HistoryEvent.SNOOZED,
        wake=Wake.WHEN_DUE,
    ),
    OutcomeKind.CANCELLED: Transition(JobState.CANCELLED, finishes=True, history=HistoryEvent.CANCELLED),
    OutcomeKind.EXPIRED_RETRY: Transition(
        JobState.QUEUED,
        delays=True,
        history=HistoryEvent.LEASE_EXPIRED,
        wake=Wake.WHEN_DUE,
        needs_expired_lease=True,
    ),
    OutcomeKind.EXPIRED_FAILED: Transition(
        JobState.FAILED, finishes=True, history=HistoryEvent.LEASE_EXPIRED, needs_expired_lease=True
    ),
}


class Change(NamedTuple):
    """One outcome as the values of the batched UPDATE (and its history row)."""

    state: str
    give_back: int  # subtracted from attempts: 0 or 1
    snooze: int  # added to snoozes: 0 or 1
    finishes: bool
    delay_s: float | None  # None: run_at unchanged
    event: str | None  # the history event, None for none
    wakes: bool
    expired_only: bool


def _changes() -> dict[tuple[OutcomeKind, bool, bool], Change]:
    """Every (kind, has error, due now) combination, computed once: this runs per job."""
    table = {}
    for kind, t in TRANSITIONS.items():
        for has_error in (False, True):
            for due_now in (False, True):
                event = t.history if t.history is not None and (has_error or not t.history_needs_error) else None
                wakes = t.wake is Wake.ALWAYS or (t.wake is Wake.WHEN_DUE and due_now)
                table[kind, has_error, due_now] = Change(
                    t.state.value, int(t.gives_back_attempt), int(t.snoozes), t.finishes, 0.0 if t.delays else None,
                    None if event is None else event.value, wakes, t.needs_expired_lease,
                )
    return table


_CHANGES = _changes()


def change(outcome: Outcome) -> Change:
    """What writing ``outcome`` does, as values; ``delay_s`` is the outcome's own delay,
    cut to [0, MAX_DELAY_S] (NaN reads as 0): no value that reaches SQL can overflow."""
    delay_s = float(outcome.retry_in_s)
    due_now = not delay_s > 0  # NaN included
    base = _CHANGES[outcome.kind, outcome.error is not None, due_now]
    if base.delay_s is None or due_now:
        return base
    return base._replace(delay_s=min(delay_s, MAX_DELAY_S))


def uniform_change(changes: Sequence[Change]) -> Change | None:
    """The batch's one change, when every outcome changes its row alike and none needs
    a delay, history, a wake-up or the expiry check: the usual batch, all successes.

    Such a batch takes a plain UPDATE with the change's values written into its text
    (:func:`uniform_assignments`): fewer parameters per row and, on PostgreSQL, no
    CTEs to plan, which is most of a small batch's cost.
    """
    first = changes[0]
    if not _plain(first):
        return None
    return first if all(c == first for c in changes) else None


def plain_change(changes: Sequence[Change]) -> Change | None:
    """The change most of a mixed batch shares, when it is one :func:`uniform_change`
    would take alone (the successes beside a few retries)."""
    counts = Counter(c for c in changes if _plain(c))
    return counts.most_common(1)[0][0] if counts else None


class BatchSplit(NamedTuple):
    """A batch's rows by the UPDATE that writes them: those of ``plain`` (None: no row
    is plain) the uniform one, the ``rest`` the general one. Indices into the batch."""

    plain: Change | None
    picked: Sequence[int]
    rest: list[int]


def split_batch(changes: Sequence[Change]) -> BatchSplit:
    """Both dialects write a batch so: a uniform batch (the usual one, checked first and
    cheaply) whole by the uniform UPDATE; a mixed one's plain rows by it too, beside
    the general UPDATE for the rest (on PostgreSQL in one statement, on SQLite in one
    transaction). The general UPDATE cost 14.4-15.0 us a row against 11.3 on
    PostgreSQL, 2 us a row more on SQLite (benchmarks/README.md, sixth and seventh
    passes)."""
    if (uniform := uniform_change(changes)) is not None:
        return BatchSplit(uniform, range(len(changes)), [])
    plain = plain_change(changes)
    picked: list[int] = []
    rest: list[int] = []
    for i, c in enumerate(changes):
        (picked if c == plain else rest).append(i)
    return BatchSplit(plain, picked, rest)


def _plain(c: Change) -> bool:
    """No delay, history, wake-up, expiry check or snooze: values the SQL text can hold."""
    return c.delay_s is None and c.event is None and not c.wakes and not c.expired_only and not c.snooze


def uniform_assignments(c: Change, now: str) -> str:
    """The SET items a uniform change fixes, as SQL literals; ``now`` is the dialect's time."""
    assert c.state in {s.value for s in JobState}  # written into SQL text: only our own values
    return f"state = '{c.state}', attempts = attempts - {int(c.give_back)}, finished_at = {now if c.finishes else 'NULL'}"
