"""``/metrics``, ``/healthz`` and ``/readyz``, served from the supervisor's own loop.

No thread: the listening socket sits in the supervisor's selector and each
request is answered in the turn that sees it (a slow client gets a short timeout).
A thread would be a hazard here: the supervisor forks workers, and a lock held by
a serving thread at that moment (the logger's, the metrics registry's) would stay
held forever in the child. The answers are computed by the supervisor and handed
in as callables, so this module knows nothing of jobs.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("burrow.supervisor")

# A client slower than this is dropped; the loop must keep turning.
REQUEST_TIMEOUT_S = 0.5

Answer = tuple[int, str, bytes]  # status, content type, body


class HealthServer:
    """An HTTP/1.0 server whose ``fileno`` a selector watches; :meth:`handle` serves one request."""

    def __init__(self, bind: tuple[str, int], routes: dict[str, Callable[[], Answer]]) -> None:
        host, port = bind
        handler = _handler(routes)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (_Server,), {"address_family": family})
        self._server = server_class((host, port), handler)
        self._server.timeout = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def fileno(self) -> int:
        return self._server.fileno()

    def handle(self) -> None:
        """Accept and answer one waiting request (called when the socket is readable)."""
        self._server.handle_request()

    def close(self) -> None:
        self._server.server_close()


class _Server(socketserver.TCPServer):
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("http_request_failed", client=str(client_address))


def _handler(routes: dict[str, Callable[[], Answer]]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S
        server_version = "burrow"

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            status, content_type, body = route() if route is not None else (404, "text/plain", b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every few seconds are not news; errors are logged by the server."""

    return Handler
