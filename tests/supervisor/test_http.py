"""The supervisor's /metrics, /healthz and /readyz, its process rows and its retention."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from burrow.job import JobState
from tests.conftest import POSTGRES_DSN, Database
from tests.proxy import proxy_to
from tests.supervisor.app import Gate, Numbers, announced, block_task, square_task
from tests.supervisor.helpers import Launcher, run_cli, write_config

JOBS = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_sections(config: Path, text: str) -> Path:
    config.write_text(config.read_text() + "\n" + text + "\n")
    return config


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_after_a_thousand_jobs(database: Database, launcher: Launcher, gates: Path, tmp_path: Path) -> None:
    port = _free_port()
    config = _with_sections(write_config(tmp_path / "jobs.toml", database), f'[http]\nbind = "127.0.0.1:{port}"')
    with database.connect() as q:
        ids = square_task.enqueue_many(q, [Numbers(i, 1) for i in range(JOBS)])
        supervisor = launcher.start(config)
        supervisor.wait_ready()
        supervisor.wait(lambda: q.counts()[JobState.SUCCEEDED] == JOBS, 60, "every job to succeed")
        assert _get(port, "/healthz") == (200, "ok: running\n")
        assert _get(port, "/readyz") == (200, "ready\n")
        assert _get(port, "/nope")[0] == 404

        # A worker killed mid-job: a retry, and a worker exit by signal.
        blocked = block_task.enqueue(q, Gate(str(gates), "m"))
        pid = supervisor.wait(lambda: announced(gates, "m"), 15, "the gated job to run")
        os.kill(pid, signal.SIGKILL)
        supervisor.wait(lambda: q.job(blocked).attempts == 2 or q.job(blocked).state is JobState.QUEUED, 15, "a retry")

        def scraped() -> dict[Any, float] | None:
            samples = _samples(_get(port, "/metrics")[1])
            done = samples.get(("burrow_jobs_finished_total", (("outcome", "succeeded"), ("task", "sv.square"))))
            retried = samples.get(("burrow_jobs_finished_total", (("outcome", "retried"), ("task", "sv.block"))))
            # The gauges are refreshed each heartbeat: wait for one taken after the last job ended.
            queued = samples.get(("burrow_jobs_queued", (("task", "sv.square"),)))
            running = samples.get(("burrow_jobs_running", (("task", "sv.square"),)))
            return samples if done == JOBS and retried == 1 and queued == 0 and running == 0 else None

        samples = supervisor.wait(scraped, 10, "the counters to catch up")
        assert samples["burrow_job_duration_seconds_count", (("task", "sv.square"),)] == JOBS
        assert samples["burrow_worker_exits_total", (("reason", "signal"),)] == 1
        assert samples["burrow_workers", ()] in (1.0, 2.0)  # the killed one may be replaced already
        assert samples["burrow_claim_batch_size_count", ()] >= 1
        assert samples["burrow_claim_batch_size_sum", ()] >= JOBS

        # The supervisor and its workers are registered processes, none stale.
        processes = q.processes()
        roles = sorted(p.role for p in processes)
        assert roles[-1] == "worker" and roles.count("supervisor") == 1, roles
        assert not any(p.stale for p in processes)
        assert {p.pid for p in processes if p.role == "worker"} <= supervisor.worker_pids()
        (gates / "m.go").touch()
        supervisor.wait(lambda: q.job(blocked).state is JobState.SUCCEEDED, 15, "the gated job")
        supervisor.send(signal.SIGTERM)
        assert supervisor.wait_exit() == 0
        assert q.processes() == []  # every row removed on the way out
        assert sum(p.succeeded for p in q.throughput(minutes=5)) == JOBS + 1
    assert len(ids) == JOBS


def test_readyz_follows_the_database(postgres_schema: str, launcher: Launcher, tmp_path: Path) -> None:
    host, port = "127.0.0.1", 5432
    assert f"{host}:{port}" in POSTGRES_DSN
    http_port = _free_port()
    with proxy_to((host, port)) as proxy:
        database = Database("postgresql", proxy.dsn(POSTGRES_DSN), postgres_schema)
        config = _with_sections(
            write_config(tmp_path / "jobs.toml", database, lease_timeout="5s"), f'[http]\nbind = "127.0.0.1:{http_port}"'
        )
        supervisor = launcher.start(config)
        supervisor.wait_ready()
        supervisor.wait(lambda: _get(http_port, "/readyz")[0] == 200, 5, "ready")
        proxy.cut()
        status, body = supervisor.wait(
            lambda: (r := _get(http_port, "/readyz"))[0] == 503 and r, 10, "not ready while the database is away"
        )
        assert body.startswith("not ready: no database heartbeat within 0.6s")
        assert _get(http_port, "/healthz")[0] == 200  # the loop still turns
        proxy.restore()
        supervisor.wait(lambda: _get(http_port, "/readyz")[0] == 200, 15, "ready again")
        supervisor.send(signal.SIGTERM)
        assert supervisor.wait_exit() == 0


def test_a_taken_http_port_is_one_line_and_exit_2(database: Database, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = _with_sections(write_config(tmp_path / "jobs.toml", database), f'[http]\nbind = "127.0.0.1:{port}"')
        done = run_cli([sys.executable, "-m", "burrow.supervisor", "-c", str(config)], timeout=30)
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("burrow:")]
    assert f"[http] bind 127.0.0.1:{port}: Address already in use" in line


OLD_JOBS = 6_000


def _old_finished(database: Database, n: int) -> None:
    sql = (
        "INSERT INTO burrow_jobs (task, priority, state, payload, attempts, max_retries, run_at, created_at, finished_at)"
        " SELECT 'old.task', 0, 'succeeded', {payload}, 1, 3, {old}, {old}, {old} FROM {series}"
    )
    if database.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(database.dsn.removeprefix("sqlite:///"))) as conn:
            series = f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s)"
            conn.execute(sql.format(payload="X'7B7D'", old="'2020-01-01 00:00:00.000000'", series=series))
            conn.commit()
        return
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{database.schema}"')
        conn.execute(sql.format(payload="'\\x7b7d'::bytea", old="'2020-01-01'::timestamptz", series=f"generate_series(1, {n})"))


def test_retention_prunes_old_finished_jobs_in_small_turns(database: Database, launcher: Launcher, tmp_path: Path) -> None:
    config = _with_sections(write_config(tmp_path / "jobs.toml", database), '[retention]\nsucceeded = "1d"\nfailed = "off"')
    with database.connect() as q:
        _old_finished(database, OLD_JOBS)
        kept = q.enqueue("old.task", {})  # queued: never pruned
        supervisor = launcher.start(config)
        supervisor.wait_ready()
        # The log line of a turn comes after its commit: wait for the lines, not the table.
        supervisor.wait(
            lambda: sum(e["deleted"] for e in supervisor.events("jobs_pruned")) >= OLD_JOBS, 30, "the old jobs to be pruned"
        )
        assert q.counts()[JobState.SUCCEEDED] == 0
        pruned = supervisor.events("jobs_pruned")
        assert sum(e["deleted"] for e in pruned) == OLD_JOBS
        assert max(e["deleted"] for e in pruned) <= 1000  # a turn of the loop: one transaction of 1,000
        assert q.job(kept).state is JobState.QUEUED
        since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
        assert all(e["deleted"] > 0 for e in pruned) and since < dt.datetime.now(dt.timezone.utc)
