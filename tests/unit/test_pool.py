"""The worker pool's rules (burrow.supervisor.pool), with handles that are not processes."""

from __future__ import annotations

import itertools

import pytest

from burrow.supervisor.children import WorkerHandle
from burrow.supervisor.pool import Pool, restart_backoff_s


class FakeSpawner:
    """Hands out handles with made-up pids (their pipes are -1: a STOP goes nowhere)."""

    def __init__(self) -> None:
        self.pids = itertools.count(1000)
        self.clock = 0.0
        self.failing = False

    def __call__(self, pool: Pool) -> WorkerHandle:
        if self.failing:
            raise OSError("Resource temporarily unavailable")
        self.clock += 1.0  # spawned in order, so "newest" is well defined
        return WorkerHandle(next(self.pids), pool.generation, -1, -1, self.clock)


def exit_worker(pool: Pool, handle: WorkerHandle) -> None:
    del pool.workers[handle.pid]


def test_top_up_spawns_up_to_the_target() -> None:
    spawn = FakeSpawner()
    pool = Pool("default", 3)
    assert pool.missing() == 3
    pool.top_up(0.0, spawn)
    assert len(pool.workers) == 3 and pool.missing() == 0
    pool.top_up(0.0, spawn)
    assert len(pool.workers) == 3  # nothing more to do


def test_ready_once_every_current_worker_said_hello() -> None:
    pool = Pool("default", 2)
    pool.top_up(0.0, FakeSpawner())
    first, second = pool.workers.values()
    assert not pool.ready()
    first.booted = True
    assert not pool.ready()
    second.booted = True
    assert pool.ready()


def test_resize_never_goes_below_one_worker() -> None:
    pool = Pool("default", 2)
    pool.resize(1)
    assert pool.target == 3
    for _ in range(5):
        pool.resize(-1)
    assert pool.target == 1


def test_shrinking_stops_the_newest_workers() -> None:
    spawn = FakeSpawner()
    pool = Pool("default", 3)
    pool.top_up(0.0, spawn)
    oldest = min(pool.workers.values(), key=lambda h: h.spawned_mono)
    pool.resize(-2)
    pool.top_up(0.0, spawn)
    assert [h.pid for h in pool.current()] == [oldest.pid]
    stopping = [h for h in pool.workers.values() if h.stopping]
    assert len(stopping) == 2  # asked to finish their job and leave, still there until they do
    for handle in stopping:
        exit_worker(pool, handle)
    pool.top_up(0.0, spawn)
    assert list(pool.workers) == [oldest.pid]


def test_a_stopping_worker_is_replaced_before_it_has_left() -> None:
    """Recycling (max jobs, memory) must not leave the pool a worker short meanwhile."""
    spawn = FakeSpawner()
    pool = Pool("default", 2)
    pool.top_up(0.0, spawn)
    leaving = next(iter(pool.workers.values()))
    leaving.stop()
    pool.top_up(0.0, spawn)
    assert len(pool.current()) == 2 and len(pool.workers) == 3


def test_renew_replaces_every_worker_with_a_new_generation_at_once() -> None:
    spawn = FakeSpawner()
    pool = Pool("default", 2)
    pool.top_up(0.0, spawn)
    pool.crashed(0.0)  # backing off: a reload starts its workers anyway
    old = dict(pool.workers)
    pool.renew(3)
    assert pool.generation == 1 and pool.target == 3
    assert all(h.stopping for h in old.values())
    pool.top_up(0.0, spawn)
    new = [h for pid, h in pool.workers.items() if pid not in old]
    assert len(new) == 3 and {h.generation for h in new} == {1}
    assert pool.current() == new


def test_stop_all_asks_every_worker_to_stop() -> None:
    pool = Pool("default", 2)
    pool.top_up(0.0, FakeSpawner())
    pool.stop_all()
    assert all(h.stopping for h in pool.workers.values()) and pool.current() == []


def test_the_restart_backoff_doubles_from_a_tenth_of_a_second_to_five() -> None:
    assert [restart_backoff_s(n) for n in range(1, 9)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


def test_crashes_delay_the_next_spawn_and_a_finished_job_resets_them() -> None:
    spawn = FakeSpawner()
    pool = Pool("default", 1)
    pool.top_up(0.0, spawn)
    for crashes, now in enumerate([10.0, 20.0, 30.0], start=1):
        exit_worker(pool, next(iter(pool.workers.values())))
        pool.crashed(now)
        delay = restart_backoff_s(crashes)
        assert pool.next_spawn_mono == pytest.approx(now + delay)
        pool.top_up(now + delay / 2, spawn)
        assert pool.workers == {}  # still backing off
        pool.top_up(now + delay, spawn)
        assert len(pool.workers) == 1
    pool.job_done()
    assert pool.crashes == 0
    pool.crashed(40.0)
    assert pool.next_spawn_mono == pytest.approx(40.1)


def test_a_failed_fork_counts_as_a_crash() -> None:
    spawn = FakeSpawner()
    spawn.failing = True
    pool = Pool("default", 2)
    pool.top_up(5.0, spawn)
    assert pool.workers == {} and pool.crashes == 1
    assert pool.next_spawn_mono == pytest.approx(5.1)
    spawn.failing = False
    pool.top_up(5.05, spawn)
    assert pool.workers == {}
    pool.top_up(5.1, spawn)
    assert len(pool.workers) == 2
