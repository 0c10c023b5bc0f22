"""burrow's tables as SQLAlchemy Core objects: the schema as this release declares it.

The tables carry no schema name: a backend configured with a schema maps ``None``
to it with ``schema_translate_map``, so one set of Table objects (and one compiled
statement cache) serves every schema.

These objects are never used to create tables: ``migrations.py`` builds the schema
from frozen steps, and a test holds the result equal to what is declared here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import sqlalchemy as sa

from burrow.job import JobState

UTC = dt.timezone.utc


class Timestamp(sa.types.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every dialect.

    PostgreSQL stores ``timestamptz``. SQLite has no time type: SQLAlchemy stores a
    fixed-width ISO string, which sorts correctly only if every value has the same
    offset, so values are converted to UTC before they are written and marked UTC
    when they are read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: burrow needs timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()
_WHERE: Final = "burrow.where"  # a partial index's predicate by dialect, in Index.info (_partial_index)

# An INTEGER PRIMARY KEY is SQLite's rowid; a BIGINT one would not be.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# On PostgreSQL the jobs table also has fillfactor = 50 (migration 7 says why). It is
# not declared here: SQLAlchemy 2.0, which burrow supports, has no table storage
# parameters, and the migrations, not this metadata, create the tables.
jobs = sa.Table(
    "burrow_jobs",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", sa.String(16), nullable=False, server_default=JobState.QUEUED.value),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_retries", sa.Integer, nullable=False),
    sa.Column("run_at", Timestamp, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("started_at", Timestamp),
    sa.Column("finished_at", Timestamp),
    sa.Column("owner", sa.String(200)),
    sa.Column("lease_expires_at", Timestamp),
    sa.Column("last_error", sa.Text),
    sa.Column("result", sa.LargeBinary),
    sa.Column("unique_key", sa.String(200)),  # held while queued or running (burrow_jobs_unique_idx)
    sa.Column("snoozes", sa.Integer, nullable=False, server_default="0"),  # RetryAfter runs, not attempts
    sa.Column("queue", sa.String(200), nullable=False, server_default="default"),  # which pool claims it
    sa.Column("cancel_requested_at", Timestamp),  # q.cancel of a running job: its supervisor stops it
    sa.Column("workflow_id", sa.BigInteger),  # burrow_workflows.id of a workflow's step
    sa.Column("workflow_name", sa.String(200)),
    sa.Column("progress", sa.Float),  # the latest current_job().progress(...) of its run, written by its supervisor
    sa.Column("progress_message", sa.String(200)),
    sa.CheckConstraint(
        "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'waiting')", name="burrow_jobs_state_valid"
    ),
)


def _partial_index(
    name: str, *columns: Any, where: Any, unique: bool = False, dialects: tuple[str, ...] = ("postgresql", "sqlite")
) -> sa.Index:
    """An index of the rows ``where`` holds for on ``dialects`` (of every row on the others).

    The predicate waits in ``info`` until :func:`declare_predicates` names the dialect:
    ``postgresql_where=`` and ``sqlite_where=`` here would import both SQLAlchemy
    dialects into every process (SQLite's is 0.6 MB, PostgreSQL's 2.3 MB, counted again
    in each forked worker). The migrations write their own DDL, so only a ``create_all``
    from this file needs them."""
    return sa.Index(name, *columns, unique=unique, info={_WHERE: dict.fromkeys(dialects, where)})


def declare_predicates(dialect: str) -> None:
    """Give the partial indexes their WHERE for ``dialect`` before a ``create_all``."""
    for table in metadata.tables.values():
        for index in table.indexes:
            where = index.info.get(_WHERE, {}).get(dialect)
            if where is not None:
                index.dialect_options[dialect]["where"] = where


def _claim_order() -> tuple[Any, ...]:
    """Claim order: higher priority first, then oldest ``run_at``, then id."""
    return jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id


_QUEUED = jobs.c.state == "queued"

# The claim's access path: only queued rows, already in claim order. Finished jobs,
# however many, never enter it.
_partial_index("burrow_jobs_queued_idx", *_claim_order(), where=_QUEUED)
# The reaper's access path: running rows by lease expiry.
_partial_index("burrow_jobs_running_idx", jobs.c.lease_expires_at, where=jobs.c.state == "running")

# Operators' listings, newest first (q.jobs): by state (but succeeded, the many: a
# listing of those walks the primary key) and by task. Neither holds running jobs on
# PostgreSQL, where each claim would write them an entry (migration 10); the running
# index finds them. SQLite's task index holds every job: no claim or finish touches it.
_partial_index("burrow_jobs_state_idx", jobs.c.state, jobs.c.id, where=jobs.c.state.not_in(["succeeded", "running"]))
_partial_index("burrow_jobs_task_idx", jobs.c.task, jobs.c.id, where=jobs.c.state != "running", dialects=("postgresql",))

# One job per (task, unique key) while it is queued or running.
UNIQUE_WHERE = "unique_key IS NOT NULL AND state IN ('queued', 'running')"
_partial_index("burrow_jobs_unique_idx", jobs.c.task, jobs.c.unique_key, unique=True, where=sa.text(UNIQUE_WHERE))

# The claims of a pool of named queues, and of a task whose running jobs are limited.
_partial_index("burrow_jobs_queue_idx", jobs.c.queue, *_claim_order(), where=_QUEUED)
_partial_index("burrow_jobs_task_queued_idx", jobs.c.task, *_claim_order(), where=_QUEUED)

# Retention: finished jobs of a state, oldest first.
_partial_index("burrow_jobs_finished_idx", jobs.c.state, jobs.c.finished_at, where=jobs.c.finished_at.is_not(None))

# A workflow's jobs, together (q.workflow; retention keeps them together).
_partial_index("burrow_jobs_workflow_idx", jobs.c.workflow_id, where=jobs.c.workflow_id.is_not(None))

# Workflows (burrow.Workflow): an id for each, and the name to find it by.
workflows = sa.Table(
    "burrow_workflows",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200)),
    sa.Column("created_at", Timestamp, nullable=False),
)
sa.Index("burrow_workflows_name_idx", workflows.c.name)

# A workflow's edges: the child waits for the parent. What the child does when a
# parent fails (ignore_failure) and how long after its release it runs (delay_s)
# ride on each of its edges. Triggers on burrow_jobs read them (migration 12): a
# parent's end releases or cancels its waiting children in the same transaction.
deps = sa.Table(
    "burrow_deps",
    metadata,
    sa.Column("child_id", sa.BigInteger, primary_key=True),
    sa.Column("parent_id", sa.BigInteger, primary_key=True),
    sa.Column("ignore_failure", sa.Boolean, nullable=False),
    sa.Column("delay_s", sa.Float, nullable=False),
)
sa.Index("burrow_deps_parent_idx", deps.c.parent_id)

history = sa.Table(
    "burrow_job_history",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("duration_s", sa.Float),
)

processes = sa.Table(
    "burrow_processes",
    metadata,
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("role", sa.String(255), nullable=False),  # "worker:<pool>"
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("heartbeat_at", Timestamp, nullable=False),
)

# The tasks each live supervisor handles, with their options (JSON): a due job whose
# task no live supervisor handles is named by `burrow status`, the admin, a metric
# and the supervisor's log, and an enqueue without the task's definition (the CLI, a
# raw q.enqueue) takes its options from here. Rows go with their process's row.
tasks = sa.Table(
    "burrow_tasks",
    metadata,
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("task", sa.String(200), primary_key=True),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("registered_at", Timestamp, nullable=False),
)
sa.Index("burrow_tasks_task_idx", tasks.c.task)

# Periodic jobs: the last slot enqueued, per schedule name (see burrow.schedule).
schedules = sa.Table(
    "burrow_schedules",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("spec", sa.String(200), nullable=False),
    sa.Column("last_slot", Timestamp),
    sa.Column("next_slot", Timestamp),
    sa.Column("updated_at", Timestamp, nullable=False),
)

# Jobs finished per minute and task, added up by supervisors (q.throughput).
stats = sa.Table(
    "burrow_stats",
    metadata,
    sa.Column("minute", Timestamp, primary_key=True),
    sa.Column("task", sa.String(200), primary_key=True),
    sa.Column("succeeded", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retried", sa.Integer, nullable=False, server_default="0"),
)

# Queues an operator paused (q.pause_queue): the claim skips their jobs. A row stays
# after a resume (paused false), saying who resumed it and when.
queues = sa.Table(
    "burrow_queues",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("updated_by", sa.String(255)),
)

# Operators' actions (retry, cancel, delete, prune, pause, ...), each written in the
# transaction of the action itself: who, what, on which job, queue or filter, how many.
audit = sa.Table(
    "burrow_audit",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("at", Timestamp, nullable=False, index=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("job_id", sa.BigInteger),
    sa.Column("queue", sa.String(200)),
    sa.Column("filter", sa.Text),
    sa.Column("count", sa.Integer, nullable=False, server_default="0"),
)
sa.Index("burrow_audit_at_idx", audit.c.at)

schema_version = sa.Table(
    "burrow_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", Timestamp, nullable=False),
)

# SQLite only (migration 8): the largest job id handed out before the last delete.
# SQLite's enqueue hands out the ids after the largest one in the jobs table; with the
# newest job deleted that would be its id again. PostgreSQL's sequence never goes back.
sqlite_metadata = sa.MetaData()

id_floor = sa.Table(
    "burrow_id_floor",
    sqlite_metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("max_id", sa.BigInteger, nullable=False),
)
