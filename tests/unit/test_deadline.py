"""The deadline watchdog: a call past its deadline has its socket shut down; one in time
is left alone; a process that forks, and whose child forks again, never hangs on it."""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import socket
import time

from burrow.backends.deadline import WATCHDOG, Timeouts
from burrow.config import SupervisorConfig
from burrow.supervisor.services.guard import guard_after_s


def test_a_call_past_its_deadline_has_its_socket_shut_down() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        started = time.monotonic()
        with WATCHDOG.guard(ours.fileno(), 0.2) as call:
            data = ours.recv(10)  # nothing ever comes: only the shutdown ends the wait
        assert data == b"" and call.timed_out
        assert 0.15 < time.monotonic() - started < 2.0


def test_a_call_in_time_is_left_alone() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with WATCHDOG.guard(ours.fileno(), 5.0) as call:
            theirs.sendall(b"hello")
            assert ours.recv(10) == b"hello"
        assert not call.timed_out
        theirs.sendall(b"again")
        assert ours.recv(10) == b"again"  # still open


def test_forks_of_forks_never_hang_on_the_watchdog() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs, WATCHDOG.guard(ours.fileno(), 5.0):  # its thread runs and holds its lock now and then
        pid = os.fork()
        if pid == 0:  # the child forks again, as a handler in a forked worker may
            code = 1
            try:
                grandchild = os.fork()
                if grandchild == 0:
                    os._exit(0)
                code = os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1])
            finally:
                os._exit(code)
        exited = os.pidfd_open(pid)  # readable once the child has exited
        try:
            if not select.select([exited], [], [], 10)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("a forked child hung on the watchdog's lock")
        finally:
            os.close(exited)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_supervisor_waits_a_heartbeat_but_at_least_a_second() -> None:
    assert Timeouts.for_supervisor(2.0).call_s == 2.0
    assert Timeouts.for_supervisor(0.2).call_s == 1.0
    args = Timeouts(connect_s=3, statement_s=2.5, call_s=4).postgres_connect_args()
    assert (args["connect_timeout"], args["tcp_user_timeout"]) == (3, 4000)
    assert args["options"] == "-c statement_timeout=2500 -c plan_cache_mode=force_custom_plan"
    # Through PgBouncer in transaction mode: no startup parameter (it refuses it), no session setting.
    assert "options" not in Timeouts(statement_s=2.5).postgres_connect_args(pooled=True)


def test_a_call_can_block_for_a_whole_connect_timeout_of_at_least_two_seconds() -> None:
    """psycopg raises a connect_timeout under 2 s to 2 s; the outage guard's margin counts it."""
    short = Timeouts.for_supervisor(0.5)
    assert short.postgres_connect_args()["connect_timeout"] == 2
    assert short.worst_call_s == 3.0
    assert Timeouts.for_supervisor(2.0).worst_call_s == 4.0


def test_the_outage_guard_acts_a_worst_call_and_two_heartbeats_before_the_lease_lapses() -> None:
    defaults = SupervisorConfig()  # heartbeat 2 s, lease 30 s: a call may block 2 s + 2 s
    assert guard_after_s(defaults) == 30 - 2 * 2 - 4
    # A lease too short for that margin: half the lease, not a hair trigger.
    assert guard_after_s(dataclasses.replace(defaults, heartbeat_interval_s=0.5, lease_timeout_s=5.0)) == 2.5
