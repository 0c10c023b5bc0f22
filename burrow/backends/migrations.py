"""The ordered, frozen migrations that build burrow's schema on each dialect.

A released migration never changes: it is SQL text written out here, never built
from the live ``Table`` objects in ``schema.py``. Built from those, migration 1
would create a column added later, and the ALTER that adds it would collide; a
database of the first release and a fresh one would drift apart unnoticed. So
each change to the schema is a new step appended below, and a test builds a
database from all steps and compares it with ``schema.metadata``.

Statements name tables without a schema: PostgreSQL runs them with its
``search_path`` set to burrow's schema for the migrating transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

import sqlalchemy as sa

from burrow.backends.schema import schema_version

# -- the version table: created before any migration, identical in every release --

_VERSION_TABLE: Mapping[str, str] = {
    "sqlite": """CREATE TABLE IF NOT EXISTS burrow_schema_version (
	version INTEGER NOT NULL,
	applied_at DATETIME NOT NULL,
	PRIMARY KEY (version)
)""",
    "postgresql": """CREATE TABLE IF NOT EXISTS burrow_schema_version (
	version SERIAL NOT NULL,
	applied_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (version)
)""",
}

# -- 1: the first release (b1b8523): jobs, history, processes --------------------

_V1_JOBS = """CREATE TABLE burrow_jobs (
	id {id} NOT NULL,
	task VARCHAR(200) NOT NULL,
	priority INTEGER DEFAULT '0' NOT NULL,
	state VARCHAR(16) DEFAULT 'queued' NOT NULL,
	payload {bytes} NOT NULL,
	attempts INTEGER DEFAULT '0' NOT NULL,
	max_retries INTEGER NOT NULL,
	run_at {time} NOT NULL,
	created_at {time} NOT NULL,
	started_at {time},
	finished_at {time},
	owner VARCHAR(200),
	lease_expires_at {time},
	last_error TEXT,
	result {bytes},
	PRIMARY KEY (id),
	CONSTRAINT burrow_jobs_state_valid CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'))
)"""
_V1_HISTORY = """CREATE TABLE burrow_job_history (
	id {id} NOT NULL,
	job_id BIGINT NOT NULL,
	attempt INTEGER NOT NULL,
	event VARCHAR(32) NOT NULL,
	error TEXT,
	at {time} NOT NULL,
	PRIMARY KEY (id)
)"""
_V1_PROCESSES = """CREATE TABLE burrow_processes (
	owner VARCHAR(200) NOT NULL,
	host VARCHAR(255) NOT NULL,
	pid INTEGER NOT NULL,
	role VARCHAR(32) NOT NULL,
	started_at {time} NOT NULL,
	heartbeat_at {time} NOT NULL,
	PRIMARY KEY (owner)
)"""
_V1_INDEXES = (
    "CREATE INDEX burrow_jobs_queued_idx ON burrow_jobs (priority DESC, run_at, id) WHERE state = 'queued'",
    "CREATE INDEX burrow_jobs_running_idx ON burrow_jobs (lease_expires_at) WHERE state = 'running'",
    "CREATE INDEX ix_burrow_job_history_job_id ON burrow_job_history (job_id)",
)
# An INTEGER PRIMARY KEY is SQLite's rowid; a BIGINT one would not be.
_V1_TYPES: Mapping[str, Mapping[str, str]] = {
    "sqlite": {"id": "INTEGER", "bytes": "BLOB", "time": "DATETIME"},
    "postgresql": {"id": "BIGSERIAL", "bytes": "BYTEA", "time": "TIMESTAMP WITH TIME ZONE"},
}


def _v1(dialect: str) -> list[str]:
    types = _V1_TYPES[dialect]
    return [table.format(**types) for table in (_V1_JOBS, _V1_HISTORY, _V1_PROCESSES)] + list(_V1_INDEXES)


# -- 2: operators' listings and the whole story of each attempt --------------------


def _v2(dialect: str) -> list[str]:
    """Listing by state or task, newest first, stays an index range scan with millions
    of finished jobs: succeeded jobs, the many, are left out of the state index (a
    listing of them walks the primary key, where nearly every row matches). History
    rows say where an attempt ran and how long it took."""
    return [
        "CREATE INDEX burrow_jobs_state_idx ON burrow_jobs (state, id) WHERE state != 'succeeded'",
        "CREATE INDEX burrow_jobs_task_idx ON burrow_jobs (task, id)",
        "ALTER TABLE burrow_job_history ADD COLUMN host VARCHAR(255)",
        "ALTER TABLE burrow_job_history ADD COLUMN pid INTEGER",
        "ALTER TABLE burrow_job_history ADD COLUMN duration_s FLOAT",
    ]


# -- 3: scheduling: unique jobs, snoozes, periodic slots ------------------------------


def _v3(dialect: str) -> list[str]:
    """A unique key is held only while its job is queued or running (a partial unique
    index: free again the moment the job ends, however it ends). A schedule's row
    records its last enqueued slot; the supervisor that moves it forward is the one
    that enqueues the slot, so each slot is enqueued once however many run."""
    time = _V1_TYPES[dialect]["time"]
    return [
        "ALTER TABLE burrow_jobs ADD COLUMN unique_key VARCHAR(200)",
        "ALTER TABLE burrow_jobs ADD COLUMN snoozes INTEGER DEFAULT '0' NOT NULL",
        "CREATE UNIQUE INDEX burrow_jobs_unique_idx ON burrow_jobs (task, unique_key)"
        " WHERE unique_key IS NOT NULL AND state IN ('queued', 'running')",
        f"""CREATE TABLE burrow_schedules (
	name VARCHAR(200) NOT NULL,
	task VARCHAR(200) NOT NULL,
	spec VARCHAR(200) NOT NULL,
	last_slot {time},
	next_slot {time},
	updated_at {time} NOT NULL,
	PRIMARY KEY (name)
)""",
    ]


# -- 4: throughput per minute, for the admin's chart ------------------------------------


def _v4(dialect: str) -> list[str]:
    """Supervisors add up what they finished per minute and task, one upsert per
    heartbeat: a chart of the last hour reads 60 rows a task, not every job of it."""
    time = _V1_TYPES[dialect]["time"]
    return [
        f"""CREATE TABLE burrow_stats (
	minute {time} NOT NULL,
	task VARCHAR(200) NOT NULL,
	succeeded INTEGER DEFAULT '0' NOT NULL,
	failed INTEGER DEFAULT '0' NOT NULL,
	retried INTEGER DEFAULT '0' NOT NULL,
	PRIMARY KEY (minute, task)
)""",
    ]


# -- 5: retention by age, as an index range ---------------------------------------------


def _v5(dialect: str) -> list[str]:
    """Pruning finished jobs by age: without it, each check for old jobs walked the
    whole table (350 ms beside 2,000,000 finished jobs, measured), stalling the
    supervisor's loop even when there was nothing to prune."""
    return [
        "CREATE INDEX burrow_jobs_finished_idx ON burrow_jobs (state, finished_at) WHERE finished_at IS NOT NULL",
    ]


