"""Workflows: jobs that wait for other jobs, stored whole, released by the database.

A :class:`Workflow` is built step by step; a step may only come after steps already
added to it, so the graph is acyclic by construction and never needs checking.
``enqueue`` stores every step and edge in one transaction (docs/architecture.md,
"Workflows"). From then on the database decides: a step with parents waits
(``JobState.WAITING``, never claimed) until migration 12's triggers queue it, in the
transaction that ends its last parent, or cancel it when a parent fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Unpack

from burrow.backends.records import StepRow
from burrow.job import UNSET, EnqueueKeywords, _Unset, EnqueueOptions, delay_seconds, unique_keys

if TYPE_CHECKING:
    from burrow.aqueue import AsyncJobQueue
    from burrow.queue import JobQueue
    from burrow.tasks import TaskDefinition

MAX_NAME_LENGTH = 200
# The longest chain of steps a workflow may hold. On PostgreSQL a failure's
# cancellations cascade through the triggers, one nested trigger call per step of the
# chain, and its stack (max_stack_depth 2MB) refuses about 500; the write that ends
# the failed parent would fail with it. (SQLite's cascade is one recursive statement.)
MAX_DEPTH = 250


@dataclass(frozen=True, eq=False)
class Step:
    """One job of a workflow, to be: what ``Workflow.add`` returns, and what ``after=``
    and the ids ``Workflow.enqueue`` returns are keyed by."""

    workflow: Workflow = field(repr=False)
    index: int
    task: str
    payload: Any = field(repr=False)  # bytes for a typed task (encoded and checked); a JSON value otherwise
    options: EnqueueOptions = field(repr=False)
    config: Any = field(repr=False)  # the typed task's JobConfig; None: the queue's (or the registered) one
    unique_key: str | None | Any = field(repr=False)
    parents: tuple[int, ...]
    ignore_parent_failure: bool
    depth: int  # 1 for a step without parents, else one more than its deepest parent


class Workflow:
    """A graph of jobs: ``wf.add(task, payload, after=[...])``, then ``wf.enqueue(q)``.

    ``name`` finds it again (``q.workflow("order-42")``: the newest of that name).
    """

    def __init__(self, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH):
            raise ValueError(f"a workflow's name is a string of 1 to {MAX_NAME_LENGTH} characters, got {name!r}")
        self.name = name
        self._steps: list[Step] = []

    @property
    def steps(self) -> Sequence[Step]:
        return tuple(self._steps)

    def add(
        self,
        task: TaskDefinition[Any] | str,
        payload: Any,
        *,
        after: Sequence[Step] = (),
        ignore_parent_failure: bool = False,
        **options: Unpack[EnqueueKeywords],
    ) -> Step:
        """A step: a job of ``task`` (a typed task, or a task name with a JSON payload)
        that runs once every step in ``after`` succeeded, with enqueue's options.

        With ``ignore_parent_failure`` it runs once they have all ended, however. Its
        ``delay`` counts from its release. A step with parents holds no unique key
        (it is not queued yet); a root step's may make it the job already holding it.
        A typed payload is encoded and checked here (``PayloadEncodeError``).
        """
        parents = []
        for parent in after:
            if not isinstance(parent, Step) or parent.workflow is not self:
                raise ValueError(f"after= takes steps already added to this workflow, got {parent!r}")
            parents.append(parent.index)
        depth = 1 + max((self._steps[p].depth for p in parents), default=0)
        if depth > MAX_DEPTH:
            raise ValueError(f"a workflow is at most {MAX_DEPTH} steps deep; this step would be step {depth} of a chain")
        checked = EnqueueOptions.of(options)
        if parents and checked.unique_key not in (UNSET, None):
            raise ValueError("a step with parents holds no unique key: give unique_key to a step without after=")
        name = task if isinstance(task, str) else task.name
        config = None if isinstance(task, str) else task.config
        key: str | None | _Unset = None if parents else checked.unique_key
        if not isinstance(task, str):
            key = None if parents else unique_keys(checked, task.config, [payload])[0]
            payload = task.encode(payload)
        step = Step(self, len(self._steps), name, payload, checked, config, key, tuple(dict.fromkeys(parents)), ignore_parent_failure, depth)
        self._steps.append(step)
        return step

    def enqueue(self, q: JobQueue, *, conn: Any = None) -> Mapping[Step, int]:
        """Store the whole workflow in one transaction (inside ``conn``'s, when given), or
        nothing; returns each step's job id."""
        rows = []
        for step, options, keys, delay_s in self._planned():
            job = q.job_rows(step.task, [step.payload], options, keys, config=step.config)[0]
            rows.append(StepRow(job, step.parents, step.ignore_parent_failure, delay_s))
        ids = q.enqueue_steps(self.name, rows, conn=conn)
        return dict(zip(self._steps, ids, strict=True))

    async def aenqueue(self, aq: AsyncJobQueue, *, conn: Any = None) -> Mapping[Step, int]:
        """:meth:`enqueue` from an event loop, on the async client: the same rows and the
        same transaction; ``conn`` a SQLAlchemy ``AsyncConnection`` on the same database."""
        rows = []
        for step, options, keys, delay_s in self._planned():
            job = (await aq.job_rows(step.task, [step.payload], options, keys, config=step.config))[0]
            rows.append(StepRow(job, step.parents, step.ignore_parent_failure, delay_s))
        ids = await aq.enqueue_steps(self.name, rows, conn=conn)
        return dict(zip(self._steps, ids, strict=True))

    def _planned(self) -> list[tuple[Step, EnqueueOptions, list[str | None] | None, float]]:
        """Each step with the options its row is made with, its unique key as a row key
        list (None: computed from the task's options) and its delay after release: a
        step with parents counts its delay from then, not from now."""
        planned = []
        for step in self._steps:
            options, delay_s = step.options, 0.0
            if step.parents and options.delay is not None:
                delay_s, options = delay_seconds(options.delay), options._replace(delay=None)
            keys = None if step.unique_key is UNSET else [step.unique_key]
            planned.append((step, options, keys, delay_s))
        return planned
