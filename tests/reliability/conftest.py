"""Fixtures of the reliability battery: the supervisor launcher (reused), a private PostgreSQL.

Figures go to stdout (``pytest -s``) and, as JSON lines, to the file named by
``BURROW_RELIABILITY_REPORT``. Full size, from the repository root:

    BURROW_RELIABILITY=full BURROW_RELIABILITY_REPORT=/tmp/reliability.jsonl \\
        python -m pytest tests/reliability -p no:cacheprovider -s
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Database
from tests.helpers import wait_until
from tests.reliability.helpers import PG_BIN, RUNUSER, PrivateCluster, accepting, free_port
from tests.supervisor.conftest import launcher  # noqa: F401  (the supervisor tests' fixture, reused)


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    """initdb + pg_ctl as the postgres user, trust auth, its own port and socket directory."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 server binaries not found in {PG_BIN}", pytrace=False)
    directory = Path(tempfile.mkdtemp(prefix="burrow-pg-"))
    shutil.chown(directory, "postgres")
    cluster = PrivateCluster(directory, free_port())
    subprocess.run(
        [RUNUSER, "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(cluster.data), "-A", "trust",
         "-U", "postgres", "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.running():
            try:
                cluster.stop()
            except subprocess.SubprocessError:
                pass
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def private_database(private_cluster: PrivateCluster) -> Iterator[Any]:
    """A schema in the private cluster, as the ``database`` fixture would give."""
    if not private_cluster.running():
        private_cluster.start()
    schema = f"rl_{os.urandom(5).hex()}"
    yield Database("postgresql", private_cluster.dsn, schema)
    if not private_cluster.running():
        private_cluster.start()
    wait_until(accepting(private_cluster), timeout=30, what="the private cluster to accept connections")
    with private_cluster.admin() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


