"""Telemetry refresh: the gauges that are read from the database rather than counted
(queue depths, workers per pool), and the throughput rows the admin's chart reads."""

from __future__ import annotations

from burrow.supervisor.context import Context


class TelemetryRefresh:
    name = "telemetry"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return ctx.config.supervisor.heartbeat_interval_s

    def run(self, ctx: Context, now: float) -> None:
        ctx.paused_queues = ctx.backend.paused_queues()
        ctx.telemetry.refresh(ctx.queue, {pool.name: len(pool.workers) for pool in ctx.pools.all()}, ctx.paused_queues)
