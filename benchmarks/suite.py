"""The benchmarks (a to f), each returning table rows for one backend; table size and the remote
database have modules of their own (tablesize.py, remote.py)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import fixed
from benchmarks.app import DIR_ENV, KILOBYTE
from benchmarks.claimers import BURROW, FIXED, RAW, ClaimPool
from benchmarks.floors import AGAINST_FLOOR, AGAINST_KEYS, AGAINST_PAIRS_SHARE
from benchmarks.raw import RawQueue
from benchmarks.report import Row, median
from benchmarks.supervised import SupervisorProcess, TreeMemory, drain, fresh_drain, wait_finished
from benchmarks.target import Target
from benchmarks.versions import Version


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
    drain_rounds: int  # alternated rounds of every drain side (checkout, release, raw, fixed)
    drain_confirm_rounds: int  # more rounds when the checkout is below AGAINST_FLOOR of the release
    drain_batches: tuple[int, ...]  # batch-size sweep at 2 workers (1 round each)
    steady_rates: tuple[float | None, ...]  # None: as fast as the producer can
    steady_s: float
    mix_jobs: int
    mix_rounds: int
    memory_jobs: int
    tablesize_old: int  # finished jobs left in the table beside the drain (0: not run)
    remote_rtts_ms: tuple[float, ...]  # round trips added by the delaying proxy (empty: not run)
    remote_jobs: int
    remote_rounds: int

    @classmethod
    def full(cls) -> Plan:
        return cls(quick=False, rounds=3, enqueue_s=1.0, claim_s=1.0, claim_batches=(1, 10, 100, 1000),
                   claim_procs=(1, 2, 4), claim_extra=(), drain_workers=(1, 2, 4), drain_jobs=30_000, drain_rounds=3,
                   drain_confirm_rounds=0, drain_batches=(1, 100, 1000), steady_rates=(500, 1000, 2000, None),
                   steady_s=8.0, mix_jobs=20_000, mix_rounds=3, memory_jobs=200_000, tablesize_old=2_000_000,
                   remote_rtts_ms=(0.0, 2.0, 7.0), remote_jobs=30_000, remote_rounds=3)

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(quick=True, rounds=3, enqueue_s=0.25, claim_s=0.3, claim_batches=(1, 10, 100, 1000),
                   claim_procs=(1,), claim_extra=((100, 2),), drain_workers=(2,), drain_jobs=20_000, drain_rounds=5,
                   drain_confirm_rounds=4, drain_batches=(), steady_rates=(1000,), steady_s=2.0, mix_jobs=3_000,
                   mix_rounds=1, memory_jobs=5_000, tablesize_old=0, remote_rtts_ms=(), remote_jobs=0,
                   remote_rounds=0)


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
            progress(row_line(rows[-1]))
            if size in ASYNC_SIZES:
                rows.append(_bench_aenqueue(target, plan, size, raw_round))
                progress(row_line(rows[-1]))
    finally:
        queue.close()
        raw.close()
    return rows


ASYNC_SIZES = (1, 100)


def _bench_aenqueue(target: Target, plan: Plan, size: int, raw_round: Callable[[], float]) -> Row:
    """The async client beside the sync rows: one coroutine awaiting one call after another
    (task.aenqueue, or aenqueue_many of ``size``), on one event loop, against the same raw SQL."""
    import asyncio

    import burrow
    from benchmarks.app import Noop, noop_task

    payloads = [Noop()] * size
    with asyncio.Runner() as runner:
        aq = runner.run(burrow.aconnect(target.dsn, schema=target.schema))

        async def calls(deadline: float) -> int:
            done = 0
            while time.monotonic() < deadline:
                if size == 1:
                    await noop_task.aenqueue(aq, Noop())
                else:
                    await noop_task.aenqueue_many(aq, payloads)
                done += size
            return done

        def async_round() -> float:
            target.reset(0)
            runner.run(calls(time.monotonic() + 0.05))  # warm: connections open
            start = time.monotonic()
            done = runner.run(calls(start + plan.enqueue_s))
            return done / (time.monotonic() - start)

        try:
            ours, theirs = _alternate(plan.rounds, async_round, raw_round)
        finally:
            runner.run(aq.close())
    label = "one" if size == 1 else f"many{size}"
    what = "task.aenqueue, one job per call" if size == 1 else f"task.aenqueue_many, {size} per call"
    return Row(f"{target.kind}.aenqueue.{label}", target.kind, "aenqueue", label, median(ours),
               baseline=median(theirs), rounds=ours, baseline_rounds=theirs, note=what)


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
        for mode in (RAW, FIXED, BURROW):
            self.fill(mode, 2000 * len(self.pool.conns))
            self.pool.run(self.target, mode, 10, len(self.pool.conns), 0.2)

    def fill(self, mode: str, n: int) -> None:
        """``n`` due jobs in the table ``mode``'s loop claims from (the fixed loop has its own)."""
        if mode == FIXED:
            fixed.fill(self.target, n)
        else:
            self.target.reset(n)

    def measure(self, mode: str, batch: int, procs: int, duration: float, *, result: bytes | None = None,
                task_jobs: int | None = None) -> float:
        """One measurement: fill, run, rate. ``task_jobs``: drain exactly that many instead of timing."""
        if task_jobs is not None:
            self.fill(mode, task_jobs)
            done, seconds, _ = self.pool.run(self.target, mode, batch, procs, 600.0, result)
            if done != task_jobs:
                raise RuntimeError(f"{mode} loop finished {done} of {task_jobs} jobs")
            return done / seconds
        guess = self.rates.get((mode, batch, procs)) or _GUESS[self.target.kind][batch]
        size = int(min(600_000, max(guess * duration * 1.5, batch * procs * 4, 1000)))
        self.fill(mode, size)
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
        progress(row_line(rows[-1]))
    return rows


