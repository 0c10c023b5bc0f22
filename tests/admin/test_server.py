"""``burrow admin`` (burrow.admin.server.main): what it refuses, in one line with
exit status 2, and a real run behind basic auth."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import burrow
from burrow.admin.server import is_loopback, main
from tests.conftest import POSTGRES_DSN
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]


def refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run main(argv), which must refuse with exit 2; its one line on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("burrow admin: ")
    return err


@pytest.fixture
def migrated(tmp_path: Path) -> str:
    dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
    burrow.connect(dsn).close()
    return dsn


@pytest.mark.parametrize("bind", ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080", "admin.example.com:8080"])
def test_a_public_bind_without_a_password_is_refused(capsys: pytest.CaptureFixture[str], migrated: str, bind: str) -> None:
    err = refusal(capsys, ["--dsn", migrated, "--bind", bind])
    assert "not a loopback address, without a password" in err


def test_a_public_bind_from_the_config_file_is_refused_too(
    capsys: pytest.CaptureFixture[str], migrated: str, tmp_path: Path
) -> None:
    conf = tmp_path / "jobs.toml"
    conf.write_text(f'[database]\ndsn = "{migrated}"\n[admin]\nbind = "0.0.0.0:8080"\n')
    assert "not a loopback address" in refusal(capsys, ["-c", str(conf)])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.2", False), ("admin.internal", False)],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_database_that_is_not_migrated_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = refusal(capsys, ["--dsn", f"sqlite:///{tmp_path / 'none.db'}"])
    assert "does not exist yet: migrate it first" in err
    assert not (tmp_path / "none.db").exists()


def test_a_postgres_schema_behind_is_refused_without_showing_the_password(
    capsys: pytest.CaptureFixture[str], postgres_schema: str
) -> None:
    dsn = POSTGRES_DSN.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@")
    err = refusal(capsys, ["--dsn", dsn, "--schema", postgres_schema])
    assert "is at schema version 0, this burrow needs" in err
    assert "s3cret" not in err


def test_an_unreachable_database_and_bad_input_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "Connection refused" in refusal(capsys, ["--dsn", "postgresql://u:s3cret@127.0.0.1:1/db"])
    assert "not a database URL burrow can read" in refusal(capsys, ["--dsn", "postgresql://u:s3cret@host:port/db"])
    assert "--bind" in refusal(capsys, ["--dsn", "sqlite:///x.db", "--bind", "8080"])
    assert "s3cret" not in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(migrated: str, tmp_path: Path) -> Iterator[str]:
    """``burrow admin`` in a child process with a password; its base URL."""
    port = free_port()
    conf = tmp_path / "jobs.toml"
    conf.write_text(f'[database]\ndsn = "{migrated}"\n[admin]\npassword = "open sesame"\n')
    env = {k: v for k, v in os.environ.items() if k != "BURROW_DATABASE_DSN"}
    child = subprocess.Popen(
        [sys.executable, "-m", "burrow.admin.server", "-c", str(conf), "--bind", f"127.0.0.1:{port}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout=20, interval=0.05, what="burrow admin to serve")
        yield base
    finally:
        child.terminate()
        child.wait(timeout=10)
        if child.stderr:
            child.stderr.close()


def test_with_a_password_every_page_needs_basic_auth(served: str) -> None:
    assert httpx.get(served + "/", timeout=5).status_code == 401
    token = base64.b64encode(b"ops:open sesame").decode()
    page = httpx.get(served + "/", headers={"authorization": f"Basic {token}"}, timeout=5)
    assert page.status_code == 200 and "burrow" in page.text
    assert "server" not in page.headers
    assert httpx.get(served + "/readyz", timeout=5).text == "ok"
