"""CPU seconds a drain costs: the supervisor with its workers, and their PostgreSQL backends.

Throughput on a shared 2-core machine follows the neighbours; the CPU time a
process spends on a given amount of work follows them much less. Beside each
supervisor drain the harness reads the CPU time (user + system) of the
supervisor's process tree and, on a PostgreSQL server on this host, of the
backends serving that tree's connections (found by their client ports in
``pg_stat_activity``, read from ``/proc``), at READY and once every job is done.
The difference, per 1,000 jobs, is what the drain cost, wherever it ran.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from benchmarks.target import Target

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    client_s: float  # the supervisor and its workers (reaped children included)
    backends: dict[int, float] | None  # their PostgreSQL backends' seconds by pid; None: not readable here


def _backend_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def snapshot(root_pid: int, target: Target) -> CpuSnapshot:
    """CPU time so far of the process tree at ``root_pid`` and of its PostgreSQL backends."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return CpuSnapshot(0.0, None)
    client = 0.0
    ports: set[int] = set()
    for proc in procs:
        try:
            times = proc.cpu_times()
            client += times.user + times.system
            if proc is root:
                client += times.children_user + times.children_system
            if target.kind == "postgresql":
                ports |= {c.laddr.port for c in proc.net_connections(kind="tcp") if c.raddr}
        except psutil.NoSuchProcess:
            continue
    if target.kind != "postgresql":
        return CpuSnapshot(client, None)
    with target.admin() as conn:
        pids = [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (sorted(ports),)).fetchall()]
    backends: dict[int, float] = {}
    for pid in pids:
        seconds = _backend_seconds(pid)
        if seconds is None:
            return CpuSnapshot(client, None)  # a server on another host, or not ours to read
        backends[pid] = seconds
    return CpuSnapshot(client, backends if backends else None)


def spent(before: CpuSnapshot, after: CpuSnapshot) -> tuple[float, float | None]:
    """(client seconds, server seconds or None) between two snapshots: per backend, what
    it spent since ``before`` (all of it if it connected since). A backend that
    disconnected in between is not counted; a drain holds its connections throughout."""
    if before.backends is None or after.backends is None:
        return after.client_s - before.client_s, None
    server = sum(seconds - before.backends.get(pid, 0.0) for pid, seconds in after.backends.items())
    return after.client_s - before.client_s, server
