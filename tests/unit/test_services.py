"""The supervisor's services (burrow.supervisor.services): each in SERVICES keeps to the
Service interface under a name of its own; and, driven by a Context over a real SQLite
file and a real PostgreSQL schema, the outbox writes outcomes (on PostgreSQL from a
thread of its own, waking the loop when done), the reaper writes ours before it reaps,
and the lease and cancel services act on the in-flight table."""

from __future__ import annotations

import dataclasses
import os
import select
import selectors
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import structlog

import burrow
from burrow.backends.postgres import ANALYZE_MIN_ROWS
from burrow.backends.records import ClaimedJob, Outcome, OutcomeKind
from burrow.config import Config
from burrow.job import JobState
from burrow.queue import JobQueue, new_owner
from burrow.supervisor import protocol
from burrow.supervisor.children import InFlight, WorkerHandle
from burrow.supervisor.context import Context
from burrow.supervisor import outbox as outbox_module
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
from burrow.supervisor.services.statistics import Statistics
from burrow.supervisor.systemd import Notifier
from burrow.supervisor.telemetry import Telemetry
from tests.backends.helpers import insert_queued, rows
from tests.conftest import POSTGRES_DSN, Database
from tests.helpers import wait_until
from tests.proxy import proxy_to


def nothing(payload: dict[str, int]) -> None:
    return None


@pytest.fixture
def queue(database: Database) -> Iterator[JobQueue]:
    q = database.connect()
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
    context.outbox.close()
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


def settled(outbox: Outbox, now: float) -> None:
    """Wait (bounded) for a write under way to end, as the loop would on the wake fd, and settle it."""
    if outbox.wake_fd is not None:
        readable, _, _ = select.select([outbox.wake_fd], [], [], 10.0)
        assert readable, "the outbox's background write did not end within 10 s"
        outbox.on_wake()
    outbox.flush(now)


def succeed(outbox: Outbox, job: ClaimedJob) -> None:
    outbox.settle(Outcome(job.id, job.owner, job.attempt, OutcomeKind.SUCCEEDED, result=b"1", duration_s=0.01), job.task)


def a_write_under_way(ctx: Context, queue: JobQueue, n: int) -> tuple[list[ClaimedJob], float]:
    """``n`` claimed jobs: the first one's outcome handed to the outbox's writer at the
    returned time, the second's settled behind it."""
    jobs = claim(queue, n)
    succeed(ctx.outbox, jobs[0])
    now = time.monotonic()
    ctx.outbox.flush(now)
    succeed(ctx.outbox, jobs[1])
    return jobs, now


