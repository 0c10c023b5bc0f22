"""Periodic jobs: each due slot of a schedule enqueued once across every supervisor.

See JobQueue.enqueue_due_slots. Looked at often, so that a slot's job is
enqueued at most this late (its run_at is the slot's time all the same); a
database call only when a new slot is due.
"""

from __future__ import annotations

from burrow.supervisor.context import Context, State

# How often schedules are looked at. Costs no database call between slots.
_CHECK_S = 0.2


class Schedules:
    name = "schedules"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return _CHECK_S

    def run(self, ctx: Context, now: float) -> None:
        if ctx.state is State.RUNNING:
            ctx.queue.enqueue_due_slots()
