"""Pools of workers: how many there should be, of which generation, and when the next may start.

A supervisor has a default pool, which serves every queue no other pool names,
and one pool per ``[[supervisor.pools]]`` table, with queues and a batch size of
its own; SIGTTIN and SIGTTOU resize the default one. A pool forks nothing itself:
``top_up`` is handed the supervisor's spawn function, so the rules (target size,
generations, restart backoff) are tested without a process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from burrow.backends.records import ALL_QUEUES, QueueFilter
from burrow.config import DEFAULT_POOL_NAME, SupervisorConfig
from burrow.supervisor.children import WorkerHandle

log = structlog.get_logger("burrow.supervisor")

RESTART_BACKOFF_MIN_S = 0.1
RESTART_BACKOFF_MAX_S = 5.0


def restart_backoff_s(crashes: int) -> float:
    """0.1 s after the first crash, doubling to 5 s: a crash loop cannot spin."""
    return min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_MIN_S * 2 ** (crashes - 1))


@dataclass(eq=False)
class Pool:
    name: str
    target: int
    queues: QueueFilter = ALL_QUEUES  # what its workers claim
    batch_size: int | None = None  # None: [supervisor] batch_size
    generation: int = 0  # bumped by a reload; older workers finish their job and leave
    crashes: int = 0  # since a worker of this pool last finished a job
    next_spawn_mono: float = 0.0
    workers: dict[int, WorkerHandle] = field(default_factory=dict)

    @property
    def role(self) -> str:
        """Its workers' process row role (pool names are at most 200 characters)."""
        return "worker" if self.name == DEFAULT_POOL_NAME else f"worker:{self.name}"

    def current(self) -> list[WorkerHandle]:
        """The workers that count toward the target: this generation's, not asked to stop."""
        return [h for h in self.workers.values() if h.generation == self.generation and not h.stopping]

    def missing(self) -> int:
        return self.target - len(self.current())

    def ready(self) -> bool:
        """Whether every worker the pool should have has said hello."""
        return sum(h.booted for h in self.current()) >= self.target

    def top_up(self, now: float, spawn: Callable[[Pool], WorkerHandle]) -> None:
        """Stop the newest workers over the target; spawn the missing ones unless backing off.

        ``spawn`` raises OSError when the system is out of processes, memory or
        descriptors; that counts as a crash, so the next try waits too.
        """
        current = self.current()
        for handle in sorted(current, key=lambda h: h.spawned_mono)[self.target :]:
            handle.stop()
        missing = self.target - len(current)
        while missing > 0 and now >= self.next_spawn_mono:
            try:
                handle = spawn(self)
            except OSError as exc:
                self.crashed(now)
                log.error("worker_spawn_failed", error=str(exc))
                return
            self.workers[handle.pid] = handle
            missing -= 1

    def resize(self, delta: int) -> None:
        """Never below one worker: an empty pool would run nothing and say nothing."""
        self.target = max(1, self.target + delta)

    def renew(self, target: int) -> None:
        """A reload: a new generation of ``target`` workers replaces every one now running,
        each finishing its job first; the new ones start at once, whatever the backoff."""
        self.target = target
        self.generation += 1
        self.stop_all()
        self.next_spawn_mono = 0.0

    def stop_all(self) -> None:
        for handle in self.workers.values():
            handle.stop()

    def crashed(self, now: float) -> None:
        """A worker died unasked, or could not be forked: wait before the next one."""
        self.crashes += 1
        self.next_spawn_mono = now + restart_backoff_s(self.crashes)

    def job_done(self) -> None:
        """A worker that finishes jobs is healthy again: the next crash starts the backoff over."""
        self.crashes = 0


class Pools:
    """The default pool and the named ones, as one set of workers for the supervisor."""

    def __init__(self, config: SupervisorConfig) -> None:
        self.default = Pool(DEFAULT_POOL_NAME, config.workers)
        self.named: dict[str, Pool] = {}
        self._configure(config)

    def _configure(self, config: SupervisorConfig) -> None:
        """Pools as ``config`` says: the default one serves every queue the others leave."""
        named = {p.name: p for p in config.pools}
        for name in set(self.named) - set(named):
            self.named[name].target = 0  # gone from the config: its workers finish and leave
            self.named[name].stop_all()
        for name, pool_config in named.items():
            pool = self.named.get(name)
            if pool is None:
                pool = self.named[name] = Pool(name, pool_config.workers)
            pool.queues = QueueFilter(pool_config.queues, exclude=False)
            pool.batch_size = pool_config.batch_size
        served = tuple(q for p in config.pools for q in p.queues)
        self.default.queues = QueueFilter(served, exclude=True)

    def all(self) -> list[Pool]:
        return [self.default, *self.named.values()]

    def workers(self) -> list[WorkerHandle]:
        return [handle for pool in self.all() for handle in pool.workers.values()]

    def pids(self) -> set[int]:
        return {pid for pool in self.all() for pid in pool.workers}

    def pop(self, pid: int) -> tuple[Pool, WorkerHandle] | None:
        """The pool and handle of worker ``pid``, taken out of the pool."""
        for pool in self.all():
            handle = pool.workers.pop(pid, None)
            if handle is not None:
                return pool, handle
        return None

    def job_done(self, handle: WorkerHandle) -> None:
        """``handle`` finished a job: its pool is healthy. Nothing once the worker has been
        taken out (its last words are read as it exits; the exit is what counts then).
        Called for every job: nothing to do unless a pool has crashes to forget."""
        if self.default.crashes == 0 and not any(pool.crashes for pool in self.named.values()):
            return
        for pool in self.all():
            if pool.workers.get(handle.pid) is handle:
                pool.job_done()

    def top_up(self, now: float, spawn: Callable[[Pool], WorkerHandle]) -> None:
        for pool in self.all():
            pool.top_up(now, spawn)

    def missing(self) -> bool:
        return any(pool.missing() > 0 for pool in self.all())

    def next_spawn_mono(self) -> float:
        return min((pool.next_spawn_mono for pool in self.all() if pool.missing() > 0), default=float("inf"))

    def ready(self) -> bool:
        return all(pool.ready() for pool in self.all())

    def stop_all(self) -> None:
        for pool in self.all():
            pool.stop_all()

    def renew(self, config: SupervisorConfig) -> None:
        """A reload: every pool replaces its workers, with the new config's sizes and queues."""
        self._configure(config)
        self.default.renew(config.workers)
        for name, pool_config in {p.name: p for p in config.pools}.items():
            self.named[name].renew(pool_config.workers)

    def describe(self) -> str:
        """For the STATUS= line and logs: each pool's size and queues."""
        parts = []
        for pool in self.all():
            queues = "other queues" if pool is self.default and pool.queues.names else ", ".join(pool.queues.names) or "all queues"
            parts.append(f"{pool.name} {len(pool.workers)}/{pool.target} ({queues})")
        return "; ".join(parts)
