"""Worker processes as the supervisor sees them: forking one, its pipes, its exit.

Forking is the delicate part. Signals are blocked across ``fork`` so that a signal
arriving in between cannot run the supervisor's handler in the child; the child
then drops everything that belongs to the parent (signal handlers, the wake-up
fd, the other workers' pipes, pooled database connections) before it runs a job.

A worker the supervisor must stop by force (a job past its timeout, a worker
gone silent) gets SIGTERM first: :mod:`faulthandler` writes the Python stack of
every thread to the worker's own stack file, then SIGTERM's default action ends
it, and the supervisor puts that stack in the job's error. The file is not the
result pipe, whose framing a dump would break.
"""

from __future__ import annotations

import collections
import ctypes
import enum
import faulthandler
import fcntl
import os
import select
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, NoReturn

from burrow.backends.records import ClaimedJob
from burrow.supervisor import protocol
from burrow.supervisor.protocol import FrameDecoder, encode_frame

_PR_SET_CHILD_SUBREAPER = 36
# faulthandler writes at most 100 frames of each of at most 100 threads; this
# much holds that, even with long paths.
_STACK_READ_MAX_BYTES = 4 << 20
STACK_MAX_CHARS = 20_000  # of stack in a job's error: enough for the frames that matter

# A worker's report pipe holds what the supervisor has not read yet. Linux's default,
# 64 KiB, is 58 results of 1 KB: a worker stalled on it while the supervisor spent
# milliseconds writing a batch of outcomes (on SQLite in its own loop), and the 1 KB
# mix drained at 0.67 of the raw loop; at 1 MiB, 0.79 (benchmarks/README.md, "sixth
# pass"). The capacity counts against the user's pipe budget (Linux's default soft
# limit is 64 MiB, past which new pipes of every program of the user get a minimal
# one), so all report pipes together ask for at most a quarter of it.
_REPORT_PIPE_MAX_BYTES = 1 << 20  # also Linux's default ceiling for unprivileged users
_REPORT_PIPE_MIN_BYTES = 64 << 10  # Linux's default
_REPORT_PIPES_BUDGET_BYTES = 16 << 20


