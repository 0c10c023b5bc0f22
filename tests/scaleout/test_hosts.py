"""Several hosts on one PostgreSQL, simulated with network namespaces (tests/scaleout/infra.py).

Each host runs a supervisor with a host name of its own and reaches the database over
its own veth link, through PgBouncer in transaction mode (LISTEN on a session-mode
database). The measured runs (k = 1, 2, 4 hosts; a vanished host with production-like
settings) are ``python -m benchmarks.scaleout``; these are their quick checks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import burrow
from tests.helpers import wait_until
from tests.scaleout.app import Span, span_task
from tests.scaleout.infra import Hosts, PgBouncer
from tests.scaleout.scenarios import Ledger, producer, start_hosts, vanish
from tests.supervisor.helpers import Launcher, run_cli


def test_two_hosts_share_the_work_and_show_as_two_hosts(
    hosts: Callable[[int], tuple[Hosts, PgBouncer]], launcher: Launcher, postgres_schema: str, tmp_path: Path
) -> None:
    group, bouncer = hosts(2)
    start_hosts(launcher, group, bouncer, postgres_schema, tmp_path, 2, heartbeat_interval="200ms", lease_timeout="2s")
    q = producer(bouncer, postgres_schema)
    ledger = tmp_path / "ledger"
    try:
        span_task.enqueue_many(q, [Span(str(ledger), str(i), 0.02) for i in range(120)])
        wait_until(lambda: q.counts().get(burrow.JobState.SUCCEEDED, 0) == 120, timeout=30, what="120 jobs done")
        runs = Ledger.read(ledger).runs
        assert sorted(runs, key=int) == [str(i) for i in range(120)]
        assert all(len(r) == 1 for r in runs.values()), "a job ran twice"
        assert {r[0][0] for r in runs.values()} == {"host0", "host1"}, "one host did all the work"
        supervisors = {p.host for p in q.processes() if p.role == "supervisor"}
        assert supervisors == {"host0", "host1"}
        # burrow status and the admin: per host, its supervisor, its two workers, alive.
        status = run_cli(
            [sys.executable, "-m", "burrow.cli", "status", "--json", "--dsn", bouncer.dsn(), "--schema", postgres_schema],
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        shown = {h["host"]: h for h in json.loads(status.stdout)["hosts"]}
        assert {h: (v["supervisors"], v["workers"], v["stale"]) for h, v in shown.items()} == {
            "host0": (1, 2, False), "host1": (1, 2, False)
        }
        assert all(0 <= v["heartbeat_age_s"] < 2 for v in shown.values())
        from starlette.testclient import TestClient

        from burrow.admin import create_app

        with TestClient(create_app(q)) as client:
            page = client.get("/").text
        hosts_card = page[page.index("<h2>Hosts</h2>") : page.index("<h2>Processes</h2>")]
        assert "host0" in hosts_card and "host1" in hosts_card and "stale" not in hosts_card
    finally:
        q.close()


def test_a_vanished_hosts_jobs_run_again_within_the_bound_and_never_twice_at_once(
    hosts: Callable[[int], tuple[Hosts, PgBouncer]], launcher: Launcher, postgres_schema: str, tmp_path: Path
) -> None:
    """Host 1's link is cut while it runs jobs (its supervisor lives on, unreachable): its
    outage guard stops them before their leases lapse, host 0's reaper takes them back
    and runs them, each within heartbeat_interval + lease_timeout + reap_interval.

    It found that the guard looked only once a turn: with several calls blocking in
    one turn, runs went on 8.2 s after the cut, past the 7 s lease (services/runner.py)."""
    group, bouncer = hosts(2)
    # The lease leaves the outage guard its margin (README, "Delivery guarantees"): two
    # heartbeats and one call into the partition (a 2 s connect and a 1 s deadline):
    # 7 - 0.4 - 3 = 3.6 s. First runs of 10 s outlast the lease: host 1 must stop them.
    result = vanish(
        launcher, group, bouncer, postgres_schema, tmp_path, heartbeat_s=0.2, lease_s=7.0, reap_s=0.2, job_s=10.0
    )
    assert result.held == 2
    assert result.overlaps == [], f"jobs that ran twice at once: {result.overlaps}"
    assert len(result.delays_s) == result.held
    assert max(result.stopped_s) < 7.0, f"the cut host's runs went on past the lease: {result.stopped_s}"
    assert len(result.requeued_s) == result.held, "a job of the cut host was not reaped (lease_expired)"
    assert max(result.requeued_s) <= result.bound_s, (result.requeued_s, result.bound_s)
    # Run again once the retry backoff (at most 200 ms here) is over: the requeue's NOTIFY
    # came before the job was due, so an idle worker finds it at its next poll (1 s on LISTEN).
    assert max(result.delays_s) <= result.bound_s + 0.2 + 1.0, (result.delays_s, result.bound_s)
    # Silent past the lease, the host is stale, and the other host's reaper removes its rows
    # (burrow status and the admin then no longer list it); looked for once the jobs are
    # done, so seen gone up to a re-run (0.2 s) after it happened.
    assert result.rows_gone_s <= result.bound_s + 1.0, result.rows_gone_s
    print(
        f"vanished host: {result.held} jobs requeued after {[round(d, 2) for d in result.requeued_s]} s,"
        f" ran again after {[round(d, 2) for d in result.delays_s]} s (bound {result.bound_s:g} s);"
        f" their runs on the cut host stopped {[round(d, 2) for d in result.stopped_s]} s after the cut,"
        f" its process rows were gone {result.rows_gone_s:.2f} s after it"
    )
