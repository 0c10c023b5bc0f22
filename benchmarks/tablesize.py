"""Table size (PostgreSQL): the ``drain`` rows' drain beside millions of finished jobs.

Where the drain's jobs and their new row versions land decides what a big table
costs (benchmarks/README.md, "Table size", says why), so the old rows come in two
shapes, both inserted in one statement and vacuumed before the drain's jobs go in:

- ``tail``: payloads of one size (about 60 bytes). Whether the history's pages keep
  room for a new job then follows from arithmetic: what the fillfactor leaves over
  after a whole number of equal rows. Here that is too little at fillfactor 50 (the
  jobs form a young tail of pages of their own) and enough for one job a page from
  70 up (the jobs land one or two to a page on 16,000 to 30,000 old pages);
- ``spread``: payloads of 60 to 460 bytes, as an application's vary, so the room
  left on each page varies and many of the history's pages take a job or two at any
  fillfactor: the drain's jobs, and their claims' and finishes' new versions, land
  on pages of old rows.

Every round starts from the same state: the previous drain's jobs are deleted,
whatever retention pruned is put back, the table is vacuumed, the drain's jobs are
inserted, ``VACUUM ANALYZE``, and a ``CHECKPOINT`` on every side (empty table
included), so each drain pays the full-page images of the pages it touches first,
as the first drain after a checkpoint does in production, instead of whichever
round a timed checkpoint happens to fall in. Sides alternate round by round; each
ratio is to the empty-table rounds of the same rotation.

``new`` (``.new_burst``): a burst of NEW_BURST jobs into a jobs table just migrated,
never analyzed, the supervisor started once they are in, against the same burst
analyzed (``VACUUM ANALYZE``) before the start. Statistics of a new table say no
job is queued; the supervisor's ``statistics`` service analyzes it (burrow 0.2.0
and before sorted the whole backlog for each claim until autovacuum did).
``.new_burst_live``: the same burst enqueued by an application (``enqueue_many`` on
a connection it keeps open) while the supervisor runs on the new table, whose row
counts reach the statistics views only when that session reports them.

``--fillfactor 50,70,90,100`` sweeps the jobs table's fillfactor (``ALTER TABLE
burrow_jobs SET (fillfactor = N)`` after migrating, before filling): the
empty-table drain at every value (alternated together, ratios to the largest
value), then at each value both shapes beside that value's empty table, with the
disk size of each table (``pg_total_relation_size``: heap, indexes, TOAST, maps).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from psycopg import sql

from benchmarks.report import Row, median
from benchmarks.suite import Plan, Progress, rotate
from benchmarks.supervised import SupervisorProcess, drain, wait_finished
from benchmarks.target import Target

# Every old row is past these ages (they finished 2 to 23 hours ago), none past the
# defaults (24 h, failed 7 days), which the other supervisors run with.
PRUNE_ALL = '[retention]\nsucceeded = "1h"\nfailed = "1h"\ncancelled = "1h"\n'
SHAPES = ("tail", "spread")
WORKERS = 2
NEW_BURST = 200_000
MB = 1024 * 1024


def parse_fillfactors(text: str) -> list[int]:
    """``--fillfactor 50,70,90,100``: PostgreSQL takes 10 to 100."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 10 <= v <= 100 for v in values):
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r}: a comma-separated list of integers from 10 to 100")
    return list(dict.fromkeys(values))


def _set_fillfactor(target: Target, fillfactor: int | None) -> None:
    if fillfactor is None:
        return
    with target.admin() as conn:
        conn.execute(sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(target.table, sql.Literal(fillfactor)))


def _checkpoint(target: Target) -> None:
    with target.admin() as conn:
        conn.execute("CHECKPOINT")


