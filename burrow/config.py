"""``conf/jobs.toml``: every key, declared once, read into frozen dataclasses.

The supervisor, the ``burrow`` command and the web admin all read this file, so it
lives beside them rather than inside any of them. Each key is one field of a record
below, declared with :func:`burrow.settings.setting`: its name in the file, the
function that reads its value, its default and a one-line doc. The loader, the
unknown-key check with its "did you mean" suggestion and the README's configuration
table (``python -m burrow.config --markdown``) are all made from those fields, so
they cannot disagree, and a new key is one new field. What no single key can say (a
lease longer than two heartbeats, the DSN's precedence over the environment) is
written out per section, after its keys are read.

The supervisor reads the file once at start and again on SIGHUP; a typo must stop it
before it forks anything, with a message an operator can act on without reading a
traceback: the file, the ``[section] key`` and what is wrong, on one line. Unknown
sections and keys are errors, not warnings, because a misspelt ``lease_timout`` that
is silently ignored runs production on a default.

A DSN may carry a password, so every message that could show one goes through
:func:`~burrow.notation.redact_dsn`, and :class:`DatabaseConfig` redacts its own ``repr``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, TypeVar

from burrow.backends.records import DEFAULT_LEASE_S
from burrow.errors import BurrowError, ConfigError
from burrow.notation import bind_text, parse_bind, parse_duration, parse_size, redact_dsn, show, sqlite_absolute
from burrow.options import check_queue_name
from burrow.retry import DEFAULT_BACKOFF_BASE_S, DEFAULT_BACKOFF_MAX_S
from burrow.schedule import Periodic, periodic
from burrow.settings import (
    Setting,
    arrays,
    declare,
    declared,
    markdown_table,
    sections,
    setting,
    setting_names,
    setting_of,
)

__all__ = [
    "DEFAULT_POOL_NAME",
    "DEFAULT_DSN",
    "DSN_ENV",
    "DSN_OPTION",
    "MAX_RESULT_BYTES",
    "SCHEMA_ENV",
    "AdminConfig",
    "Config",
    "DatabaseConfig",
    "HttpConfig",
    "LogFormat",
    "LoggingConfig",
    "PoolConfig",
    "RetentionConfig",
    "RetryConfig",
    "ScheduleConfig",
    "SupervisorConfig",
    "database_of",
    "load_config",
]

T = TypeVar("T")
LogFormat = Literal["console", "json"]

DEFAULT_POOL_NAME: Final = "default"  # the pool of every queue no named pool serves
DSN_ENV: Final = "BURROW_DATABASE_DSN"
DEFAULT_DSN: Final = "sqlite:///burrow.db"  # burrow.connect() with nothing set, and a file without [database] dsn
DSN_OPTION: Final = "--jobs-database-dsn"
SCHEMA_ENV: Final = "BURROW_DATABASE_SCHEMA"
# The largest max_result_size: a result crosses the worker's pipe as base64 (4/3 of its
# size) in one frame of at most 16 MiB (MAX_FRAME_BYTES in supervisor/protocol.py), with
# 64 KiB left for the frame's other fields; tests/unit/test_config.py holds the two together.
MAX_RESULT_BYTES: Final = (16 * 1024 * 1024 - 64 * 1024) // 4 * 3
MAX_WORKERS: Final = 256
MAX_POOL_NAME: Final = 200  # its workers' process role, "worker:<name>", fits the column
MAX_BATCH_SIZE: Final = 10_000
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("console", "json")


# -- readers of one key's value: each raises ValueError with the problem, the caller adds where --

_URL_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SCHEMA_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _dsn(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {show(value)}")
    if not _URL_RE.match(value):
        raise ValueError(
            f"not a database URL: {show(redact_dsn(value))}"
            " (use e.g. 'sqlite:///burrow.db' or 'postgresql://user@host/db')"
        )
    return value


def _postgres_dsn(value: Any) -> str:
    dsn = _dsn(value)
    if dsn.split(":", 1)[0].split("+", 1)[0].lower() not in ("postgresql", "postgres"):
        raise ValueError(f"must be a PostgreSQL URL (postgresql://user@host/db), got {show(redact_dsn(dsn))}")
    return dsn


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {show(value)}")
    return value


def _schema(value: Any) -> str:
    if not isinstance(value, str) or not _SCHEMA_RE.fullmatch(value):
        raise ValueError(f"must be a plain SQL identifier (letters, digits, _), got {show(value)}")
    return value


def _nonempty_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {show(value)}")
    return value


def _int_between(low: int, high: int | None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {show(value)}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bounds}, got {value}")
        return value

    return convert


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than 0, got {show(value)}")
    return seconds


def _duration_or_off(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() == "off":
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f'must be more than 0 (or "off" to keep forever), got {show(value)}')
    return seconds


def _positive_size(value: Any) -> int:
    if isinstance(value, float):
        raise ValueError(f"bad size {show(value)}: a bare number is bytes and must be an integer")
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"must be more than 0 bytes, got {show(value)}")
    return size


def _result_size(value: Any) -> int:
    size = _positive_size(value)
    if size > MAX_RESULT_BYTES:
        raise ValueError(
            f"must be at most {MAX_RESULT_BYTES} bytes (12 MiB less room for the rest of the frame:"
            f" a result crosses the worker's pipe as base64 in one frame of at most 16 MiB), got {show(value)}"
        )
    return size


def _apps(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"must be a list, e.g. [{show(value)}]")
    if not isinstance(value, list):
        raise ValueError(f'must be a list of "module:attribute" strings, got {show(value)}')
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or not _is_app_ref(item):
            raise ValueError(f'bad app {show(item)} (use "package.module:attribute")')
        if item in seen:
            raise ValueError(f"{show(item)} is listed twice")
        seen.add(item)
    return tuple(value)


def _is_app_ref(text: str) -> bool:
    module, sep, attribute = text.partition(":")
    return bool(sep) and all(part.isidentifier() for part in (*module.split("."), *attribute.split(".")))


def _closest(word: str, options: Iterable[str]) -> str | None:
    """The option a misspelt ``word`` was likely meant to be, for an error's hint."""
    import difflib  # only for an error: every forked worker would carry it

    close = difflib.get_close_matches(word, list(options), n=1)
    return close[0] if close else None


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        close = _closest(value.lower(), options) if isinstance(value, str) else None
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ValueError(f"must be one of {', '.join(options)}, got {show(value)}{hint}")

    return convert


