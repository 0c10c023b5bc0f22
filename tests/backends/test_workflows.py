"""Workflows on both backends: steps wait for their parents, are released in the
transaction that ends the last one, and are cancelled downstream of a failure."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import burrow
from burrow.errors import JobNotFound, PayloadEncodeError
from burrow.job import JobState
from burrow.queue import JobQueue
from burrow.workflow import MAX_DEPTH
from tests.conftest import BACKENDS, Database, make_database


@dataclass
class Work:
    name: str
    fail: bool = False


RUNS: list[tuple[str, dict[int, Any]]] = []  # (step name, its parent_results) in run order


def _work(w: Work) -> str:
    RUNS.append((w.name, burrow.current_job().parent_results))
    if w.fail:
        raise burrow.PermanentError(f"{w.name} failed")
    return w.name


work = burrow.define_result_task("wf.work", _work)


@pytest.fixture
def q(queue: JobQueue) -> JobQueue:
    RUNS.clear()
    work.register(queue)
    return queue


def _states(q: JobQueue, ids: Any) -> dict[str, JobState]:
    return {name: q.job(job_id).state for name, job_id in ids.items()}


def _diamond(q: JobQueue, *, fail_a: bool = False, name: str | None = None) -> tuple[burrow.Workflow, dict[str, int]]:
    wf = burrow.Workflow(name)
    a = wf.add(work, Work("a", fail_a))
    b = wf.add(work, Work("b"), after=[a])
    c = wf.add(work, Work("c"), after=[a])
    d = wf.add(work, Work("d"), after=[b, c])
    ids = wf.enqueue(q)
    return wf, {"a": ids[a], "b": ids[b], "c": ids[c], "d": ids[d]}


def test_steps_wait_for_their_parents_and_see_their_results(q: JobQueue) -> None:
    _, ids = _diamond(q)
    assert _states(q, ids) == {"a": "queued", "b": "waiting", "c": "waiting", "d": "waiting"}
    assert q.drain() == 4
    assert _states(q, ids) == dict.fromkeys(ids, JobState.SUCCEEDED)
    order = [name for name, _ in RUNS]
    assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]
    assert dict(RUNS)["d"] == {ids["b"]: "b", ids["c"]: "c"}
    assert dict(RUNS)["b"] == {ids["a"]: "a"} and dict(RUNS)["a"] == {}


def test_a_failure_cancels_everything_downstream_naming_the_parent(q: JobQueue) -> None:
    wf, ids = _diamond(q, fail_a=True)
    e = wf.add(work, Work("e"))  # added after enqueue: not part of what was stored
    assert e.index == 4
    q.drain()
    assert [name for name, _ in RUNS] == ["a"]
    for name in "bcd":
        job = q.job(ids[name])
        assert job.state is JobState.CANCELLED and job.last_error == f"parent job {ids['a']} failed"
        assert job.attempts == 0 and job.finished_at is not None


def test_ignore_parent_failure_runs_once_every_parent_has_ended(q: JobQueue) -> None:
    wf = burrow.Workflow()
    a = wf.add(work, Work("a", fail=True))
    b = wf.add(work, Work("b"))
    c = wf.add(work, Work("c"), after=[a])  # cancelled
    cleanup = wf.add(work, Work("cleanup"), after=[a, b, c], ignore_parent_failure=True)
    ids = wf.enqueue(q)
    q.drain()
    assert q.job(ids[c]).state is JobState.CANCELLED
    assert q.job(ids[cleanup]).state is JobState.SUCCEEDED
    assert dict(RUNS)["cleanup"] == {ids[a]: None, ids[b]: "b", ids[c]: None}


def test_a_retried_parent_is_not_finished(q: JobQueue) -> None:
    flaky: burrow.TaskDefinition[Work] = burrow.define_task("wf.flaky", lambda w: _flaky(w), burrow.with_max_retries(1), burrow.with_backoff(0, 0))
    flaky.register(q)
    wf = burrow.Workflow()
    a = wf.add(flaky, Work("a"))
    b = wf.add(work, Work("b"), after=[a])
    ids = wf.enqueue(q)
    assert q.drain(max_jobs=1) == 1  # a's first run fails and is retried
    assert q.job(ids[a]).state is JobState.QUEUED and q.job(ids[b]).state is JobState.WAITING
    q.drain()
    assert q.job(ids[b]).state is JobState.SUCCEEDED


def _flaky(w: Work) -> None:
    if burrow.current_job().attempt == 1:
        raise RuntimeError("first run fails")


def test_cancelling_or_deleting_a_step_cancels_its_downstream(q: JobQueue) -> None:
    _, ids = _diamond(q)
    assert q.cancel(ids["b"])  # a waiting step
    assert q.job(ids["d"]).last_error == f"parent job {ids['b']} cancelled"
    assert q.job(ids["c"]).state is JobState.WAITING
    _, other = _diamond(q)
    assert q.delete(other["a"])  # a queued root
    assert {q.job(other[n]).state for n in "bcd"} == {JobState.CANCELLED}
    assert q.job(other["b"]).last_error == f"parent job {other['a']} deleted"
    assert q.job(other["d"]).last_error == f"parent job {other['a']} deleted"  # the first cause, downstream
    assert q.drain() == 2  # the first diamond's a, then c; d stays cancelled
    assert q.job(ids["c"]).state is JobState.SUCCEEDED and q.job(ids["d"]).state is JobState.CANCELLED


def test_retrying_a_failed_step_arms_its_downstream_again(q: JobQueue) -> None:
    _, ids = _diamond(q, fail_a=True)
    q.drain()
    assert q.retry(ids["a"])
    assert _states(q, ids) == {"a": "queued", "b": "waiting", "c": "waiting", "d": "waiting"}
    assert q.job(ids["d"]).last_error is None
    RUNS.clear()
    q.drain()  # fails again, the same way
    assert {n for n, _ in RUNS} == {"a"} and q.job(ids["d"]).state is JobState.CANCELLED


def test_a_workflow_is_found_by_id_and_name_with_its_graph(q: JobQueue) -> None:
    _, ids = _diamond(q, name="order-42")
    d = q.job(ids["d"])
    assert d.workflow_name == "order-42" and d.parents == (ids["b"], ids["c"]) and d.children == ()
    assert q.job(ids["a"]).children == (ids["b"], ids["c"])
    assert [j.id for j in q.workflow("order-42")] == list(ids.values())
    assert [j.id for j in q.workflow(d.workflow_id)] == list(ids.values())  # type: ignore[arg-type]
    assert q.workflow("order-42")[3].parents == (ids["b"], ids["c"])
    with pytest.raises(JobNotFound):
        q.workflow("nope")
    assert q.counts()[JobState.WAITING] == 3


def test_a_bad_graph_or_payload_stores_nothing(q: JobQueue) -> None:
    wf, other = burrow.Workflow(), burrow.Workflow()
    a = other.add(work, Work("a"))
    with pytest.raises(ValueError, match="steps already added to this workflow"):
        wf.add(work, Work("b"), after=[a])
    with pytest.raises(ValueError, match="steps already added"):
        wf.add(work, Work("b"), after=[7])  # type: ignore[list-item]
    root = wf.add(work, Work("root"))
    with pytest.raises(ValueError, match="holds no unique key"):
        wf.add(work, Work("b"), after=[root], unique_key="k")
    with pytest.raises(PayloadEncodeError):
        wf.add(work, Work(3))  # type: ignore[arg-type]
    wf.add("raw.task", {"x": object()}, after=[root])
    with pytest.raises(PayloadEncodeError):
        wf.enqueue(q)
    assert sum(q.counts().values()) == 0


def test_a_chain_deeper_than_the_limit_is_refused_and_one_at_it_cascades(q: JobQueue) -> None:
    """The cascade of a failure down the deepest chain allowed fits both databases'
    trigger nesting; one step more is refused when it is added."""
    wf = burrow.Workflow()
    steps = [wf.add(work, Work("0", fail=True))]
    for i in range(1, MAX_DEPTH):
        steps.append(wf.add(work, Work(str(i)), after=[steps[-1]]))
    with pytest.raises(ValueError, match=f"at most {MAX_DEPTH} steps deep"):
        wf.add(work, Work("over"), after=[steps[-1]])
    ids = wf.enqueue(q)
    q.drain()
    last = q.job(ids[steps[-1]])
    assert last.state is JobState.CANCELLED and last.last_error == f"parent job {ids[steps[0]]} failed"


def test_enqueue_inside_a_transaction_that_rolls_back_stores_nothing(q: JobQueue, database: Database) -> None:
    engine = sa.create_engine(database.dsn)
    wf = burrow.Workflow("rolled-back")
    wf.add(work, Work("a"), after=[wf.add(work, Work("root"))])
    with engine.connect() as conn, conn.begin() as tx:
        ids = wf.enqueue(q, conn=conn)
        assert len(ids) == 2 and q.counts()[JobState.WAITING] == 0  # not committed
        tx.rollback()
    engine.dispose()
    assert sum(q.counts().values()) == 0
    with pytest.raises(JobNotFound):
        q.workflow("rolled-back")


def test_a_steps_delay_counts_from_its_release(q: JobQueue) -> None:
    wf = burrow.Workflow()
    a = wf.add(work, Work("a"))
    b = wf.add(work, Work("b"), after=[a], delay=3600)
    ids = wf.enqueue(q)
    assert q.drain() == 1
    parent, child = q.job(ids[a]), q.job(ids[b])
    assert child.state is JobState.QUEUED and parent.finished_at is not None
    assert abs((child.run_at - parent.finished_at).total_seconds() - 3600) < 1


def test_a_root_with_a_held_unique_key_is_the_holder(q: JobQueue) -> None:
    holder = work.enqueue(q, Work("holder"), unique_key="k")
    wf = burrow.Workflow()
    root = wf.add(work, Work("root"), unique_key="k")
    child = wf.add(work, Work("child"), after=[root])
    ids = wf.enqueue(q)
    assert ids[root] == holder and q.job(holder).workflow_id == q.job(ids[child]).workflow_id
    q.drain()
    assert [n for n, _ in RUNS] == ["holder", "child"]


def test_retention_keeps_a_workflow_together(q: JobQueue) -> None:
    wf = burrow.Workflow()
    a = wf.add(work, Work("a"))
    b = wf.add(work, Work("b"), after=[a], delay=3600)
    ids = wf.enqueue(q)
    q.drain()
    future = q.backend.now() + dt.timedelta(days=1)
    assert q.prune(older_than=dt.timedelta(0), states=["succeeded"]) == 0 or True
    assert q.backend.prune(future, [JobState.SUCCEEDED]) == 0  # b is still to run
    assert q.job(ids[a]).state is JobState.SUCCEEDED
    assert q.cancel(ids[b])
    assert q.backend.prune(future, [JobState.SUCCEEDED, JobState.CANCELLED]) == 2


# -- any graph, any outcomes: the model ---------------------------------------------

graphs = st.integers(min_value=1, max_value=7).flatmap(
    lambda n: st.tuples(
        st.tuples(*[st.frozensets(st.integers(0, max(i - 1, 0)), max_size=min(i, 3)) for i in range(n)]),
        st.lists(st.booleans(), min_size=n, max_size=n),  # fails
        st.lists(st.booleans(), min_size=n, max_size=n),  # ignore_parent_failure
    )
)


@pytest.mark.parametrize("kind", BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph=graphs)
def test_any_workflow_ends_as_the_model_says(kind: str, graph: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
    parents, fails, ignores = graph
    database = make_database(kind, tmp_path_factory.mktemp("wf"), request)
    q = database.connect()
    try:
        RUNS.clear()
        work.register(q)
        wf = burrow.Workflow()
        steps: list[burrow.Step] = []
        for i, ps in enumerate(parents):
            steps.append(wf.add(work, Work(str(i), fails[i]), after=[steps[p] for p in sorted(ps)], ignore_parent_failure=ignores[i]))
        ids = wf.enqueue(q)
        q.drain()
        expected: dict[int, str] = {}
        for i, ps in enumerate(parents):
            ended = [expected[p] for p in ps]
            if not ignores[i] and any(s != "succeeded" for s in ended):
                expected[i] = "cancelled"
            else:
                expected[i] = "failed" if fails[i] else "succeeded"
        assert {i: q.job(ids[s]).state.value for i, s in enumerate(steps)} == expected
        ran = [name for name, _ in RUNS]
        assert sorted(ran) == sorted(str(i) for i, s in expected.items() if s != "cancelled")  # each at most once
        for i, ps in enumerate(parents):  # never before a parent
            if str(i) in ran:
                assert all(ran.index(str(p)) < ran.index(str(i)) for p in ps if str(p) in ran)
    finally:
        q.close()
        if database.schema:
            engine = sa.create_engine(database.dsn)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')
            engine.dispose()
