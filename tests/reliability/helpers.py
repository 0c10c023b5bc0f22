"""Shared pieces of the reliability battery: sizes, clocks, configs, a private PostgreSQL.

Sizes: ``BURROW_RELIABILITY=full`` runs the issue's sizes (2,000 jobs and 50
worker kills, 60,000 jobs for concurrent claimers...); anything else runs the
quick size CI uses, about a tenth.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.supervisor.helpers import write_config

FULL = os.environ.get("BURROW_RELIABILITY", "").lower() == "full"
APP = "tests.reliability.app:app"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# In /usr/sbin, which a minimal PATH (cron, env -i, some CI runners) leaves out.
RUNUSER = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "runuser"

# Test clocks: short enough to watch leases lapse, long enough for a loaded CI box.
HEARTBEAT_S = 0.2
LEASE_S = 2.0
REAP_S = 0.2
GRACE_S = REAP_S + HEARTBEAT_S


def size(full: int, quick: int) -> int:
    return full if FULL else quick


def timeout(full: float, quick: float) -> pytest.MarkDecorator:
    """A pytest-timeout for the size that runs."""
    return pytest.mark.timeout(full if FULL else quick)


def reliability_config(path: Path, database: Any, **supervisor: Any) -> Path:
    settings: dict[str, Any] = {
        "apps": [APP],
        "heartbeat_interval": f"{int(HEARTBEAT_S * 1000)}ms",
        "lease_timeout": f"{LEASE_S:g}s",
        "reap_interval": f"{int(REAP_S * 1000)}ms",
    }
    settings.update(supervisor)
    return write_config(path, database, **settings)


# -- a private PostgreSQL cluster -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateCluster:
    """A throwaway PostgreSQL 15 cluster this test session may stop, restart and break."""

    directory: Path
    port: int

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [RUNUSER, "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
             str(self.directory / "log"), "-w", "-t", "30", "-o", options, *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)

    def terminate_all(self) -> int:
        """pg_terminate_backend on every client connection but this one; how many."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            ).fetchall()
        return len(rows)


def accepting(cluster: PrivateCluster) -> Any:
    def check() -> bool:
        try:
            cluster.admin().close()
            return True
        except psycopg.OperationalError:
            return False

    return check


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def held_by(q: Any, pids: set[int]) -> list[int]:
    """Ids of jobs ``running`` under an owner of one of these worker pids.

    An owner is ``host:pid:role:token`` (burrow.queue.new_owner), so the pid tells
    which process holds a job; read straight from the table, as an operator would.
    """
    import sqlalchemy as sa

    from burrow.backends.schema import jobs

    statement = sa.select(jobs.c.id, jobs.c.owner).where(jobs.c.state == "running")
    with q.backend._engine.connect() as conn:
        rows = conn.execute(statement).all()
    return [row.id for row in rows if row.owner and int(row.owner.split(":")[1]) in pids]


def succeeded(q: Any) -> int:
    from burrow.job import JobState

    return q.backend.counts()[JobState.SUCCEEDED]


class NotifyListener:
    """The systemd end of sd_notify, with the arrival time of every datagram."""

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            at = time.time()
            self.messages.append((at, dict(line.split("=", 1) for line in data.decode().splitlines())))

    def times(self, key: str, value: str | None = None) -> list[float]:
        return [at for at, m in list(self.messages) if key in m and (value is None or m[key] == value)]

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()