def _log_format(value: Any) -> LogFormat:
    return "json" if _choice(LOG_FORMATS)(value) == "json" else "console"


def _queue_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f'must be a non-empty list of queue names, e.g. ["reports"], got {show(value)}')
    for queue in value:
        try:
            check_queue_name(queue)
        except BurrowError as exc:
            raise ValueError(str(exc)) from None
    return tuple(value)


def _pool_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or value == DEFAULT_POOL_NAME:
        raise ValueError(f"must be a pool name of its own (not {DEFAULT_POOL_NAME!r}), got {show(value)}")
    return value


def _every(value: Any) -> Any:
    """A schedule's ``every``: a duration string becomes seconds; periodic() checks the rest."""
    return parse_duration(value) if isinstance(value, str) else value


def _as_written(value: Any) -> Any:
    """For a key that periodic() checks itself, with messages of its own."""
    return value


# -- the records: one field per key ----------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class DatabaseConfig:
    """``[database]``: where the jobs live. ``schema`` is a PostgreSQL schema (None: the default).

    ``dsn`` is the one to use, whichever source won (the command line, the environment, the
    file's ``dsn`` or the file ``dsn_file`` names); ``dsn_file`` is that key as written.
    """

    dsn: str = setting(
        "dsn", _dsn, DEFAULT_DSN,
        f"where the jobs live (a relative SQLite path is read against this file's directory);"
        f" `{DSN_OPTION}` and `{DSN_ENV}` override it",
    )
    dsn_file: str | None = setting(
        "dsn_file", _nonempty_str, None, "read the DSN from this file (for systemd `LoadCredential=`; relative to"
        " `$CREDENTIALS_DIRECTORY`, else to the config file's directory); not with `dsn`"
    )
    schema: str | None = setting(
        "schema", _schema, None, f"PostgreSQL schema for burrow's tables; `{SCHEMA_ENV}` overrides it"
    )
    pooled: bool = setting(
        "pooled", _boolean, False,
        "the DSN is PgBouncer in transaction mode: no session state, no statement timeout set at connect,"
        " LISTEN only on `listen_dsn` (see Scaling out); found out by itself when PgBouncer refuses the"
        " `options` startup parameter",
    )
    listen_dsn: str | None = setting(
        "listen_dsn", _postgres_dsn, None,
        "a direct connection (not through PgBouncer) for LISTEN; without one a `pooled` supervisor polls"
        " every `poll_interval`",
        absent="the DSN, unless `pooled`",
    )

    def __repr__(self) -> str:
        # A Config is logged at start and on reload; the password must not be.
        listen = None if self.listen_dsn is None else redact_dsn(self.listen_dsn)
        return (
            f"DatabaseConfig(dsn={redact_dsn(self.dsn)!r}, dsn_file={self.dsn_file!r}, schema={self.schema!r},"
            f" pooled={self.pooled!r}, listen_dsn={listen!r})"
        )


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """``[[supervisor.pools]]``: workers of their own for these named queues."""

    name: str = field(
        metadata=declare(
            "name", _pool_name, f"the pool's name, at most {MAX_POOL_NAME} characters, not `{DEFAULT_POOL_NAME}`",
            absent="the queues joined with `+`",
        )
    )
    queues: tuple[str, ...] = field(
        metadata=declare(
            "queues", _queue_names, "the queues its workers serve (a list); a queue is in one pool at most",
            absent="required",
        )
    )
    workers: int = field(
        metadata=declare("workers", _int_between(1, MAX_WORKERS), "its worker processes", absent="required")
    )
    batch_size: int | None = setting(
        "batch_size", _int_between(1, MAX_BATCH_SIZE), None,
        "most jobs one of its workers claims per round trip (and ahead, as `[supervisor] batch_size`)",
        absent="`[supervisor] batch_size`",
    )


