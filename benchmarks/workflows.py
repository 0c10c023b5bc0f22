"""Workflows: how soon a step starts after its last parent, and what storing a big
workflow costs. ``python -m benchmarks.workflows [--backend ...] [--json PATH]``.

- **release**: two-step chains (``bench.noop`` then ``bench.noop``) enqueued at a
  steady 100 chains/s through the real supervisor (2 workers); per chain, the
  child's ``started_at`` less its parent's ``finished_at``, both written by the
  database's clock (PostgreSQL's server time; SQLite's writers on this machine).
  Beside it, in the same run, single jobs enqueued at the same pace: their
  enqueue-to-start (``started_at`` less ``created_at``), the latency a step's
  release is to be held against. Targets: median 100 ms (PostgreSQL), 250 ms (SQLite).
- **enqueue**: ``Workflow.enqueue`` of 1 -> 9,998 -> 1 (10,000 steps, 19,996
  edges) in one transaction, best and median of 3. Target: under 2 s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import burrow
from benchmarks.app import Noop, noop_task
from benchmarks.supervised import SupervisorProcess
from benchmarks.target import Target

CHAINS = 1000
PACE_S = 0.01  # 100 chains a second: well under capacity, so queueing is not what is measured


def _quantiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "median_ms": round(statistics.median(values) * 1000, 2),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 2),
        "n": len(values),
    }


def release_latency(kind: str, chains: int) -> dict[str, Any]:
    target = Target.create(kind)
    try:
        target.migrate()
        q = burrow.connect(target.dsn, schema=target.schema)
        with SupervisorProcess(target, workers=2, batch_size=100) as sup:
            sup.start()
            pairs: list[tuple[int, int]] = []
            singles: list[int] = []
            next_at = time.monotonic()
            for _ in range(chains):
                wf = burrow.Workflow()
                first = wf.add(noop_task, Noop())
                second = wf.add(noop_task, Noop(), after=[first])
                ids = wf.enqueue(q)
                pairs.append((ids[first], ids[second]))
                singles.append(noop_task.enqueue(q, Noop()))
                next_at += PACE_S
                time.sleep(max(0.0, next_at - time.monotonic()))
            for _, child_id in pairs:
                q.wait(child_id, timeout=60)
            for job_id in singles:
                q.wait(job_id, timeout=60)
            sup.check_alive()
        release = []
        for parent_id, child_id in pairs:
            parent, child = q.job(parent_id), q.job(child_id)
            assert parent.finished_at is not None and child.started_at is not None
            release.append((child.started_at - parent.finished_at).total_seconds())
        single = []
        for job_id in singles:
            job = q.job(job_id)
            assert job.started_at is not None
            single.append((job.started_at - job.created_at).total_seconds())
        q.close()
        return {"release": _quantiles(release), "single_job_enqueue_to_start": _quantiles(single)}
    finally:
        target.destroy()


def enqueue_time(kind: str, middle: int = 9998, rounds: int = 3) -> dict[str, Any]:
    target = Target.create(kind)
    try:
        target.migrate()
        q = burrow.connect(target.dsn, schema=target.schema)
        seconds = []
        for _ in range(rounds):
            wf = burrow.Workflow()
            root = wf.add(noop_task, Noop())
            steps = [wf.add(noop_task, Noop(), after=[root]) for _ in range(middle)]
            wf.add(noop_task, Noop(), after=steps)
            began = time.perf_counter()
            wf.enqueue(q)
            seconds.append(time.perf_counter() - began)
        q.close()
        return {"steps": middle + 2, "best_s": round(min(seconds), 3), "median_s": round(statistics.median(seconds), 3)}
    finally:
        target.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workflows")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--chains", type=int, default=CHAINS)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    results: dict[str, Any] = {}
    print(f"{'backend':<11} {'what':<44} {'median':>10} {'p99 / best':>12}")
    for kind in kinds:
        latency = release_latency(kind, args.chains)
        stored = enqueue_time(kind)
        results[kind] = {**latency, "enqueue_10k": stored}
        for label, key in (("step start after its last parent", "release"), ("single job enqueue to start", "single_job_enqueue_to_start")):
            figures = latency[key]
            what = f"{label} ({figures['n']})"
            print(f"{kind:<11} {what:<44} {figures['median_ms']:>8} ms {figures['p99_ms']:>9} ms")
        print(f"{kind:<11} {'enqueue a workflow of 10,000 steps':<44} {stored['median_s']:>9} s {stored['best_s']:>10} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
