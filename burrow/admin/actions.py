"""The buttons: POST forms that retry, cancel or delete one job, or retry every
failed job of the list's task filter.

Each checks the CSRF token first (403 without it), acts through JobQueue, and
answers 303 back to the page it came from (its ``next`` field, accepted only as a
path inside the admin) with a flash message saying what happened. Delete and the
bulk retry act only with ``confirm=1``, which only their inline confirm step sends.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from burrow.admin import csrf, paths, web
from burrow.errors import JobNotFound
from burrow.queue import JobQueue


def _confirmed(form: FormData) -> bool:
    return form.get("confirm") == "1"


async def _act_on_job(
    request: Request, act: Callable[..., bool], done: str, refused: str, *, confirm: bool = False
) -> Response:
    """Run ``act`` on the path's job (in a thread: JobQueue blocks) and go back with
    flash ``done`` or ``refused``."""
    form = await csrf.checked_form(request)
    job_id = web.job_id(request)
    back = paths.safe_next(form.get("next"), paths.relative(request, "job", job_id=job_id))
    if confirm and not _confirmed(form):
        return web.redirect(request, back, "unconfirmed")
    try:
        acted = await run_in_threadpool(act, web.queue(request), job_id, actor=web.actor(request))
    except JobNotFound:
        return web.redirect(request, paths.relative(request, "jobs"), "missing", job_id)
    return web.redirect(request, back, done if acted else refused, job_id)


async def retry(request: Request) -> Response:
    return await _act_on_job(request, JobQueue.retry, "retried", "not_retried")


async def cancel(request: Request) -> Response:
    return await _act_on_job(request, JobQueue.cancel, "cancelled", "not_cancelled")


async def delete(request: Request) -> Response:
    return await _act_on_job(request, JobQueue.delete, "deleted", "not_deleted", confirm=True)


async def run_now(request: Request) -> Response:
    return await _act_on_job(request, JobQueue.run_now, "ran_now", "not_ran_now")


async def _queue_action(request: Request, pause: bool) -> Response:
    form = await csrf.checked_form(request)
    name = form.get("queue")
    back = paths.safe_next(form.get("next"), paths.relative(request, "overview"))
    if not isinstance(name, str):
        return web.redirect(request, back, "unconfirmed")
    q = web.queue(request)
    act = q.pause_queue if pause else q.resume_queue
    await run_in_threadpool(act, name, actor=web.actor(request))
    return web.redirect(request, back, "paused" if pause else "resumed")


async def pause_queue(request: Request) -> Response:
    return await _queue_action(request, True)


async def resume_queue(request: Request) -> Response:
    return await _queue_action(request, False)


async def retry_all(request: Request) -> Response:
    """Every failed job of the task filter (all tasks without one) back in the queue."""
    form = await csrf.checked_form(request)
    task = form.get("task") or None
    if task is not None and not isinstance(task, str):
        task = None
    back = paths.safe_next(form.get("next"), paths.relative(request, "jobs", {"task": task}))
    if not _confirmed(form):
        return web.redirect(request, back, "unconfirmed")
    retried = await run_in_threadpool(web.queue(request).retry_all, "failed", task, actor=web.actor(request))
    return web.redirect(request, back, "retried_all", retried)


routes = [
    Route("/jobs/retry", retry_all, methods=["POST"], name="retry_all"),
    Route("/jobs/{job_id:int}/retry", retry, methods=["POST"], name="retry"),
    Route("/jobs/{job_id:int}/cancel", cancel, methods=["POST"], name="cancel"),
    Route("/jobs/{job_id:int}/delete", delete, methods=["POST"], name="delete"),
    Route("/jobs/{job_id:int}/run-now", run_now, methods=["POST"], name="run_now"),
    Route("/queues/pause", pause_queue, methods=["POST"], name="pause_queue"),
    Route("/queues/resume", resume_queue, methods=["POST"], name="resume_queue"),
]
