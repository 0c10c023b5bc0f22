"""The ``burrow`` command: run the supervisor, or look at and fix a queue from a shell.

``burrow supervisor ...`` is ``python -m burrow.supervisor``. Every other command is
a thin view over JobQueue's read and admin API: aligned tables for people, ``--json``
for scripts. None imports the apps or runs handler code, so an operator can inspect
a queue from any host that reaches its database, and none but ``migrate`` and
``enqueue`` changes the schema: a database that does not match this burrow is
refused with a pointer to ``burrow migrate``, and a missing SQLite file stays missing.

Exit status (``Exit``): 0 done; 1 the action does not apply (an unknown id, a job in
the wrong state) or ``status --check`` finds the queue unhealthy; 2 bad usage, config,
values or database. Every error is one line on stderr and never shows a password.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from burrow.backends import backend_for
from burrow.backends.records import (
    DEFAULT_LEASE_S,
    SEARCH_WINDOW,
    AuditEntry,
    HistoryEntry,
    HostInfo,
    ProcessInfo,
    ScheduleInfo,
    SchemaStatus,
    hosts_of,
)
from burrow.config import DSN_ENV, SCHEMA_ENV, load_config
from burrow.job import JobInfo, JobState
from burrow.errors import BackendError, BurrowError, ConfigError, JobNotFound
from burrow.job import FIELDS, EnqueueOptions, Shown
from burrow.logging import configure_logging
from burrow.notation import parse_duration, shown_dsn
from burrow.queue import JobQueue, actor_of
from burrow.version import DISTRIBUTION, __version__


class Exit(IntEnum):
    """What a script can tell apart: done, not applicable (or unhealthy), and a mistake."""

    OK = 0
    REFUSED = 1  # the action does not apply to that job, or status --check: unhealthy
    BAD_INPUT = 2  # usage, config, a value or the database (argparse exits 2 too)


Command = Callable[[argparse.Namespace], int]

# A cell wider than this is cut, so one long task name cannot push the rest off screen.
MAX_CELL = 48
DEFAULT_WIDTH = 120  # when the output is not a terminal and COLUMNS is unset
PRUNED_BY_DEFAULT = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch, and turn every BurrowError into one line and an exit status.

    ``supervisor`` goes to its own parser untouched, so ``burrow supervisor`` keeps
    exactly the options and exit codes of ``python -m burrow.supervisor``; ``admin``
    likewise to the web admin's server (an optional extra: imported only here).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "supervisor":
        from burrow.supervisor.__main__ import main as supervisor_main

        return supervisor_main(args[1:], prog="burrow supervisor")
    if args and args[0] == "admin":
        try:
            from burrow.admin.server import main as admin_main
        except ImportError as exc:
            print(
                f"burrow: the web admin needs its extra ({exc.name} is missing): pip install '{DISTRIBUTION}[admin]'",
                file=sys.stderr,
            )
            return Exit.BAD_INPUT
        return admin_main(args[1:], prog="burrow admin")
    parser = build_parser()
    misplaced = _options_before_command(parser, args)
    if misplaced is not None:
        print(f"burrow: {misplaced}", file=sys.stderr)
        return Exit.BAD_INPUT
    options = parser.parse_args(args)
    configure_logging(level="warning")  # stderr: stdout carries only the output, --json only JSON
    command: Command = options.run
    try:
        return command(options)
    except JobNotFound as exc:
        return _fail(exc, Exit.REFUSED)
    except BurrowError as exc:
        return _fail(exc, Exit.BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    """Every command takes the database options after its own name: ``burrow jobs list --dsn X``."""
    database = argparse.ArgumentParser(add_help=False)
    where = database.add_argument_group("database (one of these is required)")
    where.add_argument("-c", "--config", metavar="PATH", help="jobs.toml: its [database] section")
    where.add_argument("--dsn", help=f"overrides {DSN_ENV}, which overrides the config's dsn")
    where.add_argument("--schema", help="PostgreSQL schema (overrides the config's)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")

    parser = argparse.ArgumentParser(
        prog="burrow",
        description="Run and operate a burrow job queue.",
        epilog="Options go after the command's name: burrow jobs list -c conf/jobs.toml.",
    )
    parser.add_argument("--version", action="version", version=f"burrow {__version__} ({DISTRIBUTION})")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        run: Command,
        summary: str,
        *parents: argparse.ArgumentParser,
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=summary, description=summary, parents=[database, *parents])
        sub.set_defaults(run=run)
        return sub

    command(commands, "migrate", _migrate, "apply pending schema migrations")
    enqueue = command(commands, "enqueue", _enqueue, "store one job and print its id")
    enqueue.add_argument("task")
    enqueue.add_argument("payload", metavar="JSON")
    enqueue.add_argument("--queue", metavar="Q", help="the named queue (default: default)")
    enqueue.add_argument("--priority", type=int, metavar="N", help="higher runs first (default 0)")
    enqueue.add_argument("--max-retries", type=int, metavar="N", help="retries after the first run (default 3)")
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--run-at", metavar="ISO8601", help="not before this time, with a timezone")
    when.add_argument("--delay", metavar="AGE", help='not before this long from now ("30s", "5m", "2h")')
    enqueue.add_argument("--unique-key", metavar="K", help="store nothing while a queued or running job of TASK holds K")

    jobs = commands.add_parser("jobs", help="list, show, retry, cancel or delete jobs")
    actions = jobs.add_subparsers(required=True, metavar="ACTION")
    listing = command(actions, "list", _jobs_list, "jobs, newest first", as_json)
    _filters(listing)
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="at most N jobs (1 to 1000)")
    listing.add_argument("--before", type=int, metavar="ID", help="only jobs older than ID: the next page")
    listing.add_argument(
        "--search", metavar="TEXT", help="only jobs whose payload (JSON text) or last error contains TEXT, any case"
    )
    show = command(actions, "show", _jobs_show, "one job: every field, its payload, result, error and history", as_json)
    show.add_argument("id", type=int)
    retry = command(actions, "retry", _jobs_retry, "queue a failed or cancelled job again, or every one in --state")
    retry.add_argument("id", type=int, nargs="?")
    _filters(retry)
    cancel = command(actions, "cancel", _jobs_cancel, "cancel a queued job, or stop a running one")
    cancel.add_argument("id", type=int)
    delete = command(actions, "delete", _jobs_delete, "delete a job that is not running, and its history")
    delete.add_argument("id", type=int)
    run_now = command(actions, "run-now", _jobs_run_now, "make a queued job due later (scheduled, retrying) due now")
    run_now.add_argument("id", type=int)

    queues = commands.add_parser("queues", help="list, pause or resume queues")
    queue_actions = queues.add_subparsers(required=True, metavar="ACTION")
    command(queue_actions, "list", _queues_list, "every queue: paused or not, queued and running jobs", as_json)
    pause = command(queue_actions, "pause", _queues_pause, "stop every supervisor claiming the queue's jobs")
    pause.add_argument("queue")
    resume = command(queue_actions, "resume", _queues_resume, "let supervisors claim the queue's jobs again")
    resume.add_argument("queue")
    audit = command(commands, "audit", _audit, "operators' actions, newest first: who did what to which jobs", as_json)
    audit.add_argument("--limit", type=int, default=50, metavar="N", help="at most N rows (1 to 1000)")

    status = command(commands, "status", _status, "counts by state and task, and the processes", as_json)
    status.add_argument("--check", action="store_true", help="exit 1 unless a supervisor's heartbeat is fresh")
    prune = command(commands, "prune", _prune, "delete jobs that finished long ago", as_json)
    prune.add_argument("--older-than", default="7d", metavar="AGE", help='finished more than AGE ago ("7d", "24h")')
    prune.add_argument("--state", action="append", metavar="S", help="repeat or comma-separate; default: all finished")
    commands.add_parser("supervisor", help="run workers: burrow supervisor -c conf/jobs.toml [--check]", add_help=False)
    commands.add_parser(
        "admin", help=f"serve the web admin: burrow admin -c conf/jobs.toml (needs {DISTRIBUTION}[admin])", add_help=False
    )
    return parser


def _options_before_command(parser: argparse.ArgumentParser, args: Sequence[str]) -> str | None:
    """What is wrong when options come before the command's name (``burrow -c x jobs
    list``), with the line as it should be; None when they do not. argparse alone
    would say "invalid choice" about the option's value."""
    if not args or not args[0].startswith("-") or args[0] in ("-h", "--help", "--version"):
        return None
    names = _command_names(parser)
    # The command is the first name that is not an option's value (``-c jobs jobs list``).
    at = next(
        (
            i
            for i, arg in enumerate(args)
            if arg in names and not (i and _takes_value(args[i - 1]))
        ),
        None,
    )
    if at is None:
        return (
            f"options go after the command's name: burrow COMMAND {' '.join(args)}"
            f" (commands: {', '.join(sorted(names))}; burrow --help)"
        )
    words = [*args[at:], *args[:at]]
    return f"options go after the command's name: burrow {' '.join(words)}"


