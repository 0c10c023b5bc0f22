"""Where a drain's CPU goes, per job: the supervisor, its workers, their PostgreSQL backends.

    python -m benchmarks.split --jobs 200000 --rounds 3 --against b1b8523
    python -m benchmarks.split --backend sqlite --jobs 30000 --mix retry10
    python -m benchmarks.split --without-index burrow_jobs_finished_idx
    python -m benchmarks.split --log-level warning info

Each round drains ``--jobs`` pre-filled no-op jobs (or a mix) through a real
supervisor, 2 workers by default, in a fresh schema or file, for the checkout and
for each ``--against`` ref (a commit, tag or CHANGELOG version, installed into a
cached virtualenv as ``--against`` does for the suite), alternated. It reads CPU
time from ``/proc`` at READY and when the last job is done: the supervisor's own,
its workers' (live and reaped) and, on a PostgreSQL server on this host, the
backends serving them (benchmarks/cpu.py). The rate is given twice: from READY,
and from the process's start to the last job's ``finished_at``, issue 27's measure,
which also charges the start-up. ``--without-index`` adds the checkout with those
indexes dropped from its fresh schema: what they cost a drain; a second
``--log-level`` adds the checkout at that level (the suite runs at ``warning``,
burrow's default is ``info``: two lines a job). Medians of the rounds; the suite's
drain rows give throughput only, this says which process a change moved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from benchmarks import cpu
from benchmarks.supervised import SupervisorProcess, wait_finished
from benchmarks.target import Target
from benchmarks.versions import Version

# The drain's jobs, as the suite's mixes fill them (benchmarks/suite.py, bench_mixes).
MIXES: dict[str, dict[str, Any]] = {
    "noop": {},
    "retry10": {"task": "bench.flaky", "payload": b'{"fail":false}', "special": b'{"fail":true}', "every": 10},
    "result1k": {"task": "bench.result"},
    # retry10's task and payloads without the failures: what the failures alone cost
    "flaky0": {"task": "bench.flaky", "payload": b'{"fail":false}'},
}


@dataclass(frozen=True)
class Split:
    from_start: float  # jobs/s, process start to the last finish
    from_ready: float  # jobs/s, READY to the last finish seen
    supervisor_us: float  # CPU per job
    workers_us: float
    server_us: float | None  # None: the server's processes are not readable here

    @property
    def total_us(self) -> float:
        return self.supervisor_us + self.workers_us + (self.server_us or 0.0)


def _tree_seconds(pid: int) -> tuple[float, float]:
    """(the supervisor's own CPU seconds, its workers', reaped ones included)."""
    root = psutil.Process(pid)
    times = root.cpu_times()
    workers = times.children_user + times.children_system
    for child in root.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        workers += child_times.user + child_times.system
    return times.user + times.system, workers


def one_drain(kind: str, version: Version, jobs: int, workers: int, batch_size: int, mix: str,
              without: Sequence[str] = (), log_level: str = "warning") -> Split:
    target = Target.create(kind)
    try:
        version.migrate(target)
        target.drop_indexes(without)
        target.reset(jobs, **MIXES[mix])
        if kind == "postgresql":
            target.vacuum_analyze()
        with SupervisorProcess(target, workers, batch_size, version=version, log_level=log_level) as sup:
            sup.start()
            assert sup.proc is not None
            before, own_before = cpu.snapshot(sup.proc.pid, target), _tree_seconds(sup.proc.pid)
            ready = time.perf_counter()
            wait_finished(target, sup, timeout_s=60 + jobs / 500)
            seconds = time.perf_counter() - ready
            after, own_after = cpu.snapshot(sup.proc.pid, target), _tree_seconds(sup.proc.pid)
            _, server_s = cpu.spent(before, after)
            done, _, _ = target.span()
            last = target.last_finished()
            per_job = 1e6 / done
            return Split(
                from_start=done / (last - sup.popen_time),
                from_ready=done / seconds,
                supervisor_us=(own_after[0] - own_before[0]) * per_job,
                workers_us=(own_after[1] - own_before[1]) * per_job,
                server_us=None if server_s is None else server_s * per_job,
            )
    finally:
        target.destroy()


@dataclass(frozen=True)
class Variant:
    """One side of the alternation: a version, the indexes dropped from its schema, its log level."""

    name: str
    version: Version
    without: Sequence[str]
    log_level: str


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--mix", choices=sorted(MIXES), default="noop")
    parser.add_argument("--against", nargs="*", default=[], metavar="REF", help="earlier versions to alternate with")
    parser.add_argument("--without-index", nargs="*", default=[], metavar="NAME",
                        help="also the checkout with these indexes of its schema dropped: what they cost a drain")
    parser.add_argument("--log-level", nargs="+", default=["warning"], metavar="LEVEL",
                        help="the supervisors' [logging] level (burrow's default, info, writes two lines a job);"
                             " each further level adds the checkout at that level")
    args = parser.parse_args()

    checkout, level = Version.checkout(), args.log_level[0]
    variants = [Variant("checkout", checkout, (), level)]
    if args.without_index:
        variants.append(Variant("checkout without " + ", ".join(args.without_index), checkout, args.without_index, level))
    variants += [Variant(f"checkout at {other}", checkout, (), other) for other in args.log_level[1:]]
    variants += [Variant(ref, Version.of(ref), (), level) for ref in args.against]
    rounds: dict[str, list[Split]] = {v.name: [] for v in variants}
    for number in range(1, args.rounds + 1):
        for v in variants:
            split = one_drain(args.backend, v.version, args.jobs, args.workers, args.batch_size, args.mix, v.without,
                              v.log_level)
            rounds[v.name].append(split)
            print(f"[round {number}] {v.name}: {split.from_start:,.0f} jobs/s from start, {split.total_us:.1f} us/job",
                  flush=True)

    print(f"\n{args.backend}, {args.jobs:,} {args.mix} jobs, {args.workers} workers, batch {args.batch_size},"
          f" medians of {args.rounds} rounds alternated; CPU per job")
    print("| version | jobs/s from start | from READY | supervisor | workers | server | total |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, splits in rounds.items():
        def median(field: str) -> float:
            return statistics.median(getattr(split, field) or 0.0 for split in splits)

        server = "-" if splits[0].server_us is None else f"{median('server_us'):.1f} us"
        print(f"| {name} | {median('from_start'):,.0f} | {median('from_ready'):,.0f} | {median('supervisor_us'):.1f} us"
              f" | {median('workers_us'):.1f} us | {server} | {statistics.median(s.total_us for s in splits):.1f} us |")


if __name__ == "__main__":
    main()
