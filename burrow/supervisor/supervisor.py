"""The supervisor: one selectors loop over worker pipes, signals and LISTEN.

Each turn of the loop is a short list of steps: wait for events, read what the
workers said, reap dead workers, write results in one batch, run the maintenance
steps that are due (leases, process row, reaper, LISTEN, systemd status), enforce
deadlines, top the pool up. Signal handlers do nothing; ``signal.set_wakeup_fd``
puts the signal number on a pipe this loop reads, so every reaction to a signal
happens here, outside the handler, where logging and database calls are safe.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import enum
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import psutil
import structlog

from burrow.backends.records import CANCEL_NOTICE, ClaimedJob, Outcome, OutcomeKind
from burrow.config import Config, SupervisorConfig
from burrow.job import JobState
from burrow.backends.deadline import Timeouts
from burrow.errors import BackendError, BurrowError, ConfigError, ProtocolError
from burrow.execution import RetryDefaults, failure_outcome
from burrow.queue import JobQueue, new_owner
from burrow.supervisor import protocol
from burrow.supervisor.apps import register_apps
from burrow.supervisor.children import (
    HANDLED_SIGNALS,
    InFlight,
    WorkerExit,
    WorkerHandle,
    become_subreaper,
    describe_exit,
    spawn,
)
from burrow.supervisor.http import Answer, HealthServer
from burrow.supervisor.maintenance import Schedule, Step, prune_finished
from burrow.supervisor.metrics import Metrics
from burrow.supervisor.pool import Pool, Pools
from burrow.supervisor.systemd import Notifier
from burrow.supervisor.telemetry import Telemetry, exit_label
from burrow.supervisor.worker import WorkerSettings, worker_main
from burrow.options import JobConfig

log = structlog.get_logger("burrow.supervisor")

_MAX_SELECT_S = 0.25  # job timeouts and silence are checked at least this often
# A flush this large already costs little per outcome; waiting for more only delays them.
_FLUSH_AT_OUTCOMES = 500
_BOOT_TIMEOUT_S = 30.0
# How often schedules are looked at: a slot's job is enqueued at most this late (its
# run_at is the slot's time all the same). Costs no database call between slots.
_SCHEDULES_CHECK_S = 0.2
# How often running jobs are looked at for cancel requests (PostgreSQL also wakes us
# with a notification), and how long a cancelled handler has to stop by itself.
_CANCELS_CHECK_S = 0.5
_CANCEL_GRACE_S = 2.0  # a handler that looks (CancelCheck asks once a second) sees it in time
_RETENTION_INTERVAL_S = 60.0
# One transaction of 1,000 jobs a turn, four turns a second while a backlog lasts: a
# turn holds the loop for tens of milliseconds, not the quarter second of five.
_RETENTION_BUSY_INTERVAL_S = 0.25
_RETENTION_ROWS_PER_TURN = 1000
_RETENTION_FIRST_S = 10.0  # not on the first turn: a restart into a backlog starts its workers first
# How long a worker sent SIGTERM for a timeout or silence has to write its stack
# and die (milliseconds, as a rule) before SIGKILL: a handler that ignores or
# catches SIGTERM runs no longer than this.
_TERM_GRACE_S = 1.0


# What a worker may report; the EXPIRED_* kinds are a reaper's, never a worker's.
_WORKER_OUTCOMES = frozenset(
    {OutcomeKind.SUCCEEDED, OutcomeKind.RETRY, OutcomeKind.FAILED, OutcomeKind.RELEASED, OutcomeKind.SNOOZED}
)


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


class Supervisor:
    def __init__(
        self,
        config: Config,
        queue: JobQueue,
        *,
        reload_config: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.guard_after_s = _guard_after_s(config.supervisor)
        self.queue = queue
        self.backend = queue.backend
        self.reload_config = reload_config
        self.notifier = notifier or Notifier.from_environ()
        self.owner = new_owner("supervisor")
        self.state = State.STARTING
        self.exit_code = ExitCode.OK
        self.pools = Pools(config.supervisor)
        self.pending: list[Outcome] = []
        self.dead_owners: list[str] = []  # exited workers whose leftover claims to give back
        self.flush_retry_mono = 0.0
        self.pending_since_mono: float | None = None  # when the oldest unwritten outcome was seen
        self.drain_deadline_mono: float | None = None
        # When the leases of in-flight jobs were last extended (or there were none):
        # what the database-outage guard measures from.
        self.last_db_ok_mono = time.monotonic()
        self.last_heartbeat_mono: float | None = None  # our process row last written: /readyz
        self.telemetry = Telemetry(Metrics() if config.http.bind is not None else None)
        self.http: HealthServer | None = None
        self.schedule = Schedule(self._maintenance())
        self.ready_sent = False
        self.jobs_done = 0
        self.selector = selectors.DefaultSelector()
        self.signal_r, self.signal_w = os.pipe()
        self.listener: Any = None
        self.notified_mono = 0.0  # when a notification of jobs for us last came in

    # -- the loop -----------------------------------------------------------------

    def run(self) -> ExitCode:
        previous = self._install_signals()
        try:
            self._start()
            while self.state is not State.STOPPED:
                self._step()
        finally:
            self._cleanup(previous)
        return self.exit_code

    def _step(self) -> None:
        for key, _ in self.selector.select(self._select_timeout()):
            key.data()
        now = time.monotonic()
        self._reap_children(now)
        self._flush(now)
        self._maintain(now)
        self._guard_leases(now)
        self._enforce_deadlines(now)
        if self.state is State.RUNNING:
            self.pools.top_up(now, self._spawn)
        elif self.state is State.DRAINING and not self.pools.workers():
            self._flush(now, force=True)
            self.state = State.STOPPED

    def _select_timeout(self) -> float:
        now = time.monotonic()
        deadline = self.schedule.next_due_mono()
        if self.state is State.RUNNING and self.pools.missing():
            deadline = min(deadline, self.pools.next_spawn_mono())
        if self.pending or self.dead_owners:
            deadline = min(deadline, self._flush_due_mono(now))
        return min(max(deadline - now, 0.0), _MAX_SELECT_S)

    # -- start and stop -----------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        os.set_blocking(self.signal_r, False)
        os.set_blocking(self.signal_w, False)
        previous: dict[int, Any] = {sig: signal.signal(sig, _record_only) for sig in HANDLED_SIGNALS}
        signal.set_wakeup_fd(self.signal_w, warn_on_full_buffer=False)
        self.selector.register(self.signal_r, selectors.EVENT_READ, self._on_signals)
        return previous

    def _start(self) -> None:
        settings = self.config.supervisor
        become_subreaper()
        # Open the hot-path connection (results, leases) next to the pooled one before
        # forking: a database that later refuses new connections still takes our writes.
        self.backend.ping()
        self.backend.register_process(self.owner, socket.gethostname(), os.getpid(), "supervisor")
        self.last_heartbeat_mono = time.monotonic()
        self._open_listener()
        self._open_http()
        log.info(
            "supervisor_started",
            pid=os.getpid(),
            workers=settings.workers,
            tasks=sorted(self.queue.registrations),
            schedules=[schedule.describe() for schedule in self.queue.schedules.values()],
            backend=self.backend.dialect,
        )
        self.state = State.RUNNING
        self.pools.top_up(time.monotonic(), self._spawn)

    def _begin_drain(self, reason: str) -> None:
        """Stop claiming; let running jobs finish until shutdown_timeout."""
        if self.state is State.DRAINING:
            return
        self.notifier.stopping()
        self.state = State.DRAINING
        timeout = self.config.supervisor.shutdown_timeout_s
        self.drain_deadline_mono = time.monotonic() + timeout
        log.info("supervisor_draining", reason=reason, shutdown_timeout_s=timeout, workers=len(self.pools.workers()))
        self.pools.stop_all()

    def _stop_now(self, reason: str) -> None:
        self._begin_drain(reason)
        for handle in self.pools.workers():
            handle.kill(reason)

    def _cleanup(self, previous: dict[int, Any]) -> None:
        for handle in list(self.pools.workers()):
            handle.kill("supervisor exiting")
        deadline = time.monotonic() + 5
        while self.pools.workers() and time.monotonic() < deadline:
            self._reap_children(time.monotonic())
            time.sleep(0.01)
        self._kill_strays()
        self._flush(time.monotonic(), force=True)
        try:
            self.telemetry.write_stats(self.queue)
        except BackendError as exc:
            log.warning("stats_not_written", error=str(exc))
        try:
            self.backend.remove_process(self.owner)
        except BackendError as exc:
            log.warning("process_row_not_removed", error=str(exc))
        signal.set_wakeup_fd(-1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        self.selector.close()
        os.close(self.signal_r)
        os.close(self.signal_w)
        if self.listener is not None:
            self.listener.close()
        if self.http is not None:
            self.http.close()
        log.info("supervisor_stopped", exit_code=int(self.exit_code), jobs_done=self.jobs_done)

    # -- signals ------------------------------------------------------------------

    def _on_signals(self) -> None:
        try:
            data = os.read(self.signal_r, 512)
        except BlockingIOError:
            return
        for number in data:
            self._on_signal(signal.Signals(number))

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig is signal.SIGCHLD:
            return  # the loop reaps on every turn
        log.info("signal_received", signal=sig.name)
        if sig is signal.SIGINT and self.state is State.DRAINING:
            self.exit_code = ExitCode.INTERRUPTED
            self._stop_now("second SIGINT")
        elif sig in (signal.SIGTERM, signal.SIGINT):
            self._begin_drain(sig.name)
        elif sig is signal.SIGHUP and self.state is State.RUNNING:
            self._reload()
        elif sig in (signal.SIGTTIN, signal.SIGTTOU) and self.state is State.RUNNING:
            self.pools.default.resize(1 if sig is signal.SIGTTIN else -1)
            log.info("workers_resized", pool=self.pools.default.name, target=self.pools.default.target)

    def _reload(self) -> None:
        """New config and freshly imported app code; old workers finish and leave.

        A reload that fails (a bad config; app code that raises anything at all,
        which register_apps turns into a ConfigError) changes nothing: the workers
        running keep running, and the next ones are forked with the old code.
        """
        if self.reload_config is None:
            return
        self.notifier.reloading()
        try:
            config = self.reload_config()
            queue = JobQueue(self.backend, lease_s=config.supervisor.lease_timeout_s, retry_defaults=_retry(config))
            register_apps(queue, config.supervisor.apps, config.schedules, fresh=True)
        except BurrowError as exc:
            log.error("reload_failed", error=str(exc), detail="the running workers and code go on")
            self.notifier.ready()
            return
        if config.database != self.config.database:
            log.warning("reload_ignored_database", detail="a new [database] takes effect at restart")
        self.config, self.queue = config, queue
        self.guard_after_s = _guard_after_s(config.supervisor)
        for step in self._maintenance():
            self.schedule.set_interval(step.name, step.interval_s)
        self.pools.renew(config.supervisor)
        log.info("supervisor_reloaded", generation=self.pools.default.generation, tasks=sorted(queue.registrations))
        self.pools.top_up(time.monotonic(), self._spawn)
        self.notifier.ready()

    # -- workers ------------------------------------------------------------------

    def _spawn(self, pool: Pool) -> WorkerHandle:
        """Fork a worker for ``pool``; an OSError (no processes, memory or descriptors
        left) goes to the pool, which backs off."""
        settings = WorkerSettings(
            config=self.config.supervisor,
            retry=_retry(self.config),
            notified=self.listener is not None,
            supervisor_pid=os.getpid(),
            queues=pool.queues,
            batch_size=pool.batch_size or self.config.supervisor.batch_size,
        )
        queue = self.queue
        handle = spawn(pool.generation, self._inherited_fds(), lambda r, w: worker_main(queue, settings, r, w))
        handle.role = pool.role
        self.selector.register(handle.read_fd, selectors.EVENT_READ, lambda: self._on_readable(handle))
        log.info("worker_started", worker_pid=handle.pid, generation=handle.generation, pool=pool.name)
        return handle

    def _inherited_fds(self) -> list[int]:
        """What a new child must close: our signal pipe, the selector, other workers' pipes,
        our LISTEN socket.

        The LISTEN socket above all: while a worker held a copy, closing ours after
        the connection dropped did not take it out of our epoll set, which went on
        reporting it under its old number, for whatever listener reused the number
        (a spurious second _on_notify in one turn) or for nothing (a busy loop).
        """
        fds = [self.signal_r, self.signal_w, self.selector.fileno()]
        if self.listener is not None:
            fds.append(self.listener.fileno())
        if self.http is not None:
            fds.append(self.http.fileno())
        for handle in self.pools.workers():
            fds += [handle.read_fd, handle.write_fd]
            if handle.stack_file is not None:
                fds.append(handle.stack_file.fileno())
        return fds

    def _on_readable(self, handle: WorkerHandle) -> None:
        try:
            data = os.read(handle.read_fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._on_eof(handle)
            return
        now = time.monotonic()
        handle.last_heard_mono = now
        try:
            for message in handle.decoder.feed(data):
                self._on_message(handle, message, now)
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            log.error("worker_protocol_error", worker_pid=handle.pid, error=str(exc))
            self._on_eof(handle)
            handle.owner = None  # claims it announced may be lost with the stream: leave them to the lease
            handle.kill(f"protocol error: {exc}")

    def _on_eof(self, handle: WorkerHandle) -> None:
        if not handle.eof:
            handle.eof = True
            self.selector.unregister(handle.read_fd)

    def _on_message(self, handle: WorkerHandle, message: dict[str, Any], now: float) -> None:
        kind = message["t"]
        if kind == protocol.RESULT:
            self._on_result(handle, message, now)
        elif kind == protocol.CLAIMED:
            owner = message["owner"]
            jobs = _claimed_jobs(message["jobs"], owner)
            since = message.get("since")
            leased = min(since, now) if isinstance(since, float) else now
            handle.inflight.extend(InFlight(job, leased) for job in jobs)
            self.telemetry.claimed(len(jobs))
            handle.inflight[0].started_mono = handle.inflight[0].started_mono or now
            handle.idle = False
        elif kind == protocol.READY:
            # A job that arrived after the empty claim began may have notified us before
            # this READY came in, when the worker was not idle yet: wake it at once then.
            since = message.get("since")
            if isinstance(since, float) and self.notified_mono >= since and not handle.stopping:
                handle.send({"t": protocol.WAKE})
            else:
                handle.idle = True
        elif kind == protocol.HELLO:
            protocol.check_hello(message)
            owner = message.get("owner")
            handle.owner = owner if isinstance(owner, str) else None
            handle.booted = True
            self._register_worker(handle)
            self._maybe_ready()
        elif kind != protocol.HEARTBEAT:
            raise ProtocolError(f"unexpected message type {kind!r}")

    def _on_result(self, handle: WorkerHandle, message: dict[str, Any], now: float) -> None:
        job_id = message["id"]
        if job_id in handle.cancelled:  # written off as cancelled: its result is dropped
            handle.cancelled.discard(job_id)
            handle.cancel_deadline_mono = None
            self._next_started(handle, now)
            return
        for index, flight in enumerate(handle.inflight):
            if flight.job.id == job_id:
                del handle.inflight[index]
                break
        else:
            raise ProtocolError(f"result for job {job_id}, which this worker did not claim")
        data = _result_bytes(message)
        kind = OutcomeKind(message["kind"])
        if kind not in _WORKER_OUTCOMES:
            raise ProtocolError(f"a worker cannot report a {kind.value!r} outcome")
        duration = message.get("duration")
        if not flight.lease_lost:  # else another process owns the job: its outcome is that one's to write
            self._settle(
                Outcome(
                    job_id,
                    flight.job.owner,
                    message["attempt"],
                    kind,
                    result=data,
                    error=message.get("error"),
                    retry_in_s=float(message.get("retry_in_s", 0.0)),
                    duration_s=float(duration) if duration is not None else None,
                ),
                flight.job.task,
            )
        self._next_started(handle, now)
        if kind is not OutcomeKind.RELEASED:
            handle.jobs_done += 1
            self.jobs_done += 1
            self.pools.job_done(handle)

    def _next_started(self, handle: WorkerHandle, now: float) -> None:
        """The worker reported a job: the next one it claimed is the one running now."""
        if handle.inflight and handle.inflight[0].started_mono is None:
            handle.inflight[0].started_mono = now
            if handle.inflight[0].lease_lost:
                self._stop_lost_run(handle, handle.inflight[0], now)

    def _settle(self, outcome: Outcome, task: str) -> None:
        """An outcome to write with the next flush (and to count once written)."""
        self.pending.append(outcome)
        self.telemetry.expect(outcome, task)

    def _register_worker(self, handle: WorkerHandle) -> None:
        """The worker's row in burrow_processes, heartbeated with ours, so that operators
        see it; a row that cannot be written now is written on the next heartbeat."""
        if handle.owner is None:
            return
        try:
            self.backend.register_process(handle.owner, socket.gethostname(), handle.pid, handle.role)
        except BackendError as exc:
            log.warning("process_row_not_written", worker_pid=handle.pid, error=str(exc))

    def _forget_worker(self, handle: WorkerHandle) -> None:
        if handle.owner is None:
            return
        try:
            self.backend.remove_process(handle.owner)
        except BackendError as exc:  # it goes stale, and any supervisor's reaper removes it
            log.warning("process_row_not_removed", worker_pid=handle.pid, error=str(exc))

    def _maybe_ready(self) -> None:
        if not self.ready_sent and self.pools.ready():
            self.ready_sent = True
            self.notifier.ready()
            log.info("supervisor_ready", workers=len(self.pools.workers()), pools=self.pools.describe())

    def _reap_children(self, now: float) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            found = self.pools.pop(pid)
            if found is not None:
                self._on_exit(*found, status, now)

    def _on_exit(self, pool: Pool, handle: WorkerHandle, status: int, now: float) -> None:
        """Read its last words, then settle every job it held, in this same turn."""
        self._read_last_words(handle)
        handle.kill_group()  # grandchildren a handler forked die with their worker
        stack = handle.read_stack()
        handle.close()
        reason = handle.kill_reason or describe_exit(status)
        code = os.waitstatus_to_exitcode(status)
        clean = os.WIFEXITED(status) and code == WorkerExit.OK and handle.kill_reason is None
        shutting_down = self.state is State.DRAINING
        settled = 0
        lost_stack = ""
        for index, flight in enumerate(handle.inflight):
            ran = index == 0 and flight.started_mono is not None
            if flight.lease_lost:  # another process owns it: nothing to write, the fence would refuse it
                if ran:
                    lost_stack = stack
                continue
            settled += 1
            duration_s = now - flight.started_mono if ran and flight.started_mono is not None else None
            if ran and not shutting_down and not handle.release_running:
                outcome = failure_outcome(
                    flight.job,
                    self._job_config(flight.job.task),
                    _retry(self.config),
                    _with_stack(f"{reason} while running the job", stack),
                    permanent=False,
                    duration_s=duration_s,
                )
            else:
                error = _with_stack(f"released: {reason}", stack) if ran else None
                outcome = Outcome(
                    flight.job.id, flight.job.owner, flight.job.attempt, OutcomeKind.RELEASED, error=error,
                    duration_s=duration_s,
                )
            self._settle(outcome, flight.job.task)
        if handle.owner is not None and not clean:
            self.dead_owners.append(handle.owner)  # a clean exit announced every claim it made
        event = log.info if clean else log.error
        # A lost run's stack has no job error to go in: the log keeps where it was stopped.
        extra = {"stack": lost_stack} if lost_stack else {}
        event("worker_exited", worker_pid=handle.pid, reason=reason, jobs_done=handle.jobs_done, jobs_settled=settled, **extra)
        self.telemetry.worker_exited(exit_label(handle.kill_reason, clean, os.WIFSIGNALED(status)))
        self._forget_worker(handle)
        if not handle.booted and os.WIFEXITED(status) and code == WorkerExit.BOOT_FAILED and self._database_answers():
            log.error("worker_boot_failed", worker_pid=handle.pid, detail="stopping: a new worker would fail the same way")
            self.exit_code = ExitCode.WORKER_BOOT_FAILED
            self._stop_now("a worker could not boot")
        elif not clean and not handle.stopping:
            pool.crashed(now)

    def _database_answers(self) -> bool:
        """Whether our own connection works: if not, a worker's failed boot is an outage.

        An outage ends by itself, so it gets the crash backoff; a database only
        the supervisor can reach (its connections predate a lost permission or a
        moved file) will not, and stops the supervisor instead of a spin.
        """
        try:
            self.backend.ping()
        except BackendError as exc:
            log.warning("worker_boot_failed", detail="the database is unreachable; retrying with backoff", error=str(exc))
            return False
        return True

    def _kill_strays(self) -> None:
        """SIGKILL and reap the children that are not workers, before we exit.

        As a subreaper we adopt a handler's orphaned descendants, such as a
        daemon that left its worker's process group with setsid (so killing
        the group missed it); nothing would ever stop it after we are gone.
        """
        try:
            workers = self.pools.pids()
            children = [p for p in psutil.Process().children() if p.pid not in workers]
        except psutil.Error:
            return
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:
                    log.warning("stray_process_killed", pid=child.pid, detail="a descendant of a worker outlived it")
                    child.kill()
        strays = [child.pid for child in children]
        deadline = time.monotonic() + 1
        while strays and time.monotonic() < deadline:
            for pid in list(strays):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                strays.remove(pid)
            time.sleep(0.01)

    def _read_last_words(self, handle: WorkerHandle) -> None:
        """Frames a dead worker wrote before it died; stops at EOF or an empty pipe.

        An empty pipe, not EOF, ends it when a grandchild still holds the write end.
        """
        while not handle.eof:
            try:
                data = os.read(handle.read_fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                break
            try:
                for message in handle.decoder.feed(data):
                    self._on_message(handle, message, time.monotonic())
            except (ProtocolError, KeyError, TypeError, ValueError) as exc:
                log.error("worker_protocol_error", worker_pid=handle.pid, error=str(exc))
                handle.owner = None  # see _on_readable
                break
        self._on_eof(handle)

    def _job_config(self, task: str) -> JobConfig:
        registration = self.queue.registrations.get(task)
        return registration.config if registration else JobConfig()

    # -- database -----------------------------------------------------------------

    def _flush(self, now: float, *, force: bool = False) -> None:
        """Write every pending outcome in one round trip; keep them if the database is away.

        Then give back what exited workers still hold, and only then: once their
        reported outcomes are written, a job still running under their owner is
        one they claimed but never announced (and so never ran).
        """
        if not (self.pending or self.dead_owners):
            return
        if self.pending_since_mono is None:
            self.pending_since_mono = now
        if not force and now < self._flush_due_mono(now):
            return
        batch, self.pending = self.pending, []
        owners, self.dead_owners = self.dead_owners, []
        try:
            lost = self.backend.finish(batch)
        except BackendError as exc:
            self.pending = batch + self.pending
            self.dead_owners = owners + self.dead_owners
            self.flush_retry_mono = now + 0.5
            log.error("results_not_written", jobs=len(batch), error=str(exc))
            return
        self.pending_since_mono = None
        self.flush_retry_mono = 0.0  # written: the next outcomes need not wait out an old retry time
        self.telemetry.written(batch, lost, self.backend.now())
        for job_id in lost:
            log.warning("job_lease_lost", job_id=job_id, detail="another attempt owns the job; this result was dropped")
        for index, owner in enumerate(owners):
            try:
                released = self.backend.release_owner(owner)
            except BackendError as exc:
                self.dead_owners = owners[index:] + self.dead_owners
                self.flush_retry_mono = now + 0.5
                log.error("claims_not_released", owner=owner, error=str(exc))
                return
            if released:
                log.warning("unannounced_claims_released", owner=owner, job_ids=released)

    def _flush_due_mono(self, now: float) -> float:
        """When pending outcomes should be written: ``flush_interval`` after the oldest.

        Workers report each job as it ends; writing each report in its own
        transaction would make commits, not jobs, the limit. Gathering them for a
        few milliseconds turns a drain's flushes from a few dozen outcomes into
        hundreds (measured: benchmarks/README.md), while a job's result still
        lands within milliseconds. After a failed write, not before the retry time.
        """
        if len(self.pending) >= _FLUSH_AT_OUTCOMES:
            return self.flush_retry_mono
        since = now if self.pending_since_mono is None else self.pending_since_mono
        return max(self.flush_retry_mono, since + self.config.supervisor.flush_interval_s)

    # -- maintenance --------------------------------------------------------------

    def _maintenance(self) -> list[Step]:
        """The periodic work, with its intervals from the current config."""
        settings = self.config.supervisor
        heartbeat_s = settings.heartbeat_interval_s
        return [
            Step("leases", heartbeat_s, self._extend_leases),
            Step("process", heartbeat_s, self._heartbeat_process),
            Step("reaper", settings.reap_interval_s, self._reap),
            Step("listener", heartbeat_s, self._reopen_listener),
            Step("status", heartbeat_s, self._report_status),
            Step("schedules", _SCHEDULES_CHECK_S, self._enqueue_due_slots),
            Step("cancels", _CANCELS_CHECK_S, self._stop_cancelled),
            Step("telemetry", heartbeat_s, self._refresh_telemetry),
            Step("retention", _RETENTION_INTERVAL_S, self._prune, due_mono=time.monotonic() + _RETENTION_FIRST_S),
        ]

    def _maintain(self, now: float) -> None:
        for failure in self.schedule.run_due(now):
            log.error(
                "heartbeat_failed",
                step=failure.step,
                error=str(failure.error),
                seconds_since_ok=round(now - self.last_db_ok_mono, 1),
            )

    def _extend_leases(self, now: float) -> None:
        """The leases of every in-flight job (the outage guard watches their age).

        With no job in flight the call is free and succeeds: nothing can lapse,
        and a job claimed later has a lease that starts after this moment. A
        lease found lost is not asked for again: its job is another process's now.
        """
        held = [(h, f) for h in self.pools.workers() for f in h.inflight if not f.lease_lost]
        fences = [(f.job.id, f.job.owner, f.job.attempt) for _, f in held]
        lost = self.backend.extend_leases(fences, self.config.supervisor.lease_timeout_s)
        self.last_db_ok_mono = now
        for _, flight in held:
            flight.leased_mono = now
        if lost:
            self._on_leases_lost(set(lost), held, now)

    def _on_leases_lost(self, lost: set[int], held: list[tuple[WorkerHandle, InFlight]], now: float) -> None:
        """Stop every run whose lease is gone, before it runs on beside its new owner.

        A lease is lost when another process took the job over: a reaper whose
        clock saw the lease expire (we were stalled, or its clock runs ahead),
        or a hand in the table. The new owner may be running the job this
        moment, so ours must stop at once; and it must leave the row alone (the
        fence would refuse the write anyway). Ids alone name the lost fences:
        when one id is held twice (an old run we lost to our own reaper, and our
        new claim of it), the row says which of the two owns it.
        """
        counts = collections.Counter(f.job.id for _, f in held)
        for handle, flight in held:
            job = flight.job
            if job.id not in lost:
                continue
            if counts[job.id] > 1 and self._still_owns(flight):
                continue
            flight.lease_lost = True
            log.warning(
                "job_lease_lost",
                job_id=job.id,
                task=job.task,
                attempt=job.attempt,
                worker_pid=handle.pid,
                detail="another process owns the job now: its run here is stopped and nothing is written for it",
            )
            if handle.inflight and handle.inflight[0] is flight:
                self._stop_lost_run(handle, flight, now)
            # A lost job claimed behind the running one is stopped when it starts (_on_result).

    def _still_owns(self, flight: InFlight) -> bool:
        try:
            record = self.backend.get(flight.job.id)
        except BackendError:
            return True  # not known yet: the next heartbeat asks again
        return (
            record is not None
            and record.state is JobState.RUNNING
            and (record.owner, record.attempts) == (flight.job.owner, flight.job.attempt)
        )

    def _stop_lost_run(self, handle: WorkerHandle, flight: InFlight, now: float) -> None:
        """SIGTERM (its stack dumped for the log), SIGKILL after the grace, a new worker.

        What else it was running when it died was not that job's fault: it goes
        back to the queue with its attempt given back (release_running).
        """
        if handle.kill_reason is not None:
            return  # dying already
        handle.release_running = True
        handle.terminate(f"lease lost: job {flight.job.id} belongs to another process now", now + _TERM_GRACE_S)

    def _heartbeat_process(self, now: float) -> None:
        """Our row in burrow_processes; then systemd's watchdog, which only a database
        that answers keeps fed."""
        workers = {h.owner: h for h in self.pools.workers() if h.owner is not None and h.booted}
        for owner in self.backend.heartbeat_processes([self.owner, *workers]):
            if owner == self.owner:
                self.backend.register_process(owner, socket.gethostname(), os.getpid(), "supervisor")
            else:
                self.backend.register_process(owner, socket.gethostname(), workers[owner].pid, workers[owner].role)
        self.last_heartbeat_mono = now
        self.notifier.watchdog()

    def _reap(self, now: float) -> None:
        # Our own results first: a job that finished while the database was
        # away has an expired lease, and reaping it first would run it again.
        self._flush(now, force=True)
        if self.pending:
            return  # not written yet: some may be ours, finished, with an expired lease
        reaped = self.queue.reap_expired()
        for job in reaped:
            log.warning("job_lease_expired", job_id=job.id, task=job.task, attempt=job.attempt, now=job.state.value)
        self.telemetry.reaped(reaped, self.backend.now())
        stale_after = max(self.config.supervisor.lease_timeout_s, 3 * self.config.supervisor.heartbeat_interval_s)
        for owner in self.backend.reap_processes(stale_after):
            log.warning("process_presumed_dead", owner=owner)

    def _enqueue_due_slots(self, now: float) -> None:
        """Periodic jobs: each due slot enqueued once across every supervisor (see
        JobQueue.enqueue_due_slots); a database call only when a new slot is due."""
        if self.state is State.RUNNING:
            self.queue.enqueue_due_slots()

    def _stop_cancelled(self, now: float) -> None:
        """Jobs of ours an operator cancelled while they ran (q.cancel): each is written
        off as cancelled at once (fenced, never retried). A job not started yet is not
        started; the one running gets a second to stop by itself (its handler may look
        at current_job().cancel_requested), then its worker is stopped and replaced."""
        held = {f.job.id: (h, f) for h in self.pools.workers() for f in h.inflight if not f.lease_lost}
        cancelled = self.backend.cancel_requests(list(held))
        for job_id in cancelled:
            handle, flight = held[job_id]
            running = handle.inflight[0] is flight and flight.started_mono is not None
            handle.inflight.remove(flight)
            handle.cancelled.add(job_id)
            duration_s = now - flight.started_mono if running and flight.started_mono is not None else None
            error = "cancelled at an operator's request (q.cancel)" + ("" if running else " before it started")
            job = flight.job
            self._settle(Outcome(job.id, job.owner, job.attempt, OutcomeKind.CANCELLED, error=error, duration_s=duration_s), job.task)
            log.info("job_cancelled", job_id=job.id, task=job.task, attempt=job.attempt, worker_pid=handle.pid, running=running)
            if running:
                handle.cancel_deadline_mono = now + _CANCEL_GRACE_S
            else:
                handle.send({"t": protocol.CANCEL, "id": job_id})
        if cancelled:
            self._flush(now, force=True)  # written off at once; other outcomes keep their pace

    def _refresh_telemetry(self, now: float) -> None:
        self.telemetry.refresh(self.queue, {pool.name: len(pool.workers) for pool in self.pools.all()})

    def _prune(self, now: float) -> None:
        """Retention: finished jobs past their state's age go, a few thousand a turn at most
        (1,000 a transaction), so that a first prune of millions never stalls the loop;
        while there is more to do, the step comes back sooner."""
        deleted = prune_finished(self.backend, self.config.retention, max_rows=_RETENTION_ROWS_PER_TURN)
        if deleted:
            log.info("jobs_pruned", deleted=deleted)
        if deleted >= _RETENTION_ROWS_PER_TURN:
            self.schedule.run_at("retention", now + _RETENTION_BUSY_INTERVAL_S)

    def _open_http(self) -> None:
        bind = self.config.http.bind
        if bind is None:
            return
        try:
            self.http = HealthServer(bind, {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz})
        except OSError as exc:
            raise ConfigError(f"{self.config.path}: [http] bind {bind[0]}:{bind[1]}: {exc.strerror or exc}") from exc
        self.selector.register(self.http, selectors.EVENT_READ, self.http.handle)
        log.info("http_listening", address=f"{self.http.address[0]}:{self.http.address[1]}")

    def _metrics(self) -> Answer:
        assert self.telemetry.metrics is not None
        body, content_type = self.telemetry.metrics.render()
        return 200, content_type, body

    def _healthz(self) -> Answer:
        """Answered at all means the loop turns."""
        return 200, "text/plain", f"ok: {self.state.value}\n".encode()

    def _readyz(self) -> Answer:
        """Ready: our process row was written within three heartbeats, and a worker is up."""
        limit = 3 * self.config.supervisor.heartbeat_interval_s
        since = None if self.last_heartbeat_mono is None else time.monotonic() - self.last_heartbeat_mono
        if since is None or since > limit:
            reason = "never" if since is None else f"{since:.1f}s ago"
            return 503, "text/plain", f"not ready: no database heartbeat within {limit:g}s (last {reason})\n".encode()
        if self.state is not State.RUNNING or not any(h.booted for h in self.pools.workers()):
            return 503, "text/plain", f"not ready: no worker is up (state {self.state.value})\n".encode()
        return 200, "text/plain", b"ready\n"

    def _reopen_listener(self, now: float) -> None:
        if self.listener is None and self.state is State.RUNNING:
            self._open_listener()

    def _report_status(self, now: float) -> None:
        busy = sum(1 for h in self.pools.workers() if h.inflight)
        self.notifier.status(
            f"{len(self.pools.workers())} workers, {busy} busy, {self.jobs_done} jobs done, state {self.state.value};"
            f" pools: {self.pools.describe()}"
        )

    def _guard_leases(self, now: float) -> None:
        """With the database away, stop in-flight work before our leases can lapse.

        Past that point another supervisor may reap and re-run the jobs; killing
        ours first keeps an outage from turning into duplicate runs. Checked on
        every turn of the loop against each lease's age (since its claim began
        or its last extension went through), not only when an extension fails:
        a call into a partition returns only at its deadline, and a job claimed
        after the database came back has a fresh lease however long the outage
        was. The margin is two heartbeats and one such call (connect timeout and
        deadline) before the lease would lapse. The outage is
        not the jobs' fault: each stopped run is released (a RELEASED outcome with
        the reason, its attempt given back, written once the database answers),
        so a job on its last attempt is run again rather than failed. Our own
        reaper writes our outcomes before it reaps; another supervisor's reaper
        that gets to the job first treats it as any expired lease.
        """
        for handle in self.pools.workers():
            if any(now - f.leased_mono >= self.guard_after_s for f in handle.inflight if not f.lease_lost):
                if handle.kill_reason is None:  # else killed for its own reason (a timeout), and charged for it
                    handle.release_running = True
                handle.kill("database unreachable: stopped before the lease could lapse")

    def _open_listener(self) -> None:
        opener = getattr(self.backend, "listener", None)
        if opener is None:
            return
        try:
            self.listener = opener()
        except BackendError as exc:
            log.warning("listen_failed", error=str(exc))
            return
        self.selector.register(self.listener, selectors.EVENT_READ, self._on_notify)

    def _on_notify(self) -> None:
        if self.listener is None:
            return  # lost earlier in this turn; the listener step opens a new one
        try:
            payloads = self.listener.poll()
        except BackendError as exc:
            log.warning("listen_lost", error=str(exc))
            self.selector.unregister(self.listener)
            self.listener = None
            payloads = [""]
        if CANCEL_NOTICE in payloads:  # a job was cancelled: ours? look now, not at the next poll
            self.schedule.run_at("cancels", time.monotonic())
        tasks = set(self.queue.registrations)
        if any(not p or tasks.intersection(p.split(",")) for p in payloads):
            self.notified_mono = time.monotonic()
            for handle in self.pools.workers():
                if handle.idle and not handle.stopping:
                    handle.idle = False
                    handle.send({"t": protocol.WAKE})

    # -- deadlines ----------------------------------------------------------------

    def _enforce_deadlines(self, now: float) -> None:
        settings = self.config.supervisor
        silence_s = 3 * settings.heartbeat_interval_s
        sigkill_at = now + _TERM_GRACE_S
        for handle in self.pools.workers():
            if handle.kill_reason is not None:
                if handle.sigkill_at_mono is not None and now >= handle.sigkill_at_mono:
                    detail = f"still running {_TERM_GRACE_S:g}s after SIGTERM"
                    log.warning("worker_killed", worker_pid=handle.pid, reason=handle.kill_reason, detail=detail)
                    handle.kill(handle.kill_reason)
                continue
            if handle.cancel_deadline_mono is not None and now > handle.cancel_deadline_mono:
                handle.release_running = True  # its running job was written off; the rest go back
                handle.terminate(f"cancelled: the job did not stop within {_CANCEL_GRACE_S:g}s of the request", sigkill_at)
            elif not handle.booted and now - handle.spawned_mono > _BOOT_TIMEOUT_S:
                handle.kill(f"worker did not boot within {_BOOT_TIMEOUT_S:g}s")
            elif now - handle.last_heard_mono > silence_s:
                handle.terminate(f"worker silent for {now - handle.last_heard_mono:.1f}s (no heartbeat)", sigkill_at)
            elif (running := handle.running()) is not None and running.started_mono is not None:
                timeout_s = self._job_config(running.job.task).timeout_s
                if timeout_s is not None and now - running.started_mono > timeout_s:
                    handle.terminate(f"timeout: the job ran longer than {timeout_s:g}s", sigkill_at)
        if self.drain_deadline_mono is not None and now > self.drain_deadline_mono:
            for handle in self.pools.workers():
                if handle.kill_reason is None:
                    handle.kill("shutdown_timeout reached")


def _guard_after_s(settings: SupervisorConfig) -> float:
    """How long the leases may go unextended before the outage guard stops the runs.

    Two heartbeats and the longest call before the lease lapses: the turn that
    sees the threshold pass may be stuck in a call into a partition until that
    call's connect timeout and deadline are both spent. Never before half the
    lease: with a lease too short for that margin (a test's), a slow turn of a
    loaded machine would otherwise count as an outage.
    """
    worst_call_s = Timeouts.for_supervisor(settings.heartbeat_interval_s).worst_call_s
    lease_s = settings.lease_timeout_s
    return max(lease_s - 2 * settings.heartbeat_interval_s - worst_call_s, lease_s / 2)


def _record_only(signum: int, frame: object) -> None:
    """Installed so set_wakeup_fd fires; the loop reads the signal number from the pipe."""


def _claimed_jobs(entries: Any, owner: Any) -> list[ClaimedJob]:
    """A claimed frame's jobs, each ``[id, attempt, task, max_retries]``; ProtocolError if
    it names none (the first would be taken as running) or any is malformed."""
    if type(owner) is not str:
        raise ProtocolError(f"a claimed frame's owner is a {type(owner).__name__}, not a string")
    if type(entries) is not list or not entries:
        raise ProtocolError("a claimed frame must name at least one job")
    jobs = []
    for entry in entries:
        if type(entry) is not list or len(entry) != 4:
            raise ProtocolError("a claimed frame's job must be [id, attempt, task, max_retries]")
        job_id, attempt, task, max_retries = entry
        if type(job_id) is not int or type(attempt) is not int or type(task) is not str or type(max_retries) is not int:
            raise ProtocolError("a claimed frame's job must be [id, attempt, task, max_retries]")
        jobs.append(ClaimedJob(job_id, task, b"", 0, attempt, max_retries, owner))
    return jobs


def _result_bytes(message: dict[str, Any]) -> bytes | None:
    """A result frame's result: a JSON string's UTF-8, or base64 (worker.outcome_frame)."""
    text, packed = message.get("result"), message.get("result_b64")
    if text is not None:
        if type(text) is not str:
            raise ProtocolError(f"a result frame's result is a {type(text).__name__}, not a string")
        return text.encode()
    if packed is not None:
        if type(packed) is not str:
            raise ProtocolError(f"a result frame's result_b64 is a {type(packed).__name__}, not a string")
        try:
            return base64.b64decode(packed, validate=True)
        except binascii.Error as exc:
            raise ProtocolError(f"a result frame's result_b64 is not base64: {exc}") from None
    return None


def _with_stack(error: str, stack: str) -> str:
    """The reason line first, as logs and job lists show only that; then where the job was."""
    return f"{error}\n{stack}" if stack else error


def _retry(config: Config) -> RetryDefaults:
    return RetryDefaults(config.retry.base_s, config.retry.max_s)
