"""Processes per host (burrow status, the admin): records.hosts_of."""

from __future__ import annotations

import datetime as dt

from burrow.backends.records import HostInfo, ProcessInfo, hosts_of

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def process(host: str, role: str, age_s: float, stale: bool) -> ProcessInfo:
    return ProcessInfo(f"{host}:1:{role}:x", host, 1, role, T0, T0 - dt.timedelta(seconds=age_s), stale)


def test_each_host_counts_its_supervisors_and_workers_and_is_stale_only_when_all_its_processes_are() -> None:
    rows = [
        process("a", "supervisor", 1, False), process("a", "worker:default", 2, False),
        process("a", "worker:mail", 40, True),
        process("b", "supervisor", 50, True), process("b", "worker:default", 45, True),
    ]
    assert hosts_of(rows) == [
        HostInfo("a", 1, 2, T0 - dt.timedelta(seconds=1), False),
        HostInfo("b", 1, 1, T0 - dt.timedelta(seconds=45), True),
    ]
    assert hosts_of([]) == []
