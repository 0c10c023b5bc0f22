"""``python -m burrow.supervisor -c conf/jobs.toml``: the main job.

Bad input ends here with one line on stderr and exit status 2; everything after
start-up is the Supervisor's business.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import structlog

from burrow.backends import backend_for
from burrow.backends.records import SchemaStatus
from burrow.backends.deadline import Timeouts
from burrow.config import Config, load_config
from burrow.errors import BackendError, BurrowError, ConfigError
from burrow.job import DEFAULT_QUEUE
from burrow.logging import configure_logging
from burrow.notation import shown_dsn
from burrow.queue import JobQueue
from burrow.supervisor.apps import register_apps
from burrow.supervisor.context import retry_defaults
from burrow.supervisor.metrics import Metrics
from burrow.supervisor.supervisor import ExitCode, Supervisor


def build_parser(prog: str = "python -m burrow.supervisor") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run burrow workers for the apps in a config file.")
    parser.add_argument("-c", "--config", required=True, help="path to jobs.toml")
    parser.add_argument("--jobs-database-dsn", metavar="DSN", help="overrides [database] dsn and BURROW_DATABASE_DSN")
    parser.add_argument("--workers", type=int, metavar="N", help="overrides [supervisor] workers")
    parser.add_argument("--check", action="store_true", help="validate config, apps and database; print the plan; exit")
    return parser


def _queue(config: Config, *, migrate: bool) -> tuple[JobQueue, SchemaStatus]:
    """Connect and import the apps; errors name the file and key, like the config's own.

    Without ``migrate`` (``--check``) nothing in the database changes: the schema is
    only read, and a SQLite file that does not exist yet is not created.
    """
    database = config.database
    try:
        timeouts = Timeouts.for_supervisor(config.supervisor.heartbeat_interval_s)
        backend = backend_for(
            database.dsn, schema=database.schema, timeouts=timeouts, pooled=database.pooled,
            listen_dsn=database.listen_dsn,
        )
        if migrate:
            backend.migrate()
        status = backend.schema_status()
    except BackendError as exc:
        raise ConfigError(f"{config.path}: [database] dsn {shown_dsn(database.dsn)}: {exc}") from exc
    queue = JobQueue(backend, lease_s=config.supervisor.lease_timeout_s, retry_defaults=retry_defaults(config))
    try:
        register_apps(queue, config.supervisor.apps, config.schedules)
    except ConfigError as exc:
        queue.close()
        # A [[schedule]] of the file is named as the file's own; anything else is the apps'.
        where = "" if str(exc).startswith("[[schedule]]") else "[supervisor] apps: "
        raise ConfigError(f"{config.path}: {where}{exc}") from exc
    return queue, status


def _plan(config: Config, queue: JobQueue, status: SchemaStatus) -> str:
    s = config.supervisor
    lines = [
        f"config:   {config.path}",
        f"database: {shown_dsn(config.database.dsn)}" + (f" (schema {config.database.schema})" if config.database.schema else ""),
        *_pooling(config),
        f"schema:   {status.describe()}",
        f"workers:  {s.workers}, batch_size {s.batch_size}, lease {s.lease_timeout_s:g}s, heartbeat {s.heartbeat_interval_s:g}s",
        f"shutdown: {s.shutdown_timeout_s:g}s; retry backoff {config.retry.base_s:g}s..{config.retry.max_s:g}s",
    ]
    if s.pools:
        lines.append("pools:")
        served = ", ".join(q for p in s.pools for q in p.queues)
        lines.append(f"  default  {_workers(s.workers)}, batch_size {s.batch_size}: every queue but {served}")
        for pool in s.pools:
            batch = pool.batch_size or s.batch_size
            lines.append(f"  {pool.name}  {_workers(pool.workers)}, batch_size {batch}: {', '.join(pool.queues)}")
    lines.append("tasks:")
    for name, registration in sorted(queue.registrations.items()):
        c = registration.config
        extras = [f", timeout {c.timeout_s:g}s" if c.timeout_s else ""]
        extras.append(f", queue {c.queue}" if c.queue else "")
        extras.append(f", at most {c.concurrency} running" if c.concurrency else "")
        lines.append(f"  {name}  (priority {c.priority}, max_retries {c.max_retries}{''.join(extras)})")
    lines += [f"warning: {warning}" for warning in _idle_pools(config, queue)]
    if queue.schedules:
        lines.append("schedules:")
        now = queue.backend.now()
        for schedule in queue.schedules.values():
            next_slot = schedule.rule.after(schedule.rule.latest(now))
            lines.append(f"  {schedule.describe()}  (next slot {next_slot.isoformat()})")
    return "\n".join(lines)


def _pooling(config: Config) -> list[str]:
    """Through PgBouncer (``pooled``): where LISTEN goes, or that idle workers poll."""
    database = config.database
    if not database.pooled:
        return []
    if database.listen_dsn is not None:
        return [f"pooled:   yes (PgBouncer, transaction mode); LISTEN on {shown_dsn(database.listen_dsn)}"]
    return [f"pooled:   yes (PgBouncer, transaction mode); no listen_dsn: idle workers poll every"
            f" {config.supervisor.poll_interval_s:g}s"]


def _idle_pools(config: Config, queue: JobQueue) -> list[str]:
    """A named pool none of whose queues a registered task (with_queue, else "default")
    or schedule sends jobs to: its workers would idle unless a producer names a queue."""
    used = {registration.config.queue or DEFAULT_QUEUE for registration in queue.registrations.values()}
    used |= {s.options.queue for s in queue.schedules.values() if s.options.queue is not None}
    return [
        f"pool {pool.name!r}: no registered task uses its queues ({', '.join(pool.queues)});"
        " its workers get only jobs enqueued there with queue="
        for pool in config.supervisor.pools
        if not used.intersection(pool.queues)
    ]


def _workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def main(argv: Sequence[str] | None = None, prog: str = "python -m burrow.supervisor") -> int:
    args = build_parser(prog).parse_args(argv)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # apps are named relative to where the operator runs us

    def load() -> Config:
        return load_config(args.config, dsn_override=args.jobs_database_dsn, workers_override=args.workers)

    try:
        config = load()
        configure_logging(config.logging.format, config.logging.level)
        if config.http.bind is not None:
            Metrics()  # the extra it needs is installed, or a ConfigError saying how
        queue, status = _queue(config, migrate=not args.check)
    except BurrowError as exc:
        return _bad_input(exc)
    if args.check:
        print(_plan(config, queue, status))
        queue.close()
        return ExitCode.OK
    try:
        return Supervisor(config, queue, reload_config=load).run()
    except ConfigError as exc:  # found at start, e.g. an [http] bind that is taken
        return _bad_input(exc)
    except BackendError as exc:
        structlog.get_logger("burrow.supervisor").error("supervisor_failed", error=str(exc))
        return ExitCode.FAILURE
    finally:
        queue.close()


def _bad_input(exc: BurrowError) -> int:
    # One line even when an app's import error spans several: log collectors split on newlines.
    print("burrow: " + " ".join(str(exc).splitlines()), file=sys.stderr)
    return ExitCode.CONFIG


if __name__ == "__main__":
    sys.exit(main())
