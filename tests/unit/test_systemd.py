"""sd_notify against real AF_UNIX datagram sockets, as systemd would listen."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from burrow.supervisor.systemd import Notifier, watchdog_interval_s


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that reaches it."""
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) >= 108:  # sun_path limit
        pytest.skip("tmp_path too long for an AF_UNIX address")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        yield sock, str(path)


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    name = f"burrow-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        yield sock, "@" + name


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_messages_reach_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready()
    assert received(sock) == "READY=1"
    assert notifier.status("3 workers, 2 jobs running")
    assert received(sock) == "STATUS=3 workers, 2 jobs running"
    assert notifier.watchdog()
    assert received(sock) == "WATCHDOG=1"
    assert notifier.stopping()
    assert received(sock) == "STOPPING=1"
    assert notifier.notify(READY=1, STATUS="back")
    assert received(sock) == "READY=1\nSTATUS=back"
    assert notifier.errors == 0
    notifier.close()


def test_reloading_carries_the_monotonic_clock(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = received(sock).split("\n")
    assert first == "RELOADING=1"
    key, _, usec = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    notifier.close()


def test_messages_reach_an_abstract_socket(abstract_listener: tuple[socket.socket, str]) -> None:
    sock, address = abstract_listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.ready()
    assert received(sock) == "READY=1"
    notifier.close()


def test_a_newline_cannot_forge_a_field(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier(address)
    assert notifier.status("fine\nREADY=1")
    assert received(sock) == "STATUS=fine READY=1"
    notifier.close()


def test_no_notify_socket_is_a_no_op() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.reloading()
    assert not notifier.stopping()
    assert notifier.errors == 0


def test_send_errors_are_counted_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert notifier.errors == 2
    assert isinstance(notifier.last_error, OSError)
    notifier.close()


def test_systemd_going_away_mid_run(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier(str(path))
        assert notifier.ready()
    path.unlink()
    assert not notifier.watchdog()
    assert notifier.errors == 1
    notifier.close()


def test_unsupported_address_is_disabled() -> None:
    notifier = Notifier("vsock:2:1234")
    assert not notifier.enabled
    assert not notifier.ready()


def test_watchdog_interval() -> None:
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}) is None


def test_a_reader_that_stopped_reading_never_blocks_the_periodic_messages(
    listener: tuple[socket.socket, str],
) -> None:
    """Fill the queue, then: WATCHDOG and STATUS are dropped at once (the main loop
    must not stop), a state change waits its bounded second, and all are counted."""
    _, address = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    while notifier.notify(wait=False, STATUS="filling the queue"):
        pass
    errors = notifier.errors
    started = time.monotonic()
    assert not notifier.watchdog()
    assert not notifier.status("still here")
    assert time.monotonic() - started < 0.5  # not the second a wait would take
    started = time.monotonic()
    assert not notifier.stopping()
    assert 0.9 <= time.monotonic() - started < 2.0
    assert notifier.errors == errors + 3
    notifier.close()
