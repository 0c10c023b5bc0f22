"""A TCP proxy a test can cut or blackhole: what a network partition looks like.

``cut()`` closes every connection and refuses new ones (a server that went away);
``blackhole()`` keeps every connection open but forwards nothing either way, and
accepts new connections without forwarding them (a partition: the client's bytes
are acknowledged by the proxy's kernel, nothing comes back); ``mute()`` forwards
the client's bytes but none of the server's (a statement runs and commits, its
answer is lost); ``restore()`` ends any of them. Threads pump bytes; each test
starts its own proxy and stops it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator


class Proxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._muted = threading.Event()
        self._refusing = False
        self._stopped = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def dsn(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by this proxy's."""
        host_port = f"{self.target[0]}:{self.target[1]}"
        assert host_port in dsn, f"{dsn} does not name {host_port}"
        return dsn.replace(host_port, f"127.0.0.1:{self.port}")

    def cut(self) -> None:
        with self._lock:
            self._refusing = True
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()

    def blackhole(self) -> None:
        self._forwarding.clear()

    def mute(self) -> None:
        self._muted.set()

    def restore(self) -> None:
        with self._lock:
            self._refusing = False
        self._muted.clear()
        self._forwarding.set()

    def stop(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), name="proxy-pump", daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        try:
            while True:
                self._forwarding.wait()
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                if not self._forwarding.is_set():
                    continue  # a blackhole: what arrived waits, unforwarded
                for sock in readable:
                    if sock is server and self._muted.is_set():
                        continue  # the answer waits, unforwarded, until restore()
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # a socket closed under us by cut() or stop()
            return
        finally:
            for sock in peers:
                with contextlib.suppress(OSError):
                    sock.close()


@contextlib.contextmanager
def proxy_to(target: tuple[str, int]) -> Iterator[Proxy]:
    proxy = Proxy(target)
    try:
        yield proxy
    finally:
        proxy.stop()
