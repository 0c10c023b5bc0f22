"""Importing the applications named in config (`apps = ["module:attribute"]`).

Apps are imported in the supervisor, before any fork, so a broken import stops
the supervisor with a clear error instead of a crash loop of workers; on SIGHUP
they are imported afresh, which is how new code reaches the next workers.

Whatever app code raises while it is imported, built or asked to register its
tasks (a KeyError as much as a BurrowError) becomes a ConfigError naming the
app: at start that is one line and exit status 2, on SIGHUP a failed reload that
leaves the running workers and the old code in place.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from burrow import codec
from burrow.errors import BurrowError, ConfigError, PayloadDecodeError
from burrow.queue import JobQueue
from burrow.schedule import Periodic
from burrow.tasks import HasJobs, payload_type_of

# SystemExit too: an app's import or register_jobs that calls sys.exit() must not end
# a running supervisor's loop (and kill every worker) on SIGHUP.
_APP_ERRORS = (Exception, SystemExit)


def load_app(ref: str, *, fresh: bool = False) -> HasJobs:
    """The object named by "module:attribute" (attribute may be dotted); ConfigError if not."""
    module_name, _, attribute = ref.partition(":")
    if fresh:
        _forget_package(module_name)
    try:
        target: object = importlib.import_module(module_name)
    except _APP_ERRORS as exc:
        raise ConfigError(f"app {ref!r}: cannot import {module_name!r}: {_describe(exc)}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"app {ref!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, type):
        try:
            target = target()  # a class with register_jobs: use an instance
        except _APP_ERRORS as exc:
            raise ConfigError(f"app {ref!r}: {attribute}() failed: {_describe(exc)}") from exc
    if not isinstance(target, HasJobs):
        raise ConfigError(f"app {ref!r}: {type(target).__name__} has no register_jobs(q) method")
    return target


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _top_package(module_name: str) -> str:
    return module_name.split(".")[0]


def _forget_package(module_name: str) -> None:
    """Drop the app's top-level package from sys.modules so the next import reads new code."""
    top = _top_package(module_name)
    if top == "burrow":
        return
    importlib.invalidate_caches()
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def _app_modules(refs: Sequence[str]) -> dict[str, ModuleType]:
    """The loaded modules of the apps' top-level packages (burrow's own excepted)."""
    tops = {_top_package(ref.partition(":")[0]) for ref in refs} - {"burrow"}
    return {n: m for n, m in sys.modules.items() if n.partition(".")[0] in tops}


def _restore_app_modules(refs: Sequence[str], saved: dict[str, ModuleType]) -> None:
    """Put the old code back in sys.modules after a failed fresh import.

    The running workers and the handlers the supervisor forks its next workers
    with are the old code; a module name left pointing at half-imported new code
    would hand it to whatever imports that name later.
    """
    for name in _app_modules(refs):
        del sys.modules[name]
    sys.modules.update(saved)


def register_apps(
    queue: JobQueue, refs: Sequence[str], schedules: Sequence[Periodic] = (), *, fresh: bool = False
) -> None:
    """Import every app and let it register its tasks on ``queue``; then the config's
    ``[[schedule]]`` entries, each for a task an app registered.

    ``fresh`` (SIGHUP) imports the apps' packages anew; if anything fails, sys.modules
    holds the old code again when the ConfigError is raised.
    """
    saved = _app_modules(refs) if fresh else None
    try:
        _register(queue, refs, schedules, fresh=fresh)
    except ConfigError:
        if saved is not None:
            _restore_app_modules(refs, saved)
        raise


def _register(queue: JobQueue, refs: Sequence[str], schedules: Sequence[Periodic], *, fresh: bool) -> None:
    for ref in refs:
        app = load_app(ref, fresh=fresh)
        try:
            app.register_jobs(queue)
        except _APP_ERRORS as exc:
            raise ConfigError(f"app {ref!r}: register_jobs failed: {_describe(exc)}") from exc
    if not queue.registrations:
        raise ConfigError("no task is registered: [supervisor] apps must name at least one app with tasks")
    for schedule in schedules:
        if schedule.task not in queue.registrations:
            raise ConfigError(f"[[schedule]] {schedule.name!r}: no app registers task {schedule.task!r}")
        try:
            schedule.register(queue)
        except BurrowError as exc:
            raise ConfigError(f"[[schedule]] {schedule.name!r}: {exc}") from exc
    for schedule in queue.schedules.values():
        problem = _payload_problem(queue, schedule)
        if problem is not None:
            where = "[[schedule]]" if schedule in schedules else "schedule"
            raise ConfigError(f"{where} {schedule.name!r}: {problem}")


def _payload_problem(queue: JobQueue, schedule: Periodic) -> str | None:
    """Why the schedule's payload would fail every run (it does not decode into its
    task's payload type, by the worker's strict rules); None if it decodes."""
    registration = queue.registrations.get(schedule.task)
    payload_type = None if registration is None else payload_type_of(registration.handler)
    if payload_type is None:
        return None  # a raw handler takes bytes, or the task runs elsewhere
    try:
        codec.decode(schedule.payload, payload_type)
    except PayloadDecodeError as exc:
        fields = "; ".join(exc.fields) or str(exc)
        return f"payload does not decode into task {schedule.task!r}'s payload type, every run would fail: {fields}"
    return None
