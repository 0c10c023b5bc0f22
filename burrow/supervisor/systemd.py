"""sd_notify(3) in a few lines, so burrow needs no libsystemd binding.

Under ``Type=notify`` systemd waits for ``READY=1`` before it calls the service
started, and with ``WatchdogSec=`` it kills a supervisor that stops sending
``WATCHDOG=1``: a hung main loop is restarted instead of quietly holding leases.
Outside systemd (``NOTIFY_SOCKET`` unset) every call does nothing, so the
supervisor calls these unconditionally.

A failed send is counted, never raised: systemd going away (or a full socket
queue) must not take the job runtime down with it. Only the state changes (READY,
RELOADING, STOPPING) wait for room in a full queue, for at most a second; the
periodic WATCHDOG and STATUS are dropped instead, because waiting stops the
supervisor's loop (a reader that stopped reading cost the loop 2 s per heartbeat
in the benchmark, stalling every worker behind a full result pipe).
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Mapping
from typing import Final

__all__ = ["Notifier", "watchdog_interval_s"]

_SEND_TIMEOUT_S: Final = 1.0


class Notifier:
    """Sends state changes to systemd's notification socket, if there is one."""

    __slots__ = ("_address", "_socket", "errors", "last_error")

    def __init__(self, address: str | None) -> None:
        """``address`` is NOTIFY_SOCKET's value: a path, or "@name" for an abstract socket."""
        self._address: str | None = None
        self._socket: socket.socket | None = None
        self.errors = 0
        self.last_error: OSError | None = None
        if address and address[0] == "@":
            self._address = "\0" + address[1:]
        elif address and address[0] == "/":
            self._address = address
        elif address:
            # e.g. "vsock:..." from systemd >= 253: not ours to speak; stay quiet.
            self.errors += 1

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd asked for via NOTIFY_SOCKET; a no-op one without it."""
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """Whether anything is listening (as far as the environment says)."""
        return self._address is not None

    def notify(self, *, wait: bool = True, **fields: object) -> bool:
        """Send ``KEY=value`` lines in one datagram; True if it was sent.

        ``wait``: whether a full queue is waited on (up to a second) or the
        message dropped at once.
        """
        if self._address is None or not fields:
            return False
        # A newline inside a value would start a forged field.
        data = "\n".join(f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()).encode()
        deadline = time.monotonic() + (_SEND_TIMEOUT_S if wait else 0.0)
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            while True:
                try:
                    self._socket.sendto(data, self._address)
                    return True
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise
                    select.select([], [self._socket], [], remaining)
        except OSError as exc:
            self.errors += 1
            self.last_error = exc
            return False

    def ready(self) -> bool:
        """The service is up: workers forked and the schema migrated."""
        return self.notify(READY=1)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.notify(wait=False, STATUS=text)

    def watchdog(self) -> bool:
        """The main loop is alive; send at :func:`watchdog_interval_s`."""
        return self.notify(wait=False, WATCHDOG=1)

    def reloading(self) -> bool:
        """A SIGHUP reload began; ``ready()`` must follow when it is done.

        systemd >= 253 (Type=notify-reload) wants the monotonic time with it, to
        tell this reload from an earlier one.
        """
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        """Shutdown began; systemd stops expecting watchdog pings."""
        return self.notify(STOPPING=1)

    def close(self) -> None:
        """Drop the socket; a later notify opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """How often to send WATCHDOG=1: half the period systemd set, or None for never.

    Half, as sd_watchdog_enabled(3) advises, so one late tick is not a kill. A
    WATCHDOG_PID naming another process (a forked worker inherits the
    environment) means the watchdog is not ours.
    """
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    try:
        period = int(usec) if usec else 0
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return period / 2_000_000 if period > 0 else None
