"""SQLite specifics (not run per backend): relative and absolute paths, a missing
directory, :memory: and schema refused, private database files in WAL mode."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import burrow
from burrow.job import JobState
from burrow.errors import BackendError


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with burrow.connect("sqlite:///relative.db") as q:
        job_id = q.enqueue("rel.task", {})
    assert (tmp_path / "relative.db").is_file()
    with burrow.connect(f"sqlite:///{tmp_path / 'relative.db'}") as q:
        assert q.job(job_id).task == "rel.task"


def test_sqlite_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    dsn = f"sqlite:///{path}"
    assert dsn.startswith("sqlite:////")
    with burrow.connect(dsn) as q:
        q.enqueue("abs.task", {})
        assert q.backend.counts()[JobState.QUEUED] == 1
    assert path.is_file()


def test_sqlite_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(BackendError) as raised:
        burrow.connect(f"sqlite:///{missing / 'jobs.db'}")
    assert str(missing) in str(raised.value)
    assert not missing.exists()


def test_sqlite_refuses_memory_and_schema(tmp_path: Path) -> None:
    with pytest.raises(BackendError):
        burrow.connect("sqlite:///:memory:")
    with pytest.raises(BackendError):
        burrow.connect(f"sqlite:///{tmp_path / 'x.db'}", schema="nope")


def test_sqlite_files_are_private_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    with umask(0o022), burrow.connect(f"sqlite:///{path}") as q:
        q.handle("priv.task", lambda data: None)
        q.enqueue("priv.task", {})
        assert q.drain() == 1
        files = [path] + [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        assert Path(f"{path}-wal") in files
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
