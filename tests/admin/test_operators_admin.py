"""Operators, round 2, in the admin (issue 25): Pause / Resume and Run now, the
Activity page, the audit rows naming who the auth hook says, and the read-only
viewer role, over HTTP and in Chromium, on both databases."""

from __future__ import annotations

import base64
import datetime as dt
import re

import pytest
from playwright.sync_api import Page, expect
from starlette.requests import Request
from starlette.testclient import TestClient

from burrow.admin import Identity, basic_auth, create_app
from burrow.backends.records import Outcome, OutcomeKind
from burrow.errors import JobNotFound
from burrow.job import JobState
from burrow.queue import JobQueue
from tests.admin.conftest import Jobs, serve

TOKEN_RE = re.compile(r'name="csrf" value="([^"]+)"')
ACTION_CONTROLS = ("Retry", "Cancel", "Delete", "Run now", "Pause", "Resume")


def _token(client: TestClient, path: str = "/") -> str:
    match = TOKEN_RE.search(client.get(path).text)
    assert match, "no CSRF token on the page"
    return match[1]


def _since(q: JobQueue, first: int) -> list[tuple[str, str]]:
    """(action, actor) of the audit rows after id ``first``, oldest first."""
    return [(e.action, e.actor) for e in reversed(q.audit(100)) if e.id > first]


def _last_id(q: JobQueue) -> int:
    entries = q.audit(1)
    return entries[0].id if entries else 0


def _as(name: str, role: str = "admin"):
    def hook(request: Request) -> Identity:
        return Identity(name, role)

    return hook


def test_pause_resume_and_run_now_from_the_admin_are_audited_as_the_hooks_identity(
    admin_queue: JobQueue, jobs: Jobs
) -> None:
    later = admin_queue.enqueue("reports.build", {}, queue="mail", delay=dt.timedelta(hours=2))
    first = _last_id(admin_queue)
    with TestClient(create_app(admin_queue, auth=_as("ann@example.com"))) as c:
        page = c.get("/").text
        assert "Pause</button>" in page and 'value="mail"' in page
        csrf = _token(c)
        done = c.post("/queues/pause", data={"csrf": csrf, "queue": "mail", "next": "/"}, follow_redirects=False)
        assert done.status_code == 303
        assert admin_queue.paused_queues() == ["mail"]
        assert "Resume</button>" in c.get("/").text
        c.post("/queues/resume", data={"csrf": csrf, "queue": "mail", "next": "/"})
        assert admin_queue.paused_queues() == []

        job_page = c.get(f"/jobs/{later}").text
        assert "Run now</button>" in job_page
        c.post(f"/jobs/{later}/run-now", data={"csrf": csrf})
        assert admin_queue.job(later).run_at <= admin_queue.backend.now()
        assert "Run now</button>" not in c.get(f"/jobs/{later}").text
        # Refused: due already; no audit row for it.
        c.post(f"/jobs/{later}/run-now", data={"csrf": csrf})
        c.post(f"/jobs/{jobs.failed[0]}/retry", data={"csrf": csrf})
        c.post(f"/jobs/{jobs.running}/delete", data={"csrf": csrf, "confirm": "1"})  # refused: running

        assert _since(admin_queue, first) == [
            ("pause", "ann@example.com"),
            ("resume", "ann@example.com"),
            ("run_now", "ann@example.com"),
            ("retry", "ann@example.com"),
        ]
        activity = c.get("/activity").text
        assert "ann@example.com" in activity and "run now" in activity and f"job {later}" in activity


