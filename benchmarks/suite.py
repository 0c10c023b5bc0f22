"""The benchmarks (a to g), each returning table rows for one backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.app import DIR_ENV, KILOBYTE
from benchmarks.claimers import BURROW, RAW, ClaimPool
from benchmarks.raw import RawQueue
from benchmarks.report import Row, median
from benchmarks.supervised import SupervisorProcess, drain, wait_finished
from benchmarks.target import Target


@dataclass(frozen=True)
class Plan:
    """How much of everything to run; ``--quick`` is a smaller plan, same code."""

    quick: bool
    rounds: int
    enqueue_s: float
    claim_s: float
    claim_batches: tuple[int, ...]
    claim_procs: tuple[int, ...]
    claim_extra: tuple[tuple[int, int], ...]  # (batch, procs) pairs beyond the grid
    drain_workers: tuple[int, ...]
    drain_jobs: int
    drain_batches: tuple[int, ...]  # batch-size sweep at 2 workers (1 round each)
    steady_rates: tuple[float | None, ...]  # None: as fast as the producer can
    steady_s: float
    mix_jobs: int
    mix_rounds: int
    memory_jobs: int
    tablesize_old: int  # finished jobs left in the table beside the drain (0: not run)

    @classmethod
    def full(cls) -> Plan:
        return cls(False, 3, 1.0, 1.0, (1, 10, 100, 1000), (1, 2, 4), (), (1, 2, 4), 30_000, (1, 100, 1000),
                   (500, 1000, 2000, None), 8.0, 20_000, 3, 200_000, 2_000_000)

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(True, 3, 0.25, 0.3, (1, 10, 100, 1000), (1,), ((100, 2),), (2,), 5_000, (),
                   (1000,), 2.0, 3_000, 1, 5_000, 0)


Progress = Callable[[str], None]


def _alternate(rounds: int, first: Callable[[], float], second: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Run the pair ``rounds`` times, swapping which goes first each round."""
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


# -- a. enqueue -----------------------------------------------------------------


def bench_enqueue(target: Target, plan: Plan, progress: Progress) -> list[Row]:
    import burrow
    from benchmarks.app import Noop, noop_task

    queue = burrow.connect(target.dsn, schema=target.schema)
    raw = RawQueue(target)
    rows = []
    try:
        for size in (1, 100, 1000):
            payloads = [Noop()] * size

            def burrow_round() -> float:
                target.reset(0)
                noop_task.enqueue(queue, Noop()) if size == 1 else noop_task.enqueue_many(queue, payloads)
                done, start = 0, time.monotonic()
                deadline = start + plan.enqueue_s
                while time.monotonic() < deadline:
                    if size == 1:
                        noop_task.enqueue(queue, Noop())
                    else:
                        noop_task.enqueue_many(queue, payloads)
                    done += size
                return done / (time.monotonic() - start)

            def raw_round() -> float:
                target.reset(0)
                raw.enqueue(size)
                done, start = 0, time.monotonic()
                deadline = start + plan.enqueue_s
                while time.monotonic() < deadline:
                    raw.enqueue(size)
                    done += size
                return done / (time.monotonic() - start)

            ours, theirs = _alternate(plan.rounds, burrow_round, raw_round)
            label = "one" if size == 1 else f"many{size}"
            what = "task.enqueue, one job per transaction" if size == 1 else f"task.enqueue_many, {size} per call"
            rows.append(Row(f"{target.kind}.enqueue.{label}", target.kind, "enqueue", label, median(ours),
                            baseline=median(theirs), rounds=ours, baseline_rounds=theirs, note=what))
            progress(_line(rows[-1]))
    finally:
        queue.close()
        raw.close()
    return rows


# -- b. claim -------------------------------------------------------------------

_GUESS = {"sqlite": {1: 6000, 10: 40000, 100: 120000, 1000: 160000},
          "postgresql": {1: 1500, 10: 10000, 100: 30000, 1000: 60000}}


