"""Where a Django task backend's jobs live, and burrow's backend for it.

``OPTIONS["DATABASE"]`` names a ``DATABASES`` alias (default ``"default"``): the jobs
are in that database, and enqueue runs on Django's own connection of the alias.
``OPTIONS["DSN"]`` (with ``"SCHEMA"``) names a database of its own instead. Either
way burrow's own reads, the worker and the migrations reach it by DSN, made here
from the alias's settings.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

import sqlalchemy as sa
from django.core.exceptions import ImproperlyConfigured

from burrow.backends import backend_for
from burrow.backends.contract import Backend

DEFAULT_DATABASE = "default"


@dataclass(frozen=True, slots=True)
class Location:
    """The jobs' database: ``alias`` is the DATABASES alias whose connection enqueues
    (None: a DSN of its own, outside Django's transactions)."""

    alias: str | None
    dsn: str
    schema: str | None


def location_of(options: Mapping[str, Any]) -> Location:
    """From a TASKS entry's OPTIONS; ImproperlyConfigured naming what is wrong."""
    schema = options.get("SCHEMA") or None
    dsn = options.get("DSN")
    if dsn:
        if "DATABASE" in options:
            raise ImproperlyConfigured("burrow.django: OPTIONS takes DATABASE or DSN, not both")
        return Location(None, str(dsn), schema)
    alias = options.get("DATABASE", DEFAULT_DATABASE)
    return Location(alias, dsn_of_alias(alias), schema)


def dsn_of_alias(alias: str) -> str:
    """burrow's DSN for the database Django's ``DATABASES[alias]`` names (SQLite or PostgreSQL)."""
    from django.db import connections

    settings = connections.settings[alias]  # ConnectionDoesNotExist for an unknown alias
    engine = str(settings.get("ENGINE", ""))
    name = settings.get("NAME")
    if engine.endswith("sqlite3"):
        text = str(name or "")
        if not text or text == ":memory:" or text.startswith("file:"):
            raise ImproperlyConfigured(
                f"burrow.django: DATABASES[{alias!r}] is an in-memory SQLite database; the worker needs a file"
            )
        return f"sqlite:///{os.path.abspath(text)}"
    if engine.endswith("postgresql") or engine.endswith("postgis"):
        port = settings.get("PORT")
        url = sa.URL.create(
            "postgresql",
            username=settings.get("USER") or None,
            password=settings.get("PASSWORD") or None,
            host=settings.get("HOST") or None,
            port=int(port) if port else None,
            database=str(name) if name else None,
        )
        return url.render_as_string(hide_password=False)
    raise ImproperlyConfigured(
        f"burrow.django: DATABASES[{alias!r}] uses {engine!r}; burrow keeps jobs in SQLite or PostgreSQL"
    )


_backends: dict[tuple[int, str, str | None], Backend] = {}
_lock = threading.Lock()


def backend_of(location: Location) -> Backend:
    """burrow's backend for ``location``, one per process (a fork makes new ones)."""
    key = (os.getpid(), location.dsn, location.schema)
    with _lock:
        backend = _backends.get(key)
        if backend is None:
            backend = _backends[key] = backend_for(location.dsn, schema=location.schema)
        return backend
