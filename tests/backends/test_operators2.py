"""Operators, round 2 (issue 25): paused queues, run now, the audit trail (both backends)."""

from __future__ import annotations

import datetime as dt

import pytest

import burrow
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind, QueueFilter
from burrow.errors import BackendError, BurrowError, JobNotFound
from burrow.job import JobState
from burrow.queue import JobQueue
from tests.backends.helpers import drain_all
from tests.conftest import Database, FakeClock


def _fail(data: bytes) -> None:
    raise ValueError("boom")


# -- pause and resume ----------------------------------------------------------------


def test_a_paused_queue_is_not_claimed_until_resumed(queue: JobQueue) -> None:
    mail = queue.enqueue("t.mail", {}, queue="mail")
    other = queue.enqueue("t.other", {})
    assert queue.pause_queue("mail", actor="ann") is True
    assert queue.pause_queue("mail", actor="ann") is False  # paused already
    assert queue.paused_queues() == ["mail"]
    # Enqueueing still works; the jobs wait.
    later = queue.enqueue("t.mail", {}, queue="mail")
    claimed = queue.backend.claim(ClaimRequest(["t.mail", "t.other"], 10, "me", 60))
    assert [job.id for job in claimed] == [other]
    # Every shape of claim: named queues, an excluding pool, a limited task.
    assert queue.backend.claim(ClaimRequest(["t.mail"], 10, "me", 60, QueueFilter(("mail",), exclude=False))) == []
    assert queue.backend.claim(ClaimRequest(["t.mail"], 10, "me", 60, QueueFilter(("x",), exclude=True))) == []
    assert queue.backend.claim(ClaimRequest(["t.mail"], 10, "me", 60, limits={"t.mail": 5})) == []
    assert not queue.backend.has_due(["t.mail"])
    listed = {q.name: q for q in queue.queues()}
    assert listed["mail"].paused and listed["mail"].queued == 2 and listed["mail"].updated_by == "ann"
    assert not listed["default"].paused and listed["default"].running == 1
    assert queue.resume_queue("mail", actor="bob") is True
    assert queue.paused_queues() == []
    claimed = queue.backend.claim(ClaimRequest(["t.mail"], 10, "me", 60, limits={"t.mail": 5}))
    assert sorted(job.id for job in claimed) == [mail, later]
    assert {q.name: q.updated_by for q in queue.queues()}["mail"] == "bob"


def test_the_pause_survives_a_new_connection(database: Database, queue: JobQueue) -> None:
    queue.pause_queue("mail")
    other = database.connect()
    try:
        assert other.paused_queues() == ["mail"]
    finally:
        other.close()


def test_queue_names_are_checked(queue: JobQueue) -> None:
    with pytest.raises(BurrowError):
        queue.pause_queue("")


# -- run now ------------------------------------------------------------------------


def test_run_now_makes_a_scheduled_job_due(queue: JobQueue) -> None:
    later = queue.enqueue("t.later", {}, delay=dt.timedelta(hours=1))
    due = queue.enqueue("t.later", {})
    assert queue.backend.claim(ClaimRequest(["t.later"], 10, "me", 60))[0].id == due
    assert queue.run_now(later, actor="ann") is True
    assert queue.job(later).run_at <= queue.backend.now()
    assert queue.run_now(later) is False  # due already
    assert queue.run_now(due) is False  # running
    with pytest.raises(JobNotFound):
        queue.run_now(10**9)
    assert [job.id for job in queue.backend.claim(ClaimRequest(["t.later"], 10, "me", 60))] == [later]
    rows = [(e.action, e.job_id, e.actor) for e in queue.audit()]
    assert rows == [("run_now", later, "ann")]  # the refusals left none


# -- the audit trail ---------------------------------------------------------------------


def test_every_action_leaves_one_row_and_a_refused_one_none(queue: JobQueue) -> None:
    queue.handle("bad.task", _fail, burrow.with_max_retries(0))
    failed = queue.enqueue_many("bad.task", [{"n": i} for i in range(3)])
    assert drain_all(queue) == 3
    queued = queue.enqueue("other.task", {})
    running = queue.enqueue("run.task", {})
    queue.backend.claim(ClaimRequest(["run.task"], 1, "me", 60))

    assert queue.retry(failed[0], actor="ann")
    assert not queue.retry(queued, actor="ann")  # refused: no row
    assert queue.retry_all("failed", actor="ann") == 2
    assert queue.cancel(queued, actor="bob")
    assert not queue.cancel(queued, actor="bob")  # finished: refused
    assert queue.cancel(running, actor="bob")  # a cancel request
    assert queue.delete(queued, actor="cy")
    assert not queue.delete(running, actor="cy")  # running: refused
    with pytest.raises(JobNotFound):
        queue.delete(10**9, actor="cy")
    queue.pause_queue("mail", actor="dee")
    queue.resume_queue("mail", actor="dee")
    assert queue.prune(0, ["cancelled"], actor="eve") == 0  # nothing yet: one row, count 0
    assert queue.retry_all("cancelled", actor="fay") == 0

    entries = queue.audit(limit=100)
    assert [(e.action, e.actor, e.job_id, e.queue, e.count) for e in reversed(entries)] == [
        ("retry", "ann", failed[0], None, 1),
        ("retry_all", "ann", None, None, 2),
        ("cancel", "bob", queued, None, 1),
        ("cancel", "bob", running, None, 1),
        ("delete", "cy", queued, None, 1),
        ("pause", "dee", None, "mail", 0),
        ("resume", "dee", None, "mail", 0),
        ("prune", "eve", None, None, 0),
        ("retry_all", "fay", None, None, 0),
    ]
    assert entries[-2].filter == "state=failed"
    assert "state=cancelled" in (entries[1].filter or "")
    assert all(e.at.tzinfo is not None for e in entries)
    assert [e.id for e in queue.audit(limit=2, before_id=entries[1].id)] == [entries[2].id, entries[3].id]


