"""The outage guard: with the database away, stop in-flight work before our leases can lapse.

Past that point another supervisor may reap and re-run the jobs; killing ours
first keeps an outage from turning into duplicate runs. It costs no database
call, so it looks on every turn of the loop.
"""

from __future__ import annotations

from burrow.backends.deadline import Timeouts
from burrow.config import SupervisorConfig
from burrow.supervisor.context import Context
from burrow.supervisor.services.base import EVERY_TURN


class OutageGuard:
    name = "guard"
    first_s = 0.0
    between_runs = True  # also after each timed service of a turn (runner.Runner._between)

    def interval(self, ctx: Context) -> float:
        return EVERY_TURN

    def run(self, ctx: Context, now: float) -> None:
        """Checked against each lease's age (since its claim began or its last
        extension went through), not only when an extension fails: a call into a
        partition returns only at its deadline, and a job claimed after the
        database came back has a fresh lease however long the outage was. The
        margin is two heartbeats and one such call (connect timeout and deadline)
        before the lease would lapse (guard_after_s). The outage is not the jobs'
        fault: each stopped run is released (a RELEASED outcome with the reason,
        its attempt given back, written once the database answers), so a job on
        its last attempt is run again rather than failed. Our own reaper writes
        our outcomes before it reaps; another supervisor's reaper that gets to the
        job first treats it as any expired lease.
        """
        guard_after_s = ctx.guard_after_s
        for handle in ctx.pools.workers():
            if any(now - f.leased_mono >= guard_after_s for f in handle.inflight if not f.lease_lost):
                if handle.kill_reason is None:  # else killed for its own reason (a timeout), and charged for it
                    handle.release_running = True
                handle.kill("database unreachable: stopped before the lease could lapse")


def guard_after_s(settings: SupervisorConfig) -> float:
    """How long the leases may go unextended before the outage guard stops the runs.

    Two heartbeats and the longest call before the lease lapses: the turn that
    sees the threshold pass may be stuck in a call into a partition until that
    call's connect timeout and deadline are both spent. Never before half the
    lease: with a lease too short for that margin (a test's), a slow turn of a
    loaded machine would otherwise count as an outage.
    """
    worst_call_s = Timeouts.for_supervisor(settings.heartbeat_interval_s).worst_call_s
    lease_s = settings.lease_timeout_s
    return max(lease_s - 2 * settings.heartbeat_interval_s - worst_call_s, lease_s / 2)
