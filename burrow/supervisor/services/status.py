"""Status report: one line for systemd (``systemctl status``) on what the supervisor is doing."""

from __future__ import annotations

from burrow.supervisor.context import Context


class StatusReport:
    name = "status"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return ctx.config.supervisor.heartbeat_interval_s

    def run(self, ctx: Context, now: float) -> None:
        workers = ctx.pools.workers()
        busy = sum(1 for h in workers if h.inflight)
        ctx.notifier.status(
            f"{_count(len(workers), 'worker')}, {busy} busy, {_count(ctx.jobs_done, 'job')} done,"
            f" state {ctx.state.value};"
            f" pools: {ctx.pools.describe()}"
            + (f"; paused queues: {', '.join(ctx.paused_queues)}" if ctx.paused_queues else "")
        )


def _count(n: int, noun: str) -> str:
    """"1 worker", "2 workers"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
