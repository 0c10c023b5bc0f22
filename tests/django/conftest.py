"""The Django test project (tests/django/project), set up once per test process:
a SQLite file and a PostgreSQL database of this run's own, both migrated with
`manage.py migrate`, and `manage.py burrow_worker` started in a subprocess for
the tests that need one (bounded waits everywhere)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

pytest.importorskip("django")

PROJECT = Path(__file__).parent / "project"
POSTGRES_DSN = os.environ.get("BURROW_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
ALIASES = ["default", "pg"]  # the TASKS backends on SQLite and on PostgreSQL
WORKER_START_S = 60.0


def _setup() -> tuple[str, Path]:
    """Create this process's databases and set Django up on them, once."""
    directory = Path(tempfile.mkdtemp(prefix="burrow-django-"))
    name = f"burrow_django_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    pg_dsn = sa.engine.make_url(POSTGRES_DSN).set(database=name).render_as_string(hide_password=False)
    os.environ["BURROW_DJANGO_SQLITE"] = str(directory / "jobs.db")
    os.environ["BURROW_DJANGO_PG_DSN"] = pg_dsn
    os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    os.environ["BURROW_DJANGO_SIGNALS_DIR"] = str(directory)
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    import django
    from django.core.management import call_command

    django.setup()
    for alias in ALIASES:
        call_command("migrate", database=alias, verbosity=0)
    return name, directory


@pytest.fixture(scope="session")
def django_project() -> Iterator[Path]:
    name, directory = _setup()
    yield directory
    from django.db import connections

    connections.close_all()
    from burrow.django import databases

    for backend in databases._backends.values():
        backend.close()
    with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def child_env() -> dict[str, str]:
    """The environment of a manage.py child: this process's databases and burrow."""
    root = str(Path(__file__).parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


class Worker:
    """`manage.py burrow_worker` in a subprocess, stopped with SIGTERM."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="burrow-django-worker-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "burrow_worker", *args],
            cwd=PROJECT, env={**child_env(), **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"the worker did not stop within {timeout}s:\n{self.output()}") from None


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is true (returned), for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


@pytest.fixture(scope="module", params=ALIASES)
def worker(request: pytest.FixtureRequest, django_project: Path) -> Iterator[tuple[str, Worker]]:
    """A worker serving one backend (module-wide: starting Django takes a while)."""
    alias = request.param
    config = django_project / f"jobs-{alias}.toml"
    # Short backoffs, so that retried tasks finish within the tests' waits.
    config.write_text('[retry]\nbase = "20ms"\nmax = "100ms"\n\n[supervisor]\nworkers = 1\n')
    running = Worker("--backend", alias, "--workers", "2", "-c", str(config),
                     env={"BURROW_DJANGO_SIGNALS": str(django_project / f"{alias}.txt")})
    yield alias, running
    code = running.stop()
    assert code == 0, running.output()
