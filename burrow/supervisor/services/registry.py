"""The supervisor's duties: the one list the loop runs (services/runner.py).

A new duty is one new module in this package and one line here. The order is
the order of runs due on the same turn (and of the EVERY_TURN ones after them):
leases first, so that a turn that reaches the database renews them before
anything slower.
"""

from __future__ import annotations

from burrow.supervisor.services.base import Service
from burrow.supervisor.services.cancels import Cancels
from burrow.supervisor.services.deadlines import Deadlines
from burrow.supervisor.services.guard import OutageGuard
from burrow.supervisor.services.heartbeat import ProcessHeartbeat
from burrow.supervisor.services.leases import Leases
from burrow.supervisor.services.listener import ListenerKeeper
from burrow.supervisor.services.reaper import Reaper
from burrow.supervisor.services.retention import Retention
from burrow.supervisor.services.schedules import Schedules
from burrow.supervisor.services.statistics import Statistics
from burrow.supervisor.services.status import StatusReport
from burrow.supervisor.services.telemetry import TelemetryRefresh
from burrow.supervisor.services.unhandled import Unhandled

SERVICES: tuple[Service, ...] = (
    Leases(),
    ProcessHeartbeat(),
    Reaper(),
    ListenerKeeper(),
    StatusReport(),
    Schedules(),
    Cancels(),
    TelemetryRefresh(),
    Retention(),
    Unhandled(),
    Statistics(),
    OutageGuard(),  # EVERY_TURN, after the timed ones
    Deadlines(),  # EVERY_TURN
)