def sizes(target: Target) -> dict[str, int]:
    """Bytes on disk of the jobs table: total (heap, indexes, TOAST, maps), heap, indexes."""
    name = f'"{target.schema}"."burrow_jobs"'
    with target.admin() as conn:
        total, heap, indexes = conn.execute(
            "SELECT pg_total_relation_size(%s::regclass), pg_relation_size(%s::regclass),"
            " pg_indexes_size(%s::regclass)", (name, name, name)).fetchone()
    return {"total": int(total), "heap": int(heap), "indexes": int(indexes)}


def stored_fillfactor(target: Target) -> int:
    """The jobs table's fillfactor as migrated (100 when unset)."""
    with target.admin() as conn:
        options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                               (f'"{target.schema}"."burrow_jobs"',)).fetchone()[0] or []
    for option in options:
        key, _, value = option.partition("=")
        if key == "fillfactor":
            return int(value)
    return 100


def counters(target: Target) -> dict[str, int]:
    """The jobs table's cumulative statistics (updates, HOT updates, buffer hits and reads)
    and the server's WAL totals (every database's: other work on the server shows too)."""
    with target.admin() as conn:
        row = conn.execute(
            "SELECT t.n_tup_upd, t.n_tup_hot_upd, io.heap_blks_hit, io.heap_blks_read, io.idx_blks_hit,"
            " io.idx_blks_read, w.wal_fpi, w.wal_bytes"
            " FROM pg_stat_user_tables t JOIN pg_statio_user_tables io USING (relid), pg_stat_wal w"
            " WHERE t.schemaname = %s AND t.relname = 'burrow_jobs'", (target.schema,)).fetchone()
    names = ("updates", "hot_updates", "heap_hit", "heap_read", "index_hit", "index_read", "server_wal_fpi",
             "server_wal_bytes")
    return {name: int(value or 0) for name, value in zip(names, row or (0,) * len(names))}


def placement(target: Target, above: int) -> dict[str, int]:
    """Heap pages holding the jobs after ``above`` (their current versions), and how many of
    those pages also hold old rows (ids up to ``above``)."""
    with target.admin() as conn:
        pages, shared = conn.execute(
            sql.SQL(
                "WITH b AS (SELECT DISTINCT (ctid::text::point)[0]::bigint AS blk FROM {t} WHERE id > %(above)s)"
                " SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {t} AS o"
                "  WHERE o.ctid >= format('(%%s,0)', b.blk)::tid AND o.ctid < format('(%%s,0)', b.blk + 1)::tid"
                "  AND o.id <= %(above)s)) FROM b"
            ).format(t=target.table), {"above": above}).fetchone()
    return {"pages": int(pages), "pages_with_old_rows": int(shared)}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


@dataclass
class BigTable:
    """A jobs table of ``old`` finished jobs in one shape, put back before every round."""

    shape: str
    old: int
    fillfactor: int | None = None  # None: as migrated
    target: Target = field(init=False)
    watermark: int = 0  # the old rows' ids end here; each drain's jobs come after
    composition: dict[str, int] = field(default_factory=dict)
    fill_s: float = 0.0
    size_filled: dict[str, int] = field(default_factory=dict)
    next_g: int = 0
    rounds: list[dict[str, object]] = field(default_factory=list)  # what each drain touched (see counters)

    def __post_init__(self) -> None:
        self.target = Target.create("postgresql")

    @property
    def varied(self) -> bool:
        return self.shape == "spread"

    def build(self) -> None:
        began = time.monotonic()
        self.target.migrate()
        _set_fillfactor(self.target, self.fillfactor)
        self.target.add_finished(self.old, varied=self.varied)
        self.target.vacuum_analyze()
        self.fill_s = time.monotonic() - began
        self.composition = self.target.counts()
        self.watermark = self.target.max_id()
        self.next_g = self.old + 1
        self.size_filled = sizes(self.target)

    def prepare(self, n: int, *, fill: bool = True) -> int:
        """The round's starting state: old rows as built (pruned ones put back), ``n`` due
        jobs (none with ``fill=False``), vacuumed and analyzed; the id the old rows end at."""
        target = self.target
        target.drop_above(self.watermark)
        missing = {state: count - target.counts().get(state, 0) for state, count in self.composition.items()}
        for state, count in missing.items():
            if count > 0:
                target.add_finished(count, first=self.next_g, state=state, spread=self.old, varied=self.varied)
                self.next_g += count
        self.watermark = target.max_id()
        target.vacuum_analyze()  # the previous drain's room is free again before the jobs go in
        if fill and n:
            target.refill(n, self.watermark)
        _checkpoint(target)
        return self.watermark

    def destroy(self) -> None:
        self.target.destroy()


