"""conf/jobs.toml loading: every bad input is one line naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from burrow.config import (
    database_of,
    Config,
    DatabaseConfig,
    LoggingConfig,
    PoolConfig,
    RetryConfig,
    ScheduleConfig,
    SupervisorConfig,
    load_config,
)
from burrow.errors import BurrowError, ConfigError
from burrow.settings import declared, default_text, markdown_table, sections

README = Path(__file__).parents[2] / "README.md"

FULL = """
[database]
dsn = "postgresql://burrow@db.example/jobs"
schema = "burrow"

[supervisor]
workers = 8
apps = ["myapp.jobs:app", "other.pkg.mod:factory.jobs"]
batch_size = 50
heartbeat_interval = "500ms"
lease_timeout = "1m"
shutdown_timeout = "45s"
max_jobs_per_worker = 1000
max_worker_memory = "512MiB"
max_result_size = "1MiB"
reap_interval = 10
poll_interval = "20ms"
flush_interval = "2ms"

[retry]
base = "1.5s"
max = "2h"

[logging]
format = "json"
level = "DEBUG"
"""


def write(tmp_path: Path, text: str, name: str = "jobs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: Path, **kwargs: Any) -> str:
    """The error loading ``path`` raises, checked to be one line that names the file."""
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={}, **kwargs)
    message = info.value.message
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_full_file_loads_into_the_dataclasses(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    assert load_config(path, environ={}) == Config(
        database=DatabaseConfig(dsn="postgresql://burrow@db.example/jobs", schema="burrow"),
        supervisor=SupervisorConfig(
            workers=8,
            apps=("myapp.jobs:app", "other.pkg.mod:factory.jobs"),
            batch_size=50,
            heartbeat_interval_s=0.5,
            lease_timeout_s=60.0,
            shutdown_timeout_s=45.0,
            max_jobs_per_worker=1000,
            max_worker_memory_bytes=512 * 1024**2,
            max_result_size_bytes=1024**2,
            reap_interval_s=10.0,
            poll_interval_s=0.02,
            flush_interval_s=0.002,
        ),
        retry=RetryConfig(base_s=1.5, max_s=7200.0),
        logging=LoggingConfig(format="json", level="debug"),
        path=path,
    )


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    database = DatabaseConfig(dsn=f"sqlite:///{tmp_path / 'burrow.db'}")  # the default, next to the file
    assert load_config(path, environ={}) == Config(database=database, path=path)
    assert Config().supervisor.max_result_size_bytes == 8 * 1024**2


def test_the_largest_max_result_size_fits_in_a_frame(tmp_path: Path) -> None:
    """base64 of the largest result allowed, with the rest of a result frame, is under the cap."""
    import base64

    from burrow.backends.records import Outcome, OutcomeKind
    from burrow.config import MAX_RESULT_BYTES
    from burrow.supervisor.protocol import MAX_FRAME_BYTES, encode_frame, outcome_frame

    path = write(tmp_path, f"[supervisor]\nmax_result_size = {MAX_RESULT_BYTES}\n")
    assert load_config(path, environ={}).supervisor.max_result_size_bytes == MAX_RESULT_BYTES
    result = b"\xff" * MAX_RESULT_BYTES
    outcome = Outcome(2**62, "owner", 2**31, OutcomeKind.SUCCEEDED, result=result, duration_s=1e300)
    frame = outcome_frame(outcome)
    assert base64.b64decode(frame["result_b64"]) == result
    assert len(encode_frame(frame)) <= MAX_FRAME_BYTES + 4


def test_logging_format_unset_follows_the_terminal() -> None:
    assert LoggingConfig().effective_format(isatty=True) == "console"
    assert LoggingConfig().effective_format(isatty=False) == "json"
    assert LoggingConfig(format="console").effective_format(isatty=False) == "console"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[superviser]\nworkers = 2\n", "[superviser]: unknown section (did you mean [supervisor]?)"),
        (
            "[metrics]\nport = 1\n",
            "[metrics]: unknown section (known: [database], [supervisor], [retry], [logging], [http], [retention], [admin])",
        ),
        ('[http]\nbind = "9464"\n', '[http] bind: must be "host:port" (e.g. "127.0.0.1:9464"), got \'9464\''),
        ('[http]\nbind = "a:70000"\n', '[http] bind: must be "host:port" (e.g. "127.0.0.1:9464"), got \'a:70000\''),
        ('[retention]\nfailed = "0s"\n', '[retention] failed: must be more than 0 (or "off" to keep forever), got \'0s\''),
        ('[retention]\nsucceded = "1d"\n', "[retention] succeded: unknown key (did you mean 'succeeded'?)"),
        ('[admin]\npassword = ""\n', "[admin] password: must be a non-empty string, got ''"),
        ("workers = 2\n", "workers: unknown key outside any section (did you mean [supervisor] workers?)"),
        ("[supervisor]\nworker = 2\n", "[supervisor] worker: unknown key (did you mean 'workers'?)"),
        ("[retry]\nbase_s = 2\n", "[retry] base_s: unknown key (did you mean 'base'?)"),
        (
            '[supervisor]\nheartbeat_interval = "3 parsecs"\n',
            "[supervisor] heartbeat_interval: bad duration '3 parsecs' (use e.g. \"500ms\", \"30s\", \"5m\", \"7d\")",
        ),
        (
            '[supervisor]\nmax_worker_memory = "12 furlongs"\n',
            "[supervisor] max_worker_memory: bad size '12 furlongs' (use e.g. \"512MB\", \"1GiB\", \"100kB\")",
        ),
        (
            '[supervisor]\nmax_result_size = "13MiB"\n',
            "[supervisor] max_result_size: must be at most 12533760 bytes (12 MiB less room for the rest of the"
            " frame: a result crosses the worker's pipe as base64 in one frame of at most 16 MiB), got '13MiB'",
        ),
        ('[supervisor]\nmax_result_size = 0\n', "[supervisor] max_result_size: must be more than 0 bytes, got 0"),
        ("[supervisor]\nworkers = -1\n", "[supervisor] workers: must be between 1 and 256, got -1"),
        ("[supervisor]\nworkers = 257\n", "[supervisor] workers: must be between 1 and 256, got 257"),
        ('[supervisor]\nworkers = "2"\n', "[supervisor] workers: must be an integer, got '2'"),
        ("[supervisor]\nworkers = true\n", "[supervisor] workers: must be an integer, got true"),
        ("[supervisor]\nbatch_size = 0\n", "[supervisor] batch_size: must be between 1 and 10000, got 0"),
        ('[supervisor]\npoll_interval = "0s"\n', "[supervisor] poll_interval: must be more than 0, got '0s'"),
        (
            '[supervisor]\nheartbeat_interval = "5s"\nlease_timeout = "10s"\n',
            "[supervisor] lease_timeout: must be more than twice heartbeat_interval (5s), got 10s",
        ),
        (
            '[supervisor]\nheartbeat_interval = "1s"\nflush_interval = "2s"\n',
            "[supervisor] flush_interval: must not exceed heartbeat_interval (1s), got 2s",
        ),
        ('[logging]\nlevel = "warn"\n', "[logging] level: must be one of debug, info, warning, error, got 'warn' (did you mean 'warning'?)"),
        ('[logging]\nformat = "xml"\n', "[logging] format: must be one of console, json, got 'xml'"),
        ('[supervisor]\napps = ["myapp.jobs"]\n', "[supervisor] apps: bad app 'myapp.jobs' (use \"package.module:attribute\")"),
        ('[supervisor]\napps = ["a:b", "a:b"]\n', "[supervisor] apps: 'a:b' is listed twice"),
        ('[supervisor]\napps = "a:b"\n', "[supervisor] apps: must be a list, e.g. ['a:b']"),
        ('[retry]\nbase = "10s"\nmax = "5s"\n', "[retry] max: must be at least base (10s), got 5s"),
        ("supervisor = 3\n", "[supervisor]: must be a table, got 3"),
        (
            '[database]\ndsn = "sqlite:///a.db"\ndsn_file = "dsn"\n',
            "[database] dsn_file: set either dsn or dsn_file, not both",
        ),
        ('[database]\nschema = "a; drop"\n', "[database] schema: must be a plain SQL identifier (letters, digits, _), got 'a; drop'"),
        ('[database]\n"bad\\nkey" = 1\n', "[database] 'bad\\nkey': unknown key (known: dsn, dsn_file, schema, pooled, listen_dsn)"),
        ("schedule = 5\n", "[[schedule]]: must be an array of tables ([[schedule]] sections), got 5"),
        ('[[supervisor.pools]]\nqueues = ["a"]\n', "[supervisor] pools: #1 workers: missing (how many workers serve a)"),
        ('[[supervisor.pools]]\nqueues = []\nworkers = 1\n', '[supervisor] pools: #1 queues: must be a non-empty list of queue names, e.g. ["reports"], got a list []'),
        (
            '[[supervisor.pools]]\nqueues = ["a"]\nworkers = 1\n[[supervisor.pools]]\nqueues = ["a"]\nworkers = 1\n',
            "[supervisor] pools: #2 queues: 'a' is served by pool 'a' already",
        ),
        ('[[supervisor.pools]]\nqueues = ["a"]\nworkerz = 1\n', "[supervisor] pools: #1 workerz: unknown key (did you mean 'workers'?)"),
        (
            '[[supervisor.pools]]\nqueues = ["a b"]\nworkers = 1\n',
            "[supervisor] pools: #1 queues: invalid queue name 'a b': use letters, digits and _ . : -"
            " (at most 200, not starting with . : -)",
        ),
        ('[[supervisor.pools]]\nqueues = ["a"]\nworkers = 0\n', "[supervisor] pools: #1 workers: must be between 1 and 256, got 0"),
        (
            f'[[supervisor.pools]]\nqueues = ["a"]\nworkers = 1\nname = "{"p" * 201}"\n',
            "[supervisor] pools: #1 name: at most 200 characters, got 201",
        ),
        (
            f'[[supervisor.pools]]\nqueues = ["{"a" * 150}", "{"b" * 150}"]\nworkers = 1\n',
            "[supervisor] pools: #1 name: at most 200 characters (without a name, the queues joined with '+';"
            " give the pool a name), got 301",
        ),
        ('[[schedule]]\ntask = "a.b"\nevry = "5s"\n', "[[schedule]] #1 evry: unknown key (did you mean 'every'?)"),
        ('[[schedule]]\nevery = "5s"\n', "[[schedule]] #1: task: missing (the task name to enqueue)"),
        (
            '[[schedule]]\ntask = "a.b"\ncron = "61 * * * *"\n',
            "[[schedule]] #1 ('a.b'): bad cron expression '61 * * * *': use 5 fields (minute hour day month weekday),"
            " or 6 with seconds first",
        ),
        ('[[schedule]]\ntask = "a.b"\n', "[[schedule]] #1 ('a.b'): a periodic job takes cron= or every=, exactly one"),
        ('[[schedule]]\ntask = "a.b"\nevery = "5 weeks"\n', "[[schedule]] #1 ('a.b'): bad duration '5 weeks' (use e.g. \"500ms\", \"30s\", \"5m\", \"7d\")"),
        (
            '[[schedule]]\ntask = "a.b"\nevery = "5s"\n[[schedule]]\ntask = "a.b"\nevery = "5s"\n',
            "[[schedule]] #2: name 'a.b every 5s' is used twice (give each schedule its own name)",
        ),
    ],
)
def test_bad_input_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert config_error(path) == f"{path}: {expected}"


def test_http_retention_and_admin_sections(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[http]\nbind = "[::1]:9464"\n[retention]\nsucceeded = "2d"\nfailed = "off"\n'
        '[admin]\npassword = "s3cret"\nbind = "0.0.0.0:8080"\n',
    )
    config = load_config(path)
    assert config.http.bind == ("::1", 9464)
    assert (config.retention.succeeded_s, config.retention.failed_s, config.retention.cancelled_s) == (172800.0, None, 86400.0)
    assert (config.admin.bind, config.admin.password) == (("0.0.0.0", 8080), "s3cret")
    assert "s3cret" not in repr(config)
    defaults = load_config(write(tmp_path, "", "empty.toml"))
    assert defaults.http.bind is None and defaults.admin.bind == ("127.0.0.1", 8080)


def test_pools_load_with_their_queues(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[supervisor]\nworkers = 3\n[[supervisor.pools]]\nqueues = ["mail", "sms"]\nworkers = 2\nbatch_size = 1\n'
        '[[supervisor.pools]]\nname = "slow"\nqueues = ["reports"]\nworkers = 1\n',
    )
    supervisor = load_config(path).supervisor
    assert supervisor.workers == 3
    assert [(p.name, p.queues, p.workers, p.batch_size) for p in supervisor.pools] == [
        ("mail+sms", ("mail", "sms"), 2, 1),
        ("slow", ("reports",), 1, None),
    ]


def test_schedules_load_as_periodic_registrations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[schedule]]\ntask = "reports.build"\ncron = "0 3 * * *"\ntimezone = "Europe/Berlin"\nname = "nightly"\n'
        'payload = { kind = "daily" }\n[[schedule]]\ntask = "mail.flush"\nevery = "30s"\n',
    )
    nightly, flush = load_config(path).schedules
    assert nightly.describe() == "nightly (reports.build cron 0 3 * * * (Europe/Berlin))"
    assert (nightly.task, nightly.payload) == ("reports.build", b'{"kind":"daily"}')
    assert flush.describe() == "mail.flush every 30s"


def test_config_error_is_a_burrow_error() -> None:
    assert issubclass(ConfigError, BurrowError)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert config_error(path) == f"{path}: cannot read: No such file or directory"


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[supervisor]\nworkers = 2\nbatch_size 5\n')
    message = config_error(path)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in message


def test_bad_dsn_message_hides_the_password(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn = "postgresql:/user:hunter2@host/db"\n')
    assert config_error(path) == (
        f"{path}: [database] dsn: not a database URL: 'postgresql:***@host/db'"
        " (use e.g. 'sqlite:///burrow.db' or 'postgresql://user@host/db')"
    )


def test_bad_dsn_override_names_its_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    message = config_error(path, dsn_override="host=db password=hunter2")
    assert message.startswith(f"{path}: [database] dsn (from --jobs-database-dsn): not a database URL: ")
    assert "hunter2" not in message
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"BURROW_DATABASE_DSN": "user:hunter2@host"})
    assert info.value.message.startswith(f"{path}: [database] dsn (from BURROW_DATABASE_DSN): ")
    assert "hunter2" not in info.value.message


def test_workers_override_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load_config(path, workers_override=5, environ={}).supervisor.workers == 5
    assert config_error(path, workers_override=0) == (
        f"{path}: [supervisor] workers (from the command line): must be between 1 and 256, got 0"
    )


def test_dsn_precedence_cli_then_env_then_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn = "sqlite:///file.db"\n')
    env = {"BURROW_DATABASE_DSN": "sqlite:///env.db"}
    from_file = f"sqlite:///{tmp_path / 'file.db'}"  # the file's relative path, read against its directory
    assert load_config(path, environ={}).database.dsn == from_file
    assert load_config(path, environ=env).database.dsn == "sqlite:///env.db"  # the caller's, as given
    assert load_config(path, environ={"BURROW_DATABASE_DSN": ""}).database.dsn == from_file
    assert load_config(path, dsn_override="sqlite:///cli.db", environ=env).database.dsn == "sqlite:///cli.db"


def test_a_relative_sqlite_path_is_read_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wherever the command runs from, a file names one database; absolute ones and
    PostgreSQL stay as written."""
    conf = tmp_path / "conf"
    conf.mkdir()
    path = write(conf, '[database]\ndsn = "sqlite:///data/jobs.db?timeout=5"\n')
    monkeypatch.chdir(tmp_path)
    relative = Path("conf") / path.name
    assert load_config(relative, environ={}).database.dsn == f"sqlite:///{conf / 'data' / 'jobs.db'}?timeout=5"
    for dsn in ("sqlite:////srv/jobs.db", "postgresql://u@h/db"):
        assert load_config(write(conf, f'[database]\ndsn = "{dsn}"\n'), environ={}).database.dsn == dsn
    assert load_config(write(conf, ""), environ={}).database.dsn == f"sqlite:///{conf / 'burrow.db'}"  # the default too


