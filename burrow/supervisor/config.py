"""``conf/jobs.toml`` -> frozen dataclasses, with one-line errors.

The supervisor reads its configuration once at start and again on SIGHUP; a typo
must stop it before it forks anything, with a message an operator can act on
without reading a traceback: the file, the ``[section] key`` and what is wrong.
Unknown sections and keys are errors, not warnings, because a misspelt
``lease_timout`` that is silently ignored runs production on a default.

A DSN may carry a password, so every message that could show one goes through
:func:`redact_dsn`, and :class:`DatabaseConfig` redacts its own ``repr``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, TypeVar

from burrow.backends.base import DEFAULT_LEASE_S
from burrow.errors import BurrowError, ConfigError
from burrow.retry import RetryDefaults
from burrow.options import check_queue_name
from burrow.schedule import Periodic, periodic
from burrow.supervisor.protocol import MAX_RESULT_BYTES

DEFAULT_POOL_NAME: Final = "default"  # the pool of every queue no named pool serves

__all__ = [
    "Config",
    "AdminConfig",
    "DatabaseConfig",
    "HttpConfig",
    "RetentionConfig",
    "LogFormat",
    "LoggingConfig",
    "PoolConfig",
    "RetryConfig",
    "SupervisorConfig",
    "load_config",
    "parse_bind",
    "parse_duration",
    "parse_size",
    "redact_dsn",
]

T = TypeVar("T")
LogFormat = Literal["console", "json"]

DEFAULT_DSN: Final = "sqlite:///burrow.db"
# Well under MAX_RESULT_BYTES; results belong in a table row, not files in it.
DEFAULT_MAX_RESULT_BYTES: Final = 8 * 1024 * 1024
DSN_ENV: Final = "BURROW_DATABASE_DSN"
DSN_OPTION: Final = "--jobs-database-dsn"
SCHEMA_ENV: Final = "BURROW_DATABASE_SCHEMA"
MAX_WORKERS: Final = 256
MAX_POOL_NAME: Final = 200  # its workers' process role, "worker:<name>", fits the column
MAX_BATCH_SIZE: Final = 10_000
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("console", "json")


@dataclass(frozen=True, slots=True, repr=False)
class DatabaseConfig:
    """Where the jobs live. ``schema`` is a PostgreSQL schema (None: the default)."""

    dsn: str = DEFAULT_DSN
    schema: str | None = None

    def __repr__(self) -> str:
        # A Config is logged at start and on reload; the password must not be.
        return f"DatabaseConfig(dsn={redact_dsn(self.dsn)!r}, schema={self.schema!r})"


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """``[[supervisor.pools]]``: workers of their own for these named queues."""

    name: str
    queues: tuple[str, ...]
    workers: int
    batch_size: int | None = None  # None: [supervisor] batch_size


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """The worker pools and their clocks; durations in seconds, sizes in bytes.

    ``workers`` and ``batch_size`` are the default pool's: it serves every queue
    that no pool of ``pools`` names.
    """

    workers: int = 2
    apps: tuple[str, ...] = ()
    batch_size: int = 100
    heartbeat_interval_s: float = 2.0
    lease_timeout_s: float = DEFAULT_LEASE_S
    shutdown_timeout_s: float = 30.0
    max_jobs_per_worker: int | None = None
    max_worker_memory_bytes: int | None = None
    # A larger result fails its job (it would on every attempt); see worker.outcome_frame.
    max_result_size_bytes: int = DEFAULT_MAX_RESULT_BYTES
    reap_interval_s: float = 5.0
    poll_interval_s: float = 0.05
    flush_interval_s: float = 0.005
    pools: tuple[PoolConfig, ...] = ()


# Default backoff for tasks that do not set ``with_backoff``: one type, one home.
RetryConfig = RetryDefaults


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """``format=None`` lets the stream decide: people read a TTY, machines the rest."""

    format: LogFormat | None = None
    level: str = "info"

    def effective_format(self, isatty: bool) -> LogFormat:
        """The format to use when the log stream is (or is not) a terminal."""
        if self.format is not None:
            return self.format
        return "console" if isatty else "json"


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The supervisor's /metrics, /healthz and /readyz; off unless ``bind`` is set."""

    bind: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long finished jobs are kept, by state; None keeps them forever ("off")."""

    succeeded_s: float | None = 24 * 3600.0
    failed_s: float | None = 7 * 24 * 3600.0
    cancelled_s: float | None = 24 * 3600.0


@dataclass(frozen=True, slots=True, repr=False)
class AdminConfig:
    """The standalone web admin (``burrow admin``): where it listens and its password."""

    bind: tuple[str, int] = ("127.0.0.1", 8080)
    password: str | None = None

    def __repr__(self) -> str:
        return f"AdminConfig(bind={self.bind!r}, password={'***' if self.password else None})"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything ``conf/jobs.toml`` says; ``path`` is None for built-in defaults."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    schedules: tuple[Periodic, ...] = ()  # [[schedule]] tables
    path: Path | None = None


# -- values -------------------------------------------------------------------

# Digits are bounded so that a pasted blob is "bad", not a huge-number error.
_NUMBER: Final = r"(\d{1,20}(?:\.\d{0,20})?|\.\d{1,20})"
_DURATION_RE: Final = re.compile(rf"\s*{_NUMBER}\s*(ms|s|m|h|d)?\s*")
_DURATION_UNITS: Final[Mapping[str | None, Fraction]] = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    None: Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_DURATION_HINT: Final = '(use e.g. "500ms", "30s", "5m", "7d")'

_SIZE_RE: Final = re.compile(rf"\s*{_NUMBER}\s*([A-Za-z]*)\s*")
_SIZE_UNITS: Final[Mapping[str, int]] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_HINT: Final = '(use e.g. "512MB", "1GiB", "100kB")'


def parse_duration(text: str | int | float) -> float:
    """Seconds from "500ms", "30s", "5m", "1h", "7d", "1.5s" or a bare number of seconds.

    Exact fractions keep "123ms" equal to 123 / 1000 and "0.1h" exactly 360.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"bad duration {_show(text)} {_DURATION_HINT}")
    if isinstance(text, str):
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"bad duration {_show(text)} {_DURATION_HINT}")
        seconds = float(Fraction(match[1]) * _DURATION_UNITS[match[2]])
    else:
        seconds = float(text)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"bad duration {_show(text)}: must be a finite, non-negative time")
    return seconds


