"""What every page of the admin shares: its settings, the templates, the layout's
context, the HTML responses, the error pages and the security headers.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import jinja2
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from burrow.admin import auth, csrf, flash, paths
from burrow.job import JobState
from burrow.errors import BackendError, BurrowError, JobNotFound
from burrow.queue import JobQueue

REFRESH_S = 5  # how often the live parts of a page fetch themselves again

# No inline script or style anywhere: the page's own CSS and JS files only.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """What create_app was given; every route finds it on its app's state."""

    queue: JobQueue
    title: str


def settings(request: Request) -> Settings:
    found = request.app.state.burrow_admin
    assert isinstance(found, Settings)
    return found


def queue(request: Request) -> JobQueue:
    return settings(request).queue


def actor(request: Request) -> str:
    """Who an action of this request is recorded as in the audit trail."""
    return auth.identity(request).name


def state_totals(by_task: Mapping[str, Mapping[JobState, int]]) -> dict[JobState, int]:
    """Jobs per state over every task: ``q.counts()`` without a second round trip, and
    always the sum of the per-task table beside it (one snapshot, not two)."""
    return {state: sum(counts[state] for counts in by_task.values()) for state in JobState}


MAX_JOB_ID = 2**63 - 1  # ids are 64-bit integers in both databases
JOB_ID_RE = re.compile(r"[0-9]{1,19}")


def job_id(request: Request) -> int:
    """The path's job id; HTTP 404 for one no job can have (the database would refuse
    to even compare it, and that is no reason for a 503)."""
    value: int = request.path_params["job_id"]
    if value > MAX_JOB_ID:
        raise HTTPException(404, f"No job with id {value}.")
    return value


# -- time as people read it -----------------------------------------------------


def ago(at: dt.datetime | None, now: dt.datetime) -> str:
    """"12s ago", "5m ago", "in 3h": how far ``at`` is from ``now``, in one unit."""
    if at is None:
        return "—"
    seconds = (now - at).total_seconds()
    span = abs(seconds)
    if span < 1:
        return "now"
    unit, size = next((unit, size) for unit, size in _UNITS if span >= size)
    amount = f"{int(span // size)}{unit}"
    return f"{amount} ago" if seconds > 0 else f"in {amount}"


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def stamp(at: dt.datetime | None) -> str:
    """The full UTC time, for titles and the job page."""
    return "—" if at is None else at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds(value: float | None) -> str:
    """A duration in the unit that reads best: "340ms", "2.5s", "3m 20s"."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.3g}s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes}m {rest}s"


def first_line(text: str | None) -> str:
    """An error's first line: what a list row or a one-line reason shows."""
    stripped = (text or "").strip()
    return stripped.splitlines()[0] if stripped else ""


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("burrow.admin", "templates"),
    autoescape=True,  # every value is escaped: a payload holding <script> shows as text
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(ago=ago, stamp=stamp, seconds=seconds, first_line=first_line)
ENV.globals.update(states=list(JobState), refresh_s=REFRESH_S)


# -- responses ------------------------------------------------------------------


def render(request: Request, template: str, context: Mapping[str, Any], *, status: int = 200, whole: bool = True) -> HTMLResponse:
    """``template`` with the layout's context: links bound to this mount, the CSRF token
    for its forms and, on a ``whole`` page (not a live-refresh fragment), the flash
    message left by the last action, which is then used up."""
    token, fresh = csrf.token(request)
    message = flash.take(request) if whole else None
    admin = settings(request)
    html = ENV.get_template(template).render(
        title=admin.title,
        dialect=admin.queue.backend.dialect,
        url=partial(paths.url, request),
        static=lambda name: paths.url(request, "static", path=name),
        csrf_field=csrf.FIELD,
        csrf_token=token,
        flash=message,
        now=admin.queue.backend.now(),
        identity=auth.identity(request),
        can_act=auth.identity(request).can_act,
        **context,
    )
    response = HTMLResponse(html, status, headers={"cache-control": "no-store"})
    if fresh:
        csrf.set_cookie(response, request, token)
    if message is not None:
        flash.clear(response, request)
    return response


def redirect(request: Request, to: str, code: str | None = None, n: int = 0) -> RedirectResponse:
    """303 to ``to`` (app-relative: see paths.safe_next), leaving flash message ``code``."""
    response = RedirectResponse(paths.root(request) + to, 303)
    if code is not None:
        flash.put(response, request, code, n)
    return response


def error_page(request: Request, status: int, heading: str, detail: str) -> HTMLResponse:
    return render(request, "error.html", {"status": status, "heading": heading, "detail": detail}, status=status)


_HEADINGS = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (404 for an unknown path, the CSRF 403, ...) as pages."""
    assert isinstance(exc, HTTPException)
    heading = _HEADINGS.get(exc.status_code, "Error")
    detail = exc.detail if exc.detail and exc.detail != heading else ""
    return error_page(request, exc.status_code, heading, detail)


async def job_not_found(request: Request, exc: Exception) -> Response:
    return error_page(request, 404, "Not found", str(exc).capitalize() + ".")


async def bad_request(request: Request, exc: Exception) -> Response:
    """A filter or field that JobQueue refused (an unknown state, a malformed task name)."""
    return error_page(request, 400, "Bad request", first_line(str(exc)))


async def database_error(request: Request, exc: Exception) -> Response:
    """The database did not answer: one line, no traceback, and no DSN (BackendError names none)."""
    return error_page(request, 503, "Database unavailable", first_line(str(exc)))


EXCEPTION_HANDLERS = {
    HTTPException: http_error,
    JobNotFound: job_not_found,
    BackendError: database_error,
    BurrowError: bad_request,
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response of the admin, static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