def test_the_default_actor_is_the_os_user_at_the_host(queue: JobQueue) -> None:
    queue.pause_queue("q1")
    [entry] = queue.audit()
    assert "@" in entry.actor
    with pytest.raises(BurrowError):
        queue.pause_queue("q1", actor="  ")


def test_audit_rows_are_written_in_the_actions_transaction(queue: JobQueue) -> None:
    """An action that fails in the database (a prune batch here) leaves no audit row."""
    queue.handle("ok.task", lambda data: None)
    queue.enqueue_many("ok.task", [{} for _ in range(3)])
    drain_all(queue)
    backend = queue.backend
    original = backend._retire_ids  # type: ignore[attr-defined]

    def broken(conn):
        original(conn)
        raise BackendError("injected")

    backend._retire_ids = broken  # type: ignore[attr-defined]
    try:
        with pytest.raises(BackendError):
            queue.prune(0, ["succeeded"], actor="zed")
    finally:
        del backend._retire_ids  # type: ignore[attr-defined]
    assert queue.audit() == []
    assert queue.counts()[JobState.SUCCEEDED] == 3


def test_retention_prunes_old_audit_rows(clocked: JobQueue, clock: FakeClock) -> None:
    clocked.pause_queue("a", actor="x")
    clock.advance(dt.timedelta(days=91).total_seconds())
    clocked.pause_queue("b", actor="x")
    assert clocked.backend.prune_audit(clocked.backend.now() - dt.timedelta(days=90)) == 1
    assert [e.queue for e in clocked.audit()] == ["b"]


# -- search ---------------------------------------------------------------------------


def test_search_finds_payload_text_and_errors_newest_first(queue: JobQueue) -> None:
    queue.handle("bad.task", _fail, burrow.with_max_retries(0))
    a = queue.enqueue("shop.order", {"customer": "ACME Corp", "total": 12})
    b = queue.enqueue("shop.order", {"customer": "Globex", "note": "acme referral"})
    c = queue.enqueue("shop.refund", {"customer": "acme corp"})
    caf = queue.enqueue("shop.order", {"customer": "Café Ünïcode", "path": "C:\\tmp\\x"})
    raw = queue.enqueue("raw.task", b"\x00\xff binary acme \x80")
    failed = queue.enqueue("bad.task", {"n": 1})
    drain_all(queue)

    def ids(text: str, **filters: object) -> list[int]:
        return [job.id for job in queue.search(text, **filters).jobs]  # type: ignore[arg-type]

    assert ids("acme") == [raw, c, b, a]
    assert ids("ACME CORP") == [c, a]
    assert ids("acme", task="shop.order") == [b, a]
    assert ids("acme", state="queued", task=["shop.order", "shop.refund"]) == [c, b, a]
    assert ids("boom") == [failed]  # the last error
    assert ids("Café") == [caf] and ids("Ünïcode") == [caf]
    assert ids("C:\\\\tmp") == [caf]  # the JSON text escapes the backslash
    assert ids("acme", before_id=c) == [b, a]
    assert ids("acme", limit=2) == [raw, c]
    assert ids("nothing like it") == []
    assert ids("100%") == [] and ids("_") != []  # no LIKE wildcards


def test_search_looks_through_a_window_of_the_newest_jobs(queue: JobQueue) -> None:
    old = queue.enqueue("t.s", {"who": "needle"})
    queue.enqueue_many("t.s", [{"who": "hay"} for _ in range(5)])
    result = queue.search("needle", window=3)
    assert result.jobs == [] and result.window_end is not None
    on = queue.search("needle", before_id=result.window_end, window=3)
    assert [job.id for job in on.jobs] == [old] and on.window_end is None
    assert queue.search("needle").window_end is None
    with pytest.raises(BurrowError):
        queue.search("")


# -- progress -------------------------------------------------------------------------


