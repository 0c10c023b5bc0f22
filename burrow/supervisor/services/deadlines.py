"""Deadlines: a worker that overran one is stopped (SIGTERM for its stack, SIGKILL after a grace).

A job past its timeout, a worker silent past three heartbeats, one that did not
boot, a cancelled job that did not stop, a drain past shutdown_timeout. No
database call, so it looks on every turn of the loop.
"""

from __future__ import annotations

import structlog

from burrow.supervisor.context import Context
from burrow.supervisor.services.base import EVERY_TURN
from burrow.supervisor.services.cancels import CANCEL_GRACE_S

log = structlog.get_logger("burrow.supervisor")

# How long a worker sent SIGTERM for a timeout or silence has to write its stack
# and die (milliseconds, as a rule) before SIGKILL: a handler that ignores or
# catches SIGTERM runs no longer than this.
TERM_GRACE_S = 1.0
_BOOT_TIMEOUT_S = 30.0


class Deadlines:
    name = "deadlines"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return EVERY_TURN

    def run(self, ctx: Context, now: float) -> None:
        silence_s = 3 * ctx.config.supervisor.heartbeat_interval_s
        sigkill_at = now + TERM_GRACE_S
        for handle in ctx.pools.workers():
            if handle.kill_reason is not None:
                if handle.sigkill_at_mono is not None and now >= handle.sigkill_at_mono:
                    detail = f"still running {TERM_GRACE_S:g}s after SIGTERM"
                    log.warning("worker_killed", worker_pid=handle.pid, reason=handle.kill_reason, detail=detail)
                    handle.kill(handle.kill_reason)
                continue
            if handle.cancel_deadline_mono is not None and now > handle.cancel_deadline_mono:
                handle.release_running = True  # its running job was written off; the rest go back
                handle.terminate(f"cancelled: the job did not stop within {CANCEL_GRACE_S:g}s of the request", sigkill_at)
            elif not handle.booted and now - handle.spawned_mono > _BOOT_TIMEOUT_S:
                handle.kill(f"worker did not boot within {_BOOT_TIMEOUT_S:g}s")
            elif now - handle.last_heard_mono > silence_s and not handle.has_unread():
                handle.terminate(f"worker silent for {now - handle.last_heard_mono:.1f}s (no heartbeat)", sigkill_at)
            elif (running := handle.running()) is not None and running.started_mono is not None:
                timeout_s = ctx.job_config(running.job.task).timeout_s
                if timeout_s is not None and now - running.started_mono > timeout_s:
                    handle.terminate(f"timeout: the job ran longer than {timeout_s:g}s", sigkill_at)
        if ctx.drain_deadline_mono is not None and now > ctx.drain_deadline_mono:
            for handle in ctx.pools.workers():
                if handle.kill_reason is None:
                    handle.kill("shutdown_timeout reached")