# -- 6: flow control: named queues, cancelling running jobs, concurrency limits -------


def _v6(dialect: str) -> list[str]:
    """A job's queue (each pool of workers claims from its own), a cancel request for a
    running job (its supervisor stops it), and the claim's access paths: by queue,
    and by task for the tasks whose running jobs are limited."""
    time = _V1_TYPES[dialect]["time"]
    return [
        "ALTER TABLE burrow_jobs ADD COLUMN queue VARCHAR(200) DEFAULT 'default' NOT NULL",
        f"ALTER TABLE burrow_jobs ADD COLUMN cancel_requested_at {time}",
        "CREATE INDEX burrow_jobs_queue_idx ON burrow_jobs (queue, priority DESC, run_at, id) WHERE state = 'queued'",
        "CREATE INDEX burrow_jobs_task_queued_idx ON burrow_jobs (task, priority DESC, run_at, id)"
        " WHERE state = 'queued'",
    ]


# -- 7: room on each page for a claimed job's new row version (PostgreSQL) -------


def _v7(dialect: str) -> list[str]:
    """Inserts fill PostgreSQL's pages of jobs to half, leaving the other half for the
    new row versions that a job's claim and finish write (neither can be a HOT
    update: both change indexed columns). On full pages those versions went wherever
    the free space map pointed; beside 2,000,000 finished jobs that was a different
    old page per job, a page write and a full-page WAL image each (30,000 images for
    a drain of 30,000 jobs against 660 on an empty table), and the drain ran at
    0.69-0.77 of the empty-table rate; with half-filled pages at 0.99-1.03 (0.95-0.97
    while retention prunes them). The cost is disk: finished jobs take twice the heap
    (797 MB instead of 402 MB for 2,000,000), which retention bounds. Half, because a
    claim batch gives every queued job on a page a second version in one transaction.
    It applies to rows inserted from now on; SQLite's b-tree has no such setting."""
    return ["ALTER TABLE burrow_jobs SET (fillfactor = 50)"] if dialect == "postgresql" else []


# -- 8: a deleted job's id is never handed out again (SQLite) ---------------------


