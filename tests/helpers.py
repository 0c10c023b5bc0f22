"""Shared test helpers: bounded waits instead of sleeps, a start barrier for child processes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "", *, interval: float = 0.01) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def release(children: Iterable[subprocess.Popen[Any]]) -> None:
    """The start barrier's signal: each child's stdin (a pipe) is closed.

    A child that must start with the others, once ready, blocks in
    ``select.select([sys.stdin], [], [], 60)`` (bounded, no polling), which
    returns at the end of file. The handle is dropped too: ``communicate()``
    would flush a closed one.
    """
    for child in children:
        assert child.stdin is not None, "start the child with stdin=subprocess.PIPE"
        child.stdin.close()
        child.stdin = None
