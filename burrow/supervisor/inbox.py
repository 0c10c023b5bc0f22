"""The inbox: what the workers say on their pipes, read and acted on in the loop's turn.

Claims go into the worker's in-flight table, results into the outbox, hellos
make a worker booted. This is the hot path of every job (claimed, result), so
the objects it uses on every message are looked up once, here, not through the
Context on each; the frames themselves are decoded by protocol.py.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import structlog

from burrow.backends.records import OutcomeKind
from burrow.errors import BackendError, ProtocolError
from burrow.supervisor import protocol
from burrow.supervisor.children import InFlight, WorkerHandle
from burrow.supervisor.context import Context
from burrow.supervisor.services.leases import stop_lost_run

log = structlog.get_logger("burrow.supervisor")


class Inbox:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # The same objects for the supervisor's life (a reload renews the pools in place).
        self.outbox = ctx.outbox
        self.telemetry = ctx.telemetry
        self.pools = ctx.pools

    def on_readable(self, handle: WorkerHandle) -> None:
        try:
            data = os.read(handle.read_fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.on_eof(handle)
            return
        now = time.monotonic()
        handle.last_heard_mono = now
        try:
            for message in handle.decoder.feed(data):
                self.on_message(handle, message, now)
        except (ProtocolError, KeyError, TypeError, ValueError) as exc:
            log.error("worker_protocol_error", worker_pid=handle.pid, error=str(exc))
            self.on_eof(handle)
            handle.owner = None  # claims it announced may be lost with the stream: leave them to the lease
            handle.kill(f"protocol error: {exc}")

    def on_eof(self, handle: WorkerHandle) -> None:
        if not handle.eof:
            handle.eof = True
            self.ctx.selector.unregister(handle.read_fd)

    def on_message(self, handle: WorkerHandle, message: dict[str, Any], now: float) -> None:
        kind = message["t"]
        if kind == protocol.RESULT:
            self.on_result(handle, message, now)
        elif kind == protocol.CLAIMED:
            jobs = protocol.claimed_jobs(message["jobs"], message["owner"])
            since = message.get("since")
            leased = min(since, now) if isinstance(since, float) else now
            handle.inflight.extend(InFlight(job, leased) for job in jobs)
            self.telemetry.claimed(len(jobs))
            handle.inflight[0].started_mono = handle.inflight[0].started_mono or now
            handle.idle = False
        elif kind == protocol.READY:
            # A job that arrived after the empty claim began may have notified us before
            # this READY came in, when the worker was not idle yet: wake it at once then.
            since = message.get("since")
            if isinstance(since, float) and self.ctx.notified_mono >= since and not handle.stopping:
                handle.send(protocol.wake())
            else:
                handle.idle = True
        elif kind == protocol.HELLO:
            protocol.check_hello(message)
            owner = message.get("owner")
            handle.owner = owner if isinstance(owner, str) else None
            handle.booted = True
            self._register_worker(handle)
            self._maybe_ready()
        elif kind == protocol.PROGRESS:
            job_id, attempt, fraction, text = protocol.progress_of(message)
            for flight in handle.inflight:
                if flight.job.id == job_id and flight.job.attempt == attempt:
                    flight.progress = (fraction, text)
                    break
            # A job reported meanwhile: its progress is of no use any more.
        elif kind != protocol.HEARTBEAT:
            raise ProtocolError(f"unexpected message type {kind!r}")

    def on_result(self, handle: WorkerHandle, message: dict[str, Any], now: float) -> None:
        job_id = message["id"]
        if job_id in handle.cancelled:  # written off as cancelled: its result is dropped
            handle.cancelled.discard(job_id)
            handle.cancel_deadline_mono = None
            self._next_started(handle, now)
            return
        for index, flight in enumerate(handle.inflight):
            if flight.job.id == job_id:
                del handle.inflight[index]
                break
        else:
            raise ProtocolError(f"result for job {job_id}, which this worker did not claim")
        outcome = protocol.decode_result(message, flight.job.owner)
        if not flight.lease_lost:  # else another process owns the job: its outcome is that one's to write
            self.outbox.settle(outcome, flight.job.task)
            if outcome.kind is OutcomeKind.CANCELLED:  # its handler saw the request before we did
                job = flight.job
                log.info("job_cancelled", job_id=job.id, task=job.task, attempt=job.attempt, worker_pid=handle.pid, running=True)
        self._next_started(handle, now)
        if outcome.kind is not OutcomeKind.RELEASED:
            handle.jobs_done += 1
            self.ctx.jobs_done += 1
            self.pools.job_done(handle)

    def _next_started(self, handle: WorkerHandle, now: float) -> None:
        """The worker reported a job: the next one it claimed is the one running now."""
        if handle.inflight and handle.inflight[0].started_mono is None:
            handle.inflight[0].started_mono = now
            if handle.inflight[0].lease_lost:
                stop_lost_run(handle, handle.inflight[0], now)

    def _register_worker(self, handle: WorkerHandle) -> None:
        """The worker's row in burrow_processes, heartbeated with ours, so that operators
        see it; a row that cannot be written now is written on the next heartbeat."""
        if handle.owner is None:
            return
        try:
            self.ctx.backend.register_process(handle.owner, socket.gethostname(), handle.pid, handle.role)
        except BackendError as exc:
            log.warning("process_row_not_written", worker_pid=handle.pid, error=str(exc))

    def _maybe_ready(self) -> None:
        ctx = self.ctx
        if not ctx.ready_sent and self.pools.ready():
            ctx.ready_sent = True
            ctx.notifier.ready()
            log.info("supervisor_ready", workers=len(self.pools.workers()), pools=self.pools.describe())