def report_pipe_bytes(workers: int) -> int:
    """The capacity to ask for each worker's report pipe, with ``workers`` of them."""
    return max(_REPORT_PIPE_MIN_BYTES, min(_REPORT_PIPE_MAX_BYTES, _REPORT_PIPES_BUDGET_BYTES // max(1, workers)))


def _enlarge_pipe(fd: int, size: int) -> None:
    """Ask for ``size`` bytes of pipe capacity; keep what the pipe has if refused (not
    Linux, or past the user's pipe budget or the system's ceiling)."""
    setter = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setter is None:
        return
    try:
        fcntl.fcntl(fd, setter, size)
    except OSError:
        pass


# Everything the supervisor handles; blocked across fork, reset in the child.
HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGCHLD,
    signal.SIGTTIN,
    signal.SIGTTOU,
)


class WorkerExit(enum.IntEnum):
    """How a worker tells the supervisor why it exited on purpose."""

    OK = 0  # asked to stop, or recycled (max jobs, memory): replace without backoff
    BOOT_FAILED = 3  # could not start: respawning would fail the same way
    ORPHANED = 4  # the supervisor is gone
    CRASHED = 5  # burrow's own loop failed (a handler's error never gets here)


def describe_exit(status: int) -> str:
    """'exit status 3' or 'worker exited with signal 9 (SIGKILL)', for job errors and logs."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown"
        return f"worker exited with signal {number} ({name})"
    code = os.waitstatus_to_exitcode(status)
    return f"worker exited with exit status {code}"


@dataclass
class InFlight:
    """A job a worker claimed and has not reported; the first one is running."""

    job: ClaimedJob
    # When its lease was last known fresh: the claim began, or an extension that went
    # through was sent. The outage guard measures the lease's age from here.
    leased_mono: float
    started_mono: float | None = None
    # Another process owns the job now (a lease extension found it gone): nothing is
    # written for this attempt, and the worker must not run it on.
    lease_lost: bool = False
    # The latest current_job().progress(...) its worker sent, not written yet (the
    # leases service writes it with its next heartbeat batch).
    progress: tuple[float, str | None] | None = None


@dataclass
class WorkerHandle:
    pid: int
    generation: int
    read_fd: int  # worker -> supervisor
    write_fd: int  # supervisor -> worker
    spawned_mono: float
    role: str = "worker"  # its process row's: "worker", or "worker:<pool>" in a named pool
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    inflight: collections.deque[InFlight] = field(default_factory=collections.deque)
    last_heard_mono: float = 0.0
    booted: bool = False  # sent its hello
    owner: str | None = None  # its lease owner, from the hello
    idle: bool = False
    stopping: bool = False
    kill_reason: str | None = None  # why the supervisor killed it, for the job's error
    # Killed for no fault of the job it runs (a lost lease elsewhere in its batch, a
    # database outage): that job goes back to the queue with its attempt given back.
    release_running: bool = False
    sigkill_at_mono: float | None = None  # sent SIGTERM: when SIGKILL follows if it is still there
    stack_file: IO[bytes] | None = None  # where its faulthandler writes on SIGTERM
    # Jobs of this worker cancelled by an operator: written off already; a late result
    # of one is dropped. The one it was running has until the deadline to stop.
    cancelled: set[int] = field(default_factory=set)
    cancel_deadline_mono: float | None = None
    jobs_done: int = 0
    exit_status: int | None = None
    eof: bool = False

    def send(self, message: dict[str, object]) -> bool:
        """Best effort: a full or closed pipe means the worker is stuck or gone."""
        try:
            os.write(self.write_fd, encode_frame(message))
            return True
        except (BlockingIOError, BrokenPipeError, OSError):
            return False

    def stop(self) -> None:
        """Ask it to finish the job it is running and exit (once: the pipe may be full)."""
        if not self.stopping:
            self.stopping = True
            self.send(protocol.stop())

    def terminate(self, reason: str, sigkill_at_mono: float) -> None:
        """SIGTERM, so that it writes its stack as it dies; the caller sends SIGKILL
        at ``sigkill_at_mono`` to one that caught or ignored it."""
        if self.kill_reason is None:
            self.kill_reason = reason
        self.sigkill_at_mono = sigkill_at_mono
        self._signal(signal.SIGTERM)

    def kill(self, reason: str) -> None:
        if self.kill_reason is None:
            self.kill_reason = reason
        self.sigkill_at_mono = None
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def read_stack(self) -> str:
        """The stack its faulthandler wrote on SIGTERM, formatted for a job's error; "" if none.

        There is none when the worker died otherwise, or when its handler had
        replaced the SIGTERM handler (a Python handler or SIG_IGN takes
        faulthandler's place).
        """
        if self.stack_file is None:
            return ""
        try:
            fd = self.stack_file.fileno()
            size = os.fstat(fd).st_size
            dump = os.pread(fd, min(size, _STACK_READ_MAX_BYTES), 0) if size else b""
        except (OSError, ValueError):  # ValueError: the file is closed already
            return ""
        return format_stack(dump.decode(errors="replace"))

    def kill_group(self) -> None:
        """SIGKILL what is left of the worker's process group (a handler's own children)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def has_unread(self) -> bool:
        """Whether frames wait in our end of its pipe. A worker is silent only if it sent
        nothing, not if the supervisor was away (a stalled host, a frozen process: Python's
        select, resumed past its timeout, returns no fd at all) while they piled up."""
        if self.eof:
            return False
        readable, _, _ = select.select([self.read_fd], [], [], 0)
        return bool(readable)

    def running(self) -> InFlight | None:
        return self.inflight[0] if self.inflight else None

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.stack_file is not None:
            self.stack_file.close()


def format_stack(dump: str, limit_chars: int = STACK_MAX_CHARS) -> str:
    """faulthandler's dump with the thread that took the signal first, cut to ``limit_chars``.

    faulthandler lists the other threads first and marks the one that took the
    signal "Current thread": the main thread, which runs the job. That is the
    stack an operator looks for, so it leads and survives the cut. A NUL is
    spelled out (PostgreSQL text cannot hold one).
    """
    blocks = [block.strip("\n") for block in dump.split("\n\n") if block.strip()]
    blocks.sort(key=lambda block: not block.startswith("Current thread"))
    text = "\n\n".join(blocks).replace("\x00", "\\x00")
    if len(text) <= limit_chars:
        return text
    cut = text.rfind("\n", 0, limit_chars)
    return text[: cut if cut > 0 else limit_chars] + f"\n... (stack cut at {limit_chars} characters)"


def spawn(
    generation: int,
    inherited_fds: Iterable[int],
    child_main: Callable[[int, int], NoReturn],
    pipe_bytes: int = _REPORT_PIPE_MIN_BYTES,
) -> WorkerHandle:
    """Fork a worker that runs ``child_main(read_fd, write_fd)`` and never returns;
    its report pipe (``write_fd``) holds ``pipe_bytes`` if the system allows."""
    stack_file = tempfile.TemporaryFile()
    to_parent_r, to_parent_w = os.pipe()
    _enlarge_pipe(to_parent_w, pipe_bytes)
    to_child_r, to_child_w = os.pipe()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for fd in (to_parent_r, to_parent_w, to_child_r, to_child_w):
            os.close(fd)
        stack_file.close()
        raise
    if pid == 0:  # the child
        try:
            os.setpgid(0, 0)  # its own group: grandchildren can be killed with it
            _reset_child_signals(stack_file)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.close(to_parent_r)
            os.close(to_child_w)
            for fd in inherited_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            child_main(to_child_r, to_parent_w)
        finally:
            os._exit(WorkerExit.CRASHED)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(to_parent_w)
    os.close(to_child_r)
    os.set_blocking(to_parent_r, False)
    os.set_blocking(to_child_w, False)
    now = time.monotonic()
    return WorkerHandle(pid, generation, to_parent_r, to_child_w, now, last_heard_mono=now, stack_file=stack_file)


def become_subreaper() -> None:
    """Orphaned grandchildren become our children, so waitpid reaps them: no zombies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _reset_child_signals(stack_file: IO[bytes]) -> None:
    """The child starts with default handlers; Ctrl-C on the terminal belongs to the supervisor.

    SIGTERM keeps its default action, death, with the stack written first:
    ``chain`` re-raises it under the default handler once faulthandler is done.
    """
    signal.set_wakeup_fd(-1)
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.register(signal.SIGTERM, file=stack_file, all_threads=True, chain=True)
