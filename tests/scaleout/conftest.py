"""Fixtures for the scale-out tests: a PgBouncer in transaction mode, and hosts.

They skip only where the machine refuses (no pgbouncer, no network namespaces), with
the reason; under CI=true they fail instead (tests/scaleout/infra.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_DSN
from tests.scaleout.infra import Hosts, PgBouncer, Refused, in_ci
from tests.supervisor.conftest import launcher  # noqa: F401 - the supervisors started here are cleaned up alike


def refused(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: these tests must run in CI)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pgbouncer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    try:
        bouncer = PgBouncer(None, POSTGRES_DSN)
    except Refused as exc:
        refused(f"PgBouncer cannot run here: {exc}")
    yield bouncer
    bouncer.stop()


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Callable[[int], tuple[Hosts, PgBouncer]]]:
    """``hosts(k)``: k namespaces and a PgBouncer on their links' root ends; all removed after."""
    made: list[Hosts] = []
    bouncers: list[PgBouncer] = []

    def make(k: int) -> tuple[Hosts, PgBouncer]:
        try:
            group = Hosts(k)
        except Refused as exc:
            refused(f"network namespaces refused: {exc}")
        made.append(group)
        bouncer = PgBouncer(None, POSTGRES_DSN, listen=[group.outside(i) for i in range(k)])
        bouncers.append(bouncer)
        return group, bouncer

    try:
        yield make
    finally:
        for bouncer in bouncers:
            bouncer.stop()
        for group in made:
            group.close()
