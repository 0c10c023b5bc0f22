"""The worker: a forked child that claims jobs, runs them, and reports over its pipe.

A worker writes nothing but claims to the database. Every outcome goes to the
supervisor, which batches them into one round trip and owns the leases; so a
worker that dies mid-job leaves nothing half-written, and its supervisor knows
exactly which jobs it held.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import resource
import select
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from burrow.backends.records import ALL_QUEUES, ClaimedJob, Outcome, OutcomeKind, QueueFilter
from burrow.config import SupervisorConfig
from burrow.errors import BackendError, ProtocolError
from burrow.execution import CancelCheck, RetryDefaults, execute, released
from burrow.queue import JobQueue, new_owner
from burrow.supervisor import protocol
from burrow.supervisor.children import WorkerExit
from burrow.supervisor.protocol import outcome_frame

if TYPE_CHECKING:
    import psutil

log = structlog.get_logger("burrow.worker")

_PR_SET_PDEATHSIG = 1
# On PostgreSQL the supervisor wakes idle workers on NOTIFY; this slower poll only
# catches jobs scheduled for later (enqueue_at), which notify nobody when they fall due.
_NOTIFIED_IDLE_POLL_S = 1.0
# A claim holds its jobs until this worker gets to them. Claim about this much work
# at a time (by the last batch's pace), up to batch_size, so that slow jobs do not
# queue up behind each other in one worker while other workers sit idle.
_CLAIM_SECONDS_OF_WORK = 0.1
# Within a batch, look for a stop message this often (not after every job: on
# short jobs the select() per job cost more than the job).
_STOP_CHECK_S = 0.005
# A batch claimed ahead (see Prefetcher) that the job loop has not taken after this
# long is handed back: a job of the current batch turned out slow.
_PREFETCH_HOLD_S = 10 * _CLAIM_SECONDS_OF_WORK
# Where a claim's round trip outlasts a batch of short jobs (a distant database), the
# batch claimed ahead grows, up to this many times the claim size (see next_ahead_factor).
MOST_AHEAD = 4
# The job loop waited for its batch claimed ahead: by more than this share of the
# batch before it, the claim was the slower of the two.
_WAIT_SHARE = 0.1
# With no such wait, the factor falls back towards 1 by this much a batch.
_AHEAD_DECAY = 0.9


def next_claim_size(ran: int, elapsed_s: float, batch_size: int) -> int:
    """How many jobs to claim next, after ``ran`` jobs took ``elapsed_s``: 1 to batch_size.

    Short jobs get the whole batch_size, over which claims and commits are
    spread; jobs of 100 ms or more are claimed one at a time.
    """
    if ran <= 0 or elapsed_s <= 0:
        return batch_size
    return max(1, int(min(batch_size, _CLAIM_SECONDS_OF_WORK * ran / elapsed_s)))


def next_ahead_factor(factor: float, ran_s: float, waited_s: float) -> float:
    """How many times the claim size to claim ahead next, 1 to MOST_AHEAD.

    ``waited_s`` is how long the job loop waited for the batch claimed ahead after
    running the batch before it in ``ran_s``. A wait says the claim's round trip is
    longer than a batch runs (a database a few milliseconds away, or jobs of a few
    microseconds): claiming ``(ran_s + waited_s) / ran_s`` times as much covers it,
    and a larger claim costs the server less per job (benchmarks/README.md). With
    no wait the factor decays back towards 1: jobs that outlast their claim (a
    millisecond or more next to the database) never wait and are claimed
    ``batch_size`` at most. Bounded either way: at most MOST_AHEAD times a claim of
    about 0.1 s of work, one batch ahead of the one running.
    """
    if ran_s > 0 and waited_s > _WAIT_SHARE * ran_s:
        return min(float(MOST_AHEAD), factor * (ran_s + waited_s) / ran_s)
    return max(1.0, factor * _AHEAD_DECAY)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    config: SupervisorConfig
    retry: RetryDefaults
    notified: bool  # the supervisor sends "wake" on new jobs (PostgreSQL LISTEN)
    supervisor_pid: int
    queues: QueueFilter = ALL_QUEUES  # its pool's
    batch_size: int = 100  # its pool's


class Prefetcher:
    """Claims the worker's next batch on a side thread while the current one runs.

    On a remote database a claim is a round trip the job loop would otherwise wait
    out between batches (benchmarks/README.md, the remote rows). At most one batch
    is claimed ahead, and the job loop asks for one only when its jobs are short
    (:meth:`Worker.run`); when the loop has to wait for it, the claim's round trip
    being longer than a batch runs, the next one is larger, up to MOST_AHEAD claim
    sizes (:func:`next_ahead_factor`), a one-statement claim all the same. The
    thread announces the batch (``claimed``) as soon as the claim returns, before
    any of it runs, so the supervisor extends its leases and,
    the batch coming after the current one, still takes its oldest unreported job
    for the running one (docs/architecture.md, "How a job flows"). A batch not
    taken within ``_PREFETCH_HOLD_S`` (a job of the current batch turned out slow)
    is handed back, ``released``, as a stopping worker hands back the rest of its
    batch; so is one the job loop no longer wants (:meth:`give_back`).

    Only the job loop or this thread claims at any moment (the loop takes the
    batch, waiting for a claim under way, before it claims itself), so the
    queue's claim counter and unsettled owners are never shared; the backend's
    held connection is behind its own lock, and a job's cancel check reads through
    the connection pool, not the held connection.
    """

    _IDLE, _CLAIMING, _READY, _GONE = range(4)

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.cond = threading.Condition()
        self.state = self._IDLE
        self.size = 0
        self.batch: list[ClaimedJob] = []
        threading.Thread(target=self._loop, name="burrow-prefetch", daemon=True).start()

    def request(self, size: int) -> None:
        """Claim up to ``size`` jobs ahead; the job loop then calls :meth:`take` once."""
        with self.cond:
            self.size, self.state = size, self._CLAIMING
            self.cond.notify_all()

    def take(self) -> list[ClaimedJob]:
        """The batch claimed ahead, announced already; empty if the claim found nothing,
        failed or was handed back. Waits for a claim still under way."""
        with self.cond:
            while self.state == self._CLAIMING:
                self.cond.wait()
            batch = self.batch if self.state == self._READY else []
            self.state, self.batch = self._IDLE, []
            return batch

    def give_back(self) -> None:
        """The worker stops: hand back, ``released``, what was claimed ahead."""
        for job in self.take():
            self.worker.report(released(job), job)

    def _loop(self) -> None:
        structlog.contextvars.bind_contextvars(worker_pid=os.getpid())
        worker = self.worker
        tasks = list(worker.queue.registrations)
        settings = worker.settings
        while True:
            with self.cond:
                while self.state != self._CLAIMING:
                    self.cond.wait()
                size = self.size
            claim_began = time.monotonic()
            try:
                batch = worker.queue.claim(tasks, size, settings.config.lease_timeout_s, settings.queues)
            except BackendError as exc:  # the job loop's own claim comes next, with its backoff
                log.warning("claim_failed", error=str(exc))
                batch = []
            if batch:
                worker.send(protocol.claimed(batch, claim_began))  # before the loop may run any of it
            with self.cond:
                self.batch, self.state = batch, self._READY
                self.cond.notify_all()
                if not batch:
                    continue
                deadline = time.monotonic() + _PREFETCH_HOLD_S
                while self.state == self._READY and (remaining := deadline - time.monotonic()) > 0:
                    self.cond.wait(remaining)
                if self.state == self._READY:  # not taken in time: a job of the current batch is slow
                    self.state, self.batch = self._GONE, []
                    # Under the lock: the loop takes nothing until these are sent.
                    for job in batch:
                        worker.report(released(job), job)
                    log.debug("prefetched_jobs_released", jobs=len(batch))


class Worker:
    def __init__(self, queue: JobQueue, settings: WorkerSettings, read_fd: int, write_fd: int) -> None:
        self.queue = queue
        self.settings = settings
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.decoder = protocol.FrameDecoder()
        self.write_lock = threading.Lock()
        self.stopping = False
        self.jobs_done = 0
        self.process: psutil.Process | None = None  # for max_worker_memory, once the peak passed it
        self.cancel_check = CancelCheck(queue.cancel_requested)
        self.cancelled: set[int] = set()  # claimed jobs the supervisor says not to start
        # The latest current_job().progress(...) of the running job, sent with the next
        # heartbeat: a handler may call it in a tight loop at the cost of a dict write.
        self.progress: dict[tuple[int, int], tuple[float, str | None]] = {}
        self.idle_pause = 0.005  # after an empty claim without NOTIFY; doubles up to poll_interval
        self.backend_pause = 0.1  # after a failed claim; doubles up to 5 s

    # -- pipe ---------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Frames from the job loop and the heartbeat thread must not interleave."""
        self._write(protocol.encode_frame(message))

    def report(self, outcome: Outcome, job: ClaimedJob) -> None:
        """Send a job's outcome; one no frame can carry is the job's failure, not our death.

        execute() keeps results under max_result_size and error text encodable and
        short, so this is the last guard, for whatever slips past them.
        """
        try:
            data = protocol.encode_frame(outcome_frame(outcome, cancel_seen=self.cancel_check.seen(outcome.id)))
        except ProtocolError as exc:
            error = f"the job's outcome could not be sent to the supervisor: {exc}"
            with contextlib.suppress(Exception):  # as in execute(): a log line must not kill us either
                log.error("job_failed", job_id=job.id, task=job.task, attempt=job.attempt, error=error)
            failed = Outcome(
                outcome.id, outcome.owner, outcome.attempt, OutcomeKind.FAILED, error=error, duration_s=outcome.duration_s
            )
            data = protocol.encode_frame(outcome_frame(failed))
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            with self.write_lock:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.write_fd, view) :]
        except (BrokenPipeError, OSError):
            os._exit(WorkerExit.ORPHANED)  # the supervisor is gone; its lease logic takes over

    def poll_messages(self, timeout_s: float) -> bool:
        """Read supervisor messages for up to ``timeout_s``; True if any arrived."""
        ready, _, _ = select.select([self.read_fd], [], [], timeout_s)
        if not ready:
            return False
        data = os.read(self.read_fd, 65536)
        if not data:
            os._exit(WorkerExit.ORPHANED)
        for message in self.decoder.feed(data):
            if message["t"] == protocol.STOP:
                self.stopping = True
            elif (job_id := protocol.cancelled_id(message)) is not None:
                self.cancelled.add(job_id)
        return True

    # -- lifecycle ----------------------------------------------------------------

    def heartbeat_loop(self) -> None:
        """From a side thread, so a long job still heartbeats; also notices orphaning."""
        interval = self.settings.config.heartbeat_interval_s
        while True:
            time.sleep(interval)
            if os.getppid() != self.settings.supervisor_pid:
                os._exit(WorkerExit.ORPHANED)
            for (job_id, attempt), (fraction, text) in self.take_progress():
                try:
                    frame = protocol.encode_frame(protocol.progress(job_id, attempt, fraction, text))
                except Exception:  # never the heartbeat's death: the supervisor would kill us as silent
                    continue
                self._write(frame)
            self.send(protocol.heartbeat())

    def keep_progress(self, job_id: int, attempt: int, fraction: float, message: str | None) -> None:
        self.progress[job_id, attempt] = (fraction, message)

    def take_progress(self) -> list[tuple[tuple[int, int], tuple[float, str | None]]]:
        """What progress() kept since the last heartbeat (the dict swapped whole: atomic
        under the GIL, so the job loop's writes are never lost in between)."""
        taken, self.progress = self.progress, {}
        return list(taken.items())

    def recycle_reason(self) -> str | None:
        limit = self.settings.config.max_jobs_per_worker
        if limit is not None and self.jobs_done >= limit:
            return f"max_jobs_per_worker ({limit}) reached"
        cap = self.settings.config.max_worker_memory_bytes
        # Checked after every job. The peak RSS (getrusage, 0.65 us here) bounds the
        # current one, so the exact reading (psutil, 8.8 us, more than a short
        # job's whole overhead) is only taken once the peak has passed the cap.
        if cap is not None and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 > cap:
            if self.process is None:
                import psutil  # here, not at the top: only a worker with a cap pays its memory

                self.process = psutil.Process()
            rss = self.process.memory_info().rss
            if rss > cap:
                return f"memory {rss} bytes over max_worker_memory ({cap})"
        return None

    def run(self) -> WorkerExit:
        threading.Thread(target=self.heartbeat_loop, name="burrow-heartbeat", daemon=True).start()
        tasks = list(self.queue.registrations)
        claim_size = 1  # until the first batch shows how long this queue's jobs take
        # Claiming ahead saves the claim's round trip between batches; SQLite has no
        # network round trip (its claim is a local transaction), so only PostgreSQL does.
        prefetcher = Prefetcher(self) if self.queue.backend.dialect == "postgresql" else None
        ahead = False  # a batch was asked of the prefetcher and not taken yet
        ahead_factor = 1.0  # the batch claimed ahead, in claim sizes (next_ahead_factor)
        ran_s = 0.0  # how long the last batch ran
        try:
            while not self.stopping:
                self.poll_messages(0)
                if self.stopping:
                    break
                if (reason := self.recycle_reason()) is not None:
                    log.info("worker_recycling", reason=reason, jobs_done=self.jobs_done)
                    break
                batch: list[ClaimedJob] = []
                if ahead and prefetcher is not None:
                    ahead = False
                    waiting_since = time.perf_counter()
                    batch = prefetcher.take()  # announced by the prefetcher already
                    if batch:
                        ahead_factor = next_ahead_factor(ahead_factor, ran_s, time.perf_counter() - waiting_since)
                if not batch:
                    batch = self.claim(tasks, claim_size)
                    if not batch:
                        continue
                # Claim the next batch while this one runs, if its jobs are short:
                # a claim size above 1 says a batch takes about _CLAIM_SECONDS_OF_WORK.
                # Jobs of 100 ms or more (claim size 1) are never claimed ahead, so
                # no slow job keeps claimed jobs waiting behind it.
                if prefetcher is not None and claim_size > 1:
                    # Whole claim sizes: a few statement texts, prepared and reused, not one per size.
                    prefetcher.request(claim_size * math.ceil(ahead_factor))
                    ahead = True
                started = time.perf_counter()
                ran = self.run_batch(batch)
                ran_s = time.perf_counter() - started
                claim_size = next_claim_size(ran, ran_s, self.settings.batch_size)
        finally:
            if ahead and prefetcher is not None:
                prefetcher.give_back()
        return WorkerExit.OK

    def claim(self, tasks: list[str], claim_size: int) -> list[ClaimedJob]:
        """Claim a batch and announce it; empty after a failed or empty claim, once the
        pause that follows one (backoff, or the idle wait) is over."""
        config = self.settings.config
        try:
            claim_began = time.monotonic()  # CLOCK_MONOTONIC: the supervisor's clock too
            batch = self.queue.claim(tasks, claim_size, config.lease_timeout_s, self.settings.queues)
            self.backend_pause = 0.1
        except BackendError as exc:
            log.warning("claim_failed", error=str(exc))
            self.poll_messages(self.backend_pause)
            self.backend_pause = min(self.backend_pause * 2, 5.0)
            return []
        if not batch:
            self.send(protocol.ready(claim_began))
            if self.settings.notified:
                self.poll_messages(_NOTIFIED_IDLE_POLL_S)
            else:
                self.poll_messages(self.idle_pause)
                self.idle_pause = min(self.idle_pause * 2, config.poll_interval_s)
            return []
        self.idle_pause = 0.005
        self.send(protocol.claimed(batch, claim_began))  # the leases are at least this fresh
        return batch

    def run_batch(self, batch: list[ClaimedJob]) -> int:
        """Run the claimed jobs in order, each result sent as it ends; the number run.

        Results are not held back to send a batch at once: the supervisor takes
        the oldest unreported job to be the one running, which decides what a
        crash charges an attempt to.
        """
        registry = self.queue.registrations
        max_result = self.settings.config.max_result_size_bytes
        next_poll = time.monotonic() + _STOP_CHECK_S
        for index, job in enumerate(batch):
            if index and (self.stopping or self.recycle_reason() is not None):
                for rest in batch[index:]:
                    self.report(released(rest), rest)
                return index
            if job.id in self.cancelled:  # cancelled before it started: the supervisor wrote it off
                self.cancelled.discard(job.id)
                continue
            outcome = execute(
                job, registry[job.task], self.settings.retry, interruptible=False, max_result_bytes=max_result,
                cancel_check=self.cancel_check.for_job(job.id), results_of=self.queue.backend.parent_results,
                progress=self.keep_progress,
            )
            self.jobs_done += 1
            self.report(outcome, job)
            if (now := time.monotonic()) >= next_poll:
                self.poll_messages(0)
                next_poll = now + _STOP_CHECK_S
        return len(batch)


def worker_main(queue: JobQueue, settings: WorkerSettings, read_fd: int, write_fd: int) -> NoReturn:
    """The child's entry point after fork; it always ends in os._exit."""
    code = WorkerExit.CRASHED
    try:
        _die_with_parent(settings.supervisor_pid)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(worker_pid=os.getpid())
        try:
            queue.after_fork()
            queue.owner = new_owner("worker")
            # Prove the database answers this process before saying hello: a worker
            # that cannot open it must fail its boot, not loop on failed claims.
            queue.backend.ping()
            worker = Worker(queue, settings, read_fd, write_fd)
            worker.send(protocol.hello(owner=queue.owner))
        except Exception as exc:
            log.error("worker_boot_failed", error=str(exc))
            code = WorkerExit.BOOT_FAILED
        else:
            code = worker.run()
    except BaseException as exc:  # burrow's own loop failed; handlers' errors never get here
        log.error("worker_crashed", error=f"{type(exc).__name__}: {exc}")
        code = WorkerExit.CRASHED
    finally:
        os._exit(code)


def _die_with_parent(supervisor_pid: int) -> None:
    """Ask Linux to SIGKILL us when the supervisor dies; the heartbeat thread is the fallback."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os._exit(WorkerExit.ORPHANED)
