"""Importing the applications named in config (`apps = ["module:attribute"]`).

Apps are imported in the supervisor, before any fork, so a broken import stops
the supervisor with a clear error instead of a crash loop of workers; on SIGHUP
they are imported afresh, which is how new code reaches the next workers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from burrow.errors import BurrowError, ConfigError
from burrow.queue import JobQueue
from burrow.schedule import Periodic
from burrow.tasks import HasJobs


def load_app(ref: str, *, fresh: bool = False) -> HasJobs:
    """The object named by "module:attribute" (attribute may be dotted); ConfigError if not."""
    module_name, _, attribute = ref.partition(":")
    if fresh:
        _forget_package(module_name)
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"app {ref!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"app {ref!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, type):
        target = target()  # a class with register_jobs: use an instance
    if not isinstance(target, HasJobs):
        raise ConfigError(f"app {ref!r}: {type(target).__name__} has no register_jobs(q) method")
    return target


def _forget_package(module_name: str) -> None:
    """Drop the app's top-level package from sys.modules so the next import reads new code."""
    top = module_name.split(".")[0]
    if top == "burrow":
        return
    importlib.invalidate_caches()
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def register_apps(
    queue: JobQueue, refs: Sequence[str], schedules: Sequence[Periodic] = (), *, fresh: bool = False
) -> None:
    """Import every app and let it register its tasks on ``queue``; then the config's
    ``[[schedule]]`` entries, each for a task an app registered."""
    for ref in refs:
        app = load_app(ref, fresh=fresh)
        try:
            app.register_jobs(queue)
        except BurrowError as exc:
            raise ConfigError(f"app {ref!r}: register_jobs failed: {exc}") from exc
    if not queue.registrations:
        raise ConfigError("no task is registered: [supervisor] apps must name at least one app with tasks")
    for schedule in schedules:
        if schedule.task not in queue.registrations:
            raise ConfigError(f"[[schedule]] {schedule.name!r}: no app registers task {schedule.task!r}")
        try:
            schedule.register(queue)
        except BurrowError as exc:
            raise ConfigError(f"[[schedule]] {schedule.name!r}: {exc}") from exc
