"""Every public module imports first in a fresh interpreter: no import cycle hides behind
the order in which ``burrow/__init__.py`` happens to import things."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "burrow",
    "burrow.tasks",
    "burrow.queue",
    "burrow.execution",
    "burrow.options",
    "burrow.codec",
    "burrow.backends.base",
    "burrow.backends.sqlite",
    "burrow.backends.postgres",
    "burrow.supervisor",
    "burrow.supervisor.supervisor",
    "burrow.supervisor.worker",
    "burrow.cli",
    "burrow.admin",
    "burrow.admin.server",
]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_core_import_stays_light() -> None:
    """`import burrow` must not pull in the supervisor or the PostgreSQL driver."""
    code = "import sys, burrow; print(sorted(m for m in sys.modules if m.startswith(('psycopg', 'burrow.supervisor'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