def _takes_value(arg: str) -> bool:
    """Whether ``arg`` is an option whose value is the next word (every option of the
    commands but the flags --json and --check)."""
    return arg.startswith("-") and "=" not in arg and arg not in ("--json", "--check")


def _command_names(parser: argparse.ArgumentParser) -> set[str]:
    return {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


def _filters(parser: argparse.ArgumentParser) -> None:
    """--state and --task as lists: a shell loop over states is what people would write otherwise."""
    parser.add_argument("--state", action="append", metavar="S", help="repeat or comma-separate")
    parser.add_argument("--task", action="append", metavar="T", help="repeat or comma-separate")


# -- the database -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The database a command works on, and how stale a process row may get."""

    dsn: str
    schema: str | None
    lease_s: float  # a process silent this long is stale: the config's lease_timeout
    config: str | None = None  # the -c file the database came from, if it did
    pooled: bool = False  # [database] pooled of the -c file
    listen_dsn: str | None = None

    def describe(self) -> str:
        """For messages: the password hidden, a SQLite file's path absolute, the schema
        named (two queues may share a server)."""
        return shown_dsn(self.dsn) + (f" (schema {self.schema})" if self.schema else "")

    def migrate_command(self) -> str:
        """``burrow migrate`` naming this very database, for a hint to paste."""
        if self.config is not None:
            return f"burrow migrate -c {self.config}"
        return f"burrow migrate --dsn {shown_dsn(self.dsn)}" + (f" --schema {self.schema}" if self.schema else "")


def _target(options: argparse.Namespace) -> Target:
    """--dsn, then BURROW_DATABASE_DSN, then -c's file: the supervisor's order.

    Without any of them there is no default: an admin command run from the wrong
    directory must not report on, or create, an empty ``burrow.db`` there.
    """
    if options.config is not None:
        config = load_config(options.config, dsn_override=options.dsn, dsn_option="--dsn")
        database = config.database
        named_by_file = options.dsn is None and not os.environ.get(DSN_ENV) and not options.schema
        return Target(
            database.dsn,
            options.schema or database.schema,
            config.supervisor.lease_timeout_s,
            os.path.abspath(options.config) if named_by_file else None,
            database.pooled,
            database.listen_dsn,
        )
    dsn = options.dsn or os.environ.get(DSN_ENV) or None
    if dsn is None:
        raise ConfigError(f"no database named: pass --dsn DSN (and --schema S), set {DSN_ENV}, or -c conf/jobs.toml")
    return Target(dsn, options.schema or os.environ.get(SCHEMA_ENV) or None, DEFAULT_LEASE_S)


@contextlib.contextmanager
def _open(options: argparse.Namespace, target: Target | None = None) -> Iterator[JobQueue]:
    """The queue the options name, as it is: nothing checked, nothing migrated.

    Every database error on the way out names the database, its password hidden.
    """
    target = target or _target(options)
    try:
        backend = backend_for(target.dsn, schema=target.schema, pooled=target.pooled, listen_dsn=target.listen_dsn)
    except BackendError as exc:
        raise ConfigError(f"database {target.describe()}: {exc}") from exc
    queue = JobQueue(backend, lease_s=target.lease_s)
    try:
        yield queue
    except BackendError as exc:
        raise BackendError(f"database {target.describe()}: {exc}") from exc
    finally:
        queue.close()


@contextlib.contextmanager
def _queue(options: argparse.Namespace) -> Iterator[JobQueue]:
    """The queue for a command that must not change the schema: refused unless current."""
    target = _target(options)
    with _open(options, target) as queue:
        problem = _schema_problem(queue.backend.schema_status(), target.migrate_command())
        if problem:
            raise BackendError(problem)
        yield queue


def _schema_problem(status: SchemaStatus, migrate: str = "burrow migrate") -> str | None:
    """Why this burrow should not read the database as it is; None if it may.

    ``migrate`` is the command that fixes it, naming the same database: a bare
    ``burrow migrate`` run elsewhere would create another one.
    """
    if not status.database_exists:
        return f"does not exist: run `{migrate}` to create it"
    if status.version == 0:
        return f"has no burrow tables: run `{migrate}`"
    if status.version < status.latest:
        return f"is at schema version {status.version}, this burrow needs {status.latest}: run `{migrate}`"
    return _too_new(status)


def _too_new(status: SchemaStatus) -> str | None:
    """A newer burrow's schema may hold what this one cannot read, or would write wrong."""
    if status.version > status.latest:
        return f"is at schema version {status.version}, newer than this burrow's {status.latest}: upgrade burrow"
    return None


# -- commands -----------------------------------------------------------------


def _migrate(options: argparse.Namespace) -> int:
    """Apply pending migrations; the only command besides enqueue that changes the schema."""
    with _open(options) as queue:
        before = queue.backend.schema_status()
        problem = _too_new(before)
        if problem:
            raise BackendError(problem)
        queue.migrate()
        after = queue.backend.schema_status()
    if after.version == before.version:
        print(f"already at version {after.version}")
    else:
        print(f"migrated to version {after.version} (from version {before.version})")
    return Exit.OK


def _enqueue(options: argparse.Namespace) -> int:
    """Store one job and print only its id, for ``id=$(burrow enqueue ...)``.

    A producer, like ``burrow.connect``: it migrates, so it can be the first to use
    a database. Values are checked before the database is opened.
    """
    payload = _json_argument(options.payload)
    given: dict[str, Any] = {
        "priority": options.priority,
        "max_retries": options.max_retries,
        "run_at": None if options.run_at is None else _run_at(options.run_at),
        "delay": None if options.delay is None else _delay(options.delay),
        "queue": options.queue,
    }
    if options.unique_key is not None:
        given["unique_key"] = options.unique_key
    checked = EnqueueOptions.of({name: value for name, value in given.items() if value is not None})
    with _open(options) as queue:
        queue.migrate()
        [job_id] = queue.enqueue_options(options.task, [payload], checked)
    print(job_id)
    return Exit.OK


def _jobs_list(options: argparse.Namespace) -> int:
    """A page of jobs; the footer names the --before that shows the next one."""
    window_end = None
    with _queue(options) as queue:
        if options.search is not None:
            result = queue.search(options.search, _listed(options.state), _listed(options.task), options.before, options.limit)
            found, window_end = result.jobs, result.window_end
        else:
            found = queue.jobs(_listed(options.state), _listed(options.task), options.before, options.limit)
    if options.json:
        _print_json([_job_json(job) for job in found])
        return Exit.OK
    if not found:
        print("no jobs")
    else:
        headers = ("id", "task", "state", "priority", "attempts", "run at", "finished at", "error")
        _print_lines(_table(headers, [_job_row(job) for job in found]))
    if len(found) == options.limit:
        print(f"(older jobs: --before {found[-1].id})")
    elif window_end is not None:
        print(f"(searched the newest {SEARCH_WINDOW:,} jobs; older ones: --before {window_end})")
    return Exit.OK


def _jobs_show(options: argparse.Namespace) -> int:
    """Everything burrow knows of one job: what an operator needs to decide on a retry."""
    with _queue(options) as queue:
        job = queue.job(options.id)
        history = queue.history(options.id)
    if options.json:
        _print_json({**_job_json(job, with_bytes=True), "history": [_history_json(entry) for entry in history]})
    else:
        _print_lines(_job_page(job, history))
    return Exit.OK


def _jobs_retry(options: argparse.Namespace) -> int:
    """One job by id, or every job in --state (failed or cancelled, of --task if given)."""
    states, tasks = _listed(options.state), _listed(options.task)
    if (options.id is None) == (not states):
        raise BurrowError("jobs retry takes a job ID or --state (failed or cancelled), not both or neither")
    if options.id is not None and tasks:
        raise BurrowError("jobs retry ID takes no --task: --task narrows a --state retry")
    with _queue(options) as queue:
        if options.id is None:
            retried = sum(queue.retry_all(state, tasks, actor=_actor()) for state in states)
            print(f"retried {_count(retried)}")
            return Exit.OK
        if queue.retry(options.id, actor=_actor()):
            print(f"retried job {options.id}")
            return Exit.OK
        return _refuse(queue, options.id, "only a failed or cancelled job can be retried")


def _jobs_cancel(options: argparse.Namespace) -> int:
    """Exit 1 when there is nothing to cancel, so a script knows the job will still run or already ran."""
    with _queue(options) as queue:
        was_running = queue.job(options.id).state is JobState.RUNNING
        if queue.cancel(options.id, actor=_actor()):
            print(f"cancelled job {options.id}" + (" (running: its supervisor stops it)" if was_running else ""))
            return Exit.OK
        return _refuse(queue, options.id, "a finished job cannot be cancelled")


def _jobs_delete(options: argparse.Namespace) -> int:
    """Never a running job: its worker would report an outcome for a row that is gone."""
    with _queue(options) as queue:
        if queue.delete(options.id, actor=_actor()):
            print(f"deleted job {options.id}")
            return Exit.OK
        return _refuse(queue, options.id, "a running job cannot be deleted: wait for it to finish")


def _jobs_run_now(options: argparse.Namespace) -> int:
    """Exit 1 for a job that is not queued for later: it is due, running or finished."""
    with _queue(options) as queue:
        if queue.run_now(options.id, actor=_actor()):
            print(f"job {options.id} is due now")
            return Exit.OK
        return _refuse(queue, options.id, "only a queued job due later (scheduled, retrying, snoozed) can be run now")


def _actor() -> str:
    """Who the CLI's actions are recorded as: $USER@host."""
    user = os.environ.get("USER")
    return f"{user}@{socket.gethostname()}" if user else actor_of(None)


def _queues_list(options: argparse.Namespace) -> int:
    with _queue(options) as queue:
        found = queue.queues()
    if options.json:
        _print_json(
            [
                {
                    "name": q.name, "paused": q.paused, "queued": q.queued, "running": q.running,
                    "updated_at": _iso(q.updated_at), "updated_by": q.updated_by,
                }
                for q in found
            ]
        )
        return Exit.OK
    if not found:
        print("no queues (none has queued or running jobs, none is paused)")
        return Exit.OK
    rows = [[q.name, "paused" if q.paused else "active", q.queued, q.running, q.updated_by or ""] for q in found]
    _print_lines(_table(("queue", "state", "queued", "running", "paused/resumed by"), rows))
    return Exit.OK


def _queues_pause(options: argparse.Namespace) -> int:
    with _queue(options) as queue:
        changed = queue.pause_queue(options.queue, actor=_actor())
    print(f"paused queue {options.queue}" + ("" if changed else " (it was paused already)"))
    return Exit.OK


def _queues_resume(options: argparse.Namespace) -> int:
    with _queue(options) as queue:
        changed = queue.resume_queue(options.queue, actor=_actor())
    print(f"resumed queue {options.queue}" + ("" if changed else " (it was not paused)"))
    return Exit.OK


def _audit(options: argparse.Namespace) -> int:
    with _queue(options) as queue:
        entries = queue.audit(options.limit)
    if options.json:
        _print_json(
            [
                {
                    "id": e.id, "at": _iso(e.at), "actor": e.actor, "action": e.action, "job_id": e.job_id,
                    "queue": e.queue, "filter": e.filter, "count": e.count,
                }
                for e in entries
            ]
        )
        return Exit.OK
    if not entries:
        print("no operator actions recorded")
        return Exit.OK
    rows = [[e.id, _when(e.at), e.actor, e.action, _audit_target(e), e.count] for e in entries]
    _print_lines(_table(("id", "at", "actor", "action", "on", "jobs"), rows))
    return Exit.OK


def _audit_target(entry: AuditEntry) -> str:
    if entry.job_id is not None:
        return f"job {entry.job_id}"
    if entry.queue is not None:
        return f"queue {entry.queue}"
    return entry.filter or "-"


def _status(options: argparse.Namespace) -> int:
    """The queue at a glance; with --check, a probe: exit 1 unless a supervisor is alive.

    Under --check a database that cannot be reached or is not migrated is unhealthy
    (1), not bad input: no supervisor can be working on it.
    """
    try:
        with _queue(options) as queue:
            counts, tasks, processes = queue.counts(), queue.counts_by_task(), queue.processes()
            schedules, queues = queue.periodic_jobs(), queue.counts_by_queue()
            paused = queue.paused_queues()
            for name in paused:
                queues.setdefault(name, {JobState.QUEUED: 0, JobState.RUNNING: 0})
            unhandled = queue.unhandled()
            now = queue.backend.now()
    except BackendError as exc:
        if options.check:
            return _fail(exc, Exit.REFUSED)
        raise
    if options.json:
        _print_json(
            {
                "counts": {str(state): n for state, n in counts.items()},
                "tasks": {task: {str(state): n for state, n in by_state.items()} for task, by_state in tasks.items()},
                "hosts": [_host_json(host, now) for host in hosts_of(processes)],
                "processes": [_process_json(process) for process in processes],
                "schedules": [_schedule_json(schedule) for schedule in schedules],
                "queues": {name: {str(state): n for state, n in by_state.items()} for name, by_state in queues.items()},
                "unhandled": unhandled,
                "paused_queues": paused,
            }
        )
    else:
        _print_lines(_status_page(counts, tasks, queues, processes, schedules, unhandled, now, queue.lease_s, paused))
    if options.check and not any(p.role == "supervisor" and not p.stale for p in processes):
        print(f"burrow: unhealthy: no supervisor has sent a heartbeat in the last {queue.lease_s:g}s", file=sys.stderr)
        return Exit.REFUSED
    return Exit.OK


def _prune(options: argparse.Namespace) -> int:
    """Finished jobs past their use; the age is checked before the database is opened."""
    try:
        older_than = dt.timedelta(seconds=parse_duration(options.older_than))
    except ValueError:
        raise BurrowError(f"--older-than {options.older_than!r} is not an age such as 7d, 24h or 30m") from None
    states = _listed(options.state) or [str(state) for state in PRUNED_BY_DEFAULT]
    with _queue(options) as queue:
        deleted = queue.prune(older_than, states, actor=_actor())
    if options.json:
        _print_json({"deleted": deleted})
    else:
        print(f"deleted {_count(deleted)} ({', '.join(states)}) that finished more than {options.older_than} ago")
    return Exit.OK


# -- values in --------------------------------------------------------------------


def _listed(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated values as one list: --state failed,cancelled --state queued."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def _json_argument(text: str) -> Any:
    """The payload as a JSON value, so that what is stored is burrow's own encoding of it."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise BurrowError(f"payload {_clip(text, 60)!r} is not JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity; Python's json module would take them."""
    raise ValueError(f"{name} is not JSON")


def _delay(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BurrowError(f"--delay {text!r}: {exc}") from None


def _run_at(text: str) -> dt.datetime:
    """A naive time is refused, as the API refuses it: whose 9 o'clock would it be?"""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BurrowError(f"--run-at {text!r} is not an ISO 8601 time (e.g. 2030-01-01T09:00:00Z)") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise BurrowError(f"--run-at {text!r} has no timezone: add Z or an offset such as +02:00")
    return when


# -- values out: JSON -------------------------------------------------------------


def _print_json(value: object) -> None:
    """ASCII only: the output parses whatever the terminal's or pipe's encoding."""
    print(json.dumps(value, indent=2))


def _iso(when: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC, whatever zone the driver handed back."""
    return None if when is None else when.astimezone(dt.timezone.utc).isoformat()


def _job_json(job: JobInfo, *, with_bytes: bool = False) -> dict[str, Any]:
    """Every JobInfo field (burrow.job.FIELDS), times in ISO 8601 UTC; the payload and
    result (each with its ``_encoding``) only ``with_bytes``: a listing leaves them out."""
    out: dict[str, Any] = {}
    for field in FIELDS:
        value = field.value(job)
        if field.shown is Shown.BYTES:
            if with_bytes:
                out.update(_bytes_json(field.name, value))
        elif field.shown is Shown.TIME:
            out[field.name] = _iso(value)
        elif field.shown is Shown.STATE:
            out[field.name] = str(value)
        elif field.shown is Shown.JOBS:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def _decoded(data: bytes) -> tuple[Any, str]:
    """Stored bytes as (the decoded JSON value, "json"), or, for bytes that are not
    UTF-8 JSON (a raw-bytes task's payload), as (their base64, "base64")."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant), "json"
    except ValueError:  # UnicodeDecodeError is one too
        return base64.b64encode(data).decode("ascii"), "base64"


def _bytes_json(name: str, data: bytes | None) -> dict[str, Any]:
    """``name`` and ``name_encoding`` ("json", "base64", or null when there are no bytes)."""
    value, encoding = _decoded(data) if data is not None else (None, None)
    return {name: value, f"{name}_encoding": encoding}


def _history_json(entry: HistoryEntry) -> dict[str, Any]:
    """Where and how long each attempt ran: what tells a crash loop on one host apart."""
    return {
        "attempt": entry.attempt,
        "event": str(entry.event),
        "error": entry.error,
        "at": _iso(entry.at),
        "host": entry.host,
        "pid": entry.pid,
        "duration_s": entry.duration_s,
    }


def _schedule_json(schedule: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "task": schedule.task,
        "rule": schedule.spec,
        "last_slot": _iso(schedule.last_slot),
        "next_slot": _iso(schedule.next_slot),
    }


def _host_json(host: HostInfo, now: dt.datetime) -> dict[str, Any]:
    """A host's supervisors and workers; stale when every process of it is."""
    return {
        "host": host.host,
        "supervisors": host.supervisors,
        "workers": host.workers,
        "heartbeat_at": _iso(host.heartbeat_at),
        "heartbeat_age_s": round((now - host.heartbeat_at).total_seconds(), 3),
        "stale": host.stale,
    }


def _process_json(process: ProcessInfo) -> dict[str, Any]:
    """Every ProcessInfo field; ``stale`` by the lease timeout, as the reaper judges it."""
    return {
        "owner": process.owner,
        "host": process.host,
        "pid": process.pid,
        "role": process.role,
        "started_at": _iso(process.started_at),
        "heartbeat_at": _iso(process.heartbeat_at),
        "stale": process.stale,
    }


# -- values out: for people ---------------------------------------------------------


def _print_lines(lines: Sequence[str]) -> None:
    """One write for a whole table or page."""
    print("\n".join(lines))


def _width() -> int:
    """The terminal's width ($COLUMNS first); a fixed one when the output is piped."""
    return max(40, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def _clip(text: str, width: int) -> str:
    """Cut with a visible "...", so a cut value is never taken for the whole one."""
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def _cell(value: object) -> str:
    """"-" for unset: an empty cell would shift the columns ``split()`` sees."""
    return "-" if value is None else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> list[str]:
    """Aligned columns, each line cut to the terminal's width: the last column (an
    error, usually) is what gets cut; other cells are cut at MAX_CELL first."""
    cells = [list(headers)] + [[_clip(_cell(c), MAX_CELL) for c in row[:-1]] + [_cell(row[-1])] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers) - 1)]
    width = _width()
    return [
        _clip((indent + "  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]])).rstrip(), width)
        for row in cells
    ]


def _when(when: dt.datetime | None) -> str | None:
    """To the second, in UTC, marked Z: tables are read across hosts in different zones."""
    return None if when is None else when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _first_line(text: str | None) -> str | None:
    """An error's first line is its message; the traceback follows on the next ones."""
    return None if text is None else (text.splitlines() or [""])[0]


def _job_row(job: JobInfo) -> list[object]:
    """Attempts as runs started / most runs (max_retries + 1): "4/4" reads as spent."""
    attempts = f"{job.attempts}/{job.max_retries + 1}"
    error = _first_line(job.last_error)
    return [job.id, job.task, job.state, job.priority, attempts, _when(job.run_at), _when(job.finished_at), error]


def _shown(data: bytes | None) -> str | None:
    """Pretty JSON, or the bytes escaped (Python's b'...' form) when they are not UTF-8 JSON."""
    if data is None:
        return None
    value, encoding = _decoded(data)
    if encoding == "json":
        return json.dumps(value, indent=2, ensure_ascii=False)
    return f"(not UTF-8 JSON; {len(data)} bytes, escaped)\n{data!r}"


def _section(title: str, text: str | None) -> list[str]:
    """A titled, indented block, so a traceback cannot be mistaken for the page's own lines."""
    if text is None:
        return ["", f"{title}: none"]
    return ["", f"{title}:", *(f"  {line}" for line in text.splitlines())]


def _job_page(job: JobInfo, history: Sequence[HistoryEntry]) -> list[str]:
    """Every field of the row (burrow.job.FIELDS), the payload, result and error in full,
    then the attempts."""
    lines = [f"job {job.id}: {job.task}"]
    sections: list[str] = []
    for field in FIELDS:
        value = field.value(job)
        if field.shown is Shown.BYTES:
            sections += _section(field.label, _shown(value))
        elif field.shown is Shown.ERROR:
            sections += _section(field.label, value)
        elif field.name not in ("id", "task"):  # the page's first line names them
            lines.append(f"  {field.label:<14} {_cell(_field_text(job, field.shown, value))}")
    lines += sections
    if not history:
        return [*lines, "", "history: none"]
    rows = [
        [e.attempt, e.event, _when(e.at), e.host, e.pid, _seconds(e.duration_s), _first_line(e.error)] for e in history
    ]
    headers = ("attempt", "event", "at", "host", "pid", "duration", "error")
    return [*lines, "", "history:", *_table(headers, rows, indent="  ")]


def _field_text(job: JobInfo, shown: Shown, value: Any) -> object:
    if shown is Shown.TIME:
        return _when(value)
    if shown is Shown.ATTEMPTS:
        return f"{value} of at most {job.max_retries + 1} (max_retries {job.max_retries})"
    if shown is Shown.JOBS:
        return ", ".join(map(str, value)) or None
    if shown is Shown.PROGRESS:
        return None if value is None else f"{value * 100:.0f}%"
    return value


def _seconds(seconds: float | None) -> str | None:
    """Most jobs run in milliseconds: "0.000s" would hide them."""
    if seconds is None:
        return None
    return f"{seconds:.3f}s" if seconds >= 1 else f"{seconds * 1000:.1f}ms"


def _count(n: int) -> str:
    """"1 job", "3 jobs"."""
    return f"{n} job" if n == 1 else f"{n} jobs"


def _age(seconds: float) -> str:
    """How long ago, in the unit a person compares with the lease timeout."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.1f}s ago"


def _status_page(
    counts: dict[JobState, int],
    tasks: dict[str, dict[JobState, int]],
    queues: dict[str, dict[JobState, int]],
    processes: Sequence[ProcessInfo],
    schedules: Sequence[ScheduleInfo],
    unhandled: dict[str, int],
    now: dt.datetime,
    stale_after_s: float,
    paused: Sequence[str] = (),
) -> list[str]:
    """Where the jobs are, which task they pile up in, who is alive to run them, and
    when each periodic job is due next; first, the jobs nobody would run."""
    states = list(JobState)
    lines = []
    if unhandled:
        rows = [[task, n] for task, n in unhandled.items()]
        lines += ["due jobs that no live supervisor handles (they wait until one does):"]
        lines += [*_table(("task", "due jobs"), rows, indent="  "), ""]
    lines += ["jobs by state:", *_table(states, [[counts[s] for s in states]], indent="  ")]
    if tasks:
        rows = [[task, *(by_state[s] for s in states)] for task, by_state in tasks.items()]
        lines += ["", "jobs by task:", *_table(["task", *states], rows, indent="  ")]
    if queues:
        rows = [
            [name, by_state[JobState.QUEUED], by_state[JobState.RUNNING], "paused" if name in paused else ""]
            for name, by_state in sorted(queues.items())
        ]
        lines += ["", "queues (each pool's depth):", *_table(("queue", "queued", "running", ""), rows, indent="  ")]
    if schedules:
        rows = [[s.name, s.task, s.spec, _when(s.last_slot) or "-", _when(s.next_slot) or "-"] for s in schedules]
        lines += ["", "periodic jobs:", *_table(("name", "task", "rule", "last slot", "next slot"), rows, indent="  ")]
    lines += ["", f"processes (stale after {stale_after_s:g}s without a heartbeat):"]
    if not processes:
        return [*lines, "  none registered"]
    hosts = [
        [h.host, h.supervisors, h.workers, _age((now - h.heartbeat_at).total_seconds()), "stale" if h.stale else "ok"]
        for h in hosts_of(processes)
    ]
    lines += [*_table(("host", "supervisors", "workers", "heartbeat", "state"), hosts, indent="  "), ""]
    rows = [
        [p.owner, p.host, p.pid, p.role, _age((now - p.heartbeat_at).total_seconds()), "stale" if p.stale else "ok"]
        for p in processes
    ]
    return lines + _table(("owner", "host", "pid", "role", "heartbeat", "state"), rows, indent="  ")


# -- errors -------------------------------------------------------------------------


def _fail(exc: BurrowError, code: Exit) -> int:
    """One line on stderr: log collectors split on newlines, people read the first."""
    print("burrow: " + " ".join(str(exc).splitlines()), file=sys.stderr)
    return code


def _refuse(queue: JobQueue, job_id: int, why: str) -> int:
    """The action does not apply to the job in its current state: say which state."""
    print(f"burrow: job {job_id} ({queue.job(job_id).state}): {why}", file=sys.stderr)
    return Exit.REFUSED


if __name__ == "__main__":
    sys.exit(main())
