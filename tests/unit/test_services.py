"""The supervisor's services (burrow.supervisor.services): each in SERVICES keeps to the
Service interface under a name of its own; and, driven by a Context over a real SQLite
file, the outbox writes outcomes, the reaper writes ours before it reaps, and the lease
and cancel services act on the in-flight table."""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import burrow
from burrow.backends.records import ClaimedJob, Outcome, OutcomeKind
from burrow.config import Config
from burrow.job import JobState
from burrow.queue import JobQueue, new_owner
from burrow.supervisor import protocol
from burrow.supervisor.children import InFlight, WorkerHandle
from burrow.supervisor.context import Context
from burrow.supervisor.outbox import Outbox
from burrow.supervisor.pool import Pools
from burrow.supervisor.protocol import FrameDecoder
from burrow.supervisor.services.base import EVERY_TURN, Service
from burrow.supervisor.services.cancels import Cancels
from burrow.supervisor.services.guard import guard_after_s
from burrow.supervisor.services.leases import Leases
from burrow.supervisor.services.reaper import Reaper
from burrow.supervisor.services.registry import SERVICES
from burrow.supervisor.services.runner import Runner
from burrow.supervisor.systemd import Notifier
from burrow.supervisor.telemetry import Telemetry


def nothing(payload: dict[str, int]) -> None:
    return None


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    q = burrow.connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    burrow.define_task("svc.nothing", nothing).register(q)
    yield q
    q.close()


@pytest.fixture
def ctx(queue: JobQueue) -> Iterator[Context]:
    config = Config()
    telemetry = Telemetry(None)
    context = Context(
        config=config,
        queue=queue,
        backend=queue.backend,
        owner=new_owner("supervisor"),
        pools=Pools(config.supervisor),
        telemetry=telemetry,
        notifier=Notifier(None),
        outbox=Outbox(queue.backend, telemetry, config.supervisor.flush_interval_s),
        selector=selectors.DefaultSelector(),
        guard_after_s=guard_after_s(config.supervisor),
    )
    yield context
    context.selector.close()


def test_every_service_keeps_to_the_interface_under_a_name_of_its_own(ctx: Context) -> None:
    names = [service.name for service in SERVICES]
    assert len(names) == len(set(names)), names
    for service in SERVICES:
        assert isinstance(service, Service), service
        assert isinstance(service.name, str) and service.name
        interval = service.interval(ctx)
        assert interval == EVERY_TURN or interval > 0, (service.name, interval)
        assert service.first_s >= 0
    Runner(ctx, SERVICES, time.monotonic())  # which refuses a name twice


def claim(queue: JobQueue, count: int) -> list[ClaimedJob]:
    for n in range(count):
        queue.enqueue("svc.nothing", {"n": n})
    return queue.claim(["svc.nothing"], count, 30.0)


def test_the_outbox_writes_settled_outcomes_in_one_flush_when_due(ctx: Context, queue: JobQueue) -> None:
    """At most one write per flush_interval, counted from the last write's start: the
    first outcomes after a quiet spell go at once, the next ones wait out the rest of
    the interval (gathered into one write), then go together."""
    first, *rest = claim(queue, 3)
    outbox = ctx.outbox
    interval = ctx.config.supervisor.flush_interval_s

    def settle(job: ClaimedJob) -> None:
        outbox.settle(Outcome(job.id, job.owner, job.attempt, OutcomeKind.SUCCEEDED, result=b"1", duration_s=0.01), job.task)

    settle(first)
    now = time.monotonic()
    outbox.flush(now)  # nothing written for a while: due at once
    assert outbox.pending == [] and queue.job(first.id).state is JobState.SUCCEEDED
    for job in rest:
        settle(job)
    outbox.flush(now + interval / 2)  # within the interval of the last write: not due
    assert len(outbox.pending) == 2
    assert all(queue.job(job.id).state is JobState.RUNNING for job in rest)
    assert outbox.due_mono(now + interval / 2) == now + interval
    outbox.flush(outbox.due_mono(now))
    assert outbox.pending == [] and not outbox.waiting()
    assert [queue.job(job.id).state for job in rest] == [JobState.SUCCEEDED] * 2
    assert queue.job(first.id).result == b"1"


