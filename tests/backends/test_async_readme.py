"""The README's FastAPI example (examples/fastapi_app/app.py), run as written on PostgreSQL: its order endpoint
enqueues inside the order's transaction (a refused order leaves no job), its result
endpoint awaits the job with a timeout."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import burrow
from burrow.job import JobState
from tests.conftest import POSTGRES_DSN

README = Path(__file__).parents[2] / "README.md"
EXAMPLE = Path(__file__).parents[2] / "examples" / "fastapi_app" / "app.py"


def _example() -> str:
    """The example app's code: the README's python block after the line naming this test."""
    text = README.read_text()
    after = text[text.index("(tests/backends/test_async_readme.py runs this block)") :]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match is not None
    code = EXAMPLE.read_text().split('"""\n\n', 1)[1]  # the file less its docstring
    assert match.group(1) == code, "README's FastAPI block and examples/fastapi_app/app.py differ"
    return code


def _load(schema: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The example as a module, on the test's database: its tables in the test's schema."""
    app_dsn = f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}options=-csearch_path%3D{schema}"
    source = _example()
    source, n = re.subn(r'^DSN = ".*"$', f"DSN = {app_dsn!r}", source, flags=re.M)
    source, m = re.subn(r'^SCHEMA = ".*"$', f"SCHEMA = {schema!r}", source, flags=re.M)
    assert n == m == 1
    module = types.ModuleType("readme_async_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
    exec(compile(source, str(EXAMPLE), "exec"), module.__dict__)  # noqa: S102 - our own README
    return module


def test_the_readme_fastapi_example(
    postgres_schema: str, postgres_admin: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _load(postgres_schema, monkeypatch)
    postgres_admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{postgres_schema}"')
    postgres_admin.execute(f'CREATE TABLE "{postgres_schema}".orders (id integer PRIMARY KEY, image text)')
    worker = burrow.connect(POSTGRES_DSN, schema=postgres_schema)
    example.resize_task.register(worker)
    try:
        with TestClient(example.app) as client:
            placed = client.post("/orders/1", params={"image": "a.png"})
            assert placed.status_code == 200, placed.text
            job_id = placed.json()["job"]
            assert worker.job(job_id).state is JobState.QUEUED

            with pytest.raises(sa.exc.IntegrityError):  # the order is refused: no job either
                client.post("/orders/1", params={"image": "b.png"})
            assert worker.counts()[JobState.QUEUED] == 1

            waiting = client.get(f"/jobs/{job_id}")
            assert waiting.status_code == 504 and "has not finished" in waiting.json()["detail"]

            assert worker.drain() == 1
            done = client.get(f"/jobs/{job_id}")
            assert done.status_code == 200 and done.json() == {"result": "a.png at 640px"}
    finally:
        worker.close()