class ClaimBench:
    """Alternating burrow/raw claim+finish measurements over one process pool."""

    def __init__(self, pool: ClaimPool, target: Target, plan: Plan) -> None:
        self.pool = pool
        self.target = target
        self.plan = plan
        self.rates: dict[tuple[str, int, int], float] = {}

    def warm_up(self) -> None:
        for mode in (RAW, BURROW):
            self.target.reset(2000 * len(self.pool.conns))
            self.pool.run(self.target, mode, 10, len(self.pool.conns), 0.2)

    def measure(self, mode: str, batch: int, procs: int, duration: float, *, result: bytes | None = None,
                task_jobs: int | None = None) -> float:
        """One measurement: fill, run, rate. ``task_jobs``: drain exactly that many instead of timing."""
        if task_jobs is not None:
            self.target.reset(task_jobs)
            done, seconds, _ = self.pool.run(self.target, mode, batch, procs, 600.0, result)
            return done / seconds
        guess = self.rates.get((mode, batch, procs)) or _GUESS[self.target.kind][batch]
        size = int(min(600_000, max(guess * duration * 1.5, batch * procs * 4, 1000)))
        self.target.reset(size)
        done, seconds, dry = self.pool.run(self.target, mode, batch, procs, duration, result)
        rate = done / seconds
        self.rates[(mode, batch, procs)] = rate * (2.0 if dry else 1.0)
        return rate

    def pair(self, batch: int, procs: int, rounds: int, duration: float, **kw: object) -> tuple[list[float], list[float]]:
        return _alternate(rounds, lambda: self.measure(BURROW, batch, procs, duration, **kw),  # type: ignore[arg-type]
                          lambda: self.measure(RAW, batch, procs, duration, **kw))  # type: ignore[arg-type]


def bench_claim(claims: ClaimBench, plan: Plan, progress: Progress) -> list[Row]:
    kind = claims.target.kind
    rows = []
    configs = [(b, p) for p in plan.claim_procs for b in plan.claim_batches] + list(plan.claim_extra)
    for batch, procs in configs:
        ours, theirs = claims.pair(batch, procs, plan.rounds, plan.claim_s)
        rows.append(Row(f"{kind}.claim.b{batch}.p{procs}", kind, "claim", f"batch {batch}, {procs} process(es)",
                        median(ours), baseline=median(theirs), rounds=ours, baseline_rounds=theirs,
                        note=f"Backend.claim+finish, batch {batch}, {procs} proc"))
        progress(_line(rows[-1]))
    return rows


# -- c. drain -------------------------------------------------------------------


def bench_drain(claims: ClaimBench, plan: Plan, batch_size: int, progress: Progress) -> list[Row]:
    target, kind = claims.target, claims.target.kind
    rows = []
    for workers in plan.drain_workers:
        logs: list[int] = []

        def supervised() -> float:
            result = drain(target, workers, batch_size, plan.drain_jobs)
            logs.append(result.log_lines)
            return result.rate

        ours, theirs = _alternate(plan.rounds, supervised,
                                  lambda: claims.measure(RAW, batch_size, workers, 0, task_jobs=plan.drain_jobs))
        rows.append(Row(f"{kind}.drain.w{workers}", kind, "drain", f"{workers} workers, batch {batch_size}",
                        median(ours), baseline=median(theirs), rounds=ours, baseline_rounds=theirs,
                        note=f"supervisor, {plan.drain_jobs:,} no-op jobs, batch {batch_size}; raw: {workers} proc",
                        extra={"jobs": plan.drain_jobs, "workers": workers, "batch_size": batch_size, "log_lines": logs}))
        progress(_line(rows[-1]))
    for batch in plan.drain_batches:
        if batch == batch_size:
            continue
        jobs = min(plan.drain_jobs, 5_000 if batch == 1 else plan.drain_jobs)
        ours = [drain(target, 2, batch, jobs).rate]
        theirs = [claims.measure(RAW, batch, 2, 0, task_jobs=jobs)]
        rows.append(Row(f"{kind}.drain.w2.b{batch}", kind, "drain", f"2 workers, batch {batch}", ours[0],
                        baseline=theirs[0], rounds=ours, baseline_rounds=theirs,
                        note=f"batch-size sweep, {jobs:,} jobs, 1 round", extra={"jobs": jobs, "batch_size": batch}))
        progress(_line(rows[-1]))
    return rows


# -- d. steady state ------------------------------------------------------------


