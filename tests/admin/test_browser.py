"""The admin in a real headless Chromium, against both databases: what an operator
does with it, and what it must never do (run a payload's script, accept a forged POST).

Every wait is on a page event or a selector, bounded by the context's timeout.
Set BURROW_ADMIN_DOCS_SCREENSHOTS=1 to also write the README's screenshots to docs/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from burrow.admin import create_app
from burrow.job import JobState
from burrow.errors import JobNotFound
from burrow.queue import JobQueue
from tests.admin.conftest import DOCS, XSS, Jobs, serve
from tests.conftest import Database

REFRESH_TIMEOUT_MS = 12_000  # two refresh periods of the page's script


def shoot(page: Page, tmp_path: Path, name: str, database: Database | None = None) -> None:
    """A full-page screenshot into the test's directory and, when asked, into docs/."""
    page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
    if database is not None and database.kind == "sqlite" and os.environ.get("BURROW_ADMIN_DOCS_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=DOCS / f"admin-{name}.png", full_page=True)


def row(page: Page, job_id: int) -> Locator:
    """The list row of job ``job_id``."""
    return page.locator(f"#job-{job_id}")


def test_an_operator_walks_through_the_admin(
    page: Page, admin_queue: JobQueue, jobs: Jobs, database: Database, tmp_path: Path
) -> None:
    with serve(create_app(admin_queue, title="shop jobs")) as base:
        page.goto(base + "/")
        expect(page.locator(".stat.s-failed .n")).to_have_text(str(len(jobs.failed) + 2))
        expect(page.locator(".stat.s-queued .n")).to_have_text(str(len(jobs.queued)))
        expect(page.locator(".chart rect.bar").first).to_be_visible()
        expect(page.locator("table.processes")).to_contain_text("worker-a")
        shoot(page, tmp_path, "overview", database)

        # The counts refresh themselves: a job enqueued now shows up without a reload.
        admin_queue.enqueue("reports.build", {"report": "weekly"})
        expect(page.locator(".stat.s-queued .n")).to_have_text(str(len(jobs.queued) + 1), timeout=REFRESH_TIMEOUT_MS)
        expect(page.locator(".live")).to_have_text("live")

        # Filter to the failed jobs and open one.
        page.locator(".stat.s-failed").click()
        expect(page).to_have_url(re.compile(r"/jobs\?state=failed$"))
        expect(page.locator(".pill.s-failed.on")).to_be_visible()
        states = page.locator("table.jobs tbody .badge").all_inner_texts()
        assert states and set(states) == {"failed"}
        shoot(page, tmp_path, "failed-list")

        page.locator(f"#job-{jobs.retried_then_failed} a").first.click()
        expect(page.locator("h1")).to_have_text(f"Job {jobs.retried_then_failed}")
        expect(page.locator("pre.trace").first).to_contain_text("payment gateway did not answer")
        expect(page.locator("pre.data").first).to_contain_text('"invoice": "INV-2041"')
        outcomes = page.locator("table.attempts tbody .badge").all_inner_texts()
        assert outcomes == ["retried", "retried", "failed"]
        shoot(page, tmp_path, "failed-job", database)

        # Retry it: back on its page, queued, and the database agrees.
        page.get_by_role("button", name="Retry").click()
        expect(page.locator(".flash.ok")).to_have_text(f"Job {jobs.retried_then_failed} is queued again.")
        expect(page.locator(".job-head .badge")).to_have_text("queued")
        expect(page.locator("table.attempts tbody tr").last).to_contain_text("retried by an operator")
        assert admin_queue.job(jobs.retried_then_failed).state is JobState.QUEUED
        shoot(page, tmp_path, "retried-job")

        # Cancel a queued job from the list.
        page.goto(base + "/jobs?state=queued")
        row(page, jobs.queued[-1]).get_by_role("button", name="Cancel").click()
        expect(page.locator(".flash.ok")).to_contain_text(f"Job {jobs.queued[-1]} is cancelled")
        expect(page).to_have_url(re.compile(r"/jobs\?state=queued$"))
        assert admin_queue.job(jobs.queued[-1]).state is JobState.CANCELLED

        # Delete a finished job: the first click only opens the confirm step.
        page.goto(base + "/jobs?state=succeeded")
        doomed = row(page, jobs.succeeded[-1])
        doomed.locator("summary", has_text="Delete").click()
        expect(doomed.get_by_text(f"Delete job {jobs.succeeded[-1]} and its history?")).to_be_visible()
        assert admin_queue.job(jobs.succeeded[-1]).state is JobState.SUCCEEDED
        shoot(page, tmp_path, "delete-confirm")
        doomed.get_by_role("button", name=f"Delete {jobs.succeeded[-1]}").click()
        expect(page.locator(".flash.ok")).to_have_text(f"Job {jobs.succeeded[-1]} is deleted.")
        with pytest.raises(JobNotFound):
            admin_queue.job(jobs.succeeded[-1])

        # Retry every failed job, after the confirm step.
        page.goto(base + "/jobs?state=failed")
        failed = admin_queue.counts()[JobState.FAILED]
        page.locator("summary", has_text="Retry all failed").click()
        page.get_by_role("button", name=f"Retry {failed}").click()
        expect(page.locator(".flash.ok")).to_have_text(f"{failed} failed job(s) queued again.")
        expect(page.locator("p.empty")).to_have_text("No failed jobs.")
        assert admin_queue.counts()[JobState.FAILED] == 0

        # The job search box jumps to a job.
        page.get_by_role("searchbox", name="Go to job id").fill(str(jobs.running))
        page.get_by_role("searchbox", name="Go to job id").press("Enter")
        expect(page.locator("h1")).to_have_text(f"Job {jobs.running}")
        expect(page.locator("table.attempts")).to_contain_text("running")

        # A phone-sized window, for the eye (tmp_path only).
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(base + "/")
        shoot(page, tmp_path, "overview-phone")
        page.goto(base + "/jobs")
        shoot(page, tmp_path, "list-phone")


def test_a_script_in_a_payload_is_shown_as_text_and_never_runs(
    page: Page, admin_queue: JobQueue, jobs: Jobs, tmp_path: Path
) -> None:
    with serve(create_app(admin_queue)) as base:
        page.goto(f"{base}/jobs/{jobs.xss}")
        expect(page.locator("pre.data")).to_contain_text(XSS.replace('"', '\\"'))
        expect(page.locator("pre.trace").first).to_contain_text("<script>window.pwned = 3</script>")
        assert page.evaluate("window.pwned") is None
        page.goto(f"{base}/jobs?task=comments.moderate")
        expect(row(page, jobs.xss).locator("td.error")).to_contain_text("<b>markup</b>")
        assert page.evaluate("window.pwned") is None
        shoot(page, tmp_path, "xss")


def test_a_post_without_the_csrf_token_is_refused(page: Page, admin_queue: JobQueue, jobs: Jobs) -> None:
    with serve(create_app(admin_queue)) as base:
        page.goto(f"{base}/jobs/{jobs.failed[0]}")  # the browser now holds a token cookie
        bare = page.request.post(f"{base}/jobs/{jobs.failed[0]}/retry", form={"next": "/"}, max_redirects=0)
        forged = page.request.post(
            f"{base}/jobs/{jobs.failed[0]}/retry", form={"next": "/", "csrf": "x" * 43}, max_redirects=0
        )
        assert (bare.status, forged.status) == (403, 403)
        assert "reload the page" in bare.text()
        assert admin_queue.job(jobs.failed[0]).state is JobState.FAILED


def test_mounted_under_a_prefix_every_link_stays_inside(
    page: Page, admin_queue: JobQueue, jobs: Jobs, tmp_path: Path
) -> None:
    parent = Starlette(
        routes=[
            Route("/", lambda request: PlainTextResponse("the shop")),
            Mount("/admin/jobs", create_app(admin_queue, title="shop jobs")),
        ]
    )
    with serve(parent) as base:
        page.goto(base + "/admin/jobs/")
        expect(page.locator(".brand")).to_have_text("shop jobs")
        page.get_by_role("link", name="Jobs", exact=True).click()
        expect(page).to_have_url(base + "/admin/jobs/jobs")
        page.locator(".pill.s-failed").click()
        expect(page).to_have_url(base + "/admin/jobs/jobs?state=failed")
        page.locator(f"#job-{jobs.failed[0]} a").first.click()
        expect(page).to_have_url(f"{base}/admin/jobs/jobs/{jobs.failed[0]}")
        page.get_by_role("button", name="Retry").click()
        expect(page).to_have_url(f"{base}/admin/jobs/jobs/{jobs.failed[0]}")
        expect(page.locator(".flash.ok")).to_be_visible()
        assert admin_queue.job(jobs.failed[0]).state is JobState.QUEUED
        page.get_by_role("link", name="Overview").click()
        expect(page).to_have_url(base + "/admin/jobs/")
        shoot(page, tmp_path, "mounted")
