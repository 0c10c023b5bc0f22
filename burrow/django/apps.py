"""The app: ``manage.py migrate`` builds burrow's tables (burrow's own migrations, not
Django's: the same frozen steps as ``burrow migrate``) in each database a burrow task
backend keeps its jobs in."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

BACKEND_PATH = "burrow.django.BurrowBackend"


class BurrowConfig(AppConfig):
    name = "burrow.django"
    label = "burrow"
    verbose_name = "burrow jobs"

    def ready(self) -> None:
        post_migrate.connect(migrate_jobs, sender=self, dispatch_uid="burrow.django.migrate_jobs")


def burrow_backends() -> dict[str, Any]:
    """The TASKS aliases that use BurrowBackend, each with its backend."""
    from burrow.django.compat import task_backends

    return {
        alias: task_backends[alias]
        for alias, params in task_backends.settings.items()
        if params.get("BACKEND") in (BACKEND_PATH, "burrow.django.backend.BurrowBackend")
    }


def migrate_jobs(sender: AppConfig, using: str, verbosity: int = 1, **kwargs: Any) -> None:
    """After ``migrate --database <using>``: burrow's migrations in that database, for
    every burrow backend whose DATABASE it is (a DSN-backed one: on every migrate)."""
    for alias, backend in burrow_backends().items():
        location = backend.location
        if location.alias not in (using, None):
            continue
        backend.jobs.migrate()
        if verbosity >= 1:
            where = f"database {location.alias!r}" if location.alias else "its DSN"
            print(f"  burrow: jobs tables of TASKS[{alias!r}] migrated in {where}")
