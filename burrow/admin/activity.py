"""``/activity``: the audit trail, newest first: who did what to which jobs or queue
(from the API, the CLI or this admin), 50 rows a page, paged by id."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from burrow.admin import web

PAGE = 50


def activity_page(request: Request) -> Response:
    before_text = request.query_params.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) <= 19 else None
    entries = web.queue(request).audit(PAGE, before)
    older = entries[-1].id if len(entries) == PAGE else None
    return web.render(request, "activity.html", {"nav": "activity", "entries": entries, "older": older, "before": before})


routes = [Route("/activity", activity_page, name="activity")]
