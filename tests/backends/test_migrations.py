"""Migrations: connect migrates a new database once, also when many connect together;
the frozen steps build exactly the declared schema; a first-release database keeps
every job and history row when the current code opens it."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from burrow.job import JobState
from burrow.backends.migrations import LATEST_VERSION, MIGRATIONS
from burrow.backends.schema import declare_predicates, metadata, sqlite_metadata
from burrow.queue import JobQueue
from tests.backends.helpers import rows
from tests.conftest import POSTGRES_DSN, Database

DATA = Path(__file__).parent / "data"
ALL_VERSIONS = [(version,) for version, _ in MIGRATIONS]


def test_connect_migrates_once(database: Database) -> None:
    with database.connect() as first:
        job_id = first.enqueue("mig.task", {"a": 1})
        with database.connect() as second:
            assert second.job(job_id).state is JobState.QUEUED
    assert rows(database, "SELECT version FROM burrow_schema_version ORDER BY version") == ALL_VERSIONS


CONNECTORS = 8


def test_concurrent_connects_migrate_once(database: Database) -> None:
    """Processes starting together on a new database: one migrates, none fails."""
    errors: list[BaseException] = []
    queues: list[JobQueue] = []
    barrier = threading.Barrier(CONNECTORS)

    def connect() -> None:
        try:
            barrier.wait(timeout=10)
            queues.append(database.connect())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(CONNECTORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert len(queues) == CONNECTORS
        job_id = queues[0].enqueue("mig.task", {})
        assert queues[-1].job(job_id).state is JobState.QUEUED
    finally:
        for q in queues:
            q.close()
    assert rows(database, "SELECT version FROM burrow_schema_version ORDER BY version") == ALL_VERSIONS


# -- the frozen steps build the declared schema ----------------------------------------


def _sqlite_schema(path: str) -> dict[str, Any]:
    """Tables with their columns, indexes (columns, order, uniqueness, WHERE) and checks."""
    snapshot: dict[str, Any] = {}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
        for table, sql in tables:
            columns = conn.execute(f"PRAGMA table_xinfo({table})").fetchall()
            checks = sorted(re.findall(r"CONSTRAINT (\w+) CHECK \((.*?)\)\s*(?:,|\)$)", _squash(sql)))
            snapshot[table] = {"columns": sorted(tuple(c[1:6]) for c in columns), "checks": checks}
        for name, table, sql in conn.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'"):
            keys = conn.execute(f"PRAGMA index_xinfo({name})").fetchall()
            unique = conn.execute(f"SELECT \"unique\" FROM pragma_index_list('{table}') WHERE name = ?", (name,)).fetchone()
            where = _squash(sql).partition(" WHERE ")[2] if sql else ""
            snapshot[f"index {name}"] = (table, [(k[2], k[3]) for k in keys if k[5]], unique[0], where)
    return snapshot


def _postgres_schema(admin: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    def scrub(text: str | None) -> str | None:
        return None if text is None else text.replace(f"{schema}.", "")

    snapshot: dict[str, Any] = {}
    columns = admin.execute(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid)
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE n.nspname = %s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped""",
        (schema,),
    ).fetchall()
    for table, *column in columns:
        snapshot.setdefault(table, []).append((column[0], column[1], column[2], scrub(column[3])))
    for table in snapshot:
        snapshot[table].sort()
    for name, definition in admin.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)):
        snapshot[f"index {name}"] = scrub(definition)
    constraints = admin.execute(
        """SELECT conname, contype, pg_get_constraintdef(c.oid) FROM pg_constraint c
           JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s""",
        (schema,),
    )
    for name, kind, definition in constraints:
        snapshot[f"constraint {name}"] = (kind, scrub(definition))
    return snapshot


def _squash(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).replace("( ", "(").replace(" )", ")").strip()


def test_migrations_build_the_declared_schema(database: Database, postgres_admin, tmp_path: Path) -> None:
    """All frozen steps applied == ``schema.metadata`` (and on SQLite ``sqlite_metadata``)
    created directly: same tables, columns, types, nullability, defaults, indexes (with
    their WHERE) and checks."""
    database.connect().close()
    declare_predicates(database.kind)
    if database.kind == "sqlite":
        declared = tmp_path / "declared.db"
        engine = sa.create_engine(f"sqlite:///{declared}")
        metadata.create_all(engine)
        sqlite_metadata.create_all(engine)
        engine.dispose()
        assert _sqlite_schema(database.dsn.removeprefix("sqlite:///")) == _sqlite_schema(str(declared))
        return
    declared_schema = f"burrow_declared_{secrets.token_hex(4)}"
    postgres_admin.execute(f'CREATE SCHEMA "{declared_schema}"')
    try:
        engine = sa.create_engine(POSTGRES_DSN.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            metadata.create_all(conn.execution_options(schema_translate_map={None: declared_schema}))
        engine.dispose()
        migrated = _postgres_schema(postgres_admin, database.schema or "public")
        assert migrated == _postgres_schema(postgres_admin, declared_schema)
    finally:
        postgres_admin.execute(f'DROP SCHEMA "{declared_schema}" CASCADE')


# -- a first-release database, upgraded ---------------------------------------------------


def _load_first_release(database: Database, postgres_admin) -> None:
    """The first release's DDL and data, as that release wrote them (data/make_first_release.py)."""
    if database.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(database.dsn.removeprefix("sqlite:///"))) as conn:
            conn.executescript((DATA / "first_release.sqlite.sql").read_text())
        return
    dump = (DATA / "first_release.postgresql.sql").read_text().replace("__SCHEMA__", f'"{database.schema}"')
    postgres_admin.execute(dump)


def test_a_first_release_database_keeps_every_job_when_upgraded(database: Database, postgres_admin) -> None:
    _load_first_release(database, postgres_admin)
    expected = json.loads((DATA / "first_release.expected.json").read_text())[database.kind]["jobs"]
    with database.connect() as q:  # migrates to the latest version
        assert q.backend.schema_status().version == LATEST_VERSION
        # That release's supervisor row survives migration 9's copy of the table.
        assert [(p.owner, p.pid, p.role) for p in q.processes()] == [("v1-host:1:supervisor:abcd", 1, "supervisor")]
        for job in expected:
            info = q.job(job["id"])
            stamps = {name: getattr(info, name) for name in ("run_at", "created_at", "started_at", "finished_at")}
            assert {
                "id": info.id, "task": info.task, "state": str(info.state), "priority": info.priority,
                "attempts": info.attempts, "max_retries": info.max_retries, "last_error": info.last_error,
                "result": None if info.result is None else base64.b64encode(info.result).decode(),
                "payload": base64.b64encode(info.payload).decode(), "owner": info.owner,
                **{name: None if value is None else value.isoformat() for name, value in stamps.items()},
                "history": [[h.attempt, str(h.event), h.error, h.at.isoformat()] for h in q.history(info.id)],
            } == job
        # And the upgraded database works: the queued jobs run, a new job gets a new id.
        new_id = q.enqueue("v1.new", {"n": 10})
        assert new_id > max(job["id"] for job in expected)
        q.handle("v1.queued", lambda data: None)
        assert q.drain() == 1
        assert q.job(expected[0]["id"]).state is JobState.SUCCEEDED
    assert rows(database, "SELECT version FROM burrow_schema_version ORDER BY version") == ALL_VERSIONS