def _empty_side(target: Target, n: int, batch_size: int, runs: list[dict[str, object]] | None = None,
                rates: list[float] | None = None) -> Callable[[], float]:
    """The drain on ``target`` emptied and refilled; ``runs``/``rates``: where to keep what each did."""
    def measure() -> float:
        target.reset(n)
        _checkpoint(target)
        start = counters(target)
        result = drain(target, WORKERS, batch_size, n, filled=True)
        if runs is not None:
            runs.append({"rate": result.rate, "jobs_after": placement(target, 0),
                         "counters": _delta(start, counters(target)), "cpu_ms_per_job": result.cpu_ms_per_job})
        if rates is not None:
            rates.append(result.rate)
        return result.rate
    return measure


def _big_side(big: BigTable, n: int, batch_size: int, config: str = "", fill_when: Callable[[], bool] | None = None,
              pruned: list[int] | None = None, progress: Progress | None = None) -> Callable[[], float]:
    def measure() -> float:
        above = big.prepare(n, fill=fill_when is None)
        before = placement(big.target, above) if fill_when is None else {}
        start = counters(big.target)
        result = drain(big.target, WORKERS, batch_size, n, above_id=above, config=config, fill_when=fill_when,
                       filled=fill_when is None)
        after = placement(big.target, above)
        big.rounds.append({"rate": result.rate, "jobs_before": before, "jobs_after": after,
                           "counters": _delta(start, counters(big.target)), "cpu_ms_per_job": result.cpu_ms_per_job})
        if progress is not None and before:
            progress(f"  {big.shape} (fillfactor {big.fillfactor or 'as migrated'}): {result.rate:,.0f} jobs/s; the jobs"
                     f" on {before['pages']:,} pages ({before['pages_with_old_rows']:,} with old rows), after the drain"
                     f" on {after['pages']:,} ({after['pages_with_old_rows']:,})")
        if pruned is not None:
            pruned.append(sum(big.composition.values()) - sum(big.target.counts().values()) + n)
        return result.rate
    return measure


def _cpu_vs(empty_runs: list[dict[str, object]], big_runs: list[dict[str, object]]) -> float | None:
    """The empty table's CPU per job over the big table's (medians): below 1, a job beside
    the old rows cost more CPU (supervisor, workers and their backends)."""
    def cpu(runs: list[dict[str, object]]) -> list[float]:
        values = [r.get("cpu_ms_per_job") for r in runs]
        return [float(v) for v in values if isinstance(v, (int, float))]
    ours, theirs = cpu(big_runs), cpu(empty_runs)
    return median(theirs) / median(ours) if ours and theirs and median(ours) else None


def _cpu_note(ratio: float | None) -> str:
    return f"; CPU per job {ratio:.2f} of the empty table's" if ratio is not None else ""


def _label(old: int) -> str:
    return f"{old // 1_000_000}m" if old % 1_000_000 == 0 else f"{old // 1000}k"