def _produce(target: Target, rate: float | None, seconds: float) -> tuple[int, float, float]:
    """Offer ``rate`` jobs/s (None: back-to-back enqueue_many of 100) for ``seconds``."""
    import burrow
    from benchmarks.app import Stamp, stamp_task

    queue = burrow.connect(target.dsn, schema=target.schema)
    try:
        start = time.time()
        end = start + seconds
        sent = 0
        while (now := time.time()) < end:
            if rate is None:
                due = 100
            else:
                due = int((now - start) * rate) + 1 - sent
                if due <= 0:
                    time.sleep(max(0.0, min(start + (sent + 1) / rate - now, end - now)))
                    continue
                due = min(due, 500)
            t = time.time()
            if due == 1:
                stamp_task.enqueue(queue, Stamp(t))
            else:
                stamp_task.enqueue_many(queue, [Stamp(t)] * due)
            sent += due
        return sent, start, time.time()
    finally:
        queue.close()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def bench_steady(target: Target, plan: Plan, batch_size: int, progress: Progress) -> list[Row]:
    kind = target.kind
    rows = []
    starts_dir = Path(target.workdir) / "starts"
    starts_dir.mkdir(exist_ok=True)
    target.reset(0)
    warmup = 0.5 if plan.quick else 1.0
    with SupervisorProcess(target, 2, batch_size, env={DIR_ENV: str(starts_dir)}) as sup:
        sup.start()
        for rate in plan.steady_rates:
            # Files are never removed: a worker keeps its file open. Windows are told apart by time.
            sent, begun, ended = _produce(target, rate, plan.steady_s)
            backlog = 0
            if rate is None:
                # Flat out, the backlog can take minutes to clear: measure what started, then drop the rest.
                time.sleep(0.5)
                backlog = target.counts().get("queued", 0)
                target.cancel_queued()
            wait_finished(target, sup, timeout_s=120)
            time.sleep(0.05)
            records = []
            for f in starts_dir.iterdir():
                for line in f.read_text().splitlines():
                    enq, started = line.split()
                    records.append((float(enq), float(started)))
            w0, w1 = begun + warmup, ended
            latencies = sorted(1000 * (s - e) for e, s in records if w0 <= e <= w1)
            started_in_window = sum(1 for _, s in records if w0 <= s <= w1)
            sustained = started_in_window / (w1 - w0)
            offered = sent / (ended - begun)
            label = "max" if rate is None else f"{rate:g}"
            p50, p95, p99 = (_percentile(latencies, q) for q in (0.50, 0.95, 0.99))
            extra = {"offered_rate": offered, "sent": sent, "backlog_dropped": backlog, "recorded": len(records), "window_s": w1 - w0,
                     "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "max": latencies[-1] if latencies else None,
                                    "samples": len(latencies)}, "workers": 2, "batch_size": batch_size}
            offered_note = f"offered {offered:,.0f}/s" + (
                f" (producer flat out, enqueue_many 100; latency of the jobs started, {backlog:,} never started)"
                if rate is None else "")
            rows.append(Row(f"{kind}.steady.{label}.rate", kind, "steady", f"offered {label}", sustained,
                            note=f"sustained jobs/s, {offered_note}, 2 workers", extra=extra))
            for name, value in (("p50", p50), ("p95", p95), ("p99", p99)):
                rows.append(Row(f"{kind}.steady.{label}.{name}", kind, "steady", f"offered {label}", value, unit="ms",
                                note=f"enqueue-to-start latency {name}"))
            progress(f"{kind} steady {label}: {sustained:,.0f} jobs/s (offered {offered:,.0f}/s), "
                     f"p50 {p50:.2f} ms p95 {p95:.2f} ms p99 {p99:.2f} ms")
    return rows


# -- e. realistic mixes ---------------------------------------------------------


