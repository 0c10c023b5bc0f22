"""burrow through PgBouncer in transaction mode: producers, supervisors, the CLI, the admin.

Transaction pooling hands each transaction whichever server connection is free, so
nothing may rest on the session: no prepared statement (psycopg prepares after five
runs), no session setting, no session advisory lock, no LISTEN (README, "Scaling
out"). Every test here goes through the ``pgbouncer`` fixture's real PgBouncer.
"""

from __future__ import annotations

import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import burrow
from burrow.backends.postgres import PostgresBackend
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind
from tests.conftest import POSTGRES_DSN
from tests.helpers import wait_until
from tests.scaleout.infra import PgBouncer
from tests.supervisor.app import Mark, Numbers, record_task, square_task
from tests.supervisor.helpers import Launcher, run_cli, write_config


class Through:
    """The test's schema, reached through PgBouncer (and, for LISTEN, maybe directly)."""

    def __init__(self, dsn: str, schema: str, listen_dsn: str | None = None) -> None:
        self.kind, self.dsn, self.schema, self.listen_dsn = "postgresql", dsn, schema, listen_dsn


def pooled_config(path: Path, through: Through, **supervisor: object) -> Path:
    write_config(path, through, **supervisor)
    extra = "pooled = true\n" + (f'listen_dsn = "{through.listen_dsn}"\n' if through.listen_dsn else "")
    path.write_text(path.read_text().replace("[supervisor]\n", f"{extra}\n[supervisor]\n", 1))
    return path


def test_producers_and_readers_through_pgbouncer(pgbouncer: PgBouncer, postgres_schema: str, tmp_path: Path) -> None:
    """Enqueues of every shape from several threads (each statement far more than five
    times, over the pooler's shared server connections), an in-process drain (claims and
    finishes) and reads: no error, every job there once and run once."""
    q = burrow.connect(pgbouncer.dsn(), schema=postgres_schema, pooled=True)
    ledger = str(tmp_path / "ledger")
    try:
        record_task.register(q)
        backend = q.backend
        assert isinstance(backend, PostgresBackend) and backend.pooled and not backend.listens

        def produce(n: int) -> list[int]:
            ids = [record_task.enqueue(q, Mark(ledger, f"{n}-{i}")) for i in range(20)]
            ids += record_task.enqueue_many(q, [Mark(ledger, f"{n}-many-{i}") for i in range(30)])
            ids.append(record_task.enqueue(q, Mark(ledger, f"{n}-u"), unique_key=f"k{n}"))
            return ids

        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = [i for batch in pool.map(produce, range(8)) for i in batch]
        assert len(ids) == len(set(ids)) == 8 * 51
        assert q.counts()[burrow.JobState.QUEUED] == len(ids)
        assert q.wait_for_jobs(0.05)  # polls through the pooler (no LISTEN), and finds them
        assert q.drain() == len(ids)
        assert q.counts()[burrow.JobState.SUCCEEDED] == len(ids)
        assert len(Path(ledger).read_text().splitlines()) == len(ids)
        assert q.job(ids[0]).state is burrow.JobState.SUCCEEDED and q.history(ids[0]) is not None
    finally:
        q.close()


def test_the_pooler_is_found_out_when_it_refuses_the_options_parameter(
    pgbouncer: PgBouncer, postgres_schema: str
) -> None:
    """Without pooled = true: PgBouncer refuses libpq's options (the statement timeout);
    burrow connects again without it, treats the DSN as pooled and says so once."""
    with capture_logs() as logs:
        q = burrow.connect(pgbouncer.dsn(), schema=postgres_schema)
    try:
        assert isinstance(q.backend, PostgresBackend) and q.backend.pooled
        assert [e["event"] for e in logs].count("pooler_found") == 1
        square_task.register(q)
        assert square_task.enqueue(q, Numbers(2, 1)) > 0
    finally:
        q.close()


def test_nothing_is_prepared_through_a_pooler_that_drops_the_options_parameter(postgres_schema: str) -> None:
    """A PgBouncer told to ignore libpq's options, and no pooled = true: burrow cannot
    tell it is pooled, but the session does not show the plan cache mode its options
    set, so the hot path prepares nothing (a prepared statement would be missing on
    the next transaction's server connection), and its claims and finishes work."""
    bouncer = PgBouncer(None, POSTGRES_DSN, ignore_startup_parameters=("extra_float_digits", "options"))
    q = burrow.connect(bouncer.dsn(), schema=postgres_schema)
    try:
        backend = q.backend
        assert isinstance(backend, PostgresBackend) and not backend.pooled
        square_task.register(q)
        square_task.enqueue_many(q, [Numbers(i, 0) for i in range(40)])
        for _ in range(20):  # each hot-path statement far more than five times
            jobs = backend.claim(ClaimRequest(["sv.square"], 2, "owner", 30.0))
            assert backend.finish([Outcome(j.id, j.owner, j.attempt, OutcomeKind.SUCCEEDED) for j in jobs]) == []
        mode = backend._on_held("mode", lambda c: (c.prepare_threshold, c.execute("SHOW plan_cache_mode").fetchone()[0]))
        assert mode == (None, "auto")
        assert q.counts()[burrow.JobState.SUCCEEDED] == 40
    finally:
        q.close()
        bouncer.stop()