def _shape_note(shape: str, old: int, rounds: list[dict[str, object]]) -> str:
    what = ("payloads of one size" if shape == "tail" else "payloads of 60-460 bytes")
    where = ""
    before, after = (rounds[0].get("jobs_before"), rounds[0].get("jobs_after")) if rounds else (None, None)
    if isinstance(before, dict) and before and isinstance(after, dict):
        where = (f"; jobs on {before['pages']:,} pages ({before['pages_with_old_rows']:,} with old rows),"
                 f" after the drain {after['pages']:,} ({after['pages_with_old_rows']:,})")
    return f"beside {old:,} finished jobs ({what}), vacuumed, then the drain's jobs{where}"


def bench_table_size(target: Target, plan: Plan, batch_size: int, progress: Progress,
                     fillfactors: list[int] | None = None) -> list[Row]:
    kind = target.kind
    if kind != "postgresql" or not (plan.tablesize_old or fillfactors):
        progress(f"{kind} tablesize: skipped ({'--quick' if kind == 'postgresql' else 'PostgreSQL only'})")
        return []
    old = plan.tablesize_old or 2_000_000
    if fillfactors:
        return _sweep(plan, batch_size, progress, old, fillfactors)
    return _as_migrated(target, plan, batch_size, progress, old) + _new_table(plan, batch_size, progress)


def _new_table(plan: Plan, batch_size: int, progress: Progress) -> list[Row]:
    """A burst into a jobs table never analyzed, against the same burst analyzed."""
    kind, n = "postgresql", NEW_BURST

    def burst(analyzed: bool) -> Callable[[], float]:
        def measure() -> float:
            target = Target.create(kind)
            try:
                target.migrate()
                target.add_jobs(n)
                if analyzed:
                    target.vacuum_analyze()
                return drain(target, WORKERS, batch_size, n, above_id=0, filled=True).rate
            finally:
                target.destroy()
        return measure

    def live() -> float:
        import burrow

        target = Target.create(kind)
        try:
            target.migrate()
            with SupervisorProcess(target, WORKERS, batch_size) as sup:
                sup.start()
                app = burrow.connect(target.dsn, schema=target.schema)
                try:
                    app.enqueue_many("bench.noop", [{}] * n)
                    wait_finished(target, sup, timeout_s=60 + n / 500)
                finally:
                    app.close()
            succeeded, seconds, _ = target.span()
            return succeeded / seconds if seconds > 0 else 0.0
        finally:
            target.destroy()

    results = rotate(plan.rounds, {"new": burst(False), "analyzed": burst(True), "live": live})
    ours, analyzed, running = results["new"], results["analyzed"], results["live"]
    progress(f"{kind}.tablesize.new_burst: {median(ours):,.0f} jobs/s, enqueued while running {median(running):,.0f},"
             f" analyzed {median(analyzed):,.0f}")
    common = {"jobs": n, "workers": WORKERS, "batch_size": batch_size}
    return [
        Row(f"{kind}.tablesize.new_burst", kind, "tablesize", "new table", median(ours), baseline=median(analyzed),
            rounds=ours, baseline_rounds=analyzed,
            note=f"{n:,} jobs into a jobs table never analyzed, supervisor started after them ({WORKERS} workers,"
                 f" batch {batch_size}); ratio: to the same burst analyzed first", extra=common),
        Row(f"{kind}.tablesize.new_burst_live", kind, "tablesize", "new table, live", median(running),
            baseline=median(analyzed), rounds=running, baseline_rounds=analyzed,
            note=f"the same {n:,} jobs enqueued by an application (enqueue_many, its connection kept open) while the"
                 " supervisor runs on the new table; ratio: to the burst analyzed first", extra=common),
    ]


