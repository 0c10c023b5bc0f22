"""The admin over HTTP with Starlette's TestClient: CSRF, redirects, flash messages,
error pages, probes, auth hooks and headers; fast, on SQLite (the browser tests
cover both databases)."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount
from starlette.testclient import TestClient

import burrow
from burrow.admin import basic_auth, create_app
from burrow.admin.chart import axis_top, throughput_chart
from burrow.admin.job import show_bytes
from burrow.backends import backend_for
from burrow.job import JobState
from burrow.queue import JobQueue
from burrow.stats import ThroughputPoint
from tests.admin.conftest import Jobs, populate
from tests.conftest import POSTGRES_DSN

TOKEN_RE = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def admin_queue(tmp_path: Path) -> Iterator[JobQueue]:
    """The app's own tests run on one SQLite file (conftest's ``jobs`` fills it)."""
    queue = burrow.connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield queue
    queue.close()


@pytest.fixture
def q(admin_queue: JobQueue) -> JobQueue:
    return admin_queue


@pytest.fixture
def client(q: JobQueue) -> Iterator[TestClient]:
    with TestClient(create_app(q), follow_redirects=False) as c:
        yield c


def token(client: TestClient, path: str = "/jobs") -> str:
    """The CSRF token of a page's forms (getting the page sets the cookie)."""
    match = TOKEN_RE.search(client.get(path).text)
    assert match is not None
    return match[1]


# -- CSRF -----------------------------------------------------------------------


def test_a_post_needs_the_token_its_cookie_holds(client: TestClient, q: JobQueue, jobs: Jobs) -> None:
    job_id = jobs.failed[0]
    url = f"/jobs/{job_id}/retry"
    assert client.post(url, data={}).status_code == 403  # no cookie, no field
    good = token(client)
    assert client.post(url, data={}).status_code == 403  # cookie, no field
    assert client.post(url, data={"csrf": good[:-1] + ("A" if good[-1] != "A" else "B")}).status_code == 403
    assert q.job(job_id).state is JobState.FAILED
    response = client.post(url, data={"csrf": good})
    assert response.status_code == 303
    assert q.job(job_id).state is JobState.QUEUED


def test_the_token_without_its_cookie_is_refused(q: JobQueue, jobs: Jobs) -> None:
    """Another browser's token (a leaked one) is no use without that browser's cookie."""
    with TestClient(create_app(q), follow_redirects=False) as first, TestClient(create_app(q), follow_redirects=False) as other:
        stolen = token(first)
        token(other)  # the other browser has a cookie of its own
        assert other.post(f"/jobs/{jobs.failed[0]}/retry", data={"csrf": stolen}).status_code == 403


def test_the_cookies_are_httponly_strict_and_scoped_to_the_mount_path(q: JobQueue, jobs: Jobs) -> None:
    parent = Starlette(routes=[Mount("/admin/jobs", create_app(q))])
    with TestClient(parent, follow_redirects=False) as c:
        page = c.get("/admin/jobs/jobs")
        cookie = page.headers["set-cookie"]
        assert "burrow_csrf=" in cookie
        assert all(part in cookie for part in ("HttpOnly", "SameSite=strict", "Path=/admin/jobs"))
        match = TOKEN_RE.search(page.text)
        assert match is not None
        done = c.post(f"/admin/jobs/jobs/{jobs.failed[0]}/retry", data={"csrf": match[1], "next": "/jobs"})
        assert done.headers["location"] == "/admin/jobs/jobs"
        flash = done.headers["set-cookie"]
        assert all(part in flash for part in ("burrow_flash=", "HttpOnly", "SameSite=strict", "Path=/admin/jobs"))


# -- redirects and flash messages -----------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/path",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/jobs\r\nSet-Cookie: x=1",
        "evil.example",
        "",
    ],
)
def test_an_action_never_redirects_out_of_the_admin(client: TestClient, jobs: Jobs, target: str) -> None:
    job_id = jobs.failed[0]
    response = client.post(f"/jobs/{job_id}/retry", data={"csrf": token(client), "next": target})
    assert response.status_code == 303
    assert response.headers["location"] == f"/jobs/{job_id}"