def parse_size(text: str | int) -> int:
    """Bytes from "512MB", "1GiB", "100kB" or a bare integer of bytes.

    kB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024, as their
    names promise; units are matched without regard to case.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"bad size {_show(text)} {_SIZE_HINT}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"bad size {text}: must not be negative")
        return text
    match = _SIZE_RE.fullmatch(text)
    factor = _SIZE_UNITS.get(match[2].lower()) if match is not None else None
    if match is None or factor is None:
        raise ValueError(f"bad size {_show(text)} {_SIZE_HINT}")
    size = Fraction(match[1]) * factor
    if size.denominator != 1:
        raise ValueError(f"bad size {_show(text)}: not a whole number of bytes")
    return size.numerator


# Up to the first ":" of the user part, then to the last "@": over-redacting a
# mistyped DSN is fine, leaking part of a password is not.
_URL_USERINFO_RE: Final = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@]*:)(?P<password>.*)@")
_BARE_USERINFO_RE: Final = re.compile(r"^(?P<head>[^:@]*:)(?P<password>.*)@")
_URL_QUERY_PASSWORD_RE: Final = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_KV_PASSWORD_RE: Final = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, safe to log or print.

    The password is taken to run up to the *last* "@": an unescaped "@" or "/" in
    a password then hides too much rather than leaking the rest of it. A
    ``password=`` query parameter, libpq's ``key=value`` form and a mistyped URL
    such as ``postgresql:/user:pw@host`` are covered too.
    """
    if "://" in dsn:
        redacted = _URL_USERINFO_RE.sub(r"\g<head>***@", dsn, count=1)
        return _URL_QUERY_PASSWORD_RE.sub(r"\1***", redacted)
    redacted = _BARE_USERINFO_RE.sub(r"\g<head>***@", dsn, count=1)
    return _KV_PASSWORD_RE.sub(r"\1***", redacted)


