"""The supervisor: one selectors loop over worker pipes, signals and LISTEN.

Each turn of the loop is a short list of steps: wait for events (the inbox reads
what the workers said), reap dead workers (exits.py), write results in one batch
(outbox.py), run the services that are due (services/: leases, process row,
reaper, LISTEN, systemd status, deadlines...), top the pool up. This module keeps
only the loop, signals, start and stop; the state its parts share is the Context
(context.py), so that none of them reaches into the Supervisor. Signal handlers
do nothing; ``signal.set_wakeup_fd`` puts the signal number on a pipe this loop
reads, so every reaction to a signal happens here, outside the handler, where
logging and database calls are safe.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from burrow.config import Config
from burrow.errors import BackendError, BurrowError, ConfigError
from burrow.queue import JobQueue, new_owner
from burrow.supervisor.apps import register_apps
from burrow.supervisor.children import HANDLED_SIGNALS, WorkerHandle, become_subreaper, report_pipe_bytes, spawn
from burrow.supervisor.context import Context, ExitCode, State, retry_defaults
from burrow.supervisor.exits import kill_strays, reap_children
from burrow.supervisor.inbox import Inbox
from burrow.supervisor.memory import prepare_to_fork
from burrow.supervisor.metrics import Metrics
from burrow.supervisor.outbox import Outbox
from burrow.supervisor.pool import Pool, Pools
from burrow.supervisor.services.guard import guard_after_s
from burrow.supervisor.services.listener import listens, open_listener
from burrow.supervisor.services.registry import SERVICES
from burrow.supervisor.services.runner import Runner
from burrow.supervisor.systemd import Notifier
from burrow.supervisor.telemetry import Telemetry
from burrow.supervisor.worker import WorkerSettings, worker_main

if TYPE_CHECKING:
    from burrow.supervisor.http import Answer, HealthServer

log = structlog.get_logger("burrow.supervisor")

_MAX_SELECT_S = 0.25  # job timeouts and silence are checked at least this often


class Supervisor:
    def __init__(
        self,
        config: Config,
        queue: JobQueue,
        *,
        reload_config: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.reload_config = reload_config
        telemetry = Telemetry(Metrics() if config.http.bind is not None else None)
        self.ctx = ctx = Context(
            config=config,
            queue=queue,
            backend=queue.backend,
            owner=new_owner("supervisor"),
            pools=Pools(config.supervisor),
            telemetry=telemetry,
            notifier=notifier or Notifier.from_environ(),
            outbox=Outbox(queue.backend, telemetry, config.supervisor.flush_interval_s),
            selector=selectors.DefaultSelector(),
            guard_after_s=guard_after_s(config.supervisor),
        )
        self.services = Runner(ctx, SERVICES, time.monotonic())
        ctx.run_at = self.services.run_at
        self.inbox = Inbox(ctx)
        self.http: HealthServer | None = None
        self.signal_r, self.signal_w = os.pipe()
        if ctx.outbox.wake_fd is not None:
            ctx.selector.register(ctx.outbox.wake_fd, selectors.EVENT_READ, ctx.outbox.on_wake)

    # -- the loop -----------------------------------------------------------------

    def run(self) -> ExitCode:
        previous = self._install_signals()
        try:
            self._start()
            while self.ctx.state is not State.STOPPED:
                self._step()
        finally:
            self._cleanup(previous)
        return self.ctx.exit_code

    def _step(self) -> None:
        ctx = self.ctx
        for key, _ in ctx.selector.select(self._select_timeout()):
            key.data()
        now = time.monotonic()
        reap_children(ctx, self.inbox, now)
        ctx.outbox.flush(now)
        self.services.run(now)
        if ctx.state is State.RUNNING:
            ctx.pools.top_up(now, self._spawn)
        elif ctx.state is State.DRAINING and not ctx.pools.workers():
            ctx.outbox.flush(now, force=True)
            ctx.state = State.STOPPED
        elif ctx.state is State.DRAINING:
            ctx.report_drain(now)

    def _select_timeout(self) -> float:
        ctx = self.ctx
        now = time.monotonic()
        deadline = self.services.next_due_mono()
        if ctx.state is State.RUNNING and ctx.pools.missing():
            deadline = min(deadline, ctx.pools.next_spawn_mono())
        if ctx.outbox.waiting():
            deadline = min(deadline, ctx.outbox.due_mono(now))
        return min(max(deadline - now, 0.0), _MAX_SELECT_S)

    # -- start and stop -----------------------------------------------------------

    def _install_signals(self) -> dict[int, Any]:
        os.set_blocking(self.signal_r, False)
        os.set_blocking(self.signal_w, False)
        previous: dict[int, Any] = {sig: signal.signal(sig, _record_only) for sig in HANDLED_SIGNALS}
        signal.set_wakeup_fd(self.signal_w, warn_on_full_buffer=False)
        self.ctx.selector.register(self.signal_r, selectors.EVENT_READ, self._on_signals)
        return previous

    def _start(self) -> None:
        ctx = self.ctx
        settings = ctx.config.supervisor
        become_subreaper()
        # Open the hot-path connection (results, leases) next to the pooled one before
        # forking: a database that later refuses new connections still takes our writes.
        ctx.backend.ping()
        ctx.backend.register_process(ctx.owner, socket.gethostname(), os.getpid(), "supervisor")
        ctx.register_tasks()
        ctx.last_heartbeat_mono = time.monotonic()
        open_listener(ctx)
        if ctx.backend.dialect == "postgresql" and not listens(ctx):
            log.info(
                "polling_for_jobs",
                poll_interval=settings.poll_interval_s,
                detail="the DSN is a pooler in transaction mode and [database] listen_dsn is not set: no LISTEN,"
                " idle workers poll",
            )
        self._open_http()
        log.info(
            "supervisor_started",
            pid=os.getpid(),
            workers=settings.workers,
            tasks=sorted(ctx.queue.registrations),
            schedules=[schedule.describe() for schedule in ctx.queue.schedules.values()],
            backend=ctx.backend.dialect,
        )
        ctx.state = State.RUNNING
        prepare_to_fork()
        ctx.pools.top_up(time.monotonic(), self._spawn)

    def _cleanup(self, previous: dict[int, Any]) -> None:
        ctx = self.ctx
        for handle in list(ctx.pools.workers()):
            handle.kill("supervisor exiting")
        deadline = time.monotonic() + 5
        while ctx.pools.workers() and time.monotonic() < deadline:
            reap_children(ctx, self.inbox, time.monotonic())
            time.sleep(0.01)
        kill_strays(ctx.pools)
        ctx.outbox.flush(time.monotonic(), force=True)
        ctx.outbox.close()
        try:
            ctx.telemetry.write_stats(ctx.queue)
        except BackendError as exc:
            log.warning("stats_not_written", error=str(exc))
        try:
            ctx.backend.remove_process(ctx.owner)
        except BackendError as exc:
            log.warning("process_row_not_removed", error=str(exc))
        signal.set_wakeup_fd(-1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        ctx.selector.close()
        os.close(self.signal_r)
        os.close(self.signal_w)
        if ctx.listener is not None:
            ctx.listener.close()
        if self.http is not None:
            self.http.close()
        log.info("supervisor_stopped", exit_code=int(ctx.exit_code), jobs_done=ctx.jobs_done)

    # -- signals ------------------------------------------------------------------

    def _on_signals(self) -> None:
        try:
            data = os.read(self.signal_r, 512)
        except BlockingIOError:
            return
        for number in data:
            self._on_signal(signal.Signals(number))

    def _on_signal(self, sig: signal.Signals) -> None:
        ctx = self.ctx
        if sig is signal.SIGCHLD:
            return  # the loop reaps on every turn
        log.info("signal_received", signal=sig.name)
        if sig is signal.SIGINT and ctx.state is State.DRAINING:
            ctx.exit_code = ExitCode.INTERRUPTED
            ctx.stop_now("second SIGINT")
        elif sig in (signal.SIGTERM, signal.SIGINT):
            ctx.begin_drain(sig.name)
        elif sig is signal.SIGHUP and ctx.state is State.RUNNING:
            self._reload()
        elif sig in (signal.SIGTTIN, signal.SIGTTOU) and ctx.state is State.RUNNING:
            ctx.pools.default.resize(1 if sig is signal.SIGTTIN else -1)
            log.info("workers_resized", pool=ctx.pools.default.name, target=ctx.pools.default.target)

    def _reload(self) -> None:
        """New config and freshly imported app code; old workers finish and leave.

        A reload that fails (a bad config; app code that raises anything at all,
        which register_apps turns into a ConfigError) changes nothing: the workers
        running keep running, and the next ones are forked with the old code.
        """
        if self.reload_config is None:
            return
        ctx = self.ctx
        ctx.notifier.reloading()
        try:
            config = self.reload_config()
            queue = JobQueue(ctx.backend, lease_s=config.supervisor.lease_timeout_s, retry_defaults=retry_defaults(config))
            register_apps(queue, config.supervisor.apps, config.schedules, fresh=True)
        except BurrowError as exc:
            log.error("reload_failed", error=str(exc), detail="the running workers and code go on")
            ctx.notifier.ready()
            return
        if config.database != ctx.config.database:
            log.warning("reload_ignored_database", detail="a new [database] takes effect at restart")
        ctx.config, ctx.queue = config, queue
        try:
            ctx.register_tasks()
        except BackendError as exc:  # the heartbeat writes them with our row next time it can
            log.warning("tasks_not_registered", error=str(exc))
        ctx.guard_after_s = guard_after_s(config.supervisor)
        ctx.outbox.flush_interval_s = config.supervisor.flush_interval_s
        self.services.reconfigure()
        ctx.pools.renew(config.supervisor)
        log.info("supervisor_reloaded", generation=ctx.pools.default.generation, tasks=sorted(queue.registrations))
        ctx.pools.top_up(time.monotonic(), self._spawn)
        ctx.notifier.ready()

    # -- workers ------------------------------------------------------------------

    def _spawn(self, pool: Pool) -> WorkerHandle:
        """Fork a worker for ``pool``; an OSError (no processes, memory or descriptors
        left) goes to the pool, which backs off."""
        ctx = self.ctx
        settings = WorkerSettings(
            config=ctx.config.supervisor,
            retry=ctx.retry_defaults(),
            notified=ctx.listener is not None,
            supervisor_pid=os.getpid(),
            queues=pool.queues,
            batch_size=pool.batch_size or ctx.config.supervisor.batch_size,
        )
        queue = ctx.queue
        pipe_bytes = report_pipe_bytes(sum(p.target for p in ctx.pools.all()))
        handle = spawn(
            pool.generation, self._inherited_fds(), lambda r, w: worker_main(queue, settings, r, w), pipe_bytes
        )
        handle.role = pool.role
        on_readable = self.inbox.on_readable
        ctx.selector.register(handle.read_fd, selectors.EVENT_READ, lambda: on_readable(handle))
        log.info("worker_started", worker_pid=handle.pid, generation=handle.generation, pool=pool.name)
        return handle

    def _inherited_fds(self) -> list[int]:
        """What a new child must close: our signal pipe, the selector, the outbox's wake
        pipe, other workers' pipes, our LISTEN socket.

        The LISTEN socket above all: while a worker held a copy, closing ours after
        the connection dropped did not take it out of our epoll set, which went on
        reporting it under its old number, for whatever listener reused the number
        (a spurious second on_notify in one turn) or for nothing (a busy loop).
        """
        ctx = self.ctx
        fds = [self.signal_r, self.signal_w, ctx.selector.fileno(), *ctx.outbox.own_fds()]
        if ctx.listener is not None:
            fds.append(ctx.listener.fileno())
        if self.http is not None:
            fds.append(self.http.fileno())
        for handle in ctx.pools.workers():
            fds += [handle.read_fd, handle.write_fd]
            if handle.stack_file is not None:
                fds.append(handle.stack_file.fileno())
        return fds

    # -- HTTP ---------------------------------------------------------------------

    def _open_http(self) -> None:
        config = self.ctx.config
        bind = config.http.bind
        if bind is None:
            return
        # Imported only when asked for: http.server and what it brings cost each of the
        # supervisor's processes 0.9 MB (the workers are its forks).
        from burrow.supervisor.http import HealthServer

        try:
            self.http = HealthServer(bind, {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz})
        except OSError as exc:
            raise ConfigError(f"{config.path}: [http] bind {bind[0]}:{bind[1]}: {exc.strerror or exc}") from exc
        self.ctx.selector.register(self.http, selectors.EVENT_READ, self.http.handle)
        log.info("http_listening", address=f"{self.http.address[0]}:{self.http.address[1]}")

    def _metrics(self) -> Answer:
        assert self.ctx.telemetry.metrics is not None
        body, content_type = self.ctx.telemetry.metrics.render()
        return 200, content_type, body

    def _healthz(self) -> Answer:
        """Answered at all means the loop turns."""
        return 200, "text/plain", f"ok: {self.ctx.state.value}\n".encode()

    def _readyz(self) -> Answer:
        """Ready: our process row was written within three heartbeats, and a worker is up."""
        ctx = self.ctx
        limit = 3 * ctx.config.supervisor.heartbeat_interval_s
        since = None if ctx.last_heartbeat_mono is None else time.monotonic() - ctx.last_heartbeat_mono
        if since is None or since > limit:
            reason = "never" if since is None else f"{since:.1f}s ago"
            return 503, "text/plain", f"not ready: no database heartbeat within {limit:g}s (last {reason})\n".encode()
        if ctx.state is not State.RUNNING or not any(h.booted for h in ctx.pools.workers()):
            return 503, "text/plain", f"not ready: no worker is up (state {ctx.state.value})\n".encode()
        return 200, "text/plain", b"ready\n"


def _record_only(signum: int, frame: object) -> None:
    """Installed so set_wakeup_fd fires; the loop reads the signal number from the pipe."""
