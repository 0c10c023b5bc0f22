"""What a supervisor duty is: a name, how often, and one run given the shared Context.

The loop used to time each duty by hand (leases, the process row, the reaper,
cancels, retention...), one ``next_*_mono`` field and one method each. A duty
is now a module of its own behind this small interface, and the loop runs the
list in registry.SERVICES (services/runner.py): a new duty is one new file and
one line there, not another field and branch in the loop. A service keeps no
state of its own; what it reads and changes is the Context's.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from burrow.supervisor.context import Context

# An interval meaning: on every turn of the loop, after the timed services. For
# checks that cost no database call and must not wait (deadlines, the outage guard).
EVERY_TURN: Final = 0.0


@runtime_checkable
class Service(Protocol):
    name: str  # unique: the runner's key (Context.run_at), and the log's "step"
    first_s: float  # how long after start the first run is (0: on the first turn)

    def interval(self, ctx: Context) -> float:
        """Seconds between runs under the current config, or EVERY_TURN.

        Asked at start and after a reload; a run already planned keeps its time.
        """
        ...

    def run(self, ctx: Context, now: float) -> None:
        """Do the duty once. A BackendError is this run's failure, logged; the
        service runs again after its interval. Any other exception is a bug."""
        ...
