"""``python -m benchmarks [--quick] [--json PATH] [--backend sqlite|postgresql|all] [--against REF]``.

Exit status: 0, or 1 in ``--quick`` when a figure with a floor (benchmarks/floors.py)
measured a burrow/raw ratio below it, one with a ceiling (there too) measured above it,
or a drain fell below AGAINST_FLOOR of the release it was compared with; 2 when a
benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from benchmarks import postgres_dsn
from benchmarks.claimers import ClaimPool
from benchmarks.floors import AGAINST_FLOOR, AGAINST_KEYS, CEILINGS, FLOORS
from benchmarks.remote import bench_remote
from benchmarks.report import Row, machine, table, versions
from benchmarks.suite import (
    ClaimBench,
    Plan,
    bench_claim,
    bench_drain,
    bench_enqueue,
    bench_memory,
    bench_mixes,
    bench_steady,
)
from benchmarks.tablesize import bench_table_size, parse_fillfactors
from benchmarks.target import Target
from benchmarks.versions import LATEST, Version, VersionError

ALL = ("enqueue", "claim", "drain", "steady", "mix", "memory", "tablesize", "remote")
NO_AGAINST = "none"

# Issue 27's targets, printed from the rows of a run: (row key, what it is measured
# against, bound); a bound is "at least" for ratios, "at most" for milliseconds and
# megabytes and percents ("value": the row's own figure).
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("postgresql.drain.w2", "fixed", 0.9),
    # "SQLite drain at least 0.8x of its raw loop" (the issue), where PostgreSQL's is
    # "of the fixed raw loop": the table shows SQLite's fixed ratio too.
    ("sqlite.drain.w2", "raw", 0.8),
    ("postgresql.drain.w2", "0.1.0", 1.15),
    ("postgresql.mix.retry10", "raw", 0.6),
    ("postgresql.mix.result1k", "raw", 0.8),
    ("sqlite.mix.retry10", "raw", 0.6),
    ("sqlite.mix.result1k", "raw", 0.8),
    ("postgresql.remote.rtt7", "raw", 0.85),
    ("postgresql.steady.1000.p99", "value", 10.0),
    ("sqlite.steady.1000.p99", "value", 10.0),
    ("postgresql.memory.after", "value", 160.0),
    ("sqlite.memory.after", "value", 160.0),
    ("postgresql.memory.growth", "value", 2.0),
    ("sqlite.memory.growth", "value", 2.0),
)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the CI subset (about 4 minutes, no tablesize or remote): enforces the floors and "
                             f"compares the drains with the latest release (--against {LATEST})")
    parser.add_argument("--json", metavar="PATH", help="write every figure, machine, versions and settings here")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "all"), default="all")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="supervisor batch_size for drain/steady/mix/memory (default: burrow's default)")
    parser.add_argument("--against", metavar="REF",
                        help="drain beside git ref REF's burrow too (a tag, a commit, a CHANGELOG.md version, "
                             f"'{LATEST}' for the newest release, '{NO_AGAINST}'); --quick's default: {LATEST}")
    parser.add_argument("--fillfactor", metavar="LIST", type=parse_fillfactors,
                        help="tablesize: sweep the jobs table's fillfactor over these values (e.g. 50,70,90,100)")
    return parser.parse_args(argv)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop supervisors, drop schemas, remove files


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminated)
    from burrow.config import SupervisorConfig

    plan = Plan.quick_plan() if args.quick else Plan.full()
    batch_size = args.batch_size or SupervisorConfig().batch_size
    only = set(args.only.split(",")) if args.only else set(ALL)
    unknown = only - set(ALL)
    if unknown:
        print(f"benchmarks: unknown --only names: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    kinds = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    against_ref = args.against or (LATEST if args.quick else NO_AGAINST)
    against: Version | None = None
    if against_ref != NO_AGAINST and "drain" in only:
        try:
            against = Version.of(against_ref)
        except VersionError as exc:
            print(f"benchmarks: {exc}", file=sys.stderr)
            return 2

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    started = time.monotonic()
    rows: list[Row] = []
    settings: dict[str, Any] = {
        "quick": args.quick,
        "rounds": plan.rounds,
        "supervisor_batch_size": batch_size,
        "supervisor_flush_interval_s": SupervisorConfig().flush_interval_s,
        "plan": plan.__dict__,
        "durability": {},
        "against": against and {"label": against.label, "commit": against.commit, "python": against.python},
        "fillfactors": args.fillfactor,
    }
    postgres_server = None
    failed: list[str] = []
    pool = ClaimPool(max(max(plan.claim_procs), *(p for _, p in plan.claim_extra), *plan.drain_workers, 2))
    if against is not None:
        progress(f"against {against.label} ({against.commit}): {against.python}")
    try:
        for kind in kinds:
            target = Target.create(kind)
            try:
                target.migrate()
                settings["durability"][kind] = target.settings()
                if kind == "postgresql":
                    postgres_server = settings["durability"][kind]["server_version"]
                    settings["durability"][kind]["dsn"] = postgres_dsn().split("@")[-1]
                claims = ClaimBench(pool, target, plan)
                claims.warm_up()
                progress(f"{kind}: warmed up")
                steps = [
                    ("enqueue", lambda: bench_enqueue(target, plan, progress)),
                    ("claim", lambda: bench_claim(claims, plan, progress)),
                    ("drain", lambda: bench_drain(claims, plan, batch_size, progress, against)),
                    ("steady", lambda: bench_steady(target, plan, batch_size, progress)),
                    ("mix", lambda: bench_mixes(claims, plan, batch_size, progress)),
                    ("memory", lambda: bench_memory(target, plan, batch_size, progress)),
                    ("tablesize", lambda: bench_table_size(target, plan, batch_size, progress, args.fillfactor)),
                    ("remote", lambda: bench_remote(claims, plan, batch_size, progress)),
                ]
                for name, step in steps:
                    if name not in only:
                        continue
                    try:
                        rows += step()
                    except Exception as exc:
                        failed.append(f"{kind}.{name}: {type(exc).__name__}: {exc}")
                        progress(f"{kind} {name} FAILED:\n{traceback.format_exc()}")
            finally:
                pool.forget(target)
                target.destroy()
    finally:
        pool.close()
    elapsed = time.monotonic() - started

    best = {kind: max((r.baseline or 0.0) for r in rows if r.backend == kind and r.bench == "claim") if any(
        r.backend == kind and r.bench == "claim" for r in rows) else None for kind in kinds}
    for row in rows:
        if row.bench == "drain" and best.get(row.backend):
            row.extra["ratio_to_raw_best"] = row.value / best[row.backend]  # type: ignore[operator]

    below, above = [], []
    for row in rows:
        floor = FLOORS.get(row.key)
        if floor is not None and row.ratio is not None and row.ratio < floor:
            below.append(f"{row.key}: ratio {row.ratio:.2f} is below its floor {floor:.2f}")
        ceiling = CEILINGS.get(row.key)
        if ceiling is not None and row.value > ceiling:
            above.append(f"{row.key}: {row.value:.2f} {row.unit} is above its ceiling {ceiling:g} {row.unit}")
        release = row.extra.get("against") or {}
        if row.key in AGAINST_KEYS and release.get("below"):
            below.append(f"{row.key}: below {AGAINST_FLOOR:.2f} of release {row.against_label}: {release['below']}")

    mode = "quick" if args.quick else "full"
    print(f"burrow benchmarks ({mode}, {elapsed:.0f} s; burrow figures are medians of {plan.rounds} rounds "
          f"alternated with the raw-SQL baseline; supervisor batch_size {batch_size})")
    print(table(rows))
    for kind in kinds:
        if best.get(kind):
            drains = [r for r in rows if r.backend == kind and r.bench == "drain" and "ratio_to_raw_best" in r.extra]
            share = ", ".join(f"{r.key} {r.extra['ratio_to_raw_best']:.2f}" for r in drains)
            print(f"{kind}: raw-SQL best in this run {best[kind]:,.0f} jobs/s" + (f"; drain / raw best: {share}" if share else ""))
    for line in _targets(rows):
        print(line)
    if args.quick:
        print("quick mode: memory figures are after "
              f"{plan.memory_jobs:,} jobs, not 200,000; fewer claim configurations and one drain worker count")
    for line in below:
        print(f"FLOOR: {line}")
    for line in above:
        print(f"CEILING: {line}")
    for line in failed:
        print(f"FAILED: {line}")

    if args.json:
        document = {
            "mode": mode,
            "elapsed_s": elapsed,
            "machine": machine(),
            "versions": versions(postgres_server),
            "settings": settings,
            "floors": FLOORS,
            "ceilings": CEILINGS,
            "below_floor": below,
            "above_ceiling": above,
            "failed": failed,
            "raw_best": best,
            "results": [row.as_dict() for row in rows],
        }
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2, default=str)
    if failed:
        return 2
    if (below or above) and args.quick:
        return 1
    return 0


def _targets(rows: list[Row]) -> list[str]:
    """Issue 27's targets as this run measured them (those its rows cover)."""
    by_key = {row.key: row for row in rows}
    lines = []
    for key, versus, bound in TARGETS:
        row = by_key.get(key)
        if row is None:
            continue
        if versus == "value":
            lines.append(f"target: {key} at {row.value:.2f} {row.unit} (target <= {bound:g}): "
                         f"{'met' if row.value <= bound else 'NOT met'}")
            continue
        if versus == "fixed":
            value, what = row.fixed_ratio, "the fixed raw loop"
        elif versus == "raw":
            value, what = row.ratio, "its raw baseline" if row.bench != "remote" else "the direct drain"
        else:
            value, what = (row.vs_against, f"release {versus}") if row.against_label == versus else (None, "")
        if value is not None:
            lines.append(f"target: {key} at {value:.2f} of {what} (target >= {bound:.2f}): "
                         f"{'met' if value >= bound else 'NOT met'}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
