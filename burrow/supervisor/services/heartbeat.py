"""Process heartbeat: our row in burrow_processes and our booted workers', then systemd's watchdog.

Operators see live processes by these rows, and any supervisor's reaper removes
rows gone stale. The watchdog is fed only here, so only a database that answers
keeps systemd from restarting us.
"""

from __future__ import annotations

import os
import socket

from burrow.supervisor.context import Context


class ProcessHeartbeat:
    name = "process"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return ctx.config.supervisor.heartbeat_interval_s

    def run(self, ctx: Context, now: float) -> None:
        """Rows the heartbeat found missing (a reaper removed them while we were away)
        are written anew."""
        workers = {h.owner: h for h in ctx.pools.workers() if h.owner is not None and h.booted}
        for owner in ctx.backend.heartbeat_processes([ctx.owner, *workers]):
            if owner == ctx.owner:  # our tasks went with our row
                ctx.backend.register_process(owner, socket.gethostname(), os.getpid(), "supervisor")
                ctx.register_tasks()
            else:
                ctx.backend.register_process(owner, socket.gethostname(), workers[owner].pid, workers[owner].role)
        ctx.last_heartbeat_mono = now
        ctx.notifier.watchdog()
