"""What the supervisor does to its memory before forking (burrow/supervisor/memory.py)."""

from __future__ import annotations

import subprocess
import sys


def test_start_up_objects_are_frozen_before_the_first_fork() -> None:
    """In a process of its own: freezing is for the rest of a process's life."""
    code = (
        "import gc, burrow.supervisor.__main__\n"
        "from burrow.supervisor.memory import prepare_to_fork\n"
        "assert gc.get_freeze_count() == 0\n"
        "prepare_to_fork()\n"
        "print(gc.get_freeze_count())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert int(done.stdout) > 10_000  # the modules' objects, burrow's and its libraries'
