"""Fixtures for supervisor tests: a launcher that always cleans up after itself."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.supervisor.helpers import Launcher

_PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper(on: bool) -> None:
    """Orphaned workers re-parent to us, so we can reap them.

    Without it they go to PID 1, which in a container may never reap them; under
    systemd, PID 1 does. Either way the test can then tell "exited" from "zombie".
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    _set_subreaper(True)
    launcher = Launcher(tmp_path)
    try:
        yield launcher
    finally:
        try:
            launcher.cleanup()
        finally:
            _set_subreaper(False)


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    """Where block_task's jobs announce themselves and wait to be let go (tests.supervisor.app.Gate)."""
    path = tmp_path / "gates"
    path.mkdir()
    return path
