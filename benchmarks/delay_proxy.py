"""A TCP proxy that delays every byte by half a round trip each way: a remote database.

tests/proxy.py cuts and blackholes connections but forwards at once; this one
forwards everything, in order, ``rtt_ms / 2`` after it arrived, in both
directions. It adds latency, not a bandwidth limit: each direction of each
connection has a reader thread that stamps what it reads with the time it is due
and a writer thread that sends it then, so a pipelined stream keeps flowing.
Sockets are ``TCP_NODELAY`` (as libpq sets its own), so Nagle's algorithm adds
nothing. Even at 0 ms the proxy is a hop through two threads of this process:
the ``rtt0`` row measures that hop, :func:`measured_rtt_ms` what was added.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

_CHUNK = 65536


class DelayProxy:
    def __init__(self, target: tuple[str, int], rtt_ms: float, host: str = "127.0.0.1") -> None:
        """``host``: the address it listens on (benchmarks/scaleout.py: a simulated host's link)."""
        self.target = target
        self.rtt_ms = rtt_ms
        self.one_way_s = rtt_ms / 2000.0
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, name=f"delay-proxy-{rtt_ms:g}ms", daemon=True).start()

    def dsn(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by this proxy's."""
        host_port = f"{self.target[0]}:{self.target[1]}"
        if host_port not in dsn:
            raise ValueError(f"the DSN does not name {host_port}")
        return dsn.replace(host_port, f"127.0.0.1:{self.port}")

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            ended = _Countdown(2, functools.partial(self._close, client, server))
            self._direction(client, server, ended)
            self._direction(server, client, ended)

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            self._sockets = [s for s in self._sockets if s not in socks]

    def _direction(self, src: socket.socket, dst: socket.socket, ended: _Countdown) -> None:
        chunks: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()
        delay = self.one_way_s

        def read() -> None:
            try:
                while data := src.recv(_CHUNK):
                    chunks.put((time.monotonic() + delay, data))
            except OSError:
                pass
            chunks.put(None)

        def write() -> None:
            try:
                while (item := chunks.get()) is not None:
                    due, data = item
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    dst.sendall(data)
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finally:
                ended.down()

        threading.Thread(target=read, name="delay-proxy-read", daemon=True).start()
        threading.Thread(target=write, name="delay-proxy-write", daemon=True).start()


class _Countdown:
    """Calls ``done`` once ``count`` directions have ended."""

    def __init__(self, count: int, done: Callable[[], None]) -> None:
        self._count = count
        self._done = done
        self._lock = threading.Lock()

    def down(self) -> None:
        with self._lock:
            self._count -= 1
            last = self._count == 0
        if last:
            self._done()


def measured_rtt_ms(connect: Callable[[], psycopg.Connection[Any]], samples: int = 40) -> float:
    """Median milliseconds of a ``SELECT 1`` round trip over a connection that
    ``connect()`` opens (a psycopg connection, through a proxy or not)."""
    conn = connect()
    try:
        times = []
        for _ in range(samples):
            began = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            times.append(1000 * (time.perf_counter() - began))
        return statistics.median(times)
    finally:
        conn.close()