# -- c. drain -------------------------------------------------------------------


def rotate(rounds: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every side once a round, in order on even rounds and reversed on odd ones, so
    the first and the last swap places and neighbours stay neighbours."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for i in range(rounds):
        for name in order if i % 2 == 0 else reversed(order):
            results[name].append(sides[name]())
    return results


def _extend(results: dict[str, list[float]], more: dict[str, list[float]]) -> None:
    for name, values in more.items():
        results[name] += values


@dataclass(frozen=True)
class ReleaseComparison:
    """The checkout's drain beside a release's, from the same alternated rounds.

    ``speed`` is the checkout's jobs/s over the release's (medians), the figure the
    table shows; ``cpu`` the release's CPU per job over the checkout's (medians;
    supervisor, workers and their PostgreSQL backends), which a busy neighbour moves
    far less (see benchmarks/cpu.py); ``pairs_below`` the share of rounds in which the
    checkout's jobs/s fell below the floor of the release's run next to it.
    """

    speed: float
    cpu: float
    pairs_below: float
    rounds: int

    @classmethod
    def of(cls, ours: list[float], theirs: list[float], our_cpu: list[float], their_cpu: list[float]) -> ReleaseComparison:
        pairs = [a / b for a, b in zip(ours, theirs) if b]
        return cls(median(ours) / median(theirs), median(their_cpu) / median(our_cpu),
                   sum(1 for r in pairs if r < AGAINST_FLOOR) / max(len(pairs), 1), len(pairs))

    def below(self) -> str | None:
        """Why the checkout counts as below AGAINST_FLOOR of the release, or None.

        Either its CPU per job is (more work per job: heavier SQL, more Python), or its
        jobs/s were below in at least AGAINST_PAIRS_SHARE of the rounds (a wait or a stall
        that costs no CPU). A slower median alone is not enough: on a shared 2-core
        machine single rounds differ by 2x, and a neighbour must not fail the run.
        """
        if self.cpu < AGAINST_FLOOR:
            return f"CPU per job at {self.cpu:.3f} of the release's"
        if self.pairs_below >= AGAINST_PAIRS_SHARE and self.speed < AGAINST_FLOOR:
            return f"jobs/s at {self.speed:.3f} of the release's, below {AGAINST_FLOOR} in {self.pairs_below:.0%} of {self.rounds} rounds"
        return None


def bench_drain(claims: ClaimBench, plan: Plan, batch_size: int, progress: Progress,
                against: Version | None = None) -> list[Row]:
    """The real supervisor draining ``drain_jobs``, each run in a database of its own,
    beside the raw loop on burrow's statements, the fixed textbook loop and (with
    ``against``) an earlier release's supervisor, all alternated round by round."""
    target, kind = claims.target, claims.target.kind
    checkout = Version.checkout()
    rows = []
    for workers in plan.drain_workers:
        details: dict[str, list[dict[str, float | None]]] = {"burrow": [], "against": []}

        def supervised(version: Version, side: str, workers: int = workers) -> Callable[[], float]:
            def measure() -> float:
                result = fresh_drain(kind, version, workers, batch_size, plan.drain_jobs)
                details[side].append({"rate": result.rate, "seconds": result.seconds,
                                      "from_start_s": result.from_start_s, "log_lines": result.log_lines,
                                      "cpu_client_s": result.cpu_client_s, "cpu_server_s": result.cpu_server_s,
                                      "cpu_ms_per_job": result.cpu_ms_per_job})
                return result.rate
            return measure

        def cpu_of(side: str) -> list[float]:
            return [float(run["cpu_ms_per_job"] or 0.0) for run in details[side]]

        sides: dict[str, Callable[[], float]] = {"burrow": supervised(checkout, "burrow")}
        if against is not None:
            sides["against"] = supervised(against, "against")
        sides[RAW] = functools.partial(claims.measure, RAW, batch_size, workers, 0, task_jobs=plan.drain_jobs)
        sides[FIXED] = functools.partial(claims.measure, FIXED, batch_size, workers, 0, task_jobs=plan.drain_jobs)
        results = rotate(plan.drain_rounds, sides)
        key = f"{kind}.drain.w{workers}"
        comparison = None
        if against is not None:
            comparison = ReleaseComparison.of(results["burrow"], results["against"], cpu_of("burrow"), cpu_of("against"))
            gated = key in AGAINST_KEYS and plan.quick
            if gated and plan.drain_confirm_rounds and comparison.below():
                # Below the line: more rounds before the figure may fail the run.
                progress(f"{key}: jobs/s {comparison.speed:.3f}, CPU {comparison.cpu:.3f} of {against.label} after "
                         f"{comparison.rounds} rounds: {plan.drain_confirm_rounds} more rounds")
                _extend(results, rotate(plan.drain_confirm_rounds, sides))
                comparison = ReleaseComparison.of(results["burrow"], results["against"], cpu_of("burrow"),
                                                  cpu_of("against"))
        ours = results["burrow"]
        extra: dict[str, object] = {"jobs": plan.drain_jobs, "workers": workers, "batch_size": batch_size,
                                    "fresh_database_per_run": True, "supervisor_runs": details["burrow"],
                                    "cpu_ms_per_job": median(cpu_of("burrow"))}
        row = Row(key, kind, "drain", f"{workers} workers, batch {batch_size}", median(ours),
                  baseline=median(results[RAW]), rounds=ours, baseline_rounds=results[RAW],
                  fixed=median(results[FIXED]), fixed_rounds=results[FIXED],
                  note=f"supervisor, {plan.drain_jobs:,} no-op jobs, batch {batch_size}, {len(ours)} rounds;"
                       f" raw: {workers} proc", extra=extra)
        if against is not None and comparison is not None:
            row.against, row.against_rounds, row.against_label = median(results["against"]), results["against"], against.label
            row.against_cpu = comparison.cpu
            extra["against"] = {"label": against.label, "commit": against.commit, "supervisor_runs": details["against"],
                                "cpu_ms_per_job": median(cpu_of("against")),
                                "paired_ratios": [a / b for a, b in zip(ours, results["against"])],
                                "speed": comparison.speed, "cpu": comparison.cpu,
                                "pairs_below": comparison.pairs_below, "below": comparison.below()}
        rows.append(row)
        progress(row_line(row))
    rows.append(_drain_at_info(target, plan, batch_size))
    progress(row_line(rows[-1]))
    for batch in plan.drain_batches:
        if batch == batch_size:
            continue
        jobs = min(plan.drain_jobs, 5_000 if batch == 1 else plan.drain_jobs)
        ours = [drain(target, 2, batch, jobs).rate]
        theirs = [claims.measure(RAW, batch, 2, 0, task_jobs=jobs)]
        rows.append(Row(f"{kind}.drain.w2.b{batch}", kind, "drain", f"2 workers, batch {batch}", ours[0],
                        baseline=theirs[0], rounds=ours, baseline_rounds=theirs,
                        note=f"batch-size sweep, {jobs:,} jobs, 1 round", extra={"jobs": jobs, "batch_size": batch}))
        progress(row_line(rows[-1]))
    return rows


def _drain_at_info(target: Target, plan: Plan, batch_size: int) -> Row:
    """The drain at burrow's default log level, info, where each job writes two lines
    (job_started, job_succeeded): the suite's other drains run at warning, which
    hides what those lines cost. Alternated with the same drain at warning, 3 rounds
    in --quick too: its floor reads a median, not one pair of drains."""
    jobs, rounds = plan.drain_jobs, 3

    def at(level: str) -> Callable[[], float]:
        return lambda: drain(target, 2, batch_size, jobs, log_level=level).rate

    ours, theirs = _alternate(rounds, at("info"), at("warning"))
    return Row(f"{target.kind}.drain.w2.info", target.kind, "drain", f"2 workers, batch {batch_size}, log level info",
               median(ours), baseline=median(theirs), rounds=ours, baseline_rounds=theirs,
               note=f"two log lines a job (burrow's default level) to a file; {jobs:,} jobs,"
                    f" {rounds} rounds;"
                    " ratio: to the same drain at warning",
               extra={"jobs": jobs, "batch_size": batch_size, "log_level": "info"})


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
        progress(row_line(rows[-1]))
    return rows


# -- f. memory ------------------------------------------------------------------


def bench_memory(target: Target, plan: Plan, batch_size: int, progress: Progress) -> list[Row]:
    kind = target.kind
    target.reset(0)
    mb = 1024 * 1024
    first_half = plan.memory_jobs // 2
    with SupervisorProcess(target, 2, batch_size) as sup:
        sup.start()
        time.sleep(1.0)
        idle = sup.memory()
        half = _memory_after(target, sup, first_half)
        after = _memory_after(target, sup, plan.memory_jobs - first_half)
    growth = 100.0 * (after.rss - idle.rss) / idle.rss
    # A leak grows with the jobs run; a warm-up (buffers sized by the first big claims
    # and writes, library pages first run) is over by half-way.
    second_half = 100.0 * (after.rss - half.rss) / half.rss
    jobs = f"{plan.memory_jobs:,} jobs" + (" (quick mode: not the 200,000 of the full run)" if plan.quick else "")
    extra = {"idle": idle.__dict__, "half": half.__dict__, "after": after.__dict__, "jobs": plan.memory_jobs, "workers": 2}
    rows = [
        Row(f"{kind}.memory.idle", kind, "memory", "idle", idle.rss / mb, unit="MB",
            note=f"RSS sum, supervisor + 2 workers ({idle.processes} processes); PSS {idle.pss / mb:.1f} MB", extra=extra),
        Row(f"{kind}.memory.after", kind, "memory", "after", after.rss / mb, unit="MB",
            note=f"RSS sum after {jobs}; PSS {after.pss / mb:.1f} MB"),
        Row(f"{kind}.memory.growth", kind, "memory", "growth", growth, unit="%", note=f"RSS growth after {jobs}"),
        Row(f"{kind}.memory.growth.second_half", kind, "memory", "growth.second_half", second_half, unit="%",
            note=f"RSS growth over the second half of the {jobs}, from {half.rss / mb:.1f} MB: a leak shows here"),
    ]
    progress(f"{kind} memory: idle {idle.rss / mb:.1f} MB, half-way {half.rss / mb:.1f} MB, after {after.rss / mb:.1f} MB"
             f" ({growth:+.1f}%; second half {second_half:+.1f}%), {jobs}")
    return rows


def _memory_after(target: Target, sup: SupervisorProcess, jobs: int) -> TreeMemory:
    """The tree's memory once ``jobs`` more jobs have run, fed 50,000 at a time."""
    left = jobs
    while left > 0:
        chunk = min(left, 50_000)
        target.add_jobs(chunk)
        left -= chunk
        wait_finished(target, sup, timeout_s=120 + chunk / 200)
    time.sleep(2.5)  # a heartbeat tick, so the supervisor's steady-state buffers are in
    return sup.memory()


def row_line(row: Row) -> str:
    """A row as the progress log shows it."""
    ratio = f"  ratio {row.ratio:.2f}" if row.ratio is not None else ""
    base = f"  raw {row.baseline:,.0f}" if row.baseline is not None else ""
    fixed_ = f"  fixed raw {row.fixed:,.0f} ({row.fixed_ratio:.2f})" if row.fixed_ratio is not None else ""
    vs = (f"  {row.against_label} {row.against:,.0f} ({row.vs_against:.3f}, CPU {row.against_cpu:.3f})"
          if row.vs_against is not None and row.against_cpu is not None else "")
    return f"{row.key}: {row.value:,.0f} {row.unit}{base}{ratio}{fixed_}{vs}"

