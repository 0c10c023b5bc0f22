"""Fixtures for the web admin's tests: a queue with jobs of every kind, the admin
served by uvicorn on a free loopback port, and one headless Chromium for the module.

The browser is Debian's chromium driven by Playwright (never `playwright install`:
there is no browser download here); the flags keep it off the network.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright
from starlette.types import ASGIApp

import burrow
from burrow.backends.records import ClaimRequest, new_owner
from burrow.queue import JobQueue
from burrow.backends.records import ThroughputRow
from tests.conftest import Database
from tests.helpers import wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
DOCS = Path(__file__).resolve().parents[2] / "docs"
XSS = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"


@dataclass(frozen=True)
class Jobs:
    """The ids of the jobs a test acts on."""

    failed: list[int]
    retried_then_failed: int
    queued: list[int]
    succeeded: list[int]
    running: int
    xss: int


class SmtpRefused(ConnectionRefusedError):
    pass


def send_email(payload: bytes) -> None:
    raise SmtpRefused("smtp.mail.internal:587: connection refused")


def charge_card(payload: bytes) -> None:
    raise TimeoutError("payment gateway did not answer in 10s")


def moderate(payload: bytes) -> None:
    raise ValueError("rejected: <b>markup</b> <script>window.pwned = 3</script>")


def populate(q: JobQueue) -> Jobs:
    """Jobs in every state, a history of retries, a supervisor and an hour of throughput:
    what an operator's admin shows on a normal day."""
    q.handle("images.resize", lambda payload: None)
    q.handle("emails.send", send_email, burrow.with_max_retries(0))
    q.handle("billing.charge", charge_card, burrow.with_max_retries(2), burrow.with_backoff(0, 0))
    q.handle("comments.moderate", moderate, burrow.with_max_retries(0))
    succeeded = q.enqueue_many("images.resize", [{"path": f"uploads/{n}.png", "width": 640} for n in range(30)])
    failed = q.enqueue_many("emails.send", [{"to": f"user{n}@example.com", "template": "welcome"} for n in range(4)])
    charge = q.enqueue("billing.charge", {"invoice": "INV-2041", "amount_cents": 4900})
    xss = q.enqueue("comments.moderate", {"comment": XSS})
    q.drain()
    queued = q.enqueue_many("reports.build", [{"report": "monthly", "month": m} for m in range(1, 7)], priority=5)
    q.cancel(queued.pop())
    owner = new_owner("worker")
    [running] = q.backend.claim(ClaimRequest(["reports.build"], 1, owner, 300))
    queued.remove(running.id)
    q.backend.register_process(new_owner("supervisor"), "worker-a", 4242, "supervisor")
    now = q.backend.now().replace(second=0, microsecond=0)
    q.backend.add_stats(
        [
            ThroughputRow(now - dt.timedelta(minutes=m), "images.resize", 20 + (m * 7) % 23, (m % 9 == 0) * 2, (m % 5 == 0))
            for m in range(1, 60)
        ]
    )
    return Jobs(failed, charge, queued, succeeded, running.id, xss)


@pytest.fixture
def admin_queue(database: Database) -> Iterator[JobQueue]:
    q = database.connect()
    yield q
    q.close()


@pytest.fixture
def jobs(admin_queue: JobQueue) -> Jobs:
    return populate(admin_queue)


@contextlib.contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=10, what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for a test module. Not for the session: Playwright's sync API runs an
    event loop on the main thread while it lives, and a later test's asyncio.run (an
    async handler in a drain) would find it running."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies) whose console errors fail the test: a
    Content-Security-Policy violation or a script error shows up there."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    # A refresh that fired after the test stopped its server is no fault of the page.
    errors = [e for e in errors if "ERR_CONNECTION_REFUSED" not in e]
    assert not errors, f"browser console errors: {errors}"
