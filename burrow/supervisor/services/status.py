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
            f"{len(workers)} workers, {busy} busy, {ctx.jobs_done} jobs done, state {ctx.state.value};"
            f" pools: {ctx.pools.describe()}"
        )
