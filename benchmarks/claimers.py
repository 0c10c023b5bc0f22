"""Claim + complete from 1, 2 or 4 processes: burrow's Backend beside the raw-SQL loops.

A pool of spawned processes lives for the whole run (imports and connections
are paid once). For each measurement the harness fills the queue, tells k of
them to start at the same monotonic instant (CLOCK_MONOTONIC is system-wide on
Linux) and to loop claim + finish until a deadline or an empty claim; the rate
is the jobs they finished over the time from the start to the last one done.
The same processes run every loop (burrow's, ``raw.py``'s and ``fixed.py``'s), so
no side gets warmer connections.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.fixed import FixedQueue
from benchmarks.raw import LEASE_S, RawQueue
from benchmarks.target import NOOP, Target

BURROW = "burrow"
RAW = "raw"  # burrow's own statements, issued directly (raw.py)
FIXED = "fixed"  # the textbook loop on its own table (fixed.py)


class BurrowClaimer:
    """What a worker and the supervisor do per batch, minus the pipe: Backend.claim, Backend.finish."""

    def __init__(self, target: Target) -> None:
        from burrow.backends import backend_for
        from burrow.queue import new_owner

        self.backend = backend_for(target.dsn, schema=target.schema)
        self.owner = new_owner("bench")

    def claim_loop(self, batch: int, deadline: float, result: bytes | None = None) -> int:
        from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind

        backend, owner, tasks = self.backend, self.owner, [NOOP]
        succeeded = OutcomeKind.SUCCEEDED
        done = 0
        while time.monotonic() < deadline:
            jobs = backend.claim(ClaimRequest(tasks, batch, owner, LEASE_S))
            if not jobs:
                break
            backend.finish([Outcome(j.id, owner, j.attempt, succeeded, result=result) for j in jobs])
            done += len(jobs)
        return done

    def close(self) -> None:
        self.backend.close()


_LOOPS: dict[str, Any] = {BURROW: BurrowClaimer, RAW: RawQueue, FIXED: FixedQueue}


def _child(conn: Connection) -> None:
    loops: dict[tuple[str, str], Any] = {}
    while True:
        message = conn.recv()
        if message is None:
            break
        op = message[0]
        try:
            if op == "run":
                _, target, mode, batch, start, duration, result = message
                key = (target.dsn + (target.schema or ""), mode)
                if key not in loops:
                    loops[key] = _LOOPS[mode](target)
                loop = loops[key]
                while (pause := start - time.monotonic()) > 0:
                    time.sleep(pause)
                begun = time.monotonic()
                done = loop.claim_loop(batch, start + duration, result)
                conn.send(("ok", done, begun, time.monotonic()))
            elif op == "close":
                target = message[1]
                prefix = target.dsn + (target.schema or "")
                for key in [k for k in loops if k[0] == prefix]:
                    loops.pop(key).close()
                conn.send(("ok",))
        except Exception as exc:  # reported to the harness, which fails the run
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    for loop in loops.values():
        loop.close()


class ClaimPool:
    def __init__(self, size: int) -> None:
        context = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(size):
            parent, child = context.Pipe()
            proc = context.Process(target=_child, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def run(self, target: Target, mode: str, batch: int, procs: int, duration: float,
            result: bytes | None = None) -> tuple[int, float, bool]:
        """(jobs done, seconds, whether the queue ran dry before the deadline)."""
        start = time.monotonic() + 0.05
        for conn in self.conns[:procs]:
            conn.send(("run", target, mode, batch, start, duration, result))
        replies = [conn.recv() for conn in self.conns[:procs]]
        errors = [r[1] for r in replies if r[0] == "error"]
        if errors:
            raise RuntimeError(f"{mode} claim loop failed: {errors[0]}")
        done = sum(r[1] for r in replies)
        end = max(r[3] for r in replies)
        dry = end < start + duration - 0.01
        return done, end - start, dry

    def forget(self, target: Target) -> None:
        for conn in self.conns:
            conn.send(("close", target))
        for conn in self.conns:
            conn.recv()

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
