"""burrow_workflows and burrow_deps: storing a workflow, and reading its graph.

What a parent's end does to its children is not here: the triggers of migration 12
do it, in the transaction that ends the parent, whichever statement ends it
(docs/architecture.md, "Workflows"). Here is the rest: a workflow stored in one
transaction, its jobs and edges read back, the results a step's parents left, and
a retried step's cancelled downstream armed again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from burrow.backends.records import JOB_COLUMNS, StepRow
from burrow.backends.schema import deps, jobs, workflows
from burrow.backends.sql.connection import driver_of
from burrow.backends.sql.jobs import JobsSQL, job_info
from burrow.errors import BurrowError
from burrow.job import FINISHED_STATES, JobInfo, JobState

_ENDED = [s.value for s in FINISHED_STATES]
_CHUNK = 5000  # ids a statement names at most (SQLite allows 32,766 variables)


def _chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    return [list(ids[i : i + _CHUNK]) for i in range(0, len(ids), _CHUNK)]


class WorkflowsSQL(JobsSQL):
    """The jobs' store, with workflows (WorkflowStore): a read of one job brings its
    edges, and a requeue arms again what the requeued job's failure cancelled."""

    def get(self, job_id: int) -> JobInfo | None:
        info = super().get(job_id)
        return None if info is None else self.with_edges(info)

    def _requeued(self, c: sa.Connection, job_ids: Sequence[int]) -> None:
        self._rearm_downstream(c, job_ids)

    def enqueue_workflow(self, name: str | None, steps: Sequence[StepRow], conn: sa.Connection | None = None) -> list[int]:
        """Store the workflow in one transaction (the caller's, with ``conn``): its row,
        the steps' jobs (one insert), the steps with parents set waiting, the edges.

        A root step with a unique key may come back as the job holding the key; that
        job joins the workflow (its end then settles the children as any step's does).
        It is locked by joining, so it cannot end unseen meanwhile; if it had already
        ended, its children are settled here as its end would have settled them.
        """

        # On a caller's connection too, burrow's tables are in burrow's schema (the
        # backend's own connections translate every statement; the caller's does not).
        in_schema = {"schema_translate_map": {None: self.schema}} if self.schema else {}

        def store(c: sa.Connection) -> list[int]:
            def run(statement: Any, rows: Any = None) -> Any:
                return c.execute(statement, rows, execution_options=in_schema)

            workflow_id = run(
                sa.insert(workflows).values(name=name, created_at=self._now()).returning(workflows.c.id)
            ).scalar_one()
            ids = self._insert(driver_of(c), [s.job for s in steps], own_transaction=False)
            waiting = [ids[i] for i, s in enumerate(steps) if s.parents]
            # One pass over the new rows: they join the workflow, and those with parents wait.
            for chunk in self._id_chunks(ids):
                run(
                    sa.update(jobs)
                    .where(self._among(jobs.c.id, chunk), jobs.c.workflow_id.is_(None))
                    .values(
                        workflow_id=workflow_id,
                        workflow_name=name,
                        state=sa.case(
                            (self._among(jobs.c.id, waiting), JobState.WAITING.value), else_=jobs.c.state
                        ),
                    )
                )
            edges = [(ids[i], ids[p], s.ignore_parent_failure, s.delay_s) for i, s in enumerate(steps) for p in s.parents]
            if edges:
                self._insert_edges(run, edges)
            held = [ids[i] for i, s in enumerate(steps) if s.job.unique_key is not None and not s.parents]
            if held and self.dialect == "sqlite":
                self._settle(c.exec_driver_sql, held)  # settles only those that have ended
            elif held:
                self._settle_held(run, held)
            return ids

        if conn is not None:
            with self._errors("enqueue_workflow"):
                return store(conn)
        return self._write("enqueue_workflow", store, retry=False)

    async def enqueue_workflow_on(self, conn: Any, name: str | None, steps: Sequence[StepRow]) -> list[int]:
        """:meth:`enqueue_workflow` in the caller's SQLAlchemy ``AsyncConnection`` (the
        async client's ``conn=``): this same code, through ``run_sync``."""
        run_sync = getattr(conn, "run_sync", None)
        if run_sync is None:
            raise BurrowError(f"conn= takes a SQLAlchemy AsyncConnection, got {type(conn).__name__}")

        def store(c: sa.Connection) -> list[int]:
            if c.dialect.name != self.dialect:
                raise BurrowError(f"conn= is a {c.dialect.name} connection, not one to this queue's database")
            return self.enqueue_workflow(name, steps, c)

        ids: list[int] = await run_sync(store)
        return ids

    def _id_chunks(self, ids: Sequence[int]) -> list[Sequence[int]]:
        """PostgreSQL takes any number of ids as one array; SQLite as variables, 5,000 at most."""
        return [ids] if self.dialect == "postgresql" else _chunks(ids)

    def _among(self, column: Any, ids: Sequence[int]) -> Any:
        if self.dialect == "postgresql":
            return column == sa.any_(sa.literal(list(ids), sa.ARRAY(sa.BigInteger)))
        return column.in_(list(ids))

    def _insert_edges(self, run: Callable[..., Any], edges: Sequence[tuple[int, int, bool, float]]) -> None:
        """PostgreSQL: one statement over four arrays; SQLite: executemany."""
        if self.dialect == "postgresql":
            columns = list(zip(*edges))
            types = (sa.BigInteger, sa.BigInteger, sa.Boolean, sa.Float)
            arrays = [sa.func.unnest(sa.literal(list(col), sa.ARRAY(t))) for col, t in zip(columns, types)]
            run(sa.insert(deps).from_select(["child_id", "parent_id", "ignore_failure", "delay_s"], sa.select(*arrays)))
            return
        keys = ("child_id", "parent_id", "ignore_failure", "delay_s")
        run(sa.insert(deps), [dict(zip(keys, edge)) for edge in edges])

    def _settle_held(self, run: Callable[..., Any], roots: Sequence[int]) -> None:
        """PostgreSQL: children of roots that had already ended when they joined (a unique
        key's holder that finished before this transaction locked it), settled by the rule
        the triggers follow (their own cascade then runs through the triggers): cancelled for a failure they do not ignore, queued once
        every parent has ended as they need."""
        ended = dict(run(sa.select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(roots), jobs.c.state.in_(_ENDED))).all())
        if not ended:
            return
        edges = run(
            sa.select(deps.c.child_id, deps.c.parent_id, deps.c.ignore_failure, jobs.c.state)
            .join(jobs, jobs.c.id == deps.c.parent_id, isouter=True)
            .where(deps.c.child_id.in_(sa.select(deps.c.child_id).where(deps.c.parent_id.in_(list(ended)))))
        ).all()
        by_child: dict[int, list[Any]] = {}
        for edge in edges:
            by_child.setdefault(edge.child_id, []).append(edge)
        for child, parents in by_child.items():
            failed = [e for e in parents if not e.ignore_failure and e.state in (JobState.FAILED, JobState.CANCELLED)]
            if failed:
                error = f"parent job {failed[0].parent_id} {failed[0].state}"
                values: dict[str, Any] = {"state": JobState.CANCELLED.value, "finished_at": self._now(), "last_error": error}
            elif all(e.state == JobState.SUCCEEDED or (e.ignore_failure and e.state in _ENDED) for e in parents):
                values = {"state": JobState.QUEUED.value}
            else:
                continue
            run(sa.update(jobs).where(jobs.c.id == child, jobs.c.state == JobState.WAITING.value).values(**values))

    # -- reading ------------------------------------------------------------------

    def find_workflow(self, name: str) -> int | None:
        """The newest workflow of that name."""
        statement = sa.select(sa.func.max(workflows.c.id)).where(workflows.c.name == name)
        found: int | None = self._read("find_workflow", lambda c: c.execute(statement).scalar())
        return found

    def workflow_jobs(self, workflow_id: int) -> list[JobInfo]:
        """The workflow's jobs in id order, each with its parents and children."""
        members = sa.select(jobs.c.id).where(jobs.c.workflow_id == workflow_id)

        def read(c: sa.Connection) -> tuple[list[Any], list[Any]]:
            rows = c.execute(sa.select(*[jobs.c[n] for n in JOB_COLUMNS]).where(jobs.c.workflow_id == workflow_id).order_by(jobs.c.id)).all()
            edges = c.execute(sa.select(deps.c.child_id, deps.c.parent_id).where(deps.c.child_id.in_(members))).all()
            return list(rows), list(edges)

        rows, edges = self._read("workflow_jobs", read)
        parents: dict[int, list[int]] = {}
        children: dict[int, list[int]] = {}
        for child, parent in edges:
            parents.setdefault(child, []).append(parent)
            children.setdefault(parent, []).append(child)
        return [
            _with_edges(job_info(row), parents.get(row.id, ()), children.get(row.id, ()))
            for row in rows
        ]

    def with_edges(self, info: JobInfo) -> JobInfo:
        """A workflow step's JobInfo with its parents and children (others as they are)."""
        if info.workflow_id is None:
            return info

        def read(c: sa.Connection) -> tuple[list[int], list[int]]:
            up = c.execute(sa.select(deps.c.parent_id).where(deps.c.child_id == info.id)).scalars()
            down = c.execute(sa.select(deps.c.child_id).where(deps.c.parent_id == info.id)).scalars()
            return list(up), list(down)

        up, down = self._read("job_edges", read)
        return _with_edges(info, up, down)

    def parent_results(self, job_id: int) -> dict[int, bytes | None]:
        """Each parent's stored result (None unless it succeeded with one), by id."""
        statement = (
            sa.select(deps.c.parent_id, jobs.c.state, jobs.c.result)
            .join(jobs, jobs.c.id == deps.c.parent_id, isouter=True)
            .where(deps.c.child_id == job_id)
            .order_by(deps.c.parent_id)
        )
        rows = self._read("parent_results", lambda c: c.execute(statement).all())
        return {parent: (result if state == JobState.SUCCEEDED else None) for parent, state, result in rows}

    # -- repairing ------------------------------------------------------------------

    def _rearm_downstream(self, c: sa.Connection, job_ids: Sequence[int]) -> None:
        """In the transaction that requeues failed steps: the jobs downstream of them that
        their failure cancelled (and only those) wait again."""
        cancelled_by_parent = sa.and_(
            jobs.c.state == JobState.CANCELLED.value, jobs.c.last_error.like("parent job % %")
        )
        seed = (
            sa.select(deps.c.child_id.label("id"))
            .join(jobs, jobs.c.id == deps.c.child_id)
            .where(deps.c.parent_id.in_(list(job_ids)), cancelled_by_parent)
            .cte("downstream", recursive=True)
        )
        step = (
            sa.select(deps.c.child_id)
            .join(seed, deps.c.parent_id == seed.c.id)
            .join(jobs, jobs.c.id == deps.c.child_id)
            .where(cancelled_by_parent)
        )
        downstream = seed.union(step)
        c.execute(
            sa.update(jobs)
            .where(jobs.c.id.in_(sa.select(downstream.c.id)))
            .values(state=JobState.WAITING.value, finished_at=None, last_error=None)
        )


def _with_edges(info: JobInfo, parents: Sequence[int], children: Sequence[int]) -> JobInfo:
    return dataclasses.replace(info, parents=tuple(sorted(parents)), children=tuple(sorted(children)))