def test_async_producer_through_pgbouncer(pgbouncer: PgBouncer, postgres_schema: str) -> None:
    async def main() -> list[int]:
        aq = await burrow.aconnect(pgbouncer.dsn(), schema=postgres_schema, pooled=True, pool_size=4)
        async with aq:
            return list(await asyncio.gather(*(aq.enqueue("sv.square", Numbers(i, 0)) for i in range(40))))

    ids = asyncio.run(main())
    assert len(set(ids)) == 40


@pytest.mark.parametrize("listen", ["poll", "listen_dsn"])
def test_two_supervisors_drain_through_pgbouncer(
    pgbouncer: PgBouncer, postgres_schema: str, launcher: Launcher, tmp_path: Path, listen: str
) -> None:
    """Two supervisors through PgBouncer, polling or woken on a direct LISTEN connection:
    every job runs once, nothing fails, nothing is logged as an error."""
    through = Through(pgbouncer.dsn(), postgres_schema, POSTGRES_DSN if listen == "listen_dsn" else None)
    config = pooled_config(tmp_path / "jobs.toml", through)
    q = burrow.connect(through.dsn, schema=postgres_schema, pooled=True)
    ledger = tmp_path / "ledger"
    try:
        record_task.register(q)
        supervisors = [launcher.start(config) for _ in range(2)]
        for s in supervisors:
            s.wait_ready()
        ids = record_task.enqueue_many(q, [Mark(str(ledger), str(i)) for i in range(600)])
        wait_until(
            lambda: q.counts()[burrow.JobState.SUCCEEDED] == len(ids), timeout=60, what="600 jobs done through PgBouncer"
        )
        keys = [line.split()[0] for line in ledger.read_text().splitlines()]
        assert sorted(keys, key=int) == [str(i) for i in range(600)], "a job ran twice or never"
        for s in supervisors:
            polling = s.events("polling_for_jobs")
            assert len(polling) == (1 if listen == "poll" else 0)
            assert not [r for r in s.lines() if r.get("level") in ("error", "warning")], s.tail()
    finally:
        q.close()


def test_cli_and_admin_through_pgbouncer(pgbouncer: PgBouncer, postgres_schema: str, tmp_path: Path) -> None:
    through = Through(pgbouncer.dsn(), postgres_schema)
    config = pooled_config(tmp_path / "jobs.toml", through)
    cli = [sys.executable, "-m", "burrow.cli"]
    migrated = run_cli([*cli, "migrate", "-c", str(config)], timeout=30)
    assert migrated.returncode == 0, migrated.stderr
    enqueued = run_cli([*cli, "enqueue", "sv.square", '{"a": 3, "b": 1}', "-c", str(config)], timeout=30)
    assert enqueued.returncode == 0, enqueued.stderr
    plan = run_cli([sys.executable, "-m", "burrow.supervisor", "-c", str(config), "--check"], timeout=30)
    assert plan.returncode == 0, plan.stderr
    assert "pooled:   yes (PgBouncer, transaction mode); no listen_dsn: idle workers poll every 0.02s" in plan.stdout
    listed = json.loads(run_cli([*cli, "jobs", "list", "--json", "-c", str(config)], timeout=30).stdout)
    assert [job["task"] for job in listed] == ["sv.square"]
    for command in (["status"], ["jobs", "show", str(listed[0]["id"])], ["jobs", "cancel", str(listed[0]["id"])]):
        done = run_cli([*cli, *command, "-c", str(config)], timeout=30, env={"COLUMNS": "200"})
        assert (done.returncode, done.stderr) == (0, ""), (command, done.stderr)

    from starlette.testclient import TestClient

    from burrow.admin import create_app
    from burrow.admin.server import connect as admin_connect
    from burrow.config import load_config

    q = admin_connect(load_config(config))
    try:
        assert isinstance(q.backend, PostgresBackend) and q.backend.pooled
        with TestClient(create_app(q)) as client:
            for path in ("/", "/jobs", f"/jobs/{listed[0]['id']}"):
                page = client.get(path)
                assert page.status_code == 200, (path, page.text[:300])
    finally:
        q.close()
