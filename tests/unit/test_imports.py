"""Imports: every module imports first in a fresh interpreter, no import circle among
burrow's modules (counting imports made only for type checking), re-exports only in
``burrow/__init__.py``, and a light core import."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import burrow
from tests.conftest import Database

PACKAGE = Path(burrow.__file__).parent


def _modules() -> list[str]:
    return ["burrow"] + sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], "burrow."))


def _module_file(name: str) -> Path:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(name: str, known: set[str]) -> set[str]:
    """The burrow modules ``name`` imports at module level or under ``if TYPE_CHECKING``."""

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(t for a in node.names if (t := resolve(a.name)))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = resolve(f"{node.module}.{alias.name}")
                    if target and target.startswith(node.module + "."):
                        found.add(target)
                    elif (target := resolve(node.module)) is not None:
                        found.add(target)

    visit(ast.parse(_module_file(name).read_text()).body)
    found.discard(name)
    found.discard("burrow")  # the facade: a package's own __init__ always loads first
    return found


def test_no_import_circle_among_burrow_modules() -> None:
    known = set(_modules())
    graph = {name: _imports(name, known) for name in known}
    done: set[str] = set()
    cycles = []

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            cycles.append(path[path.index(name) :] + [name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            walk(target, [*path, name])
        done.add(name)

    for name in sorted(known):
        walk(name, [])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


# The facades: the core's, and the admin extra's (which ``import burrow`` must not load).
FACADES = {"burrow", "burrow.admin"}


def test_only_the_facades_re_export() -> None:
    """No module but the facades lists names it imports in an ``__all__``."""
    offenders = []
    for name in _modules():
        if name in FACADES:
            continue
        tree = ast.parse(_module_file(name).read_text())
        imported = {
            (a.asname or a.name).split(".")[0]
            for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for a in node.names
        }
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                listed = {e.value for e in getattr(node.value, "elts", []) if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                offenders += [f"{name}.{n}" for n in sorted(listed & imported)]
    assert not offenders, f"re-exported outside burrow/__init__.py: {offenders}"


@pytest.mark.parametrize("module", _modules())
def test_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_core_import_stays_light() -> None:
    """`import burrow` must not pull in the supervisor, the PostgreSQL driver, the admin's
    libraries or the async client's backends and drivers (they load at aconnect)."""
    code = (
        "import sys, burrow; print(sorted(m for m in sys.modules"
        " if m.startswith(('psycopg', 'burrow.supervisor', 'burrow.admin', 'starlette', 'jinja2',"
        " 'burrow.backends.postgres_async', 'burrow.backends.sqlite_async', 'aiosqlite', 'sqlalchemy.ext.asyncio'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# What a supervisor and the workers it forks must not carry: each module one loads before
# its first fork is counted again in every worker's RSS (benchmarks/README.md, "sixth pass").
NOT_BEFORE_FORK = {
    "sqlite": ("sqlalchemy.dialects.postgresql", "psycopg"),
    "postgresql": ("sqlalchemy.dialects.sqlite", "sqlite3"),
}
ONLY_WHEN_NEEDED = ("psutil", "difflib")  # a memory cap and the exit's stray check; a config error's hint


def test_a_supervisor_loads_only_its_own_database_driver(database: Database) -> None:
    """The supervisor's modules, connected to one database, have not loaded the other
    database's SQLAlchemy dialect or driver, nor modules needed only at exit, for a
    memory cap or for an error message."""
    code = (
        "import sys, burrow, burrow.supervisor.__main__, burrow.supervisor.worker\n"
        f"burrow.connect({database.dsn!r}, schema={database.schema!r}).close()\n"
        f"print(sorted(m for m in sys.modules if m.startswith({NOT_BEFORE_FORK[database.kind] + ONLY_WHEN_NEEDED!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_version_has_one_source() -> None:
    """burrow.__version__ is the distribution's (pyproject.toml's, in a checkout)."""
    import tomllib

    from burrow.version import DISTRIBUTION

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    assert (project["name"], burrow.__version__) == (DISTRIBUTION, project["version"])


def test_every_database_operation_has_words() -> None:
    """A database error says what failed in the reader's words ("reading the schema
    version failed"), so every operation name a backend passes has its words."""
    import re

    from burrow.backends.sql.connection import OPERATION_WORDS

    names = set()
    for path in (PACKAGE / "backends").rglob("*.py"):
        names |= set(re.findall(r"self\._(?:read|write|on_held|driver_errors|errors)\(\s*\"([a-z_]+)\"", path.read_text()))
    assert names and names <= set(OPERATION_WORDS), sorted(names - set(OPERATION_WORDS))