def _pools(value: Any) -> tuple[PoolConfig, ...]:
    """``[[supervisor.pools]]`` tables; each queue served by one pool at most."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError(f"must be [[supervisor.pools]] tables, got {show(value)}")
    pools: list[PoolConfig] = []
    for number, table in enumerate(value, 1):
        pools.append(_pool(f"#{number}", table, pools))
    return tuple(pools)


def _pool(at: str, table: Mapping[str, Any], before: Sequence[PoolConfig]) -> PoolConfig:
    """One pool's table, checked against the pools ``before`` it."""
    if (unknown := _unknown_key(table, setting_names(PoolConfig))) is not None:
        raise ValueError(f"{at} {unknown}")
    queues: tuple[str, ...] = _pool_key(at, "queues", table.get("queues"))
    taken = {queue: pool.name for pool in before for queue in pool.queues}
    for queue in queues:
        if queue in taken:
            raise ValueError(f"{at} queues: {queue!r} is served by pool {taken[queue]!r} already")
    name: str = _pool_key(at, "name", table.get("name", "+".join(queues)))
    if any(pool.name == name for pool in before):
        raise ValueError(f"{at} name: must be a pool name of its own (not {DEFAULT_POOL_NAME!r}), got {show(name)}")
    if len(name) > MAX_POOL_NAME:
        given = "" if "name" in table else " (without a name, the queues joined with '+'; give the pool a name)"
        raise ValueError(f"{at} name: at most {MAX_POOL_NAME} characters{given}, got {len(name)}")
    if "workers" not in table:
        raise ValueError(f"{at} workers: missing (how many workers serve {', '.join(queues)})")
    workers: int = _pool_key(at, "workers", table["workers"])
    batch_size: int | None = _pool_key(at, "batch_size", table["batch_size"]) if "batch_size" in table else None
    return PoolConfig(name, queues, workers, batch_size)


