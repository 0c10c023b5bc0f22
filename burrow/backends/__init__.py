"""Storage backends, chosen by DSN; each dialect is imported only when used."""

from __future__ import annotations

from burrow.backends.base import Backend
from burrow.backends.sql import Clock
from burrow.errors import BackendError


def backend_for(dsn: str, *, schema: str | None = None, clock: Clock | None = None) -> Backend:
    """The backend for ``dsn``: sqlite:///path.db, or postgresql://user@host/db."""
    scheme = dsn.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        if schema is not None:
            raise BackendError("SQLite has no schemas: leave schema unset, or use another database file")
        from burrow.backends.sqlite import SQLiteBackend

        return SQLiteBackend(dsn, clock=clock)
    if scheme in ("postgresql", "postgres"):
        from burrow.backends.postgres import PostgresBackend

        return PostgresBackend(dsn, schema=schema, clock=clock)
    raise BackendError(f"unsupported DSN scheme {scheme!r}: use sqlite:///path.db or postgresql://user@host/db")
