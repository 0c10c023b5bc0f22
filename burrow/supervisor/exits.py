"""Worker exits: a dead worker's last words read, every job it held settled, in the same turn.

What a job is charged depends on why its worker died: a crash or kill while it
ran is the job's failure (retried by its policy); a drain, a lost lease
elsewhere in its batch or an outage is not, and the job is released with its
attempt given back. Jobs it claimed but had not started go back untouched.
A worker that could not boot stops the supervisor rather than respawn in a spin.
"""

from __future__ import annotations

import contextlib
import os
import time

import structlog

from burrow.backends.records import Outcome, OutcomeKind
from burrow.errors import BackendError, ProtocolError
from burrow.execution import failure_outcome
from burrow.supervisor.children import WorkerExit, WorkerHandle, describe_exit
from burrow.supervisor.context import Context, ExitCode, State
from burrow.supervisor.inbox import Inbox
from burrow.supervisor.pool import Pool, Pools
from burrow.supervisor.telemetry import exit_label

log = structlog.get_logger("burrow.supervisor")


def reap_children(ctx: Context, inbox: Inbox, now: float) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        found = ctx.pools.pop(pid)
        if found is not None:
            on_exit(ctx, inbox, *found, status, now)


def on_exit(ctx: Context, inbox: Inbox, pool: Pool, handle: WorkerHandle, status: int, now: float) -> None:
    """Read its last words, then settle every job it held, in this same turn."""
    _read_last_words(inbox, handle)
    handle.kill_group()  # grandchildren a handler forked die with their worker
    stack = handle.read_stack()
    handle.close()
    reason = handle.kill_reason or describe_exit(status)
    code = os.waitstatus_to_exitcode(status)
    clean = os.WIFEXITED(status) and code == WorkerExit.OK and handle.kill_reason is None
    shutting_down = ctx.state is State.DRAINING
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
                ctx.job_config(flight.job.task),
                ctx.retry_defaults(),
                with_stack(f"{reason} while running the job", stack),
                permanent=False,
                duration_s=duration_s,
            )
        else:
            error = with_stack(f"released: {reason}", stack) if ran else None
            outcome = Outcome(
                flight.job.id, flight.job.owner, flight.job.attempt, OutcomeKind.RELEASED, error=error,
                duration_s=duration_s,
            )
        ctx.outbox.settle(outcome, flight.job.task)
    if handle.owner is not None and not clean:
        ctx.outbox.dead_owners.append(handle.owner)  # a clean exit announced every claim it made
    event = log.info if clean else log.error
    # A lost run's stack has no job error to go in: the log keeps where it was stopped.
    extra = {"stack": lost_stack} if lost_stack else {}
    event("worker_exited", worker_pid=handle.pid, reason=reason, jobs_done=handle.jobs_done, jobs_settled=settled, **extra)
    ctx.telemetry.worker_exited(exit_label(handle.kill_reason, clean, os.WIFSIGNALED(status)))
    _forget_worker(ctx, handle)
    if not handle.booted and os.WIFEXITED(status) and code == WorkerExit.BOOT_FAILED and _database_answers(ctx):
        log.error("worker_boot_failed", worker_pid=handle.pid, detail="stopping: a new worker would fail the same way")
        ctx.exit_code = ExitCode.WORKER_BOOT_FAILED
        ctx.stop_now("a worker could not boot")
    elif not clean and not handle.stopping:
        pool.crashed(now)


def with_stack(error: str, stack: str) -> str:
    """The reason line first, as logs and job lists show only that; then where the job was."""
    return f"{error}\n{stack}" if stack else error


def _forget_worker(ctx: Context, handle: WorkerHandle) -> None:
    if handle.owner is None:
        return
    try:
        ctx.backend.remove_process(handle.owner)
    except BackendError as exc:  # it goes stale, and any supervisor's reaper removes it
        log.warning("process_row_not_removed", worker_pid=handle.pid, error=str(exc))


def _database_answers(ctx: Context) -> bool:
    """Whether our own connection works: if not, a worker's failed boot is an outage.

    An outage ends by itself, so it gets the crash backoff; a database only
    the supervisor can reach (its connections predate a lost permission or a
    moved file) will not, and stops the supervisor instead of a spin.
    """
    try:
        ctx.backend.ping()
    except BackendError as exc:
        log.warning("worker_boot_failed", detail="the database is unreachable; retrying with backoff", error=str(exc))
        return False
    return True


def _read_last_words(inbox: Inbox, handle: WorkerHandle) -> None:
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
                inbox.on_message(handle, message, time.monotonic())
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            log.error("worker_protocol_error", worker_pid=handle.pid, error=str(exc))
            handle.owner = None  # see Inbox.on_readable
            break
    inbox.on_eof(handle)


def kill_strays(pools: Pools) -> None:
    """SIGKILL and reap the children that are not workers, before we exit.

    As a subreaper we adopt a handler's orphaned descendants, such as a
    daemon that left its worker's process group with setsid (so killing
    the group missed it); nothing would ever stop it after we are gone.
    """
    import psutil  # only at exit: imported at start, every forked worker would carry its 0.8 MB

    try:
        workers = pools.pids()
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
