"""Start ``python -m burrow.supervisor`` as a real process and watch it from outside.

The supervisor writes JSON log lines to a file; tests wait on those events and on
job states in the database, never on bare sleeps. Every supervisor is started in
its own session so teardown can SIGKILL its whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
APP = "tests.supervisor.app:app"

SUPERVISOR_DEFAULTS: Mapping[str, Any] = {
    "apps": [APP],
    "workers": 2,
    "batch_size": 10,
    "heartbeat_interval": "200ms",
    "lease_timeout": "2s",
    "reap_interval": "200ms",
    "shutdown_timeout": "10s",
    "poll_interval": "20ms",
}


def toml_value(value: Any) -> str:
    """JSON strings, numbers and lists of strings are valid TOML too."""
    return json.dumps(value)


def write_config(path: Path, database: Any, **supervisor: Any) -> Path:
    """A jobs.toml for ``database`` (the conftest fixture); None drops a default key."""
    settings = {**SUPERVISOR_DEFAULTS, **supervisor}
    lines = ["[database]", f"dsn = {toml_value(database.dsn)}"]
    if database.schema:
        lines.append(f"schema = {toml_value(database.schema)}")
    lines += ["", "[supervisor]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in settings.items() if value is not None]
    lines += ["", "[retry]", 'base = "50ms"', 'max = "200ms"', "", "[logging]", 'format = "json"', 'level = "info"', ""]
    path.write_text("\n".join(lines))
    return path


def alive(pid: int) -> bool:
    """A zombie has exited: only its parent's wait is missing."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class SupervisorProcess:
    def __init__(self, config: Path, log_path: Path, proc: subprocess.Popen[bytes]) -> None:
        self.config = config
        self.log_path = log_path
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- the log ------------------------------------------------------------------

    def lines(self) -> list[dict[str, Any]]:
        """Every complete JSON line so far (a line being written is left for later)."""
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines(keepends=True):
            if line.startswith("{") and line.endswith("\n"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return records

    def broken_lines(self) -> list[str]:
        """Lines that are not one JSON object: interleaved writes, or a traceback."""
        broken = []
        for line in self.log_path.read_text().splitlines():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                broken.append(line)
        return broken

    def events(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.lines() if r.get("event") == event and all(r.get(k) == v for k, v in match.items())]

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        """wait_until, with the log's tail in the failure message."""
        try:
            return wait_until(predicate, timeout=timeout, interval=0.02, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- supervisor {self.pid} log tail ---\n{self.tail()}") from None

    def wait_event(self, event: str, count: int = 1, timeout: float = 15.0, **match: Any) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            found = self.events(event, **match)
            return found if len(found) >= count else None

        return self.wait(enough, timeout, f"{count} x {event} {match or ''}")

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.wait_event("supervisor_ready", timeout=timeout)

    # -- the process --------------------------------------------------------------

    def send(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor {self.pid} did not exit within {timeout}s\n{self.tail()}") from None

    def workers(self) -> list[psutil.Process]:
        """Live worker processes: the supervisor's only children."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [c for c in children if alive(c.pid)]

    def zombies(self) -> list[int]:
        """Exited workers the supervisor has not reaped (it reaps on every loop turn)."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [c.pid for c in children if _is_zombie(c.pid)]

    def worker_pids(self) -> set[int]:
        """Every worker this supervisor ever logged as started."""
        return {r["worker_pid"] for r in self.events("worker_started")}

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Launcher:
    """Starts supervisors for one test and leaves nothing behind."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[SupervisorProcess] = []

    def start(
        self,
        config: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        stdout: Path | None = None,
        prefix: Sequence[str] = (),
    ) -> SupervisorProcess:
        """``stdout``: a file of its own for the supervisor's stdout (by default it
        shares the log file with stderr, where the JSON log goes). ``prefix``: a command
        that execs the supervisor (tests/scaleout: on a simulated host)."""
        name = name or f"supervisor{len(self.started)}"
        log_path = self.tmp_path / f"{name}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("BURROW_", "NOTIFY_SOCKET"))}
        environ.update(env or {})
        with log_path.open("wb") as stderr, (stdout.open("wb") if stdout else contextlib.nullcontext(stderr)) as out:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "burrow.supervisor", "-c", str(config), *args],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=stderr,
                env=environ,
                start_new_session=True,
            )
        supervisor = SupervisorProcess(config, log_path, proc)
        self.started.append(supervisor)
        return supervisor

    def cleanup(self) -> None:
        """SIGKILL every group, reap, then prove no process of this test survives."""
        try:
            for supervisor in self.started:
                if supervisor.proc.poll() is None:
                    supervisor.wait(lambda s=supervisor: not s.zombies(), 2, "no unreaped workers")
        finally:
            for supervisor in self.started:
                supervisor.kill_group()
        for supervisor in self.started:
            supervisor.proc.wait(10)
        worker_pids = {pid for s in self.started for pid in s.worker_pids()}
        # Workers orphaned by a killed supervisor were re-parented to us (a subreaper).
        wait_until(lambda: not [p for p in worker_pids if alive(p)], timeout=10, what="workers to exit")
        wait_until(lambda: all(_reaped(pid) for pid in worker_pids), timeout=10, what="orphaned workers to be reaped")
        for supervisor in self.started:
            broken = supervisor.broken_lines()
            assert not broken, f"log lines of supervisor {supervisor.pid} that are not JSON: {broken[:5]}"
        leftovers = survivors(self.tmp_path)
        assert not leftovers, f"processes left behind: {leftovers}"
        zombies = [p for p in worker_pids if _is_zombie(p)]
        assert not zombies, f"zombie workers left behind: {zombies}"


def _reaped(pid: int) -> bool:
    """Reap ``pid`` if it is our zombie; True once it is nobody's we can wait for.

    A killed multi-threaded worker shows as a zombie before its last thread is
    gone, and cannot be waited for until then: hence the caller's retry.
    """
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def survivors(marker: Path) -> list[tuple[int, str]]:
    """Processes whose command line mentions ``marker`` (the test's tmp directory)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if str(marker) in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append((process.info["pid"], cmdline))
    return found


def run_cli(args: Sequence[str], *, timeout: float = 60.0, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    environ.update(env or {})
    return subprocess.run(
        list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout, env=environ, stdin=subprocess.DEVNULL
    )
