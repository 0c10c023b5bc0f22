"""What the supervisor's parts share: one object, instead of each reaching into the loop.

The services (burrow/supervisor/services/), the inbox, the exit handling and the
outbox each need some of the supervisor's state: the settings, the backend, the
pools and the jobs each worker holds in flight (on its WorkerHandle), the loop's
clocks. The Supervisor builds one Context and hands it to them; none of them
imports the Supervisor, so the loop sits on top of its parts and no part on top
of the loop. The few changes of state more than one part makes (begin a drain,
stop at once) are methods here, so each is written once.

Time is passed in, never read here: every part is given the turn's ``now``
(monotonic seconds), so that a test can step time by hand.
"""

from __future__ import annotations

import enum
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from burrow.backends.contract import Backend
from burrow.config import Config
from burrow.execution import RetryDefaults
from burrow.options import JobConfig, registered_options
from burrow.queue import JobQueue
from burrow.supervisor.outbox import Outbox
from burrow.supervisor.pool import Pools
from burrow.supervisor.systemd import Notifier
from burrow.supervisor.telemetry import Telemetry

log = structlog.get_logger("burrow.supervisor")


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    CONFIG = 2  # bad config or command line: fixing it is the operator's job
    WORKER_BOOT_FAILED = 3  # workers cannot start; respawning would spin
    INTERRUPTED = 130  # a second SIGINT: stopped at once


def _unscheduled(name: str, due_mono: float) -> None:
    raise RuntimeError(f"no service runner yet to move {name!r} to")


@dataclass(slots=True, eq=False)
class Context:
    config: Config  # replaced whole on a reload, with queue
    queue: JobQueue
    backend: Backend  # the same across reloads: a new [database] takes effect at restart
    owner: str  # the supervisor's own process row
    pools: Pools
    telemetry: Telemetry
    notifier: Notifier
    outbox: Outbox
    selector: selectors.DefaultSelector
    # How long the leases may go unextended before the outage guard stops the runs
    # (services.guard.guard_after_s of the current config).
    guard_after_s: float
    # Move a service's next run (services.runner.Runner.run_at): a service with more work
    # left comes back sooner, a notification calls one at once.
    run_at: Callable[[str, float], None] = _unscheduled
    state: State = State.STARTING
    exit_code: ExitCode = ExitCode.OK
    listener: Any = None  # the backend's LISTEN connection, when it has one and it is open
    jobs_done: int = 0
    ready_sent: bool = False
    # When the leases of in-flight jobs were last extended (or there were none):
    # what the database-outage guard measures from.
    last_db_ok_mono: float = field(default_factory=time.monotonic)
    last_heartbeat_mono: float | None = None  # our process row last written: /readyz
    notified_mono: float = 0.0  # when a notification of jobs for us last came in
    drain_deadline_mono: float | None = None
    drain_reported_mono: float = 0.0  # when a drain last said it was waiting
    unhandled_warned: set[str] = field(default_factory=set)  # tasks services/unhandled.py has warned of
    # The queues an operator paused, as the telemetry service last read them (for the
    # STATUS= line and the metric; the claims themselves read the database's own).
    paused_queues: list[str] = field(default_factory=list)

    def job_config(self, task: str) -> JobConfig:
        registration = self.queue.registrations.get(task)
        return registration.config if registration else JobConfig()

    def retry_defaults(self) -> RetryDefaults:
        return retry_defaults(self.config)

    def register_tasks(self) -> None:
        """The tasks this supervisor handles, with their options, in burrow_tasks: at
        start, on reload, and whenever our process row had to be written anew."""
        options = {task: registered_options(r.config) for task, r in self.queue.registrations.items()}
        self.backend.register_tasks(self.owner, options)

    def stale_after_s(self) -> float:
        """How long a process may stay silent before it is presumed dead."""
        settings = self.config.supervisor
        return max(settings.lease_timeout_s, 3 * settings.heartbeat_interval_s)

    def begin_drain(self, reason: str) -> None:
        """Stop claiming; let running jobs finish until shutdown_timeout."""
        if self.state is State.DRAINING:
            return
        self.notifier.stopping()
        self.state = State.DRAINING
        timeout = self.config.supervisor.shutdown_timeout_s
        self.drain_deadline_mono = time.monotonic() + timeout
        workers = self.pools.workers()
        running = sum(len(h.inflight) for h in workers)
        log.info(
            "supervisor_draining",
            reason=reason,
            shutdown_timeout_s=timeout,
            workers=len(workers),
            running_jobs=running,
            detail=f"no new jobs; waiting up to {timeout:g}s for {running} running {_plural(running, 'job')} to finish"
            + ("; press Ctrl-C again (a second SIGINT) to stop at once" if reason != "second SIGINT" else ""),
        )
        self.drain_reported_mono = time.monotonic()
        self.pools.stop_all()

    def report_drain(self, now: float) -> None:
        """While a drain waits on running jobs, say so every DRAIN_REPORT_S: an operator
        who pressed Ctrl-C sees it is working, and how to stop at once."""
        if now - self.drain_reported_mono < DRAIN_REPORT_S:
            return
        self.drain_reported_mono = now
        running = sum(len(h.inflight) for h in self.pools.workers())
        left = max((self.drain_deadline_mono or now) - now, 0.0)
        log.info(
            "supervisor_still_draining",
            running_jobs=running,
            seconds_left=round(left, 1),
            detail=f"waiting for {running} running {_plural(running, 'job')}, at most {left:.0f}s more;"
            " Ctrl-C again stops at once",
        )

    def stop_now(self, reason: str) -> None:
        self.begin_drain(reason)
        for handle in self.pools.workers():
            handle.kill(reason)


DRAIN_REPORT_S = 2.0  # how often a drain that waits on running jobs says so


def _plural(n: int, noun: str) -> str:
    return noun if n == 1 else noun + "s"


def retry_defaults(config: Config) -> RetryDefaults:
    return RetryDefaults(config.retry.base_s, config.retry.max_s)
