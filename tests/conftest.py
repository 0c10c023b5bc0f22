"""Fixtures: a real SQLite file and a real PostgreSQL schema per test.

PostgreSQL tests never skip: an unreachable server fails the run, so CI cannot go
green without having tested the production backend.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog

import burrow
from burrow.queue import JobQueue

POSTGRES_DSN = os.environ.get("BURROW_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


@dataclass
class Database:
    """Where one test's jobs live: a DSN and, on PostgreSQL, a private schema."""

    kind: str
    dsn: str
    schema: str | None

    def connect(self, **kwargs: Any) -> JobQueue:
        return burrow.connect(self.dsn, schema=self.schema, **kwargs)

    @property
    def env(self) -> dict[str, str]:
        """For child processes: how to reach the same database."""
        env = {"BURROW_DATABASE_DSN": self.dsn}
        if self.schema:
            env["BURROW_DATABASE_SCHEMA"] = self.schema
        return env


def _postgres_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_DSN} is unreachable ({exc}); set BURROW_TEST_POSTGRES_DSN", pytrace=False)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[psycopg.Connection[Any]]:
    conn = _postgres_admin()
    yield conn
    conn.close()


@pytest.fixture
def postgres_schema(postgres_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh schema, dropped afterwards; and a check that nothing leaked into public."""
    schema = f"burrow_test_{secrets.token_hex(6)}"
    yield schema
    postgres_admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    leaked = postgres_admin.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE 'burrow%'"
    ).fetchall()
    assert not leaked, f"burrow tables leaked into the public schema: {leaked}"


def make_database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Database:
    if kind == "sqlite":
        return Database("sqlite", f"sqlite:///{tmp_path / 'jobs.db'}", None)
    schema = request.getfixturevalue("postgres_schema")
    return Database("postgresql", POSTGRES_DSN, schema)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """Each test that takes this runs once per backend."""
    return make_database(request.param, tmp_path, request)


@pytest.fixture
def queue(database: Database) -> Iterator[JobQueue]:
    q = database.connect()
    yield q
    q.close()


class FakeClock:
    """A settable clock for the state machine and time-dependent tests."""

    def __init__(self) -> None:
        self.now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """Keep structlog's console renderer out of test output; tests use capture_logs."""
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


ConnectFn = Callable[..., JobQueue]


def pytest_configure(config: pytest.Config) -> None:
    # When a property fails, Hypothesis writes a patch with libcst, whose import
    # warns; with filterwarnings=error that would bury the failure in an INTERNALERROR.
    config.addinivalue_line("filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
