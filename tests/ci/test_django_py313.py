"""`.ci/django-py313` keeps to .ci/run's rules: every step a line of its own under
errexit (an and-list hides a failure), and .ci/run calls it after the main tests."""

from __future__ import annotations

from pathlib import Path

CI = Path(__file__).resolve().parents[2] / ".ci"


def _steps(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_py313_script_steps_stand_alone() -> None:
    steps = _steps(CI / "django-py313")
    assert "set -euo pipefail" in steps
    assert [line for line in steps if "&&" in line or "||" in line] == []
    assert any("pytest -q -p no:cacheprovider tests/django" in line for line in steps)
    assert any('pip install -q -e ".[django,dev]"' in line for line in steps)


def test_ci_run_calls_it_after_the_main_tests() -> None:
    steps = _steps(CI / "run")
    main = next(i for i, line in enumerate(steps) if line.startswith("python -m pytest -q -p no:cacheprovider"))
    assert steps[main + 1] == ".ci/django-py313"