def _v8(dialect: str) -> list[str]:
    """SQLite's enqueue hands out the ids after the largest one in the table, so
    deleting or pruning the newest job freed its id for the next enqueue: a caller
    holding the old id would read another job. The largest id handed out before each
    delete is kept here. PostgreSQL's sequence never goes back."""
    if dialect != "sqlite":
        return []
    return [
        """CREATE TABLE burrow_id_floor (
	name VARCHAR(64) NOT NULL,
	max_id BIGINT NOT NULL,
	PRIMARY KEY (name)
)""",
        "INSERT INTO burrow_id_floor (name, max_id) SELECT 'burrow_jobs', coalesce(max(id), 0) FROM burrow_jobs",
    ]


# -- 9: a worker's role names its pool in full --------------------------------------


def _v9(dialect: str) -> list[str]:
    """A pool's workers register as "worker:<pool>", and pool names run to 200
    characters: cut at 32, two pools could show as one in `burrow status` and the
    admin. SQLite cannot alter a column's type: the table (only live processes, a
    few rows) is copied into its new shape."""
    if dialect == "postgresql":
        return ["ALTER TABLE burrow_processes ALTER COLUMN role TYPE VARCHAR(255)"]
    return [
        """CREATE TABLE burrow_processes_v9 (
	owner VARCHAR(200) NOT NULL,
	host VARCHAR(255) NOT NULL,
	pid INTEGER NOT NULL,
	role VARCHAR(255) NOT NULL,
	started_at DATETIME NOT NULL,
	heartbeat_at DATETIME NOT NULL,
	PRIMARY KEY (owner)
)""",
        "INSERT INTO burrow_processes_v9 (owner, host, pid, role, started_at, heartbeat_at)"
        " SELECT owner, host, pid, role, started_at, heartbeat_at FROM burrow_processes",
        "DROP TABLE burrow_processes",
        "ALTER TABLE burrow_processes_v9 RENAME TO burrow_processes",
    ]


# -- 10: a claimed job's row version enters no listing index -------------------------


def _v10(dialect: str) -> list[str]:
    """A claim writes each job a new row version, and every index whose condition the
    version meets gets an entry: the listings' state and task indexes took two of the
    four a claim wrote on PostgreSQL. Running jobs are few (the workers' batches) and
    have an index of their own (burrow_jobs_running_idx), so listings find them there
    and these two leave them out (benchmarks/README.md has what it bought). SQLite
    updates an index only when a column it covers (or its condition reads) changes, so
    its task index, which no claim or finish touched, stays whole."""
    statements = [
        "DROP INDEX burrow_jobs_state_idx",
        "CREATE INDEX burrow_jobs_state_idx ON burrow_jobs (state, id)"
        " WHERE (state NOT IN ('succeeded', 'running'))",
    ]
    if dialect == "postgresql":
        statements += [
            "DROP INDEX burrow_jobs_task_idx",
            "CREATE INDEX burrow_jobs_task_idx ON burrow_jobs (task, id) WHERE state != 'running'",
        ]
    return statements


# -- 11: the task registry -------------------------------------------------------


def _v11(dialect: str) -> list[str]:
    """Each supervisor records the tasks it handles and their options at start and on
    reload: a job whose task nobody handles (a typo in a task name, an app not
    deployed) is named instead of waiting in silence, and an enqueue that has no
    definition of the task (the CLI) takes the task's options from here."""
    time = _V1_TYPES[dialect]["time"]
    return [
        f"""CREATE TABLE burrow_tasks (
	owner VARCHAR(200) NOT NULL,
	task VARCHAR(200) NOT NULL,
	options TEXT NOT NULL,
	registered_at {time} NOT NULL,
	PRIMARY KEY (owner, task)
)""",
        "CREATE INDEX burrow_tasks_task_idx ON burrow_tasks (task)",
    ]


# -- 12: workflows ----------------------------------------------------------------

# The NOTIFY channels, as postgres.notify_channel names them (a long name hashed down).
_V12_PG_CHANNEL = """CREATE FUNCTION burrow_channel(prefix text, schema_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN octet_length(prefix || ':' || schema_name) <= 63 THEN prefix || ':' || schema_name
                ELSE prefix || ':' || left(encode(sha256(convert_to(prefix || ':' || schema_name, 'UTF8')), 'hex'), 48)
           END
$$"""