def _pool_key(at: str, attribute: str, value: Any) -> Any:
    """``value`` read by the declaration of PoolConfig's ``attribute``; a problem names the pool and key."""
    key = setting_of(PoolConfig, attribute)
    try:
        return key.parse(value)
    except ValueError as exc:
        raise ValueError(f"{at} {key.name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """``[supervisor]``: the worker pools and their clocks; durations in seconds, sizes in bytes.

    ``workers`` and ``batch_size`` are the default pool's: it serves every queue
    that no pool of ``pools`` names.
    """

    workers: int = setting("workers", _int_between(1, MAX_WORKERS), 2, "worker processes")
    apps: tuple[str, ...] = setting("apps", _apps, (), '`"module:attribute"` objects with `register_jobs(q)`')
    batch_size: int = setting(
        "batch_size", _int_between(1, MAX_BATCH_SIZE), 100,
        "most jobs a worker claims per round trip (fewer when jobs are slow; up to 4 times as many ahead when its"
        " claims come back slower than its batches run, see above)",
    )
    heartbeat_interval_s: float = setting(
        "heartbeat_interval", _positive_duration, 2.0, "worker heartbeats, lease extension, process row, systemd watchdog"
    )
    lease_timeout_s: float = setting(
        "lease_timeout", _positive_duration, DEFAULT_LEASE_S,
        "a job whose owner stopped heartbeating this long is re-run (more than twice `heartbeat_interval`)",
    )
    shutdown_timeout_s: float = setting(
        "shutdown_timeout", parse_duration, 30.0, "how long running jobs may take to finish on SIGTERM"
    )
    max_jobs_per_worker: int | None = setting(
        "max_jobs_per_worker", _int_between(1, None), None, "recycle a worker after this many jobs", absent="unlimited"
    )
    max_worker_memory_bytes: int | None = setting(
        "max_worker_memory", _positive_size, None, 'recycle a worker whose RSS exceeds this (`"512MB"`, `"1GiB"`)',
        absent="unlimited",
    )
    # A larger result fails its job (it would on every attempt); see protocol.outcome_frame. The default
    # is well under MAX_RESULT_BYTES: results belong in a table row, not files in it.
    max_result_size_bytes: int = setting(
        "max_result_size", _result_size, 8 * 1024 * 1024,
        "a job whose result is larger fails at once (`result too large: N bytes, over max_result_size (M bytes)`);"
        f" at most {MAX_RESULT_BYTES:,} bytes, as a result crosses the worker's pipe as base64 in one frame of at"
        " most 16 MiB",
    )
    reap_interval_s: float = setting("reap_interval", _positive_duration, 5.0, "how often expired leases are looked for")
    poll_interval_s: float = setting(
        "poll_interval", _positive_duration, 0.05,
        "longest idle poll on SQLite, and through PgBouncer without `listen_dsn` (else PostgreSQL wakes on NOTIFY)"
    )
    flush_interval_s: float = setting(
        "flush_interval", parse_duration, 0.005,
        "the least time between two writes of finished jobs' outcomes, gathered meanwhile (at most `heartbeat_interval`)",
    )
    pools: tuple[PoolConfig, ...] = setting(
        "pools", _pools, (),
        "a pool of workers of its own for named queues, one table each; the default pool (`workers`, `batch_size`"
        " above) serves every other queue",
        tables=PoolConfig,
    )


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """``[retry]``: the backoff of tasks that do not set ``with_backoff``, in seconds."""

    base_s: float = setting(
        "base", _positive_duration, DEFAULT_BACKOFF_BASE_S,
        "default backoff for tasks without `with_backoff`: the first retry's delay, doubled for each next one",
    )
    max_s: float = setting(
        "max", _positive_duration, DEFAULT_BACKOFF_MAX_S, "the longest default backoff (at least `base`)"
    )


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """``[logging]``; ``format=None`` lets the stream decide: people read a TTY, machines the rest."""

    format: LogFormat | None = setting(
        "format", _log_format, None, "`console` or `json` (JSON lines)", absent="console on a TTY, else `json`"
    )
    level: str = setting(
        "level", _choice(LOG_LEVELS), "info",
        ", ".join(f"`{level}`" for level in LOG_LEVELS) + "; `info` writes two lines a job (`job_started`, `job_succeeded`)",
    )

    def effective_format(self, isatty: bool) -> LogFormat:
        """The format to use when the log stream is (or is not) a terminal."""
        if self.format is not None:
            return self.format
        return "console" if isatty else "json"


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``[http]``: the supervisor's /metrics, /healthz and /readyz; off unless ``bind`` is set."""

    bind: tuple[str, int] | None = setting(
        "bind", parse_bind, None, '`"host:port"` for `/metrics`, `/healthz`, `/readyz` (see Operating burrow)',
        absent="off",
    )


_KEEP_DOC: Final = 'delete {} jobs this old; `"off"` keeps them'


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """``[retention]``: how long finished jobs are kept, by state; None keeps them forever ("off")."""

    succeeded_s: float | None = setting("succeeded", _duration_or_off, 24 * 3600.0, _KEEP_DOC.format("succeeded"))
    failed_s: float | None = setting("failed", _duration_or_off, 7 * 24 * 3600.0, _KEEP_DOC.format("failed"))
    cancelled_s: float | None = setting("cancelled", _duration_or_off, 24 * 3600.0, _KEEP_DOC.format("cancelled"))
    audit_s: float | None = setting(
        "audit", _duration_or_off, 90 * 24 * 3600.0,
        'how long operators\' actions stay in the audit trail (`burrow audit`); `"off"` keeps them',
    )


@dataclass(frozen=True, slots=True, repr=False)
class AdminConfig:
    """``[admin]``: the standalone web admin (``burrow admin``): where it listens and its password."""

    bind: tuple[str, int] = setting(
        "bind", parse_bind, ("127.0.0.1", 8080),
        "where the standalone web admin (`burrow admin`) listens; an address that is not loopback needs `password`",
        show=bind_text,
    )
    password: str | None = setting(
        "password", _nonempty_str, None, "the web admin's password (HTTP basic auth, any user name)"
    )
    viewer_password: str | None = setting(
        "viewer_password", _nonempty_str, None,
        "a second password, for read-only access: pages without any action (needs `password`)",
    )

    def __repr__(self) -> str:
        return (
            f"AdminConfig(bind={self.bind!r}, password={'***' if self.password else None},"
            f" viewer_password={'***' if self.viewer_password else None})"
        )


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """``[[schedule]]``: one periodic job as the file writes it; it is loaded as a Periodic."""

    task: str = field(metadata=declare("task", _as_written, "the task to enqueue, by name", absent="required"))
    cron: str | None = setting(
        "cron", _as_written, None,
        "when: 5 fields (minute hour day month weekday), or 6 with seconds first; `cron` or `every`, not both",
    )
    every: float | None = setting("every", _every, None, 'how often: a duration such as `"30s"`')
    payload: Any = field(default_factory=dict, metadata=declare("payload", _as_written, "the job's payload (a table)"))
    name: str | None = setting(
        "name", _as_written, None, "keys the schedule in the database; give one when a task has several schedules",
        absent="the task and its rule",
    )
    timezone: str = setting("timezone", _as_written, "UTC", "the time zone of `cron`")


def _schedules(value: Any) -> tuple[Periodic, ...]:
    """``[[schedule]]`` tables as Periodic registrations, each with a name of its own."""
    found: list[Periodic] = []
    for number, table in enumerate(value, 1):
        schedule = _schedule(f"#{number}", table)
        if any(other.name == schedule.name for other in found):
            raise ValueError(f"#{number}: name {schedule.name!r} is used twice (give each schedule its own name)")
        found.append(schedule)
    return tuple(found)


def _schedule(at: str, table: Mapping[str, Any]) -> Periodic:
    """One table as a Periodic; periodic() checks the values, and a problem names the task,
    by which an operator knows the schedule."""
    if "task" not in table:
        raise ValueError(f"{at}: task: missing (the task name to enqueue)")
    try:
        values = {item.name: key.parse(table[key.name]) for item, key in declared(ScheduleConfig) if key.name in table}
        entry = ScheduleConfig(**values)
        return periodic(
            entry.task, entry.payload, cron=entry.cron, every=entry.every, name=entry.name, timezone=entry.timezone
        )
    except (BurrowError, ValueError) as exc:
        raise ValueError(f"{at} ({table.get('task')!r}): {exc}") from None


@dataclass(frozen=True, slots=True)
class Config:
    """Everything ``conf/jobs.toml`` says; ``path`` is None for built-in defaults.

    Each field whose default is a record is the ``[section]`` of its name, in the order
    the README and the messages list them; ``schedules`` is the ``[[schedule]]`` array.
    """

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    schedules: tuple[Periodic, ...] = setting(
        "schedule", _schedules, (), "a periodic job, one table each; its task must be registered by an app",
        tables=ScheduleConfig,
    )
    path: Path | None = None


# -- the file ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Overrides:
    """What wins over the file: the command line and the environment."""

    dsn: str | None
    dsn_option: str
    workers: int | None
    environ: Mapping[str, str]


def load_config(
    path: Path | str,
    *,
    dsn_override: str | None = None,
    dsn_option: str = DSN_OPTION,
    workers_override: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Config:
    """Read and check ``path``; the first problem found is raised as ConfigError.

    The DSN comes from, in order: ``dsn_override`` (the command line's ``dsn_option``),
    the ``BURROW_DATABASE_DSN`` environment variable (an empty value counts as unset),
    then the file's ``dsn`` or ``dsn_file``; ``BURROW_DATABASE_SCHEMA`` overrides the
    file's ``schema``. A ``dsn_file`` is not read when an
    override wins, so a shell without the systemd credential can still run. A relative
    SQLite path from the file (its ``dsn``, the ``dsn_file``'s, or the default) is read
    against the file's directory and returned absolute; an override's is left as given
    (the current directory's).
    """
    path = Path(path)
    where = str(path)
    data = _read_toml(path, where)
    _check_layout(where, data)
    overrides = _Overrides(dsn_override, dsn_option, workers_override, environ)
    section = {name: _Section(where, name, data.get(name, {})) for name in sections(Config)}
    return Config(
        database=_database(section["database"], path, overrides),
        supervisor=_supervisor(section["supervisor"], overrides),
        retry=_retry(section["retry"]),
        logging=section["logging"].read(LoggingConfig),
        http=section["http"].read(HttpConfig),
        retention=section["retention"].read(RetentionConfig),
        admin=section["admin"].read(AdminConfig),
        schedules=_array(where, data, "schedules"),
        path=path,
    )


def database_of(
    dsn: str | None = None,
    *,
    schema: str | None = None,
    config: Path | str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> tuple[str, str | None]:
    """The (dsn, schema) ``burrow.connect`` opens: the one order every entry point uses.

    With ``config``: its ``[database]`` section, under ``BURROW_DATABASE_DSN`` and
    ``BURROW_DATABASE_SCHEMA``, under ``dsn`` and ``schema`` when given (as for the
    supervisor; the whole file is checked). Without it: ``dsn``, else
    ``BURROW_DATABASE_DSN`` (with ``BURROW_DATABASE_SCHEMA``), else ``DEFAULT_DSN``.
    """
    if config is not None:
        database = load_config(config, dsn_override=dsn, dsn_option="connect(dsn=)", environ=environ).database
        return database.dsn, schema or database.schema
    if dsn is not None:
        return dsn, schema
    env_dsn = environ.get(DSN_ENV) or None
    if env_dsn is not None:
        return env_dsn, schema or environ.get(SCHEMA_ENV) or None
    return DEFAULT_DSN, schema


def _read_toml(path: Path, where: str) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise _error(f"{where}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise _error(f"{where}: cannot read: not UTF-8 text ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _error(f"{where}: invalid TOML: {exc}") from exc


def _check_layout(where: str, data: Mapping[str, Any]) -> None:
    """Unknown sections and keys fail here, before any value is looked at."""
    known, tables = sections(Config), arrays(Config)
    for name, table in data.items():
        if name in tables:
            _check_array(where, tables[name], table)
            continue
        if name not in known and not isinstance(table, dict):
            owner = next((s for s, record in known.items() if name in setting_names(record)), None)
            hint = f"did you mean [{owner}] {name}?" if owner else f"keys belong in {_known_sections()}"
            raise _error(f"{where}: {_key(name)}: unknown key outside any section ({hint})")
        if name not in known:
            close = _closest(name, known)
            hint = f"did you mean [{close}]?" if close else f"known: {_known_sections()}"
            raise _error(f"{where}: [{_key(name)}]: unknown section ({hint})")
        if not isinstance(table, dict):
            raise _error(f"{where}: [{name}]: must be a table, got {show(table)}")
        if (unknown := _unknown_key(table, setting_names(known[name]))) is not None:
            raise _error(f"{where}: [{name}] {unknown}")


def _check_array(where: str, key: Setting, tables: Any) -> None:
    name = key.name
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _error(f"{where}: [[{name}]]: must be an array of tables ([[{name}]] sections), got {show(tables)}")
    for number, table in enumerate(tables, 1):
        if (unknown := _unknown_key(table, setting_names(key.tables))) is not None:
            raise _error(f"{where}: [[{name}]] #{number} {unknown}")


def _unknown_key(table: Mapping[str, Any], known: Sequence[str]) -> str | None:
    """The first key of ``table`` not in ``known``, as "key: unknown key (did you mean ...)"."""
    for name in table:
        if name not in known:
            close = _closest(name, known)
            hint = f" (did you mean {close!r}?)" if close else f" (known: {', '.join(known)})"
            return f"{_key(name)}: unknown key{hint}"
    return None


def _array(where: str, data: Mapping[str, Any], attribute: str) -> Any:
    """A top-level array of tables, read by its key; its errors say which table (#1 is the first)."""
    key = setting_of(Config, attribute)
    try:
        return key.parse(data.get(key.name, []))
    except ValueError as exc:
        raise _error(f"{where}: [[{key.name}]] {exc}") from None


class _Section:
    """One ``[section]`` of the file, turning a ValueError into a located ConfigError."""

    __slots__ = ("where", "name", "table")

    def __init__(self, where: str, name: str, table: Mapping[str, Any]) -> None:
        self.where = where
        self.name = name
        self.table = table

    def fail(self, key: str, problem: str) -> NoReturn:
        raise _error(f"{self.where}: [{self.name}] {key}: {problem}")

    def parse(self, key: Setting, value: Any, *, label: str | None = None) -> Any:
        """``value`` read as ``key``; an error names ``label`` (default: the key)."""
        try:
            return key.parse(value)
        except ValueError as exc:
            self.fail(label or key.name, str(exc))

    def read(self, record: Callable[..., T]) -> T:
        """The record, each key the section sets read by its declaration, the rest at their defaults."""
        given = [(item, key) for item, key in declared(record) if key.name in self.table]
        return record(**{item.name: self.parse(key, self.table[key.name]) for item, key in given})


# -- what no single key can say, per section -------------------------------------


def _database(section: _Section, path: Path, overrides: _Overrides) -> DatabaseConfig:
    if "dsn" in section.table and "dsn_file" in section.table:
        section.fail("dsn_file", "set either dsn or dsn_file, not both")
    config = section.read(DatabaseConfig)
    env_schema = overrides.environ.get(SCHEMA_ENV) or None
    if env_schema is not None:
        schema = section.parse(setting_of(DatabaseConfig, "schema"), env_schema, label=f"schema (from {SCHEMA_ENV})")
        config = replace(config, schema=schema)
    dsn_key = setting_of(DatabaseConfig, "dsn")
    env_dsn = overrides.environ.get(DSN_ENV) or None
    if overrides.dsn is not None:
        dsn = section.parse(dsn_key, overrides.dsn, label=f"dsn (from {overrides.dsn_option})")
    elif env_dsn is not None:
        dsn = section.parse(dsn_key, env_dsn, label=f"dsn (from {DSN_ENV})")
    elif config.dsn_file is not None:
        text = _read_dsn_file(section, path, config.dsn_file, overrides.environ)
        dsn = sqlite_absolute(section.parse(dsn_key, text, label="dsn_file"), path.absolute().parent)
    else:
        # A file names its database the same way wherever the command runs from (the
        # default too: writing it out or leaving it out is the same file).
        dsn = sqlite_absolute(config.dsn, path.absolute().parent)
    if dsn.startswith("sqlite") and (config.pooled or config.listen_dsn is not None):
        section.fail("pooled" if config.pooled else "listen_dsn", "is for PostgreSQL; the DSN is SQLite's")
    return replace(config, dsn=dsn)


def _read_dsn_file(section: _Section, path: Path, name: str, environ: Mapping[str, str]) -> str:
    """A relative name is looked up where systemd's LoadCredential= puts it."""
    file = Path(name)
    if not file.is_absolute():
        credentials = environ.get("CREDENTIALS_DIRECTORY")
        file = (Path(credentials) if credentials else path.parent) / file
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        section.fail("dsn_file", f"cannot read {str(file)!r}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        section.fail("dsn_file", f"{str(file)!r} is not UTF-8 text")
    if not text:
        section.fail("dsn_file", f"{str(file)!r} is empty")
    return text


def _supervisor(section: _Section, overrides: _Overrides) -> SupervisorConfig:
    workers = overrides.workers
    if workers is not None:
        # Checked first, as it was before the keys were declared: it wins over the file's.
        label = "workers (from the command line)"
        workers = section.parse(setting_of(SupervisorConfig, "workers"), workers, label=label)
    config = section.read(SupervisorConfig)
    if workers is not None:
        config = replace(config, workers=workers)
    heartbeat = config.heartbeat_interval_s
    if config.lease_timeout_s <= 2 * heartbeat:
        # A lease must survive one late heartbeat, or a busy host loses its jobs.
        section.fail(
            "lease_timeout",
            f"must be more than twice heartbeat_interval ({_seconds(heartbeat)}), got {_seconds(config.lease_timeout_s)}",
        )
    if config.flush_interval_s > heartbeat:
        # Results held longer than a heartbeat would let finished jobs' leases run on.
        section.fail(
            "flush_interval",
            f"must not exceed heartbeat_interval ({_seconds(heartbeat)}), got {_seconds(config.flush_interval_s)}",
        )
    return config


def _retry(section: _Section) -> RetryConfig:
    config = section.read(RetryConfig)
    if config.max_s < config.base_s:
        section.fail("max", f"must be at least base ({_seconds(config.base_s)}), got {_seconds(config.max_s)}")
    return config


# -- message helpers ------------------------------------------------------------

_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")


def _error(message: str) -> ConfigError:
    """A ConfigError on exactly one line, whatever the pieces held."""
    return ConfigError(" ".join(message.splitlines()))


def _key(name: str) -> str:
    return name if _BARE_KEY_RE.fullmatch(name) else repr(name)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _known_sections() -> str:
    return ", ".join(f"[{name}]" for name in sections(Config))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m burrow.config --markdown``: print the README's configuration table."""
    parser = argparse.ArgumentParser(prog="python -m burrow.config", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the README's table of keys")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.error("say what to print: --markdown")
    sys.stdout.write(markdown_table(Config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
