"""A pool of workers: how many there should be, of which generation, and when the next may start.

The supervisor keeps one pool, ``default``, today; named pools with queues and
batch sizes of their own (``[[supervisor.pools]]``) will each be one of these,
while SIGTTIN and SIGTTOU keep resizing the default one. The pool forks nothing
itself: ``top_up`` is handed the supervisor's spawn function, so the rules
(target size, generations, restart backoff) are tested without a process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from burrow.supervisor.children import WorkerHandle

log = structlog.get_logger("burrow.supervisor")

DEFAULT_POOL = "default"
RESTART_BACKOFF_MIN_S = 0.1
RESTART_BACKOFF_MAX_S = 5.0


def restart_backoff_s(crashes: int) -> float:
    """0.1 s after the first crash, doubling to 5 s: a crash loop cannot spin."""
    return min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_MIN_S * 2 ** (crashes - 1))


@dataclass(eq=False)
class Pool:
    name: str
    target: int
    generation: int = 0  # bumped by a reload; older workers finish their job and leave
    crashes: int = 0  # since a worker of this pool last finished a job
    next_spawn_mono: float = 0.0
    workers: dict[int, WorkerHandle] = field(default_factory=dict)

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
