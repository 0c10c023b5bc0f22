"""The service runner (burrow.supervisor.services.runner) on a clock the test sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from burrow.errors import BackendError
from burrow.supervisor.context import Context
from burrow.supervisor.services.base import EVERY_TURN
from burrow.supervisor.services.runner import Runner


@dataclass
class FakeContext:
    last_db_ok_mono: float = 0.0


CTX = cast(Context, FakeContext())


@dataclass
class Fake:
    """A service that notes (name, now) when it runs, optionally failing."""

    name: str
    interval_s: float
    ran: list[tuple[str, float]]
    first_s: float = 0.0
    failing: set[str] = field(default_factory=set)

    def interval(self, ctx: Context) -> float:
        return self.interval_s

    def run(self, ctx: Context, now: float) -> None:
        self.ran.append((self.name, now))
        if self.name in self.failing:
            raise BackendError(f"{self.name} failed")


class Recorder:
    def __init__(self) -> None:
        self.ran: list[tuple[str, float]] = []
        self.failing: set[str] = set()

    def service(self, name: str, interval_s: float, first_s: float = 0.0) -> Fake:
        return Fake(name, interval_s, self.ran, first_s, self.failing)

    def names(self) -> list[str]:
        names = [name for name, _ in self.ran]
        self.ran.clear()
        return names


def runner(services: list[Any], now: float = 0.0) -> Runner:
    return Runner(CTX, services, now)


def test_every_service_runs_on_the_first_turn_in_the_order_listed() -> None:
    s = Recorder()
    r = runner([s.service("leases", 2.0), s.service("process", 2.0), s.service("reaper", 5.0)])
    assert r.next_due_mono() == 0.0
    assert r.run(100.0) == []
    assert s.ran == [("leases", 100.0), ("process", 100.0), ("reaper", 100.0)]


def test_each_service_keeps_its_own_interval() -> None:
    s = Recorder()
    r = runner([s.service("heartbeat", 2.0), s.service("reaper", 5.0)])
    runs: dict[float, list[str]] = {}
    for now in range(0, 11):
        r.run(float(now))
        if names := s.names():
            runs[now] = names
    assert runs == {0: ["heartbeat", "reaper"], 2: ["heartbeat"], 4: ["heartbeat"], 5: ["reaper"],
                    6: ["heartbeat"], 8: ["heartbeat"], 10: ["heartbeat", "reaper"]}


def test_a_late_turn_runs_a_service_once_and_plans_from_then() -> None:
    """A loop held up for several intervals does not make up the missed runs."""
    s = Recorder()
    r = runner([s.service("heartbeat", 2.0)])
    r.run(0.0)
    r.run(9.5)
    assert s.names() == ["heartbeat", "heartbeat"]
    assert r.next_due_mono() == 11.5


def test_the_longest_overdue_service_runs_first() -> None:
    s = Recorder()
    r = runner([s.service("a", 1.0, first_s=3.0), s.service("b", 1.0, first_s=1.0),
                s.service("c", 1.0, first_s=2.0), s.service("later", 1.0, first_s=9.0)])
    r.run(3.0)
    assert s.names() == ["b", "c", "a"]


def test_a_first_run_waits_first_s_after_start() -> None:
    s = Recorder()
    r = runner([s.service("heartbeat", 2.0), s.service("retention", 60.0, first_s=10.0)], now=100.0)
    r.run(100.0)
    assert s.names() == ["heartbeat"]
    r.run(110.0)
    assert s.names() == ["heartbeat", "retention"]


def test_next_due_is_the_earliest_service() -> None:
    s = Recorder()
    r = runner([s.service("heartbeat", 2.0), s.service("reaper", 0.5)])
    r.run(10.0)
    assert r.next_due_mono() == 10.5
    r.run(10.5)
    assert s.names() == ["heartbeat", "reaper", "reaper"]
    assert r.next_due_mono() == 11.0
    assert r.run(10.9) == [] and s.names() == []  # nothing due yet
    assert runner([]).next_due_mono() == float("inf")


def test_every_turn_services_run_on_every_turn_after_the_timed_ones() -> None:
    s = Recorder()
    r = runner([s.service("guard", EVERY_TURN), s.service("heartbeat", 2.0), s.service("deadlines", EVERY_TURN)])
    assert r.next_due_mono() == 0.0
    r.run(0.0)
    assert s.names() == ["heartbeat", "guard", "deadlines"]
    r.run(0.1)
    assert s.names() == ["guard", "deadlines"]
    assert r.next_due_mono() == 2.0  # they never make the loop wake up by themselves


def test_a_failing_service_does_not_keep_the_others_from_running() -> None:
    s = Recorder()
    s.failing.add("leases")
    r = runner([s.service("leases", 2.0), s.service("process", 2.0), s.service("reaper", 2.0)])
    failures = r.run(0.0)
    assert s.names() == ["leases", "process", "reaper"]
    assert [(f.service, str(f.error)) for f in failures] == [("leases", "leases failed")]
    # It waits its interval like the others rather than retrying on every turn.
    assert r.next_due_mono() == 2.0
    assert r.run(1.0) == []
    s.failing.clear()
    assert r.run(2.0) == []
    assert s.names() == ["leases", "process", "reaper"]


def test_an_error_that_is_not_the_database_propagates() -> None:
    """A bug in a service must not be logged away as a database failure."""

    class Broken(Fake):
        def run(self, ctx: Context, now: float) -> None:
            raise ZeroDivisionError

    r = runner([Broken("broken", 1.0, [])])
    with pytest.raises(ZeroDivisionError):
        r.run(0.0)


def test_names_are_unique() -> None:
    s = Recorder()
    with pytest.raises(ValueError, match="already scheduled"):
        runner([s.service("prune", 60.0), s.service("prune", 1.0)])


def test_a_new_interval_applies_after_the_planned_run() -> None:
    """A reload changes heartbeat_interval: the run already planned keeps its time."""
    s = Recorder()
    heartbeat = s.service("heartbeat", 2.0)
    r = runner([heartbeat])
    r.run(0.0)
    heartbeat.interval_s = 0.5
    r.reconfigure()
    assert r.next_due_mono() == 2.0
    r.run(2.0)
    assert r.next_due_mono() == 2.5


def test_a_run_can_be_moved_sooner() -> None:
    s = Recorder()
    r = runner([s.service("prune", 60.0)])
    r.run(0.0)
    assert r.next_due_mono() == 60.0
    r.run_at("prune", 1.0)
    assert r.next_due_mono() == 1.0
    r.run(1.0)
    assert s.names() == ["prune", "prune"] and r.next_due_mono() == 61.0


def test_a_between_runs_service_looks_after_each_timed_run_at_the_time_it_ended() -> None:
    """The outage guard (between_runs) must not wait out a whole turn of blocking calls:
    it runs after each timed service, at the turn's now aged by the time spent; the
    other EVERY_TURN services run once, at the turn's now."""
    s = Recorder()
    elapsed = [0.0]

    class Blocking(Fake):
        def run(self, ctx: Context, now: float) -> None:
            super().run(ctx, now)
            elapsed[0] += 3.0  # a call into a partition: a connect timeout and a deadline

    guard = s.service("guard", EVERY_TURN)
    guard.between_runs = True  # type: ignore[attr-defined]
    timed = [Blocking("leases", 1.0, s.ran), Blocking("listener", 1.0, s.ran)]
    r = Runner(CTX, [*timed, guard, s.service("deadlines", EVERY_TURN)], 0.0, clock=lambda: elapsed[0])
    r.run(10.0)
    assert s.ran == [
        ("leases", 10.0), ("guard", 13.0), ("listener", 10.0), ("guard", 16.0), ("guard", 10.0), ("deadlines", 10.0)
    ]