# -- the file -----------------------------------------------------------------

_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "database": ("dsn", "dsn_file", "schema"),
    "supervisor": (
        "workers",
        "apps",
        "batch_size",
        "heartbeat_interval",
        "lease_timeout",
        "shutdown_timeout",
        "max_jobs_per_worker",
        "max_worker_memory",
        "max_result_size",
        "reap_interval",
        "poll_interval",
        "flush_interval",
        "pools",
    ),
    "retry": ("base", "max"),
    "logging": ("format", "level"),
    "http": ("bind",),
    "retention": ("succeeded", "failed", "cancelled"),
    "admin": ("password", "bind"),
}
# Arrays of tables ([[name]]), each table with these keys.
_ARRAYS: Final[Mapping[str, tuple[str, ...]]] = {
    "schedule": ("task", "cron", "every", "payload", "name", "timezone"),
}
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_URL_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SCHEMA_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


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
    override wins, so a shell without the systemd credential can still run.
    """
    path = Path(path)
    where = str(path)
    data = _read_toml(path, where)
    _check_layout(where, data)
    sections = {name: _Section(where, name, data.get(name, {})) for name in _KEYS}
    return Config(
        database=_database(sections["database"], path, dsn_override, dsn_option, environ),
        supervisor=_supervisor(sections["supervisor"], workers_override),
        retry=_retry(sections["retry"]),
        logging=_logging(sections["logging"]),
        http=HttpConfig(bind=sections["http"].get("bind", parse_bind, None)),
        retention=_retention(sections["retention"]),
        admin=_admin(sections["admin"]),
        schedules=_schedules(where, data.get("schedule", [])),
        path=path,
    )


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
    for name, table in data.items():
        if name in _ARRAYS:
            _check_array(where, name, table)
            continue
        if name not in _KEYS and not isinstance(table, dict):
            owner = next((s for s, keys in _KEYS.items() if name in keys), None)
            hint = f"did you mean [{owner}] {name}?" if owner else f"keys belong in {_known_sections()}"
            raise _error(f"{where}: {_key(name)}: unknown key outside any section ({hint})")
        if name not in _KEYS:
            close = difflib.get_close_matches(name, _KEYS, n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"known: {_known_sections()}"
            raise _error(f"{where}: [{_key(name)}]: unknown section ({hint})")
        if not isinstance(table, dict):
            raise _error(f"{where}: [{name}]: must be a table, got {_show(table)}")
        for key in table:
            if key not in _KEYS[name]:
                close = difflib.get_close_matches(key, _KEYS[name], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(_KEYS[name])})"
                raise _error(f"{where}: [{name}] {_key(key)}: unknown key{hint}")


def _check_array(where: str, name: str, tables: Any) -> None:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _error(f"{where}: [[{name}]]: must be an array of tables ([[{name}]] sections), got {_show(tables)}")
    for number, table in enumerate(tables, 1):
        for key in table:
            if key not in _ARRAYS[name]:
                close = difflib.get_close_matches(key, _ARRAYS[name], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(_ARRAYS[name])})"
                raise _error(f"{where}: [[{name}]] #{number} {_key(key)}: unknown key{hint}")


def _schedules(where: str, tables: list[dict[str, Any]]) -> tuple[Periodic, ...]:
    """``[[schedule]]`` tables as Periodic registrations, checked here like every other key."""
    found: list[Periodic] = []
    for number, table in enumerate(tables, 1):
        at = f"{where}: [[schedule]] #{number}"
        if "task" not in table:
            raise _error(f"{at}: task: missing (the task name to enqueue)")
        every = table.get("every")
        try:
            schedule = periodic(
                table["task"],
                table.get("payload", {}),
                cron=table.get("cron"),
                every=parse_duration(every) if isinstance(every, str) else every,
                name=table.get("name"),
                timezone=table.get("timezone", "UTC"),
            )
        except (BurrowError, ValueError) as exc:
            raise _error(f"{at} ({table.get('task')!r}): {exc}") from None
        if any(other.name == schedule.name for other in found):
            raise _error(f"{at}: name {schedule.name!r} is used twice (give each schedule its own name)")
        found.append(schedule)
    return tuple(found)


class _Section:
    """One table of the file, turning a ValueError into a located ConfigError."""

    __slots__ = ("where", "name", "table")

    def __init__(self, where: str, name: str, table: Mapping[str, Any]) -> None:
        self.where = where
        self.name = name
        self.table = table

    def fail(self, key: str, problem: str) -> NoReturn:
        raise _error(f"{self.where}: [{self.name}] {key}: {problem}")

    def get(self, key: str, convert: Callable[[Any], T], default: T) -> T:
        if key not in self.table:
            return default
        try:
            return convert(self.table[key])
        except ValueError as exc:
            self.fail(key, str(exc))


def _database(
    section: _Section, path: Path, dsn_override: str | None, dsn_option: str, environ: Mapping[str, str]
) -> DatabaseConfig:
    if "dsn" in section.table and "dsn_file" in section.table:
        section.fail("dsn_file", "set either dsn or dsn_file, not both")
    file_dsn = section.get("dsn", _dsn, None)
    dsn_file = section.get("dsn_file", _nonempty_str, None)
    schema = section.get("schema", _schema, None)
    env_schema = environ.get(SCHEMA_ENV) or None
    if env_schema is not None:
        try:
            schema = _schema(env_schema)
        except ValueError as exc:
            section.fail(f"schema (from {SCHEMA_ENV})", str(exc))

    env_dsn = environ.get(DSN_ENV) or None
    if dsn_override is not None:
        dsn = _checked_dsn(section, f"dsn (from {dsn_option})", dsn_override)
    elif env_dsn is not None:
        dsn = _checked_dsn(section, f"dsn (from {DSN_ENV})", env_dsn)
    elif dsn_file is not None:
        dsn = _checked_dsn(section, "dsn_file", _read_dsn_file(section, path, dsn_file, environ))
    else:
        dsn = file_dsn if file_dsn is not None else DEFAULT_DSN
    return DatabaseConfig(dsn=dsn, schema=schema)


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


def _checked_dsn(section: _Section, label: str, value: str) -> str:
    try:
        return _dsn(value)
    except ValueError as exc:
        section.fail(label, str(exc))


def _dsn(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_show(value)}")
    if not _URL_RE.match(value):
        raise ValueError(
            f"not a database URL: {_show(redact_dsn(value))}"
            " (use e.g. 'sqlite:///burrow.db' or 'postgresql://user@host/db')"
        )
    return value


def _supervisor(section: _Section, workers_override: int | None) -> SupervisorConfig:
    default = SupervisorConfig()
    workers = section.get("workers", _int_between(1, MAX_WORKERS), default.workers)
    if workers_override is not None:
        try:
            workers = _int_between(1, MAX_WORKERS)(workers_override)
        except ValueError as exc:
            section.fail("workers (from the command line)", str(exc))
    heartbeat = section.get("heartbeat_interval", _positive_duration, default.heartbeat_interval_s)
    lease = section.get("lease_timeout", _positive_duration, default.lease_timeout_s)
    if lease <= 2 * heartbeat:
        # A lease must survive one late heartbeat, or a busy host loses its jobs.
        section.fail(
            "lease_timeout",
            f"must be more than twice heartbeat_interval ({_seconds(heartbeat)}), got {_seconds(lease)}",
        )
    memory = section.get("max_worker_memory", _positive_size, None)
    flush = section.get("flush_interval", parse_duration, default.flush_interval_s)
    if flush > heartbeat:
        # Results held longer than a heartbeat would let finished jobs' leases run on.
        section.fail("flush_interval", f"must not exceed heartbeat_interval ({_seconds(heartbeat)}), got {_seconds(flush)}")
    return SupervisorConfig(
        workers=workers,
        apps=section.get("apps", _apps, default.apps),
        batch_size=section.get("batch_size", _int_between(1, MAX_BATCH_SIZE), default.batch_size),
        heartbeat_interval_s=heartbeat,
        lease_timeout_s=lease,
        shutdown_timeout_s=section.get("shutdown_timeout", parse_duration, default.shutdown_timeout_s),
        max_jobs_per_worker=section.get("max_jobs_per_worker", _int_between(1, None), None),
        max_worker_memory_bytes=memory,
        max_result_size_bytes=section.get("max_result_size", _result_size, default.max_result_size_bytes),
        reap_interval_s=section.get("reap_interval", _positive_duration, default.reap_interval_s),
        poll_interval_s=section.get("poll_interval", _positive_duration, default.poll_interval_s),
        flush_interval_s=flush,
        pools=section.get("pools", _pools, ()),
    )


def _retry(section: _Section) -> RetryConfig:
    default = RetryConfig()
    base = section.get("base", _positive_duration, default.base_s)
    cap = section.get("max", _positive_duration, default.max_s)
    if cap < base:
        section.fail("max", f"must be at least base ({_seconds(base)}), got {_seconds(cap)}")
    return RetryConfig(base_s=base, max_s=cap)


def _logging(section: _Section) -> LoggingConfig:
    default = LoggingConfig()
    return LoggingConfig(
        format=section.get("format", _log_format, default.format),
        level=section.get("level", _choice(LOG_LEVELS), default.level),
    )


_POOL_KEYS: Final = ("name", "queues", "workers", "batch_size")


def _pools(value: Any) -> tuple[PoolConfig, ...]:
    """``[[supervisor.pools]]`` tables; each queue served by one pool at most."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError(f"must be [[supervisor.pools]] tables, got {_show(value)}")
    pools: list[PoolConfig] = []
    taken: dict[str, str] = {}
    for number, table in enumerate(value, 1):
        at = f"#{number}"
        for key in table:
            if key not in _POOL_KEYS:
                close = difflib.get_close_matches(key, _POOL_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(_POOL_KEYS)})"
                raise ValueError(f"{at} {_key(key)}: unknown key{hint}")
        queues = table.get("queues")
        if not isinstance(queues, list) or not queues:
            raise ValueError(f'{at} queues: must be a non-empty list of queue names, e.g. ["reports"], got {_show(queues)}')
        for queue in queues:
            try:
                check_queue_name(queue)
            except BurrowError as exc:
                raise ValueError(f"{at} queues: {exc}") from None
            if queue in taken:
                raise ValueError(f"{at} queues: {queue!r} is served by pool {taken[queue]!r} already")
        name = table.get("name", "+".join(queues))
        if not isinstance(name, str) or not name.strip() or name == DEFAULT_POOL_NAME or any(p.name == name for p in pools):
            raise ValueError(f"{at} name: must be a pool name of its own (not 'default'), got {_show(name)}")
        if len(name) > MAX_POOL_NAME:
            given = "" if "name" in table else " (without a name, the queues joined with '+'; give the pool a name)"
            raise ValueError(f"{at} name: at most {MAX_POOL_NAME} characters{given}, got {len(name)}")
        if "workers" not in table:
            raise ValueError(f"{at} workers: missing (how many workers serve {', '.join(queues)})")
        workers = _located(at, "workers", _int_between(1, MAX_WORKERS), table["workers"])
        batch_size = None
        if "batch_size" in table:
            batch_size = _located(at, "batch_size", _int_between(1, MAX_BATCH_SIZE), table["batch_size"])
        taken.update(dict.fromkeys(queues, name))
        pools.append(PoolConfig(name, tuple(queues), workers, batch_size))
    return tuple(pools)


