"""``/jobs``: the list. Filter pills per state with their counts, a task filter,
25 jobs a page, newest first, paged by id (``before`` = the last id shown), each
row with its inline actions; ``?id=`` jumps to a job.

The pills, table and paging are one fragment (``/parts/jobs`` with the same
query) that the refresh script fetches again every few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from burrow.admin import paths, web
from burrow.backends.records import SEARCH_WINDOW
from burrow.job import JobState

PAGE_SIZE = 25


@dataclass(frozen=True, slots=True)
class Filters:
    """The list's query: which state and task, and where the page starts."""

    state: JobState | None
    task: str | None
    before: int | None
    search: str | None = None  # payload (JSON text) or last error contains it, any case
    after: int | None = None  # the page just newer than this id (the "newer" link)

    def query(self, **changes: str | int | None) -> dict[str, str | int | None]:
        """This query with ``changes``: the links of pills, task filter and paging."""
        current: dict[str, str | int | None] = {
            "state": self.state, "task": self.task, "before": self.before, "search": self.search,
            "after": self.after,
        }
        return {**current, **changes}


def _filters(request: Request) -> Filters:
    """The query string as Filters; HTTP 400 naming a value that is none.
    (A malformed task name reaches JobQueue, whose BurrowError is a 400 too.)"""
    params = request.query_params
    state = params.get("state") or None
    if state is not None and state not in {s.value for s in JobState}:
        raise HTTPException(400, f"unknown state {state!r}: use one of {', '.join(JobState)}")
    before = params.get("before") or None
    if before is not None and (not web.JOB_ID_RE.fullmatch(before) or int(before) > web.MAX_JOB_ID):
        raise HTTPException(400, f"before must be a job id, got {before!r}")
    after = params.get("after") or None
    if after is not None and (not web.JOB_ID_RE.fullmatch(after) or int(after) > web.MAX_JOB_ID):
        raise HTTPException(400, f"after must be a job id, got {after!r}")
    search = (params.get("search") or "").strip() or None
    return Filters(
        JobState(state) if state else None, params.get("task") or None, int(before) if before else None, search,
        int(after) if after else None,
    )


def listing(request: Request, filters: Filters) -> dict[str, Any]:
    """One page of jobs and the counts of the pills, read through JobQueue; the ids
    its "older" and "newer" links start from (None: no such page)."""
    q = web.queue(request)
    window_end = newer = None
    if filters.search is not None:
        found = q.search(filters.search, filters.state, filters.task, filters.before, PAGE_SIZE + 1)
        page = found.jobs[:PAGE_SIZE]
        older = page[-1].id if len(found.jobs) > PAGE_SIZE else found.window_end
        window_end = found.window_end if len(found.jobs) <= PAGE_SIZE else None
    elif filters.after is not None:
        above = q.jobs(state=filters.state, task=filters.task, limit=PAGE_SIZE + 1, after_id=filters.after)
        page = above[-PAGE_SIZE:]  # the nearest ones; one more means a page newer still
        newer = page[0].id if len(above) > PAGE_SIZE else None
        older = page[-1].id if page else None
    else:
        rows = q.jobs(state=filters.state, task=filters.task, before_id=filters.before, limit=PAGE_SIZE + 1)
        page = rows[:PAGE_SIZE]
        older = page[-1].id if len(rows) > PAGE_SIZE else None
        if filters.before is not None and page and q.jobs(state=filters.state, task=filters.task, limit=1, after_id=page[0].id):
            newer = page[0].id
    by_task = q.counts_by_task()
    if filters.task is None:
        counts = web.state_totals(by_task)
    else:
        counts = by_task.get(filters.task, dict.fromkeys(JobState, 0))
    return {
        "filters": filters,
        "jobs": page,
        "older": older,
        "newer": newer,
        # A search that stopped at its window of the newest jobs says so.
        "window_end": window_end,
        "search_window": SEARCH_WINDOW,
        "counts": counts,
        "total": sum(counts.values()),
        "tasks": sorted(by_task),
        # Where the forms of this page come back to: the page, also when the
        # fragment is what rendered them.
        "back": paths.relative(request, "jobs", filters.query()),
    }


def jobs_page(request: Request) -> Response:
    wanted = request.query_params.get("id")
    if wanted is not None:
        job_id = wanted.strip().lstrip("#")
        if not web.JOB_ID_RE.fullmatch(job_id):
            raise HTTPException(400, f"{wanted!r} is not a job id (a number)")
        return web.redirect(request, paths.relative(request, "job", job_id=int(job_id)))
    return web.render(request, "jobs.html", {"nav": "jobs", **listing(request, _filters(request))})


def jobs_part(request: Request) -> Response:
    return web.render(request, "jobs_body.html", listing(request, _filters(request)), whole=False)


routes = [
    Route("/jobs", jobs_page, name="jobs"),
    Route("/parts/jobs", jobs_part, name="jobs_part"),
]