def _as_migrated(target: Target, plan: Plan, batch_size: int, progress: Progress, old: int) -> list[Row]:
    """Both shapes and the pruning row at the fillfactor burrow's migrations set."""
    kind, n, label = "postgresql", plan.drain_jobs, _label(old)
    bigs = {shape: BigTable(shape, old) for shape in SHAPES}
    try:
        for shape, big in bigs.items():
            big.build()
            progress(f"{kind} tablesize: {shape}: {old:,} finished jobs in {big.fill_s:.1f} s ({big.composition}),"
                     f" {big.size_filled['total'] / MB:,.0f} MB")
        empties: list[float] = []
        empty_runs: list[dict[str, object]] = []
        sides: dict[str, Callable[[], float]] = {"empty": _empty_side(target, n, batch_size, empty_runs, empties)}
        sides.update({shape: _big_side(big, n, batch_size, progress=progress) for shape, big in bigs.items()})
        results = rotate(plan.rounds, sides)
        progress(f"{kind}.tablesize: " + ", ".join(f"{k} {median(v):,.0f}" for k, v in results.items()) + " jobs/s")

        # Retention's first turn comes 10 s after the supervisor starts: with it on, the
        # jobs go in once that turn has pruned, so the drain runs beside it.
        tail = bigs["tail"]
        pruned: list[int] = []
        pruning = {"empty": _empty_side(target, n, batch_size, empty_runs, empties),
                   "pruning": _big_side(tail, n, batch_size, PRUNE_ALL, fill_when=lambda: _pruning_began(tail),
                                        pruned=pruned)}
        pruning_results = rotate(plan.rounds, pruning)
        progress(f"{kind}.tablesize.{label}_pruning: {median(pruning_results['pruning']):,.0f} jobs/s, empty "
                 f"{median(pruning_results['empty']):,.0f}; pruned per round {pruned}")

        common = {"jobs": n, "workers": WORKERS, "batch_size": batch_size, "old_rows": old,
                  "fillfactor": stored_fillfactor(tail.target), "checkpoint_before_each_drain": True}
        rows = [Row(f"{kind}.tablesize.empty", kind, "tablesize", "empty table", median(empties), rounds=empties,
                    note=f"supervisor, {n:,} no-op jobs, {WORKERS} workers, batch {batch_size}, empty table; "
                         f"median of the {len(empties)} rounds beside the rows below",
                    extra={**common, "per_round": empty_runs})]
        for shape, big in bigs.items():
            ours = results[shape]
            cpu_vs = _cpu_vs(empty_runs[:plan.rounds], big.rounds[:plan.rounds])
            rows.append(Row(f"{kind}.tablesize.{label}_{shape}", kind, "tablesize", shape, median(ours),
                            baseline=median(results["empty"]), rounds=ours, baseline_rounds=results["empty"],
                            note=_shape_note(shape, old, big.rounds) + f"; {big.size_filled['total'] / MB:,.0f} MB;"
                                 " ratio: to the empty table" + _cpu_note(cpu_vs),
                            extra={**common, "composition": big.composition, "fill_s": big.fill_s,
                                   "size_bytes": big.size_filled, "per_round": big.rounds[:plan.rounds],
                                   "cpu_vs_empty": cpu_vs}))
        ours = pruning_results["pruning"]
        rows.append(Row(f"{kind}.tablesize.{label}_pruning", kind, "tablesize", "pruning", median(ours),
                        baseline=median(pruning_results["empty"]), rounds=ours,
                        baseline_rounds=pruning_results["empty"],
                        note=f"as {label}_tail, retention 1 h: all prunable, jobs added once pruning began (1,000 a "
                             f"turn, every 0.25 s), put back before the next round ({'/'.join(f'{p:,}' for p in pruned)}"
                             " pruned); ratio: to the empty table",
                        extra={**common, "pruned_per_round": pruned, "per_round": tail.rounds[plan.rounds:]}))
        return rows
    finally:
        for big in bigs.values():
            big.destroy()


def _pruning_began(big: BigTable) -> bool:
    return sum(big.target.counts().values()) < sum(big.composition.values())