def bench_mixes(claims: ClaimBench, plan: Plan, batch_size: int, progress: Progress) -> list[Row]:
    target, kind = claims.target, claims.target.kind
    rows = []
    kb = KILOBYTE.encode()
    result_payload = b'"' + kb + b'"'
    assert len(result_payload) == 1024

    mixes = [
        ("result1k", "result task returning 1 KB (raw: completion writes 1 KB)",
         lambda: drain(target, 2, batch_size, plan.mix_jobs, task="bench.result"),
         lambda: claims.measure(RAW, batch_size, 2, 0, task_jobs=plan.mix_jobs, result=result_payload)),
        ("retry10", "10% fail once, retried at once (with_backoff(0, 0)); jobs/s of jobs done",
         lambda: drain(target, 2, batch_size, plan.mix_jobs, task="bench.flaky", payload=b'{"fail":false}',
                       special=b'{"fail":true}', every=10),
         lambda: claims.measure(RAW, batch_size, 2, 0, task_jobs=plan.mix_jobs)),
    ]
    for label, note, ours_fn, raw_fn in mixes:
        results = []

        def supervised(fn: Callable[[], object] = ours_fn) -> float:
            result = fn()
            results.append(result)
            return result.rate  # type: ignore[attr-defined]

        ours, theirs = _alternate(plan.mix_rounds, supervised, raw_fn)
        attempts = [r.attempts for r in results]  # type: ignore[attr-defined]
        rows.append(Row(f"{kind}.mix.{label}", kind, "mix", label, median(ours), baseline=median(theirs), rounds=ours,
                        baseline_rounds=theirs, note=note + f"; {plan.mix_jobs:,} jobs, 2 workers",
                        extra={"jobs": plan.mix_jobs, "attempts": attempts, "batch_size": batch_size}))
        progress(_line(rows[-1]))
    return rows


# -- f. memory ------------------------------------------------------------------


def bench_memory(target: Target, plan: Plan, batch_size: int, progress: Progress) -> list[Row]:
    kind = target.kind
    target.reset(0)
    mb = 1024 * 1024
    with SupervisorProcess(target, 2, batch_size) as sup:
        sup.start()
        time.sleep(1.0)
        idle = sup.memory()
        left = plan.memory_jobs
        while left > 0:
            chunk = min(left, 50_000)
            target.add_jobs(chunk)
            left -= chunk
            wait_finished(target, sup, timeout_s=120 + chunk / 200)
        time.sleep(2.5)  # a heartbeat tick, so the supervisor's steady-state buffers are in
        after = sup.memory()
    growth = 100.0 * (after.rss - idle.rss) / idle.rss
    jobs = f"{plan.memory_jobs:,} jobs" + (" (quick mode: not the 200,000 of the full run)" if plan.quick else "")
    extra = {"idle": idle.__dict__, "after": after.__dict__, "jobs": plan.memory_jobs, "workers": 2}
    rows = [
        Row(f"{kind}.memory.idle", kind, "memory", "idle", idle.rss / mb, unit="MB",
            note=f"RSS sum, supervisor + 2 workers ({idle.processes} processes); PSS {idle.pss / mb:.1f} MB", extra=extra),
        Row(f"{kind}.memory.after", kind, "memory", "after", after.rss / mb, unit="MB",
            note=f"RSS sum after {jobs}; PSS {after.pss / mb:.1f} MB"),
        Row(f"{kind}.memory.growth", kind, "memory", "growth", growth, unit="%", note=f"RSS growth after {jobs}"),
    ]
    progress(f"{kind} memory: idle {idle.rss / mb:.1f} MB, after {after.rss / mb:.1f} MB ({growth:+.1f}%), {jobs}")
    return rows


# -- g. table size --------------------------------------------------------------

# Every old row is past these ages (they finished 2 to 23 hours ago), none past the
# defaults (24 h, failed 7 days), which the other supervisors run with.
PRUNE_ALL = '[retention]\nsucceeded = "1h"\nfailed = "1h"\ncancelled = "1h"\n'


