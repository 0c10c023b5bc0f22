"""The command line: --check prints the plan and touches nothing; bad input is one line, exit 2."""

from __future__ import annotations

import signal
import sqlite3
import sys
import sysconfig
from pathlib import Path

import pytest

from burrow.backends.migrations import LATEST_VERSION
from burrow.job import JobState
from burrow.queue import JobQueue
from tests.supervisor.app import TASKS, Numbers, square_task
from tests.supervisor.helpers import REPO, Launcher, run_cli, write_config

SUPERVISOR = [sys.executable, "-m", "burrow.supervisor"]
UNREACHABLE = "postgresql://postgres:s3cret@127.0.0.1:1/x"


def _tables(database, postgres_admin) -> list[str]:
    if database.schema:
        rows = postgres_admin.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (database.schema,)
        ).fetchall()
        return [r[0] for r in rows]
    path = database.dsn.removeprefix("sqlite:///")
    if not Path(path).exists():
        return []
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]


def _console_script() -> str:
    script = Path(sysconfig.get_path("scripts")) / "burrow"
    assert script.exists(), f"console script not installed at {script}"
    return str(script)


@pytest.mark.parametrize("command", ["module", "console_script"])
def test_check_prints_the_plan_and_migrates_nothing(
    database, postgres_admin, tmp_path: Path, command: str
) -> None:
    config = write_config(tmp_path / "jobs.toml", database, workers=3)
    argv = SUPERVISOR if command == "module" else [_console_script(), "supervisor"]
    done = run_cli([*argv, "--check", "-c", str(config)])
    assert done.returncode == 0, done.stderr
    for task in TASKS:
        assert task.name in done.stdout
    assert "workers:  3" in done.stdout
    assert "timeout 0.5s" in done.stdout  # sv.slow's with_timeout
    assert _tables(database, postgres_admin) == []
    if database.kind == "sqlite":
        assert not Path(database.dsn.removeprefix("sqlite:///")).exists(), "--check created the SQLite file"
        assert "schema:   does not exist yet: it will be created" in done.stdout
    else:
        assert "schema:   version 0: start will migrate it to version" in done.stdout


def test_check_of_the_shipped_config_on_a_fresh_database_changes_nothing(database, postgres_admin, tmp_path: Path) -> None:
    """conf/jobs.toml as a new user runs it: the demo app registers without side effects."""
    config = REPO / "conf" / "jobs.toml"
    if database.schema:  # the shipped file names no schema: point a copy at this test's
        config = tmp_path / "jobs.toml"
        shipped = (REPO / "conf" / "jobs.toml").read_text()
        config.write_text(shipped.replace("[database]", f'[database]\nschema = "{database.schema}"', 1))
    done = run_cli([*SUPERVISOR, "--check", "-c", str(config), "--jobs-database-dsn", database.dsn])
    assert done.returncode == 0, done.stderr
    assert "demo.produce every 2s  (next slot" in done.stdout
    assert _tables(database, postgres_admin) == []
    if database.kind == "sqlite":
        assert not Path(database.dsn.removeprefix("sqlite:///")).exists()


def test_check_reads_an_existing_schema_without_changing_it(database, postgres_admin, tmp_path: Path) -> None:
    database.connect().close()  # migrated
    config = write_config(tmp_path / "jobs.toml", database)
    before = _tables(database, postgres_admin)
    done = run_cli([*SUPERVISOR, "--check", "-c", str(config)])
    assert done.returncode == 0, done.stderr
    assert f"schema:   version {LATEST_VERSION}, up to date" in done.stdout
    assert _tables(database, postgres_admin) == before


def _bad_config(tmp_path: Path, database, case: str) -> tuple[Path, list[str], str]:
    """(config, extra args, what the error line must name)."""
    config = tmp_path / "jobs.toml"
    if case == "unknown_key":
        write_config(config, database, workerz=2)
        return config, [], "[supervisor] workerz: unknown key"
    if case == "bad_duration":
        write_config(config, database, heartbeat_interval="2 fortnights")
        return config, [], "[supervisor] heartbeat_interval: bad duration"
    if case == "missing_app":
        write_config(config, database, apps=["tests.supervisor.no_such_app:app"])
        return config, [], "[supervisor] apps: app 'tests.supervisor.no_such_app:app': cannot import"
    if case == "broken_app":
        write_config(config, database, apps=["tests.supervisor.broken_app:app"])
        return config, [], "RuntimeError: cannot start: SETTING_X is not set"
    if case == "unreachable_database":
        write_config(config, database)
        return config, ["--jobs-database-dsn", UNREACHABLE], "[database] dsn"
    raise AssertionError(case)


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
@pytest.mark.parametrize("case", ["unknown_key", "bad_duration", "missing_app", "broken_app", "unreachable_database"])
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, case: str, check: bool) -> None:
    class Sqlite:
        dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
        schema = None

    config, extra, named = _bad_config(tmp_path, Sqlite, case)
    done = run_cli([*SUPERVISOR, "-c", str(config), *extra, *(["--check"] if check else [])])
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert named in lines[0]
    assert lines[0].startswith(f"burrow: {config}: ")
    assert "s3cret" not in done.stderr + done.stdout
    assert done.stdout == ""
    assert not (tmp_path / "jobs.db").exists() or case != "unreachable_database"


