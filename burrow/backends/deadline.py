"""Bounds on every database call: how long to connect, to run, and to wait at all.

Server-side limits (PostgreSQL's ``statement_timeout``, TCP keepalives, libpq's
``tcp_user_timeout``) cover a slow query and a dead peer, but not a partition
behind a proxy or pgbouncer: the proxy's kernel acknowledges our bytes and answers
keepalive probes, and a statement that never reaches the server never hits its
timeout. Only a client-side deadline on each call notices that, so each call on a
network connection runs under :class:`Watchdog`, whose one thread shuts the
socket down when the deadline passes; the driver then fails the call at once, as
if the connection had dropped.

A thread in a process that forks needs care: the watchdog's lock is taken across
``fork`` (``os.register_at_fork``) so a child never inherits it held, and the
child starts without the thread, which it restarts when it first needs it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: to connect, for one statement on the server, for one call in all."""

    connect_s: float = 10.0
    statement_s: float = 30.0
    call_s: float = 60.0

    @classmethod
    def for_supervisor(cls, heartbeat_s: float) -> Timeouts:
        """A supervisor's loop must not wait on the database much longer than a heartbeat:
        its leases, its watchdog and its outage guard all count in heartbeats. At least
        a second all the same: a loaded database answers a claim or a batch of outcomes
        in more than the 200 ms of a short test heartbeat, and that is not an outage."""
        bound_s = max(MIN_CALL_S, heartbeat_s)
        return cls(connect_s=bound_s, statement_s=bound_s, call_s=bound_s)

    @property
    def worst_call_s(self) -> float:
        """The longest one call can keep its caller waiting: a connection attempt
        (psycopg waits whole seconds, at least two, whatever ``connect_s`` says),
        then the call's own deadline. The outage guard counts on it."""
        return _connect_wait_s(self.connect_s) + self.call_s

    def postgres_connect_args(self, *, pooled: bool = False) -> dict[str, Any]:
        """libpq settings for every burrow connection (pooled, held and LISTEN).

        ``pooled``: the DSN is a pooler in transaction mode (PgBouncer), which refuses
        the ``options`` startup parameter, and would in any case hand the session it
        sets to other clients' transactions: no server-side statement timeout then
        (the client-side deadline still bounds every call; README, "PgBouncer").

        ``plan_cache_mode``: a prepared statement is planned with its values at every
        run, never generically (PostgresBackend._configure_held: the held connection
        prepares only once the server shows this setting arrived).
        """
        idle_s = max(1, math.ceil(min(self.call_s, 10.0)))
        args: dict[str, Any] = {
            "connect_timeout": _connect_wait_s(self.connect_s),
            "keepalives": 1,
            "keepalives_idle": idle_s,
            "keepalives_interval": max(1, idle_s // 2),
            "keepalives_count": 3,
            "tcp_user_timeout": int(self.call_s * 1000),
        }
        if not pooled:
            args["options"] = f"-c statement_timeout={int(self.statement_s * 1000)} -c plan_cache_mode={CUSTOM_PLANS}"
        return args


CUSTOM_PLANS = "force_custom_plan"
DEFAULT_TIMEOUTS = Timeouts()
MIN_CALL_S = 1.0
MIN_CONNECT_S = 2  # psycopg (as libpq) raises a shorter connect_timeout to two seconds


def _connect_wait_s(connect_s: float) -> int:
    return max(MIN_CONNECT_S, math.ceil(connect_s))


class Watchdog:
    """Shuts down the socket of a call that outlives its deadline (see the module)."""

    def __init__(self) -> None:
        self._reset()
        # Looked up at each fork, not bound now: a child replaces the lock (_reset), and
        # a hook bound to its parent's lock, held across that fork, would never return.
        os.register_at_fork(
            before=lambda: self._lock.acquire(),
            after_in_parent=lambda: self._lock.release(),
            after_in_child=self._reset,
        )

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._deadlines: list[tuple[float, int, int]] = []  # (monotonic deadline, call number, fd)
        self._live: dict[int, Call] = {}
        self._numbers = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, fileno: int, seconds: float) -> Iterator[Call]:
        """Run the block with ``fileno`` shut down if it is still running after ``seconds``."""
        call = Call()
        with self._lock:
            number = next(self._numbers)
            heapq.heappush(self._deadlines, (time.monotonic() + seconds, number, fileno))
            self._live[number] = call
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="burrow-deadline", daemon=True)
                self._thread.start()
            if self._deadlines[0][1] == number:  # else the thread already wakes sooner
                self._wake.notify()
        try:
            yield call
        finally:
            with self._lock:
                self._live.pop(number, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._deadlines and self._deadlines[0][1] not in self._live:
                    heapq.heappop(self._deadlines)  # finished in time
                if not self._deadlines:
                    self._wake.wait()
                    continue
                deadline, number, fileno = self._deadlines[0]
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._wake.wait(remaining)
                    continue
                heapq.heappop(self._deadlines)
                self._live[number].timed_out = True
                _shut_down(fileno)


@dataclass(slots=True)
class Call:
    """One guarded call; ``timed_out`` once the watchdog shut its socket (read it after)."""

    timed_out: bool = False


def _shut_down(fileno: int) -> None:
    """Both directions of the socket: a read blocked on it returns at once."""
    with contextlib.suppress(OSError):
        duplicate = socket.socket(fileno=os.dup(fileno))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


WATCHDOG = Watchdog()