def test_database_of_is_connects_order(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn = "postgresql://u@h/db"\nschema = "jobs"\n')
    env = {"BURROW_DATABASE_DSN": "postgresql://e@h/db", "BURROW_DATABASE_SCHEMA": "envs"}
    assert database_of(environ={}) == ("sqlite:///burrow.db", None)
    assert database_of(environ=env) == ("postgresql://e@h/db", "envs")
    assert database_of("sqlite:///x.db", environ=env) == ("sqlite:///x.db", None)
    assert database_of(config=path, environ={}) == ("postgresql://u@h/db", "jobs")
    assert database_of(config=path, environ=env) == ("postgresql://e@h/db", "envs")
    assert database_of("postgresql://a@h/db", schema="s", config=path, environ=env) == ("postgresql://a@h/db", "s")


def test_dsn_file_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text("postgresql://burrow:s3cret@db/jobs\n", encoding="utf-8")
    path = write(tmp_path, '[database]\ndsn_file = "dsn"\n')
    assert load_config(path, environ={}).database.dsn == "postgresql://burrow:s3cret@db/jobs"


def test_dsn_file_relative_to_credentials_directory(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "dsn").write_text("  sqlite:///from-credential.db \n", encoding="utf-8")
    (tmp_path / "dsn").write_text("sqlite:///wrong.db", encoding="utf-8")
    path = write(tmp_path, '[database]\ndsn_file = "dsn"\n')
    config = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert config.database.dsn == f"sqlite:///{tmp_path / 'from-credential.db'}"


def test_dsn_file_missing_or_empty(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn_file = "absent"\n')
    assert config_error(path) == (
        f"{path}: [database] dsn_file: cannot read {str(tmp_path / 'absent')!r}: No such file or directory"
    )
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    path = write(tmp_path, '[database]\ndsn_file = "empty"\n')
    assert config_error(path) == f"{path}: [database] dsn_file: {str(tmp_path / 'empty')!r} is empty"


def test_dsn_file_not_read_when_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn_file = "absent"\n')
    env = {"BURROW_DATABASE_DSN": "sqlite:///env.db"}
    assert load_config(path, environ=env).database.dsn == "sqlite:///env.db"


def test_bad_dsn_from_a_file_never_shows_its_password(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text("postgresql//burrow:s3cret@db/jobs\n", encoding="utf-8")
    path = write(tmp_path, '[database]\ndsn_file = "dsn"\n')
    message = config_error(path)
    assert message.startswith(f"{path}: [database] dsn_file: not a database URL: ")
    assert "s3cret" not in message


def test_database_repr_hides_the_password() -> None:
    text = repr(Config(database=DatabaseConfig(dsn="postgresql://u:secret@h/db")))
    assert "secret" not in text
    assert "postgresql://u:***@h/db" in text


def test_the_schema_variable_overrides_the_files_schema(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\ndsn = "postgresql://u@h/db"\nschema = "jobs"\n')
    assert load_config(path, environ={"BURROW_DATABASE_SCHEMA": "other"}).database.schema == "other"
    assert load_config(path, environ={"BURROW_DATABASE_SCHEMA": ""}).database.schema == "jobs"
    with pytest.raises(ConfigError, match=r"\[database\] schema \(from BURROW_DATABASE_SCHEMA\): must be a plain SQL identifier"):
        load_config(path, environ={"BURROW_DATABASE_SCHEMA": "a b"})


# -- the declaration: one field per key, and everything made from it --


def test_the_readme_table_is_the_declared_one() -> None:
    """The README's table is rendered from the declarations, so it cannot drift from them."""
    text = README.read_text(encoding="utf-8")
    start = text.index("| key | default | meaning |", text.index("### Configuration"))
    table = text[start : text.index("\n\n", start) + 1]
    assert table == markdown_table(Config), "README.md's table is stale: paste `python -m burrow.config --markdown`"


def test_python_m_burrow_config_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "burrow.config", "--markdown"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, markdown_table(Config), "")
    bare = subprocess.run([sys.executable, "-m", "burrow.config"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "--markdown" in bare.stderr


RECORDS = [*sections(Config).values(), PoolConfig, ScheduleConfig]


@pytest.mark.parametrize("record", RECORDS, ids=lambda record: record.__name__)
def test_every_field_of_a_record_declares_one_key(record: type) -> None:
    """Each key once in its table, and a doc that fits one row of the README's table."""
    names = [key.name for _, key in declared(record)]
    assert len(names) == len(set(names))
    for _, key in declared(record):
        assert key.doc and "|" not in key.doc and "\n" not in key.doc, key.name


def _documented_defaults() -> list[tuple[str, str, str, str]]:
    """(section, key, field, the README's default) for each default the README writes as a value."""
    found = []
    for section, record in sections(Config).items():
        for item, key in declared(record):
            text = default_text(item, key)
            if key.tables is None and text.startswith("`"):
                found.append((section, key.name, item.name, text.strip("`")))
    return found


@pytest.mark.parametrize(("section", "key", "attribute", "text"), _documented_defaults())
def test_the_readmes_default_is_what_leaving_the_key_out_gives(
    tmp_path: Path, section: str, key: str, attribute: str, text: str
) -> None:
    """Writing the README's default into the file loads the same value as leaving the key out."""
    written = load_config(write(tmp_path, f"[{section}]\n{key} = {text}\n"), environ={})
    left_out = load_config(write(tmp_path, "", "empty.toml"), environ={})
    assert getattr(getattr(written, section), attribute) == getattr(getattr(left_out, section), attribute)



def test_pooled_and_listen_dsn_are_postgresql_keys(tmp_path: Path) -> None:
    """[database] pooled and listen_dsn (README, "Scaling out"): read, checked, the DSN's password never shown."""
    path = write(tmp_path, '[database]\ndsn = "postgresql://u@bouncer:6432/db"\npooled = true\nlisten_dsn = "postgresql://u:secret@db/db"\n')
    database = load_config(path).database
    assert (database.pooled, database.listen_dsn) == (True, "postgresql://u:secret@db/db")
    assert "secret" not in repr(database)
    assert load_config(write(tmp_path, '[database]\ndsn = "postgresql://u@h/db"\n')).database.pooled is False
    with pytest.raises(ConfigError, match=r"\[database\] pooled: must be true or false"):
        load_config(write(tmp_path, '[database]\ndsn = "postgresql://u@h/db"\npooled = "yes"\n'))
    with pytest.raises(ConfigError, match=r"\[database\] listen_dsn: must be a PostgreSQL URL"):
        load_config(write(tmp_path, '[database]\ndsn = "postgresql://u@h/db"\nlisten_dsn = "sqlite:///x.db"\n'))
    with pytest.raises(ConfigError, match=r"\[database\] pooled: is for PostgreSQL"):
        load_config(write(tmp_path, '[database]\ndsn = "sqlite:///x.db"\npooled = true\n'))
