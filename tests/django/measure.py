"""Figures of the Django backend (not a test): ``python -m tests.django.measure``.

Enqueue through Django's connection (each in its own transaction, then 1,000 in one
``transaction.atomic``), reading a result, and how fast ``manage.py burrow_worker
--workers 2`` drains 2,000 trivial tasks, on the SQLite file and on PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

from tests.django.conftest import ALIASES, Worker, _setup, wait_until

N = 1000
DRAIN = 2000


def main() -> None:
    name, directory = _setup()
    from django.db import transaction

    from burrow.django.compat import task_backends
    from djshop.tasks import add

    try:
        for alias in ALIASES:
            task = add.using(backend=alias)
            started = time.perf_counter()
            for i in range(N):
                task.enqueue(i, 1)
            own = N / (time.perf_counter() - started)
            started = time.perf_counter()
            with transaction.atomic(using=alias):
                for i in range(N):
                    last = task.enqueue(i, 1)
            batched = N / (time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(200):
                task_backends[alias].get_result(last.id)
            read_ms = (time.perf_counter() - started) / 200 * 1000
            print(f"{alias}: enqueue {own:,.0f}/s (own transaction), {batched:,.0f}/s (1,000 in one atomic); get_result {read_ms:.2f} ms")
            jobs: Any = task_backends[alias].jobs
            for state in ("queued",):
                for job in jobs.list_jobs([state], ["djshop.tasks.add"], None, 1000):
                    jobs.cancel(job.id)
            with transaction.atomic(using=alias):
                results = [task.enqueue(i, 1) for i in range(DRAIN)]
            worker = Worker("--backend", alias, "--workers", "2")
            started = time.perf_counter()
            try:
                wait_until(lambda: (results[-1].refresh() or results[-1].is_finished), 300, "the drain")
                for result in results:
                    wait_until(lambda: (result.refresh() or result.is_finished), 300, "the drain")
                drained = DRAIN / (time.perf_counter() - started)
            finally:
                worker.stop()
            print(f"{alias}: burrow_worker --workers 2 drained {DRAIN} tasks at {drained:,.0f}/s (from its start)")
    finally:
        import psycopg

        from tests.django.conftest import POSTGRES_DSN
        from django.db import connections

        connections.close_all()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