# What a parent's end does to its waiting children, in the transaction that ends it
# (docs/architecture.md, "Workflows"). A trigger, so that every way a job ends (a
# finish, the reaper, a cancel, a delete, retention) settles its children, and none
# can forget to. For the ended parent: its waiting children are locked first (a
# sibling parent ending at the same moment waits here for this transaction, then
# reads its outcome: no child is left waiting and none is released twice); if it did
# not succeed, the children that do not ignore a parent's failure are cancelled,
# naming the parent that failed (each cancellation is itself an end, so the trigger
# runs again for their children: the cascade is transitive, and keeps naming the
# first job that failed); then every child whose parents have all ended as it needs
# is queued, due at the parent's end plus its delay, and idle workers are woken.
_V12_PG_SETTLE = """CREATE FUNCTION burrow_settle() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    parent burrow_jobs;
    ended text;
    ended_at timestamptz;
    cause text;
    changed int;
BEGIN
    IF TG_OP = 'DELETE' THEN
        parent := OLD; ended := 'deleted'; ended_at := clock_timestamp();
    ELSE
        parent := NEW; ended := NEW.state; ended_at := coalesce(NEW.finished_at, clock_timestamp());
    END IF;
    PERFORM 1 FROM burrow_jobs
    WHERE id IN (SELECT child_id FROM burrow_deps WHERE parent_id = parent.id) AND state = 'waiting'
    ORDER BY id FOR UPDATE;
    IF ended <> 'succeeded' THEN
        cause := CASE WHEN ended = 'cancelled' AND parent.last_error LIKE 'parent job % %'
                      THEN parent.last_error ELSE 'parent job ' || parent.id || ' ' || ended END;
        UPDATE burrow_jobs SET state = 'cancelled', finished_at = ended_at, last_error = cause
        WHERE state = 'waiting'
          AND id IN (SELECT child_id FROM burrow_deps WHERE parent_id = parent.id AND NOT ignore_failure);
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed > 0 THEN
            PERFORM pg_notify(burrow_channel('burrow_done', TG_TABLE_SCHEMA), '');
        END IF;
    END IF;
    UPDATE burrow_jobs AS c
    SET state = 'queued',
        run_at = greatest(c.run_at, ended_at + make_interval(secs => (
            SELECT max(delay_s) FROM burrow_deps WHERE child_id = c.id)))
    WHERE c.state = 'waiting'
      AND c.id IN (SELECT child_id FROM burrow_deps WHERE parent_id = parent.id)
      AND NOT EXISTS (
          SELECT 1 FROM burrow_deps AS d LEFT JOIN burrow_jobs AS p ON p.id = d.parent_id
          WHERE d.child_id = c.id
            AND NOT (coalesce(p.state = 'succeeded', false)
                     OR (d.ignore_failure AND (p.id IS NULL OR p.state IN ('failed', 'cancelled')))));
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed > 0 THEN
        PERFORM pg_notify(burrow_channel('burrow', TG_TABLE_SCHEMA), '');
    END IF;
    IF TG_OP = 'DELETE' THEN
        DELETE FROM burrow_deps WHERE child_id = OLD.id;
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$"""

_ENDED = "('succeeded', 'failed', 'cancelled')"


def _v12(dialect: str) -> list[str]:
    """Workflows (burrow.Workflow): jobs that wait for other jobs. A waiting step is in
    the new state ``waiting``, never claimed; its edges are rows of ``burrow_deps``;
    on PostgreSQL, triggers release or cancel it when its parents end (see above)."""
    time = _V1_TYPES[dialect]["time"]
    ident = _V1_TYPES[dialect]["id"]
    if dialect == "sqlite":
        # SQLite cannot alter a CHECK constraint; its documented way to loosen one is to
        # edit the table's text in the schema table (every row meets the looser one).
        # The ALTER TABLEs below then bump the schema version: every connection re-reads it.
        statements = [
            "PRAGMA writable_schema = ON",
            "UPDATE sqlite_master SET sql = replace(sql, '''failed'', ''cancelled''))',"
            " '''failed'', ''cancelled'', ''waiting''))') WHERE type = 'table' AND name = 'burrow_jobs'",
            "PRAGMA writable_schema = OFF",
        ]
    else:
        statements = [
            "ALTER TABLE burrow_jobs DROP CONSTRAINT burrow_jobs_state_valid",
            "ALTER TABLE burrow_jobs ADD CONSTRAINT burrow_jobs_state_valid"
            " CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'waiting'))",
        ]
    statements += [
        "ALTER TABLE burrow_jobs ADD COLUMN workflow_id BIGINT",
        "ALTER TABLE burrow_jobs ADD COLUMN workflow_name VARCHAR(200)",
        "CREATE INDEX burrow_jobs_workflow_idx ON burrow_jobs (workflow_id) WHERE workflow_id IS NOT NULL",
        f"""CREATE TABLE burrow_workflows (
	id {ident} NOT NULL,
	name VARCHAR(200),
	created_at {time} NOT NULL,
	PRIMARY KEY (id)
)""",
        "CREATE INDEX burrow_workflows_name_idx ON burrow_workflows (name)",
        """CREATE TABLE burrow_deps (
	child_id BIGINT NOT NULL,
	parent_id BIGINT NOT NULL,
	ignore_failure BOOLEAN NOT NULL,
	delay_s FLOAT NOT NULL,
	PRIMARY KEY (child_id, parent_id)
)""",
        "CREATE INDEX burrow_deps_parent_idx ON burrow_deps (parent_id)",
    ]
    if dialect == "postgresql":
        return [
            *statements,
            _V12_PG_CHANNEL,
            _V12_PG_SETTLE.replace("%", "%%"),  # psycopg reads % as a placeholder's start
            "CREATE TRIGGER burrow_jobs_settle AFTER UPDATE OF state ON burrow_jobs FOR EACH ROW"
            f" WHEN (NEW.workflow_id IS NOT NULL AND NEW.state IN {_ENDED} AND OLD.state IS DISTINCT FROM NEW.state)"
            " EXECUTE FUNCTION burrow_settle()",
            "CREATE TRIGGER burrow_jobs_settle_deleted AFTER DELETE ON burrow_jobs FOR EACH ROW"
            " WHEN (OLD.workflow_id IS NOT NULL) EXECUTE FUNCTION burrow_settle()",
        ]
    # SQLite settles workflows in the statements that end jobs (SQLiteBackend._settle):
    # a row trigger would cost every finish, workflow or not.
    return statements