def _sweep(plan: Plan, batch_size: int, progress: Progress, old: int, fillfactors: list[int]) -> list[Row]:
    """The empty-table drain at every fillfactor, then both shapes at each."""
    kind, n, label = "postgresql", plan.drain_jobs, _label(old)
    reference = 100 if 100 in fillfactors else max(fillfactors)
    rows: list[Row] = []
    empties = {ff: Target.create(kind) for ff in fillfactors}
    try:
        for ff, target in empties.items():
            target.migrate()
            _set_fillfactor(target, ff)
        results = rotate(plan.rounds, {f"ff{ff}": _empty_side(target, n, batch_size) for ff, target in empties.items()})
        for ff, target in empties.items():
            ours, base = results[f"ff{ff}"], results[f"ff{reference}"]
            size = sizes(target)  # after its last drain: n finished jobs
            rows.append(Row(f"{kind}.tablesize.ff{ff}.empty", kind, "tablesize", f"fillfactor {ff}, empty",
                            median(ours), baseline=median(base), rounds=ours, baseline_rounds=base,
                            note=f"empty-table drain, {n:,} jobs, fillfactor {ff}; ratio: to fillfactor {reference}"
                                 f" in the same rounds; {size['total'] / MB:.1f} MB after the drain",
                            extra={"fillfactor": ff, "jobs": n, "size_bytes_after": size}))
            progress(f"{rows[-1].key}: {rows[-1].value:,.0f} jobs/s, ratio {rows[-1].ratio:.2f}")

        for ff, empty in empties.items():
            bigs = {shape: BigTable(shape, old, ff) for shape in SHAPES}
            try:
                for shape, big in bigs.items():
                    big.build()
                    progress(f"{kind} tablesize ff{ff} {shape}: {old:,} finished jobs in {big.fill_s:.1f} s, "
                             f"{big.size_filled['total'] / MB:,.0f} MB")
                empty_runs: list[dict[str, object]] = []
                sides: dict[str, Callable[[], float]] = {"empty": _empty_side(empty, n, batch_size, empty_runs)}
                sides.update({shape: _big_side(big, n, batch_size, progress=progress) for shape, big in bigs.items()})
                results = rotate(plan.rounds, sides)
                for shape, big in bigs.items():
                    ours = results[shape]
                    after = sizes(big.target)
                    cpu_vs = _cpu_vs(empty_runs, big.rounds)
                    rows.append(Row(f"{kind}.tablesize.ff{ff}.{label}_{shape}", kind, "tablesize",
                                    f"fillfactor {ff}, {shape}", median(ours), baseline=median(results["empty"]),
                                    rounds=ours, baseline_rounds=results["empty"],
                                    note=_shape_note(shape, old, big.rounds) + f"; fillfactor {ff}; ratio: to the empty table"
                                         f" at {ff}" + _cpu_note(cpu_vs),
                                    extra={"fillfactor": ff, "jobs": n, "old_rows": old, "composition": big.composition,
                                           "fill_s": big.fill_s, "size_bytes": big.size_filled,
                                           "size_bytes_after": after, "per_round": big.rounds,
                                           "empty_per_round": empty_runs, "cpu_vs_empty": cpu_vs}))
                    progress(f"{rows[-1].key}: {rows[-1].value:,.0f} jobs/s, empty {median(results['empty']):,.0f},"
                             f" ratio {rows[-1].ratio:.2f}")
                    rows.append(Row(f"{kind}.tablesize.ff{ff}.{label}_{shape}.size", kind, "tablesize",
                                    f"fillfactor {ff}, {shape}, size", big.size_filled["total"] / MB, unit="MB",
                                    note=f"pg_total_relation_size of the jobs table: heap "
                                         f"{big.size_filled['heap'] / MB:,.0f} MB, indexes "
                                         f"{big.size_filled['indexes'] / MB:,.0f} MB (after the rounds: "
                                         f"{after['total'] / MB:,.0f} MB)"))
            finally:
                for big in bigs.values():
                    big.destroy()
    finally:
        for target in empties.values():
            target.destroy()
    return rows