def test_an_action_goes_back_to_the_page_it_came_from_with_a_message(client: TestClient, jobs: Jobs) -> None:
    response = client.post(
        f"/jobs/{jobs.queued[0]}/cancel", data={"csrf": token(client), "next": "/jobs?state=queued&task=reports.build"}
    )
    assert response.headers["location"] == "/jobs?state=queued&task=reports.build"
    page = client.get(response.headers["location"])
    assert f"Job {jobs.queued[0]} is cancelled" in page.text
    assert 'burrow_flash=""' in page.headers["set-cookie"]  # used up
    assert "is cancelled" not in client.get("/jobs").text


def test_a_refused_action_says_why(client: TestClient, q: JobQueue, jobs: Jobs) -> None:
    csrf = token(client)
    client.post(f"/jobs/{jobs.succeeded[0]}/cancel", data={"csrf": csrf})
    assert f"Job {jobs.succeeded[0]} was not cancelled: it has finished." in client.get(f"/jobs/{jobs.succeeded[0]}").text
    client.post(f"/jobs/{jobs.running}/delete", data={"csrf": csrf, "confirm": "1"})
    assert "was not deleted: it is running" in client.get(f"/jobs/{jobs.running}").text
    gone = client.post("/jobs/987654/retry", data={"csrf": csrf})
    assert gone.headers["location"] == "/jobs"
    assert "Job 987654 does not exist" in client.get("/jobs").text
    assert q.job(jobs.running).state is JobState.RUNNING


def test_a_forged_flash_cookie_shows_nothing_of_its_own(client: TestClient) -> None:
    client.cookies.set("burrow_flash", "<script>alert(1)</script>")
    assert "alert(1)" not in client.get("/").text
    client.cookies.set("burrow_flash", "nonsense.3")
    assert 'class="flash' not in client.get("/").text


def test_delete_and_bulk_retry_act_only_when_confirmed(client: TestClient, q: JobQueue, jobs: Jobs) -> None:
    csrf = token(client)
    unconfirmed = client.post(f"/jobs/{jobs.succeeded[0]}/delete", data={"csrf": csrf})
    assert unconfirmed.status_code == 303
    assert "needs its confirmation" in client.get(unconfirmed.headers["location"]).text
    assert q.job(jobs.succeeded[0]).state is JobState.SUCCEEDED
    client.post("/jobs/retry", data={"csrf": csrf, "task": "emails.send"})
    assert q.counts()[JobState.FAILED] == len(jobs.failed) + 2

    done = client.post("/jobs/retry", data={"csrf": csrf, "task": "emails.send", "confirm": "1"})
    assert done.headers["location"] == "/jobs?task=emails.send"
    assert f"{len(jobs.failed)} failed job(s) queued again." in client.get(done.headers["location"]).text
    assert q.counts_by_task()["emails.send"][JobState.FAILED] == 0
    assert q.counts()[JobState.FAILED] == 2  # the other tasks' failed jobs stay


# -- pages, errors and probes ---------------------------------------------------


def test_every_page_renders_with_a_strict_policy_and_no_inline_script(client: TestClient, jobs: Jobs) -> None:
    paths = ("/", "/jobs", "/jobs?state=failed&task=emails.send", f"/jobs/{jobs.xss}", "/parts/overview", "/parts/jobs")
    for path in (*paths, f"/parts/jobs/{jobs.xss}", f"/parts/jobs/{jobs.running}"):
        response = client.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        tags = re.findall(r"<[a-zA-Z][^>]*>", response.text)  # escaped payloads are text, not tags
        assert not [tag for tag in tags if tag.startswith("<script") and " src=" not in tag], path
        assert not [tag for tag in tags if re.search(r"\son\w+=|\sstyle=", tag)], path
    assert "content-security-policy" in client.get("/static/admin.css").headers


def test_the_list_pages_by_id_newest_first(client: TestClient, jobs: Jobs) -> None:
    ids = [int(i) for i in re.findall(r'<tr id="job-(\d+)"', client.get("/jobs").text)]
    assert len(ids) == 25 and ids == sorted(ids, reverse=True)
    rest = [int(i) for i in re.findall(r'<tr id="job-(\d+)"', client.get(f"/jobs?before={ids[-1]}").text)]
    assert rest and max(rest) < ids[-1]
    assert f'href="/jobs?before={ids[-1]}"' in client.get("/jobs").text


