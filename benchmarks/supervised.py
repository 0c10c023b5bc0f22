"""The real supervisor, started as operators start it: ``python -m burrow.supervisor``.

Each run writes a config file (the benchmark app, W workers, batch size B,
logging at "warning"), points ``NOTIFY_SOCKET`` at a datagram socket of ours so
the supervisor's own sd_notify ``READY=1`` says when its workers are up, and
stops it with SIGTERM as systemd would. It runs the checkout's burrow, or an
earlier release's (a :class:`~benchmarks.versions.Version`); either way the app
is imported from a directory of its own (see benchmarks/versions.py).

Drain timing comes from the database, not from the harness's polling: the span
from the first claim (``min(started_at)``) to the last stored result
(``max(finished_at)``), so neither interpreter start-up nor the 20 ms completion
poll is counted.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import psutil

from benchmarks import cpu
from benchmarks.target import Target
from benchmarks.versions import APP_REF, REPO_ROOT, Version, app_dir

__all__ = ["REPO_ROOT", "DrainResult", "SupervisorFailed", "SupervisorProcess", "TreeMemory", "drain", "fresh_drain",
           "wait_finished"]


class SupervisorFailed(RuntimeError):
    pass


@dataclass
class TreeMemory:
    rss: int  # sum over supervisor + workers (shared pages counted in each)
    pss: int  # proportional set size: shared pages split between sharers
    uss: int  # pages only one process has
    processes: int
    per_process_rss: list[int]


class SupervisorProcess:
    _count = 0
    # How the supervisor is started; a profiling or patching experiment may swap this.
    command = ("-m", "burrow.supervisor")

    def __init__(self, target: Target, workers: int, batch_size: int, *, env: dict[str, str] | None = None,
                 config: str = "", version: Version | None = None, dsn: str | None = None,
                 log_level: str = "warning") -> None:
        SupervisorProcess._count += 1
        self.name = f"sup{SupervisorProcess._count}"
        self.target = target
        self.workers = workers
        self.batch_size = batch_size
        self.dir = Path(target.workdir) / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "jobs.toml"
        self.log = self.dir / "supervisor.log"
        self.extra_env = env or {}
        self.extra_config = config  # TOML appended to the generated file (e.g. a [retention] table)
        self.version = version or Version.checkout()
        self.dsn = dsn or target.dsn  # another address of the same database (a proxy's)
        self.log_level = log_level  # "warning": no line per job; burrow's default, "info", writes two
        self.app = app_dir(self.dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: socket.socket | None = None
        self.popen_time = 0.0  # time.time() just before the process was started

    def _write_config(self) -> None:
        schema = f'schema = "{self.target.schema}"\n' if self.target.schema else ""
        self.config.write_text(
            "[database]\n"
            f'dsn = "{self.dsn}"\n'
            f"{schema}"
            "[supervisor]\n"
            f'apps = ["{APP_REF}"]\n'
            f"workers = {self.workers}\n"
            f"batch_size = {self.batch_size}\n"
            'heartbeat_interval = "2s"\n'
            'lease_timeout = "30s"\n'
            'shutdown_timeout = "10s"\n'
            "[logging]\n"
            'format = "json"\n'
            f'level = "{self.log_level}"\n'
            f"{self.extra_config}"
        )

    def launch(self) -> tuple[list[str], dict[str, str], Path]:
        """(argv, environment, working directory) of the supervisor; writes its config.

        The working directory is the app's own: ``python -m`` puts it first on
        ``sys.path``, and it holds no burrow to shadow the version's.
        """
        self._write_config()
        env = self.version.env(self.app)
        env.update(self.extra_env)
        argv = [self.version.python, *self.command, "-c", str(self.config), "--workers", str(self.workers)]
        return argv, env, self.app

    def start(self, timeout_s: float = 60.0) -> None:
        argv, env, cwd = self.launch()
        address = str(self.dir / "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(address)
        env["NOTIFY_SOCKET"] = address
        with self.log.open("ab") as log:
            self.popen_time = time.time()
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if self.proc.poll() is not None:
                raise SupervisorFailed(f"supervisor exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            if remaining <= 0:
                self.stop()
                raise SupervisorFailed(f"supervisor not ready after {timeout_s:g}s:\n{self.log_tail()}")
            self.notify.settimeout(min(remaining, 0.5))
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in data.split(b"\n"):
                return

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise SupervisorFailed(f"supervisor died (exit {self.proc and self.proc.returncode}):\n{self.log_tail()}")

    def memory(self) -> TreeMemory:
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        procs = [root, *root.children(recursive=True)]
        infos = [p.memory_full_info() for p in procs]
        return TreeMemory(
            rss=sum(i.rss for i in infos),
            pss=sum(getattr(i, "pss", i.rss) for i in infos),
            uss=sum(i.uss for i in infos),
            processes=len(procs),
            per_process_rss=[i.rss for i in infos],
        )

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        return self.proc.returncode if self.proc is not None else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def warnings(self) -> int:
        """Log lines at warning or above (the benchmark logs nothing else)."""
        try:
            return sum(1 for line in self.log.read_text(errors="replace").splitlines() if line.strip())
        except OSError:
            return 0

    def __enter__(self) -> SupervisorProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_finished(target: Target, sup: SupervisorProcess, timeout_s: float, poll_s: float = 0.02) -> None:
    """Block until no job is queued or running (a cheap EXISTS poll)."""
    deadline = time.monotonic() + timeout_s
    with target.admin() as conn:
        while target.unfinished(conn):
            if time.monotonic() > deadline:
                raise SupervisorFailed(f"jobs still unfinished after {timeout_s:g}s: {target.counts()}\n{sup.log_tail()}")
            sup.check_alive()
            time.sleep(poll_s)


@dataclass
class DrainResult:
    jobs: int
    seconds: float  # first claim to last stored result, from the database
    attempts: int
    log_lines: int
    from_start_s: float = 0.0  # process start to the last stored result
    cpu_client_s: float = 0.0  # CPU seconds of the supervisor and its workers from READY to the end
    cpu_server_s: float | None = None  # of their PostgreSQL backends (None: SQLite, or not readable)

    @property
    def cpu_ms_per_job(self) -> float:
        """CPU milliseconds a job cost, the supervisor's, its workers' and (when readable) their
        PostgreSQL backends'."""
        return 1000 * (self.cpu_client_s + (self.cpu_server_s or 0.0)) / self.jobs if self.jobs else 0.0

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


