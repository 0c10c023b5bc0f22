"""The maintenance schedule (burrow.supervisor.maintenance) on a clock the test sets."""

from __future__ import annotations

import pytest

from burrow.errors import BackendError
from burrow.supervisor.maintenance import Schedule, Step


class Recorder:
    """Steps that note (name, now) when they run, optionally failing."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, float]] = []
        self.failing: set[str] = set()

    def step(self, name: str, interval_s: float, due_mono: float = 0.0) -> Step:
        def run(now: float) -> None:
            self.ran.append((name, now))
            if name in self.failing:
                raise BackendError(f"{name} failed")

        return Step(name, interval_s, run, due_mono)

    def names(self) -> list[str]:
        names = [name for name, _ in self.ran]
        self.ran.clear()
        return names


def test_every_step_runs_on_the_first_turn_in_the_order_added() -> None:
    steps = Recorder()
    schedule = Schedule([steps.step("leases", 2.0), steps.step("process", 2.0), steps.step("reaper", 5.0)])
    assert schedule.next_due_mono() == 0.0
    assert schedule.run_due(100.0) == []
    assert steps.ran == [("leases", 100.0), ("process", 100.0), ("reaper", 100.0)]


def test_each_step_keeps_its_own_interval() -> None:
    steps = Recorder()
    schedule = Schedule([steps.step("heartbeat", 2.0), steps.step("reaper", 5.0)])
    runs: dict[float, list[str]] = {}
    for now in range(0, 11):
        schedule.run_due(float(now))
        if names := steps.names():
            runs[now] = names
    assert runs == {0: ["heartbeat", "reaper"], 2: ["heartbeat"], 4: ["heartbeat"], 5: ["reaper"],
                    6: ["heartbeat"], 8: ["heartbeat"], 10: ["heartbeat", "reaper"]}


def test_a_late_turn_runs_a_step_once_and_plans_from_then() -> None:
    """A loop held up for several intervals does not make up the missed runs."""
    steps = Recorder()
    schedule = Schedule([steps.step("heartbeat", 2.0)])
    schedule.run_due(0.0)
    schedule.run_due(9.5)
    assert steps.names() == ["heartbeat", "heartbeat"]
    assert schedule.next_due_mono() == 11.5


def test_the_longest_overdue_step_runs_first() -> None:
    steps = Recorder()
    schedule = Schedule([steps.step("a", 1.0, due_mono=3.0), steps.step("b", 1.0, due_mono=1.0),
                         steps.step("c", 1.0, due_mono=2.0), steps.step("later", 1.0, due_mono=9.0)])
    schedule.run_due(3.0)
    assert steps.names() == ["b", "c", "a"]


def test_next_due_is_the_earliest_step() -> None:
    steps = Recorder()
    schedule = Schedule([steps.step("heartbeat", 2.0), steps.step("reaper", 0.5)])
    schedule.run_due(10.0)
    assert schedule.next_due_mono() == 10.5
    schedule.run_due(10.5)
    assert steps.names() == ["heartbeat", "reaper", "reaper"]
    assert schedule.next_due_mono() == 11.0
    assert schedule.run_due(10.9) == [] and steps.names() == []  # nothing due yet
    assert Schedule().next_due_mono() == float("inf")


def test_a_failing_step_does_not_keep_the_others_from_running() -> None:
    steps = Recorder()
    steps.failing = {"leases"}
    schedule = Schedule([steps.step("leases", 2.0), steps.step("process", 2.0), steps.step("reaper", 2.0)])
    failures = schedule.run_due(0.0)
    assert steps.names() == ["leases", "process", "reaper"]
    assert [(f.step, str(f.error)) for f in failures] == [("leases", "leases failed")]
    # It waits its interval like the others rather than retrying on every turn.
    assert schedule.next_due_mono() == 2.0
    assert schedule.run_due(1.0) == []
    steps.failing.clear()
    assert schedule.run_due(2.0) == []
    assert steps.names() == ["leases", "process", "reaper"]


def test_an_error_that_is_not_the_database_propagates() -> None:
    """A bug in a step must not be logged away as a database failure."""

    def broken(now: float) -> None:
        raise ZeroDivisionError

    schedule = Schedule([Step("broken", 1.0, broken)])
    with pytest.raises(ZeroDivisionError):
        schedule.run_due(0.0)


def test_a_step_added_later_runs_on_the_next_turn() -> None:
    steps = Recorder()
    schedule = Schedule([steps.step("heartbeat", 2.0)])
    schedule.run_due(0.0)
    schedule.add(steps.step("prune", 60.0))
    assert schedule.next_due_mono() == 0.0
    schedule.run_due(0.5)
    assert steps.names() == ["heartbeat", "prune"]
    assert schedule.next_due_mono() == 2.0
    schedule.add(steps.step("cron", 1.0, due_mono=30.0))  # or at a time of its own
    schedule.run_due(2.0)
    assert steps.names() == ["heartbeat"]
    with pytest.raises(ValueError, match="already scheduled"):
        schedule.add(steps.step("prune", 1.0))


def test_a_new_interval_applies_after_the_planned_run() -> None:
    """A reload changes heartbeat_interval: the run already planned keeps its time."""
    steps = Recorder()
    schedule = Schedule([steps.step("heartbeat", 2.0)])
    schedule.run_due(0.0)
    schedule.set_interval("heartbeat", 0.5)
    assert schedule.next_due_mono() == 2.0
    schedule.run_due(2.0)
    assert schedule.next_due_mono() == 2.5


def test_a_run_can_be_moved_sooner() -> None:
    runs: list[float] = []
    schedule = Schedule([Step("prune", 60.0, runs.append)])
    schedule.run_due(0.0)
    assert schedule.next_due_mono() == 60.0
    schedule.run_at("prune", 1.0)
    assert schedule.next_due_mono() == 1.0
    schedule.run_due(1.0)
    assert runs == [0.0, 1.0] and schedule.next_due_mono() == 61.0