def test_the_search_box_jumps_to_a_job(client: TestClient, jobs: Jobs) -> None:
    assert client.get(f"/jobs?id=%23{jobs.xss}").headers["location"] == f"/jobs/{jobs.xss}"
    assert client.get("/jobs?id=abc").status_code == 400
    assert client.get("/jobs?id=%C2%B2").status_code == 400  # a digit, but not 0-9


def test_the_job_page_shows_every_field_of_the_job(client: TestClient, q: JobQueue, jobs: Jobs) -> None:
    """The page renders burrow.job.FIELDS: a new field shows up without a template edit."""
    q.cancel(jobs.running)  # a cancel request, until its supervisor stops it
    page = client.get(f"/jobs/{jobs.running}").text
    for label in ("queue", "cancel request", "lease expires", "owner", "unique key", "snoozes", "max retries"):
        assert f"<dt>{label}</dt>" in page, label
    job = q.job(jobs.running)
    assert job.cancel_requested_at is not None
    assert f"<dt>queue</dt><dd>{job.queue}</dd>" in page
    assert f'<dt>cancel request</dt><dd><time datetime="{job.cancel_requested_at.isoformat()}"' in page


REFRESH_RE = re.compile(r'<div class="region job-live" data-swap="outer"( data-refresh="([^"]*)" data-interval="(\d+)")?>')


def test_the_job_part_serves_a_running_jobs_fields_and_progress_and_refreshes_only_until_it_ends(
    client: TestClient, q: JobQueue, jobs: Jobs
) -> None:
    running = q.job(jobs.running)
    assert running.owner is not None
    q.backend.record_progress([(running.id, running.owner, running.attempts, 0.3, "3 of 10 <rows>")])
    part = client.get(f"/parts/jobs/{running.id}")
    assert part.status_code == 200 and part.headers["cache-control"] == "no-store"
    region = REFRESH_RE.match(part.text)
    assert region is not None and region.group(2, 3) == (f"/parts/jobs/{running.id}", "5")
    assert '<span class="badge s-running">running</span>' in part.text
    assert "<dt>attempts</dt><dd>1 of at most 4</dd>" in part.text
    # The bar, with its message beside it (escaped), and no row of its own for the message.
    assert '<progress class="progress" max="1" value="0.3">30%</progress>' in part.text
    assert '<span class="progress-text">30% · 3 of 10 &lt;rows&gt;</span>' in part.text
    assert "<dt>progress message</dt>" not in part.text
    # Its forms work as the page's: the browser's CSRF token, and back to the page.
    assert f'action="/jobs/{running.id}/cancel"' in part.text and f'name="next" value="/jobs/{running.id}"' in part.text
    assert TOKEN_RE.findall(part.text) == [client.cookies["burrow_csrf"]]
    # The page holds the same region, refreshing; the part is the region alone (no layout).
    on_page = REFRESH_RE.search(client.get(f"/jobs/{running.id}").text)
    assert on_page is not None and on_page[2] == f"/parts/jobs/{running.id}"
    assert "<html" not in part.text and '<nav class="crumbs">' not in part.text

    q.backend.record_progress([(running.id, running.owner, running.attempts, 0.8, "8 of 10")])
    assert '<span class="progress-text">80% · 8 of 10</span>' in client.get(f"/parts/jobs/{running.id}").text

    # Finished jobs: the part and the page carry no refresh attribute, so the page stops asking.
    for finished in (jobs.failed[0], jobs.succeeded[0], jobs.retried_then_failed):
        for path in (f"/parts/jobs/{finished}", f"/jobs/{finished}"):
            text = client.get(path).text
            region = REFRESH_RE.search(text)
            assert region is not None and region[1] is None, path
            assert "data-refresh" not in text, path
    # Waiting and queued jobs are not finished: they refresh.
    wf = burrow.Workflow("live")
    a = wf.add("wf.a", {})
    b = wf.add("wf.b", {}, after=[a])
    ids = wf.enqueue(q)
    for unfinished in (ids[b], jobs.queued[0]):
        assert 'data-refresh="/parts/jobs/' in client.get(f"/parts/jobs/{unfinished}").text
    assert client.get("/parts/jobs/999999").status_code == 404


