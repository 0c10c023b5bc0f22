"""The listener keeper: the backend's LISTEN connection (PostgreSQL), opened at start and
reopened after it is lost, and what its notifications wake.

A notification of new jobs wakes our idle workers at once instead of at their
next poll; one of a cancel runs the cancel poller at once. A backend without
LISTEN (SQLite) has no listener, and its workers poll.
"""

from __future__ import annotations

import selectors
import time

import structlog

from burrow.backends.records import CANCEL_NOTICE
from burrow.errors import BackendError
from burrow.supervisor import protocol
from burrow.supervisor.context import Context, State
from burrow.supervisor.services.cancels import Cancels

log = structlog.get_logger("burrow.supervisor")


class ListenerKeeper:
    name = "listener"
    first_s = 0.0

    def interval(self, ctx: Context) -> float:
        return ctx.config.supervisor.heartbeat_interval_s

    def run(self, ctx: Context, now: float) -> None:
        if ctx.listener is None and ctx.state is State.RUNNING:
            open_listener(ctx)


def listens(ctx: Context) -> bool:
    """Whether the backend has LISTEN: PostgreSQL, unless through a pooler without
    ``[database] listen_dsn`` (then the workers poll, as on SQLite)."""
    return getattr(ctx.backend, "listener", None) is not None and bool(getattr(ctx.backend, "listens", True))


def open_listener(ctx: Context) -> None:
    if not listens(ctx):
        return
    opener = ctx.backend.listener  # type: ignore[attr-defined]
    try:
        ctx.listener = opener()
    except BackendError as exc:
        log.warning("listen_failed", error=str(exc))
        return
    ctx.selector.register(ctx.listener, selectors.EVENT_READ, lambda: on_notify(ctx))


def on_notify(ctx: Context) -> None:
    if ctx.listener is None:
        return  # lost earlier in this turn; the listener keeper opens a new one
    try:
        payloads = ctx.listener.poll()
    except BackendError as exc:
        log.warning("listen_lost", error=str(exc))
        ctx.selector.unregister(ctx.listener)
        ctx.listener = None
        payloads = [""]
    if CANCEL_NOTICE in payloads:  # a job was cancelled: ours? look now, not at the next poll
        ctx.run_at(Cancels.name, time.monotonic())
    tasks = set(ctx.queue.registrations)
    if any(not p or tasks.intersection(p.split(",")) for p in payloads):
        ctx.notified_mono = time.monotonic()
        for handle in ctx.pools.workers():
            if handle.idle and not handle.stopping:
                handle.idle = False
                handle.send(protocol.wake())
