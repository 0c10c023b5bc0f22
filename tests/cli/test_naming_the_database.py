"""One way to name the database (issue 28, point 3): ``burrow.connect()``, the CLI, the
admin and the supervisor read the same sources in the same order, and a relative SQLite
path in a config file is read against the file's directory, wherever the command runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import burrow
from burrow.errors import ConfigError
from burrow.admin.server import main as admin_main
from tests.conftest import Database
from tests.supervisor.helpers import REPO

sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m burrow.cli`` from ``cwd``, burrow importable from the checkout."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH")) if p)
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "burrow.cli", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60
    )


def test_connect_reads_the_environment_then_the_default(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in database.env.items():
        monkeypatch.setenv(name, value)
    with burrow.connect() as q:  # BURROW_DATABASE_DSN (and _SCHEMA): the fixture's database
        job_id = q.enqueue("t.env", {"n": 1})
    with database.connect() as q:
        assert q.job(job_id).task == "t.env"
    monkeypatch.delenv("BURROW_DATABASE_DSN")
    monkeypatch.delenv("BURROW_DATABASE_SCHEMA", raising=False)
    monkeypatch.chdir(tmp_path)
    with burrow.connect() as q:  # nothing set: ./burrow.db, as before
        q.enqueue("t.default", {})
    assert (tmp_path / "burrow.db").exists()


def test_connect_reads_a_config_files_database_section(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    if database.kind == "sqlite":
        text = '[database]\ndsn = "sqlite:///jobs.db"\n'  # relative: next to the file
        expected = conf / "jobs.db"
    else:
        (conf / "dsn").write_text(database.dsn)
        text = f'[database]\ndsn_file = "dsn"\nschema = "{database.schema}"\n'
    (conf / "jobs.toml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("BURROW_DATABASE_DSN", raising=False)
    monkeypatch.delenv("BURROW_DATABASE_SCHEMA", raising=False)
    with burrow.connect(config=conf / "jobs.toml") as q:
        job_id = q.enqueue("t.conf", {})
    if database.kind == "sqlite":
        assert expected.exists() and not (elsewhere / "jobs.db").exists()
        database = Database("sqlite", f"sqlite:///{expected}", None)
    with database.connect() as q:
        assert q.job(job_id).task == "t.conf"
    with pytest.raises(ConfigError, match="nope"):
        (conf / "bad.toml").write_text("[database]\nnope = 1\n")
        burrow.connect(config=str(conf / "bad.toml"))


@sqlite_only
def test_the_cli_reads_a_relative_path_against_the_config_file(database: Database, tmp_path: Path) -> None:
    """From another directory: the hint names the file (a bare ``burrow migrate`` would
    create another database there), the error the absolute path; migrate then works."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "jobs.toml").write_text('[database]\ndsn = "sqlite:///jobs.db"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = run(["jobs", "list", "-c", "../conf/jobs.toml"], cwd=elsewhere)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"burrow: database sqlite:///{conf / 'jobs.db'}: does not exist:"
        f" run `burrow migrate -c {conf / 'jobs.toml'}` to create it\n"
    )
    assert run(["migrate", "-c", "../conf/jobs.toml"], cwd=elsewhere).returncode == 0
    assert (conf / "jobs.db").exists() and not (elsewhere / "jobs.db").exists()
    assert run(["jobs", "list", "-c", "conf/jobs.toml"], cwd=tmp_path).stdout == "no jobs\n"
    by_dsn = run(["status", "--dsn", "sqlite:///none.db"], cwd=elsewhere)
    assert by_dsn.stderr == (
        f"burrow: database sqlite:///{elsewhere / 'none.db'}: does not exist:"
        f" run `burrow migrate --dsn sqlite:///{elsewhere / 'none.db'}` to create it\n"
    )


@sqlite_only
def test_the_supervisor_check_reads_a_relative_path_against_the_config_file(database: Database, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "jobs.toml").write_text('[database]\ndsn = "sqlite:///jobs.db"\n[supervisor]\napps = ["burrow.demo:app"]\n')
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    environ["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "burrow.supervisor", "-c", "conf/jobs.toml", "--check"],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"database: sqlite:///{conf / 'jobs.db'}\n" in done.stdout


def test_the_admin_honours_the_environment(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without -c or --dsn, BURROW_DATABASE_DSN (and _SCHEMA) name the database, as for
    every other command; here one not migrated yet, so it is refused naming it."""
    monkeypatch.setenv("BURROW_DATABASE_DSN", database.dsn)
    if database.schema:
        monkeypatch.setenv("BURROW_DATABASE_SCHEMA", database.schema)
    assert admin_main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("burrow admin: database ") and "migrate it first" in err
    if database.schema:
        assert f"--schema {database.schema}" in err
    monkeypatch.delenv("BURROW_DATABASE_DSN")
    with pytest.raises(SystemExit):
        admin_main([])
    assert "BURROW_DATABASE_DSN" in capsys.readouterr().err