def test_the_job_part_is_behind_the_same_auth_as_its_page(q: JobQueue, jobs: Jobs) -> None:
    path = f"/parts/jobs/{jobs.running}"
    with TestClient(create_app(q, auth=lambda request: request.headers.get("x-role", False))) as c:
        assert c.get(path).status_code == 403
        viewer = c.get(path, headers={"x-role": "viewer"})
        assert viewer.status_code == 200 and "data-refresh" in viewer.text
        assert 'method="post"' not in viewer.text and "Cancel</button>" not in viewer.text
        admin = c.get(path, headers={"x-role": "admin"})
        assert admin.status_code == 200 and f'action="/jobs/{jobs.running}/cancel"' in admin.text


def test_a_workflow_steps_page_links_its_parents_and_children(client: TestClient, q: JobQueue) -> None:
    wf = burrow.Workflow("shown")
    a, b = wf.add("wf.a", {}), wf.add("wf.b", {})
    c = wf.add("wf.c", {}, after=[a, b])
    ids = wf.enqueue(q)
    page = client.get(f"/jobs/{ids[c]}").text
    links = ", ".join(f'<a href="/jobs/{ids[s]}">{ids[s]}</a>' for s in (a, b))
    assert f"<dt>parents</dt><dd>{links}</dd>" in page
    assert "<dt>children</dt><dd>—</dd>" in page and "<dt>workflow name</dt><dd>shown</dd>" in page
    assert 'class="badge' in page and "waiting" in page
    assert f'<a href="/jobs/{ids[c]}">{ids[c]}</a>' in client.get(f"/jobs/{ids[a]}").text


def test_the_overview_names_due_jobs_no_supervisor_handles(client: TestClient, q: JobQueue) -> None:
    assert 'class="unhandled"' not in client.get("/").text
    q.backend.register_process("web:3:supervisor:c", "web", 3, "supervisor")
    q.backend.register_tasks("web:3:supervisor:c", {"math.add": "{}"})
    q.enqueue_many("math.ad", [{"a": 1}, {"a": 2}])
    q.enqueue("math.add", {"a": 1})
    page = client.get("/parts/overview").text
    assert 'role="alert"' in page and "Due jobs that no live supervisor handles" in page
    assert '<a href="/jobs?task=math.ad&amp;state=queued">math.ad</a> (2)' in page
    assert ">math.add<" not in page.split("</section>")[0]


