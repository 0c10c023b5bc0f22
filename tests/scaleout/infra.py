"""Real infrastructure for the scale-out tests and benchmarks: PgBouncer, and hosts.

:class:`PgBouncer` starts Debian's ``pgbouncer`` on a free port in front of the test
PostgreSQL (trust auth, a user list of the test's role) and stops it; each of its
databases has a pool mode of its own, so one process serves a transaction-mode
database (``dsn()``) and, where a test wants LISTEN through it, a session-mode one
(``dsn(session=True)``).

:class:`Hosts` makes k "hosts": network namespaces, each joined to the root namespace
by a veth pair (10.<n>.<i>.1 outside, .2 inside, n drawn per group so that groups of
parallel tests do not share addresses) with a ``tc netem`` delay, the
PostgreSQL of the tests reached through a PgBouncer listening on the outside ends
(the server listens on 127.0.0.1 only, which no other namespace can reach). A
command runs "on" host i under ``ip netns exec`` and ``unshare --uts`` with a host
name of its own, so process rows tell the hosts apart. :meth:`Hosts.cut` takes a
host's link down (its processes live on, unreachable); everything is removed by
:meth:`Hosts.close`, which the fixtures always call.

Both skip only where the machine refuses them (no pgbouncer, no CAP_NET_ADMIN); under
``CI=true`` a refusal fails instead: CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
import sqlalchemy as sa

PGBOUNCER = "/usr/sbin/pgbouncer"


class Refused(Exception):
    """The machine will not do it (no binary, no privilege): the caller skips or fails."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """One pgbouncer process in front of ``target`` (a libpq URL of the test PostgreSQL)."""

    def __init__(
        self,
        workdir: Path | None,
        target: str,
        *,
        listen: Sequence[str] = ("127.0.0.1",),
        pool_size: int = 20,
        ignore_startup_parameters: Sequence[str] = ("extra_float_digits",),
    ) -> None:
        if not os.path.exists(PGBOUNCER):
            raise Refused(f"{PGBOUNCER} is not installed (apt-get install pgbouncer)")
        url = sa.engine.make_url(target)
        self.user = url.username or "postgres"
        self.database = url.database or "postgres"
        self.server = (url.host or "127.0.0.1", url.port or 5432)
        self.listen = tuple(listen)
        self.port = free_port()
        # Its own directory under /tmp, not the caller's: pgbouncer runs as postgres
        # (it refuses root), which must read its files and write its log there.
        del workdir
        self.workdir = workdir = Path(tempfile.mkdtemp(prefix="burrow-pgbouncer-"))
        server = f"host={self.server[0]} port={self.server[1]} dbname={self.database}"
        (workdir / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"{self.database} = {server} pool_mode=transaction",
                    f"{self.database}_session = {server} pool_mode=session",
                    "[pgbouncer]",
                    f"listen_addr = {','.join(self.listen)}",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {workdir / 'users.txt'}",
                    "pool_mode = transaction",
                    f"default_pool_size = {pool_size}",
                    "max_client_conn = 1000",
                    f"ignore_startup_parameters = {','.join(ignore_startup_parameters)}",
                    "log_connections = 0",
                    "log_disconnections = 0",
                    f"logfile = {workdir / 'pgbouncer.log'}",
                    "",
                ]
            )
        )
        (workdir / "users.txt").write_text(f'"{self.user}" ""\n')
        os.chmod(workdir, 0o777)  # pgbouncer refuses to run as root: it runs as postgres, and logs here
        command = [PGBOUNCER, str(workdir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise

    def _wait_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"pgbouncer exited at start: {stderr.strip()} {self.log_tail()}")
            try:
                with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not answer within {timeout}s: {self.log_tail()}") from None
                time.sleep(0.05)

    def dsn(self, *, session: bool = False, host: str | None = None, port: int | None = None) -> str:
        """Its transaction-mode database (or the session-mode one), on ``host`` (the first listen
        address) and ``port`` (its own; another for a proxy in front of it)."""
        name = f"{self.database}_session" if session else self.database
        return f"postgresql://{self.user}@{host or self.listen[0]}:{port or self.port}/{name}"

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.workdir / "pgbouncer.log").read_text().splitlines()[-n:])
        return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


class Hosts:
    """k network namespaces with veth links to the root namespace (see the module)."""

    def __init__(self, k: int, *, delay_ms: float = 1.0) -> None:
        if shutil.which("ip") is None:
            raise Refused("no `ip` command (iproute2)")
        tag = secrets.token_hex(3)
        self.subnet = f"10.{secrets.choice(range(64, 250))}"
        self.names = [f"burrow-{tag}-{i}" for i in range(k)]
        self._links = [f"bw{tag}{i}" for i in range(k)]
        self.delay_ms = delay_ms
        self.netem = True
        self._made: list[str] = []
        try:
            for i, name in enumerate(self.names):
                self._add(i, name)
        except BaseException:
            self.close()
            raise

    def _add(self, i: int, name: str) -> None:
        done = _ip("netns", "add", name, check=False)
        if done.returncode != 0:
            raise Refused(f"ip netns add refused: {done.stderr.strip()}")
        self._made.append(name)
        outside, inside = self._links[i] + "o", self._links[i] + "i"
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", f"{self.outside(i)}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", name, "addr", "add", f"{self.subnet}.{i + 1}.2/30", "dev", inside)
        _ip("-n", name, "link", "set", inside, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        for args in (["dev", outside], ["dev", inside]):
            prefix = ["ip", "netns", "exec", name] if args[1] == inside else []
            tc = subprocess.run(
                [*prefix, "tc", "qdisc", "add", *args, "root", "netem", "delay", f"{self.delay_ms}ms"],
                capture_output=True, text=True, timeout=10,
            )
            if tc.returncode != 0:
                self.netem = False  # no sch_netem here: the link has no added delay

    def outside(self, i: int) -> str:
        """The root namespace's end of host i's link: where it reaches the database."""
        return f"{self.subnet}.{i + 1}.1"

    def command(self, i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run on host i, with host name ``host<i>``."""
        script = f'hostname host{i} && exec "$@"'
        return ["ip", "netns", "exec", self.names[i], "unshare", "--uts", "sh", "-c", script, "sh", *argv]

    def cut(self, i: int) -> None:
        """Host i vanishes from the network: its link goes down, its processes run on."""
        _ip("link", "set", self._links[i] + "o", "down")

    def close(self) -> None:
        for i, name in enumerate(self._made):
            _ip("link", "del", self._links[i] + "o", check=False)
            _ip("netns", "del", name, check=False)
        self._made = []