def test_a_viewer_sees_every_page_without_any_action_and_every_post_is_403(admin_queue: JobQueue, jobs: Jobs) -> None:
    first = _last_id(admin_queue)
    admin_queue.pause_queue("mail", actor="setup")
    later = admin_queue.enqueue("reports.build", {}, delay=dt.timedelta(hours=2))
    pages = ["/", "/jobs", "/jobs?state=failed", f"/jobs/{jobs.failed[0]}", f"/jobs/{later}", "/activity"]
    with TestClient(create_app(admin_queue, auth=lambda request: "viewer")) as c:
        for path in pages:
            response = c.get(path)
            assert response.status_code == 200, path
            assert 'method="post"' not in response.text, path
            for control in ACTION_CONTROLS:
                assert f"{control}</button>" not in response.text, (path, control)
            assert "read-only" in response.text
        # Forged POSTs, with a token the viewer got from a cookie-setting page: 403 all.
        csrf = c.cookies.get("burrow_csrf") or "x"
        forged = [
            (f"/jobs/{jobs.failed[0]}/retry", {}),
            (f"/jobs/{jobs.queued[0]}/cancel", {}),
            (f"/jobs/{jobs.failed[1]}/delete", {"confirm": "1"}),
            (f"/jobs/{later}/run-now", {}),
            ("/jobs/retry", {"confirm": "1"}),
            ("/queues/resume", {"queue": "mail"}),
            ("/queues/pause", {"queue": "default"}),
        ]
        for path, data in forged:
            assert c.post(path, data={"csrf": csrf, **data}).status_code == 403, path
    assert admin_queue.job(jobs.failed[0]).state is JobState.FAILED
    assert admin_queue.paused_queues() == ["mail"]
    assert _since(admin_queue, first) == [("pause", "setup")]


def _basic(password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}


def test_basic_auth_gives_the_viewer_password_the_viewer_role(admin_queue: JobQueue, jobs: Jobs) -> None:
    first = _last_id(admin_queue)
    app = create_app(admin_queue, auth=basic_auth("admin-pw", viewer_password="viewer-pw"))
    with TestClient(app) as c:
        assert c.get("/").status_code == 401
        assert c.get("/", headers=_basic("wrong")).status_code == 401
        viewer = c.get("/jobs", headers=_basic("viewer-pw"))
        assert viewer.status_code == 200 and 'method="post"' not in viewer.text
        assert c.post(f"/jobs/{jobs.failed[0]}/retry", headers=_basic("viewer-pw")).status_code == 403
    with TestClient(app) as c:
        admin_page = c.get("/jobs", headers=_basic("admin-pw"))
        assert 'method="post"' in admin_page.text
        match = TOKEN_RE.search(admin_page.text)
        assert match
        c.post(f"/jobs/{jobs.failed[0]}/retry", headers=_basic("admin-pw"), data={"csrf": match[1]})
    assert _since(admin_queue, first) == [("retry", "admin")]


def test_a_viewer_in_chromium_sees_no_action_control(page: Page, admin_queue: JobQueue, jobs: Jobs) -> None:
    admin_queue.pause_queue("mail", actor="setup")
    with serve(create_app(admin_queue, auth=lambda request: Identity("support", "viewer"))) as base:
        for path in ["/", "/jobs", f"/jobs/{jobs.failed[0]}", f"/jobs/{jobs.queued[0]}", "/activity"]:
            page.goto(base + path)
            expect(page.locator("main")).to_be_visible()
            assert page.locator("main form[method=post]").count() == 0, path
            for control in ACTION_CONTROLS:
                expect(page.get_by_role("button", name=control, exact=True)).to_have_count(0)
            expect(page.locator("footer")).to_contain_text("read-only (support)")
        # A POST forged from the viewer's own page: refused.
        response = page.request.post(f"{base}/jobs/{jobs.failed[0]}/retry", form={"csrf": "x"})
        assert response.status == 403
    assert admin_queue.job(jobs.failed[0]).state is JobState.FAILED


def test_the_list_searches_payloads_and_errors(admin_queue: JobQueue, jobs: Jobs) -> None:
    with TestClient(create_app(admin_queue)) as c:
        page = c.get("/jobs", params={"search": "USER2@example"}).text
        assert f'id="job-{jobs.failed[2]}"' in page and f'id="job-{jobs.failed[1]}"' not in page
        assert 'value="USER2@example"' in page
        refused = c.get("/jobs", params={"search": "connection REFUSED", "state": "failed"}).text
        assert all(f'id="job-{i}"' in refused for i in jobs.failed)
        assert "containing" in c.get("/jobs", params={"search": "no such text anywhere"}).text
        # The live fragment keeps the search.
        part = c.get("/parts/jobs", params={"search": "USER2@example"}).text
        assert f'id="job-{jobs.failed[2]}"' in part and f'id="job-{jobs.failed[1]}"' not in part


def _ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr id="job-(\d+)"', html)]


