"""What ``manage.py burrow_worker`` does: the supervisor's config from Django's
settings (and an optional jobs.toml), the tasks found, the queues served, then
burrow's Supervisor, as ``python -m burrow.supervisor`` runs it."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, replace
from typing import IO, Any

import orjson
from django.core.management.base import CommandError
from django.utils.module_loading import autodiscover_modules

from burrow.backends import backend_for
from burrow.backends.deadline import Timeouts
from burrow.backends.records import QueueFilter
from burrow.config import MAX_WORKERS, Config, DatabaseConfig, load_config
from burrow.errors import BackendError, BurrowError
from burrow.job import EnqueueOptions
from burrow.logging import configure_logging
from burrow.notation import shown_dsn
from burrow.options import check_queue_name
from burrow.schedule import Periodic
from burrow.supervisor.context import retry_defaults
from burrow.supervisor.supervisor import ExitCode, Supervisor



@dataclass(frozen=True, slots=True)
class WorkerOptions:
    backend: str
    workers: int | None = None
    queues: tuple[str, ...] = ()
    config: str | None = None
    check: bool = False


def run_worker(options: WorkerOptions, out: IO[str] | Any = sys.stdout) -> int:
    """Run the supervisor until it stops; its exit status (2: bad input, one line on stderr)."""
    from burrow.django.apps import burrow_backends
    from burrow.django.backend import seen_tasks
    from burrow.django import worker
    from burrow.django.worker import DjangoJobQueue

    backends = burrow_backends()
    backend = backends.get(options.backend)
    if backend is None:
        raise CommandError(
            f"TASKS[{options.backend!r}] is not a burrow.django.BurrowBackend (burrow backends: {', '.join(sorted(backends)) or 'none'})"
        )
    try:
        config = _config(backend.location, options)
        queues = _queues(backend, options.queues)
    except BurrowError as exc:
        raise CommandError(str(exc)) from None
    if config.supervisor.pools:
        # The file's pools divide the queues among themselves (the default pool takes
        # every queue they do not name): --queue would divide them a second way.
        if options.queues:
            raise CommandError("--queue and [[supervisor.pools]] in the config: use one or the other")
        queues = ()
    configure_logging(config.logging.format, config.logging.level)
    autodiscover_modules("tasks")  # each app's tasks module: its tasks are made, and seen
    tasks = seen_tasks()
    timeouts = Timeouts.for_supervisor(config.supervisor.heartbeat_interval_s)
    try:
        jobs = backend_for(
            config.database.dsn, schema=config.database.schema, timeouts=timeouts, pooled=config.database.pooled,
            listen_dsn=config.database.listen_dsn,
        )
        if not options.check:
            jobs.migrate()
    except BackendError as exc:
        raise CommandError(f"jobs database {shown_dsn(config.database.dsn)}: {exc}") from None
    worker.SERVED_ALIAS = options.backend
    queue = DjangoJobQueue(jobs, lease_s=config.supervisor.lease_timeout_s, retry_defaults=retry_defaults(config))
    queue.register(tasks)
    try:
        for schedule in config.schedules:
            _schedule(queue, options.backend, backend, schedule)
    except BurrowError as exc:
        queue.close()
        raise CommandError(f"{config.path}: {exc}") from None
    if options.check:
        out.write(_plan(options.backend, config, queues, sorted(tasks)) + "\n")
        queue.close()
        return ExitCode.OK
    from django.db import connections

    connections.close_all()  # no connection of this process may be shared with the forked workers
    try:
        supervisor = Supervisor(config, queue)
        if queues:
            supervisor.ctx.pools.default.queues = QueueFilter(queues, exclude=False)
        return supervisor.run()
    except BurrowError as exc:
        print("burrow: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return ExitCode.CONFIG
    finally:
        queue.close()


def _schedule(queue: Any, alias: str, backend: Any, schedule: Periodic) -> None:
    """A ``[[schedule]]`` of the jobs.toml for a Django task: its ``payload`` table is the
    task's keyword arguments; its jobs take the task's priority, queue and retries."""
    from burrow.django import results
    from burrow.django.worker import TaskNotFound, resolve, run_job

    where = f"[[schedule]] {schedule.name!r}"
    try:
        task = resolve(schedule.task)
    except TaskNotFound as exc:
        raise BurrowError(f"{where}: {exc}") from None
    kwargs = orjson.loads(schedule.payload)
    if not isinstance(kwargs, dict):
        raise BurrowError(f"{where}: payload must be a table (the task's keyword arguments)")
    nonce = hashlib.sha256(schedule.name.encode()).hexdigest()[:16]
    max_retries = getattr(task, "max_retries", None)
    options = EnqueueOptions(
        priority=task.priority,
        max_retries=backend.max_retries if max_retries is None else max_retries,
        queue=task.queue_name,
    )
    payload = results.encode_payload(nonce, alias, [], kwargs)
    if schedule.task not in queue.registrations:
        queue.handle(schedule.task, run_job)
    queue.add_schedule(replace(schedule, payload=payload, options=options))


def _config(location: Any, options: WorkerOptions) -> Config:
    """The supervisor's settings: the file's, if given, with the jobs database always
    the backend's, and ``--workers`` over the file's."""
    if options.config is not None:
        config = load_config(options.config, dsn_override=location.dsn, dsn_option="the TASKS backend", workers_override=options.workers)
    else:
        config = Config()
        if options.workers is not None:
            if not 1 <= options.workers <= MAX_WORKERS:
                raise BurrowError(f"--workers must be 1 to {MAX_WORKERS}, got {options.workers}")
            config = replace(config, supervisor=replace(config.supervisor, workers=options.workers))
    database = DatabaseConfig(dsn=location.dsn, schema=location.schema)
    return replace(config, database=database)


def _queues(backend: Any, asked: tuple[str, ...]) -> tuple[str, ...]:
    """The queues to serve: those asked for (each one the backend allows), else the
    backend's QUEUES; () for every queue."""
    for name in asked:
        check_queue_name(name)
        if backend.queues and name not in backend.queues:
            raise BurrowError(f"--queue {name!r} is not in TASKS[{backend.alias!r}]['QUEUES'] ({', '.join(sorted(backend.queues))})")
    return tuple(asked) or tuple(sorted(backend.queues))


def _plan(alias: str, config: Config, queues: tuple[str, ...], tasks: list[str]) -> str:
    database = shown_dsn(config.database.dsn) + (f" (schema {config.database.schema})" if config.database.schema else "")
    lines = [
        f"backend:  TASKS[{alias!r}]",
        f"database: {database}",
        f"workers:  {config.supervisor.workers}",
        f"queues:   {', '.join(queues) or ('every queue no pool names' if config.supervisor.pools else 'all')}",
        "tasks:    " + (", ".join(tasks) or "none found yet (taken up as their jobs come)"),
    ]
    lines += [f"pool:     {pool.name}, {pool.workers} workers: {', '.join(pool.queues)}" for pool in config.supervisor.pools]
    lines += [f"schedule: {schedule.describe()}" for schedule in config.schedules]
    return "\n".join(lines)
