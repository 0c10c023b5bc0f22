"""``python -m benchmarks.scaleout``: PgBouncer in transaction mode, and hosts, measured.

Not part of ``python -m benchmarks`` nor of CI's quick run (it takes a few minutes and
needs root for its network namespaces); its figures are in the README ("Scaling out").

- ``drain``: 20,000 no-op jobs drained by two supervisors (2 workers, batch_size 100
  each), direct to PostgreSQL, then through PgBouncer (``pooled = true``, LISTEN on
  ``listen_dsn``, direct); rounds alternate; jobs/s = N / (last ``finished_at`` -
  first ``started_at``); every job must have succeeded once and no supervisor may log
  an error. Target: pgbouncer / direct >= 0.8.
- ``latency``: one supervisor (2 workers), jobs enqueued one at a time at 500 jobs/s
  for 4 s; enqueue-to-start = ``started_at - created_at`` (both the server's clock);
  p50 and p99, direct and through PgBouncer with ``listen_dsn`` (and without: polling).
  Target: p99 <= 10 ms, or within 1.5x of direct's.
- ``hosts``: k = 1, 2, 4 simulated hosts (tests/scaleout/infra.py: network namespaces,
  veth links, PgBouncer on their root ends, ``tc netem`` 1 ms each way where the kernel
  has it, else a delaying proxy, benchmarks/delay_proxy.py, of a 2 ms round trip on each
  link's root end), each a supervisor with 2 workers, running 20 ms sleeps: jobs/s and
  the efficiency against k times one host's (and against the ideal, k x 100 jobs/s);
  rounds alternate. Target: >= 0.9 at k = 4.
- ``vanish``: two hosts; host 1 runs two jobs longer than the lease and its link is
  cut; when each was requeued and ran again on host 0 (against heartbeat_interval +
  lease_timeout + reap_interval), when host 1's outage guard stopped it, any overlap.

Prints the table; ``--json PATH`` writes the rows and the machine.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import burrow
from benchmarks import postgres_dsn
from benchmarks.delay_proxy import DelayProxy
from benchmarks.report import Row, machine, table
from tests.scaleout.app import Nothing, noop_task
from tests.scaleout.infra import Hosts, PgBouncer
from tests.scaleout.scenarios import APP, producer, start_hosts, throughput, vanish
from tests.supervisor.conftest import _set_subreaper
from tests.supervisor.helpers import Launcher, SupervisorProcess, toml_value

BENCHES = ("drain", "latency", "hosts", "vanish")


def _config(path: Path, dsn: str, schema: str, *, pooled: bool, listen_dsn: str | None, **supervisor: Any) -> Path:
    settings = {"apps": [APP], "workers": 2, "batch_size": 100, **supervisor}
    lines = ["[database]", f"dsn = {toml_value(dsn)}", f"schema = {toml_value(schema)}"]
    if pooled:
        lines.append("pooled = true")
    if listen_dsn:
        lines.append(f"listen_dsn = {toml_value(listen_dsn)}")
    lines += ["", "[supervisor]", *(f"{k} = {toml_value(v)}" for k, v in settings.items())]
    lines += ["", "[logging]", 'format = "json"', 'level = "warning"', ""]
    path.write_text("\n".join(lines))
    return path


class Schema:
    """A private schema, migrated; dropped by :meth:`drop`."""

    def __init__(self) -> None:
        self.name = f"bench_scaleout_{secrets.token_hex(4)}"
        burrow.connect(postgres_dsn(), schema=self.name).close()

    def query(self, text: str) -> Any:
        with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.name)))
            return conn.execute(text).fetchall()

    def drop(self) -> None:
        with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.name)))


def _errors(supervisors: Sequence[SupervisorProcess]) -> int:
    return sum(1 for s in supervisors for r in s.lines() if r.get("level") == "error")


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def drain_once(bouncer: PgBouncer | None, jobs: int, workdir: Path) -> tuple[float, int]:
    """Jobs/s of two supervisors draining ``jobs`` no-ops; and the errors they logged."""
    schema = Schema()
    launcher = Launcher(workdir)
    try:
        if bouncer is None:
            dsn, pooled, listen = postgres_dsn(), False, None
        else:
            dsn, pooled, listen = bouncer.dsn(), True, postgres_dsn()
        q = burrow.connect(dsn, schema=schema.name, pooled=pooled)
        noop_task.register(q)
        for start in range(0, jobs, 5000):
            noop_task.enqueue_many(q, [Nothing()] * min(5000, jobs - start))
        q.close()
        config = _config(workdir / "drain.toml", dsn, schema.name, pooled=pooled, listen_dsn=listen)
        supervisors = [launcher.start(config, name=f"drain{i}") for i in range(2)]

        def done() -> bool:
            return bool(schema.query("SELECT count(*) FROM burrow_jobs WHERE state = 'succeeded'")[0][0] >= jobs)

        _wait(done, 300, f"{jobs} jobs drained")
        ((count, seconds, attempts),) = schema.query(
            "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at)), sum(attempts) FROM burrow_jobs"
            " WHERE state = 'succeeded'"
        )
        if count != jobs or attempts != jobs:
            raise RuntimeError(f"lost or repeated jobs: {count} succeeded, {attempts} attempts, of {jobs}")
        return jobs / float(seconds), _errors(supervisors)
    finally:
        try:
            launcher.cleanup()
        finally:
            schema.drop()


def bench_drain(bouncer: PgBouncer, jobs: int, rounds: int, workdir: Path) -> list[Row]:
    direct: list[float] = []
    pooled: list[float] = []
    errors = 0
    for _ in range(rounds):
        for via, into in ((None, direct), (bouncer, pooled)):
            rate, errs = drain_once(via, jobs, workdir)
            into.append(rate)
            errors += errs
    d, p = statistics.median(direct), statistics.median(pooled)
    return [
        Row("postgresql.scaleout.drain.direct", "postgresql", "drain", "direct", d, rounds=direct,
            note=f"{jobs} jobs, 2 supervisors x 2 workers"),
        Row("postgresql.scaleout.drain.pgbouncer", "postgresql", "drain", "pgbouncer", p, baseline=d, rounds=pooled,
            baseline_rounds=direct, note=f"ratio = pgbouncer / direct (target >= 0.8); errors logged: {errors}"),
    ]


def latency_once(dsn: str, pooled: bool, listen_dsn: str | None, workdir: Path, rate: int, seconds: float) -> list[float]:
    """Enqueue-to-start of each job, ms, enqueued one at a time at ``rate`` a second."""
    schema = Schema()
    launcher = Launcher(workdir)
    try:
        config = _config(workdir / "latency.toml", dsn, schema.name, pooled=pooled, listen_dsn=listen_dsn,
                         batch_size=10)
        launcher.start(config, name="latency")
        q = burrow.connect(dsn, schema=schema.name, pooled=pooled)
        noop_task.register(q)
        # Its workers booted (their rows come with the supervisor's heartbeat): none is starting up.
        _wait(lambda: sum(p.role != "supervisor" for p in q.processes()) >= 2, 30, "the supervisor's 2 workers")
        n = int(rate * seconds)
        began = time.perf_counter()
        for i in range(n):
            pause = began + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            noop_task.enqueue(q, Nothing())
        q.close()

        def done() -> bool:
            return bool(schema.query("SELECT count(*) FROM burrow_jobs WHERE state = 'succeeded'")[0][0] >= n)

        _wait(done, 60, f"{n} jobs run")
        rows = schema.query("SELECT extract(epoch FROM started_at - created_at) * 1000 FROM burrow_jobs")
        return sorted(float(r[0]) for r in rows)
    finally:
        try:
            launcher.cleanup()
        finally:
            schema.drop()


def _p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_latency(bouncer: PgBouncer, rate: int, seconds: float, workdir: Path) -> list[Row]:
    runs = {
        "direct": (postgres_dsn(), False, None),
        "pgbouncer_listen_dsn": (bouncer.dsn(), True, postgres_dsn()),
        "pgbouncer_polling": (bouncer.dsn(), True, None),
    }
    rows = []
    p99s: dict[str, float] = {}
    for name, (dsn, pooled, listen) in runs.items():
        ms = latency_once(dsn, pooled, listen, workdir, rate, seconds)
        p99s[name] = _p(ms, 0.99)
        rows.append(Row(
            f"postgresql.scaleout.latency.{name}", "postgresql", "latency", name, p99s[name], unit="ms",
            baseline=p99s.get("direct") if name != "direct" else None,
            note=f"p99 enqueue-to-start at {rate} jobs/s; p50 {_p(ms, 0.5):.2f} ms, max {ms[-1]:.2f} ms",
            extra={"p50_ms": _p(ms, 0.5), "p90_ms": _p(ms, 0.9), "p99_ms": p99s[name], "max_ms": ms[-1], "jobs": len(ms)},
        ))
    return rows


def hosts_once(k: int, per_host: int, workdir: Path) -> tuple[float, str, int]:
    """Jobs/s of k hosts running ``per_host`` 20 ms naps each; how their links were
    delayed; the errors their supervisors logged."""
    hosts = Hosts(k)
    bouncer = PgBouncer(None, postgres_dsn(), listen=["127.0.0.1", *(hosts.outside(i) for i in range(k))])
    # Without netem, a 2 ms round trip (1 ms each way) from a delaying proxy on each link's root end.
    proxies = [] if hosts.netem else [
        DelayProxy(("127.0.0.1", bouncer.port), 2.0, host=hosts.outside(i)) for i in range(k)
    ]
    schema = Schema()
    launcher = Launcher(workdir)
    try:
        start_hosts(launcher, hosts, bouncer, schema.name, workdir, k, ports=[p.port for p in proxies] or None,
                    batch_size=10, poll_interval="20ms")
        q = producer(bouncer, schema.name)
        try:
            throughput(q, 40 * k)  # warm up: workers' first claims, connections
            rate = throughput(q, per_host * k)
        finally:
            q.close()
        errors = sum(1 for s in launcher.started for r in s.lines() if r.get("level") == "error")
    finally:
        try:
            launcher.cleanup()
        finally:
            schema.drop()
            for proxy in proxies:
                proxy.stop()
            bouncer.stop()
            hosts.close()
    delay = f"netem {hosts.delay_ms:g} ms each way" if hosts.netem else "no netem here: a 2 ms RTT proxy per link"
    return rate, delay, errors


def bench_hosts(ks: Sequence[int], per_host: int, rounds: int, workdir: Path) -> list[Row]:
    rates: dict[int, list[float]] = {k: [] for k in ks}
    delay, errors = "", 0
    for _ in range(rounds):
        for k in ks:
            rate, delay, errs = hosts_once(k, per_host, workdir)
            rates[k].append(rate)
            errors += errs
    one = statistics.median(rates[ks[0]]) / ks[0]
    rows = []
    for k in ks:
        rate = statistics.median(rates[k])
        rows.append(Row(
            f"postgresql.scaleout.hosts.k{k}", "postgresql", "hosts", f"k{k}", rate, baseline=k * one, rounds=rates[k],
            note=f"ratio = efficiency vs {k} x one host; of the ideal {k * 100} jobs/s: {rate / (k * 100):.2f};"
                 f" 2 workers/host, 20 ms jobs, {per_host * k} jobs; {delay}; errors logged: {errors}",
            extra={"ideal_jobs_s": k * 2 / 0.02},
        ))
    return rows


def bench_vanish(workdir: Path) -> list[Row]:
    hosts = Hosts(2)
    bouncer = PgBouncer(None, postgres_dsn(), listen=[hosts.outside(0), hosts.outside(1)])
    schema = Schema()
    launcher = Launcher(workdir)
    try:
        result = vanish(launcher, hosts, bouncer, schema.name, workdir, heartbeat_s=0.2, lease_s=7.0, reap_s=0.2,
                        job_s=10.0)
    finally:
        try:
            launcher.cleanup()
        finally:
            schema.drop()
            bouncer.stop()
            hosts.close()
    return [Row(
        "postgresql.scaleout.vanish.rerun", "postgresql", "vanish", "rerun", max(result.delays_s), unit="s",
        baseline=result.bound_s,
        note=f"heartbeat 0.2 s, lease 7 s, reap 0.2 s: requeued after {max(result.requeued_s):.2f} s, stopped on the"
             f" cut host after {max(result.stopped_s):.2f} s, overlaps: {len(result.overlaps)}",
        extra={"rows_gone_s": result.rows_gone_s, "requeued_s": result.requeued_s, "delays_s": result.delays_s, "stopped_s": result.stopped_s,
               "overlaps": result.overlaps, "bound_s": result.bound_s},
    )]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks named; print the table (and write the JSON)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated: {', '.join(BENCHES)}")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20,000)")
    parser.add_argument("--rounds", type=int, default=2, help="drain rounds of each (alternated)")
    parser.add_argument("--rate", type=int, default=500, help="jobs/s of the latency run")
    parser.add_argument("--hosts", default="1,2,4", help="the k of the hosts runs")
    parser.add_argument("--per-host", type=int, default=600, help="20 ms jobs per host in a hosts run")
    parser.add_argument("--json", metavar="PATH", help="write the rows and the machine here")
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(only) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    rows: list[Row] = []
    _set_subreaper(True)  # killed supervisors' workers are ours to reap (Launcher.cleanup checks)
    with tempfile.TemporaryDirectory(prefix="burrow-scaleout-") as tmp:
        workdir = Path(tmp)
        bouncer = PgBouncer(None, postgres_dsn(), pool_size=20) if {"drain", "latency"} & set(only) else None
        try:
            if "drain" in only and bouncer is not None:
                rows += bench_drain(bouncer, args.jobs, args.rounds, workdir)
                print(table(rows), flush=True)
            if "latency" in only and bouncer is not None:
                rows += bench_latency(bouncer, args.rate, 4.0, workdir)
        finally:
            if bouncer is not None:
                bouncer.stop()
        if "hosts" in only:
            rows += bench_hosts([int(k) for k in args.hosts.split(",")], args.per_host, args.rounds, workdir)
        if "vanish" in only:
            rows += bench_vanish(workdir)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [r.as_dict() for r in rows], "machine": machine()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