def test_the_list_has_a_newer_link_beside_older(admin_queue: JobQueue, jobs: Jobs) -> None:
    admin_queue.enqueue_many("more.task", [{"n": n} for n in range(40)])
    with TestClient(create_app(admin_queue)) as c:
        first = c.get("/jobs").text
        assert "newer" not in first
        page1 = _ids(first)
        page2_html = c.get(f"/jobs?before={page1[-1]}").text
        page2 = _ids(page2_html)
        assert f'href="/jobs?after={page2[0]}"' in page2_html.replace("&amp;", "&")
        page3_html = c.get(f"/jobs?before={page2[-1]}").text
        page3 = _ids(page3_html)
        back = _ids(c.get(f"/jobs?after={page3[0]}").text)
        assert back == page2  # newer from page 3 is page 2 again
        top_html = c.get(f"/jobs?after={page2[0]}").text
        assert _ids(top_html) == page1 and "newer</a>" not in top_html
        # With a filter: the newer page of the filtered list.
        failed_all = _ids(c.get("/jobs?state=failed").text)
        older_failed = _ids(c.get(f"/jobs?state=failed&before={failed_all[1]}").text)
        assert _ids(c.get(f"/jobs?state=failed&after={older_failed[0]}").text) == failed_all[:2]
        assert c.get("/jobs?after=x").status_code == 400


def test_a_running_jobs_progress_bar_refreshes_itself(page: Page, admin_queue: JobQueue, jobs: Jobs) -> None:
    running = admin_queue.job(jobs.running)
    assert running.owner is not None
    admin_queue.backend.record_progress([(running.id, running.owner, running.attempts, 0.2, "2 of 10")])
    with serve(create_app(admin_queue)) as base:
        page.goto(base + "/jobs?state=running")
        bar = page.locator(f"#job-{running.id} progress")
        expect(bar).to_have_attribute("value", "0.2")
        admin_queue.backend.record_progress([(running.id, running.owner, running.attempts, 0.7, "7 of 10")])
        expect(bar).to_have_attribute("value", "0.7", timeout=12_000)  # two refresh periods
        expect(page.locator(f"#job-{running.id}")).to_contain_text("7 of 10")


def test_a_running_jobs_page_refreshes_itself_until_the_job_ends(page: Page, admin_queue: JobQueue, jobs: Jobs) -> None:
    running = admin_queue.job(jobs.running)
    assert running.owner is not None
    admin_queue.backend.record_progress([(running.id, running.owner, running.attempts, 0.2, "2 of 10")])
    with serve(create_app(admin_queue)) as base:
        page.goto(f"{base}/jobs/{running.id}")
        region = page.locator(".job-live")
        bar = region.locator("progress")
        expect(bar).to_have_attribute("value", "0.2")
        expect(region.locator(".progress-text")).to_have_text("20% · 2 of 10")
        expect(region).to_have_attribute("data-refresh", f"/parts/jobs/{running.id}")
        page.evaluate("window.notReloaded = true")  # gone if the page were loaded again

        admin_queue.backend.record_progress([(running.id, running.owner, running.attempts, 0.7, "7 of 10")])
        expect(bar).to_have_attribute("value", "0.7", timeout=12_000)  # two refresh periods
        expect(region.locator(".progress-text")).to_have_text("70% · 7 of 10")
        assert page.evaluate("window.notReloaded") is True

        # It ends: the state, times, result and attempts follow, and the page stops asking.
        lost = admin_queue.backend.finish(
            [Outcome(running.id, running.owner, running.attempts, OutcomeKind.SUCCEEDED, b'{"rows": 10}', None, 0, 1.5)]
        )
        assert lost == []
        expect(region.locator(".job-head .badge")).to_have_text("succeeded", timeout=12_000)
        expect(region).not_to_have_attribute("data-refresh", re.compile(".*"))
        expect(region.locator("table.attempts tbody .badge")).to_have_text(["succeeded"])
        expect(region.locator("pre.data").last).to_contain_text('"rows": 10')
        expect(page.locator(".live")).to_be_hidden()
        assert page.evaluate("window.notReloaded") is True

        # The forms the refresh brought in post with the browser's CSRF token.
        region.locator("summary", has_text="Delete").click()
        region.get_by_role("button", name=f"Delete {running.id}").click()
        expect(page.locator(".flash.ok")).to_have_text(f"Job {running.id} is deleted.")
    with pytest.raises(JobNotFound):
        admin_queue.job(running.id)
