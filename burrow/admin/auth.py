"""Who may use the admin: an optional hook called before every request.

The hook is the parent application's own check, in one simple shape:

    def auth(request: starlette.requests.Request) -> bool | str | Identity | Response  # or async def

``True`` lets the request through with every right (its actions are recorded as
"admin"); ``"viewer"`` lets it through read-only: pages show no action control
and every POST is refused with 403; an :class:`Identity` names who it is (the
audit trail records the name) and its role, ``"admin"`` or ``"viewer"``;
``False`` answers 403; a ``Response`` is sent as it is (a redirect to the
parent's login page, a 401 asking for credentials).
It guards every path of the admin but ``/healthz`` and ``/readyz``, which probes
call without credentials and which show nothing but "ok" or a one-line reason.
A plain function runs on the event loop, so keep it quick or make it ``async``.

:func:`basic_auth` is such a hook; the standalone server (``burrow admin``) uses it
when ``[admin] password`` is set (and ``[admin] viewer_password`` for viewers).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from burrow.admin import paths

ADMIN = "admin"
VIEWER = "viewer"
ROLES = (ADMIN, VIEWER)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is using the admin, as the ``auth`` hook says: ``name`` is what the audit
    trail records for their actions; ``role`` is ``"admin"`` (every action) or
    ``"viewer"`` (read-only)."""

    name: str
    role: str = ADMIN

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"Identity role must be 'admin' or 'viewer', got {self.role!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Identity name must be a non-empty string, got {self.name!r}")

    @property
    def can_act(self) -> bool:
        return self.role == ADMIN


Verdict = bool | str | Identity | Response
Auth = Callable[[Request], Verdict | Awaitable[Verdict]]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Where the middleware leaves the identity for the pages and actions (scope["state"]).
STATE_KEY = "burrow_identity"
ANONYMOUS_ADMIN = Identity(ADMIN, ADMIN)  # no hook, or a hook that said True


def identity_of(verdict: object) -> Identity | None:
    """The identity a hook's verdict grants; None when it grants nothing."""
    if verdict is True:
        return ANONYMOUS_ADMIN
    if isinstance(verdict, Identity):
        return verdict
    if verdict == VIEWER:
        return Identity(VIEWER, VIEWER)
    if verdict == ADMIN:
        return ANONYMOUS_ADMIN
    return None


def identity(request: Request) -> Identity:
    """Who made this request (an admin when no hook is set)."""
    found = request.scope.get("state", {}).get(STATE_KEY)
    return found if isinstance(found, Identity) else ANONYMOUS_ADMIN


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
        who = identity_of(verdict)
        if who is not None:
            if not who.can_act and scope["method"] not in SAFE_METHODS:
                # A viewer's POST: refused before any form is read, whatever it forges.
                await PlainTextResponse("forbidden: read-only (viewer) access", 403)(scope, receive, send)
                return
            scope.setdefault("state", {})[STATE_KEY] = who
            await self.app(scope, receive, send)
            return
        response = verdict if isinstance(verdict, Response) else PlainTextResponse("forbidden", 403)
        await response(scope, receive, send)


def basic_auth(password: str, realm: str = "burrow admin", *, viewer_password: str | None = None) -> Auth:
    """A hook that asks for HTTP basic auth with ``password`` and any user name: the
    identity "admin"; or with ``viewer_password``, if given: "viewer", read-only.

    The passwords are compared in constant time (both, always); the user name is
    not checked, so there is nothing to guess but a password. Use it over HTTPS
    only (basic auth sends the password with every request) or on a trusted network.
    """
    expected = password.encode()
    viewer = None if viewer_password is None else viewer_password.encode()
    header = {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}

    def check(request: Request) -> Verdict:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            _, _, sent = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            sent = None
        if scheme.lower() == "basic" and sent is not None:
            is_admin = hmac.compare_digest(sent, expected)
            is_viewer = viewer is not None and hmac.compare_digest(sent, viewer)
            if is_admin:
                return ANONYMOUS_ADMIN
            if is_viewer:
                return Identity(VIEWER, VIEWER)
        return PlainTextResponse("authentication required", 401, headers=header)

    return check