def test_unreachable_database_from_the_environment_hides_the_password(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text('[supervisor]\napps = ["tests.supervisor.app:app"]\n')
    done = run_cli([*SUPERVISOR, "-c", str(config)], env={"BURROW_DATABASE_DSN": UNREACHABLE})
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "[database] dsn" in done.stderr
    assert "s3cret" not in done.stderr and "***" in done.stderr


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_password_never_logged(database, queue: JobQueue, launcher: Launcher, tmp_path: Path) -> None:
    """PostgreSQL here trusts any password, so a DSN with one works and must stay hidden."""
    secret_dsn = database.dsn.replace("postgres@", "postgres:s3cret@", 1)
    assert "s3cret" in secret_dsn

    class Secret:
        dsn = secret_dsn
        schema = database.schema

    config = write_config(tmp_path / "jobs.toml", Secret)
    checked = run_cli([*SUPERVISOR, "--check", "-c", str(config)])
    assert checked.returncode == 0, checked.stderr
    assert "s3cret" not in checked.stdout + checked.stderr and "postgres:***@" in checked.stdout

    supervisor = launcher.start(config)
    supervisor.wait_ready()
    job_id = square_task.enqueue(queue, Numbers(2, 0))
    supervisor.wait(lambda: queue.job(job_id).state is JobState.SUCCEEDED, 15, "a job")
    Secret.dsn = secret_dsn.replace("s3cret", "s3cret-new")
    write_config(config, Secret)
    supervisor.send(signal.SIGHUP)
    warning = supervisor.wait_event("reload_ignored_database")[0]
    supervisor.wait_event("supervisor_reloaded")
    supervisor.send(signal.SIGTERM)
    assert supervisor.wait_exit() == 0
    assert "s3cret" not in supervisor.log_path.read_text()
    assert warning["level"] == "warning"


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_check_decodes_schedule_payloads_into_their_tasks_type(database, tmp_path: Path) -> None:
    """A [[schedule]] whose payload would fail every run (a str where Numbers says int) is
    one line naming the schedule and the field, exit 2; a right one passes."""
    config = write_config(tmp_path / "jobs.toml", database, apps=["burrow.demo:app"])
    good = '\n[[schedule]]\nname = "sums"\ntask = "demo.add"\nevery = "30s"\npayload = { a = 1, b = 2 }\n'
    bad = good.replace('"sums"', '"broken sums"').replace("a = 1", 'a = "1"')
    config.write_text(config.read_text() + good + bad)
    done = run_cli([*SUPERVISOR, "--check", "-c", str(config)])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"burrow: {config}: [[schedule]] 'broken sums': payload does not decode into task 'demo.add''s payload type,"
        " every run would fail: $.a: expected int, got str\n"
    )
    config.write_text(config.read_text().replace(bad, ""))
    done = run_cli([*SUPERVISOR, "--check", "-c", str(config)])
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_check_warns_of_a_pool_no_task_uses(database, tmp_path: Path) -> None:
    config = write_config(tmp_path / "jobs.toml", database, apps=["burrow.demo:app"], workers=1)
    config.write_text(
        config.read_text()
        + '\n[[supervisor.pools]]\nqueues = ["reports", "exports"]\nworkers = 1\n'
        + '\n[[supervisor.pools]]\nqueues = ["default"]\nname = "main"\nworkers = 2\n'
    )
    done = run_cli([*SUPERVISOR, "--check", "-c", str(config)])
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: pool 'reports+exports': no registered task uses its queues (reports, exports);"
        " its workers get only jobs enqueued there with queue="
    ]
    assert "  default  1 worker, batch_size" in done.stdout and "  main  2 workers, batch_size" in done.stdout
