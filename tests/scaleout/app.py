"""The app of the scale-out tests and benchmark (``apps = ["tests.scaleout.app:app"]``).

``scaleout.nap`` sleeps: jobs that wait rather than compute, so a run is bound by
coordination (claims, finishes, leases over the network), not by the CPU. ``scaleout.span``
leaves a ledger a test reads from outside: a "start" line, a "beat" line every 50 ms
while it runs, an "end" line, each with its key, pid, host and wall-clock time, so
two runs of one job that overlapped would show.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import burrow

BEAT_S = 0.05


@dataclass
class Nothing:
    pass


def noop(payload: Nothing) -> None:
    """The drain benchmark's job: nothing, so the run measures burrow and the database."""


@dataclass
class Nap:
    seconds: float


def nap(payload: Nap) -> None:
    time.sleep(payload.seconds)


@dataclass
class Span:
    ledger: str
    key: str
    seconds: float
    again_s: float | None = None  # how long attempts after the first run (default: seconds)


def span(payload: Span) -> None:
    def line(kind: str) -> None:
        fd = os.open(payload.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, f"{kind} {payload.key} {os.getpid()} {socket.gethostname()} {time.time()}\n".encode())
        finally:
            os.close(fd)

    line("start")
    again = payload.again_s is not None and burrow.current_job().attempt > 1
    deadline = time.monotonic() + (payload.again_s if again and payload.again_s is not None else payload.seconds)
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(BEAT_S, left))
        line("beat")
    line("end")


noop_task = burrow.define_task("scaleout.noop", noop)
nap_task = burrow.define_task("scaleout.nap", nap)
span_task = burrow.define_task("scaleout.span", span, burrow.with_max_retries(5))


class App:
    def register_jobs(self, q: burrow.Queue) -> None:
        noop_task.register(q)
        nap_task.register(q)
        span_task.register(q)


app = App()
