"""Unhandled tasks: due jobs whose task no live supervisor handles, named once in the log.

A job enqueued under a task name nobody registered (a typo, an app not deployed,
a pool's app missing) would wait in ``queued`` forever and nothing would say so.
Every supervisor looks, through the task registry (burrow_tasks, written at start
and on reload), and warns once per task until it is handled again; the metric
``burrow_jobs_unhandled{task}`` and ``burrow status`` show the same counts.
"""

from __future__ import annotations

import structlog

from burrow.supervisor.context import Context

log = structlog.get_logger("burrow.supervisor")

# A GROUP BY over the due queued jobs: cheap on a short queue, not on a backlog of
# millions, so once a minute (after the first look, soon after start).
_CHECK_S = 60.0


class Unhandled:
    name = "unhandled"
    first_s = 5.0

    def interval(self, ctx: Context) -> float:
        return _CHECK_S

    def run(self, ctx: Context, now: float) -> None:
        found = ctx.backend.unhandled(ctx.stale_after_s())
        for task in sorted(found.keys() - ctx.unhandled_warned):
            log.warning(
                "jobs_unhandled", task=task, due_jobs=found[task],
                detail="no live supervisor handles this task: its jobs wait until one does",
            )  # fmt: skip
        ctx.unhandled_warned = set(found)
        if ctx.telemetry.metrics is not None:
            ctx.telemetry.metrics.unhandled(found)