@pytest.mark.parametrize("path", ["/jobs/999999", "/jobs/abc", "/jobs/99999999999999999999999", "/nothing-here"])
def test_an_unknown_job_or_path_is_a_404_page(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "404 · Not found" in response.text
    if path == "/jobs/999999":
        assert "No job with id 999999." in response.text


@pytest.mark.parametrize(
    "query", ["state=bogus", "before=12x", "before=%C2%B2", "before=99999999999999999999", "task=no%20spaces%20allowed"]
)
def test_a_bad_filter_is_a_400_page(client: TestClient, query: str) -> None:
    response = client.get(f"/jobs?{query}")
    assert response.status_code == 400
    assert "400 · Bad request" in response.text


def test_probes_say_ok_while_the_database_answers(client: TestClient) -> None:
    assert (client.get("/healthz").status_code, client.get("/healthz").text) == (200, "ok")
    assert (client.get("/readyz").status_code, client.get("/readyz").text) == (200, "ok")


def test_readyz_is_503_with_a_one_line_reason_when_the_database_is_unreachable() -> None:
    dsn = "postgresql://postgres:s3cret-pw@127.0.0.1:1/test"
    q = JobQueue(backend_for(dsn))
    try:
        with TestClient(create_app(q)) as c:
            assert c.get("/healthz").text == "ok"
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.text.startswith("database unavailable: ") and "\n" not in ready.text
            page = c.get("/")
            assert page.status_code == 503
            assert "Database unavailable" in page.text
            assert "s3cret" not in ready.text + page.text
    finally:
        q.close()


def test_the_dsn_password_appears_on_no_page(postgres_schema: str) -> None:
    """PostgreSQL here trusts local connections, so a DSN with a password still connects."""
    dsn = sa.engine.make_url(POSTGRES_DSN).set(password="s3cret-pw").render_as_string(hide_password=False)
    q = burrow.connect(dsn, schema=postgres_schema)
    try:
        jobs = populate(q)
        with TestClient(create_app(q)) as c:
            paths = ["/", "/jobs", f"/jobs/{jobs.failed[0]}", f"/jobs/{jobs.running}", "/parts/overview", "/readyz", "/x"]
            for path in paths:
                assert "s3cret" not in c.get(path).text, path
    finally:
        q.close()


# -- auth -----------------------------------------------------------------------


def test_the_auth_hook_guards_everything_but_the_probes(q: JobQueue) -> None:
    def staff_only(request: Request) -> bool:
        return request.headers.get("x-staff") == "yes"

    with TestClient(create_app(q, auth=staff_only)) as c:
        assert c.get("/").status_code == 403
        assert c.get("/static/admin.css").status_code == 403
        assert c.get("/", headers={"x-staff": "yes"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_an_async_auth_hook_may_answer_with_its_own_response(q: JobQueue) -> None:
    async def login_first(request: Request) -> bool | Response:
        return True if "session" in request.cookies else RedirectResponse("/login", 303)

    parent = Starlette(routes=[Mount("/admin", create_app(q, auth=login_first))])
    with TestClient(parent, follow_redirects=False) as c:
        assert c.get("/admin/jobs").headers["location"] == "/login"
        c.cookies.set("session", "1")
        assert c.get("/admin/jobs").status_code == 200


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_takes_the_password_with_any_user_name(q: JobQueue) -> None:
    with TestClient(create_app(q, auth=basic_auth("correct horse"))) as c:
        refused = c.get("/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Basic realm="burrow admin"')
        assert c.get("/", headers=basic("admin", "wrong")).status_code == 401
        assert c.get("/", headers={"authorization": "Basic %%%"}).status_code == 401
        assert c.get("/", headers={"authorization": "Bearer correct horse"}).status_code == 401
        assert c.get("/", headers=basic("admin", "correct horse")).status_code == 200
        assert c.get("/", headers=basic("anyone", "correct horse")).status_code == 200
        assert c.get("/healthz").status_code == 200


# -- pieces ---------------------------------------------------------------------


def test_stored_bytes_are_shown_as_json_text_or_hex() -> None:
    assert show_bytes(b'{"a":[1,2]}').text == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert show_bytes(b"<b>plain</b>").kind == "text"
    binary = show_bytes(b"\x00\xffabc")
    assert (binary.kind, binary.text) == ("binary", "00000000  " + "00 ff 61 62 63".ljust(47) + "  ..abc")
    big = show_bytes(b'"' + b"x" * 70_000 + b'"')
    assert big.cut and len(big.text) == 64 * 1024


def test_the_chart_has_round_axes_and_says_when_it_is_empty() -> None:
    assert [axis_top(n) for n in (0, 1, 2, 3, 5, 7, 9, 11, 45, 61, 999, 1001)] == [2, 2, 2, 4, 5, 8, 10, 20, 50, 80, 1000, 2000]
    import datetime as dt

    start = dt.datetime(2030, 1, 1, 11, 59, tzinfo=dt.timezone.utc)
    points = [ThroughputPoint(start + dt.timedelta(minutes=i)) for i in range(60)]
    assert "no job finished in this hour" in throughput_chart(points)
    points[3] = ThroughputPoint(points[3].minute, succeeded=3, failed=1)
    svg = throughput_chart(points)
    assert svg.count('class="bar succeeded"') == 1 and svg.count('class="bar failed"') == 1
    assert "12:02 UTC: 3 succeeded, 0 retried, 1 failed" in svg
    assert ">12:00<" in svg and ">12:45<" in svg


def test_import_burrow_does_not_pull_in_the_admin() -> None:
    code = (
        "import sys, burrow, burrow.queue, burrow.cli, burrow.supervisor.supervisor; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'jinja2', 'uvicorn') "
        "or m.startswith('burrow.admin')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