def drain(target: Target, workers: int, batch_size: int, n: int, *, task: str = "bench.noop",
          payload: bytes = b"{}", special: bytes | None = None, every: int = 0,
          above_id: int | None = None, config: str = "",
          fill_when: Callable[[], bool] | None = None, filled: bool = False,
          version: Version | None = None, dsn: str | None = None, log_level: str = "warning") -> DrainResult:
    """Pre-fill ``n`` jobs, start a supervisor, wait until every one succeeded.

    ``above_id``: keep the jobs up to that id (old finished rows) and drain ``n``
    new ones beside them (see Target.refill), timed on those alone. ``config``:
    TOML added to the supervisor's config. ``fill_when`` (with ``above_id``): start
    the supervisor first and add the jobs once it returns true (polled for 60 s),
    to time a drain beside something the supervisor does only after its start.
    ``filled``: the caller put the ``n`` jobs in already (above ``above_id``).
    ``version``: which burrow's supervisor (default: the checkout's); ``dsn``:
    where it connects, if not to ``target.dsn`` (a proxy in front of it); ``log_level``:
    the supervisor's (``info``, burrow's default, writes two lines a job).
    """
    if filled:
        pass
    elif above_id is None:
        target.reset(n, task=task, payload=payload, special=special, every=every)
    elif fill_when is None:
        target.refill(n, above_id, task=task)
    else:
        target.refill(0, above_id, task=task)
    with SupervisorProcess(target, workers, batch_size, config=config, version=version, dsn=dsn,
                           log_level=log_level) as sup:
        sup.start()
        assert sup.proc is not None
        cpu_before = cpu.snapshot(sup.proc.pid, target)
        if fill_when is not None:
            deadline = time.monotonic() + 60
            while not fill_when():
                sup.check_alive()
                if time.monotonic() > deadline:
                    raise SupervisorFailed("drain: the condition to add the jobs never came true")
                time.sleep(0.2)
            target.add_jobs(n, task=task)
        wait_finished(target, sup, timeout_s=60 + n / 500)
        client_s, server_s = cpu.spent(cpu_before, cpu.snapshot(sup.proc.pid, target))
        succeeded, seconds, attempts = target.span(above_id or 0)
        last = target.last_finished(above_id or 0)
        lines = sup.warnings()
    if succeeded != n:
        raise SupervisorFailed(f"drain: {succeeded} of {n} jobs succeeded: {target.counts()}")
    return DrainResult(succeeded, seconds, attempts, lines, from_start_s=last - sup.popen_time, cpu_client_s=client_s,
                       cpu_server_s=server_s)


def fresh_drain(kind: str, version: Version, workers: int, batch_size: int, n: int, **kw: Any) -> DrainResult:
    """:func:`drain` in a database of its own (a new SQLite file or PostgreSQL schema),
    migrated by ``version``, the version whose supervisor then drains it."""
    target = Target.create(kind)
    try:
        version.migrate(target)
        return drain(target, workers, batch_size, n, version=version, **kw)
    finally:
        target.destroy()
