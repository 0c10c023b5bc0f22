"""The outcome outbox: outcomes the supervisor owes the database, written in batches.

Workers report each job as it ends; writing each report in its own transaction
would make commits, not jobs, the limit. The outbox gathers them for a few
milliseconds (one write per ``flush_interval`` at most) and writes them in one
round trip, keeps them when the database is away, and gives back what exited
workers still hold once their reported outcomes are in. It knows nothing of workers or the loop: the inbox,
the exit handling and the services put outcomes in (:meth:`Outbox.settle`), the
loop asks when it is due and flushes.

On PostgreSQL a write runs on a thread of its own (write-behind), one at a time,
while the loop goes on reading the workers' pipes: a write waits out a network
round trip and the server's work, and a loop blocked in it let the pipes fill and
the workers stall on them (benchmarks/README.md, "Issue 27, fourth pass"). The
thread only talks to the database; what a write's outcome means (counts, logs, a
failed write's outcomes kept for the next) is settled on the loop, which the
thread wakes through :attr:`Outbox.wake_fd`. A forced flush (a cancel written off,
the reaper, shutdown) waits for the write under way and writes in the loop.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import structlog

from burrow.backends.contract import Backend
from burrow.backends.records import Outcome
from burrow.errors import BackendError
from burrow.supervisor.telemetry import Telemetry

log = structlog.get_logger("burrow.supervisor")

# A flush this large already costs little per outcome; waiting for more only delays them.
FLUSH_AT_OUTCOMES = 500
# While a write is under way the loop reads on, until this many outcomes wait; then it
# waits for the write, and the workers' pipes hold the rest, as they did before writes
# left the loop. Unbounded, the supervisor held a drain's backlog in its heap (up to
# 8,800 outcomes): 4 MB more RSS after 200,000 jobs, for a drain no faster than
# with this bound (benchmarks/README.md, "Issue 27, fourth pass").
MOST_PENDING_WHILE_WRITING = 1_000
_RETRY_S = 0.5  # after a failed write


@dataclass(slots=True)
class _Write:
    """One write: what it sends, and what came of it (filled by the thread that ran it)."""

    batch: list[Outcome]
    owners: list[str]  # exited workers whose leftover claims to give back once the batch is in
    written: bool = False
    lost: list[int] = field(default_factory=list)
    released: list[tuple[str, list[int]]] = field(default_factory=list)
    unreleased: list[str] = field(default_factory=list)  # owners left for the next write
    error: BackendError | None = None
    crash: BaseException | None = None  # not the database's doing: a bug, raised on the loop

    def run(self, backend: Backend) -> None:
        """Talk to the database only: no logs, no counts (this may run off the loop)."""
        try:
            self.lost = backend.finish(self.batch)
        except BackendError as exc:
            self.error = exc
            return
        self.written = True
        for index, owner in enumerate(self.owners):
            try:
                released = backend.release_owner(owner)
            except BackendError as exc:
                self.error, self.unreleased = exc, self.owners[index:]
                return
            if released:
                self.released.append((owner, released))


class _Writer:
    """The thread that runs the outbox's writes, one at a time; a byte on a pipe says one is done."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cond = threading.Condition()
        self.todo: _Write | None = None
        self.running = False
        self.closed = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.thread: threading.Thread | None = None

    def start(self, write: _Write) -> None:
        with self.cond:
            self.todo, self.running = write, True
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="burrow-outbox", daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def wait(self) -> None:
        with self.cond:
            while self.running:
                self.cond.wait()

    def busy(self) -> bool:
        with self.cond:
            return self.running

    def close(self) -> None:
        self.wait()
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=5.0)
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.todo is None and not self.closed:
                    self.cond.wait()
                if self.todo is None:
                    return
                write, self.todo = self.todo, None
            try:
                write.run(self.backend)
            except BaseException as exc:  # noqa: BLE001 - the loop raises it, as if it had written
                write.crash = exc
            with self.cond:
                self.running = False
                self.cond.notify_all()
            try:
                os.write(self.wake_w, b"w")
            except BlockingIOError:  # the loop has wake-ups unread already
                pass