def test_progress_is_written_fenced_and_read_back(queue: JobQueue) -> None:
    job_id = queue.enqueue("t.p", {})
    [claimed] = queue.backend.claim(ClaimRequest(["t.p"], 1, "me", 60))
    queue.backend.record_progress([(job_id, "me", claimed.attempt, 0.25, "a quarter")])
    info = queue.job(job_id)
    assert (info.progress, info.progress_message) == (0.25, "a quarter")
    queue.backend.record_progress([(job_id, "someone else", claimed.attempt, 0.9, None)])  # fenced out
    queue.backend.record_progress([(job_id, "me", claimed.attempt + 1, 0.9, None)])
    assert queue.job(job_id).progress == 0.25
    queue.backend.record_progress([(job_id, "me", claimed.attempt, 1.0, None)])
    assert (queue.job(job_id).progress, queue.job(job_id).progress_message) == (1.0, None)


def test_a_drain_writes_progress_at_most_once_a_second(queue: JobQueue) -> None:
    seen: list[tuple[float | None, str | None]] = []

    def handler(data: bytes) -> None:
        job = burrow.current_job()
        for n in range(1000):
            job.progress(n / 1000, f"{n}")
        info = queue.job(job.id)
        seen.append((info.progress, info.progress_message))
        with pytest.raises(BurrowError):
            job.progress(1.5)
        with pytest.raises(BurrowError):
            job.progress(float("nan"))

    queue.handle("t.drained", handler)
    queue.enqueue("t.drained", {})
    assert drain_all(queue) == 1
    assert seen == [(0.0, "0")]  # the first call written, the 999 after it within the second not


def test_retrying_a_job_clears_its_progress(queue: JobQueue) -> None:
    queue.handle("bad.task", _fail, burrow.with_max_retries(0))
    job_id = queue.enqueue("bad.task", {})
    [claimed] = queue.backend.claim(ClaimRequest(["bad.task"], 1, "me", 60))
    queue.backend.record_progress([(job_id, "me", claimed.attempt, 0.5, "half")])
    queue.backend.finish([Outcome(job_id, "me", claimed.attempt, OutcomeKind.FAILED, error="x")])
    assert queue.job(job_id).progress == 0.5
    assert queue.retry(job_id)
    assert (queue.job(job_id).progress, queue.job(job_id).progress_message) == (None, None)


def test_listing_the_page_just_newer(queue: JobQueue) -> None:
    ids = queue.enqueue_many("t.l", [{"n": n} for n in range(10)])
    other = queue.enqueue("t.other", {})
    queue.backend.claim(ClaimRequest(["t.l"], 3, "me", 60))  # running jobs come from their own index
    assert [j.id for j in queue.jobs(after_id=ids[2], limit=3)] == [ids[5], ids[4], ids[3]]
    assert [j.id for j in queue.jobs(task="t.l", after_id=ids[7], limit=5)] == [ids[9], ids[8]]
    assert [j.id for j in queue.jobs(state=["running", "queued"], after_id=ids[0], limit=2)] == [ids[2], ids[1]]
    assert [j.id for j in queue.jobs(after_id=ids[9])] == [other]


def test_the_async_clients_cancel_is_audited(database: Database, queue: JobQueue) -> None:
    import asyncio

    queued = queue.enqueue("t.a", {})
    running = queue.enqueue("t.r", {})
    queue.backend.claim(ClaimRequest(["t.r"], 1, "me", 60))
    finished = queue.enqueue("t.f", {})
    queue.cancel(finished, actor="setup")

    async def main() -> list[bool]:
        async with await burrow.aconnect(database.dsn, schema=database.schema) as aq:
            return [
                await aq.cancel(queued, actor="async-ann"),
                await aq.cancel(running, actor="async-ann"),
                await aq.cancel(finished, actor="async-ann"),  # refused: no row
                await aq.dequeue(running),  # refused: running
            ]

    assert asyncio.run(main()) == [True, True, False, False]
    rows = [(e.action, e.actor, e.job_id) for e in reversed(queue.audit()) if e.actor != "setup"]
    assert rows == [("cancel", "async-ann", queued), ("cancel", "async-ann", running)]


def test_progress_messages_are_cut_and_made_valid_text() -> None:
    from burrow.context import JobContext

    got: list[tuple[float, str | None]] = []
    job = JobContext(1, "t", 1, 0, progress_sink=lambda i, a, f, m: got.append((f, m)))
    job.progress(1, "x" * 300)
    job.progress(0.5, "bad \ud800 half\x00")
    job.progress(0)
    assert got == [(1.0, "x" * 200), (0.5, "bad ? half"), (0.0, None)]
    for bad in (-0.1, 1.01, True, "0.5", float("inf")):
        with pytest.raises(BurrowError):
            job.progress(bad)  # type: ignore[arg-type]
    JobContext(1, "t", 1, 0).progress(0.5)  # no sink: nothing to do
