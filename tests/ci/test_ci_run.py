"""CI that cannot lie: a failing test fails `.ci/run`, and no step can hide another's failure.

`.ci/run` once ran ``pip install ... && mypy && pytest`` under ``set -e``: bash does
not stop inside an and-list, so a type error skipped the tests and the run still
exited 0. These tests run the real script.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CI_RUN = REPO / ".ci" / "run"

FAILING_TEST = '''
def test_this_fails_on_purpose() -> None:
    assert 1 + 1 == 3, "the CI self-test's throwaway failure"
'''


def _steps() -> list[str]:
    lines = [line.strip() for line in CI_RUN.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_every_step_stands_alone_under_errexit() -> None:
    steps = _steps()
    assert "set -euo pipefail" in steps
    chained = [line for line in steps if "&&" in line or "||" in line]
    assert chained == [], f"and/or-lists hide failures under set -e: {chained}"
    for command in ('pip install -q -e ".[dev]"', "python -m mypy", "python -m pytest -q -p no:cacheprovider"):
        assert any(line.startswith(command) for line in steps), f"{command!r} is not a step of .ci/run"


def test_a_failing_test_fails_the_run(tmp_path: Path) -> None:
    failing = tmp_path / "test_throwaway.py"
    failing.write_text(FAILING_TEST)
    env = {**os.environ, "BURROW_CI_PYTEST_ARGS": f"--rootdir {tmp_path} {failing}"}
    done = subprocess.run(
        ["bash", str(CI_RUN)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "1 failed" in done.stdout, output  # pytest's own summary line reached the log
    assert "burrow-bench" not in output and "jobs/s" not in output, "the benchmark ran after a failed test"