def test_the_reaper_writes_our_outcomes_first_through_the_runner(ctx: Context, queue: JobQueue) -> None:
    (job,) = claim(queue, 1)
    ctx.outbox.settle(Outcome(job.id, job.owner, job.attempt, OutcomeKind.FAILED, error="boom"), job.task)
    runner = Runner(ctx, [Reaper()], time.monotonic())
    ctx.run_at = runner.run_at
    assert runner.run(time.monotonic()) == []
    assert not ctx.outbox.waiting()
    assert queue.job(job.id).state is JobState.FAILED


def held_by_a_worker(ctx: Context, jobs: list[ClaimedJob], now: float) -> WorkerHandle:
    """A worker handle in the default pool, holding ``jobs`` (the first running), over a
    real pipe: nothing is forked."""
    read_fd, write_fd = os.pipe()
    handle = WorkerHandle(pid=2**22 + 1, generation=0, read_fd=read_fd, write_fd=write_fd, spawned_mono=now)
    handle.inflight.extend(InFlight(job, now) for job in jobs)
    handle.inflight[0].started_mono = now
    ctx.pools.default.workers[handle.pid] = handle
    return handle


def test_leases_are_extended_and_the_outage_clock_reset(ctx: Context, queue: JobQueue) -> None:
    jobs = claim(queue, 2)
    before = time.monotonic()
    handle = held_by_a_worker(ctx, jobs, before - 5.0)
    try:
        Leases().run(ctx, before)
        assert ctx.last_db_ok_mono == before
        assert [f.leased_mono for f in handle.inflight] == [before, before]
        assert not any(f.lease_lost for f in handle.inflight)
    finally:
        handle.close()


def test_a_cancelled_job_not_started_is_written_off_and_its_worker_told(ctx: Context, queue: JobQueue) -> None:
    running, waiting = claim(queue, 2)
    now = time.monotonic()
    handle = held_by_a_worker(ctx, [running, waiting], now)
    try:
        assert queue.cancel(waiting.id)
        Cancels().run(ctx, now)
        assert [f.job.id for f in handle.inflight] == [running.id]
        assert handle.cancelled == {waiting.id}
        assert handle.cancel_deadline_mono is None  # the running job was not the one
        assert queue.job(waiting.id).state is JobState.CANCELLED  # flushed at once
        assert queue.job(running.id).state is JobState.RUNNING
        # The handle's one pipe loops back: what the worker would read.
        assert FrameDecoder().feed(os.read(handle.read_fd, 1 << 16)) == [protocol.cancel(waiting.id)]
    finally:
        handle.close()


def test_the_status_line_and_telemetry_name_paused_queues(ctx: Context, queue: JobQueue) -> None:
    from burrow.supervisor.services.status import StatusReport
    from burrow.supervisor.services.telemetry import TelemetryRefresh

    lines: list[str] = []

    class Recorder(Notifier):
        def status(self, text: str) -> bool:
            lines.append(text)
            return True

    ctx.notifier = Recorder(None)
    queue.pause_queue("mail", actor="test")
    queue.pause_queue("bulk", actor="test")
    TelemetryRefresh().run(ctx, time.monotonic())
    StatusReport().run(ctx, time.monotonic())
    assert ctx.paused_queues == ["bulk", "mail"]
    assert lines[-1].endswith("; paused queues: bulk, mail")
    queue.resume_queue("mail", actor="test")
    queue.resume_queue("bulk", actor="test")
    TelemetryRefresh().run(ctx, time.monotonic())
    StatusReport().run(ctx, time.monotonic())
    assert "paused" not in lines[-1]


def test_leases_write_the_latest_progress_once(ctx: Context, queue: JobQueue) -> None:
    jobs = claim(queue, 2)
    now = time.monotonic()
    handle = held_by_a_worker(ctx, jobs, now)
    try:
        handle.inflight[0].progress = (0.3, "three of ten")
        Leases().run(ctx, now)
        assert (queue.job(jobs[0].id).progress, queue.job(jobs[0].id).progress_message) == (0.3, "three of ten")
        assert queue.job(jobs[1].id).progress is None
        assert handle.inflight[0].progress is None  # written: not again next heartbeat
    finally:
        handle.close()
