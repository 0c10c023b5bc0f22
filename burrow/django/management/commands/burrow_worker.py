"""``manage.py burrow_worker [--workers N] [--queue NAME ...] [-c conf/jobs.toml] [--backend ALIAS]``:
burrow's supervisor (signals, leases, heartbeats, systemd notify, pools) running the
tasks of a TASKS backend, with Django set up in every worker."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from burrow.django.compat import DEFAULT_TASK_BACKEND_ALIAS


class Command(BaseCommand):
    help = "Run burrow's supervisor and workers for the tasks of a TASKS backend (burrow.django.BurrowBackend)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default=DEFAULT_TASK_BACKEND_ALIAS, help="the TASKS alias (default: %(default)s)")
        parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default: the config's, else 2)")
        parser.add_argument(
            "--queue", action="append", dest="queues", metavar="NAME",
            help="run only this queue's tasks (repeat for more; default: every queue in QUEUES, or all)",
        )
        parser.add_argument("-c", "--config", help="a burrow jobs.toml for the supervisor's settings (its [database] is not used)")
        parser.add_argument("--check", action="store_true", help="print the plan (database, queues, tasks found) and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        from burrow.django.runner import WorkerOptions, run_worker

        code = run_worker(
            WorkerOptions(
                backend=options["backend"],
                workers=options["workers"],
                queues=tuple(options["queues"] or ()),
                config=options["config"],
                check=options["check"],
            ),
            out=self.stdout,
        )
        if code:
            sys.exit(code)

