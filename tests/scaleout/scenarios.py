"""Runs on simulated hosts, shared by tests/scaleout and ``python -m benchmarks.scaleout``.

Each host is a network namespace (infra.Hosts) running one supervisor with its own
host name, reaching PostgreSQL through the PgBouncer on its link's root end: the
main DSN in transaction mode (``pooled = true``), LISTEN on the session-mode
database (``listen_dsn``), as a production setup with PgBouncer would be.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import burrow
from burrow.queue import JobQueue
from tests.helpers import wait_until
from tests.scaleout.app import Nap, Span, nap_task, span_task
from tests.scaleout.infra import Hosts, PgBouncer
from tests.supervisor.helpers import Launcher, SupervisorProcess, toml_value

APP = "tests.scaleout.app:app"


def host_config(path: Path, dsn: str, listen_dsn: str | None, schema: str, **supervisor: Any) -> Path:
    settings = {"apps": [APP], "workers": 2, "batch_size": 10, **supervisor}
    lines = ["[database]", f"dsn = {toml_value(dsn)}", f"schema = {toml_value(schema)}", "pooled = true"]
    if listen_dsn is not None:
        lines.append(f"listen_dsn = {toml_value(listen_dsn)}")
    lines += ["", "[supervisor]", *(f"{key} = {toml_value(value)}" for key, value in settings.items())]
    # A short retry backoff: a reaped job's re-run waits out the backoff after the requeue.
    lines += ["", "[retry]", 'base = "50ms"', 'max = "200ms"']
    lines += ["", "[logging]", 'format = "json"', 'level = "info"', ""]
    path.write_text("\n".join(lines))
    return path


def start_hosts(
    launcher: Launcher, hosts: Hosts, bouncer: PgBouncer, schema: str, workdir: Path, k: int,
    only: list[int] | None = None, ports: list[int] | None = None, **supervisor: Any,
) -> list[SupervisorProcess]:
    """One supervisor on each of the first ``k`` hosts (or on hosts ``only``), ready; host
    i reaches PgBouncer at its link's root end, on ``ports[i]`` if given (a proxy's)."""
    started = []
    for i in range(k) if only is None else only:
        outside, port = hosts.outside(i), None if ports is None else ports[i]
        config = host_config(
            workdir / f"host{i}.toml", bouncer.dsn(host=outside, port=port),
            bouncer.dsn(session=True, host=outside, port=port), schema, **supervisor,
        )
        started.append(launcher.start(config, name=f"host{i}", prefix=hosts.command(i, [])))
    for s in started:
        s.wait_ready(timeout=30)
    return started


def producer(bouncer: PgBouncer, schema: str) -> JobQueue:
    """The test's own connection, from the root namespace, through the same PgBouncer."""
    q = burrow.connect(bouncer.dsn(), schema=schema, pooled=True)
    nap_task.register(q)
    span_task.register(q)
    return q


def throughput(q: JobQueue, jobs: int, seconds: float = 0.02, timeout: float = 120.0) -> float:
    """Jobs per second of a run of ``jobs`` naps, from the first start to the last finish
    (the server's own timestamps, so the producer's polling does not count)."""
    before = q.counts().get(burrow.JobState.SUCCEEDED, 0)
    ids = set(nap_task.enqueue_many(q, [Nap(seconds)] * jobs))
    wait_until(
        lambda: q.counts().get(burrow.JobState.SUCCEEDED, 0) - before >= jobs,
        timeout=timeout, interval=0.1, what=f"{jobs} naps done",
    )
    starts, ends = [], []
    before_id = None
    while True:
        page = q.jobs(task="scaleout.nap", before_id=before_id, limit=1000)
        for job in page:
            if job.id in ids and job.started_at is not None and job.finished_at is not None:
                starts.append(job.started_at)
                ends.append(job.finished_at)
        if len(page) < 1000:
            break
        before_id = page[-1].id
    assert len(starts) == jobs, f"{len(starts)} of {jobs} naps have run"
    return jobs / (max(ends) - min(starts)).total_seconds()


