"""A worker's report pipe: large enough that a worker runs on while the supervisor is busy
writing a batch of outcomes, small enough that a supervisor with many workers leaves the
user's pipe budget to other programs."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from burrow.supervisor.children import report_pipe_bytes, spawn

MIB = 1 << 20


@pytest.mark.parametrize(
    ("workers", "expected"),
    [(1, MIB), (2, MIB), (16, MIB), (32, MIB // 2), (64, MIB // 4), (256, 64 << 10), (10_000, 64 << 10)],
)
def test_report_pipes_share_a_quarter_of_the_default_pipe_budget(workers: int, expected: int) -> None:
    assert report_pipe_bytes(workers) == expected


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe capacity is Linux's")
def test_a_forked_worker_reports_through_a_pipe_of_the_asked_capacity() -> None:
    """The supervisor's end of a real forked child's pipe holds what the supervisor asked
    for, within the system's ceiling (1 MiB by default for unprivileged users)."""
    ceiling = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    asked = min(report_pipe_bytes(2), ceiling)
    handle = spawn(0, [], lambda _read_fd, _write_fd: os._exit(0), asked)
    try:
        assert fcntl.fcntl(handle.read_fd, fcntl.F_GETPIPE_SZ) == asked
    finally:
        os.waitpid(handle.pid, 0)
        os.close(handle.read_fd)
        os.close(handle.write_fd)
        if handle.stack_file is not None:
            handle.stack_file.close()
