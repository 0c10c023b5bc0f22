"""Payload types and helpers shared by the contract suite's files.

The payload types are module level because handlers' annotations are resolved with
typing.get_type_hints, in the globals of the module that defines the handler: a test
module that defines a handler annotated with one of these types imports it from here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import multiprocessing
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, TypedDict

import psycopg
from psycopg import sql

from burrow.queue import JobQueue
from tests.conftest import POSTGRES_DSN, Database


UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
PDT = dt.timezone(dt.timedelta(hours=-7))


# -- payload types ----------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Point(TypedDict):
    x: int
    y: int


@dataclass
class Item:
    name: str
    qty: int
    price: float = 0.0


@dataclass
class Order:
    id: int
    items: list[Item]
    meta: dict[str, list[int]]
    note: Optional[str]
    when: dt.datetime
    color: Color
    level: Level
    where: Point
    gift: Optional[Item] = None


@dataclass
class Pair:
    a: int
    b: int


@dataclass
class Summary:
    total: int
    product: int
    pair: Pair
    at: dt.datetime


ORDER = Order(
    id=7,
    items=[Item("pen", 2, 1.25), Item("ink", 1, 7.5)],
    meta={"bins": [1, 2, 3], "empty": []},
    note=None,
    when=dt.datetime(2031, 3, 4, 5, 6, 7, 890123, tzinfo=IST),
    color=Color.GREEN,
    level=Level.HIGH,
    where={"x": -3, "y": 4},
    gift=Item("card", 1),
)


# -- helpers ----------------------------------------------------------------------


def rows(database: Database, sql: str) -> list[tuple[Any, ...]]:
    """Read (or change) burrow's tables behind its back, with the database's own driver."""
    if database.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(database.dsn.removeprefix("sqlite:///"))) as conn:
            found = conn.execute(sql).fetchall()
            conn.commit()
            return found
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{database.schema}"')
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def total_jobs(q: JobQueue) -> int:
    return sum(q.backend.counts().values())


def drain_all(q: JobQueue) -> int:
    """Drain until a drain runs nothing (retries with zero backoff come straight back)."""
    ran = 0
    for _ in range(100):
        n = q.drain()
        if n == 0:
            return ran
        ran += n
    raise AssertionError("drain never ran dry")


def typed_handler(payload_type: Any, sink: list[Any]) -> Callable[[Any], None]:
    """A handler annotated with ``payload_type`` that records what it received."""

    def handler(p: Any) -> None:
        sink.append(p)

    handler.__annotations__ = {"p": payload_type, "return": None}
    return handler


def add(p: Pair) -> int:
    return p.a + p.b


def race(target: Callable[..., Any], *args: Any, processes: int = 4) -> list[Any]:
    """``target(go, *args)`` in forked processes, each one's return value.

    Each calls ``go()`` once it is ready (connected, say): that blocks until every
    process has started, then all are released by one event, so they race for real.
    A process that fails exits non-zero and fails the test.
    """
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()

    def go() -> None:
        if not start.wait(30):
            raise TimeoutError("the race never started")

    def run() -> None:
        results.put(target(go, *args))

    procs = [ctx.Process(target=run) for _ in range(processes)]
    for p in procs:
        p.start()
    start.set()
    values = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return values


def insert_queued(schema: str, n: int, task: str) -> None:
    """``n`` queued jobs in ``schema``'s jobs table (``task``: an SQL expression of ``g``,
    1 to n, ``%`` doubled), from a PostgreSQL session that then ends: a session's row
    counts reach the statistics views when it ends, where one that stays open reports
    them a second after its last report, or after 10 s idle."""
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (task, priority, state, payload, attempts, max_retries, run_at, created_at)"
                " SELECT " + task + ", 0, 'queued', '\\x7b7d'::bytea, 0, 3, now(), now() FROM generate_series(1, %s) AS g"
            ).format(sql.Identifier(schema, "burrow_jobs")),
            (n,),
        )
