"""The queue's contract (docs/architecture.md, "How a job flows" and "Storage"), on SQLite and on PostgreSQL.

The contract suite is the test_*.py files beside this one, split by subject (API,
payloads, enqueue, claim and fence, retries, results, migrations); shared payload
types and helpers live in helpers.py. Every test in it (but those in test_sqlite.py)
takes the ``database`` or ``queue`` fixture and so runs once per backend, against a
real database file or a real server. Time-dependent behaviour runs on the injected
``FakeClock`` (the ``clocked`` queue below); nothing sleeps to synchronise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from burrow.queue import JobQueue
from tests.conftest import Database, FakeClock


@pytest.fixture
def clocked(database: Database, clock: FakeClock) -> Iterator[JobQueue]:
    """A queue whose every timestamp comes from ``clock``."""
    q = database.connect(clock=clock)
    yield q
    q.close()