def _located(at: str, key: str, convert: Callable[[Any], T], value: Any) -> T:
    try:
        return convert(value)
    except ValueError as exc:
        raise ValueError(f"{at} {key}: {exc}") from None


def _retention(section: _Section) -> RetentionConfig:
    default = RetentionConfig()
    return RetentionConfig(
        succeeded_s=section.get("succeeded", _duration_or_off, default.succeeded_s),
        failed_s=section.get("failed", _duration_or_off, default.failed_s),
        cancelled_s=section.get("cancelled", _duration_or_off, default.cancelled_s),
    )


def _admin(section: _Section) -> AdminConfig:
    default = AdminConfig()
    return AdminConfig(
        bind=section.get("bind", parse_bind, default.bind),
        password=section.get("password", _nonempty_str, None),
    )


# -- converters: each raises ValueError with the problem, the caller adds where --


_BIND_RE: Final = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})")


def parse_bind(value: Any) -> tuple[str, int]:
    """("host", port) from "127.0.0.1:9464", "localhost:8080" or "[::1]:9464"."""
    match = _BIND_RE.fullmatch(value) if isinstance(value, str) else None
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise ValueError(f'must be "host:port" (e.g. "127.0.0.1:9464"), got {_show(value)}')
    return match["v6"] or match["host"], port