# -- 13: operators' second round: paused queues, the audit trail, progress -----------


def _v13(dialect: str) -> list[str]:
    """A queue's paused state (the claim leaves the jobs of a paused queue where they
    are, on every supervisor at once, and the state survives restarts); one row per
    operator action (who did what to which jobs, written in the action's own
    transaction); and the latest progress a running job reported."""
    time = _V1_TYPES[dialect]["time"]
    ident = _V1_TYPES[dialect]["id"]
    false = "0" if dialect == "sqlite" else "false"
    return [
        f"""CREATE TABLE burrow_queues (
	name VARCHAR(200) NOT NULL,
	paused BOOLEAN DEFAULT {false} NOT NULL,
	updated_at {time} NOT NULL,
	updated_by VARCHAR(255),
	PRIMARY KEY (name)
)""",
        f"""CREATE TABLE burrow_audit (
	id {ident} NOT NULL,
	at {time} NOT NULL,
	actor VARCHAR(255) NOT NULL,
	action VARCHAR(32) NOT NULL,
	job_id BIGINT,
	queue VARCHAR(200),
	filter TEXT,
	count INTEGER DEFAULT '0' NOT NULL,
	PRIMARY KEY (id)
)""",
        "CREATE INDEX burrow_audit_at_idx ON burrow_audit (at)",
        "ALTER TABLE burrow_jobs ADD COLUMN progress FLOAT",
        "ALTER TABLE burrow_jobs ADD COLUMN progress_message VARCHAR(200)",
    ]


# -- the steps ----------------------------------------------------------------------

Step = Callable[[str], Sequence[str]]  # dialect name -> its DDL statements

# Append only: a released migration is never edited, its number never reused.
MIGRATIONS: tuple[tuple[int, Step], ...] = (
    (1, _v1), (2, _v2), (3, _v3), (4, _v4), (5, _v5), (6, _v6), (7, _v7), (8, _v8), (9, _v9), (10, _v10), (11, _v11),
    (12, _v12), (13, _v13),
)
LATEST_VERSION = MIGRATIONS[-1][0]


def current_version(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.coalesce(sa.func.max(schema_version.c.version), 0))).scalar_one()


def stored_version(conn: sa.Connection, schema: str | None) -> int:
    """The applied version, 0 when burrow's tables do not exist yet; creates nothing."""
    if not sa.inspect(conn).has_table(schema_version.name, schema=schema):
        return 0
    return current_version(conn)


def apply_migrations(conn: sa.Connection, now: dt.datetime) -> list[int]:
    """Apply every migration newer than the stored version; the caller holds the lock.

    Returns the versions applied, so that a caller can log them.
    """
    dialect = conn.dialect.name
    conn.exec_driver_sql(_VERSION_TABLE[dialect])
    done = current_version(conn)
    applied = []
    for version, step in MIGRATIONS:
        if version > done:
            for statement in step(dialect):
                conn.exec_driver_sql(statement)
            conn.execute(sa.insert(schema_version).values(version=version, applied_at=now))
            applied.append(version)
    return applied
