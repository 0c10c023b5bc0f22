"""Storage backends, chosen by DSN; each dialect is imported only when used."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.exc import ArgumentError

from burrow.backends.contract import Backend
from burrow.backends.deadline import DEFAULT_TIMEOUTS, Timeouts
from burrow.backends.sql.connection import Clock, first_line
from burrow.errors import BackendError


def backend_for(
    dsn: str,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    pooled: bool = False,
    listen_dsn: str | None = None,
) -> Backend:
    """The backend for ``dsn``: sqlite:///path.db, or postgresql://user@host/db.

    ``timeouts`` bound every database call it makes (see burrow/backends/deadline.py).
    PostgreSQL only: ``pooled`` says ``dsn`` is a pooler in transaction mode (PgBouncer),
    ``listen_dsn`` a direct connection for LISTEN (README, "PgBouncer").
    """
    scheme = dsn.split(":", 1)[0].split("+", 1)[0].lower()
    try:
        if scheme == "sqlite":
            if pooled or listen_dsn is not None:
                raise BackendError("pooled and listen_dsn are PostgreSQL's: leave them unset with SQLite")
            if schema is not None:
                raise BackendError("SQLite has no schemas: leave schema unset, or use another database file")
            from burrow.backends.sqlite import SQLiteBackend

            return SQLiteBackend(dsn, clock=clock, timeouts=timeouts)
        if scheme in ("postgresql", "postgres"):
            from burrow.backends.postgres import PostgresBackend

            return PostgresBackend(
                dsn, schema=schema, clock=clock, timeouts=timeouts, pooled=pooled, listen_dsn=listen_dsn
            )
    except (ValueError, ArgumentError) as exc:  # SQLAlchemy's URL parser: a bad port, a bad form
        raise BackendError(f"not a database URL burrow can read: {first_line(exc)}") from None
    raise BackendError(f"unsupported DSN scheme {scheme!r}: use sqlite:///path.db or postgresql://user@host/db")


async def async_backend_for(
    dsn: str,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
    pool_size: int | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    pooled: bool = False,
    listen_dsn: str | None = None,
) -> Any:
    """The async client's backend for ``dsn`` (an ``AsyncBackend``, burrow/aqueue.py),
    migrated. Its modules load only here, when an application asks for one: psycopg's
    async connections on PostgreSQL, a few threads on SQLite. ``pool_size`` bounds its
    connections (threads). The migrations run in a thread: they take a lock and may
    take a while, and they are the sync dialect's."""
    backend = backend_for(dsn, schema=schema, clock=clock, timeouts=timeouts, pooled=pooled, listen_dsn=listen_dsn)
    try:
        await asyncio.to_thread(backend.migrate)
        if backend.dialect == "postgresql":
            from burrow.backends.postgres import PostgresBackend
            from burrow.backends.postgres_async import DEFAULT_POOL_SIZE, AsyncPostgres

            assert isinstance(backend, PostgresBackend)
            # Its pool served the migrations; the async client has a pool of its own.
            await asyncio.to_thread(backend.close)
            return AsyncPostgres(backend, pool_size=DEFAULT_POOL_SIZE if pool_size is None else pool_size)
        from burrow.backends.sqlite import SQLiteBackend
        from burrow.backends.sqlite_async import DEFAULT_POOL_SIZE as THREADS, AsyncSQLite

        assert isinstance(backend, SQLiteBackend)
        return AsyncSQLite(backend, pool_size=THREADS if pool_size is None else pool_size)
    except BaseException:
        backend.close()
        raise
