"""Runs the services: each timed one when due, the EVERY_TURN ones on every turn.

One mechanism for all the supervisor's periodic work. The runner holds no
clock of its own; the loop passes ``now`` (monotonic seconds), so a test can
step time by hand. When the next run is due is kept rather than computed: the
loop asks on every turn, thousands of times a second in a drain, and almost
always nothing is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from burrow.errors import BackendError
from burrow.supervisor.context import Context
from burrow.supervisor.services.base import EVERY_TURN, Service

log = structlog.get_logger("burrow.supervisor")


@dataclass(slots=True)
class _Timed:
    service: Service
    interval_s: float
    due_mono: float


@dataclass(frozen=True, slots=True)
class Failure:
    service: str
    error: BackendError


class Runner:
    def __init__(
        self, ctx: Context, services: Iterable[Service], now: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ctx = ctx
        # Only to age ``now`` across a turn's timed runs, for the EVERY_TURN services that
        # must look between them (see run); ``now`` itself always comes from the loop.
        self._clock = clock
        self._timed: dict[str, _Timed] = {}
        self._every_turn: list[Service] = []
        names: set[str] = set()
        for service in services:
            if service.name in names:
                raise ValueError(f"a service named {service.name!r} is already scheduled")
            names.add(service.name)
            interval_s = service.interval(ctx)
            if interval_s == EVERY_TURN:
                self._every_turn.append(service)
            else:
                self._timed[service.name] = _Timed(service, interval_s, now + service.first_s)
        self._next_due_mono = min((t.due_mono for t in self._timed.values()), default=float("inf"))

    def reconfigure(self) -> None:
        """New intervals from the Context's config (a reload), from the next run on:
        the run already planned keeps its time."""
        for timed in self._timed.values():
            timed.interval_s = timed.service.interval(self._ctx)

    def run_at(self, name: str, due_mono: float) -> None:
        """Move one run of a service (one with more work left runs again sooner)."""
        self._timed[name].due_mono = due_mono
        self._next_due_mono = min(t.due_mono for t in self._timed.values())

    def next_due_mono(self) -> float:
        """When the loop must wake up next for a timed service; infinity with none."""
        return self._next_due_mono

    def run(self, now: float) -> list[Failure]:
        """Run every timed service due at ``now``, the longest overdue first, then the
        EVERY_TURN ones in their order; the runs that failed, each logged.

        A database error is one service's failure, not the turn's: a reaper that
        times out on a lock must not keep the leases from being extended. Any
        other exception is a bug and propagates.
        """
        failures: list[Failure] = []
        began = self._clock()
        if now >= self._next_due_mono:
            due = sorted((t for t in self._timed.values() if t.due_mono <= now), key=lambda t: t.due_mono)
            for timed in due:
                # Planned before any runs, so a failing service waits its interval too
                # instead of hammering a database that is away.
                timed.due_mono = now + timed.interval_s
            self._next_due_mono = min(t.due_mono for t in self._timed.values())
            for timed in due:
                self._run(timed.service, now, failures)
                self._between(now + self._clock() - began, failures)
            self._log(failures, now)
        done = len(failures)
        ctx = self._ctx
        for service in self._every_turn:
            try:
                service.run(ctx, now)
            except BackendError as exc:
                failures.append(Failure(service.name, exc))
        if len(failures) > done:
            self._log(failures[done:], now)
        return failures

    def _between(self, now: float, failures: list[Failure]) -> None:
        """The EVERY_TURN services that say so (``between_runs``, the outage guard) run
        after each timed run too, at the time it ended: with the database away, each
        timed run may block for a whole call (a connect timeout and a deadline), and a
        turn of several would otherwise keep the guard from looking for several calls
        (a link cut on tests/scaleout's simulated hosts: runs stopped 8.2 s after the
        cut, past a 7 s lease, where the guard's margin allows 3.6 s and one call).
        Only those: the others (deadlines, which judge a worker's silence by the messages
        read at the turn's start) keep the turn's ``now``."""
        for service in self._every_turn:
            if getattr(service, "between_runs", False):
                try:
                    service.run(self._ctx, now)
                except BackendError as exc:
                    failures.append(Failure(service.name, exc))

    def _run(self, service: Service, now: float, failures: list[Failure]) -> None:
        try:
            service.run(self._ctx, now)
        except BackendError as exc:
            failures.append(Failure(service.name, exc))

    def _log(self, failures: list[Failure], now: float) -> None:
        """After the runs: seconds_since_ok counts a lease extension that went through
        in this same turn."""
        for failure in failures:
            log.error(
                "heartbeat_failed",
                step=failure.service,
                error=str(failure.error),
                seconds_since_ok=round(now - self._ctx.last_db_ok_mono, 1),
            )
