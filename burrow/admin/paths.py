"""Links inside the admin, wherever it is mounted.

A parent app may mount the admin under any prefix (``app.mount("/admin/jobs", ...)``);
Starlette then puts that prefix in ``scope["root_path"]``. Every link, form, cookie
path and redirect is built here from that prefix and the admin's *own* routes:
``request.url_for`` would look names up in the parent's router instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import Response

Query = Mapping[str, str | int | None]


def root(request: Request) -> str:
    """The mount prefix ("" when the admin is the whole site), without a trailing slash."""
    prefix: str = request.scope.get("root_path", "")
    return prefix.rstrip("/")


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    """Set one of the admin's cookies: seen only under the mount point (not by the parent
    app), never by scripts (HttpOnly), never sent by another site's request
    (SameSite=Strict), and only over HTTPS when the admin is served over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=root(request) or "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def delete_cookie(response: Response, request: Request, name: str) -> None:
    set_cookie(response, request, name, "", max_age=0)


def relative(request: Request, name: str, query: Query | None = None, **params: str | int) -> str:
    """The app-relative path of route ``name`` (what a form's ``next`` field carries)."""
    path = str(request.app.url_path_for(name, **params))
    pairs = {key: value for key, value in (query or {}).items() if value not in (None, "")}
    return f"{path}?{urlencode(pairs)}" if pairs else path


def url(request: Request, name: str, query: Query | None = None, **params: str | int) -> str:
    """The path a browser follows to route ``name``: the mount prefix, then the route."""
    return root(request) + relative(request, name, query, **params)


def here(request: Request) -> str:
    """The app-relative path and query of this request."""
    path = request.url.path
    prefix = root(request)
    if prefix and path.startswith(prefix):
        path = path[len(prefix) :] or "/"
    return f"{path}?{request.url.query}" if request.url.query else path


def safe_next(value: object, default: str) -> str:
    """``value`` if it is an app-relative path, else ``default``: never another site.

    A redirect goes to the mount prefix followed by this, so it can only land inside
    the admin. Refused: anything not starting with one "/" ("//host" and "/\\host" are
    other sites to a browser), a scheme or host, control characters.
    """
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value
