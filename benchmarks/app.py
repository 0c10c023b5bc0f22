"""The app the benchmark supervisors run (``apps = ["benchmarks.app:app"]``).

Typed tasks through the public API, as an application would write them:

- ``bench.noop``: does nothing (the drain and memory benchmarks);
- ``bench.stamp``: records when it started next to the enqueue time carried in
  its payload (the steady-state latency benchmark), one line per job appended with
  a single ``os.write`` to ``$BURROW_BENCH_DIR/starts-<pid>.txt``, so nothing is
  lost when the worker leaves through ``os._exit``;
- ``bench.result``: returns 1 KB, stored as the job's result;
- ``bench.flaky``: fails its first attempt when the payload says so, then
  succeeds on the retry (``with_backoff(0, 0)``: retried at once).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import burrow

DIR_ENV = "BURROW_BENCH_DIR"
KILOBYTE = "x" * 1022  # 1,024 bytes once JSON-encoded with its quotes


@dataclass
class Noop:
    pass


@dataclass
class Stamp:
    t: float  # time.time() just before the enqueue call


@dataclass
class Flaky:
    fail: bool = False


def noop(payload: Noop) -> None:
    return None


_fd: int | None = None
_fd_pid = 0


def stamp(payload: Stamp) -> None:
    started = time.time()
    global _fd, _fd_pid
    if _fd is None or _fd_pid != os.getpid():
        path = os.path.join(os.environ[DIR_ENV], f"starts-{os.getpid()}.txt")
        _fd, _fd_pid = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), os.getpid()
    os.write(_fd, f"{payload.t!r} {started!r}\n".encode())


def kilobyte(payload: Noop) -> str:
    return KILOBYTE


def flaky(payload: Flaky) -> None:
    if payload.fail and burrow.current_job().attempt == 1:
        raise RuntimeError("planned failure: succeeds on the retry")


noop_task = burrow.define_task("bench.noop", noop)
stamp_task = burrow.define_task("bench.stamp", stamp)
result_task = burrow.define_result_task("bench.result", kilobyte)
flaky_task = burrow.define_task("bench.flaky", flaky, burrow.with_max_retries(3), burrow.with_backoff(0, 0))


class BenchApp:
    def register_jobs(self, q: burrow.Queue) -> None:
        noop_task.register(q)
        stamp_task.register(q)
        result_task.register(q)
        flaky_task.register(q)


app = BenchApp()