class Outbox:
    __slots__ = ("backend", "telemetry", "flush_interval_s", "pending", "dead_owners", "retry_mono", "last_flush_mono",
                 "_writer", "_in_flight")

    def __init__(self, backend: Backend, telemetry: Telemetry, flush_interval_s: float) -> None:
        self.backend = backend
        self.telemetry = telemetry
        self.flush_interval_s = flush_interval_s  # the config's; a reload sets it anew
        self.pending: list[Outcome] = []
        self.dead_owners: list[str] = []  # exited workers whose leftover claims to give back
        self.retry_mono = 0.0
        self.last_flush_mono = float("-inf")  # when the last write began
        # SQLite's write is a local transaction, not a round trip: it stays on the loop.
        self._writer = _Writer(backend) if backend.dialect == "postgresql" else None
        self._in_flight: _Write | None = None  # handed to the writer, not settled yet

    @property
    def wake_fd(self) -> int | None:
        """Readable when a background write is done (the loop then flushes); None on SQLite."""
        return self._writer.wake_r if self._writer is not None else None

    def own_fds(self) -> list[int]:
        """The wake pipe's two ends, for a forked worker to close."""
        return [self._writer.wake_r, self._writer.wake_w] if self._writer is not None else []

    def on_wake(self) -> None:
        """Empty the wake pipe; the loop's next :meth:`flush` settles the write."""
        assert self._writer is not None
        try:
            while os.read(self._writer.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def settle(self, outcome: Outcome, task: str) -> None:
        """An outcome to write with the next flush (and to count once written)."""
        self.pending.append(outcome)
        self.telemetry.expect(outcome, task)

    def waiting(self) -> bool:
        """Anything to write: outcomes, or exited workers' claims to give back."""
        return bool(self.pending or self.dead_owners)

    def flush(self, now: float, *, force: bool = False) -> None:
        """Write every pending outcome in one round trip; keep them if the database is away.

        Then give back what exited workers still hold, and only then: once their
        reported outcomes are written, a job still running under their owner is
        one they claimed but never announced (and so never ran).

        A write under way is settled first; ``force`` waits for it, and then writes
        in this thread whatever is pending, due or not. A backlog of
        MOST_PENDING_WHILE_WRITING waits for it too, then goes to the writer at once.
        """
        self._settle_in_flight(now, wait=force or len(self.pending) >= MOST_PENDING_WHILE_WRITING)
        if self._in_flight is not None:
            return  # the next write starts when this one is done (the wake fd says when)
        if not (self.pending or self.dead_owners):
            return
        if not force and now < self.due_mono(now):
            return
        self.last_flush_mono = now
        write = _Write(self.pending, self.dead_owners)
        self.pending, self.dead_owners = [], []
        if force or self._writer is None:
            write.run(self.backend)
            self._settle(write, now)
        else:
            self._in_flight = write
            self._writer.start(write)

    def close(self) -> None:
        """Wait for a write under way (its outcome stays unsettled) and stop the writer."""
        if self._writer is not None:
            self._writer.close()

    def _settle_in_flight(self, now: float, *, wait: bool) -> None:
        write = self._in_flight
        if write is None or self._writer is None:
            return
        if wait:
            self._writer.wait()
        elif self._writer.busy():
            return
        self._in_flight = None
        self._settle(write, now)

    def _settle(self, write: _Write, now: float) -> None:
        """What a write's outcome means, on the loop: counts, logs, and what to write again."""
        if write.crash is not None or not write.written:  # kept for the next write (after a crash, the shutdown's)
            self.pending = write.batch + self.pending
            self.dead_owners = write.owners + self.dead_owners
            if write.crash is not None:
                raise write.crash
            self.retry_mono = now + _RETRY_S
            log.error("results_not_written", jobs=len(write.batch), error=str(write.error))
            return
        self.retry_mono = 0.0  # written: the next outcomes need not wait out an old retry time
        self.telemetry.written(write.batch, write.lost, self.backend.now())
        for job_id in write.lost:
            log.warning("job_lease_lost", job_id=job_id, detail="another attempt owns the job; this result was dropped")
        for owner, released in write.released:
            log.warning("unannounced_claims_released", owner=owner, job_ids=released)
        if write.unreleased:
            self.dead_owners = write.unreleased + self.dead_owners
            self.retry_mono = now + _RETRY_S
            log.error("claims_not_released", owner=write.unreleased[0], error=str(write.error))

    def due_mono(self, now: float) -> float:
        """When pending outcomes should be written: ``flush_interval`` after the last
        write began, at once with FLUSH_AT_OUTCOMES waiting; after a failed write, not
        before the retry time.

        One write per interval turns a drain's flushes from a few dozen outcomes
        into hundreds (measured: benchmarks/README.md), while a job's result still
        lands within milliseconds, and the first one after a quiet spell at once.
        Counted from the start of the last write, not from the first outcome seen
        after it: on a distant database a write takes longer than the interval,
        the outcomes read after it have waited that long already, and waiting the
        interval again capped a 7 ms round trip's drain at one write per 15 ms
        (benchmarks/README.md, the remote rows). Never, while a write is under way:
        its end wakes the loop.
        """
        if self._in_flight is not None:
            return float("inf")
        if len(self.pending) >= FLUSH_AT_OUTCOMES:
            return self.retry_mono
        return max(self.retry_mono, self.last_flush_mono + self.flush_interval_s)