def _duration_or_off(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() == "off":
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f'must be more than 0 (or "off" to keep forever), got {_show(value)}')
    return seconds



def _int_between(low: int, high: int | None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {_show(value)}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bounds}, got {value}")
        return value

    return convert


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than 0, got {_show(value)}")
    return seconds


def _positive_size(value: Any) -> int:
    if isinstance(value, float):
        raise ValueError(f"bad size {_show(value)}: a bare number is bytes and must be an integer")
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"must be more than 0 bytes, got {_show(value)}")
    return size


def _result_size(value: Any) -> int:
    size = _positive_size(value)
    if size > MAX_RESULT_BYTES:
        raise ValueError(
            f"must be at most {MAX_RESULT_BYTES} bytes (12 MiB less room for the rest of the frame:"
            f" a result crosses the worker's pipe as base64 in one frame of at most 16 MiB), got {_show(value)}"
        )
    return size


def _nonempty_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {_show(value)}")
    return value


def _schema(value: Any) -> str:
    if not isinstance(value, str) or not _SCHEMA_RE.fullmatch(value):
        raise ValueError(f"must be a plain SQL identifier (letters, digits, _), got {_show(value)}")
    return value


def _apps(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValueError(f"must be a list, e.g. [{_show(value)}]")
    if not isinstance(value, list):
        raise ValueError(f'must be a list of "module:attribute" strings, got {_show(value)}')
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or not _is_app_ref(item):
            raise ValueError(f'bad app {_show(item)} (use "package.module:attribute")')
        if item in seen:
            raise ValueError(f"{_show(item)} is listed twice")
        seen.add(item)
    return tuple(value)


def _is_app_ref(text: str) -> bool:
    module, sep, attribute = text.partition(":")
    return bool(sep) and all(
        part.isidentifier() for part in (*module.split("."), *attribute.split("."))
    )


def _log_format(value: Any) -> LogFormat:
    return "json" if _choice(LOG_FORMATS)(value) == "json" else "console"


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if isinstance(value, str) and value.lower() in options:
            return value.lower()
        close = difflib.get_close_matches(value.lower(), options, n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"must be one of {', '.join(options)}, got {_show(value)}{hint}")

    return convert


# -- message helpers ----------------------------------------------------------


def _error(message: str) -> ConfigError:
    """A ConfigError on exactly one line, whatever the pieces held."""
    return ConfigError(" ".join(message.splitlines()))


def _show(value: object) -> str:
    """A value as TOML-ish text, one line, short enough to read."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = f"a {'table' if isinstance(value, dict) else 'list'} {value!r}"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _key(name: str) -> str:
    return name if _BARE_KEY_RE.fullmatch(name) else repr(name)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _known_sections() -> str:
    return ", ".join(f"[{name}]" for name in _KEYS)
