"""Every app under examples/ runs as its README says: the supervisor started in the
app's directory, its producer script run beside it, on SQLite as written and on
PostgreSQL through BURROW_DATABASE_DSN. A copy of each app runs in the test's own
directory, so no database file is left in the checkout."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import burrow
from burrow.job import JobState
from tests.conftest import Database
from tests.helpers import wait_until

EXAMPLES = Path(__file__).parents[2] / "examples"


def _copy(name: str, tmp_path: Path) -> Path:
    app = tmp_path / name
    shutil.copytree(EXAMPLES / name, app, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    return app


def _env(database: Database) -> dict[str, str]:
    """The examples' own config names SQLite; PostgreSQL comes from the variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    return env | (database.env if database.kind == "postgresql" else {})


@contextlib.contextmanager
def _supervisor(app: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m burrow.supervisor -c conf/jobs.toml`, as the README types it; SIGTERM drains it."""
    log = (app / "supervisor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "burrow.supervisor", "-c", "conf/jobs.toml"],
        cwd=app, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (app / "supervisor.log").read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


def _run(app: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=app, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_first_app_runs(database: Database, tmp_path: Path) -> None:
    app = _copy("first_app", tmp_path)
    env = _env(database)
    with _supervisor(app, env):
        out = _run(app, env, "enqueue_orders.py")
    assert out.splitlines() == [
        "enqueued [1, 2, 3]",
        *(f"receipt for order {i} sent to customer{i}@example.com" for i in (1, 2, 3)),
    ]
    if database.kind == "sqlite":
        assert (app / "conf" / "shop.db").exists()  # next to the config, wherever one starts


def test_first_app_tests_pass(tmp_path: Path) -> None:
    app = _copy("first_app", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    out = _run(app, env, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py")
    assert "2 passed" in out


def test_pools_example_runs(database: Database, tmp_path: Path) -> None:
    app = _copy("pools", tmp_path)
    env = _env(database)
    with _supervisor(app, env):
        assert _run(app, env, "send_one.py", "carol@example.com") == "sent 'hello' to carol@example.com\n"
        q = database.connect() if database.kind == "postgresql" else burrow.connect(config=str(app / "conf" / "jobs.toml"))
        try:
            # The config's 2-second digest fans out one mail per subscriber, in the mail pool.
            def digest_mails() -> list[str]:
                done = q.jobs(task="newsletter.send", state=JobState.SUCCEEDED, limit=50)
                return [text for j in done if "2-second digest" in (text := str(q.result(j.id)))]

            assert len(wait_until(digest_mails, timeout=20, what="a digest's mails to be sent")) >= 2
            roles = {p.role for p in q.processes()}
            assert {"worker:mail", "worker:reports"} <= roles
        finally:
            q.close()


def test_the_readme_shows_the_first_app_as_it_is() -> None:
    """Each file the README's "Your first app" shows is that file of examples/first_app."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme[readme.index("## Your first app") : readme.index("## Install")]
    shown = dict(re.findall(r"\*\*`([^`]+)`\*\*\n\n```\w+\n(.*?)```", section, re.S))
    assert set(shown) == {"shop/tasks.py", "conf/jobs.toml", "enqueue_orders.py", "test_shop.py"}
    for name, text in shown.items():
        assert text == (EXAMPLES / "first_app" / name).read_text(), f"README's {name} differs from examples/first_app/{name}"
