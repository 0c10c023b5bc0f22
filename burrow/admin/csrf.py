"""CSRF: every POST must echo the token the admin put in a cookie.

Each browser gets a random token in a cookie that only the admin's path sees
(HttpOnly, SameSite=Strict); every form carries the same token in a hidden field.
Another site can make a browser send a form here, but it cannot read the cookie,
so it cannot fill in the field: a POST whose field does not match its cookie is
refused with 403. The comparison is constant-time (``hmac.compare_digest``).

The token is not signed with a server secret on purpose: the admin may run in
several processes behind one address (uvicorn or gunicorn workers of the parent
app), and a page rendered by one must be able to POST to another.
"""

from __future__ import annotations

import hmac
import re
import secrets

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from burrow.admin import paths

COOKIE = "burrow_csrf"
FIELD = "csrf"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
REFUSED = "This form has expired or did not come from this admin: reload the page and try again."


def _cookie_token(request: Request) -> str | None:
    value = request.cookies.get(COOKIE)
    return value if value is not None and _TOKEN_RE.fullmatch(value) else None


def token(request: Request) -> tuple[str, bool]:
    """The browser's token for the forms of this page, and whether it is new (then the
    response must set it: :func:`set_cookie`)."""
    current = _cookie_token(request)
    return (current, False) if current is not None else (secrets.token_urlsafe(32), True)


def set_cookie(response: Response, request: Request, value: str) -> None:
    """Give the browser its token; scripts cannot read it and other sites' requests do not carry it."""
    paths.set_cookie(response, request, COOKIE, value)


async def checked_form(request: Request) -> FormData:
    """The POSTed form, once its token matched the cookie's; HTTP 403 otherwise."""
    form = await request.form()
    sent = form.get(FIELD)
    expected = _cookie_token(request)
    if not isinstance(sent, str) or expected is None or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(403, REFUSED)
    return form