def bench_table_size(target: Target, plan: Plan, batch_size: int, progress: Progress) -> list[Row]:
    """The drain of ``bench_drain`` (2 workers, ``drain_jobs``) beside millions of finished
    jobs, against the same drain on an empty table.

    The old rows live in a second schema, filled once; the empty side is ``target``,
    truncated before each round as in ``bench_drain``. Before each round on the big
    table the previous drain's jobs are deleted, whatever retention pruned is put back
    (same states), and both tables are ``VACUUM ANALYZE``d, so every round starts from
    the same ``tablesize_old`` old rows without dead ones. Rounds alternate empty/old
    (its own median for each ratio): first beside old rows under the default
    retention (nothing old enough to prune), then with retention at 1 hour, so the
    supervisor prunes (1,000 a turn, a turn every 0.25 s while there is more) while
    it drains.
    """
    kind = target.kind
    if kind != "postgresql" or not plan.tablesize_old:
        progress(f"{kind} tablesize: skipped ({'--quick' if kind == 'postgresql' else 'PostgreSQL only'})")
        return []
    n, old = plan.drain_jobs, plan.tablesize_old
    label = f"{old // 1_000_000}m" if old % 1_000_000 == 0 else f"{old // 1000}k"
    big = Target.create(kind)
    try:
        big.migrate()
        began = time.monotonic()
        big.add_finished(old)
        big.vacuum_analyze()
        fill_s = time.monotonic() - began
        composition = big.counts()
        progress(f"{kind} tablesize: {old:,} finished jobs in {fill_s:.1f} s ({composition})")
        next_g = old + 1
        watermark = big.max_id()  # the old rows are up to here; the drains' jobs come after

        def restore() -> int:
            """Put back what retention pruned (same states); the id the old rows end at."""
            nonlocal next_g, watermark
            big.drop_above(watermark)
            missing = {state: count - big.counts().get(state, 0) for state, count in composition.items()}
            for state, count in missing.items():
                if count > 0:
                    big.add_finished(count, first=next_g, state=state, spread=old)
                    next_g += count
            watermark = big.max_id()
            return watermark

        def empty() -> float:
            return drain(target, 2, batch_size, n).rate

        pruned: list[int] = []

        def pruning_began() -> bool:
            return sum(big.counts().values()) < sum(composition.values())

        def beside(config: str) -> Callable[[], float]:
            # Retention's first turn comes 10 s after the supervisor starts: with it on,
            # the jobs go in once that turn has pruned, so the drain runs beside it.
            fill_when = pruning_began if config else None

            def measure() -> float:
                result = drain(big, 2, batch_size, n, above_id=restore(), config=config, fill_when=fill_when)
                pruned.append(sum(composition.values()) - sum(big.counts().values()) + n)
                return result.rate
            return measure

        rows = []
        pairs = [(label, "", f"drain beside {old:,} finished jobs (same {old:,} every round, no dead rows), "
                             "default retention: none old enough"),
                 (f"{label}_pruning", PRUNE_ALL, f"as {label}, retention 1 h: all prunable, jobs added once "
                                                 "pruning began (1,000 a turn, every 0.25 s); put back before the next round")]
        empties: list[float] = []
        measured: list[tuple[str, str, list[float], list[float], list[int]]] = []
        for name, config, note in pairs:
            pruned.clear()
            ours, theirs = _alternate(plan.rounds, beside(config), empty)
            empties += theirs
            measured.append((name, note, ours, theirs, list(pruned)))
            progress(f"{kind}.tablesize.{name}: {median(ours):,.0f} jobs/s, empty {median(theirs):,.0f}, "
                     f"ratio {median(ours) / median(theirs):.2f}; pruned per round {pruned}")
        common = {"jobs": n, "workers": 2, "batch_size": batch_size, "old_rows": composition, "fill_s": fill_s}
        rows.append(Row(f"{kind}.tablesize.empty", kind, "tablesize", "empty table", median(empties), rounds=empties,
                        note=f"supervisor, {n:,} no-op jobs, 2 workers, batch {batch_size}, empty table; "
                             f"median of the {len(empties)} rounds beside the rows below",
                        extra=common))
        for name, note, ours, theirs, rows_pruned in measured:
            extra = {**common, "pruned_per_round": rows_pruned}
            rows.append(Row(f"{kind}.tablesize.{name}", kind, "tablesize", name, median(ours), baseline=median(theirs),
                            rounds=ours, baseline_rounds=theirs,
                            note=note + (f" ({'/'.join(f'{p:,}' for p in rows_pruned)} pruned)"
                                         if name.endswith("pruning") else "") + "; ratio: to the empty table",
                            extra=extra))
    finally:
        big.destroy()
    return rows


def _line(row: Row) -> str:
    ratio = f"  ratio {row.ratio:.2f}" if row.ratio is not None else ""
    base = f"  raw {row.baseline:,.0f}" if row.baseline is not None else ""
    return f"{row.key}: {row.value:,.0f} {row.unit}{base}{ratio}"

