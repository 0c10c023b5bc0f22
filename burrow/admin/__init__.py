"""burrow's web admin: an ASGI app over JobQueue's read and operator API.

    from starlette.applications import Starlette
    from starlette.routing import Mount
    import burrow, burrow.admin

    q = burrow.connect("postgresql://app@db/app")
    app = Starlette(routes=[Mount("/admin/jobs", burrow.admin.create_app(q, auth=is_staff))])

Server-rendered pages (Jinja2), a small script of its own that refreshes the live
parts, and no SQL: every read and action goes through ``JobQueue``. Needs the
``admin`` extra (``pip install "burrow-jobs[admin]"``); ``import burrow`` never imports
this package. ``burrow admin`` serves it on its own (``burrow.admin.server``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from burrow.admin import actions, activity, health, job, jobs, overview, web
from burrow.admin.auth import Auth, AuthMiddleware, Identity, basic_auth
from burrow.queue import JobQueue

__all__ = ["Auth", "Identity", "basic_auth", "create_app"]

STATIC = Path(__file__).parent / "static"


def create_app(queue: JobQueue, *, title: str = "burrow", auth: Auth | None = None) -> Starlette:
    """The admin for ``queue``, to mount under any prefix or serve alone.

    ``title`` names it in the header and the browser tab. ``auth`` is the parent
    app's check, called before every request but the health probes:
    ``(request) -> bool | str | Identity | Response``, sync or async; True lets the
    request through, "viewer" lets it through read-only (no action, POST 403),
    ``Identity(name, role)`` names who acts (the audit trail records it), False
    answers 403, a Response (a login redirect, a 401) is sent as it is.
    See :mod:`burrow.admin.auth`.
    """
    middleware = [Middleware(web.SecurityHeaders)]
    if auth is not None:
        middleware.append(Middleware(AuthMiddleware, auth=auth))
    app = Starlette(
        routes=[
            *overview.routes,
            *jobs.routes,
            *job.routes,
            *actions.routes,
            *activity.routes,
            *health.routes,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
        exception_handlers=web.EXCEPTION_HANDLERS,
    )
    app.state.burrow_admin = web.Settings(queue, title)
    return app