@dataclass
class Ledger:
    """What scaleout.span jobs wrote: per key, its runs as (host, pid, start, last beat or end)."""

    runs: dict[str, list[tuple[str, int, float, float]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Ledger:
        seen: dict[tuple[str, int], list[Any]] = {}
        order: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for line in path.read_text().splitlines():
            kind, key, pid, host, at = line.split()
            run = (key, int(pid))
            if kind == "start":
                seen[run] = [host, int(pid), float(at), float(at)]
                order[key].append(run)
            elif run in seen:
                seen[run][3] = float(at)
        return cls({key: [tuple(seen[run]) for run in runs] for key, runs in order.items()})

    def overlaps(self) -> list[str]:
        """Keys two of whose runs were alive at once (a beat every 50 ms: to that resolution)."""
        found = []
        for key, runs in self.runs.items():
            ordered = sorted(runs, key=lambda r: r[2])
            if any(later[2] < earlier[3] for earlier, later in zip(ordered, ordered[1:])):
                found.append(key)
        return found


@dataclass
class Vanished:
    bound_s: float  # heartbeat_interval + lease_timeout + reap_interval
    requeued_s: list[float]  # for each job the cut host held: its requeue (lease_expired), after the cut
    delays_s: list[float]  # and its next start on another host (after the retry backoff, at most 200 ms)
    stopped_s: list[float]  # when its run on the cut host last beat (the outage guard stopped it), after the cut
    rows_gone_s: float  # when the cut host's process rows were seen gone (reaped), after the cut: looked for
    # once every job is done, so at most that late
    overlaps: list[str]
    held: int


def vanish(
    launcher: Launcher, hosts: Hosts, bouncer: PgBouncer, schema: str, workdir: Path, *,
    heartbeat_s: float, lease_s: float, reap_s: float, job_s: float, jobs: int = 2, again_s: float = 0.2,
) -> Vanished:
    """Host 1 runs ``jobs`` span jobs of ``job_s``, longer than the lease; its link is cut,
    and host 0 (idle, started then) takes them over: when was each requeued and run
    again, when did host 1 stop it, and did any two runs of one job overlap? A run
    after the first takes ``again_s``. Host 0 has all its workers free, so a run on
    host 1 that went on past its lease would overlap the next one, and show.
    """
    settings: dict[str, Any] = {
        "heartbeat_interval": f"{heartbeat_s}s", "lease_timeout": f"{lease_s}s", "reap_interval": f"{reap_s}s",
        "batch_size": 1, "poll_interval": "50ms", "workers": max(2, jobs),
    }
    ledger = workdir / "ledger"
    q = producer(bouncer, schema)
    try:
        start_hosts(launcher, hosts, bouncer, schema, workdir, 2, only=[1], **settings)
        ids = span_task.enqueue_many(q, [Span(str(ledger), str(i), job_s, again_s) for i in range(jobs)])

        def started() -> int:
            return len(Ledger.read(ledger).runs) if ledger.exists() else 0

        wait_until(lambda: started() == jobs, timeout=30, what=f"host1 running {jobs} jobs")
        hosts.cut(1)
        cut_at = time.time()
        start_hosts(launcher, hosts, bouncer, schema, workdir, 2, only=[0], **settings)
        wait_until(
            lambda: q.counts().get(burrow.JobState.SUCCEEDED, 0) == jobs,
            timeout=lease_s * 2 + jobs * again_s + 30, interval=0.1, what="every job done on host0",
        )
        wait_until(
            lambda: not [p for p in q.processes() if p.host == "host1"],
            timeout=lease_s + 10 * reap_s + 10, interval=0.05, what="host1's process rows reaped",
        )
        rows_gone = time.time() - cut_at
        runs = Ledger.read(ledger)
        held = list(runs.runs)
        delays = []
        for key in held:
            again = [start for host, _, start, _ in runs.runs[key] if host == "host0" and start > cut_at]
            delays.append(min(again) - cut_at)
        requeued = [
            entry.at.timestamp() - cut_at for job_id in ids for entry in q.history(job_id) if entry.event == "lease_expired"
        ]
        stopped = [run[3] - cut_at for key in held for run in runs.runs[key] if run[0] == "host1"]
        return Vanished(
            heartbeat_s + lease_s + reap_s, requeued, delays, stopped, rows_gone, runs.overlaps(), len(held)
        )
    finally:
        q.close()
