"""``/``: the overview. How many jobs are in each state, per task, what finished
in the last hour, and which supervisors are alive.

The counts, chart and processes are one fragment (``/parts/overview``) that the
page's refresh script fetches again every few seconds.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from burrow.admin import chart, web
from burrow.backends.records import hosts_of


def overview(request: Request) -> dict[str, Any]:
    """The overview's data, read through JobQueue: four reads, no job rows (the due jobs
    nobody handles are counted, by task)."""
    q = web.queue(request)
    points = q.throughput(chart.MINUTES)
    by_task = q.counts_by_task()
    processes = q.processes()
    return {
        "counts": web.state_totals(by_task),
        "by_task": by_task,
        "chart": chart.throughput_chart(points),
        "hour": chart.series_totals(points),
        "processes": processes,
        "hosts": hosts_of(processes),
        "unhandled": q.unhandled(),
        "queues": q.queues(),
    }


def overview_page(request: Request) -> Response:
    return web.render(request, "overview.html", {"nav": "overview", **overview(request)})


def overview_part(request: Request) -> Response:
    return web.render(request, "overview_body.html", overview(request), whole=False)


routes = [
    Route("/", overview_page, name="overview"),
    Route("/parts/overview", overview_part, name="overview_part"),
]
