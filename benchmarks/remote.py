"""A remote database: the PostgreSQL drain with every supervisor connection through a
proxy that adds a round trip of 0, 2 or 7 ms (benchmarks/delay_proxy.py).

Rounds alternate the direct drain and the proxied ones (each in a database of its
own, as the ``drain`` rows); each ratio is to the direct drain of the same run. The
harness's own connections (fill, progress polls, timing) stay direct: only what
the supervisor and its workers send is delayed. Timing is the drain's, from the
database: first claim to last stored result.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import psycopg

from benchmarks import postgres_dsn
from benchmarks.delay_proxy import DelayProxy, measured_rtt_ms
from benchmarks.report import Row, median
from benchmarks.suite import ClaimBench, Plan, Progress, rotate
from benchmarks.supervised import fresh_drain
from benchmarks.versions import Version

WORKERS = 2


def _server(dsn: str) -> tuple[str, int]:
    parts = urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def bench_remote(claims: ClaimBench, plan: Plan, batch_size: int, progress: Progress) -> list[Row]:
    kind = claims.target.kind
    if kind != "postgresql" or not plan.remote_rtts_ms:
        progress(f"{kind} remote: skipped ({'--quick' if kind == 'postgresql' else 'PostgreSQL only'})")
        return []
    dsn = postgres_dsn()
    checkout = Version.checkout()
    proxies = [DelayProxy(_server(dsn), rtt) for rtt in plan.remote_rtts_ms]
    try:
        def round_trip(address: str) -> float:
            return measured_rtt_ms(lambda: psycopg.connect(address, autocommit=True))

        direct_rtt = round_trip(dsn)
        added = {p.rtt_ms: round_trip(p.dsn(dsn)) - direct_rtt for p in proxies}
        n = plan.remote_jobs

        def through(proxy: DelayProxy | None) -> Callable[[], float]:
            return lambda: fresh_drain(kind, checkout, WORKERS, batch_size, n,
                                       dsn=proxy.dsn(dsn) if proxy else None).rate

        sides = {"direct": through(None), **{f"rtt{p.rtt_ms:g}": through(p) for p in proxies}}
        results = rotate(plan.remote_rounds, sides)
    finally:
        for proxy in proxies:
            proxy.stop()
    direct = results.pop("direct")
    common = {"jobs": n, "workers": WORKERS, "batch_size": batch_size, "direct_rtt_ms": direct_rtt}
    rows = [Row(f"{kind}.remote.direct", kind, "remote", "direct", median(direct), rounds=direct,
                note=f"supervisor, {n:,} no-op jobs, {WORKERS} workers, batch {batch_size}, straight to the server "
                     f"(SELECT 1 round trip {direct_rtt:.2f} ms); fresh database per run",
                extra=common)]
    for proxy in proxies:
        name = f"rtt{proxy.rtt_ms:g}"
        ours = results[name]
        rows.append(Row(f"{kind}.remote.{name}", kind, "remote", name, median(ours), baseline=median(direct),
                        rounds=ours, baseline_rounds=direct,
                        note=f"the same through a proxy adding {proxy.rtt_ms:g} ms a round trip (measured: "
                             f"+{added[proxy.rtt_ms]:.2f} ms); ratio: to the direct drain",
                        extra={**common, "rtt_ms": proxy.rtt_ms, "added_rtt_ms_measured": added[proxy.rtt_ms]}))
        progress(f"{rows[-1].key}: {rows[-1].value:,.0f} jobs/s, direct {median(direct):,.0f},"
                 f" ratio {rows[-1].ratio:.2f} (+{added[proxy.rtt_ms]:.2f} ms measured)")
    return rows
