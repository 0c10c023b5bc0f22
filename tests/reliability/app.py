"""The app the reliability battery runs (``apps = ["tests.reliability.app:app"]``).

Every handler first appends a line to a ledger file of its own, outside
burrow's tables: ``S <job id> <attempt> <pid> <unix time>`` when a run starts,
``E ...`` when it ends normally. The audit (``audit.py``) compares that ledger,
which burrow cannot forge, with what burrow recorded. Writes use O_APPEND so
lines from concurrent workers stay whole.

Besides the well-behaved ``rl.work`` there is one task per way a handler can
misbehave (R7) and one that leaks memory (R8).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import burrow

BACKOFF = burrow.with_backoff(0.02, 0.1)


def ledger_line(ledger: str, kind: str, job_id: int, attempt: int) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{kind} {job_id} {attempt} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def _start(ledger: str) -> tuple[int, int]:
    job = burrow.current_job()
    ledger_line(ledger, "S", job.id, job.attempt)
    return job.id, job.attempt


def _end(ledger: str, job_id: int, attempt: int) -> None:
    ledger_line(ledger, "E", job_id, attempt)


def _ran_before(ledger: str, job_id: int) -> bool:
    """Whether the ledger shows an earlier run of this job (this run's S line is last)."""
    try:
        lines = Path(ledger).read_text().splitlines()
    except FileNotFoundError:
        return False
    return sum(1 for line in lines if line.startswith(f"S {job_id} ")) > 1


@dataclass
class Work:
    ledger: str
    sleep: float = 0.0
    first_run_sleep: float | None = None  # sleep this long on the first run only


def work(w: Work) -> None:
    job_id, attempt = _start(w.ledger)
    seconds = w.sleep
    if w.first_run_sleep is not None and not _ran_before(w.ledger, job_id):
        seconds = w.first_run_sleep
    if seconds:
        time.sleep(seconds)
    _end(w.ledger, job_id, attempt)


@dataclass
class Misbehave:
    ledger: str
    directory: str = ""  # where a handler leaves pids for the test to inspect


def raise_base_exception(m: Misbehave) -> None:
    _start(m.ledger)
    raise BaseException("a handler raised BaseException")


def raise_system_exit(m: Misbehave) -> None:
    _start(m.ledger)
    sys.exit(7)


def raise_with_nul(m: Misbehave) -> None:
    """An error message with a NUL byte, which PostgreSQL text cannot store."""
    _start(m.ledger)
    raise ValueError("a NUL \x00 in the message")


def raise_keyboard_interrupt(m: Misbehave) -> None:
    _start(m.ledger)
    raise KeyboardInterrupt


def exit_without_result(m: Misbehave) -> None:
    _start(m.ledger)
    os._exit(0)


def segfault(m: Misbehave) -> None:
    _start(m.ledger)
    ctypes.string_at(0)


def hold_the_gil(m: Misbehave) -> None:
    """A regular expression with catastrophic backtracking: one C call, GIL held throughout.

    The heartbeat thread cannot run, so the supervisor hears nothing and kills
    the worker as silent. (``time.sleep`` or I/O would release the GIL.)
    """
    _start(m.ledger)
    re.match(r"(a+)+$", "a" * 64 + "b")


def ignore_sigterm(m: Misbehave) -> None:
    _start(m.ledger)
    # Ignored in effect (the handler returns and the job goes on), but noted, so the
    # test can wait for the signal to have arrived instead of guessing how long.
    signal.signal(signal.SIGTERM, lambda *_: Path(m.directory, "got_sigterm").touch())
    Path(m.directory, "ignoring").write_text(str(os.getpid()))
    time.sleep(60)  # resumed after the handler runs (PEP 475): SIGTERM does not end it


def fork_grandchild(m: Misbehave) -> None:
    """Fork a child that would sleep for a minute; optionally let it escape the group."""
    job_id, attempt = _start(m.ledger)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if Path(m.directory, "daemonize").exists():  # double fork + setsid: a daemon
                os.setsid()
                if os.fork():
                    os._exit(0)
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    grandchild = int(os.read(r, 32).decode())
    os.close(r)
    if Path(m.directory, "daemonize").exists():
        os.waitpid(pid, 0)  # the intermediate child
    with open(Path(m.directory, "grandchildren"), "a") as f:
        f.write(f"{grandchild}\n")
    raise RuntimeError(f"forked grandchild {grandchild} and failed (job {job_id}, attempt {attempt})")


def _pipe_fds(writable: bool | None = None) -> list[int]:
    """This process's pipe descriptors other than stdio: its pipes to the supervisor."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if target.startswith("pipe:") and (writable is None or bool(flags & os.O_WRONLY) == writable):
            found.append(fd)
    return found


def close_the_pipe(m: Misbehave) -> None:
    _start(m.ledger)
    for fd in _pipe_fds():
        os.close(fd)


def corrupt_the_pipe(m: Misbehave) -> None:
    """Write a frame header announcing 4 GiB into the pipe to the supervisor."""
    _start(m.ledger)
    for fd in _pipe_fds(writable=True):
        os.write(fd, b"\xff\xff\xff\xff")
    time.sleep(5)  # the supervisor kills us long before this ends


def truncate_a_frame(m: Misbehave) -> None:
    """Write half a frame into the pipe to the supervisor, then die."""
    _start(m.ledger)
    for fd in _pipe_fds(writable=True):
        os.write(fd, b"\x00\x00\x00\x64" + b'{"t": "res')
    os._exit(1)


def unencodable_result(m: Misbehave) -> object:
    _start(m.ledger)
    return object()


def flood_stdout(m: Misbehave) -> str:
    """100 MB to stdout (no newline in it), then an ordinary result."""
    job_id, attempt = _start(m.ledger)
    chunk = "x" * 1_000_000
    for _ in range(100):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    _end(m.ledger, job_id, attempt)
    return "flooded"


@dataclass
class Secret:
    """A payload carrying something that must never reach a log line."""

    ledger: str
    card: str
    fail: bool = False


def charge(secret: Secret) -> None:
    job_id, attempt = _start(secret.ledger)
    if secret.fail:
        raise RuntimeError("card declined")  # says what happened, not what the payload was
    time.sleep(0.05)
    _end(secret.ledger, job_id, attempt)


_HOARD: list[bytes] = []


@dataclass
class Leak:
    ledger: str
    megabytes: int


def leak(l: Leak) -> int:
    """Keep ``megabytes`` of touched memory for good; returns this worker's pid."""
    job_id, attempt = _start(l.ledger)
    _HOARD.append(b"\x01" * (l.megabytes * 1_000_000))
    _end(l.ledger, job_id, attempt)
    return os.getpid()


work_task = burrow.define_task("rl.work", work, burrow.with_max_retries(20), BACKOFF)
leak_task = burrow.define_result_task("rl.leak", leak, burrow.with_max_retries(3), BACKOFF)
secret_task = burrow.define_task("rl.secret", charge, burrow.with_max_retries(1), BACKOFF)

# name -> task; each retried once (two runs) unless the run itself is slow.
MISBEHAVING = {
    "base_exception": burrow.define_task("rl.base_exception", raise_base_exception, burrow.with_max_retries(1), BACKOFF),
    "system_exit": burrow.define_task("rl.system_exit", raise_system_exit, burrow.with_max_retries(1), BACKOFF),
    "nul_in_error": burrow.define_task("rl.nul_in_error", raise_with_nul, burrow.with_max_retries(1), BACKOFF),
    "keyboard_interrupt": burrow.define_task(
        "rl.keyboard_interrupt", raise_keyboard_interrupt, burrow.with_max_retries(1), BACKOFF
    ),
    "exit_without_result": burrow.define_task(
        "rl.exit_without_result", exit_without_result, burrow.with_max_retries(1), BACKOFF
    ),
    "segfault": burrow.define_task("rl.segfault", segfault, burrow.with_max_retries(1), BACKOFF),
    "hold_the_gil": burrow.define_task("rl.hold_the_gil", hold_the_gil, burrow.with_max_retries(1), BACKOFF),
    "ignore_sigterm": burrow.define_task(
        "rl.ignore_sigterm", ignore_sigterm, burrow.with_max_retries(0), burrow.with_timeout(1.0)
    ),
    "fork_grandchild": burrow.define_task("rl.fork_grandchild", fork_grandchild, burrow.with_max_retries(1), BACKOFF),
    "close_the_pipe": burrow.define_task("rl.close_the_pipe", close_the_pipe, burrow.with_max_retries(1), BACKOFF),
    "corrupt_the_pipe": burrow.define_task("rl.corrupt_the_pipe", corrupt_the_pipe, burrow.with_max_retries(1), BACKOFF),
    "truncate_a_frame": burrow.define_task("rl.truncate_a_frame", truncate_a_frame, burrow.with_max_retries(1), BACKOFF),
    "unencodable_result": burrow.define_result_task(
        "rl.unencodable_result", unencodable_result, burrow.with_max_retries(1), BACKOFF
    ),
    "flood_stdout": burrow.define_result_task("rl.flood_stdout", flood_stdout, burrow.with_max_retries(1), BACKOFF),
}

TASKS: tuple[burrow.TaskDefinition[Any], ...] = (work_task, leak_task, secret_task, *MISBEHAVING.values())


class App:
    def register_jobs(self, q: burrow.Queue) -> None:
        for task in TASKS:
            task.register(q)


app = App()
