"""Who may use the admin: an optional hook called before every request.

The hook is the parent application's own check, in one simple shape:

    def auth(request: starlette.requests.Request) -> bool | Response  # or async def

``True`` lets the request through; ``False`` answers 403; a ``Response`` is sent
as it is (a redirect to the parent's login page, a 401 asking for credentials).
It guards every path of the admin but ``/healthz`` and ``/readyz``, which probes
call without credentials and which show nothing but "ok" or a one-line reason.
A plain function runs on the event loop, so keep it quick or make it ``async``.

:func:`basic_auth` is such a hook; the standalone server (``burrow admin``) uses it
when ``[admin] password`` is set.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from burrow.admin import paths

Auth = Callable[[Request], bool | Response | Awaitable[bool | Response]]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class AuthMiddleware:
    """Runs the ``auth`` hook before every HTTP request but the health probes."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if paths.here(request).partition("?")[0] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        verdict = self.auth(request)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is True:
            await self.app(scope, receive, send)
            return
        response = verdict if isinstance(verdict, Response) else PlainTextResponse("forbidden", 403)
        await response(scope, receive, send)


def basic_auth(password: str, realm: str = "burrow admin") -> Auth:
    """A hook that asks for HTTP basic auth with ``password`` and any user name.

    The password is compared in constant time; the user name is not checked, so
    there is nothing to guess but the password. Use it over HTTPS only (basic auth
    sends the password with every request) or on a trusted network.
    """
    expected = password.encode()
    header = {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}

    def check(request: Request) -> bool | Response:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            _, _, sent = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            sent = None
        if scheme.lower() == "basic" and sent is not None and hmac.compare_digest(sent, expected):
            return True
        return PlainTextResponse("authentication required", 401, headers=header)

    return check