def test_the_outbox_writes_settled_outcomes_in_one_flush_when_due(ctx: Context, queue: JobQueue) -> None:
    """At most one write per flush_interval, counted from the last write's start: the
    first outcomes after a quiet spell go at once, the next ones wait out the rest of
    the interval (gathered into one write), then go together."""
    first, *rest = claim(queue, 3)
    outbox = ctx.outbox
    interval = ctx.config.supervisor.flush_interval_s
    assert (outbox.wake_fd is not None) == (queue.backend.dialect == "postgresql")

    succeed(outbox, first)
    now = time.monotonic()
    outbox.flush(now)  # nothing written for a while: due at once
    settled(outbox, now)
    assert outbox.pending == [] and queue.job(first.id).state is JobState.SUCCEEDED
    for job in rest:
        succeed(outbox, job)
    outbox.flush(now + interval / 2)  # within the interval of the last write: not due
    assert len(outbox.pending) == 2
    assert all(queue.job(job.id).state is JobState.RUNNING for job in rest)
    assert outbox.due_mono(now + interval / 2) == now + interval
    outbox.flush(outbox.due_mono(now))
    settled(outbox, now + interval)
    assert outbox.pending == [] and not outbox.waiting()
    assert [queue.job(job.id).state for job in rest] == [JobState.SUCCEEDED] * 2
    assert queue.job(first.id).result == b"1"


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_outcomes_settled_during_a_background_write_go_in_the_next(ctx: Context, queue: JobQueue) -> None:
    """The loop does not wait for a write: what arrives meanwhile waits for the next one,
    which is never due while a write is under way (its end wakes the loop instead);
    a forced flush waits for it, then writes the rest at once."""
    jobs, now = a_write_under_way(ctx, queue, 4)
    outbox = ctx.outbox
    outbox.flush(now + 1.0)  # due by the clock, but one write at a time
    assert outbox.due_mono(now + 1.0) == float("inf")
    settled(outbox, now + 1.0)  # settles the first and, due, sends the second
    settled(outbox, now + 2.0)
    assert [queue.job(job.id).state for job in jobs[:2]] == [JobState.SUCCEEDED] * 2
    succeed(outbox, jobs[2])
    outbox.flush(now + 3.0)
    succeed(outbox, jobs[3])
    outbox.flush(now + 3.0, force=True)  # as the reaper and shutdown do
    assert not outbox.waiting()
    assert [queue.job(job.id).state for job in jobs] == [JobState.SUCCEEDED] * 4


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_backlog_waits_for_the_write_under_way(ctx: Context, queue: JobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MOST_PENDING_WHILE_WRITING outcomes the loop stops reading on: it waits for
    the write under way, then hands the backlog to the writer at once, so the heap
    holds at most about that many outcomes and the pipes hold the rest."""
    monkeypatch.setattr(outbox_module, "MOST_PENDING_WHILE_WRITING", 2)
    monkeypatch.setattr(outbox_module, "FLUSH_AT_OUTCOMES", 2)  # below it, as 500 is below 1,000
    jobs, now = a_write_under_way(ctx, queue, 3)
    outbox = ctx.outbox
    outbox.flush(now)  # one waits: below the limit, the loop goes on
    succeed(outbox, jobs[2])
    outbox.flush(now)  # two wait: the first write is awaited, the two go to the writer
    assert queue.job(jobs[0].id).state is JobState.SUCCEEDED
    assert outbox.pending == []
    settled(outbox, now)
    assert [queue.job(job.id).state for job in jobs] == [JobState.SUCCEEDED] * 3


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_background_write_that_fails_keeps_its_outcomes_for_the_next(
    database: Database, ctx: Context, queue: JobQueue
) -> None:
    """The database goes away under a write on the writer thread: its outcomes go back
    in front of those settled since, wait out the retry time, and are written once
    the database answers again."""
    jobs = claim(queue, 3)
    with proxy_to(("127.0.0.1", 5432)) as proxy:
        away = burrow.connect(proxy.dsn(database.dsn), schema=database.schema)
        try:
            outbox = Outbox(away.backend, ctx.telemetry, 0.0)
            succeed(outbox, jobs[0])
            away.backend.ping()  # the held connection is open, through the proxy
            proxy.cut()
            now = time.monotonic()
            outbox.flush(now)
            succeed(outbox, jobs[1])
            settled(outbox, now)
            assert [o.id for o in outbox.pending] == [jobs[0].id, jobs[1].id]
            assert outbox.due_mono(now) > now  # the retry time
            proxy.restore()
            succeed(outbox, jobs[2])
            outbox.flush(outbox.due_mono(now), force=True)
            assert not outbox.waiting()
            assert [queue.job(job.id).state for job in jobs] == [JobState.SUCCEEDED] * 3
            outbox.close()
        finally:
            away.close()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_bug_on_the_writer_thread_is_raised_on_the_loop(ctx: Context, queue: JobQueue) -> None:
    """Not the database's failure but burrow's (here a finish that raises TypeError): the
    loop raises it, as it would have written in the loop, and keeps the outcomes for
    the shutdown's flush; the writer is never left busy, so that flush does not hang."""
    (job,) = claim(queue, 1)
    backend = queue.backend

    class Broken:
        dialect = backend.dialect

        def finish(self, outcomes: object) -> list[int]:
            raise TypeError("a bug")

        def __getattr__(self, name: str) -> object:
            return getattr(backend, name)

    outbox = Outbox(Broken(), ctx.telemetry, 0.0)  # type: ignore[arg-type]
    try:
        succeed(outbox, job)
        now = time.monotonic()
        outbox.flush(now)
        with pytest.raises(TypeError, match="a bug"):
            settled(outbox, now)
        assert [o.id for o in outbox.pending] == [job.id]
        outbox.backend = backend
        outbox.flush(now, force=True)
        assert queue.job(job.id).state is JobState.SUCCEEDED
    finally:
        outbox.close()


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


def burst(database: Database, queue: JobQueue, n: int) -> None:
    """``n`` jobs at once; on PostgreSQL counted by the statistics views at once (insert_queued)."""
    if database.kind == "sqlite":
        queue.enqueue_many("svc.nothing", [{}] * n)
    else:
        assert database.schema is not None
        insert_queued(database.schema, n, "'svc.nothing'")


def test_a_burst_into_a_new_jobs_table_is_analyzed_once(ctx: Context, queue: JobQueue, database: Database) -> None:
    """Statistics of a new table say no job is queued, and on PostgreSQL the claim then
    sorts the whole backlog (PostgresBackend.refresh_statistics): a burst gets the
    table analyzed, once. SQLite claims well without statistics: nothing is done."""
    service = Statistics()
    if database.kind == "postgresql":  # or autovacuum's analyze might come first, now and then
        rows(database, "ALTER TABLE burrow_jobs SET (autovacuum_enabled = false)")
    with structlog.testing.capture_logs() as logs:
        service.run(ctx, time.monotonic())  # a new, empty table: nothing to catch up on
        burst(database, queue, ANALYZE_MIN_ROWS)
        if database.kind == "postgresql":

            def analyzed_yet() -> bool:
                service.run(ctx, time.monotonic())
                return bool(logs)

            wait_until(analyzed_yet, 15.0, "the burst analyzed (see burst)", interval=0.05)
        service.run(ctx, time.monotonic())  # caught up: not again
    analyzed = [entry for entry in logs if entry["event"] == "jobs_table_analyzed"]
    if database.kind == "sqlite":
        assert logs == []
        return
    assert [(e["rows_in_statistics"], e["live_rows"]) for e in analyzed] == [(0, ANALYZE_MIN_ROWS)], logs
    [(analyzes, reltuples)] = rows(
        database,
        "SELECT s.analyze_count, c.reltuples FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid"
        " WHERE s.relid = 'burrow_jobs'::regclass",
    )
    assert (analyzes, reltuples) == (1, ANALYZE_MIN_ROWS)


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_statistics_held_by_another_session_are_looked_at_again_later(ctx: Context, queue: JobQueue, database: Database) -> None:
    """Autovacuum or another supervisor holds the table: the service does not try again
    every second (each skipped ANALYZE is a warning in the server's log)."""
    rows(database, "ALTER TABLE burrow_jobs SET (autovacuum_enabled = false)")
    burst(database, queue, ANALYZE_MIN_ROWS)
    runner = Runner(ctx, [Statistics()], time.monotonic())
    ctx.run_at = runner.run_at
    with psycopg.connect(POSTGRES_DSN) as holder, structlog.testing.capture_logs() as logs:
        holder.execute(f'LOCK TABLE "{database.schema}".burrow_jobs IN SHARE UPDATE EXCLUSIVE MODE')
        turns: list[float] = []

        def skipped_yet() -> bool:
            turns.append(time.monotonic())
            assert runner.run(turns[-1]) == []
            return bool(logs)

        wait_until(skipped_yet, 15.0, "the ANALYZE skipped (see burst)", interval=0.05)
        holder.rollback()
    assert [entry["event"] for entry in logs] == ["jobs_table_analyze_skipped"], logs
    assert runner.next_due_mono() >= turns[-1] + 29.0


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_failed_statistics_check_is_not_tried_again_for_ten_minutes(ctx: Context, database: Database) -> None:
    """An ANALYZE that outlasts the supervisor's statement timeout on a large table, or a
    database away: tried every second, each failure taking the whole deadline, it would
    keep the leases from being extended."""
    with proxy_to(("127.0.0.1", 5432)) as proxy:
        away = burrow.connect(proxy.dsn(database.dsn), schema=database.schema)
        try:
            cut_off = dataclasses.replace(ctx, backend=away.backend)
            runner = Runner(cut_off, [Statistics()], time.monotonic())
            cut_off.run_at = runner.run_at
            proxy.cut()
            with structlog.testing.capture_logs() as logs:
                now = time.monotonic()
                assert runner.run(now) == []  # the service's own failure, said once
        finally:
            away.close()
    assert [entry["event"] for entry in logs] == ["jobs_table_analyze_failed"], logs
    assert runner.next_due_mono() >= now + 599.0
